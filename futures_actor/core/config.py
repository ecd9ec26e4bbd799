"""The bot's configuration: one frozen tree of msgspec Structs, loaded once at start-up.

This module owns every tunable of BOT_SPEC (§13). It extends the original example config
(`spec/seed-data/CONFIG.example.json`) with the keys the spec names. Loading is strict:
an unknown key, a wrong type, a value out of range or thresholds out of order is refused with a
`ConfigError` whose message names the key path, the value and what is allowed. Every mistake of the
file is reported at once (`ConfigError.errors`, one line each), not only the first: the key errors in
the file's order, then the cross-field rules (a rule involving a key already refused is left out, as it
would compare against a default the file never set). Nothing here
connects anywhere, so a bad config stops the bot before it touches an exchange.

Secrets are never part of the config file: the config only names the environment variables that
hold them (see `futures_actor.core.secrets`).
"""

from __future__ import annotations

import copy
import json
import math
import re
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import msgspec

__all__ = [
    "BotConfig",
    "ConfigError",
    "load_config",
    "load_config_bytes",
]

Mode = Literal["PAPER_LIVE", "LIVE"]
RegimeName = Literal["TREND", "RANGE", "HIGH_VOL", "CHOP_NO_TRADE"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]

# Constrained scalar types. The bounds are the allowed ranges quoted back in error messages.
Fraction = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
PositiveFraction = Annotated[float, msgspec.Meta(gt=0.0, le=1.0)]
NegativeFraction = Annotated[float, msgspec.Meta(ge=-1.0, lt=0.0)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0.0)]
NonNegativeFloat = Annotated[float, msgspec.Meta(ge=0.0)]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
NonNegativeInt = Annotated[int, msgspec.Meta(ge=0)]
Period = Annotated[int, msgspec.Meta(ge=2, le=1000)]
RsiLevel = Annotated[float, msgspec.Meta(ge=0.0, le=100.0)]
AdxLevel = Annotated[float, msgspec.Meta(ge=0.0, le=100.0)]
Leverage = Annotated[float, msgspec.Meta(ge=1.0, le=2.0)]
Correlation = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
EnvName = Annotated[str, msgspec.Meta(pattern=r"^[A-Z_][A-Z0-9_]*$")]
HHMM = Annotated[str, msgspec.Meta(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]
SymbolName = Annotated[str, msgspec.Meta(pattern=r"^[A-Z0-9]{2,30}$")]
ClientIdPrefix = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9]{1,4}$")]
FileName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._-]{1,100}$")]
OptionalUrl = Annotated[str, msgspec.Meta(pattern=r"^(|(https?|wss?)://\S+)$")]


class _Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Base for every config section: immutable, unknown keys refused."""


class ExchangeConfig(_Section, frozen=True):
    name: Literal["binance"] = "binance"
    api_key_env: EnvName = "BINANCE_API_KEY"
    api_secret_env: EnvName = "BINANCE_API_SECRET"
    usdtm_perp: Literal[True] = True
    margin_mode: Literal["ISOLATED"] = "ISOLATED"
    recv_window_ms: Annotated[int, msgspec.Meta(ge=1, le=60000)] = 5000
    # Which official Binance hosts to use (binance/urls.py maps it to REST and WS base URLs).
    environment: Literal["production", "testnet", "demo"] = "production"
    # Empty means "the official URL for the chosen environment" (production or testnet).
    rest_base_url: OptionalUrl = ""
    ws_base_url: OptionalUrl = ""
    client_id_prefix: ClientIdPrefix = "fa"
    request_timeout_seconds: PositiveFloat = 10.0
    max_retry_attempts: Annotated[int, msgspec.Meta(ge=1, le=10)] = 4
    retry_wait_initial_seconds: PositiveFloat = 0.5
    retry_wait_max_seconds: PositiveFloat = 8.0
    time_sync_interval_seconds: PositiveFloat = 600.0
    weight_limit_per_minute: PositiveInt = 2400
    weight_budget_pct: PositiveFraction = 0.7
    order_limit_per_10s: PositiveInt = 300
    # Binance's ORDERS limit per account and minute (exchangeInfo rateLimits); paced like the 10 s one.
    order_limit_per_minute: PositiveInt = 1200
    listen_key_keepalive_seconds: Annotated[float, msgspec.Meta(gt=0.0, le=3000.0)] = 1800.0
    ws_ping_interval_seconds: PositiveFloat = 60.0
    # The user-data stream is reconnected when nothing (no event, no pong) was heard for this long.
    user_stream_idle_timeout_seconds: PositiveFloat = 180.0
    ws_planned_reconnect_hours: Annotated[float, msgspec.Meta(gt=0.0, lt=24.0)] = 23.0
    ws_reconnect_backoff_initial_seconds: PositiveFloat = 1.0
    ws_reconnect_backoff_max_seconds: PositiveFloat = 60.0
    ws_max_streams_per_connection: Annotated[int, msgspec.Meta(ge=1, le=1024)] = 200


class UniverseConfig(_Section, frozen=True):
    min_24h_volume_usdt: NonNegativeFloat = 100_000_000.0
    max_spread_pct: PositiveFraction = 0.0005
    max_abs_funding_rate: PositiveFraction = 0.0015
    min_atr_ratio: Fraction = 0.005
    max_monitored_symbols: Annotated[int, msgspec.Meta(ge=1, le=500)] = 6
    whitelist: tuple[SymbolName, ...] = ()
    blacklist: tuple[SymbolName, ...] = ()
    spread_sample_seconds: PositiveFloat = 60.0
    atr_ratio_tf: Literal["5m", "1h"] = "1h"
    refresh_time_utc: HHMM = "00:00"


class TimeframesConfig(_Section, frozen=True):
    signal_tf: Literal["5m"] = "5m"
    trend_tf: Literal["1h"] = "1h"
    zscore_lookback: Annotated[int, msgspec.Meta(ge=2, le=2000)] = 100
    corr_tf: Literal["1h"] = "1h"
    corr_lookback_hours: Annotated[int, msgspec.Meta(ge=2, le=2000)] = 72


class MarketDataConfig(_Section, frozen=True):
    """History kept per symbol; must cover every indicator's warm-up plus the z-score look-back."""

    history_5m_bars: Annotated[int, msgspec.Meta(ge=50, le=100_000)] = 600
    history_1h_bars: Annotated[int, msgspec.Meta(ge=50, le=100_000)] = 300
    kline_page_limit: Annotated[int, msgspec.Meta(ge=1, le=1500)] = 1500
    # A live 5m close on an hour boundary waits this long for the 1h close (sent first), then REST.
    trend_close_wait_seconds: PositiveFloat = 5.0


