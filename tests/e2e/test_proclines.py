"""`OutputLines`: a wait on a real process's output is woken by the line it waits for, ends with the output,
and is bounded by its deadline."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from .proclines import OutputLines, event_name

pytestmark = pytest.mark.realclock

# The child prints a JSON log line, then waits for a line on its stdin before printing the next ones (a
# wait must not end before they come), then waits for its stdin to close. The test releases it: no
# sleep on either side. Bounds are generous for a loaded machine.
BOUND_S = 30.0
NOT_YET_S = 0.05  # a wait for a line not yet written must come back empty within its own deadline
CHILD = (
    "import sys\n"
    'print(\'{"event": "first"}\', flush=True)\n'
    "sys.stdin.readline()\n"
    "print('not json', flush=True)\n"
    'print(\'{"event": "second", "n": 2}\', flush=True)\n'
    "sys.stdin.read()\n"
)


def _start(tmp_path: Path) -> tuple[subprocess.Popen[bytes], OutputLines]:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        bufsize=0,
    )  # fmt: skip
    return proc, OutputLines(proc, tmp_path / "child.out")


def test_woken_by_the_line_teed_to_the_file_and_ended_by_the_exit(tmp_path: Path) -> None:
    proc, out = _start(tmp_path)
    try:
        assert out.wait_line(lambda line: event_name(line) == "first", timeout=BOUND_S) is not None
        # Not written yet: the wait does not find an old line, its deadline ends it.
        assert out.wait_line(lambda line: event_name(line) == "second", timeout=NOT_YET_S) is None
        assert proc.stdin is not None
        proc.stdin.write(b"go\n")  # the child prints the next lines now
        proc.stdin.flush()
        second = out.wait_line(lambda line: event_name(line) == "second", timeout=BOUND_S)
        assert second == '{"event": "second", "n": 2}'
        mark = out.count
        assert mark == 3
        assert out.wait_line(lambda line: True, after=mark, timeout=0.05) is None  # the deadline bounds it
        assert not out.ended
        assert proc.stdin is not None
        proc.stdin.close()  # the child exits: the wait ends with the output, long before its deadline
        t1 = time.monotonic()
        assert out.wait_line(lambda line: True, after=mark, timeout=BOUND_S) is None
        assert time.monotonic() - t1 < BOUND_S / 2
        assert out.ended
    finally:
        proc.kill()
        proc.wait(BOUND_S)
        out.join()
    assert (tmp_path / "child.out").read_text().splitlines() == [
        '{"event": "first"}',
        "not json",
        '{"event": "second", "n": 2}',
    ]


def test_event_name() -> None:
    assert event_name('{"event": "system_started", "level": "info"}') == "system_started"
    assert event_name('{"event": 3}') is None
    assert event_name('{"event": "cut') is None
    assert event_name("Traceback (most recent call last):") is None
    assert event_name("[1, 2]") is None
