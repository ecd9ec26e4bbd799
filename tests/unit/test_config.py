"""Config loading (issue 2, AC13): every key typed and bounded, refusals name key, value and allowed range."""

from __future__ import annotations

import json
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from futures_actor.core.config import (
    BotConfig,
    ConfigError,
    config_to_dict,
    default_config,
    load_config,
    load_config_bytes,
)

REPO = Path(__file__).resolve().parents[2]
SEED_CONFIG = REPO / "spec" / "seed-data" / "CONFIG.example.json"  # the specification's seed config
EXAMPLE_CONFIG = REPO / "config" / "config.example.json"


def _leaves(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, f"{prefix}.{key}" if prefix else key)
    else:
        yield prefix, node


def _nested(path: str, value: Any) -> dict[str, Any]:
    """`{"risk": {"max_leverage": value}}` for path `risk.max_leverage`."""
    parts = path.split(".")
    doc: dict[str, Any] = {parts[-1]: value}
    for part in reversed(parts[:-1]):
        doc = {part: doc}
    return doc


def _load(doc: Any) -> BotConfig:
    return load_config_bytes(json.dumps(doc).encode())


def _refusal(doc: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        _load(doc)
    return info.value


def _plain(cfg: BotConfig) -> dict[str, Any]:
    """The config as plain JSON data (tuples as lists)."""
    result: dict[str, Any] = json.loads(json.dumps(config_to_dict(cfg)))
    return result


ALL_LEAVES = list(_leaves(_plain(default_config())))


# A wrong-typed value for each JSON type of a default, with msgspec's name of what was given and expected.
def _wrong_type(default: Any) -> tuple[Any, str, str]:
    if isinstance(default, bool):
        return "yes", "str", "bool"
    if isinstance(default, int):
        return "7", "str", "int"
    if isinstance(default, float):
        return "0.5", "str", "float"
    if isinstance(default, str):
        return 12345, "int", "str"
    if isinstance(default, list):
        return "not-a-list", "str", "array"
    raise AssertionError(f"unexpected default type {type(default)}")


def _bounded_fields(struct_type: Any, prefix: str = "") -> Iterator[tuple[str, str, Any]]:
    """(dotted key, operator, bound) for every numeric bound declared on the config tree."""
    hints = typing.get_type_hints(struct_type, include_extras=True)
    for field in msgspec.structs.fields(struct_type):
        annotation = hints[field.name]
        base, metas = annotation, ()
        if typing.get_origin(annotation) is typing.Annotated:
            base, *rest = typing.get_args(annotation)
            metas = tuple(rest)
        path = f"{prefix}{field.name}"
        if isinstance(base, type) and issubclass(base, msgspec.Struct):
            yield from _bounded_fields(base, path + ".")
            continue
        for meta in metas:
            for op, attr in ((">=", "ge"), (">", "gt"), ("<=", "le"), ("<", "lt")):
                bound = getattr(meta, attr, None)
                if bound is not None:
                    yield path, op, bound


def _outside(op: str, bound: Any) -> Any:
    return {">=": bound - 1, ">": bound, "<=": bound + 1, "<": bound}[op]


BOUNDS = list(_bounded_fields(BotConfig))


class TestDefaults:
    """The shipped example config and the seed config."""

    def test_example_file_holds_every_key_at_its_default(self) -> None:
        raw = json.loads(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
        assert raw == _plain(default_config())
        assert load_config(EXAMPLE_CONFIG) == default_config()

    def test_seed_config_loads_and_equals_the_defaults_for_its_keys(self) -> None:
        raw = json.loads(SEED_CONFIG.read_text(encoding="utf-8"))
        cfg = load_config(SEED_CONFIG)
        defaults = dict(_leaves(_plain(default_config())))
        loaded = dict(_leaves(_plain(cfg)))
        seed_leaves = list(_leaves(raw))
        assert len(seed_leaves) > 70
        for key, value in seed_leaves:
            assert key in defaults, f"seed key {key} missing from the config tree"
            assert loaded[key] == value == defaults[key], key

    def test_empty_object_is_all_defaults(self) -> None:
        assert _load({}) == default_config()

    def test_config_is_frozen(self) -> None:
        cfg = default_config()
        with pytest.raises(AttributeError):
            cfg.risk.max_leverage = 3.0  # type: ignore[misc]

    def test_sweep_covers_every_leaf(self) -> None:
        assert len(ALL_LEAVES) > 150
        assert len(BOUNDS) > 150


class TestAC13ExactMessages:
    """AC13: each kind of bad config refused with key, value and allowed range in the message."""

    def test_wrong_type(self) -> None:
        err = _refusal({"risk": {"max_open_positions": "two"}})
        assert (
            str(err)
            == 'config key risk.max_open_positions: value "two" has the wrong type (str); expected int'
        )
        assert (err.key, err.value) == ("risk.max_open_positions", "two")

    def test_out_of_range(self) -> None:
        err = _refusal({"risk": {"risk_per_trade_pct": 0.5}})
        assert (
            str(err)
            == "config key risk.risk_per_trade_pct: value 0.5 is out of range; allowed: float <= 0.05"
        )

    def test_percentage_negative(self) -> None:
        err = _refusal({"universe": {"max_spread_pct": -0.1}})
        assert (
            str(err) == "config key universe.max_spread_pct: value -0.1 is out of range; allowed: float > 0.0"
        )

    def test_period_too_small(self) -> None:
        err = _refusal({"strategies": {"trend_breakout": {"breakout_lookback_bars": 1}}})
        assert str(err) == (
            "config key strategies.trend_breakout.breakout_lookback_bars: value 1 is out of range; allowed: int >= 2"
        )

    def test_unknown_top_level_key(self) -> None:
        err = _refusal({"moed": "LIVE"})
        assert str(err).startswith(
            'config key moed: unknown key (value "LIVE"); allowed keys here: mode, timezone,'
        )
        assert err.key == "moed"

    def test_unknown_nested_key(self) -> None:
        err = _refusal({"risk": {"max_leverag": 2.0}})
        assert str(err).startswith(
            "config key risk.max_leverag: unknown key (value 2.0); allowed keys here: risk_per_trade_pct,"
        )
        assert "max_leverage" in str(err)

    @pytest.mark.parametrize(
        "key", ["risk.max_leverage", "leverage.trend", "leverage.range", "leverage.high_vol"]
    )
    def test_leverage_above_two(self, key: str) -> None:
        err = _refusal(_nested(key, 2.5))
        assert str(err) == f"config key {key}: value 2.5 is out of range; allowed: float <= 2.0"

    def test_leverage_above_max_leverage(self) -> None:
        err = _refusal({"risk": {"max_leverage": 1.5}, "leverage": {"trend": 2.0}})
        assert str(err) == (
            "config key leverage.trend: value 2.0 is out of range; allowed: <= risk.max_leverage (1.5)"
        )

    def test_ttl_zero(self) -> None:
        err = _refusal({"execution": {"limit_ttl_seconds": 0}})
        assert (
            str(err)
            == "config key execution.limit_ttl_seconds: value 0 is out of range; allowed: float > 0.0"
        )

    def test_ttl_negative(self) -> None:
        err = _refusal({"execution": {"limit_ttl_seconds": -5.0}})
        assert str(err) == (
            "config key execution.limit_ttl_seconds: value -5.0 is out of range; allowed: float > 0.0"
        )

    def test_thresholds_out_of_order(self) -> None:
        err = _refusal({"regime": {"range_bb_width_min": 0.05, "range_bb_width_max": 0.03}})
        assert str(err) == (
            "config key regime.range_bb_width_min: value 0.05 is out of order; "
            "must be <= regime.range_bb_width_max (0.03)"
        )

    def test_enum_value(self) -> None:
        err = _refusal({"mode": "YOLO"})
        assert (
            str(err) == 'config key mode: value "YOLO" is not allowed; allowed values: "PAPER_LIVE", "LIVE"'
        )

    def test_margin_mode_must_be_isolated(self) -> None:
        err = _refusal({"exchange": {"margin_mode": "CROSSED"}})
        assert str(err) == (
            'config key exchange.margin_mode: value "CROSSED" is not allowed; allowed values: "ISOLATED"'
        )

    def test_pattern(self) -> None:
        err = _refusal({"notifications": {"daily_report_time_utc": "25:00"}})
        assert str(err) == (
            'config key notifications.daily_report_time_utc: value "25:00" does not match the allowed pattern; '
            "allowed: str matching regex '^([01][0-9]|2[0-3]):[0-5][0-9]$'"
        )

    def test_list_item_wrong_type(self) -> None:
        err = _refusal({"universe": {"whitelist": ["BTCUSDT", 5]}})
        assert str(err) == "config key universe.whitelist[1]: value 5 has the wrong type (int); expected str"

    def test_secret_in_config_file_is_refused(self) -> None:
        err = _refusal({"exchange": {"api_key": "abc"}})
        assert err.key == "exchange.api_key"

    def test_not_json(self) -> None:
        with pytest.raises(ConfigError, match=r"config file <config>: not valid JSON"):
            load_config_bytes(b"{mode: LIVE")

    def test_top_level_not_object(self) -> None:
        with pytest.raises(ConfigError, match=r"the top level must be a JSON object, got list"):
            load_config_bytes(b"[]")

    def test_missing_file(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match=r"nope.json: cannot be read"):
            load_config(tmp_path / "nope.json")


class TestOrderRules:
    """Cross-field thresholds in order, each with its exact message."""

    @pytest.mark.parametrize(
        ("doc", "message"),
        [
            (
                {"regime": {"chop_adx_max": 22.0}},
                "config key regime.chop_adx_max: value 22.0 is out of order; must be <= regime.range_adx_max (20.0)",
            ),
            (
                {"regime": {"range_adx_max": 30.0, "chop_adx_max": 10.0}},
                "config key regime.range_adx_max: value 30.0 is out of order; must be <= regime.trend_adx_min (25.0)",
            ),
            (
                {"risk": {"hedge_corr_max": 0.9}},
                "config key risk.hedge_corr_max: value 0.9 is out of order; "
                "must be <= risk.correlation_threshold (0.85)",
            ),
            (
                {"risk": {"weekly_stop_pct": -0.02}},
                "config key risk.weekly_stop_pct: value -0.02 is out of order; must be <= risk.daily_stop_pct "
                "(-0.04) (a weekly loss limit at least as large)",
            ),
            (
                {"risk": {"max_same_direction_positions": 3}},
                "config key risk.max_same_direction_positions: value 3 is out of order; "
                "must be <= risk.max_open_positions (2)",
            ),
            (
                {"strategies": {"range_mean_reversion": {"rsi_long_extreme": 80.0}}},
                "config key strategies.range_mean_reversion.rsi_long_extreme: value 80.0 is out of order; "
                "must be < rsi_short_extreme (75.0)",
            ),
            (
                {"performance": {"min_trades_before_confidence": 60}},
                "config key performance.min_trades_before_confidence: value 60 is out of order; "
                "must be <= performance.window_trades (50)",
            ),
        ],
    )
    def test_out_of_order(self, doc: dict[str, Any], message: str) -> None:
        assert str(_refusal(doc)) == message

    def test_history_too_short_for_lookback(self) -> None:
        err = _refusal({"market_data": {"history_5m_bars": 100}})
        assert str(err) == (
            "config key market_data.history_5m_bars: value 100 is out of range; allowed: >= 128 "
            "(indicator warm-up plus timeframes.zscore_lookback)"
        )

    def test_whitelist_blacklist_overlap(self) -> None:
        err = _refusal({"universe": {"whitelist": ["BTCUSDT"], "blacklist": ["BTCUSDT"]}})
        assert str(err) == 'config key universe.whitelist: symbols ["BTCUSDT"] are also in universe.blacklist'


class TestEveryLeafKey:
    """A sweep over every leaf key: wrong type refused, out-of-range refused, each message exact."""

    @pytest.mark.parametrize(("key", "default"), ALL_LEAVES, ids=[k for k, _ in ALL_LEAVES])
    def test_wrong_type(self, key: str, default: Any) -> None:
        bad, got, expected = _wrong_type(default)
        err = _refusal(_nested(key, bad))
        assert str(err) == (
            f"config key {key}: value {json.dumps(bad)} has the wrong type ({got}); expected {expected}"
        )
        assert err.key == key
        assert err.value == bad

    @pytest.mark.parametrize(("key", "default"), ALL_LEAVES, ids=[k for k, _ in ALL_LEAVES])
    def test_default_round_trips(self, key: str, default: Any) -> None:
        assert dict(_leaves(_plain(_load(_nested(key, default)))))[key] == default

    @pytest.mark.parametrize(("key", "op", "bound"), BOUNDS, ids=[f"{k}{o}{b}" for k, o, b in BOUNDS])
    def test_out_of_range(self, key: str, op: str, bound: Any) -> None:
        bad = _outside(op, bound)
        kind = "int" if isinstance(bound, int) else "float"
        err = _refusal(_nested(key, bad))
        assert (
            str(err)
            == f"config key {key}: value {json.dumps(bad)} is out of range; allowed: {kind} {op} {bound}"
        )
        assert (err.key, err.value) == (key, bad)

    @pytest.mark.parametrize(("key", "op", "bound"), BOUNDS, ids=[f"{k}{o}{b}" for k, o, b in BOUNDS])
    def test_bound_itself_is_decided_by_the_operator(self, key: str, op: str, bound: Any) -> None:
        """An inclusive bound is accepted by the field (another rule may still refuse it)."""
        if op in (">", "<"):
            return
        kind = "int" if isinstance(bound, int) else "float"
        message = ""
        try:
            _load(_nested(key, bound))
        except ConfigError as exc:
            message = str(exc)
        assert f"out of range; allowed: {kind}" not in message


class TestReconcileWeight:
    """A LIVE reconcile interval whose request weight alone exceeds the bot's weight budget is refused:
    at 2 s a reconcile (90 weight) takes 2,700 a minute of the 1,680 allowed, and every other request
    (orders and stops included) waits for the next minute."""

    def test_too_frequent_live_reconcile_is_refused_naming_the_key(self) -> None:
        from futures_actor.core.config import ConfigError, load_config_bytes

        doc = {"mode": "LIVE", "execution": {"reconcile_interval_seconds": 2.0}}
        with pytest.raises(ConfigError) as info:
            load_config_bytes(json.dumps(doc).encode())
        message = str(info.value)
        assert "execution.reconcile_interval_seconds" in message
        assert "2700 a minute" in message
        assert "1680" in message
        assert "expected >= 3.21" in message

    def test_paper_and_a_fitting_interval_are_accepted(self) -> None:
        from futures_actor.core.config import load_config_bytes

        load_config_bytes(json.dumps({"execution": {"reconcile_interval_seconds": 2.0}}).encode())
        cfg = load_config_bytes(
            json.dumps({"mode": "LIVE", "execution": {"reconcile_interval_seconds": 5.0}}).encode()
        )
        assert cfg.execution.reconcile_interval_seconds == 5.0