class RiskConfig(_Section, frozen=True):
    risk_per_trade_pct: Annotated[float, msgspec.Meta(gt=0.0, le=0.05)] = 0.01
    max_total_open_risk_pct: Annotated[float, msgspec.Meta(gt=0.0, le=0.2)] = 0.025
    max_open_positions: Annotated[int, msgspec.Meta(ge=1, le=50)] = 2
    max_same_direction_positions: Annotated[int, msgspec.Meta(ge=1, le=50)] = 2
    correlation_threshold: Correlation = 0.85
    hedge_corr_max: Correlation = 0.6
    daily_stop_pct: NegativeFraction = -0.04
    weekly_stop_pct: NegativeFraction = -0.10
    pause_days_after_weekly_stop: Annotated[int, msgspec.Meta(ge=0, le=365)] = 7
    reduced_risk_after_pause_pct: Annotated[float, msgspec.Meta(gt=0.0, le=0.05)] = 0.005
    reduced_risk_days: Annotated[int, msgspec.Meta(ge=0, le=365)] = 3
    max_leverage: Leverage = 2.0
    max_cost_r: Annotated[float, msgspec.Meta(gt=0.0, le=1.0)] = 0.25
    margin_buffer_pct: Fraction = 0.1
    decision_batch_ms: Annotated[int, msgspec.Meta(ge=0, le=60_000)] = 2000
    verdict_timeout_seconds: PositiveFloat = 5.0
    # The first monitored symbol by volume is the beta reference (§8.5); empty means "choose by volume".
    beta_reference_symbol: Annotated[str, msgspec.Meta(pattern=r"^([A-Z0-9]{2,30})?$")] = ""


class RegimeConfig(_Section, frozen=True):
    trend_adx_min: AdxLevel = 25.0
    range_adx_max: AdxLevel = 20.0
    high_vol_atr_z: Annotated[float, msgspec.Meta(ge=0.0, le=20.0)] = 1.5
    confidence_threshold: Fraction = 0.55
    chop_adx_max: AdxLevel = 15.0
    chop_bb_width_max: Fraction = 0.003
    range_bb_width_min: Fraction = 0.004
    range_bb_width_max: Fraction = 0.03
    high_vol_full_scale_z: PositiveFloat = 1.5
    trend_adx_full_scale: PositiveFloat = 15.0
    trend_ema_sep_full_scale: PositiveFloat = 0.01
    range_adx_full_scale: PositiveFloat = 10.0


class TrendPullbackConfig(_Section, frozen=True):
    enabled: bool = True
    regimes: tuple[RegimeName, ...] = ("TREND",)
    stop_pct: Annotated[float, msgspec.Meta(gt=0.0, le=0.2)] = 0.01
    target_r_multiple: PositiveFloat = 1.5
    pullback_rsi_long_min: RsiLevel = 40.0
    pullback_rsi_long_max: RsiLevel = 50.0
    pullback_rsi_short_min: RsiLevel = 50.0
    pullback_rsi_short_max: RsiLevel = 60.0
    ema20_band_pct: Fraction = 0.002
    trail_after_r: NonNegativeFloat = 1.0
    atr_trail_mult: PositiveFloat = 2.0


class TrendBreakoutConfig(_Section, frozen=True):
    enabled: bool = True
    regimes: tuple[RegimeName, ...] = ("TREND",)
    stop_pct: Annotated[float, msgspec.Meta(gt=0.0, le=0.2)] = 0.01
    breakout_lookback_bars: Period = 20
    breakout_volume_z_min: Annotated[float, msgspec.Meta(ge=-10.0, le=20.0)] = 1.0
    atr_trail_mult: PositiveFloat = 2.5
    trail_after_r: NonNegativeFloat = 0.0


class RangeMeanReversionConfig(_Section, frozen=True):
    enabled: bool = True
    regimes: tuple[RegimeName, ...] = ("RANGE",)
    stop_pct: Annotated[float, msgspec.Meta(gt=0.0, le=0.2)] = 0.008
    target_r_multiple: PositiveFloat = 1.2
    rsi_long_extreme: RsiLevel = 25.0
    rsi_short_extreme: RsiLevel = 75.0


