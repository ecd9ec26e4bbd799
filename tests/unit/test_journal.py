"""Trade journal: schema-valid records, one write + fsync each, quarantine, no duplicates, rotation."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

import futures_actor.logs as logs_module
from futures_actor.core.clock import ManualWallClock
from futures_actor.core.config import LoggingConfig
from futures_actor.logs import reset_logging
from futures_actor.state.journal import DuplicateTradeId, InvalidTradeRecord, TradeJournal
from futures_actor.state.log_schema import TRADE_RECORD_SCHEMA, validate_trade_record

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "spec" / "seed-data" / "LOG_SCHEMA.json"
T0 = 1_764_028_799_000  # 2025-11-24T23:59:59.000Z
DAY_MS = 86_400_000


def record(trade_id: str = "0b6f0d1e-5a43-5d2e-9a8c-1f2e3d4c5b6a", **overrides: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "trade_id": trade_id,
        "timestamp_open": "2025-11-24T10:15:00.000Z",
        "timestamp_close": "2025-11-24T12:40:05.123Z",
        "mode": "PAPER_LIVE",
        "symbol": "BTCUSDT",
        "strategy": "trend_pullback",
        "regime": "TREND",
        "direction": "LONG",
        "confidence_score": 0.62,
        "entry_order": {
            "client_order_id": "fa-0b6f0d1e5a435d2e9a8c1f2e-E1",
            "type": "LIMIT",
            "requested_price": 92755.5,
            "filled_avg_price": 92755.5,
            "filled_qty": 0.012,
            "status": "FILLED",
        },
        "risk": {
            "equity_usd": 10000,
            "risk_pct": 0.01,
            "risk_usd": 100.0,
            "stop_pct": 0.01,
            "stop_price": 91827.9,
            "take_profit_price": 94146.8,
            "leverage": 2.0,
            "notional_usd": 1113.07,
            "margin_used_usd": 556.53,
        },
        "costs": {"fees_usd": 0.67, "funding_usd": -0.05, "slippage_pct": 0.0},
        "result": {"exit_price": 94146.8, "pnl_usd": 16.02, "pnl_r_multiple": 1.5, "reason": "TP"},
        "portfolio": {
            "open_positions_count": 1,
            "open_risk_pct": 0.01,
            "correlation_bucket": "BTCUSDT",
            "bucket_corr_max": 0.0,
        },
    }
    for dotted, value in overrides.items():
        node = rec
        *parents, leaf = dotted.split("__")
        for part in parents:
            node = node[part]
        node[leaf] = value
    return rec


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    yield
    reset_logging()


def _journal(directory: Path, clock: ManualWallClock, **cfg: Any) -> TradeJournal:
    return TradeJournal(directory=directory, cfg=LoggingConfig(**cfg), clock=clock)


def _ids(path: Path) -> list[str]:
    return [json.loads(line)["trade_id"] for line in path.read_text(encoding="utf-8").splitlines()]


class TestSchema:
    """The schema in code is the specification's seed schema, and the validator enforces it."""

    def test_matches_seed_file_exactly(self) -> None:
        seed = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
        assert seed == TRADE_RECORD_SCHEMA
        assert json.dumps(seed) == json.dumps(TRADE_RECORD_SCHEMA)  # same key order too

    def test_sample_is_valid(self) -> None:
        assert validate_trade_record(record()) == []

    @pytest.mark.parametrize(
        ("overrides", "field", "expected"),
        [
            ({"trade_id": "not-a-uuid"}, "trade_id", "a UUID string"),
            ({"timestamp_open": "2025-11-24 10:15"}, "timestamp_open", "an ISO 8601 UTC timestamp"),
            (
                {"timestamp_close": "2025-11-24T12:40:05+02:00"},
                "timestamp_close",
                "an ISO 8601 UTC timestamp",
            ),
            ({"mode": "BACKTEST"}, "mode", "one of PAPER_LIVE, LIVE"),
            ({"regime": "trend"}, "regime", "one of TREND, RANGE, HIGH_VOL, CHOP_NO_TRADE"),
            ({"direction": "BUY"}, "direction", "one of LONG, SHORT"),
            ({"confidence_score": "0.6"}, "confidence_score", "a finite JSON number"),
            ({"confidence_score": True}, "confidence_score", "a finite JSON number"),
            ({"confidence_score": float("nan")}, "confidence_score", "a finite JSON number"),
            ({"entry_order__status": "EXPIRED"}, "entry_order.status", "one of NEW, PARTIALLY_FILLED"),
            ({"risk__leverage": None}, "risk.leverage", "a finite JSON number"),
            (
                {"result__reason": "STOP"},
                "result.reason",
                "one of TP, SL, TRAIL, KILL_SWITCH, MANUAL, TIMEOUT",
            ),
            ({"portfolio__correlation_bucket": 3}, "portfolio.correlation_bucket", "a string"),
            ({"costs": [1, 2]}, "costs", "a JSON object"),
            ({"extra_field": 1}, "extra_field", "no such field (unknown)"),
        ],
    )
    def test_violation_names_field_value_and_expectation(
        self, overrides: dict[str, Any], field: str, expected: str
    ) -> None:
        (violation,) = validate_trade_record(record(**overrides))
        assert violation.field == field
        assert violation.expected.startswith(expected)
        assert field in violation.describe()

    def test_missing_field(self) -> None:
        rec = record()
        del rec["risk"]["stop_price"]
        (violation,) = validate_trade_record(rec)
        assert violation.describe() == (
            "trade record field risk.stop_price: value <missing>; expected a value (field is required)"
        )


