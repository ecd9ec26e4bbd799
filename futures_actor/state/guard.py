"""Guards of the state directory at start-up (BOT_SPEC §10 [resolved]): one instance, no silent state loss.

This module owns two refusals that protect the account before anything connects:

- **One instance per state directory.** `lock_state_dir` takes an exclusive `fcntl.flock` on
  `<state_dir>/futures-actor.lock` and keeps it for the process lifetime (the kernel releases it when
  the process dies, `kill -9` included, so a crash never leaves a stale lock). The file holds the
  holder's pid, so a second instance fails with `StateDirLocked` naming the directory and that pid.
- **State loss is not silent.** `check_state_present` refuses to start (`StateMissing`) when the state
  file is missing or zero-length while the trade journal shows earlier trading, unless the operator
  asked for a fresh start (`--fresh-state`). LIVE also asks the exchange: our client-id prefix on an
  open order means earlier trading too (`check_exchange_clean`). Starting afresh over a lost state
  file would forget the weekly pause and could re-send a client id that the exchange already holds.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Final, Self

__all__ = [
    "FRESH_STATE_FLAG",
    "LOCK_FILE",
    "StateDirLock",
    "StateDirLocked",
    "StateGuardError",
    "StateMissing",
    "check_exchange_clean",
    "check_state_present",
    "lock_state_dir",
    "state_file_missing",
]

LOCK_FILE: Final = "futures-actor.lock"
FRESH_STATE_FLAG: Final = "--fresh-state"
# How many of our client ids a refusal message quotes (the rest are counted).
_QUOTED_IDS: Final = 3


class StateGuardError(Exception):
    """The bot must not start on this state directory (the message says why and what to do)."""


class StateDirLocked(StateGuardError):
    """Another process holds the state directory."""

    def __init__(self, state_dir: Path, holder_pid: int | None) -> None:
        holder = f"pid {holder_pid}" if holder_pid is not None else "a process whose pid is unknown"
        super().__init__(
            f"state directory {state_dir} is in use by another futures-actor instance ({holder}); "
            "two instances on one state directory would both trade the account. Stop the other one "
            "or give this one its own --state-dir"
        )
        self.state_dir = state_dir
        self.holder_pid = holder_pid


class StateMissing(StateGuardError):
    """The state file is missing or empty although there was trading before."""

    def __init__(self, db_path: Path, evidence: str) -> None:
        super().__init__(
            f"state file {db_path} is missing or empty, but {evidence}. Starting from an empty state "
            "would forget open trades, the daily/weekly stops and the client ids already sent. Restore "
            f"the file, or start afresh on purpose with {FRESH_STATE_FLAG}"
        )
        self.db_path = db_path
        self.evidence = evidence


class StateDirLock:
    """An exclusive lock on a state directory, held until `release()` (or process exit)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


def lock_state_dir(state_dir: Path) -> StateDirLock:
    """Lock `state_dir` (created if needed) for this process; `StateDirLocked` if another holds it."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_pid(fd)
        os.close(fd)
        raise StateDirLocked(state_dir, holder) from None
    except OSError:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    return StateDirLock(path, fd)


def state_file_missing(db_path: Path) -> bool:
    """True when the state file does not exist or has zero length (nothing SQLite could read)."""
    try:
        return db_path.stat().st_size == 0
    except FileNotFoundError:
        return True


def check_state_present(db_path: Path, *, journal_records: int, fresh: bool) -> None:
    """Refuse (`StateMissing`) a missing/empty state file when the journal holds trade records.

    `fresh=True` (the operator's `--fresh-state`) accepts it. A first start (no journal) passes.
    """
    if fresh or not state_file_missing(db_path) or journal_records == 0:
        return
    raise StateMissing(db_path, f"the trade journal holds {journal_records} trade record(s)")


def check_exchange_clean(db_path: Path, *, our_client_ids: Iterable[str], fresh: bool) -> None:
    """LIVE, with a state file that was missing or empty: refuse if the exchange holds orders of ours."""
    ids = sorted(set(our_client_ids))
    if fresh or not ids:
        return
    quoted = ", ".join(ids[:_QUOTED_IDS]) + (
        f" and {len(ids) - _QUOTED_IDS} more" if len(ids) > _QUOTED_IDS else ""
    )
    raise StateMissing(
        db_path, f"the exchange holds {len(ids)} open order(s) with our client-id prefix ({quoted})"
    )
