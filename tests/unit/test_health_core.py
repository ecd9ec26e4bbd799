"""The pure safe-mode state machine and fault counters (core/health.py)."""

from __future__ import annotations

import pytest

from futures_actor.core.config import HealthConfig
from futures_actor.core.health import FaultKind, HealthInputError, HealthMonitor

CFG = HealthConfig(
    stale_data_seconds=90.0,
    healthy_streak_seconds=300.0,
    fault_window_seconds=300.0,
    timestamp_error_threshold=3,
    rate_limit_error_threshold=3,
    server_error_threshold=5,
    balance_failure_threshold=3,
)


class TestCountedFaults:
    """Counted kinds enter safe mode at their threshold within the window."""

    def test_below_threshold_stays_healthy(self) -> None:
        m = HealthMonitor(CFG)
        assert m.record_fault(FaultKind.TIMESTAMP, 0.0) is None
        assert m.record_fault(FaultKind.TIMESTAMP, 10.0) is None
        assert not m.safe_mode
        assert m.fault_count(FaultKind.TIMESTAMP, 10.0) == 2

    def test_threshold_enters_safe_mode(self) -> None:
        m = HealthMonitor(CFG)
        m.record_fault(FaultKind.TIMESTAMP, 0.0)
        m.record_fault(FaultKind.TIMESTAMP, 10.0)
        t = m.record_fault(FaultKind.TIMESTAMP, 20.0)
        assert t is not None
        assert t.on
        assert t.reasons == ("TIMESTAMP",)
        assert t.at == 20.0
        assert m.safe_mode
        # A fourth fault does not emit a second transition.
        assert m.record_fault(FaultKind.TIMESTAMP, 21.0) is None

    def test_faults_outside_window_do_not_count(self) -> None:
        m = HealthMonitor(CFG)
        m.record_fault(FaultKind.RATE_LIMIT, 0.0)
        m.record_fault(FaultKind.RATE_LIMIT, 200.0)
        assert m.record_fault(FaultKind.RATE_LIMIT, 300.0) is None  # the fault at 0 left the window
        assert m.fault_count(FaultKind.RATE_LIMIT, 300.0) == 2
        assert not m.safe_mode

    @pytest.mark.parametrize(
        ("kind", "threshold"),
        [
            (FaultKind.SERVER_ERROR, 5),
            (FaultKind.BALANCE_FETCH, 3),
            (FaultKind.RATE_LIMIT, 3),
        ],
    )
    def test_each_kind_uses_its_threshold(self, kind: FaultKind, threshold: int) -> None:
        m = HealthMonitor(CFG)
        for i in range(threshold - 1):
            assert m.record_fault(kind, float(i)) is None
        t = m.record_fault(kind, float(threshold))
        assert t is not None
        assert t.reasons == (kind.value,)

    def test_immediate_kinds(self) -> None:
        m = HealthMonitor(CFG)
        t = m.record_fault(FaultKind.UNEXPECTED_EXCEPTION, 5.0, detail="risk")
        assert t is not None
        assert t.on
        assert t.reasons == ("UNEXPECTED_EXCEPTION:risk",)

    def test_bad_input_is_refused_with_field(self) -> None:
        m = HealthMonitor(CFG)
        with pytest.raises(HealthInputError, match="kind"):
            m.record_fault("NOPE", 1.0)  # type: ignore[arg-type]
        with pytest.raises(HealthInputError, match="now"):
            m.record_fault(FaultKind.TIMESTAMP, float("nan"))


