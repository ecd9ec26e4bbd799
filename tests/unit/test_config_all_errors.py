"""Issue 13 (outside review): a config with several mistakes is refused with EVERY mistake listed.

Each error names the key path, the value and what was expected, exactly as a single error does; the
order is the file's (msgspec's) order for key errors, then the cross-field rules. A cross-field rule
that involves a key already refused is not reported (its comparison would be against a default the
user never wrote). `check-config` and a bot start print the same full list (exit code 2).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from futures_actor import cli
from futures_actor.core.config import ConfigError, load_config_bytes

BAD: dict[str, Any] = {
    "moed": "LIVE",  # unknown key
    "risk": {
        "max_open_positions": "two",  # wrong type
        "risk_per_trade_pct": 0.5,  # out of range
        "hedge_corr_max": 0.9,  # cross-field: > correlation_threshold 0.85
    },
    "universe": {"whitelist": ["BTCUSDT", 5, "ETHUSDT", 7]},  # two bad items of one list
    "execution": {"limit_ttl_seconds": -1.0, "maker_fee_pct": "x"},
    "regime": {"chop_adx_max": 22.0},  # cross-field: > range_adx_max 20
}

EXPECTED = [
    'config key moed: unknown key (value "LIVE"); allowed keys here: mode, ',
    'config key risk.max_open_positions: value "two" has the wrong type (str); expected int',
    "config key risk.risk_per_trade_pct: value 0.5 is out of range; allowed: float <= 0.05",
    "config key universe.whitelist[1]: value 5 has the wrong type (int); expected str",
    "config key universe.whitelist[3]: value 7 has the wrong type (int); expected str",
    "config key execution.limit_ttl_seconds: value -1.0 is out of range; allowed: float > 0.0",
    'config key execution.maker_fee_pct: value "x" has the wrong type (str); expected float',
    "config key regime.chop_adx_max: value 22.0 is out of order; must be <= regime.range_adx_max (20.0)",
    "config key risk.hedge_corr_max: value 0.9 is out of order; must be <= risk.correlation_threshold (0.85)",
]


def _refusal(doc: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config_bytes(json.dumps(doc).encode())
    return info.value


def test_every_error_is_listed() -> None:
    err = _refusal(BAD)
    messages = [str(e) for e in err.errors]
    assert len(messages) == len(EXPECTED), messages
    for expected in EXPECTED:
        assert sum(1 for m in messages if m.startswith(expected)) == 1, (expected, messages)
    text = str(err)
    assert text.startswith(f"the config has {len(EXPECTED)} errors:\n")
    for m in messages:
        assert f"\n  {m}" in text
    # The first error stays available as before (key and value).
    assert (err.key, err.value) == (err.errors[0].key, err.errors[0].value)


def test_keys_and_values_of_each_error() -> None:
    keys = {(e.key, json.dumps(e.value)) for e in _refusal(BAD).errors}
    assert ("universe.whitelist[1]", "5") in keys
    assert ("universe.whitelist[3]", "7") in keys
    assert ("risk.risk_per_trade_pct", "0.5") in keys
    assert ("moed", '"LIVE"') in keys


def test_a_single_error_reads_as_before() -> None:
    err = _refusal({"risk": {"max_open_positions": "two"}})
    assert (
        str(err) == 'config key risk.max_open_positions: value "two" has the wrong type (str); expected int'
    )
    assert len(err.errors) == 1


def test_several_cross_field_rules_are_all_reported() -> None:
    err = _refusal(
        {
            "risk": {"hedge_corr_max": 0.9, "max_same_direction_positions": 3},
            "leverage": {"trend": 2.0},
            "performance": {"min_trades_before_confidence": 60},
            "universe": {"whitelist": ["BTCUSDT"], "blacklist": ["BTCUSDT"]},
        }
    )
    assert sorted(e.key for e in err.errors) == [
        "performance.min_trades_before_confidence",
        "risk.hedge_corr_max",
        "risk.max_same_direction_positions",
        "universe.whitelist",
    ]


def test_no_cross_field_error_against_a_refused_key() -> None:
    """trend_adx_min is refused; range_adx_max 30 must not be compared with the default 25 in its place."""
    err = _refusal({"regime": {"trend_adx_min": "strong", "range_adx_max": 30.0, "chop_adx_max": 10.0}})
    assert [e.key for e in err.errors] == ["regime.trend_adx_min"]


def test_a_whole_section_of_the_wrong_type_and_others() -> None:
    err = _refusal({"risk": 5, "health": {"http_port": 70000}})
    assert [e.key for e in err.errors] == ["risk", "health.http_port"]


def _bad_file(tmp_path: Path) -> Path:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(BAD), encoding="utf-8")
    return path


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_check_config_prints_every_error(tmp_path: Path) -> None:
    code, out, err = _run("check-config", str(_bad_file(tmp_path)))
    assert code == cli.EXIT_CONFIG
    assert out == ""
    assert f"configuration refused: the config has {len(EXPECTED)} errors:" in err
    for expected in EXPECTED:
        assert expected in err


def test_bot_start_prints_the_same_list(tmp_path: Path) -> None:
    bad = _bad_file(tmp_path)
    code, _out, err = _run(
        "--paper", "--config", str(bad), "--state-dir", str(tmp_path / "s"), "--log-dir", str(tmp_path / "l")
    )
    assert code == cli.EXIT_CONFIG
    _, _, check_err = _run("check-config", str(bad))
    assert err == check_err
    assert not (tmp_path / "s").exists()
