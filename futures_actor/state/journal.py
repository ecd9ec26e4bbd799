"""The trade journal: `trades.jsonl`, one schema-valid record per finished trade (BOT_SPEC §11).

Policy:
- A record is validated against `log_schema.TRADE_RECORD_SCHEMA` before it is written. An invalid record
  is never dropped: it goes to the quarantine file `trades.rejected.jsonl` (with the violations and the
  time), an error is logged, and `InvalidTradeRecord` is raised to the caller.
- A trade id is written at most once: the journal scans every existing trade file when it opens and
  refuses a duplicate with `DuplicateTradeId` (a restart that re-finishes a trade finds it already there).
- Each record is one line written with one `os.write`, then fsynced, so `tail -F` never shows half a
  record and a crash never leaves one.
- A torn last line (a file that does not end in a newline: power loss, a full disk, a write cut short)
  never swallows the next record (BOT_SPEC §10 [resolved]). When the journal opens, and before the next
  write after a failed one, the text after the last newline is copied to the quarantine file (fsynced,
  with the file name and the reason) and cut off; a tail that is a whole JSON record only lacking its
  newline is kept and terminated instead. Files rotate daily (`trades-YYYY-MM-DD.jsonl`, UTC day from the
  injected wall clock) and, when `logging.rotate_max_bytes` > 0, by size (`trades-YYYY-MM-DD.1.jsonl`);
  `trades.jsonl` is a symlink to the file in use.

The writes are blocking file I/O; an actor under trio calls `write` through `trio.to_thread.run_sync`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec

from futures_actor.core.clock import WallClock, iso_utc
from futures_actor.core.config import LoggingConfig
from futures_actor.logs import RotatingJsonlFile, get_logger
from futures_actor.state.log_schema import SchemaViolation, validate_trade_record

__all__ = [
    "DuplicateTradeId",
    "InvalidTradeRecord",
    "JournalError",
    "TradeJournal",
    "iter_trade_records",
]

QUARANTINE_SUFFIX = ".rejected"
_TAIL_CHUNK = 4096  # bytes read backwards at a time when looking for a torn line's start


class JournalError(Exception):
    """Base of the trade journal's errors."""


class InvalidTradeRecord(JournalError):
    """The record does not match the schema; it was written to the quarantine file instead."""

    def __init__(self, trade_id: Any, violations: list[SchemaViolation], quarantine: Path) -> None:
        self.trade_id = trade_id
        self.violations = violations
        self.quarantine = quarantine
        details = "; ".join(v.describe() for v in violations)
        super().__init__(f"trade record {trade_id!r} refused ({details}); quarantined in {quarantine}")


class DuplicateTradeId(JournalError):
    """A record with this trade id is already in the journal."""

    def __init__(self, trade_id: str) -> None:
        self.trade_id = trade_id
        super().__init__(f"trade record {trade_id!r} refused: trade_id already in the journal")


