"""Telegram commands from the configured chat only, over a mocked Bot API (httpx.MockTransport)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from futures_actor.actors.telegram import (
    KILL_REASON,
    RESUME_REASON,
    CommandHandlers,
    TelegramCommands,
    TelegramNotifier,
)
from futures_actor.core.config import default_config
from futures_actor.core.secrets import Secrets

TOKEN = "123456:tg-test-token-abcdef"
CHAT = "4242"
OTHER_CHAT = 777
CFG = default_config()


class FakeBot:
    """getUpdates serves queued updates (then an empty long poll); sendMessage records the texts."""

    def __init__(self) -> None:
        self.pending: list[dict[str, Any]] = []
        self.sent: list[dict[str, Any]] = []
        self.offsets: list[int] = []
        self.next_id = 100
        self.fail_polls = 0

    def message(self, text: str, chat: int | str = CHAT) -> None:
        self.pending.append({"update_id": self.next_id, "message": {"chat": {"id": int(chat)}, "text": text}})
        self.next_id += 1

    async def handler(self, request: httpx.Request) -> httpx.Response:
        assert request.url.path.startswith(f"/bot{TOKEN}/")
        method = request.url.path.rsplit("/", 1)[1]
        if method == "getUpdates":
            if self.fail_polls:
                self.fail_polls -= 1
                return httpx.Response(502, content=b"bad gateway")
            offset = int(request.url.params["offset"])
            self.offsets.append(offset)
            result = [u for u in self.pending if u["update_id"] >= offset]
            if not result:  # a long poll: Telegram holds the request until the timeout
                await trio.sleep(float(request.url.params["timeout"]))
            return httpx.Response(200, json={"ok": True, "result": result})
        if method == "sendMessage":
            self.sent.append(json.loads(request.content))
            return httpx.Response(200, json={"ok": True, "result": {}})
        return httpx.Response(404, json={"ok": False, "description": "Not Found"})


class Calls:
    def __init__(self) -> None:
        self.kills: list[str] = []
        self.resumes: list[str] = []

    async def kill(self, reason: str) -> None:
        self.kills.append(reason)

    async def resume(self, reason: str) -> None:
        self.resumes.append(reason)

    def handlers(self) -> CommandHandlers:
        return CommandHandlers(
            status=lambda: "state HEALTHY, trading ACTIVE",
            positions=lambda: "BTCUSDT LONG 0.010",
            daily=lambda: "2025-01-02: pnl +12.50",
            profit=lambda: "12 trades, pnl +40.00",
            kill=self.kill,
            resume=self.resume,
        )


def make(bot: FakeBot, calls: Calls, clock: list[float]) -> tuple[TelegramCommands, httpx.AsyncClient]:
    client = httpx.AsyncClient(transport=httpx.MockTransport(bot.handler))
    secrets = Secrets.from_env(CFG, {"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_CHAT_ID": CHAT})
    notifier = TelegramNotifier(cfg=CFG.notifications, secrets=secrets, client=client)
    commands = TelegramCommands(
        notifier=notifier, cfg=CFG.notifications, handlers=calls.handlers(), clock=lambda: clock[0]
    )
    return commands, client


async def drive(
    bot: FakeBot, calls: Calls, clock: list[float] | None = None, *, seconds: float = 5.0
) -> None:
    commands, client = make(bot, calls, clock or [0.0])
    async with client, trio.open_nursery() as nursery:
        await nursery.start(commands.run)
        await trio.sleep(seconds)
        nursery.cancel_scope.cancel()


def texts(bot: FakeBot) -> list[str]:
    assert all(m["chat_id"] == CHAT for m in bot.sent)  # answers only ever go to the configured chat
    return [m["text"] for m in bot.sent]


async def test_read_commands_answer_from_the_handlers(autojump_clock: trio.testing.MockClock) -> None:
    bot, calls = FakeBot(), Calls()
    for text in ("/status", "/positions", "/daily", "/profit@futures_actor_bot", "/help"):
        bot.message(text)
    await drive(bot, calls)
    assert texts(bot)[:4] == [
        "state HEALTHY, trading ACTIVE",
        "BTCUSDT LONG 0.010",
        "2025-01-02: pnl +12.50",
        "12 trades, pnl +40.00",
    ]
    assert texts(bot)[4].startswith("Commands: /status")
    assert len(bot.sent) == 5  # each update answered once: the offset moved past it
    assert bot.offsets[0] == 0
    assert bot.offsets[-1] == bot.next_id


async def test_other_chats_are_ignored_and_logged(
    autojump_clock: trio.testing.MockClock, capsys: pytest.CaptureFixture[str]
) -> None:
    bot, calls = FakeBot(), Calls()
    bot.message("/kill", chat=OTHER_CHAT)
    bot.message("/kill CONFIRM", chat=OTHER_CHAT)
    bot.message("/resume", chat=OTHER_CHAT)
    bot.message("/status", chat=OTHER_CHAT)
    await drive(bot, calls)
    assert bot.sent == []
    assert calls.kills == []
    assert calls.resumes == []
    out = capsys.readouterr()
    assert (out.out + out.err).count("telegram_command_ignored") == 4
    assert str(OTHER_CHAT) in out.out + out.err


async def test_kill_needs_confirmation_within_the_window(autojump_clock: trio.testing.MockClock) -> None:
    bot, calls = FakeBot(), Calls()
    clock = [0.0]
    commands, client = make(bot, calls, clock)
    window = CFG.notifications.telegram_kill_confirm_seconds

    def update(text: str, chat: str = CHAT) -> Any:
        bot.message(text, chat=chat)
        from futures_actor.actors.telegram import _UPDATES

        return _UPDATES.decode(json.dumps({"ok": True, "result": [bot.pending[-1]]})).result[0]

    async with client:
        reply = await commands.handle(update("/kill"))
        assert reply is not None
        assert "/kill CONFIRM" in reply
        assert calls.kills == []
        # a confirmation from another chat neither engages nor consumes the pending request
        assert await commands.handle(update("/kill CONFIRM", chat=str(OTHER_CHAT))) is None
        clock[0] = window - 1
        reply = await commands.handle(update("/kill confirm"))
        assert calls.kills == [KILL_REASON]
        assert reply is not None
        assert "engaged" in reply
        # the confirmation is used up: another CONFIRM alone does nothing
        reply = await commands.handle(update("/kill CONFIRM"))
        assert calls.kills == [KILL_REASON]
        assert reply is not None
        assert "No /kill pending" in reply
        # too late: asked now, confirmed after the window
        await commands.handle(update("/kill"))
        clock[0] += window + 1
        reply = await commands.handle(update("/kill CONFIRM"))
        assert calls.kills == [KILL_REASON]
        assert reply is not None
        assert "expired" in reply
        # and the expired request is gone: an immediate second CONFIRM does nothing either
        await commands.handle(update("/kill CONFIRM"))
        assert calls.kills == [KILL_REASON]
        reply = await commands.handle(update("/resume"))
        assert calls.resumes == [RESUME_REASON]
        assert reply == "Kill switch released: entries may resume."


async def test_poll_failures_back_off_and_recover(autojump_clock: trio.testing.MockClock) -> None:
    bot, calls = FakeBot(), Calls()
    bot.fail_polls = 3
    bot.message("/status")
    await drive(bot, calls, seconds=60.0)
    assert texts(bot) == ["state HEALTHY, trading ACTIVE"]


async def test_a_failing_handler_answers_and_keeps_polling(autojump_clock: trio.testing.MockClock) -> None:
    bot, calls = FakeBot(), Calls()

    def broken() -> str:
        raise RuntimeError("boom")

    commands, client = make(bot, calls, [0.0])
    commands._handlers = CommandHandlers(
        status=broken,
        positions=lambda: "none",
        daily=lambda: "",
        profit=lambda: "",
        kill=calls.kill,
        resume=calls.resume,
    )
    bot.message("/status")
    bot.message("/positions")
    async with client, trio.open_nursery() as nursery:
        await nursery.start(commands.run)
        await trio.sleep(5)
        nursery.cancel_scope.cancel()
    assert texts(bot) == ["/status failed: RuntimeError", "none"]


async def test_token_never_in_logs(
    autojump_clock: trio.testing.MockClock, capsys: pytest.CaptureFixture[str]
) -> None:
    bot, calls = FakeBot(), Calls()
    bot.fail_polls = 2
    bot.message("/status", chat=OTHER_CHAT)
    await drive(bot, calls, seconds=30.0)
    out = capsys.readouterr()
    assert TOKEN not in out.out + out.err
