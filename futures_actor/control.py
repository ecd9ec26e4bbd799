"""Process exit codes and the kill-switch control file: facts shared by the command line and the
running system.

They live apart from `cli` and `app` so that neither imports the other for them (`app` used to
import `cli` for these while `cli` imports `app` to run the bot: an import circle).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["CONTROL_DIR", "EXIT_CONFIG", "EXIT_OK", "EXIT_RUNTIME", "KILL_FILE", "kill_file_path"]

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_CONFIG = 2

CONTROL_DIR = "control"
KILL_FILE = "kill"


def kill_file_path(state_dir: Path) -> Path:
    """`<state_dir>/control/kill`: present means "kill switch engaged" until `resume` removes it."""
    return state_dir / CONTROL_DIR / KILL_FILE
