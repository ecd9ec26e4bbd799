"""The effect vocabulary every actor machine shares: log records (and the one place they are written).

A machine never calls a logger: it returns `Log` effects, and the runtime writes them in order with
`write_log` onto its bound structlog logger. A `Log` carries exactly the event name and the keyword
fields the actor used to pass to structlog, so the JSON lines a runtime writes are the lines the actor
wrote before it became a machine.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Protocol, assert_never

import msgspec

__all__ = ["Log", "LogLevel", "LogSink", "write_log"]


class LogLevel(enum.Enum):
    """The structlog method a `Log` effect is written with."""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class Log(msgspec.Struct, frozen=True, kw_only=True):
    """Write one log record: `event` at `level` with `fields` (structlog keyword arguments).

    `fields` may hold `exc_info` (an exception) like any structlog call; a `Log` is never encoded.
    """

    level: LogLevel
    event: str
    fields: Mapping[str, object] = msgspec.field(default_factory=dict)


class LogSink(Protocol):
    """The four structlog methods a runtime writes `Log` effects with (a bound structlog logger)."""

    def debug(self, event: str, /, **kw: object) -> object: ...

    def info(self, event: str, /, **kw: object) -> object: ...

    def warning(self, event: str, /, **kw: object) -> object: ...

    def error(self, event: str, /, **kw: object) -> object: ...


def write_log(sink: LogSink, effect: Log) -> None:
    """Write one `Log` effect onto `sink` (synchronously: structlog under trio has no async methods)."""
    match effect.level:
        case LogLevel.DEBUG:
            sink.debug(effect.event, **effect.fields)
        case LogLevel.INFO:
            sink.info(effect.event, **effect.fields)
        case LogLevel.WARNING:
            sink.warning(effect.event, **effect.fields)
        case LogLevel.ERROR:
            sink.error(effect.event, **effect.fields)
        case _:
            assert_never(effect.level)
