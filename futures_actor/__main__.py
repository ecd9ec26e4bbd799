"""`python -m futures_actor ...` and the `futures-actor` console script: see `futures_actor.cli`."""

from __future__ import annotations

import sys

from futures_actor.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