class StrategiesConfig(_Section, frozen=True):
    trend_pullback: TrendPullbackConfig = msgspec.field(default_factory=TrendPullbackConfig)
    trend_breakout: TrendBreakoutConfig = msgspec.field(default_factory=TrendBreakoutConfig)
    range_mean_reversion: RangeMeanReversionConfig = msgspec.field(default_factory=RangeMeanReversionConfig)


class LeverageConfig(_Section, frozen=True):
    trend: Leverage = 2.0
    range: Leverage = 1.5
    high_vol: Leverage = 1.0


# Binance request weight of one reconcile (documented endpoint weights, a venue fact, not a tunable): open
# orders and open algo orders of every symbol (40 + 40), positionRisk (5), account (5).
RECONCILE_REQUEST_WEIGHT: Final = 90


class ExecutionConfig(_Section, frozen=True):
    entry_order_type: Literal["LIMIT"] = "LIMIT"
    limit_ttl_seconds: PositiveFloat = 30.0
    limit_retry_count: Annotated[int, msgspec.Meta(ge=0, le=1)] = 1
    entry_offset_ticks: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 0
    stop_order_type: Literal["STOP_MARKET"] = "STOP_MARKET"
    stop_working_type: Literal["MARK_PRICE"] = "MARK_PRICE"
    kill_switch_order_type: Literal["MARKET"] = "MARKET"
    kill_switch_max_attempts: Annotated[int, msgspec.Meta(ge=1, le=20)] = 5
    protection_max_attempts: Annotated[int, msgspec.Meta(ge=1, le=5)] = 2
    paper_slippage_limit_pct: Fraction = 0.0002
    paper_slippage_market_pct: Fraction = 0.0008
    paper_slippage_stop_pct: Fraction = 0.001
    paper_volume_participation: PositiveFraction = 0.1
    paper_initial_balance_usdt: PositiveFloat = 10_000.0
    maker_fee_pct: Fraction = 0.0002
    taker_fee_pct: Fraction = 0.0004
    order_ack_timeout_seconds: PositiveFloat = 10.0
    reconcile_interval_seconds: PositiveFloat = 300.0
    # A position the exchange reports changed (user stream) that our trades do not account for this long
    # after (a position opened or changed by hand): reconcile now, not at the next periodic reconcile.
    position_check_delay_seconds: PositiveFloat = 2.0
    # A stop larger than its (shrunken) position still protects it in full (reduce-only): its resize waits
    # this long so that a target filled in many slivers costs a handful of replacements (BOT_SPEC §9).
    stop_resize_coalesce_seconds: NonNegativeFloat = 30.0


class PerformanceConfig(_Section, frozen=True):
    window_trades: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 50
    min_trades_before_confidence: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 20
    dd_penalty_weight: NonNegativeFloat = 0.5
    max_strategy_switches_per_day: Annotated[int, msgspec.Meta(ge=0, le=100)] = 1
    score_scale: PositiveFloat = 1.0
    low_sample_confidence_cap: Fraction = 0.5
    paper_exploration: bool = True
    disable_if_expectancy_negative: bool = True
    # The shadow paper book's account (BOT_SPEC §7, §8.9): not capital. Shadow trades are sized on the live
    # equity and their records carry it; this balance only has to be large enough that the shadow
    # account's margin never decides whether a shadow trade happens (one position per symbol at once).
    shadow_balance_usdt: PositiveFloat = 1_000_000_000_000.0


class NotificationsConfig(_Section, frozen=True):
    telegram_enabled: bool = True
    telegram_token_env: EnvName = "TELEGRAM_BOT_TOKEN"
    telegram_chat_id_env: EnvName = "TELEGRAM_CHAT_ID"
    telegram_api_base_url: OptionalUrl = "https://api.telegram.org"
    telegram_timeout_seconds: PositiveFloat = 10.0
    telegram_max_attempts: Annotated[int, msgspec.Meta(ge=1, le=10)] = 3
    telegram_retry_wait_seconds: PositiveFloat = 2.0
    # Commands (/status, /positions, /daily, /profit, /kill, /resume) from the configured chat only.
    telegram_commands_enabled: bool = True
    # getUpdates long-poll: Telegram holds the request open up to this long when there is nothing new.
    telegram_poll_timeout_seconds: Annotated[float, msgspec.Meta(gt=0.0, le=50.0)] = 30.0
    # /kill asks for "/kill CONFIRM" within this many seconds before it flattens anything.
    telegram_kill_confirm_seconds: PositiveFloat = 60.0
    daily_report_time_utc: HHMM = "00:05"


class LoggingConfig(_Section, frozen=True):
    log_dir: str = "./logs"
    trade_log_file: FileName = "trades.jsonl"
    event_log_file: FileName = "events.jsonl"
    level: LogLevel = "INFO"
    # 0 disables size-based rotation; daily rotation always happens.
    rotate_max_bytes: NonNegativeInt = 0