def _normalize(value: Any) -> Any:
    """Plain JSON data: Structs to dicts, Decimals to floats, tuples to lists."""
    if isinstance(value, msgspec.Struct):
        value = msgspec.to_builtins(value, builtin_types=(Decimal,))
    if isinstance(value, Mapping):
        return {str(k): _normalize(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_normalize(v) for v in value]
    if isinstance(value, Decimal):
        return float(value)
    return value


def _quarantine_name(file_name: str) -> str:
    stem, dot, suffix = file_name.rpartition(".")
    return f"{stem}{QUARANTINE_SUFFIX}.{suffix}" if dot and stem else f"{file_name}{QUARANTINE_SUFFIX}"


_UNREADABLE = object()


def _parse_line(line: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return _UNREADABLE


def iter_trade_records(files: list[Path]) -> Iterator[tuple[Path, int, dict[str, Any]]]:
    """(file, line number, record) of every parseable line; unparseable lines are logged and skipped."""
    log = get_logger("journal")
    for path in files:
        with path.open("r", encoding="utf-8", errors="replace") as fh:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                record = _parse_line(line)
                if record is _UNREADABLE:
                    log.error("trade_log_line_unreadable", file=str(path), line=number)
                elif isinstance(record, dict):
                    yield path, number, record
                else:
                    log.error("trade_log_line_not_object", file=str(path), line=number)


class TradeJournal:
    """Append-only writer of `trades.jsonl` (see the module docstring for the policy)."""

    def __init__(
        self,
        *,
        directory: Path,
        cfg: LoggingConfig,
        clock: WallClock,
        rotate: bool = True,
        durable: bool = True,
    ) -> None:
        """`rotate=False` (a replay's run directory): one plain `trades.jsonl` holds every record.
        `durable=False` (a replay, which always starts over): records are written whole but not fsynced."""
        self._log = get_logger("journal")
        self._clock = clock
        self._file = RotatingJsonlFile(
            directory=directory,
            name=cfg.trade_log_file,
            clock=clock,
            max_bytes=cfg.rotate_max_bytes if rotate else 0,
            fsync=durable,
            rotate=rotate,
        )
        self.quarantine_path = directory / _quarantine_name(cfg.trade_log_file)
        self._check_tail = False
        for path in self._file.files():
            self._repair_torn_tail(path)
        self._trade_ids: set[str] = set()
        for path, number, record in iter_trade_records(self._file.files()):
            trade_id = record.get("trade_id")
            if not isinstance(trade_id, str):
                self._log.error("trade_log_line_without_trade_id", file=str(path), line=number)
            elif trade_id in self._trade_ids:
                self._log.error("trade_log_duplicate_found", file=str(path), line=number, trade_id=trade_id)
            else:
                self._trade_ids.add(trade_id)
        self._log.info("trade_journal_opened", directory=str(directory), known_trades=len(self._trade_ids))

    @property
    def link_path(self) -> Path:
        """`trades.jsonl`: the symlink to the file in use (what `tail -F` follows)."""
        return self._file.link_path

    def files(self) -> list[Path]:
        return self._file.files()

    def __contains__(self, trade_id: object) -> bool:
        return trade_id in self._trade_ids

    def __len__(self) -> int:
        return len(self._trade_ids)

    def records(self) -> Iterator[dict[str, Any]]:
        """Every record in the journal, oldest first (the performance layer rebuilds from these)."""
        for _path, _number, record in iter_trade_records(self._file.files()):
            yield record

    def write(self, record: Mapping[str, Any] | msgspec.Struct) -> Path:
        """Validate and append one trade record; returns the file it went to.

        Raises `InvalidTradeRecord` (after quarantining it) or `DuplicateTradeId`.
        """
        data = _normalize(record)
        trade_id = data.get("trade_id") if isinstance(data, dict) else None
        violations = validate_trade_record(data)
        if violations:
            quarantine = self._write_quarantine(data, violations)
            error = InvalidTradeRecord(trade_id, violations, quarantine)
            self._log.error("trade_record_invalid", trade_id=trade_id, error=str(error))
            raise error
        assert isinstance(trade_id, str)
        if trade_id in self._trade_ids:
            self._log.warning("trade_record_duplicate", trade_id=trade_id)
            raise DuplicateTradeId(trade_id)
        line = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        if self._check_tail:
            for existing in self._file.files():
                self._repair_torn_tail(existing)
            self._check_tail = False
        try:
            path = self._file.write_line(line)
        except OSError:
            # Part of the line may have reached the file (ENOSPC mid-write): check the tail before the
            # next record so it starts on a line of its own.
            self._check_tail = True
            raise
        self._trade_ids.add(trade_id)
        self._log.info(
            "trade_recorded",
            trade_id=trade_id,
            symbol=data.get("symbol"),
            reason=data["result"]["reason"],
            file=path.name,
        )
        return path

    def _repair_torn_tail(self, path: Path) -> None:
        """Quarantine and cut off the text after the last newline of `path` (see the module policy)."""
        with path.open("rb+") as fh:
            size = fh.seek(0, os.SEEK_END)
            if size == 0:
                return
            fh.seek(size - 1)
            if fh.read(1) == b"\n":
                return
            start = size
            while start > 0:
                chunk_start = max(0, start - _TAIL_CHUNK)
                fh.seek(chunk_start)
                found = fh.read(start - chunk_start).rfind(b"\n")
                if found >= 0:
                    start = chunk_start + found + 1
                    break
                start = chunk_start
            fh.seek(start)
            torn = fh.read()
            text = torn.decode("utf-8", "replace")
            if isinstance(_parse_line(text), dict):
                fh.seek(0, os.SEEK_END)
                fh.write(b"\n")
                fh.flush()
                os.fsync(fh.fileno())
                self._log.warning("trade_log_line_terminated", file=str(path), bytes=len(torn))
                return
            self._append_quarantine(
                {
                    "quarantined_at": iso_utc(self._clock.now_ms()),
                    "reason": "torn last line (no newline at the end of the file)",
                    "file": path.name,
                    "offset": start,
                    "text": text,
                }
            )
            fh.truncate(start)
            fh.flush()
            os.fsync(fh.fileno())
        self._log.error(
            "trade_log_torn_line_quarantined",
            file=str(path),
            offset=start,
            bytes=len(torn),
            quarantine=str(self.quarantine_path),
        )

    def _write_quarantine(self, data: Any, violations: list[SchemaViolation]) -> Path:
        return self._append_quarantine(
            {
                "quarantined_at": iso_utc(self._clock.now_ms()),
                "violations": [v.describe() for v in violations],
                "record": data,
            }
        )

    def _append_quarantine(self, entry: dict[str, Any]) -> Path:
        line = json.dumps(_json_safe(entry), ensure_ascii=False, separators=(",", ":")) + "\n"
        fd = os.open(self.quarantine_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(line.encode("utf-8"))
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        return self.quarantine_path

    def close(self) -> None:
        self._file.close()


def _json_safe(value: Any) -> Any:
    """Quarantine keeps whatever it was given: odd objects as their repr, non-finite floats as text."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return repr(value)
