"""Secrets from the environment, never from the config file (BOT_SPEC §13).

A `Secret` hides its value from `repr`, `str` and f-strings; the value is reachable only through
`reveal()`, which the request signer and the Telegram sender call at the last moment. `Secrets`
reads the variables the config names; `.env` files are parsed here (no extra dependency) and never
override a variable already set in the process environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from futures_actor.core.config import BotConfig

__all__ = ["MASK", "Secret", "Secrets", "load_dotenv", "parse_dotenv"]

MASK = "***"


class Secret:
    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return f"Secret({MASK})"

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return MASK

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a Secret cannot be pickled")


def parse_dotenv(text: str) -> dict[str, str]:
    """KEY=VALUE lines; `#` comments, optional `export `, single or double quotes."""
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        if not sep:
            continue
        key = key.strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        if key:
            values[key] = value
    return values


def load_dotenv(path: str | Path, environ: dict[str, str] | None = None) -> list[str]:
    """Put `.env` values into the environment unless already set; return the names loaded."""
    env = os.environ if environ is None else environ
    p = Path(path)
    if not p.is_file():
        return []
    loaded = []
    for key, value in parse_dotenv(p.read_text(encoding="utf-8")).items():
        if key not in env:
            env[key] = value
            loaded.append(key)
    return loaded


class Secrets:
    """The bot's secrets, read from the environment variables the config names."""

    __slots__ = ("api_key", "api_secret", "telegram_chat_id", "telegram_token")

    def __init__(
        self,
        *,
        api_key: Secret,
        api_secret: Secret,
        telegram_token: Secret,
        telegram_chat_id: Secret,
    ) -> None:
        self.api_key = api_key
        self.api_secret = api_secret
        self.telegram_token = telegram_token
        self.telegram_chat_id = telegram_chat_id

    @classmethod
    def from_env(cls, cfg: BotConfig, environ: Mapping[str, str] | None = None) -> Secrets:
        env = os.environ if environ is None else environ
        return cls(
            api_key=Secret(env.get(cfg.exchange.api_key_env, "")),
            api_secret=Secret(env.get(cfg.exchange.api_secret_env, "")),
            telegram_token=Secret(env.get(cfg.notifications.telegram_token_env, "")),
            telegram_chat_id=Secret(env.get(cfg.notifications.telegram_chat_id_env, "")),
        )

    def values(self) -> list[str]:
        """Every non-empty secret value, for log redaction."""
        return [s.reveal() for s in (self.api_key, self.api_secret, self.telegram_token) if s]

    def __repr__(self) -> str:
        return f"Secrets(api_key={self.api_key!r}, api_secret={self.api_secret!r}, telegram_token={MASK})"