class HealthConfig(_Section, frozen=True):
    stale_data_seconds: PositiveFloat = 90.0
    healthy_streak_seconds: PositiveFloat = 300.0
    fault_window_seconds: PositiveFloat = 300.0
    timestamp_error_threshold: PositiveInt = 3
    rate_limit_error_threshold: PositiveInt = 3
    server_error_threshold: PositiveInt = 5
    balance_failure_threshold: PositiveInt = 3
    heartbeat_interval_seconds: PositiveFloat = 5.0
    heartbeat_file: FileName = "heartbeat.json"
    # The `heartbeat` log line (state, kill switch, open and unprotected positions, symbols monitored):
    # at the first heartbeat at least this long after the previous line.
    heartbeat_log_interval_seconds: PositiveFloat = 60.0
    http_enabled: bool = True
    http_host: str = "127.0.0.1"
    # Not 8080 (freqtrade's API, and the first pick of many local tools), outside Prometheus's exporter
    # range 9100-9999 (fully allocated) and not in /etc/services: free on a trader's machine by default.
    http_port: Port = 8478
    # The environment variable holding the bearer token of POST /kill and /resume (never logged).
    # Without a token, only loopback requests are served and a non-loopback http_host is refused.
    control_token_env: EnvName = "FUTURES_ACTOR_CONTROL_TOKEN"


class ShutdownConfig(_Section, frozen=True):
    timeout_seconds: Annotated[float, msgspec.Meta(gt=0.0, le=600.0)] = 20.0


class StateConfig(_Section, frozen=True):
    state_dir: str = "./state"
    db_file: FileName = "state.sqlite"


class SupervisionConfig(_Section, frozen=True):
    max_restarts: PositiveInt = 5
    restart_window_seconds: PositiveFloat = 600.0
    backoff_initial_seconds: PositiveFloat = 1.0
    backoff_max_seconds: PositiveFloat = 60.0


class ReplayConfig(_Section, frozen=True):
    # A progress line each time this share (percent) of the replay's 5m close times has been played.
    progress_percent_step: Annotated[float, msgspec.Meta(gt=0.0, le=100.0)] = 5.0
    initial_balance_usdt: PositiveFloat = 10_000.0
    # Replay has no book ticker; this spread (a fraction of price) stands in for it.
    assumed_spread_pct: Fraction = 0.0001
    seed: NonNegativeInt = 0
    # The runtime that plays a replay: "events" (the discrete-event loop of `runtime/replay.py`: the
    # actor machines called directly, no trio) or "trio" (the actor system under trio's mock clock, as
    # live and paper trading run it). Both write the same trades.jsonl for the same input.
    runtime: Literal["events", "trio"] = "events"


class ReportConfig(_Section, frozen=True):
    """The run report (report.html) and its equity curve (equity.csv)."""

    # equity.csv: a row every this many minutes, plus one after every trade close.
    equity_sample_minutes: Annotated[int, msgspec.Meta(ge=1, le=1440)] = 60
    # report.html lists the gaps of at least this many hours with no open trade, with their reasons.
    idle_period_min_hours: PositiveFloat = 24.0


class StartupConfig(_Section, frozen=True):
    """Start-up against the exchange (BOT_SPEC §10 [resolved]): transient errors (timeouts, 5xx,
    429, -1021) are retried with exponential backoff from `retry_wait_initial_seconds` to
    `retry_wait_max_seconds` (a Retry-After or a 418 ban end is waited out whatever these say);
    after `give_up_seconds` of failures in a row the bot exits 1 with the last error."""

    retry_wait_initial_seconds: PositiveFloat = 1.0
    retry_wait_max_seconds: PositiveFloat = 60.0
    give_up_seconds: PositiveFloat = 900.0


class BotConfig(_Section, frozen=True):
    mode: Mode = "PAPER_LIVE"
    timezone: Literal["UTC"] = "UTC"
    exchange: ExchangeConfig = msgspec.field(default_factory=ExchangeConfig)
    universe: UniverseConfig = msgspec.field(default_factory=UniverseConfig)
    timeframes: TimeframesConfig = msgspec.field(default_factory=TimeframesConfig)
    market_data: MarketDataConfig = msgspec.field(default_factory=MarketDataConfig)
    risk: RiskConfig = msgspec.field(default_factory=RiskConfig)
    regime: RegimeConfig = msgspec.field(default_factory=RegimeConfig)
    strategies: StrategiesConfig = msgspec.field(default_factory=StrategiesConfig)
    leverage: LeverageConfig = msgspec.field(default_factory=LeverageConfig)
    execution: ExecutionConfig = msgspec.field(default_factory=ExecutionConfig)
    performance: PerformanceConfig = msgspec.field(default_factory=PerformanceConfig)
    notifications: NotificationsConfig = msgspec.field(default_factory=NotificationsConfig)
    logging: LoggingConfig = msgspec.field(default_factory=LoggingConfig)
    health: HealthConfig = msgspec.field(default_factory=HealthConfig)
    shutdown: ShutdownConfig = msgspec.field(default_factory=ShutdownConfig)
    state: StateConfig = msgspec.field(default_factory=StateConfig)
    supervision: SupervisionConfig = msgspec.field(default_factory=SupervisionConfig)
    replay: ReplayConfig = msgspec.field(default_factory=ReplayConfig)
    report: ReportConfig = msgspec.field(default_factory=ReportConfig)
    startup: StartupConfig = msgspec.field(default_factory=StartupConfig)