class TestExit:
    """Safe mode ends only after a continuous healthy streak."""

    def _enter(self, m: HealthMonitor) -> None:
        for t in (0.0, 10.0, 20.0):
            m.record_fault(FaultKind.TIMESTAMP, t)
        assert m.safe_mode

    def test_exit_after_counter_clears_plus_streak(self) -> None:
        m = HealthMonitor(CFG)
        self._enter(m)
        # Counter at threshold until the 3rd most recent fault (t=0) leaves the window at 300.
        assert m.evaluate(299.0) is None
        assert m.healthy_since() is None
        assert m.evaluate(301.0) is None
        assert m.healthy_since() == 300.0
        assert m.evaluate(599.0) is None
        assert m.safe_mode
        t = m.evaluate(600.0)
        assert t is not None
        assert not t.on
        assert t.reasons == ("TIMESTAMP",)
        assert not m.safe_mode
        assert m.reasons == ()

    def test_new_fault_resets_streak(self) -> None:
        m = HealthMonitor(CFG)
        self._enter(m)
        m.evaluate(350.0)
        assert m.healthy_since() == 300.0
        m.record_fault(FaultKind.SERVER_ERROR, 400.0)  # below its threshold, still resets the streak
        assert m.healthy_since() == 400.0
        assert m.evaluate(650.0) is None
        assert m.safe_mode
        t = m.evaluate(700.0)
        assert t is not None
        assert not t.on

    def test_success_clears_counter(self) -> None:
        m = HealthMonitor(CFG)
        for t in (0.0, 1.0, 2.0):
            m.record_fault(FaultKind.BALANCE_FETCH, t)
        assert m.safe_mode
        m.clear_fault(FaultKind.BALANCE_FETCH, 50.0)
        assert m.fault_count(FaultKind.BALANCE_FETCH, 50.0) == 0
        assert m.healthy_since() == 50.0
        assert m.evaluate(349.0) is None
        t = m.evaluate(350.0)
        assert t is not None
        assert not t.on

    def test_unexpected_exception_streak_from_fault_time(self) -> None:
        m = HealthMonitor(CFG)
        m.record_fault(FaultKind.UNEXPECTED_EXCEPTION, 10.0)
        m.evaluate(15.0)
        assert m.healthy_since() == 10.0
        assert m.evaluate(309.0) is None
        assert m.evaluate(310.0) is not None


class TestStaleness:
    """A watched stream without data for stale_data_seconds is a fault until data returns."""

    def test_stream_goes_stale_and_recovers(self) -> None:
        m = HealthMonitor(CFG)
        m.data_received("BTCUSDT", "kline_5m", 0.0)
        assert m.evaluate(89.0) is None
        t = m.evaluate(90.0)
        assert t is not None
        assert t.on
        assert t.reasons == ("STALE_DATA:BTCUSDT/kline_5m",)
        assert m.stale_streams() == ("BTCUSDT/kline_5m",)
        assert m.evaluate(500.0) is None
        assert m.healthy_since() is None
        m.data_received("BTCUSDT", "kline_5m", 600.0)
        assert m.stale_streams() == ()
        assert m.healthy_since() == 600.0
        m.data_received("BTCUSDT", "kline_5m", 660.0)
        m.data_received("BTCUSDT", "kline_5m", 720.0)
        m.data_received("BTCUSDT", "kline_5m", 780.0)
        m.data_received("BTCUSDT", "kline_5m", 840.0)
        assert m.evaluate(899.0) is None
        m.data_received("BTCUSDT", "kline_5m", 899.5)
        t = m.evaluate(900.0)
        assert t is not None
        assert not t.on

    def test_watched_stream_without_any_data_goes_stale(self) -> None:
        m = HealthMonitor(CFG)
        m.watch("ETHUSDT", "bookTicker", 0.0)
        t = m.evaluate(95.0)
        assert t is not None
        assert "STALE_DATA:ETHUSDT/bookTicker" in t.reasons

    def test_unwatch_removes_stale_condition(self) -> None:
        m = HealthMonitor(CFG)
        m.data_received("ETHUSDT", "kline_5m", 0.0)
        m.evaluate(100.0)
        assert m.stale_streams() == ("ETHUSDT/kline_5m",)
        m.unwatch("ETHUSDT", None, 120.0)
        assert m.stale_streams() == ()
        assert m.data_ages(120.0) == {}

    def test_symbol_ages_report_the_stalest_stream(self) -> None:
        m = HealthMonitor(CFG)
        m.data_received("BTCUSDT", "kline_5m", 0.0)
        m.data_received("BTCUSDT", "bookTicker", 8.0)
        m.data_received("ETHUSDT", "kline_5m", 9.0)
        assert m.symbol_data_ages(10.0) == {"BTCUSDT": 10.0, "ETHUSDT": 1.0}
