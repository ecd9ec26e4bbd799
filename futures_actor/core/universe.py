"""Universe selection: which symbols the bot monitors for new entries (BOT_SPEC §2).

This module owns the eligibility rules and the ranking. It is run at start-up and at
`universe.refresh_time_utc`, by a caller that gathered the inputs (exchangeInfo listings, 24h
tickers, book-ticker spread samples, last funding rates, ATR(14)/close on `universe.atr_ratio_tf`).

Policy:
- Candidates: `contractType == PERPETUAL`, `status == TRADING`, `quoteAsset == USDT`; only the
  whitelist when it is non-empty; never the blacklist.
- Rules: 24h quote volume ≥ min; 0 ≤ average spread ≤ max; |funding| ≤ max; ATR ratio ≥ min.
- Every excluded symbol gets exactly one reason (the first rule it fails) and the numbers.
- Missing inputs exclude the symbol (`MISSING_*`), except spread and funding when the caller states
  that the data source has none (replay: `has_book_data=False` / `has_funding_data=False`); then
  those rules count as passing and the score uses one tick / price for the spread.
- Score = quote_volume / max(avg_spread_pct, tick / price); top `max_monitored_symbols`, ties by
  symbol name. The beta reference is the selected symbol with the highest quote volume (or
  `risk.beta_reference_symbol` when configured).
- Symbols with a position or working orders that are not selected are returned as
  `retained_for_management`: still managed, no new entries.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Collection, Mapping, Sequence
from decimal import Decimal

import msgspec
import numpy as np
import numpy.typing as npt

from futures_actor.core.config import BotConfig
from futures_actor.core.indicators import atr

__all__ = [
    "UNIVERSE_ATR_PERIOD",
    "Exclusion",
    "ExclusionCode",
    "SymbolListing",
    "UniverseInputs",
    "UniverseSelection",
    "atr_ratio",
    "average_spread_pct",
    "select_universe",
]

# BOT_SPEC §2 fixes the ATR period of the universe filter at 14.
UNIVERSE_ATR_PERIOD = 14


class ExclusionCode(enum.StrEnum):
    """Reason codes of `Exclusion.code`."""

    NOT_PERPETUAL = "NOT_PERPETUAL"
    NOT_TRADING = "NOT_TRADING"
    NOT_USDT = "NOT_USDT"
    NOT_WHITELISTED = "NOT_WHITELISTED"
    BLACKLISTED = "BLACKLISTED"
    MISSING_VOLUME = "MISSING_VOLUME"
    MISSING_PRICE = "MISSING_PRICE"
    MISSING_SPREAD = "MISSING_SPREAD"
    MISSING_FUNDING = "MISSING_FUNDING"
    MISSING_ATR = "MISSING_ATR"
    INVALID_INPUT = "INVALID_INPUT"
    LOW_VOLUME = "LOW_VOLUME"
    SPREAD = "SPREAD"
    FUNDING = "FUNDING"
    LOW_ATR = "LOW_ATR"
    RANK = "RANK"


class SymbolListing(msgspec.Struct, frozen=True, kw_only=True):
    """The exchangeInfo facts selection needs."""

    symbol: str
    contract_type: str
    status: str
    quote_asset: str
    tick_size: Decimal


class UniverseInputs(msgspec.Struct, frozen=True, kw_only=True):
    """Everything gathered for one selection run. Maps are keyed by symbol."""

    listings: tuple[SymbolListing, ...]
    quote_volume_24h: Mapping[str, float]
    last_price: Mapping[str, float]
    avg_spread_pct: Mapping[str, float]  # see `average_spread_pct`
    funding_rate: Mapping[str, float]
    atr_ratio: Mapping[str, float]  # ATR(14)/close on universe.atr_ratio_tf, see `atr_ratio`
    managed_symbols: Collection[str] = ()  # a position or working orders
    has_book_data: bool = True
    has_funding_data: bool = True


class Exclusion(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    code: str
    message: str
    values: dict[str, float | str] = msgspec.field(default_factory=dict)


class UniverseSelection(msgspec.Struct, frozen=True, kw_only=True):
    selected: tuple[str, ...]  # best score first
    scores: dict[str, float]  # every symbol that passed all rules (selected or ranked out)
    excluded: tuple[Exclusion, ...]
    retained_for_management: tuple[str, ...]
    reference_symbol: str  # beta reference for the correlation hedge rule ("" if none)


def average_spread_pct(samples: Sequence[tuple[float, float]]) -> float | None:
    """Mean of (ask − bid)/mid over (bid, ask) samples; `None` without a usable sample.

    Samples with a non-finite or non-positive bid/ask are skipped. A crossed book gives a
    negative value, which the spread rule then rejects.
    """
    values = []
    for bid, ask in samples:
        if not (math.isfinite(bid) and math.isfinite(ask)) or bid <= 0 or ask <= 0:
            continue
        mid = (bid + ask) / 2.0
        values.append((ask - bid) / mid)
    if not values:
        return None
    return math.fsum(values) / len(values)


def atr_ratio(high: npt.ArrayLike, low: npt.ArrayLike, close: npt.ArrayLike) -> float | None:
    """ATR(14)/close of the last closed candle (Wilder, TA-Lib's convention); `None` before warm-up."""
    c = np.asarray(close, dtype=np.float64)
    if c.size <= UNIVERSE_ATR_PERIOD:
        return None
    values = atr(high, low, c, UNIVERSE_ATR_PERIOD)
    last_atr, last_close = float(values[-1]), float(c[-1])
    if not (math.isfinite(last_atr) and math.isfinite(last_close)) or last_close <= 0:
        return None
    return last_atr / last_close


def _number(mapping: Mapping[str, float], symbol: str) -> float | None:
    v = mapping.get(symbol)
    return None if v is None else float(v)


def select_universe(inputs: UniverseInputs, cfg: BotConfig) -> UniverseSelection:
    """Apply BOT_SPEC §2 to `inputs` and rank what passes."""
    u = cfg.universe
    whitelist, blacklist = set(u.whitelist), set(u.blacklist)
    excluded: list[Exclusion] = []
    passed: dict[str, tuple[float, float]] = {}  # symbol -> (score, quote volume)

    def exclude(symbol: str, code: str, message: str, **values: float | str) -> None:
        excluded.append(Exclusion(symbol=symbol, code=code, message=message, values=dict(values)))

    seen: set[str] = set()
    for listing in sorted(inputs.listings, key=lambda x: x.symbol):
        s = listing.symbol
        if s in seen:
            continue
        seen.add(s)
        if listing.contract_type != "PERPETUAL":
            exclude(
                s,
                ExclusionCode.NOT_PERPETUAL,
                "not a perpetual contract",
                contract_type=listing.contract_type,
            )
            continue
        if listing.status != "TRADING":
            exclude(s, ExclusionCode.NOT_TRADING, "not trading", status=listing.status)
            continue
        if listing.quote_asset != "USDT":
            exclude(s, ExclusionCode.NOT_USDT, "quote asset is not USDT", quote_asset=listing.quote_asset)
            continue
        if whitelist and s not in whitelist:
            exclude(s, ExclusionCode.NOT_WHITELISTED, "a whitelist is set and does not list it")
            continue
        if s in blacklist:
            exclude(s, ExclusionCode.BLACKLISTED, "blacklisted")
            continue
        volume = _number(inputs.quote_volume_24h, s)
        price = _number(inputs.last_price, s)
        spread = _number(inputs.avg_spread_pct, s)
        funding = _number(inputs.funding_rate, s)
        ratio = _number(inputs.atr_ratio, s)
        if volume is None:
            exclude(s, ExclusionCode.MISSING_VOLUME, "no 24h ticker")
            continue
        if price is None:
            exclude(s, ExclusionCode.MISSING_PRICE, "no last price")
            continue
        if spread is None and inputs.has_book_data:
            exclude(s, ExclusionCode.MISSING_SPREAD, "no book-ticker samples in the sample window")
            continue
        if funding is None and inputs.has_funding_data:
            exclude(s, ExclusionCode.MISSING_FUNDING, "no last funding rate")
            continue
        if ratio is None:
            exclude(s, ExclusionCode.MISSING_ATR, f"no ATR({UNIVERSE_ATR_PERIOD}) ratio on {u.atr_ratio_tf}")
            continue
        bad = [
            (name, v)
            for name, v in (
                ("quote_volume_24h", volume),
                ("last_price", price),
                ("avg_spread_pct", spread),
                ("funding_rate", funding),
                ("atr_ratio", ratio),
            )
            if v is not None and not math.isfinite(v)
        ]
        tick = float(listing.tick_size)
        if bad or price <= 0 or not tick > 0:
            field, value = bad[0] if bad else (("last_price", price) if price <= 0 else ("tick_size", tick))
            exclude(
                s,
                ExclusionCode.INVALID_INPUT,
                f"{field} is not a usable number",
                field=field,
                value=str(value),
            )
            continue
        if volume < u.min_24h_volume_usdt:
            exclude(
                s, ExclusionCode.LOW_VOLUME, "24h quote volume below the minimum",
                quote_volume_24h=volume, min_24h_volume_usdt=u.min_24h_volume_usdt,
            )  # fmt: skip
            continue
        if spread is not None and not 0.0 <= spread <= u.max_spread_pct:
            exclude(
                s, ExclusionCode.SPREAD, "average spread outside [0, max_spread_pct]",
                avg_spread_pct=spread, max_spread_pct=u.max_spread_pct,
            )  # fmt: skip
            continue
        if funding is not None and abs(funding) > u.max_abs_funding_rate:
            exclude(
                s, ExclusionCode.FUNDING, "|funding rate| above the maximum",
                funding_rate=funding, max_abs_funding_rate=u.max_abs_funding_rate,
            )  # fmt: skip
            continue
        if ratio < u.min_atr_ratio:
            exclude(
                s, ExclusionCode.LOW_ATR, "ATR/close below the minimum",
                atr_ratio=ratio, min_atr_ratio=u.min_atr_ratio,
            )  # fmt: skip
            continue
        floor = tick / price
        score = volume / max(spread if spread is not None else 0.0, floor)
        passed[s] = (score, volume)

    ranked = sorted(passed, key=lambda s: (-passed[s][0], s))
    selected = tuple(ranked[: u.max_monitored_symbols])
    for rank, s in enumerate(ranked[u.max_monitored_symbols :], start=u.max_monitored_symbols + 1):
        exclude(
            s, ExclusionCode.RANK, "passed every rule but ranked below max_monitored_symbols",
            score=passed[s][0], rank=float(rank), max_monitored_symbols=float(u.max_monitored_symbols),
        )  # fmt: skip
    chosen = set(selected)
    retained = tuple(sorted(set(inputs.managed_symbols) - chosen))
    if cfg.risk.beta_reference_symbol:
        reference = cfg.risk.beta_reference_symbol
    elif selected:
        reference = min(selected, key=lambda s: (-passed[s][1], s))
    else:
        reference = ""
    return UniverseSelection(
        selected=selected,
        scores={s: passed[s][0] for s in ranked},
        excluded=tuple(excluded),
        retained_for_management=retained,
        reference_symbol=reference,
    )
