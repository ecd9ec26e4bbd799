"""Symbol specifications of the fake exchange, read from a recorded `/fapi/v1/exchangeInfo` payload.

This module owns the translation exchangeInfo JSON → `SymbolSpec` (exact filters as `Decimal`, plus
the risk fields the matching engine enforces: `triggerProtect`, `marketTakeBound`, the maximum
leverage from the leverage brackets). The caller passes the payload (a path or an already-parsed
dict); nothing here knows where recorded data lives. A symbol missing from the payload (HYPEUSDT was
listed after the 2024-10 recording) can be synthesized from a similar symbol with `synthesize`.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec

from futures_actor.core.types import SymbolRules

__all__ = ["DEFAULT_SYNTHESIZED", "ExchangeInfoError", "SymbolSpec", "load_exchange_info"]

# Symbols absent from the 2024-10 recording, each synthesized from a listed symbol with similar
# price scale (HYPE traded at ~10-50 USDT, like INJ: tick 0.001, step 0.1, min notional 5).
DEFAULT_SYNTHESIZED: dict[str, str] = {"HYPEUSDT": "INJUSDT"}
# Binance's leverage ceiling when no bracket is known for a symbol.
DEFAULT_MAX_LEVERAGE = 125
DEFAULT_MAX_NUM_ORDERS = 200


class ExchangeInfoError(ValueError):
    """The exchangeInfo payload (or a leverage-bracket payload) is not usable."""


class SymbolSpec(msgspec.Struct, frozen=True, kw_only=True):
    rules: SymbolRules
    trigger_protect: Decimal = Decimal("0.05")
    market_take_bound: Decimal = Decimal("0.05")
    max_leverage: int = DEFAULT_MAX_LEVERAGE
    max_num_orders: int = DEFAULT_MAX_NUM_ORDERS
    raw: dict[str, Any] = {}

    @property
    def symbol(self) -> str:
        return self.rules.symbol


def _dec(entry: Mapping[str, Any], key: str, symbol: str) -> Decimal:
    try:
        return Decimal(str(entry[key]))
    except (KeyError, ArithmeticError, ValueError):
        raise ExchangeInfoError(
            f"exchangeInfo symbol {symbol}: filter field {key!r} is {entry.get(key)!r}, expected a decimal"
        ) from None


def _spec(raw: dict[str, Any], max_leverage: int) -> SymbolSpec:
    symbol = str(raw.get("symbol", ""))
    filters = {str(f.get("filterType")): f for f in raw.get("filters", [])}
    if "PRICE_FILTER" not in filters or "LOT_SIZE" not in filters:
        raise ExchangeInfoError(f"exchangeInfo symbol {symbol!r}: PRICE_FILTER or LOT_SIZE missing")
    pf, lot = filters["PRICE_FILTER"], filters["LOT_SIZE"]
    mlot = filters.get("MARKET_LOT_SIZE")
    pp = filters.get("PERCENT_PRICE")
    rules = SymbolRules(
        symbol=symbol,
        tick_size=_dec(pf, "tickSize", symbol),
        min_price=_dec(pf, "minPrice", symbol),
        max_price=_dec(pf, "maxPrice", symbol),
        step_size=_dec(lot, "stepSize", symbol),
        min_qty=_dec(lot, "minQty", symbol),
        max_qty=_dec(lot, "maxQty", symbol),
        market_step_size=_dec(mlot, "stepSize", symbol) if mlot else None,
        market_min_qty=_dec(mlot, "minQty", symbol) if mlot else None,
        market_max_qty=_dec(mlot, "maxQty", symbol) if mlot else None,
        min_notional=_dec(filters["MIN_NOTIONAL"], "notional", symbol)
        if "MIN_NOTIONAL" in filters
        else Decimal(0),
        multiplier_up=_dec(pp, "multiplierUp", symbol) if pp else None,
        multiplier_down=_dec(pp, "multiplierDown", symbol) if pp else None,
        price_precision=int(raw.get("pricePrecision", 8)),
        quantity_precision=int(raw.get("quantityPrecision", 8)),
    )
    max_orders = filters.get("MAX_NUM_ORDERS", {}).get("limit", DEFAULT_MAX_NUM_ORDERS)
    return SymbolSpec(
        rules=rules,
        trigger_protect=Decimal(str(raw.get("triggerProtect", "0.05"))),
        market_take_bound=Decimal(str(raw.get("marketTakeBound", "0.05"))),
        max_leverage=max_leverage,
        max_num_orders=int(max_orders),
        raw=raw,
    )


def _read(source: str | Path | Mapping[str, Any] | list[Any], what: str) -> Any:
    if isinstance(source, Mapping | list):
        return source
    try:
        return json.loads(Path(source).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ExchangeInfoError(f"{what} {source}: cannot be read as JSON: {exc}") from None


def load_exchange_info(
    source: str | Path | Mapping[str, Any],
    *,
    symbols: list[str] | None = None,
    synthesize: Mapping[str, str] | None = None,
    leverage_brackets: str | Path | list[Any] | None = None,
) -> tuple[dict[str, Any], dict[str, SymbolSpec]]:
    """Parse an exchangeInfo payload; returns (payload to serve, specs by symbol).

    `symbols` restricts both to those symbols (all when None); `synthesize` maps a missing symbol to
    the listed symbol it is copied from (default `DEFAULT_SYNTHESIZED`); `leverage_brackets` (the
    `/fapi/v1/leverageBracket` shape) sets each symbol's maximum leverage (first bracket).
    """
    payload = copy.deepcopy(dict(_read(source, "exchangeInfo")))
    if not isinstance(payload.get("symbols"), list):
        raise ExchangeInfoError("exchangeInfo: key 'symbols' missing or not a list")
    by_symbol: dict[str, dict[str, Any]] = {str(s.get("symbol")): s for s in payload["symbols"]}
    for new, template in (DEFAULT_SYNTHESIZED if synthesize is None else synthesize).items():
        if new in by_symbol:
            continue
        if template not in by_symbol:
            raise ExchangeInfoError(
                f"cannot synthesize {new}: template symbol {template} not in exchangeInfo"
            )
        clone = copy.deepcopy(by_symbol[template])
        base = new.removesuffix("USDT")
        clone.update(symbol=new, pair=new, baseAsset=base)
        by_symbol[new] = clone
    if symbols is not None:
        missing = [s for s in symbols if s not in by_symbol]
        if missing:
            raise ExchangeInfoError(f"symbols {missing} not in exchangeInfo (and not synthesized)")
        by_symbol = {s: by_symbol[s] for s in symbols}
    max_lev: dict[str, int] = {}
    if leverage_brackets is not None:
        for row in _read(leverage_brackets, "leverageBracket"):
            brackets = row.get("brackets") or []
            if brackets:
                max_lev[str(row.get("symbol"))] = int(brackets[0]["initialLeverage"])
    specs = {s: _spec(raw, max_lev.get(s, DEFAULT_MAX_LEVERAGE)) for s, raw in by_symbol.items()}
    payload["symbols"] = list(by_symbol.values())
    return payload, specs
