"""Telegram notifications: `sendMessage` over httpx, bounded, never fatal (BOT_SPEC §11).

Policy:
- Enabled only when `notifications.telegram_enabled` and both the token and the chat id are set
  (`core.secrets.Secrets`); otherwise every send is a logged no-op.
- The bot token sits in the URL path (`/bot<token>/sendMessage`). It never reaches a log line or an
  exception: httpx errors are caught and logged as their type plus a message with the token replaced
  by `***`; no URL is logged. (httpx's own INFO request log goes to the stdlib `httpx` logger, which
  the bot does not route anywhere.)
- Bounded retries: `notifications.telegram_max_attempts` attempts per message, waiting
  `telegram_retry_wait_seconds` doubled each time (or Telegram's `retry_after` on 429, capped at
  `_MAX_RETRY_AFTER_S`) on trio's clock; each request is bounded by `telegram_timeout_seconds`.
  A 4xx other than 429 (bad token, unknown chat) is not retried.
- `TelegramSender.run` drains a bounded outbox in its own task, so a slow or failing Telegram never
  blocks the actor that raised the alert; `TelegramSender.offer` drops the message (and logs it) when the
  outbox is full — the alert itself is already in events.jsonl.

Commands (`TelegramCommands`, when `notifications.telegram_commands_enabled`): long-polls `getUpdates` and
answers `/status`, `/positions`, `/daily`, `/profit`, `/kill` and `/resume` sent from the configured chat
only. A message from any other chat gets no answer and is logged (`telegram_command_ignored`, with its chat
id). `/kill` engages nothing by itself: it asks for `/kill CONFIRM` within
`telegram_kill_confirm_seconds`; only that engages the kill switch (flatten everything, no new entries).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import msgspec
import trio

from futures_actor.core.config import NotificationsConfig
from futures_actor.core.secrets import MASK, Secrets
from futures_actor.logs import get_logger

__all__ = [
    "TELEGRAM_OUTBOX_SIZE",
    "CommandHandlers",
    "TelegramCommands",
    "TelegramNotifier",
    "TelegramSender",
    "TelegramText",
]

TELEGRAM_OUTBOX_SIZE = 64
# Telegram's limit on one message's text (protocol fact).
_MAX_TEXT_CHARS = 4096
_MAX_RETRY_AFTER_S = 60.0
_HTTP_OK = 200
_HTTP_TOO_MANY = 429
_HTTP_CLIENT_ERROR_MIN = 400
_HTTP_SERVER_ERROR_MIN = 500
_MAX_ERROR_CHARS = 300


class TelegramText(msgspec.Struct, frozen=True, kw_only=True):
    text: str


class _RetryAfter(msgspec.Struct):
    retry_after: float | None = None


class _Reply(msgspec.Struct):
    ok: bool = False
    description: str = ""
    parameters: _RetryAfter | None = None


_REPLY = msgspec.json.Decoder(_Reply)


class _Chat(msgspec.Struct):
    id: int


class _Message(msgspec.Struct):
    chat: _Chat
    text: str = ""


class _Update(msgspec.Struct):
    update_id: int
    message: _Message | None = None


class _Updates(msgspec.Struct):
    ok: bool = False
    result: list[_Update] = msgspec.field(default_factory=list)
    description: str = ""


_UPDATES = msgspec.json.Decoder(_Updates)


class TelegramNotifier:
    """Sends one text message with bounded retries. `send` never raises (except Cancelled)."""

    def __init__(self, *, cfg: NotificationsConfig, secrets: Secrets, client: httpx.AsyncClient) -> None:
        self._cfg = cfg
        self._token = secrets.telegram_token.reveal()
        self._chat_id = secrets.telegram_chat_id.reveal()
        self._client = client
        self._log = get_logger("telegram")
        self.enabled = bool(cfg.telegram_enabled and self._token and self._chat_id)

    def _redact(self, text: str) -> str:
        if self._token:
            text = text.replace(self._token, MASK)
        return text[:_MAX_ERROR_CHARS]

    async def send(self, text: str) -> bool:
        """True when Telegram accepted the message."""
        if not self.enabled:
            self._log.debug("telegram_disabled_skip")
            return False
        url = f"{self._cfg.telegram_api_base_url.rstrip('/')}/bot{self._token}/sendMessage"
        payload = {"chat_id": self._chat_id, "text": text[:_MAX_TEXT_CHARS], "disable_web_page_preview": True}
        wait = self._cfg.telegram_retry_wait_seconds
        attempts = self._cfg.telegram_max_attempts
        for attempt in range(1, attempts + 1):
            retry_after: float | None = None
            try:
                response = await self._client.post(
                    url, json=payload, timeout=self._cfg.telegram_timeout_seconds
                )
            except httpx.HTTPError as exc:
                self._log.warning(
                    "telegram_send_failed",
                    attempt=attempt,
                    error_type=type(exc).__name__,
                    error=self._redact(str(exc)),
                )
            else:
                reply = self._decode(response.content)
                if response.status_code == _HTTP_OK and reply is not None and reply.ok:
                    return True
                description = self._redact(reply.description if reply is not None else "")
                self._log.warning(
                    "telegram_send_refused",
                    attempt=attempt,
                    status=response.status_code,
                    description=description,
                )
                if (
                    response.status_code == _HTTP_TOO_MANY
                    and reply is not None
                    and reply.parameters is not None
                ):
                    retry_after = reply.parameters.retry_after
                elif _HTTP_CLIENT_ERROR_MIN <= response.status_code < _HTTP_SERVER_ERROR_MIN and (
                    response.status_code != _HTTP_TOO_MANY
                ):
                    break
            if attempt < attempts:
                delay = min(retry_after, _MAX_RETRY_AFTER_S) if retry_after is not None else wait
                await trio.sleep(max(0.0, delay))
                wait *= 2
        self._log.error("telegram_message_lost", attempts=attempts, chars=len(text))
        return False

    @property
    def chat_id(self) -> str:
        return self._chat_id

    async def get_updates(self, offset: int, *, poll_timeout_s: float) -> list[_Update] | None:
        """One `getUpdates` long poll for messages after `offset`; None (logged) on any failure."""
        url = f"{self._cfg.telegram_api_base_url.rstrip('/')}/bot{self._token}/getUpdates"
        params: dict[str, str | int] = {
            "offset": offset,
            "timeout": int(poll_timeout_s),
            "allowed_updates": '["message"]',
        }
        try:
            response = await self._client.get(
                url, params=params, timeout=poll_timeout_s + self._cfg.telegram_timeout_seconds
            )
        except httpx.HTTPError as exc:
            self._log.warning(
                "telegram_poll_failed", error_type=type(exc).__name__, error=self._redact(str(exc))
            )
            return None
        try:
            updates = _UPDATES.decode(response.content)
        except msgspec.DecodeError as exc:
            self._log.warning(
                "telegram_poll_bad_reply", status=response.status_code, error=self._redact(str(exc))
            )
            return None
        if response.status_code != _HTTP_OK or not updates.ok:
            self._log.warning(
                "telegram_poll_refused",
                status=response.status_code,
                description=self._redact(updates.description),
            )
            return None
        return updates.result

    @staticmethod
    def _decode(content: bytes) -> _Reply | None:
        try:
            return _REPLY.decode(content)
        except msgspec.DecodeError:
            return None


class TelegramSender:
    """Owns the outbox of Telegram messages and sends them one by one in its own task."""

    def __init__(self, *, notifier: TelegramNotifier, outbox: trio.MemorySendChannel[TelegramText]) -> None:
        self._notifier = notifier
        self._outbox = outbox
        self._log = get_logger("telegram")

    @property
    def notifier(self) -> TelegramNotifier:
        return self._notifier

    def offer(self, text: str) -> bool:
        """Queue a message without waiting; False (logged) when disabled or the outbox is full."""
        if not self._notifier.enabled:
            return False
        try:
            self._outbox.send_nowait(TelegramText(text=text))
        except trio.WouldBlock:
            self._log.error("telegram_outbox_full", chars=len(text))
            return False
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._log.error("telegram_outbox_closed", chars=len(text))
            return False
        return True

    async def run(
        self,
        inbox: trio.MemoryReceiveChannel[TelegramText],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        task_status.started()
        async for message in inbox:
            await self._notifier.send(message.text)


class CommandHandlers(msgspec.Struct, frozen=True, kw_only=True):
    """What the commands read and do. The text callables answer from the bot's own state; `kill` and
    `resume` are the operator callbacks (the same as `POST /kill` and `POST /resume`)."""

    status: Callable[[], str]
    positions: Callable[[], str]
    daily: Callable[[], str]
    profit: Callable[[], str]
    kill: Callable[[str], Awaitable[None]]
    resume: Callable[[str], Awaitable[None]]


KILL_REASON = "TELEGRAM_KILL"
RESUME_REASON = "TELEGRAM_RESUME"
_CONFIRM_WORD = "CONFIRM"
_HELP = (
    "Commands: /status, /positions, /daily, /profit, /kill (then /kill CONFIRM to flatten everything and "
    "stop entries), /resume"
)


class TelegramCommands:
    """Answers commands from the configured chat (long-polling `getUpdates`); ignores every other chat."""

    def __init__(
        self,
        *,
        notifier: TelegramNotifier,
        cfg: NotificationsConfig,
        handlers: CommandHandlers,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self._notifier = notifier
        self._cfg = cfg
        self._handlers = handlers
        self._clock = clock
        self._offset = 0
        self._kill_requested_at: float | None = None
        self._log = get_logger("telegram")

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        if not self._notifier.enabled:
            return
        wait = self._cfg.telegram_retry_wait_seconds
        while True:
            updates = await self._notifier.get_updates(
                self._offset, poll_timeout_s=self._cfg.telegram_poll_timeout_seconds
            )
            if updates is None:
                await trio.sleep(wait)
                wait = min(wait * 2, _MAX_RETRY_AFTER_S)
                continue
            wait = self._cfg.telegram_retry_wait_seconds
            for update in updates:
                self._offset = max(self._offset, update.update_id + 1)
                await self.handle(update)

    async def handle(self, update: _Update) -> str | None:
        """Answer one update; returns the reply sent (None when nothing was sent)."""
        message = update.message
        if message is None or not message.text.startswith("/"):
            return None
        if str(message.chat.id) != self._notifier.chat_id:
            self._log.warning(
                "telegram_command_ignored", chat_id=message.chat.id, reason="not the configured chat"
            )
            return None
        words = message.text.split()
        command = words[0].split("@", 1)[0].lower()
        args = words[1:]
        self._log.info("telegram_command", command=command)
        reply = await self._answer(command, args)
        await self._notifier.send(reply)
        return reply

    async def _answer(self, command: str, args: list[str]) -> str:
        h = self._handlers
        try:
            match command:
                case "/status":
                    return h.status()
                case "/positions":
                    return h.positions()
                case "/daily":
                    return h.daily()
                case "/profit":
                    return h.profit()
                case "/kill":
                    return await self._kill(args)
                case "/resume":
                    self._kill_requested_at = None
                    await h.resume(RESUME_REASON)
                    return "Kill switch released: entries may resume."
                case _:
                    return _HELP
        except Exception as exc:  # an answer must never take the command loop down
            self._log.error("telegram_command_failed", command=command, error_type=type(exc).__name__)
            return f"{command} failed: {type(exc).__name__}"

    async def _kill(self, args: list[str]) -> str:
        now = self._clock()
        window = self._cfg.telegram_kill_confirm_seconds
        confirmed = [a.upper() for a in args] == [_CONFIRM_WORD]
        if confirmed and self._kill_requested_at is not None and now - self._kill_requested_at <= window:
            self._kill_requested_at = None
            await self._handlers.kill(KILL_REASON)
            return "Kill switch engaged: closing every position, no new entries until /resume."
        if confirmed:  # a stray or late confirmation starts nothing: the request must come first
            self._kill_requested_at = None
            return f"No /kill pending (or it expired after {window:g} s): send /kill first."
        self._kill_requested_at = now
        return (
            "This flattens every position and stops new entries. "
            f"Send /kill {_CONFIRM_WORD} within {window:g} s to confirm."
        )
