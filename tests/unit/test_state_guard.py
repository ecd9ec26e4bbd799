"""State directory guards: one instance per state directory, a lost state file is never silent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from futures_actor.state.guard import (
    LOCK_FILE,
    StateDirLocked,
    StateMissing,
    check_exchange_clean,
    check_state_present,
    lock_state_dir,
    state_file_missing,
)

REPO = Path(__file__).resolve().parents[2]


class TestLock:
    """The state directory lock is exclusive, names the holder, and dies with its process."""

    def test_second_lock_in_process_is_refused_with_dir_and_pid(self, tmp_path: Path) -> None:
        with lock_state_dir(tmp_path / "state"), pytest.raises(StateDirLocked) as info:
            lock_state_dir(tmp_path / "state")
        assert info.value.holder_pid == os.getpid()
        assert str(tmp_path / "state") in str(info.value)
        assert f"pid {os.getpid()}" in str(info.value)
        # Released: a new holder may take it.
        with lock_state_dir(tmp_path / "state") as lock:
            assert lock.held
        assert (tmp_path / "state" / LOCK_FILE).read_text().strip() == str(os.getpid())

    def test_held_by_another_process_until_it_dies(self, tmp_path: Path) -> None:
        state = tmp_path / "state"
        code = textwrap.dedent(
            f"""
            import sys
            from pathlib import Path
            from futures_actor.state.guard import lock_state_dir
            lock = lock_state_dir(Path({str(state)!r}))
            print("locked", flush=True)
            sys.stdin.read()  # hold the lock until the test closes our stdin or kills us
            """
        )
        proc = subprocess.Popen(
            [sys.executable, "-c", code], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == b"locked"
            with pytest.raises(StateDirLocked) as info:
                lock_state_dir(state)
            assert info.value.holder_pid == proc.pid
        finally:
            proc.kill()  # SIGKILL: no cleanup runs, the kernel drops the lock
            proc.wait(timeout=10)
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    pipe.close()
        with lock_state_dir(state) as lock:
            assert lock.held


class TestStateLoss:
    """A missing or empty state file with earlier trading is refused unless started afresh on purpose."""

    def test_missing_and_zero_length_count_as_missing(self, tmp_path: Path) -> None:
        db = tmp_path / "state.sqlite"
        assert state_file_missing(db)
        db.write_bytes(b"")
        assert state_file_missing(db)
        db.write_bytes(b"SQLite format 3\x00")
        assert not state_file_missing(db)

    def test_refused_when_the_journal_shows_trading(self, tmp_path: Path) -> None:
        db = tmp_path / "state.sqlite"
        db.write_bytes(b"")
        with pytest.raises(StateMissing) as info:
            check_state_present(db, journal_records=3, fresh=False)
        text = str(info.value)
        assert str(db) in text
        assert "--fresh-state" in text
        assert "3 trade record(s)" in text

    def test_first_start_and_fresh_flag_pass(self, tmp_path: Path) -> None:
        db = tmp_path / "state.sqlite"
        check_state_present(db, journal_records=0, fresh=False)
        check_state_present(db, journal_records=5, fresh=True)

    def test_exchange_orders_of_ours_refuse(self, tmp_path: Path) -> None:
        db = tmp_path / "state.sqlite"
        ids = [f"fa-{i:024x}-S1" for i in range(5)]
        with pytest.raises(StateMissing) as info:
            check_exchange_clean(db, our_client_ids=ids, fresh=False)
        assert "5 open order(s) with our client-id prefix" in str(info.value)
        assert "and 2 more" in str(info.value)
        check_exchange_clean(db, our_client_ids=[], fresh=False)
        check_exchange_clean(db, our_client_ids=ids, fresh=True)


class TestEndToEnd:
    """The bot itself refuses, before connecting anywhere, with a message naming the file and the flag."""

    def _config(self, tmp_path: Path) -> Path:
        raw = json.loads((REPO / "config" / "config.example.json").read_text())
        raw["exchange"]["rest_base_url"] = "http://127.0.0.1:9"
        raw["exchange"]["ws_base_url"] = "ws://127.0.0.1:9"
        raw["health"]["http_port"] = 0
        raw["startup"] = {"give_up_seconds": 0.5, "retry_wait_initial_seconds": 0.1}
        path = tmp_path / "cfg.json"
        path.write_text(json.dumps(raw))
        return path

    def test_empty_state_file_with_a_journal_is_refused(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        from futures_actor.cli import EXIT_CONFIG, main
        from futures_actor.logs import reset_logging

        monkeypatch.chdir(tmp_path)
        cfg = self._config(tmp_path)
        (tmp_path / "st").mkdir()
        (tmp_path / "st" / "state.sqlite").write_bytes(b"")
        logs = tmp_path / "logs"
        logs.mkdir()
        line = {"trade_id": "00000000-0000-4000-8000-000000000001", "symbol": "BTCUSDT"}
        (logs / "trades-2025-01-01.jsonl").write_text(json.dumps(line) + "\n")
        try:
            code = main(["--paper", "--config", str(cfg), "--log-dir", "logs", "--state-dir", "st"])
        finally:
            reset_logging()
        err = capsys.readouterr().err
        assert code == EXIT_CONFIG
        assert "st/state.sqlite is missing or empty" in err
        assert "--fresh-state" in err
        assert (tmp_path / "st" / "state.sqlite").stat().st_size == 0  # nothing was created over it
        events = [json.loads(x) for x in (logs / "events.jsonl").read_text().splitlines()]
        assert "state_refused" in [e["event"] for e in events]
        assert "binance_time_synced" not in [e["event"] for e in events]