class TestWrite:
    """Each valid record: one line, one write call, fsynced, behind the stable `trades.jsonl` link."""

    def test_write_one_record(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        journal = _journal(tmp_path, ManualWallClock(T0))
        writes: list[bytes] = []
        fsyncs: list[int] = []
        real_write, real_fsync = os.write, os.fsync

        def counting_write(fd: int, data: Any) -> int:
            writes.append(bytes(data))
            return real_write(fd, data)

        def counting_fsync(fd: int) -> None:
            fsyncs.append(fd)
            real_fsync(fd)

        monkeypatch.setattr(logs_module.os, "write", counting_write)
        monkeypatch.setattr(logs_module.os, "fsync", counting_fsync)
        path = journal.write(record())
        monkeypatch.undo()
        assert path.name == "trades-2025-11-24.jsonl"
        assert len(writes) == 1
        assert writes[0].endswith(b"\n")
        assert writes[0].count(b"\n") == 1
        assert len(fsyncs) == 1
        assert os.readlink(tmp_path / "trades.jsonl") == "trades-2025-11-24.jsonl"
        (line,) = (tmp_path / "trades.jsonl").read_text(encoding="utf-8").splitlines()
        assert json.loads(line) == record()
        assert "trades.rejected.jsonl" not in os.listdir(tmp_path)

    def test_decimals_become_numbers(self, tmp_path: Path) -> None:
        journal = _journal(tmp_path, ManualWallClock(T0))
        journal.write(record(risk__stop_price=Decimal("91827.90")))
        (line,) = (tmp_path / "trades.jsonl").read_text(encoding="utf-8").splitlines()
        assert '"stop_price":91827.9' in line

    def test_records_round_trip(self, tmp_path: Path) -> None:
        journal = _journal(tmp_path, ManualWallClock(T0))
        ids = [f"00000000-0000-4000-8000-00000000000{i}" for i in range(3)]
        for trade_id in ids:
            journal.write(record(trade_id))
        assert [r["trade_id"] for r in journal.records()] == ids
        assert len(journal) == 3
        assert ids[1] in journal


class TestInvalidRecords:
    """An invalid record is refused loudly and kept in the quarantine file."""

    def test_quarantined_and_logged(self, tmp_path: Path) -> None:
        journal = _journal(tmp_path, ManualWallClock(T0))
        bad = record(result__reason="STOP")
        with capture_logs() as logs, pytest.raises(InvalidTradeRecord) as info:
            journal.write(bad)
        assert "trade record field result.reason: value 'STOP'; expected one of TP, SL" in str(info.value)
        (entry,) = [json.loads(x) for x in (tmp_path / "trades.rejected.jsonl").read_text().splitlines()]
        assert entry["record"] == bad
        assert entry["quarantined_at"] == "2025-11-24T23:59:59.000Z"
        assert entry["violations"][0].startswith("trade record field result.reason")
        assert [(e["event"], e["log_level"]) for e in logs] == [("trade_record_invalid", "error")]
        assert not (tmp_path / "trades.jsonl").exists()
        assert bad["trade_id"] not in journal

    def test_unencodable_values_are_still_quarantined(self, tmp_path: Path) -> None:
        journal = _journal(tmp_path, ManualWallClock(T0))
        with pytest.raises(InvalidTradeRecord):
            journal.write(record(risk__leverage=float("inf"), symbol=object()))
        (entry,) = [json.loads(x) for x in (tmp_path / "trades.rejected.jsonl").read_text().splitlines()]
        assert entry["record"]["risk"]["leverage"] == "inf"
        assert entry["record"]["symbol"].startswith("<object object")

    def test_then_valid_record_still_written(self, tmp_path: Path) -> None:
        journal = _journal(tmp_path, ManualWallClock(T0))
        with pytest.raises(InvalidTradeRecord):
            journal.write(record(mode="TEST"))
        journal.write(record())
        assert len(_ids(tmp_path / "trades.jsonl")) == 1


class TestDuplicates:
    """A trade id is written once, also across restarts and rotated files."""

    def test_refused_in_session(self, tmp_path: Path) -> None:
        journal = _journal(tmp_path, ManualWallClock(T0))
        journal.write(record())
        with pytest.raises(DuplicateTradeId, match="trade_id already in the journal"):
            journal.write(record(symbol="ETHUSDT"))
        assert len(_ids(tmp_path / "trades.jsonl")) == 1

    def test_refused_after_restart_on_a_later_day(self, tmp_path: Path) -> None:
        clock = ManualWallClock(T0)
        _journal(tmp_path, clock).write(record())
        clock.advance(2 * DAY_MS)
        journal = _journal(tmp_path, clock)
        with pytest.raises(DuplicateTradeId):
            journal.write(record())
        journal.write(record("11111111-1111-4111-8111-111111111111"))
        assert _ids(tmp_path / "trades-2025-11-24.jsonl") == [record()["trade_id"]]
        assert _ids(tmp_path / "trades.jsonl") == ["11111111-1111-4111-8111-111111111111"]

    def test_corrupt_line_does_not_stop_the_scan(self, tmp_path: Path) -> None:
        clock = ManualWallClock(T0)
        _journal(tmp_path, clock).write(record())
        with (tmp_path / "trades-2025-11-24.jsonl").open("a") as fh:
            fh.write('{"trade_id": "half a rec\n')
        with capture_logs() as logs:
            journal = _journal(tmp_path, clock)
        assert record()["trade_id"] in journal
        assert any(e["event"] == "trade_log_line_unreadable" for e in logs)


class TestRotation:
    """Daily and size rotation of trades files; the link follows."""

    def test_daily(self, tmp_path: Path) -> None:
        clock = ManualWallClock(T0)
        journal = _journal(tmp_path, clock)
        journal.write(record("00000000-0000-4000-8000-000000000001"))
        clock.advance(1000)
        journal.write(record("00000000-0000-4000-8000-000000000002"))
        assert [p.name for p in journal.files()] == ["trades-2025-11-24.jsonl", "trades-2025-11-25.jsonl"]
        assert os.readlink(tmp_path / "trades.jsonl") == "trades-2025-11-25.jsonl"

    def test_by_size(self, tmp_path: Path) -> None:
        size = len(json.dumps(record(), separators=(",", ":"))) + 1
        journal = _journal(tmp_path, ManualWallClock(T0), rotate_max_bytes=2 * size)
        ids = [f"00000000-0000-4000-8000-00000000000{i}" for i in range(5)]
        for trade_id in ids:
            journal.write(record(trade_id))
        assert [p.name for p in journal.files()] == [
            "trades-2025-11-24.jsonl",
            "trades-2025-11-24.1.jsonl",
            "trades-2025-11-24.2.jsonl",
        ]
        assert [r["trade_id"] for r in journal.records()] == ids
        assert os.readlink(tmp_path / "trades.jsonl") == "trades-2025-11-24.2.jsonl"


class TestTornLastLine:
    """A torn last line (crash or full disk mid-write) never swallows the next record; it is quarantined."""

    TORN = '{"trade_id":"22222222-2222-4222-8222-2222222'

    def test_next_record_starts_on_a_new_line_and_the_torn_text_is_quarantined(self, tmp_path: Path) -> None:
        clock = ManualWallClock(T0)
        _journal(tmp_path, clock).write(record())
        day_file = tmp_path / "trades-2025-11-24.jsonl"
        with day_file.open("a", encoding="utf-8") as fh:
            fh.write(self.TORN)  # the process died here: no newline
        with capture_logs() as logs:
            journal = _journal(tmp_path, clock)
        journal.write(record("33333333-3333-4333-8333-333333333333"))
        lines = day_file.read_text(encoding="utf-8").splitlines()
        assert [json.loads(x)["trade_id"] for x in lines] == [
            record()["trade_id"],
            "33333333-3333-4333-8333-333333333333",
        ]
        (entry,) = [json.loads(x) for x in (tmp_path / "trades.rejected.jsonl").read_text().splitlines()]
        assert entry["text"] == self.TORN
        assert entry["file"] == day_file.name
        assert "torn" in entry["reason"]
        assert [e["event"] for e in logs if e["log_level"] == "error"] == ["trade_log_torn_line_quarantined"]
        assert len(_journal(tmp_path, clock)) == 2

    def test_a_whole_record_without_its_newline_is_kept(self, tmp_path: Path) -> None:
        clock = ManualWallClock(T0)
        day_file = tmp_path / "trades-2025-11-24.jsonl"
        day_file.write_text(json.dumps(record()), encoding="utf-8")
        journal = _journal(tmp_path, clock)
        journal.write(record("33333333-3333-4333-8333-333333333333"))
        assert len(_ids(day_file)) == 2
        assert not (tmp_path / "trades.rejected.jsonl").exists()

    def test_a_write_cut_short_by_a_full_disk_is_repaired_before_the_next_record(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        import errno

        clock = ManualWallClock(T0)
        journal = _journal(tmp_path, clock)
        journal.write(record())
        real_write = os.write

        def half_then_enospc(fd: int, data: Any) -> int:
            view = bytes(data)
            real_write(fd, view[: len(view) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(logs_module.os, "write", half_then_enospc)
        with pytest.raises(OSError, match="No space left"):
            journal.write(record("44444444-4444-4444-8444-444444444444"))
        monkeypatch.undo()
        journal.write(record("44444444-4444-4444-8444-444444444444"))
        assert _ids(tmp_path / "trades-2025-11-24.jsonl") == [
            record()["trade_id"],
            "44444444-4444-4444-8444-444444444444",
        ]
        (entry,) = [json.loads(x) for x in (tmp_path / "trades.rejected.jsonl").read_text().splitlines()]
        assert entry["text"].startswith('{"trade_id":"44444444')
