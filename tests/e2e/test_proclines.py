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

# The child prints a JSON log line, then another after GAP_S (a wait must not end before it), then waits
# for its stdin to close. Bounds are generous for a loaded machine.
GAP_S = 0.3
BOUND_S = 30.0
CHILD = (
    "import sys, time\n"
    'print(\'{"event": "first"}\', flush=True)\n'
    f"time.sleep({GAP_S})\n"
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
        t0 = time.monotonic()
        second = out.wait_line(lambda line: event_name(line) == "second", timeout=BOUND_S)
        assert second == '{"event": "second", "n": 2}'
        assert time.monotonic() - t0 >= GAP_S * 0.9  # it waited for the line, it did not find an old one
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