class ConfigError(ValueError):
    """The configuration was refused. `key` is the dotted path, `value` the offending value.

    `errors` holds every error found (itself when there is one); with several, the message lists them
    all, one a line, and `key`/`value` are the first one's.
    """

    def __init__(
        self, message: str, *, key: str = "", value: Any = None, errors: Sequence[ConfigError] = ()
    ) -> None:
        super().__init__(message)
        self.key = key
        self.value = value
        self.errors: tuple[ConfigError, ...] = tuple(errors) or (self,)

    @classmethod
    def of(cls, errors: Sequence[ConfigError]) -> ConfigError:
        """One error as itself; several as one error listing them all."""
        if not errors:
            raise ValueError("ConfigError.of needs at least one error")
        if len(errors) == 1:
            return errors[0]
        text = f"the config has {len(errors)} errors:" + "".join(f"\n  {e}" for e in errors)
        return cls(text, key=errors[0].key, value=errors[0].value, errors=errors)


# Indicator warm-up needs (bars) used to check the history sizes; protocol facts of the
# indicators in BOT_SPEC §4 (ADX(14) needs 2·14 bars, EMA50 needs 50, Bollinger 20).
_WARMUP_5M_BARS = 50
_WARMUP_1H_BARS = 50

_MSGSPEC_PATH = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_UNKNOWN_FIELD = re.compile(r"^Object contains unknown field `(?P<field>[^`]+)`")
_EXPECTED = re.compile(r"^Expected `(?P<expected>.+?)`, got `(?P<got>[^`]+)`")
_CONSTRAINT = re.compile(r"^Expected `(?P<type>[^`]+)` (?P<rule>.+)$")
_ENUM = re.compile(r"^Invalid enum value (?P<got>.+)$")


def _dotted(path: str) -> str:
    """`.risk.max_open_positions` / `.universe.whitelist[0]` -> `risk.max_open_positions`."""
    return path.lstrip(".")


def _lookup(raw: Any, dotted: str) -> Any:
    node = raw
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", dotted):
        try:
            if part.startswith("["):
                node = node[int(part[1:-1])]
            else:
                node = node[part]
        except (KeyError, IndexError, TypeError):
            return None
    return node


def _show(value: Any) -> str:
    return json.dumps(value) if value is not None else "null"


def _section_fields(raw_path: str) -> list[str]:
    section: Any = BotConfig
    for part in [p for p in raw_path.split(".") if p]:
        hints = {f.name: f.type for f in msgspec.structs.fields(section)}
        section = hints.get(part)
        if section is None:
            return []
    try:
        return [f.name for f in msgspec.structs.fields(section)]
    except TypeError:
        return []


def _literal_values(dotted: str) -> tuple[Any, ...]:
    """The allowed values of a Literal-typed key (also inside a tuple), for error messages."""
    section: Any = BotConfig
    annotation: Any = None
    for part in [p for p in re.sub(r"\[\d+\]", "", dotted).split(".") if p]:
        try:
            hints = typing.get_type_hints(section, include_extras=False)
        except TypeError:
            return ()
        annotation = hints.get(part)
        section = annotation
    while typing.get_origin(annotation) is tuple:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) is Literal:
        return typing.get_args(annotation)
    return ()


def _translate(text: str, raw: Any) -> ConfigError:
    """msgspec's validation message (with its `$.path`, as in `raw`) as a `ConfigError`."""
    match = _MSGSPEC_PATH.search(text)
    path = _dotted(match.group("path")) if match else ""
    head = text[: match.start()] if match else text
    if m := _UNKNOWN_FIELD.match(head):
        key = f"{path}.{m.group('field')}" if path else m.group("field")
        allowed = ", ".join(_section_fields(path))
        value = _lookup(raw, key)
        return ConfigError(
            f"config key {key}: unknown key (value {_show(value)}); allowed keys here: {allowed}",
            key=key,
            value=value,
        )
    value = _lookup(raw, path)
    if m := _EXPECTED.match(head):
        expected = m.group("expected")
        return ConfigError(
            f"config key {path}: value {_show(value)} has the wrong type ({m.group('got')}); "
            f"expected {expected}",
            key=path,
            value=value,
        )
    if m := _CONSTRAINT.match(head):
        # msgspec prints an exclusive bound of 0.0 as "-0.0"; quote the bound as the user wrote it.
        rule = re.sub(r"(?<![\d.])-0\.0(?!\d)", "0.0", m.group("rule"))
        what = "does not match the allowed pattern" if rule.startswith("matching") else "is out of range"
        return ConfigError(
            f"config key {path}: value {_show(value)} {what}; allowed: {m.group('type')} {rule}",
            key=path,
            value=value,
        )
    if _ENUM.match(head):
        allowed = ", ".join(_show(v) for v in _literal_values(path))
        return ConfigError(
            f"config key {path}: value {_show(value)} is not allowed; allowed values: {allowed}",
            key=path,
            value=value,
        )
    return ConfigError(f"config key {path or '(root)'}: value {_show(value)} is invalid: {head}", key=path)


def _order_error(key: str, value: Any, rule: str) -> ConfigError:
    return ConfigError(
        f"config key {key}: value {_show(value)} is out of order; {rule}", key=key, value=value
    )


# A cross-field error and every key its rule reads (to leave it out when one of them was refused).
_RelationError = tuple[ConfigError, tuple[str, ...]]


