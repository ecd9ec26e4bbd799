"""Process exit codes, the run options and the kill-switch control file: what the command line decides
and the running system reads.

They live apart from `cli` and `app` so that neither imports the other for them (`app` used to
import `cli` for these while `cli` imports `app` to run the bot: an import circle).
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from futures_actor.core.config import BotConfig, Mode

__all__ = [
    "CONTROL_DIR",
    "EXIT_CONFIG",
    "EXIT_OK",
    "EXIT_RUNTIME",
    "KILL_FILE",
    "RunOptions",
    "kill_file_path",
]

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_CONFIG = 2

CONTROL_DIR = "control"
KILL_FILE = "kill"


def kill_file_path(state_dir: Path) -> Path:
    """`<state_dir>/control/kill`: present means "kill switch engaged" until `resume` removes it."""
    return state_dir / CONTROL_DIR / KILL_FILE


class RunOptions(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a runner (`replay_run.run_replay`, `live_run.run_live`) needs, decided and validated
    by the command line.

    `mode` is the effective mode (PAPER_LIVE unless the config says LIVE and `--live` was given).
    `warnings` are messages for the event log (the CLI also printed them to stderr).
    """

    config: BotConfig
    config_path: Path
    mode: Mode
    testnet: bool
    log_dir: Path
    state_dir: Path
    replay_dir: Path | None = None
    # --timerange (UTC ms, start inclusive, end exclusive) and --symbols; replay only.
    replay_start_ms: int | None = None
    replay_end_ms: int | None = None
    replay_symbols: tuple[str, ...] | None = None
    env_file: Path | None = None
    console: str = "auto"
    warnings: tuple[str, ...] = ()
    # `--fresh-state`: start although the state file is missing or empty while the trade journal (or,
    # LIVE, the exchange) shows earlier trading (BOT_SPEC §10 [resolved]); refused otherwise.
    fresh_state: bool = False
