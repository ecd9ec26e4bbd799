"""The operator kill switch (BOT_SPEC §9): engage flattens every position and blocks new entries; resume
releases it.

It owns the switch's state (`engaged`) and its three ways in: the kill file `<state_dir>/control/kill`
(`python -m futures_actor kill` writes it, `resume` removes it; watched every heartbeat interval, so it
survives restarts), and the HTTP endpoint and Telegram commands, which write or remove the same file
before acting, so that a restart keeps the operator's decision. Engaging sends `KillSwitch` to
PortfolioRisk, Execution and the Reporter and tells Health; releasing sends `Resume` (the Reporter has
nothing to say about it). Both are idempotent: a second engage (or resume) does nothing.
"""

from __future__ import annotations

from pathlib import Path

import trio

from futures_actor.actors.execution import ExecutionInbox
from futures_actor.actors.health import HealthMsg, KillSwitchChanged
from futures_actor.actors.messages import KillSwitch, Resume
from futures_actor.actors.portfolio_risk import RiskInbox
from futures_actor.actors.reporter import ReporterMsg
from futures_actor.control import kill_file_path
from futures_actor.logs import get_logger

__all__ = ["OperatorKillSwitch"]

log = get_logger("app")


class OperatorKillSwitch:
    """The kill switch of one system (see the module docstring)."""

    def __init__(
        self,
        *,
        state_dir: Path,
        poll_seconds: float,
        risk: trio.MemorySendChannel[RiskInbox],
        execution: trio.MemorySendChannel[ExecutionInbox],
        reporter: trio.MemorySendChannel[ReporterMsg],
        health: trio.MemorySendChannel[HealthMsg],
    ) -> None:
        self._path = kill_file_path(state_dir)
        self._poll_seconds = poll_seconds
        self._risk = risk
        self._execution = execution
        self._reporter = reporter
        self._health = health
        self.engaged = False

    async def engage(self, reason: str) -> None:
        """Flatten everything and block new entries (nothing happens if already engaged)."""
        if self.engaged:
            return
        self.engaged = True
        log.critical("kill_switch_engaged", reason=reason)
        await self._risk.send(KillSwitch(reason=reason))
        await self._execution.send(KillSwitch(reason=reason))
        await self._reporter.send(KillSwitch(reason=reason))
        await self._health.send(KillSwitchChanged(on=True, reason=reason))

    async def resume(self, reason: str) -> None:
        """Release the switch (nothing happens if not engaged)."""
        if not self.engaged:
            return
        self.engaged = False
        log.warning("kill_switch_released", reason=reason)
        await self._risk.send(Resume(reason=reason))
        await self._execution.send(Resume(reason=reason))
        await self._health.send(KillSwitchChanged(on=False, reason=reason))

    async def operator_kill(self, reason: str) -> None:
        """HTTP and Telegram: write the kill file (it survives a restart), then engage."""
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._path.write_text(f'{{"reason": "{reason}", "via": "http"}}\n', encoding="utf-8")
        await self.engage(reason)

    async def operator_resume(self, reason: str) -> None:
        """HTTP and Telegram: remove the kill file, then resume."""
        self._path.unlink(missing_ok=True)
        await self.resume(reason)

    async def watch_file(self) -> None:
        """Engage while the kill file exists; resume once it is gone (checked every `poll_seconds`)."""
        while True:
            if self._path.exists():
                await self.engage("OPERATOR_KILL_FILE")
            elif self.engaged:
                await self.resume("OPERATOR_RESUME")
            await trio.sleep(self._poll_seconds)