def _non_finite(node: Any, path: str = "") -> list[_RelationError]:
    out: list[_RelationError] = []
    if isinstance(node, msgspec.Struct):
        for field in msgspec.structs.fields(node):
            out += _non_finite(getattr(node, field.name), f"{path}.{field.name}" if path else field.name)
    elif isinstance(node, float) and not math.isfinite(node):
        out.append(
            (
                ConfigError(f"config key {path}: value {node} is not a finite number", key=path, value=node),
                (path,),
            )
        )
    return out


def _ordered(out: list[_RelationError], key: str, value: Any, other: str, rule: str) -> None:
    """Append the out-of-order error of `key` (whose rule compares it with `other`)."""
    out.append((_order_error(key, value, rule), (key, other)))


def _relation_errors(cfg: BotConfig) -> list[_RelationError]:
    """Every cross-field rule that a single field's range cannot express (thresholds in order)."""
    out = _non_finite(cfg)
    rg = cfg.regime
    if rg.range_bb_width_min > rg.range_bb_width_max:
        _ordered(
            out,
            "regime.range_bb_width_min",
            rg.range_bb_width_min,
            "regime.range_bb_width_max",
            f"must be <= regime.range_bb_width_max ({rg.range_bb_width_max})",
        )
    if rg.chop_adx_max > rg.range_adx_max:
        _ordered(
            out,
            "regime.chop_adx_max",
            rg.chop_adx_max,
            "regime.range_adx_max",
            f"must be <= regime.range_adx_max ({rg.range_adx_max})",
        )
    if rg.range_adx_max > rg.trend_adx_min:
        _ordered(
            out,
            "regime.range_adx_max",
            rg.range_adx_max,
            "regime.trend_adx_min",
            f"must be <= regime.trend_adx_min ({rg.trend_adx_min})",
        )
    risk = cfg.risk
    if risk.hedge_corr_max > risk.correlation_threshold:
        _ordered(
            out,
            "risk.hedge_corr_max",
            risk.hedge_corr_max,
            "risk.correlation_threshold",
            f"must be <= risk.correlation_threshold ({risk.correlation_threshold})",
        )
    if risk.weekly_stop_pct > risk.daily_stop_pct:
        _ordered(
            out,
            "risk.weekly_stop_pct",
            risk.weekly_stop_pct,
            "risk.daily_stop_pct",
            f"must be <= risk.daily_stop_pct ({risk.daily_stop_pct}) (a weekly loss limit at least as large)",
        )
    if risk.reduced_risk_after_pause_pct > risk.risk_per_trade_pct:
        _ordered(
            out,
            "risk.reduced_risk_after_pause_pct",
            risk.reduced_risk_after_pause_pct,
            "risk.risk_per_trade_pct",
            f"must be <= risk.risk_per_trade_pct ({risk.risk_per_trade_pct})",
        )
    if risk.risk_per_trade_pct > risk.max_total_open_risk_pct:
        _ordered(
            out,
            "risk.risk_per_trade_pct",
            risk.risk_per_trade_pct,
            "risk.max_total_open_risk_pct",
            f"must be <= risk.max_total_open_risk_pct ({risk.max_total_open_risk_pct})",
        )
    if risk.max_same_direction_positions > risk.max_open_positions:
        _ordered(
            out,
            "risk.max_same_direction_positions",
            risk.max_same_direction_positions,
            "risk.max_open_positions",
            f"must be <= risk.max_open_positions ({risk.max_open_positions})",
        )
    for name in ("trend", "range", "high_vol"):
        lev = getattr(cfg.leverage, name)
        if lev > risk.max_leverage:
            key = f"leverage.{name}"
            error = ConfigError(
                f"config key {key}: value {_show(lev)} is out of range; "
                f"allowed: <= risk.max_leverage ({risk.max_leverage})",
                key=key,
                value=lev,
            )
            out.append((error, (key, "risk.max_leverage")))
    for sname in ("trend_pullback", "trend_breakout", "range_mean_reversion"):
        regimes = getattr(cfg.strategies, sname).regimes
        if "CHOP_NO_TRADE" in regimes:
            key = f"strategies.{sname}.regimes"
            error = ConfigError(
                f"config key {key}: value {_show(list(regimes))} is not allowed; "
                "CHOP_NO_TRADE never trades (allowed: TREND, RANGE, HIGH_VOL)",
                key=key,
                value=list(regimes),
            )
            out.append((error, (key,)))
    ex, reconcile_s = cfg.exchange, cfg.execution.reconcile_interval_seconds
    budget = ex.weight_limit_per_minute * ex.weight_budget_pct
    if cfg.mode == "LIVE" and RECONCILE_REQUEST_WEIGHT * 60.0 / reconcile_s > budget:
        out.append(
            (
                ConfigError(
                    f"config key execution.reconcile_interval_seconds: value {_show(reconcile_s)} is too "
                    f"short for the request-weight budget; a reconcile costs {RECONCILE_REQUEST_WEIGHT} "
                    f"weight, {RECONCILE_REQUEST_WEIGHT * 60.0 / reconcile_s:.0f} a minute at this interval, "
                    f"more than the {budget:.0f} a minute the bot allows itself (exchange."
                    "weight_limit_per_minute x exchange.weight_budget_pct): every other request would wait; "
                    f"expected >= {RECONCILE_REQUEST_WEIGHT * 60.0 / budget:.2f}",
                    key="execution.reconcile_interval_seconds",
                    value=reconcile_s,
                ),
                (
                    "execution.reconcile_interval_seconds",
                    "exchange.weight_limit_per_minute",
                    "exchange.weight_budget_pct",
                ),
            )
        )
    if risk.verdict_timeout_seconds * 1000 <= risk.decision_batch_ms:
        _ordered(
            out,
            "risk.verdict_timeout_seconds",
            risk.verdict_timeout_seconds,
            "risk.decision_batch_ms",
            f"must be longer than risk.decision_batch_ms ({risk.decision_batch_ms} ms), "
            "or symbols give up before their batch is decided",
        )
    tp = cfg.strategies.trend_pullback
    if tp.pullback_rsi_long_min > tp.pullback_rsi_long_max:
        _ordered(
            out,
            "strategies.trend_pullback.pullback_rsi_long_min",
            tp.pullback_rsi_long_min,
            "strategies.trend_pullback.pullback_rsi_long_max",
            f"must be <= pullback_rsi_long_max ({tp.pullback_rsi_long_max})",
        )
    if tp.pullback_rsi_short_min > tp.pullback_rsi_short_max:
        _ordered(
            out,
            "strategies.trend_pullback.pullback_rsi_short_min",
            tp.pullback_rsi_short_min,
            "strategies.trend_pullback.pullback_rsi_short_max",
            f"must be <= pullback_rsi_short_max ({tp.pullback_rsi_short_max})",
        )
    mr = cfg.strategies.range_mean_reversion
    if mr.rsi_long_extreme >= mr.rsi_short_extreme:
        _ordered(
            out,
            "strategies.range_mean_reversion.rsi_long_extreme",
            mr.rsi_long_extreme,
            "strategies.range_mean_reversion.rsi_short_extreme",
            f"must be < rsi_short_extreme ({mr.rsi_short_extreme})",
        )
    ex = cfg.exchange
    if ex.retry_wait_initial_seconds > ex.retry_wait_max_seconds:
        _ordered(
            out,
            "exchange.retry_wait_initial_seconds",
            ex.retry_wait_initial_seconds,
            "exchange.retry_wait_max_seconds",
            f"must be <= exchange.retry_wait_max_seconds ({ex.retry_wait_max_seconds})",
        )
    st = cfg.startup
    if st.retry_wait_initial_seconds > st.retry_wait_max_seconds:
        _ordered(
            out,
            "startup.retry_wait_initial_seconds",
            st.retry_wait_initial_seconds,
            "startup.retry_wait_max_seconds",
            f"must be <= startup.retry_wait_max_seconds ({st.retry_wait_max_seconds})",
        )
    if ex.ws_reconnect_backoff_initial_seconds > ex.ws_reconnect_backoff_max_seconds:
        _ordered(
            out,
            "exchange.ws_reconnect_backoff_initial_seconds",
            ex.ws_reconnect_backoff_initial_seconds,
            "exchange.ws_reconnect_backoff_max_seconds",
            f"must be <= exchange.ws_reconnect_backoff_max_seconds ({ex.ws_reconnect_backoff_max_seconds})",
        )
    perf = cfg.performance
    if perf.min_trades_before_confidence > perf.window_trades:
        _ordered(
            out,
            "performance.min_trades_before_confidence",
            perf.min_trades_before_confidence,
            "performance.window_trades",
            f"must be <= performance.window_trades ({perf.window_trades})",
        )
    sup = cfg.supervision
    if sup.backoff_initial_seconds > sup.backoff_max_seconds:
        _ordered(
            out,
            "supervision.backoff_initial_seconds",
            sup.backoff_initial_seconds,
            "supervision.backoff_max_seconds",
            f"must be <= supervision.backoff_max_seconds ({sup.backoff_max_seconds})",
        )
    md = cfg.market_data
    need_5m = max(
        _WARMUP_5M_BARS,
        cfg.timeframes.zscore_lookback + 2 * 14,
        cfg.strategies.trend_breakout.breakout_lookback_bars + 1,
    )
    if md.history_5m_bars < need_5m:
        error = ConfigError(
            f"config key market_data.history_5m_bars: value {md.history_5m_bars} is out of range; "
            f"allowed: >= {need_5m} (indicator warm-up plus timeframes.zscore_lookback)",
            key="market_data.history_5m_bars",
            value=md.history_5m_bars,
        )
        reads = (
            "market_data.history_5m_bars",
            "timeframes.zscore_lookback",
            "strategies.trend_breakout.breakout_lookback_bars",
        )
        out.append((error, reads))
    need_1h = max(_WARMUP_1H_BARS, cfg.timeframes.corr_lookback_hours + 1)
    if md.history_1h_bars < need_1h:
        error = ConfigError(
            f"config key market_data.history_1h_bars: value {md.history_1h_bars} is out of range; "
            f"allowed: >= {need_1h} (EMA50 warm-up and timeframes.corr_lookback_hours + 1)",
            key="market_data.history_1h_bars",
            value=md.history_1h_bars,
        )
        out.append((error, ("market_data.history_1h_bars", "timeframes.corr_lookback_hours")))
    for name in ("whitelist", "blacklist"):
        items = getattr(cfg.universe, name)
        if len(set(items)) != len(items):
            key = f"universe.{name}"
            error = ConfigError(
                f"config key {key}: value {_show(list(items))} lists a symbol twice",
                key=key,
                value=list(items),
            )
            out.append((error, (key,)))
    overlap = sorted(set(cfg.universe.whitelist) & set(cfg.universe.blacklist))
    if overlap:
        error = ConfigError(
            f"config key universe.whitelist: symbols {_show(overlap)} are also in universe.blacklist",
            key="universe.whitelist",
            value=overlap,
        )
        out.append((error, ("universe.whitelist", "universe.blacklist")))
    return out


