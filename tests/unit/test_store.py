"""The SQLite state store: round trips, atomicity, crash safety, schema versions, client-id uniqueness."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest

from futures_actor.core.config import ExecutionConfig, StateConfig
from futures_actor.core.lifecycle import OrderAccepted, OrderFilled, Phase, TradeLifecycle
from futures_actor.core.models import TradePlan
from futures_actor.core.risk_state import RiskState, new_risk_state
from futures_actor.core.types import OrderRole, Regime, Side, SymbolRules
from futures_actor.state.store import (
    SCHEMA_VERSION,
    BlobKind,
    DuplicateClientOrderId,
    StateStore,
    StateStoreError,
)

D = Decimal
T0 = 1_767_225_600_000
CFG = ExecutionConfig()
RULES = SymbolRules(symbol="BTCUSDT", tick_size=D("0.1"), step_size=D("0.001"), min_qty=D("0.001"))
REPO = Path(__file__).resolve().parents[2]


def make_lifecycle(trade_id: str = "1000000a-0000-4000-8000-000000000000") -> TradeLifecycle:
    plan = TradePlan(
        trade_id=trade_id, symbol="BTCUSDT", strategy="pullback", side=Side.LONG, regime=Regime.TREND,
        confidence_score=0.7, candle_open_time_ms=T0, created_ms=T0, entry_price=D("100.0"), quantity=D("0.010"),
        stop_price=D("98.0"), target_price=D("104.0"), leverage=3.0, equity_usd=10_000.0, risk_pct=0.002,
        risk_usd=20.0, stop_pct=0.02, notional_usd=1000.0, margin_used_usd=333.3,
    )  # fmt: skip
    return TradeLifecycle(plan=plan, rules=RULES, config=CFG, prefix="fa", mode="PAPER_LIVE")


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "state.sqlite"


class TestRoundTrips:
    """What is saved comes back equal, across a close and reopen."""

    def test_lifecycle_snapshot_survives_reopen_and_resumes(self, db_path: Path) -> None:
        lc = make_lifecycle()
        cmds = lc.start(now_ms=T0)
        cmds += lc.handle(OrderAccepted(cid=lc.live_orders()[0].cid), now_ms=T0 + 1)
        entry_cid = lc.live_orders()[0].cid
        fill = OrderFilled(cid=entry_cid, qty=D("0.010"), cum_qty=D("0.010"), price=D("100.0"), fee=0.02,
                           is_maker=True, ts_ms=T0 + 2)  # fmt: skip
        with StateStore.open(db_path) as store:
            store.persist(lc.to_state(), cmds, now_ms=T0)
            after = lc.handle(fill, now_ms=T0 + 2)
            store.persist(lc.to_state(), after, now_ms=T0 + 2)
        with StateStore.open(db_path) as store:
            (state,) = store.load_lifecycles()
            assert state == lc.to_state()
            resumed = TradeLifecycle.from_state(state, config=CFG)
            assert resumed.phase is Phase.OPEN
            assert resumed.position_qty == D("0.010")
            assert [(s.cid[-2:], s.role, s.attempt) for s in store.sent_cids(lc.trade_id)] == [
                ("E1", OrderRole.ENTRY, 1),
                ("S1", OrderRole.STOP, 1),
                ("T1", OrderRole.TARGET, 1),
            ]

    def test_closed_lifecycles_are_kept_but_not_loaded_by_default(self, db_path: Path) -> None:
        open_lc, closed_lc = make_lifecycle(), make_lifecycle("2000000a-0000-4000-8000-000000000000")
        closed_lc.start(now_ms=T0)
        with StateStore.open(db_path) as store:
            store.save_lifecycle(open_lc.to_state(), now_ms=T0)
            state = closed_lc.to_state()
            state.phase = Phase.CLOSED
            store.save_lifecycle(state, now_ms=T0)
            assert [s.plan.trade_id for s in store.load_lifecycles()] == [open_lc.trade_id]
            assert len(store.load_lifecycles(include_closed=True)) == 2
            assert store.load_lifecycle(closed_lc.trade_id) == state
            assert store.load_lifecycle("nope") is None

    def test_struct_blobs_and_meta(self, db_path: Path) -> None:
        risk = new_risk_state(now_ms=T0, equity_usd=10_000.0)
        with StateStore.open(db_path) as store:
            store.save_struct(BlobKind.RISK, "risk", risk, now_ms=T0)
            store.put_blob(BlobKind.PAPER, "account", b"\x00\x01", now_ms=T0)
            store.set_meta("last_reconcile_ms", str(T0))
            assert store.schema_version() == SCHEMA_VERSION
        with StateStore.open(db_path) as store:
            assert store.load_struct(BlobKind.RISK, "risk", RiskState) == risk
            assert store.load_struct(BlobKind.SELECTION, "risk", RiskState) is None
            assert store.get_blob(BlobKind.PAPER, "account") == b"\x00\x01"
            assert store.get_meta("last_reconcile_ms") == str(T0)
            with pytest.raises(StateStoreError, match="paper state 'account'"):
                store.load_struct(BlobKind.PAPER, "account", RiskState)

    def test_from_config_uses_state_dir_and_wal(self, tmp_path: Path) -> None:
        cfg = StateConfig(state_dir=str(tmp_path / "st"), db_file="x.sqlite")
        with StateStore.from_config(cfg) as store:
            assert store.path == tmp_path / "st" / "x.sqlite"
        conn = sqlite3.connect(tmp_path / "st" / "x.sqlite")
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.close()


class TestClientIds:
    """A client id is recorded before sending and can never be recorded twice, across restarts too."""

    def test_duplicate_cid_is_refused_after_reopen(self, db_path: Path) -> None:
        with StateStore.open(db_path) as store:
            store.record_sent_cid("fa-abc-E1", trade_id="t", role=OrderRole.ENTRY, attempt=1, sent_ms=T0)
            assert store.is_cid_sent("fa-abc-E1")
            assert not store.is_cid_sent("fa-abc-E2")
        with StateStore.open(db_path) as store:
            with pytest.raises(DuplicateClientOrderId, match="fa-abc-E1") as err:
                store.record_sent_cid(
                    "fa-abc-E1", trade_id="t", role=OrderRole.ENTRY, attempt=1, sent_ms=T0 + 5
                )
            assert err.value.cid == "fa-abc-E1"
            assert len(store.sent_cids()) == 1

    def test_persist_with_a_duplicate_writes_nothing(self, db_path: Path) -> None:
        lc = make_lifecycle()
        cmds = lc.start(now_ms=T0)
        with StateStore.open(db_path) as store:
            store.persist(lc.to_state(), cmds, now_ms=T0)
            before = store.load_lifecycle(lc.trade_id)
            lc.handle(OrderAccepted(cid=lc.live_orders()[0].cid), now_ms=T0 + 1)
            with pytest.raises(DuplicateClientOrderId):
                store.persist(lc.to_state(), cmds, now_ms=T0 + 1)  # the same placement again
            assert store.load_lifecycle(lc.trade_id) == before  # snapshot not half-updated


class TestAtomicity:
    """One transaction per change: an exception or a crash before commit leaves nothing behind."""

    def test_exception_rolls_back_the_whole_transaction(self, db_path: Path) -> None:
        with StateStore.open(db_path) as store:

            def failing_change() -> None:
                with store.transaction():
                    store.record_sent_cid(
                        "fa-abc-S1", trade_id="t", role=OrderRole.STOP, attempt=1, sent_ms=T0
                    )
                    store.save_lifecycle(make_lifecycle().to_state(), now_ms=T0)
                    raise RuntimeError("boom")

            with pytest.raises(RuntimeError, match="boom"):
                failing_change()
            assert store.sent_cids() == []
            assert store.load_lifecycles() == []

    def test_process_killed_before_commit_leaves_nothing_half_written(self, db_path: Path) -> None:
        with StateStore.open(db_path) as store:
            store.record_sent_cid("fa-abc-E1", trade_id="t", role=OrderRole.ENTRY, attempt=1, sent_ms=T0)
        script = textwrap.dedent(f"""
            import os
            from pathlib import Path
            from futures_actor.core.types import OrderRole
            from futures_actor.state.store import BlobKind, StateStore
            store = StateStore.open(Path({str(db_path)!r}))
            with store.transaction():
                store.record_sent_cid("fa-abc-E2", trade_id="t", role=OrderRole.ENTRY, attempt=2, sent_ms=1)
                store.put_blob(BlobKind.RISK, "risk", b"half", now_ms=1)
                os._exit(9)  # hard kill: no commit, no close
        """)
        proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, timeout=60)
        assert proc.returncode == 9, proc.stderr.decode()
        with StateStore.open(db_path) as store:
            assert [s.cid for s in store.sent_cids()] == ["fa-abc-E1"]
            assert store.get_blob(BlobKind.RISK, "risk") is None


class TestSchema:
    """Versioned schema: older files are migrated, newer or corrupt files are a clear start-up error."""

    def test_migrates_a_v1_file(self, db_path: Path) -> None:
        db_path.parent.mkdir(parents=True)
        conn = sqlite3.connect(db_path)
        conn.executescript(
            """
            CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            CREATE TABLE lifecycles (trade_id TEXT PRIMARY KEY, symbol TEXT NOT NULL, status TEXT NOT NULL,
                                     updated_ms INTEGER NOT NULL, snapshot BLOB NOT NULL);
            CREATE TABLE sent_cids (cid TEXT PRIMARY KEY, trade_id TEXT NOT NULL, role TEXT NOT NULL,
                                    attempt INTEGER NOT NULL, sent_ms INTEGER NOT NULL);
            CREATE TABLE kv_state (name TEXT PRIMARY KEY, data BLOB NOT NULL);
            INSERT INTO meta VALUES ('schema_version', '1');
            INSERT INTO sent_cids VALUES ('fa-old-E1', 't-old', 'E', 1, 5);
            """
        )
        risk = new_risk_state(now_ms=T0, equity_usd=5_000.0)
        conn.execute("INSERT INTO kv_state VALUES ('risk', ?)", (msgspec.msgpack.encode(risk),))
        conn.commit()
        conn.close()
        with StateStore.open(db_path) as store:
            assert store.schema_version() == SCHEMA_VERSION
            assert store.load_struct(BlobKind.RISK, "risk", RiskState) == risk
            assert store.is_cid_sent("fa-old-E1")
        conn = sqlite3.connect(db_path)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        conn.close()
        assert "kv_state" not in tables
        assert "blobs" in tables

    def test_newer_schema_version_is_refused(self, db_path: Path) -> None:
        StateStore.open(db_path).close()
        conn = sqlite3.connect(db_path)
        conn.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
        conn.commit()
        conn.close()
        with pytest.raises(StateStoreError, match="schema version 99 is newer") as err:
            StateStore.open(db_path)
        assert err.value.path == db_path
        assert str(db_path) in str(err.value)

    def test_corrupt_file_is_refused_and_kept(self, db_path: Path) -> None:
        db_path.parent.mkdir(parents=True)
        garbage = b"this is not a database at all" * 100
        db_path.write_bytes(garbage)
        with pytest.raises(StateStoreError, match="not a usable SQLite state file") as err:
            StateStore.open(db_path)
        assert str(db_path) in str(err.value)
        assert db_path.read_bytes() == garbage  # never silently replaced

    def test_foreign_sqlite_file_is_refused(self, db_path: Path) -> None:
        db_path.parent.mkdir(parents=True)
        conn = sqlite3.connect(db_path)
        conn.execute("CREATE TABLE other (x INTEGER)")
        conn.commit()
        conn.close()
        with pytest.raises(StateStoreError, match="no meta table"):
            StateStore.open(db_path)

    def test_undecodable_snapshot_names_the_trade(self, db_path: Path) -> None:
        StateStore.open(db_path).close()
        conn = sqlite3.connect(db_path)
        conn.execute("INSERT INTO lifecycles VALUES ('t-bad', 'BTCUSDT', 'OPEN', 1, ?)", (b"{bad json",))
        conn.commit()
        conn.close()
        with StateStore.open(db_path) as store, pytest.raises(StateStoreError, match="lifecycle t-bad"):
            store.load_lifecycles()
