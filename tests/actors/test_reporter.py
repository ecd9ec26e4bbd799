"""Daily reports to file and Telegram, alerts, and a failing Telegram that must not block the bot."""

from __future__ import annotations

import json
import uuid
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.lowlevel
import trio.testing
from structlog.testing import capture_logs

from futures_actor.actors.messages import EntryFilled, KillSwitch, SafeModeChanged
from futures_actor.actors.reporter import Alert, Reporter, ReporterMsg
from futures_actor.actors.scheduler import Job, ScheduledTick
from futures_actor.actors.telegram import TelegramNotifier, TelegramSender, TelegramText
from futures_actor.core.config import NotificationsConfig
from futures_actor.core.report import AccountSnapshot
from futures_actor.core.secrets import Secret, Secrets
from futures_actor.core.types import Side

TOKEN = "123456:SECRET-TOKEN-abc"
CFG = NotificationsConfig(telegram_max_attempts=3, telegram_retry_wait_seconds=2.0)
ACCOUNT = AccountSnapshot(
    equity_usd=10_100.0,
    unrealized_pnl_usd=0.0,
    day_start_equity_usd=10_000.0,
    peak_equity_usd=10_100.0,
    open_risk_usd=0.0,
    open_positions=0,
)
MAR5_0005 = 1_741_133_100_000  # 2025-03-05T00:05:00Z


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


def secrets(token: str = TOKEN) -> Secrets:
    return Secrets(
        api_key=Secret(""), api_secret=Secret(""), telegram_token=Secret(token), telegram_chat_id=Secret("42")
    )


def trade(day: str, pnl: float) -> dict[str, Any]:
    return {
        "trade_id": str(uuid.uuid4()),
        "timestamp_open": f"{day}T01:00:00.000Z",
        "timestamp_close": f"{day}T02:00:00.000Z",
        "mode": "PAPER_LIVE",
        "symbol": "BTCUSDT",
        "strategy": "trend_pullback",
        "regime": "TREND",
        "direction": "LONG",
        "confidence_score": 0.7,
        "entry_order": {
            "client_order_id": "x",
            "type": "LIMIT",
            "requested_price": 1.0,
            "filled_avg_price": 1.0,
            "filled_qty": 1.0,
            "status": "FILLED",
        },
        "risk": {
            "equity_usd": 10_000.0,
            "risk_pct": 0.01,
            "risk_usd": 100.0,
            "stop_pct": 0.01,
            "stop_price": 0.99,
            "take_profit_price": 1.015,
            "leverage": 2.0,
            "notional_usd": 1.0,
            "margin_used_usd": 0.5,
        },
        "costs": {"fees_usd": 1.0, "funding_usd": 0.0, "slippage_pct": 0.0},
        "result": {"exit_price": 1.0, "pnl_usd": pnl, "pnl_r_multiple": pnl / 100, "reason": "TP"},
        "portfolio": {
            "open_positions_count": 1,
            "open_risk_pct": 0.01,
            "correlation_bucket": "a",
            "bucket_corr_max": 0.1,
        },
    }


class FakeTelegram:
    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        status = self.statuses.pop(0) if self.statuses else 200
        if status == 200:
            return httpx.Response(200, json={"ok": True, "result": {}})
        if status == 0:
            raise httpx.ConnectError(f"cannot reach {request.url}")
        return httpx.Response(status, json={"ok": False, "description": f"error for {request.url}"})


class TestTelegram:
    """Bounded retries, no retry on 4xx, and the token never in a log."""

    async def test_retries_then_succeeds(self, autojump_clock: trio.testing.MockClock) -> None:
        fake = FakeTelegram([502, 0, 200])
        async with httpx.AsyncClient(transport=httpx.MockTransport(fake)) as client:
            notifier = TelegramNotifier(cfg=CFG, secrets=secrets(), client=client)
            t0 = trio.current_time()
            with capture_logs() as logs:
                assert await notifier.send("hello") is True
        assert len(fake.requests) == 3
        assert trio.current_time() - t0 == pytest.approx(2.0 + 4.0)
        req = fake.requests[0]
        assert req.url.path == f"/bot{TOKEN}/sendMessage"
        assert json.loads(req.content) == {"chat_id": "42", "text": "hello", "disable_web_page_preview": True}
        assert TOKEN not in repr(logs)
        assert "***" in repr(logs)

    async def test_gives_up_after_max_attempts(self, autojump_clock: trio.testing.MockClock) -> None:
        fake = FakeTelegram([500, 500, 500, 500])
        async with httpx.AsyncClient(transport=httpx.MockTransport(fake)) as client:
            notifier = TelegramNotifier(cfg=CFG, secrets=secrets(), client=client)
            with capture_logs() as logs:
                assert await notifier.send("x") is False
        assert len(fake.requests) == 3
        assert any(e["event"] == "telegram_message_lost" for e in logs)
        assert TOKEN not in repr(logs)

    async def test_client_error_is_not_retried(self, autojump_clock: trio.testing.MockClock) -> None:
        fake = FakeTelegram([401])
        async with httpx.AsyncClient(transport=httpx.MockTransport(fake)) as client:
            notifier = TelegramNotifier(cfg=CFG, secrets=secrets(), client=client)
            with capture_logs() as logs:
                assert await notifier.send("x") is False
        assert len(fake.requests) == 1
        assert TOKEN not in repr(logs)

    async def test_disabled_without_token(self) -> None:
        fake = FakeTelegram([])
        async with httpx.AsyncClient(transport=httpx.MockTransport(fake)) as client:
            notifier = TelegramNotifier(cfg=CFG, secrets=secrets(token=""), client=client)
            assert notifier.enabled is False
            assert await notifier.send("x") is False
        assert fake.requests == []