def validate_relations(cfg: BotConfig) -> None:
    """Cross-field rules that a single field's range cannot express; raises every broken one at once."""
    errors = [error for error, _reads in _relation_errors(cfg)]
    if errors:
        raise ConfigError.of(errors)


def _touches(key: str, refused: Sequence[str]) -> bool:
    """Whether `key` is, holds or lies inside a refused key path (`risk`, `universe.whitelist[1]`)."""
    return any(r == key or key.startswith(f"{r}.") or r.startswith((f"{key}.", f"{key}[")) for r in refused)


_PATH_PART = re.compile(r"[^.\[\]]+|\[\d+\]")


def _without_refused(raw: dict[str, Any]) -> tuple[dict[str, Any], list[ConfigError], list[str]]:
    """Decode `raw` key by key: every refused key is taken out (one at a time, msgspec reports the
    first), so that all of them are found. Returns the decodable rest, the errors (paths as in `raw`)
    and the refused paths."""
    work: dict[str, Any] = copy.deepcopy(raw)
    # Items taken out of a list shift the later ones: the original index of each remaining item.
    indices: dict[str, list[int]] = {}
    errors: list[ConfigError] = []
    refused: list[str] = []
    for _ in range(_node_count(raw) + 1):
        try:
            msgspec.convert(work, type=BotConfig, strict=True)
        except msgspec.ValidationError as exc:
            text = str(exc)
            match = _MSGSPEC_PATH.search(text)
            head = text[: match.start()] if match else text
            parts = _PATH_PART.findall(_dotted(match.group("path"))) if match else []
            original = _original_path(parts, indices, work)
            error = _translate(f"{head} - at `$.{original}`" if original else head, raw)
            if errors and str(errors[-1]) == str(error):
                break  # could not be taken out (never expected): report it once, not again and again
            errors.append(error)
            if m := _UNKNOWN_FIELD.match(head):
                parts.append(m.group("field"))
            if not parts:
                break  # the root itself: nothing smaller to take out
            refused.append(errors[-1].key or original)
            _take_out(work, parts, indices)
            continue
        break
    return work, errors, refused


