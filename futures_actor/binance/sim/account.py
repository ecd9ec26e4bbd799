"""The simulated USDT-M futures account: wallet balance, isolated one-way positions, income history.

This module owns the money of the fake exchange and of the paper exchange. It is pure (no trio, no
I/O): the matching engine calls `apply_fill` for every execution and `apply_funding` at every funding
time; everything is exact `Decimal`. Positions are one-way (`positionSide` BOTH) and isolated: opening
or adding moves `notional / leverage` into the position's isolated margin; reducing releases margin
pro rata and books the realized PnL into the wallet; fees and funding are paid from the wallet.
Liquidation is not simulated. `to_state` / `from_state` round-trip the whole account through msgspec
JSON so a restarted exchange resumes exactly the same account.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

__all__ = ["Account", "AccountState", "IncomeRow", "Position", "TradeRow"]

ZERO = Decimal(0)
QUOTE_ASSET = "USDT"
# Binance's default initial leverage for a symbol never configured by the account.
DEFAULT_LEVERAGE = 20


class Position(msgspec.Struct, kw_only=True):
    """One isolated one-way position. `amount` is signed (+ long, − short)."""

    symbol: str
    amount: Decimal = ZERO
    entry_price: Decimal = ZERO
    isolated_margin: Decimal = ZERO
    realized_pnl: Decimal = ZERO  # accumulated, before fees (ACCOUNT_UPDATE `cr`)
    update_time: int = 0

    def unrealized(self, mark: Decimal) -> Decimal:
        return (mark - self.entry_price) * self.amount if self.amount else ZERO


class IncomeRow(msgspec.Struct, kw_only=True, frozen=True):
    symbol: str
    income_type: str  # REALIZED_PNL / COMMISSION / FUNDING_FEE / TRANSFER
    income: Decimal
    time: int
    tran_id: int
    trade_id: str = ""


class TradeRow(msgspec.Struct, kw_only=True, frozen=True):
    """One execution (the `/fapi/v1/userTrades` row)."""

    id: int
    order_id: int
    symbol: str
    side: str
    price: Decimal
    qty: Decimal
    realized_pnl: Decimal
    commission: Decimal
    maker: bool
    time: int


class AccountState(msgspec.Struct, kw_only=True):
    wallet_balance: Decimal
    positions: dict[str, Position] = {}
    leverage: dict[str, int] = {}
    margin_type: dict[str, str] = {}
    income: list[IncomeRow] = []
    trades: list[TradeRow] = []
    next_tran_id: int = 1


class Account:
    """Balances and isolated positions of one simulated account."""

    def __init__(self, *, initial_balance: Decimal) -> None:
        self._s = AccountState(wallet_balance=initial_balance)

    # ------------------------------------------------------------ persistence

    def to_state(self) -> bytes:
        return msgspec.json.encode(self._s)

    @classmethod
    def from_state(cls, data: bytes) -> Account:
        acc = cls(initial_balance=ZERO)
        acc._s = msgspec.json.decode(data, type=AccountState)
        return acc

    @property
    def state(self) -> AccountState:
        return self._s

    # ------------------------------------------------------------ reads

    @property
    def wallet_balance(self) -> Decimal:
        return self._s.wallet_balance

    def position(self, symbol: str) -> Position:
        pos = self._s.positions.get(symbol)
        if pos is None:
            pos = Position(symbol=symbol)
            self._s.positions[symbol] = pos
        return pos

    def positions(self) -> dict[str, Position]:
        return self._s.positions

    def leverage(self, symbol: str) -> int:
        return self._s.leverage.get(symbol, DEFAULT_LEVERAGE)

    def margin_type(self, symbol: str) -> str:
        return self._s.margin_type.get(symbol, "ISOLATED")

    def isolated_margin_total(self) -> Decimal:
        return sum((p.isolated_margin for p in self._s.positions.values()), ZERO)

    def available_balance(self, open_order_margin: Decimal = ZERO) -> Decimal:
        return self._s.wallet_balance - self.isolated_margin_total() - open_order_margin

    @property
    def income(self) -> list[IncomeRow]:
        return self._s.income

    @property
    def trades(self) -> list[TradeRow]:
        return self._s.trades

    # ------------------------------------------------------------ writes

    def set_leverage(self, symbol: str, leverage: int) -> None:
        self._s.leverage[symbol] = leverage

    def set_margin_type(self, symbol: str, margin_type: str) -> None:
        self._s.margin_type[symbol] = margin_type

    def transfer(self, amount: Decimal, *, now_ms: int) -> None:
        """Deposit (positive) or withdraw (negative) USDT."""
        self._s.wallet_balance += amount
        self._income("", "TRANSFER", amount, now_ms)

    def apply_fill(
        self,
        *,
        symbol: str,
        side: str,
        qty: Decimal,
        price: Decimal,
        commission: Decimal,
        now_ms: int,
        trade_id: int,
        order_id: int,
        maker: bool,
    ) -> Decimal:
        """Book one execution; returns its realized PnL (before the commission)."""
        pos = self.position(symbol)
        lev = Decimal(self.leverage(symbol))
        signed = qty if side == "BUY" else -qty
        realized = ZERO
        if pos.amount == 0 or (pos.amount > 0) == (signed > 0):
            new_amount = pos.amount + signed
            pos.entry_price = (abs(pos.amount) * pos.entry_price + qty * price) / abs(new_amount)
            pos.isolated_margin += qty * price / lev
            pos.amount = new_amount
        else:
            closing = min(qty, abs(pos.amount))
            direction = Decimal(1) if pos.amount > 0 else Decimal(-1)
            realized = closing * (price - pos.entry_price) * direction
            remaining = abs(pos.amount) - closing
            pos.isolated_margin = pos.isolated_margin * remaining / abs(pos.amount)
            pos.amount = direction * remaining
            opening = qty - closing
            if pos.amount == 0:
                pos.entry_price = ZERO
                pos.isolated_margin = ZERO
            if opening > 0:
                pos.amount = opening if side == "BUY" else -opening
                pos.entry_price = price
                pos.isolated_margin = opening * price / lev
        pos.realized_pnl += realized
        pos.update_time = now_ms
        self._s.wallet_balance += realized - commission
        tid = str(trade_id)
        if realized:
            self._income(symbol, "REALIZED_PNL", realized, now_ms, tid)
        if commission:
            self._income(symbol, "COMMISSION", -commission, now_ms, tid)
        self._s.trades.append(
            TradeRow(
                id=trade_id,
                order_id=order_id,
                symbol=symbol,
                side=side,
                price=price,
                qty=qty,
                realized_pnl=realized,
                commission=commission,
                maker=maker,
                time=now_ms,
            )
        )
        return realized

    def apply_funding(self, *, symbol: str, rate: Decimal, mark: Decimal, now_ms: int) -> Decimal:
        """Pay or receive funding on `symbol`: −amount × mark × rate (longs pay a positive rate).

        Returns the signed income (0 when flat, and then nothing is recorded)."""
        pos = self._s.positions.get(symbol)
        if pos is None or pos.amount == 0:
            return ZERO
        income = -pos.amount * mark * rate
        self._s.wallet_balance += income
        pos.update_time = now_ms
        self._income(symbol, "FUNDING_FEE", income, now_ms)
        return income

    def _income(self, symbol: str, kind: str, amount: Decimal, now_ms: int, trade_id: str = "") -> None:
        self._s.income.append(
            IncomeRow(
                symbol=symbol,
                income_type=kind,
                income=amount,
                time=now_ms,
                tran_id=self._s.next_tran_id,
                trade_id=trade_id,
            )
        )
        self._s.next_tran_id += 1
