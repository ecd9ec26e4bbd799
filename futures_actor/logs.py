"""Event logging: structlog configured once, `events.jsonl`, console output and secret redaction.

This module owns how log lines are made and where they go (BOT_SPEC §11, STYLE.md "logging"):

- One JSON object per line in `events-YYYY-MM-DD.jsonl` in the log directory, with the keys
  `timestamp` (ISO 8601 UTC from the injected `WallClock`, so replay and mock-clock runs log simulated
  time), `level`, `event`, `actor`, `symbol` (both `null` when not bound) and then the event's fields.
  `events.jsonl` is a symlink to today's file, moved at rotation, so `tail -F logs/events.jsonl` follows.
  A replay writes one plain `events.jsonl` for the whole run instead (`rotate=False`).
- Console: a readable renderer when stdout is a terminal, the same JSON lines otherwise, nothing when quiet;
  `console_level` keeps lower events off the console (a replay shows only errors there, on stderr: its
  stdout carries progress and the summary, its events are in events.jsonl).
- Redaction: every registered secret value is replaced by `***` wherever it occurs in any string of an
  event (nested dicts, lists and tuples too, exception text included) before anything is rendered.
  Objects of other types are turned into their `str()` first, so a repr cannot carry a secret past it.

Use the synchronous structlog API (`log.info(...)`), never the `a*` methods (they need asyncio).
`RotatingJsonlFile` is the shared append-only, daily/size-rotated JSONL writer (the trade journal uses it).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import sys
import threading
from collections.abc import Callable, Iterable, MutableMapping
from datetime import date
from pathlib import Path
from typing import Any, Literal, TextIO

import structlog

from futures_actor.control import RunOptions
from futures_actor.core.clock import SystemWallClock, WallClock, iso_utc, ms_to_datetime
from futures_actor.core.config import LoggingConfig
from futures_actor.core.secrets import MASK, Secrets

__all__ = [
    "ConsoleMode",
    "LogSink",
    "RotatingJsonlFile",
    "configure_logging",
    "get_logger",
    "open_run_logging",
    "redact",
    "redact_event",
    "register_secrets",
    "registered_secret_count",
    "reset_logging",
    "stream_files",
]

ConsoleMode = Literal["auto", "pretty", "json", "quiet"]

# A replay's console shows only events at this level or above (on stderr); all are in events.jsonl.
REPLAY_CONSOLE_LEVEL = "error"

# Keys every event line carries, in this order, before the event's own fields.
_LEADING_KEYS = ("timestamp", "level", "event", "actor", "symbol")
_ROTATED_NAME = re.compile(
    r"^(?P<stem>.+)-(?P<day>\d{4}-\d{2}-\d{2})(?:\.(?P<index>\d+))?(?P<suffix>\.[^.]+)$"
)

_secrets: set[str] = set()
_secrets_lock = threading.Lock()
_sink: LogSink | None = None


# --------------------------------------------------------------------------------------------- redaction


def register_secrets(values: Iterable[str]) -> None:
    """Remember secret values; every later log line has each occurrence replaced by `***`."""
    with _secrets_lock:
        _secrets.update(v for v in values if v)


def registered_secret_count() -> int:
    return len(_secrets)


def _clear_secrets() -> None:
    with _secrets_lock:
        _secrets.clear()


def redact(text: str) -> str:
    """`text` with every registered secret value replaced by `***` (longest first)."""
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {redact(str(k)): _redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact_value(v) for v in value]
    if isinstance(value, bytes):
        return redact(value.decode("utf-8", errors="replace"))
    return redact(str(value))


def redact_event(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: redact registered secrets in every field, nested too."""
    for key in list(event_dict):
        event_dict[key] = _redact_value(event_dict[key])
    return event_dict


# ------------------------------------------------------------------------------------- rotating JSONL file


