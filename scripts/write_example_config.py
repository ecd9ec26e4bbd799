"""Regenerate config/config.example.json from the config defaults (every key, its default)."""

from __future__ import annotations

import json
from pathlib import Path

from futures_actor.core.config import config_to_dict, default_config

EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "config.example.json"

if __name__ == "__main__":
    EXAMPLE.write_text(json.dumps(config_to_dict(default_config()), indent=2) + "\n", encoding="utf-8")
    print(f"wrote {EXAMPLE}")
