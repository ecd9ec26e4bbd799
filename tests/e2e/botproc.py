"""The bot as a real subprocess (`python -m futures_actor --live`) against a `SimHost`, with its event log.

The bot's console (the same JSON lines as its event log, written right after each line reaches the log file)
comes through a pipe: a wait for an event is woken by the event's own line, bounded by its deadline, instead
of re-reading the log on a real-clock timer."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Protocol

from futures_actor.core.config import default_config

from .proclines import OutputLines, event_name
from .simhost import API_KEY, API_SECRET

__all__ = ["REPO", "BotProcess", "Endpoints", "live_config"]

REPO = Path(__file__).resolve().parents[2]


class Endpoints(Protocol):
    """Where the fake exchange listens (a `SimHost`, or a `sim-exchange` process)."""

    @property
    def rest_url(self) -> str: ...

    @property
    def ws_url(self) -> str: ...


def live_config(host: Endpoints, symbols: list[str], **sections: dict[str, Any]) -> dict[str, Any]:
    """A LIVE config for the fake exchange: whitelisted symbols, fast start-up, port 0, quick retries."""
    cfg: dict[str, Any] = {
        "mode": "LIVE",
        "exchange": {"rest_base_url": host.rest_url, "ws_base_url": host.ws_url},
        "universe": {
            "whitelist": symbols,
            "min_24h_volume_usdt": 0.0,
            "max_spread_pct": 0.5,
            "max_abs_funding_rate": 0.5,
            "min_atr_ratio": 0.0,
            "spread_sample_seconds": 0.5,
        },
        "health": {"http_port": 0, "heartbeat_interval_seconds": 0.5},
        "shutdown": {"timeout_seconds": 10.0},
        "startup": {
            "retry_wait_initial_seconds": 0.2,
            "retry_wait_max_seconds": 2.0,
            "give_up_seconds": 60.0,
        },
        # A reconcile costs 90 request weight (open orders and algo orders of every symbol, positions,
        # account): every 5 s that is 1,080 of the 1,680 a minute the bot allows itself (70 % of the
        # fake's 2,400), leaving room for the rest. At 2 s the bot paced itself into minute-long waits.
        "execution": {"reconcile_interval_seconds": 5.0},
    }
    for name, values in sections.items():
        cfg.setdefault(name, {}).update(values)
    return cfg


class BotProcess:
    """One run of the bot; `root` holds config, logs and state (the state survives restarts)."""

    def __init__(self, root: Path, config: dict[str, Any], *, extra_args: tuple[str, ...] = ()) -> None:
        self.root = root
        self.log_dir = root / "logs"
        self.state_dir = root / "state"
        self.config_path = root / "config.json"
        self.config_path.write_text(json.dumps(config), encoding="utf-8")
        self.extra_args = extra_args
        self.proc: subprocess.Popen[bytes] | None = None
        self._out: OutputLines | None = None
        self.runs = 0

    def env(self) -> dict[str, str]:
        cfg = default_config()
        env = dict(os.environ)
        env[cfg.exchange.api_key_env] = API_KEY
        env[cfg.exchange.api_secret_env] = API_SECRET
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        self.runs += 1
        cmd = [
            sys.executable, "-m", "futures_actor", "--live", "--config", str(self.config_path),
            "--log-dir", str(self.log_dir), "--state-dir", str(self.state_dir),
            *self.extra_args, *args,
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, env=self.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=0
        )
        self._out = OutputLines(self.proc, self.root / f"bot-{self.runs}.out")
        return self.proc

    def output(self) -> str:
        return (self.root / f"bot-{self.runs}.out").read_text(errors="replace")

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for path in sorted(self.log_dir.glob("events-*.jsonl")):
            for line in path.read_text(encoding="utf-8").splitlines():
                with contextlib.suppress(json.JSONDecodeError):  # a line being written right now
                    rows.append(json.loads(line))
        return [e for e in rows if name is None or e.get("event") == name]

    def wait_event(self, name: str, *, timeout: float, count: int = 1) -> dict[str, Any]:
        found = self.next_event(name, timeout=timeout, count=count)
        if found is None:
            raise AssertionError(f"event {name!r} not within {timeout} s:\n{self.output()[-3000:]}")
        return found

    def next_event(self, name: str, *, timeout: float, count: int = 1) -> dict[str, Any] | None:
        """The `count`-th event `name` in the log (every run so far), or None when it has not come within
        `timeout` (the bot's exit raises). Woken by the bot's console line for the event, not by a timer."""
        deadline = time.monotonic() + timeout
        while True:
            mark = self._out.count if self._out is not None else 0
            found = self.events(name)  # the log file has every line the console has shown, and more
            if len(found) >= count:
                return found[count - 1]
            left = deadline - time.monotonic()
            if self._out is None or self._out.ended:
                self._raise_if_exited(name, left)
                return None
            if left <= 0:
                return None
            self._out.wait_line(lambda line: event_name(line) == name, after=mark, timeout=left)

    def wait_output(self, *, timeout: float) -> None:
        """Until the bot writes its next console line (anything it did), the output ends, or `timeout`."""
        if self._out is not None and not self._out.ended:
            self._out.wait_line(lambda line: True, after=self._out.count, timeout=timeout)

    def _raise_if_exited(self, name: str, left: float) -> None:
        """The output has ended: the bot is exiting (given up to `left` s to be reaped), or was never started."""
        if self.proc is None:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=max(left, 0.0))
        if self.proc.returncode is not None:
            raise AssertionError(
                f"bot exited with {self.proc.returncode} before event {name!r}:\n{self.output()[-3000:]}"
            )

    def signal(self, signum: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        code = self.proc.wait(timeout=timeout)
        if self._out is not None:
            self._out.join()
        return code

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        if self._out is not None:
            self._out.join()
