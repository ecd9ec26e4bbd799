"""Placeholder root of the running bot: `run_bot(options)` under `trio.run`.

The real root supervisor (actors, signal handling, shutdown order) replaces this module. Until then
`run_bot` only proves the start-up path: secrets from the environment, logging configured (events.jsonl,
console, redaction), a `starting` event with the mode, then it refuses to trade, says so loudly, and stops
cleanly with exit code 0. It never connects anywhere and never pretends to trade.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from futures_actor.cli import EXIT_OK
from futures_actor.core.clock import SystemWallClock
from futures_actor.core.secrets import Secrets
from futures_actor.logs import configure_logging, get_logger

if TYPE_CHECKING:
    from futures_actor.cli import RunOptions

__all__ = ["run_bot"]


async def run_bot(options: RunOptions) -> int:
    """Start, log, refuse to trade (the actor system is not available yet), stop. Returns the exit code."""
    secrets = Secrets.from_env(options.config)
    sink = configure_logging(
        cfg=options.config.logging,
        log_dir=options.log_dir,
        clock=SystemWallClock(),
        secrets=secrets.values(),
        console="quiet" if options.console == "quiet" else "auto",
    )
    log = get_logger("app")
    try:
        log.info(
            "starting",
            mode=options.mode,
            testnet=options.testnet,
            config_file=str(options.config_path),
            log_dir=str(options.log_dir),
            state_dir=str(options.state_dir),
            replay_dir=str(options.replay_dir) if options.replay_dir is not None else None,
            api_key_set=bool(secrets.api_key),
        )
        for warning in options.warnings:
            log.warning("startup_warning", message=warning)
        log.error(
            "trading_refused",
            reason="the actor system is not available yet in this build; no order will be sent",
            mode=options.mode,
        )
        log.info("stopped", exit_code=EXIT_OK)
        return EXIT_OK
    finally:
        sink.close()
