"""Regenerate the example config from the config defaults (every key, its default).

Two identical files: `config/config.example.json` (what the README shows and copies) and
`futures_actor/config.example.json` (shipped inside the package, the fallback when no config file exists).
"""

from __future__ import annotations

import json
from pathlib import Path

from futures_actor.core.config import config_to_dict, default_config

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = (ROOT / "config" / "config.example.json", ROOT / "futures_actor" / "config.example.json")

if __name__ == "__main__":
    text = json.dumps(config_to_dict(default_config()), indent=2) + "\n"
    for path in EXAMPLES:
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