def _node_count(node: Any) -> int:
    if isinstance(node, dict):
        return 1 + sum(_node_count(v) for v in node.values())
    if isinstance(node, list):
        return 1 + sum(_node_count(v) for v in node)
    return 1


def _join(path: str, part: str) -> str:
    if part.startswith("["):
        return f"{path}{part}"
    return f"{path}.{part}" if path else part


def _original_path(parts: list[str], indices: dict[str, list[int]], work: Any) -> str:
    """The working path `parts` with list indices as they are in the original document."""
    path = ""
    node = work
    for part in parts:
        if part.startswith("[") and isinstance(node, list):
            i = int(part[1:-1])
            mapping = indices.get(path)
            original_i = mapping[i] if mapping is not None and i < len(mapping) else i
            node = node[i] if i < len(node) else None
            path = _join(path, f"[{original_i}]")
        else:
            node = node.get(part) if isinstance(node, dict) else None
            path = _join(path, part)
    return path


def _take_out(work: dict[str, Any], parts: list[str], indices: dict[str, list[int]]) -> None:
    """Remove the item at the working path `parts` from `work` (a list item: keep the index map)."""
    node: Any = work
    path = ""
    for part in parts[:-1]:
        if part.startswith("[") and isinstance(node, list):
            mapping = indices.get(path)
            i = int(part[1:-1])
            path = _join(path, f"[{mapping[i] if mapping else i}]")
            node = node[i]
        else:
            path = _join(path, part)
            node = node[part]
    last = parts[-1]
    if last.startswith("[") and isinstance(node, list):
        i = int(last[1:-1])
        indices.setdefault(path, list(range(len(node)))).pop(i)
        node.pop(i)
    elif isinstance(node, dict):
        node.pop(last, None)


def load_config_bytes(data: bytes, *, source: str = "<config>") -> BotConfig:
    """Decode, type-check and validate a JSON config. Raises `ConfigError` listing every error."""
    try:
        raw = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {source}: not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(
            f"config file {source}: the top level must be a JSON object, got {type(raw).__name__}"
        )
    rest, errors, refused = _without_refused(raw)
    try:
        cfg = msgspec.convert(rest, type=BotConfig, strict=True)
    except msgspec.ValidationError:
        raise ConfigError.of(errors) from None  # the root itself was refused: nothing more to check
    errors += [
        error for error, reads in _relation_errors(cfg) if not any(_touches(k, refused) for k in reads)
    ]
    if errors:
        raise ConfigError.of(errors)
    return cfg


def load_config(path: str | Path) -> BotConfig:
    """Load the config file at `path`. Raises `ConfigError` (also for a missing file)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"config file {p}: cannot be read: {exc.strerror}") from None
    return load_config_bytes(data, source=str(p))


def default_config() -> BotConfig:
    """Every key at its default (what `config/config.example.json` holds)."""
    return BotConfig()


def config_to_dict(cfg: BotConfig) -> dict[str, Any]:
    result: dict[str, Any] = msgspec.to_builtins(cfg)
    return result
