"""A child process's output as it comes, line by line, for tests that wait on a real process.

A thread reads the process's stdout pipe (a blocking read: no polling), appends every line to a file
(what the test prints when it fails) and wakes whoever waits for a line. A waiter is woken by the line it
waits for, by the end of the output (the process exited or closed its stdout) or by its deadline: every
wait stays bounded.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

__all__ = ["OutputLines", "event_name"]

_JOIN_S = 10.0  # the reader thread ends at the pipe's end of file, which follows the process's exit


def event_name(line: str) -> str | None:
    """The `event` of a JSON log line; None for any other line (a traceback, a print)."""
    if not line.startswith("{"):
        return None
    with contextlib.suppress(ValueError):
        row = json.loads(line)
        name = row.get("event") if isinstance(row, dict) else None
        if isinstance(name, str):
            return name
    return None


class OutputLines:
    """The lines `proc` writes to its stdout (start it with `stdout=subprocess.PIPE`), teed to `tee`."""

    def __init__(self, proc: subprocess.Popen[bytes], tee: Path) -> None:
        assert proc.stdout is not None, "start the process with stdout=subprocess.PIPE"
        tee.write_bytes(b"")
        self._cond = threading.Condition()
        self._lines: list[str] = []
        self._eof = False
        self._thread = threading.Thread(
            target=self._pump, args=(proc.stdout, tee), name=f"output-of-{proc.pid}", daemon=True
        )
        self._thread.start()

    def _pump(self, pipe: IO[bytes], tee: Path) -> None:
        try:
            with tee.open("ab") as out:
                for raw in iter(pipe.readline, b""):
                    out.write(raw)
                    out.flush()
                    with self._cond:
                        self._lines.append(raw.decode(errors="replace").rstrip("\n"))
                        self._cond.notify_all()
        finally:
            pipe.close()
            with self._cond:
                self._eof = True
                self._cond.notify_all()

    @property
    def count(self) -> int:
        """How many lines have come so far (a mark for `wait_line(after=...)`)."""
        with self._cond:
            return len(self._lines)

    @property
    def ended(self) -> bool:
        with self._cond:
            return self._eof

    def wait_line(self, match: Callable[[str], bool], *, after: int = 0, timeout: float) -> str | None:
        """The first line from index `after` on that `match`es, waiting up to `timeout` seconds for it;
        None when the output ended or the time is up without one."""
        deadline = time.monotonic() + timeout
        i = after
        with self._cond:
            while True:
                while i < len(self._lines):
                    if match(self._lines[i]):
                        return self._lines[i]
                    i += 1
                left = deadline - time.monotonic()
                if self._eof or left <= 0:
                    return None
                self._cond.wait(left)

    def join(self) -> None:
        """Wait for the reader to finish (after the process has exited)."""
        self._thread.join(_JOIN_S)