class RotatingJsonlFile:
    """Append-only JSONL file rotated daily (date in the name) and optionally by size.

    `<dir>/<stem>-YYYY-MM-DD.jsonl` is the first file of a UTC day, `<stem>-YYYY-MM-DD.1.jsonl` the next
    when `max_bytes` > 0 and the current one would grow past it. `<dir>/<name>` is a symlink to the file in
    use, replaced atomically at each rotation. Each `write_line` is one `os.write` of the whole line on an
    `O_APPEND` descriptor, fsynced when `fsync` is true, so a reader never sees a partial line.
    The day comes from the injected wall clock. Thread-safe (a lock around each write).

    `rotate=False` (a replay's run directory) writes every line to `<dir>/<name>` itself, a plain file:
    one file holds the whole run, whatever the simulated days (`max_bytes` must then be 0).
    """

    def __init__(
        self,
        *,
        directory: Path,
        name: str,
        clock: WallClock,
        max_bytes: int = 0,
        fsync: bool = False,
        rotate: bool = True,
    ) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        if not rotate and max_bytes:
            raise ValueError(f"max_bytes must be 0 when rotate is false (one file), got {max_bytes}")
        self.directory = directory
        self.name = name
        self.clock = clock
        self.max_bytes = max_bytes
        self.fsync = fsync
        self.rotate = rotate
        stem, dot, suffix = name.rpartition(".")
        self._stem, self._suffix = (stem, dot + suffix) if dot and stem else (name, "")
        self._fd: int | None = None
        self._day: date | None = None
        self._index = 0
        self._size = 0
        self._lock = threading.Lock()
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def link_path(self) -> Path:
        return self.directory / self.name

    @property
    def current_path(self) -> Path | None:
        if not self.rotate:
            return self.link_path
        if self._day is None:
            return None
        return self._path_for(self._day, self._index)

    def _path_for(self, day: date, index: int) -> Path:
        suffix = f".{index}" if index else ""
        return self.directory / f"{self._stem}-{day.isoformat()}{suffix}{self._suffix}"

    def files(self) -> list[Path]:
        """Every file of this stream, oldest first: see `stream_files`."""
        return stream_files(self.directory, self.name)

    def _open(self, day: date, index: int) -> None:
        self._close_fd()
        path = self._path_for(day, index)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._fd, self._day, self._index = fd, day, index
        self._size = os.fstat(fd).st_size
        self._point_link(path)

    def _point_link(self, target: Path) -> None:
        tmp = self.directory / f".{self.name}.{os.getpid()}.tmp"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        try:
            os.symlink(target.name, tmp)
            os.replace(tmp, self.link_path)
        except OSError:
            # A filesystem without symlinks: the dated files still hold everything.
            with contextlib.suppress(OSError):
                tmp.unlink()

    def _latest_index(self, day: date) -> int:
        index = 0
        while self._path_for(day, index + 1).exists():
            index += 1
        return index

    def _open_single(self) -> None:
        fd = os.open(self.link_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._fd = fd
        self._size = os.fstat(fd).st_size

    def write_line(self, line: str) -> Path:
        """Append one line (a trailing newline is added if missing); returns the file written."""
        data = (line if line.endswith("\n") else line + "\n").encode("utf-8")
        with self._lock:
            if not self.rotate:
                if self._fd is None:
                    self._open_single()
            else:
                today = ms_to_datetime(self.clock.now_ms()).date()
                if self._fd is None or today != self._day:
                    self._open(today, self._latest_index(today))
            if self.max_bytes and self._size and self._size + len(data) > self.max_bytes:
                assert self._day is not None
                self._open(self._day, self._index + 1)
            assert self._fd is not None
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            if self.fsync:
                os.fsync(self._fd)
            self._size += len(data)
            path = self.current_path
            assert path is not None
            return path

    def _close_fd(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def close(self) -> None:
        with self._lock:
            self._close_fd()


def stream_files(directory: Path, name: str) -> list[Path]:
    """Every file of the JSONL stream `name` (e.g. `trades.jsonl`) in `directory`, oldest first.

    The daily/size-rotated files (`<stem>-YYYY-MM-DD[.N]<suffix>`, by day then index), then `<name>`
    itself when it is a plain file (a replay's single file; the symlink of a rotated stream is skipped,
    its target is already listed). A missing directory has no files.
    """
    stem, dot, suffix = name.rpartition(".")
    stem, suffix = (stem, dot + suffix) if dot and stem else (name, "")
    found: list[tuple[str, int, Path]] = []
    try:
        entries = list(directory.iterdir())
    except FileNotFoundError:
        return []
    for path in entries:
        m = _ROTATED_NAME.match(path.name)
        if m and m.group("stem") == stem and m.group("suffix") == suffix and path.is_file():
            found.append((m.group("day"), int(m.group("index") or 0), path))
    files = [p for _, _, p in sorted(found)]
    single = directory / name
    if single.is_file() and not single.is_symlink():
        files.append(single)
    return files


# ------------------------------------------------------------------------------------------- the sink


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _event_line(event_dict: MutableMapping[str, Any]) -> str:
    ordered: dict[str, Any] = {key: event_dict.get(key) for key in _LEADING_KEYS}
    for key, value in event_dict.items():
        if key not in ordered:
            ordered[key] = _jsonable(value)
    return json.dumps(ordered, ensure_ascii=False, default=str, separators=(",", ":"))


_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


def _level_number(level: str) -> int:
    """The numeric level of a structlog level name; unknown names rank as errors (never hidden)."""
    return _LEVELS.get(level.lower(), logging.ERROR)


class LogSink:
    """Where rendered events go: the rotated `events` file and the console. Owns the wall clock.

    `console_level` (e.g. "error"): only events at that level or above reach the console; every event
    still goes to the events file. None: every event reaches the console (as configured by `console`).
    """

    def __init__(
        self,
        *,
        clock: WallClock,
        events_file: RotatingJsonlFile | None,
        console: ConsoleMode,
        stream: TextIO,
        console_level: str | None = None,
    ) -> None:
        self.clock = clock
        self.events_file = events_file
        self.stream = stream
        if console_level is not None and console_level.lower() not in _LEVELS:
            raise ValueError(f"console_level {console_level!r}: expected one of {', '.join(_LEVELS)}")
        self._console_min = _level_number(console_level) if console_level is not None else None
        if console == "auto":
            console = "pretty" if _isatty(stream) else "json"
        self.console: ConsoleMode = console
        self._pretty = structlog.dev.ConsoleRenderer(colors=_isatty(stream)) if console == "pretty" else None
        self._lock = threading.Lock()
        # Called (from whatever thread logged) with the error when the events file stops taking writes
        # (a full disk): once per failure streak. Logging itself never raises into the caller.
        self.on_write_error: Callable[[OSError], None] | None = None
        self._write_failing = False

    def set_clock(self, clock: WallClock) -> None:
        """Switch the timestamp source (e.g. to the trio-driven clock once trio runs)."""
        self.clock = clock
        if self.events_file is not None:
            self.events_file.clock = clock

    def add_timestamp(
        self, _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        event_dict["timestamp"] = iso_utc(self.clock.now_ms())
        return event_dict

    def emit(self, logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> str:
        """Final processor: write the event everywhere, hand structlog the JSON line."""
        line = _event_line(event_dict)
        failed: OSError | None = None
        with self._lock:
            if self.events_file is not None:
                try:
                    self.events_file.write_line(line)
                    self._write_failing = False
                except OSError as exc:
                    # A full or failing log disk must not crash the actor that logged: the line goes to
                    # stderr instead and the owner is told once (it alerts and stops in order).
                    if not self._write_failing:
                        failed = exc
                    self._write_failing = True
                    with contextlib.suppress(OSError, ValueError):
                        sys.stderr.write(line + "\n")
                        sys.stderr.flush()
            quiet = self._console_min is not None and _level_number(str(event_dict.get("level", "info"))) < (
                self._console_min
            )
            if quiet:
                pass
            elif self.console == "json":
                self.stream.write(line + "\n")
                self.stream.flush()
            elif self._pretty is not None:
                pretty = dict(event_dict)
                pretty.pop("timestamp", None)
                rendered = self._pretty(logger, method, {"timestamp": event_dict["timestamp"], **pretty})
                self.stream.write(str(rendered) + "\n")
                self.stream.flush()
        if failed is not None and self.on_write_error is not None:
            self.on_write_error(failed)
        return line

    def close(self) -> None:
        if self.events_file is not None:
            self.events_file.close()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class _NullLogger:
    """The sink already wrote the line; the logger at the end of the chain does nothing."""

    def msg(self, *_args: Any, **_kwargs: Any) -> None:
        return None

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


def _add_defaults(
    _logger: Any, method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    event_dict.setdefault("actor", None)
    event_dict.setdefault("symbol", None)
    return event_dict


def configure_logging(
    *,
    cfg: LoggingConfig,
    log_dir: Path | None,
    clock: WallClock | None = None,
    secrets: Iterable[str] = (),
    console: ConsoleMode = "auto",
    stream: TextIO | None = None,
    console_level: str | None = None,
    rotate: bool = True,
) -> LogSink:
    """Configure structlog for the whole process and return the sink (close it at shutdown).

    `log_dir=None` writes no file (console only). Calling it again replaces the previous setup.
    `rotate=False` writes one `events.jsonl` (a replay's run directory) instead of daily files;
    `console_level` filters the console only (see `LogSink`).
    """
    global _sink
    register_secrets(secrets)
    clock = clock or SystemWallClock()
    events_file = None
    if log_dir is not None:
        events_file = RotatingJsonlFile(
            directory=log_dir,
            name=cfg.event_log_file,
            clock=clock,
            max_bytes=cfg.rotate_max_bytes if rotate else 0,
            rotate=rotate,
        )
    sink = LogSink(
        clock=clock,
        events_file=events_file,
        console=console,
        stream=stream or sys.stdout,
        console_level=console_level,
    )
    if _sink is not None:
        _sink.close()
    _sink = sink
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _add_defaults,
            sink.add_timestamp,
            structlog.processors.format_exc_info,
            redact_event,
            sink.emit,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(cfg.level)),
        logger_factory=lambda *_args: _NullLogger(),
        cache_logger_on_first_use=False,
    )
    return sink


def open_run_logging(
    options: RunOptions, clock: WallClock, log_dir: Path | None, *, replay: bool = False
) -> LogSink:
    """The bot's logging (`configure_logging` with the environment's secrets registered).

    Live: every event to the console (pretty on a terminal, JSON otherwise) and daily files.
    Replay: one events.jsonl for the run; the console (stderr) shows errors only, so that stdout
    carries nothing but the progress lines and the summary."""
    secrets = Secrets.from_env(options.config)
    return configure_logging(
        cfg=options.config.logging,
        log_dir=log_dir,
        clock=clock,
        secrets=secrets.values(),
        console="quiet" if options.console == "quiet" else "auto",
        stream=sys.stderr if replay else None,
        console_level=REPLAY_CONSOLE_LEVEL if replay else None,
        rotate=not replay,
    )


def current_sink() -> LogSink | None:
    """The sink `configure_logging` set up last (None when logging is not configured)."""
    return _sink


def reset_logging() -> None:
    """Undo `configure_logging` (tests): close the sink, forget secrets, structlog defaults."""
    global _sink
    if _sink is not None:
        _sink.close()
        _sink = None
    _clear_secrets()
    structlog.reset_defaults()


def get_logger(actor: str | None = None, **context: Any) -> Any:
    """A bound logger with `actor` (and any other context, e.g. `symbol`) on every line."""
    if actor is not None:
        context["actor"] = actor
    # A lazy proxy: it resolves the configuration at each call, so a module-level logger created at
    # import time still writes where `configure_logging` later points it (binding now would freeze
    # structlog's defaults into it).
    return structlog.get_logger(**context)
