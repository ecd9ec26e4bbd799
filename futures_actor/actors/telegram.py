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
"""

from __future__ import annotations

import httpx
import msgspec
import trio

from futures_actor.core.config import NotificationsConfig
from futures_actor.core.secrets import MASK, Secrets
from futures_actor.logs import get_logger

__all__ = ["TELEGRAM_OUTBOX_SIZE", "TelegramNotifier", "TelegramSender", "TelegramText"]

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