async def test_daily_report_alerts_and_a_dead_telegram(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    records = {
        date(2025, 3, 3): [trade("2025-03-03", -50.0)],
        date(2025, 3, 4): [trade("2025-03-04", 150.0), trade("2025-03-04", -50.0)],
    }
    fake = FakeTelegram([0] * 1000)  # Telegram unreachable the whole time
    async with httpx.AsyncClient(transport=httpx.MockTransport(fake)) as client:
        notifier = TelegramNotifier(cfg=CFG, secrets=secrets(), client=client)
        out_send, out_recv = trio.open_memory_channel[TelegramText](2)
        sender = TelegramSender(notifier=notifier, outbox=out_send)
        reporter = Reporter(
            mode="PAPER_LIVE",
            log_dir=tmp_path,
            load_records=lambda day: records.get(day, []),
            account=lambda day: ACCOUNT,
            telegram=sender,
        )
        send, recv = trio.open_memory_channel[ReporterMsg](16)
        with capture_logs() as logs:
            async with trio.open_nursery() as nursery:
                await nursery.start(sender.run, out_recv)
                await nursery.start(reporter.run, recv)
                t0 = trio.current_time()
                await send.send(
                    ScheduledTick(job=Job.DAILY_REPORT, slot_ms=MAR5_0005, fired_ms=MAR5_0005, missed=1)
                )
                await send.send(SafeModeChanged(on=True, reasons=("RATE_LIMIT",)))
                await send.send(KillSwitch(reason="OPERATOR"))
                await send.send(
                    EntryFilled(
                        trade_id="t",
                        symbol="ETHUSDT",
                        side=Side.LONG,
                        filled_qty=Decimal("0.5"),
                        avg_price=Decimal("2000"),
                        stop_price=Decimal("1980"),
                        final=True,
                    )
                )
                await send.send(Alert(kind="ERROR", text="boom", level="error"))
                await trio.lowlevel.checkpoint()
                # The reporter handled everything at once although Telegram is dead.
                await trio.testing.wait_all_tasks_blocked()
                assert trio.current_time() - t0 < 1.0
                await trio.sleep(120)
                nursery.cancel_scope.cancel()
    for day, count in (("2025-03-03", 1), ("2025-03-04", 2)):
        report = json.loads((tmp_path / f"daily-report-{day}.json").read_text())
        assert report["day"] == day
        assert report["trade_count"] == count
    assert json.loads((tmp_path / "daily-report-2025-03-04.json").read_text())["realized_pnl_usd"] == 100.0
    kinds = [e.get("kind") for e in logs if e["event"] == "alert"]
    assert kinds == ["SAFE_MODE_ON", "KILL_SWITCH", "POSITION_OPENED", "ERROR"]
    assert any(e["event"] == "telegram_outbox_full" for e in logs)
    assert any(e["event"] == "telegram_message_lost" for e in logs)
    assert TOKEN not in repr(logs)


def test_report_failure_is_logged_not_fatal(tmp_path: Path) -> None:
    def broken_account(day: date) -> AccountSnapshot:
        raise OSError("balance fetch failed")

    reporter = Reporter(
        mode="PAPER_LIVE", log_dir=tmp_path, load_records=lambda day: [], account=broken_account
    )
    with capture_logs() as logs:
        assert reporter.daily_report(date(2025, 3, 4)) is None
    assert [e["event"] for e in logs] == ["daily_report_failed", "alert"]
    assert not list(tmp_path.iterdir())
