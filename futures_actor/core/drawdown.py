"""Drawdown: the one definition every figure of a run uses (equity.csv, summary, report, daily reports).

Drawdown at a sample of an equity curve = (running peak − equity) / running peak, a fraction (0.05 = 5 %),
where the running peak is the highest equity of the curve up to and including that sample. Max drawdown
= the largest of these over the curve (0 for a curve that never falls, or an empty one).

The curve is the account equity marked to market at each sample (wallet balance plus the open
positions valued at the price of the moment: see `tearsheet.equity` for when a replay samples it).
Non-positive or non-finite values are not equity and are skipped (they neither set a peak nor count).
`DrawdownTracker` is the same computation fed one sample at a time (the equity.csv writer, a live
report); `drawdown_series` and `max_drawdown` apply it to a whole curve.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

__all__ = ["DrawdownTracker", "drawdown_series", "max_drawdown"]


class DrawdownTracker:
    """Feed equity samples in time order; `update` returns the drawdown at that sample."""

    __slots__ = ("max_drawdown", "peak")

    def __init__(self, peak: float = 0.0) -> None:
        self.peak = peak if math.isfinite(peak) and peak > 0 else 0.0
        self.max_drawdown = 0.0

    def update(self, equity: float) -> float:
        if not (math.isfinite(equity) and equity > 0):
            return self.drawdown_of(self.peak)
        self.peak = max(self.peak, equity)
        dd = self.drawdown_of(equity)
        self.max_drawdown = max(self.max_drawdown, dd)
        return dd

    def drawdown_of(self, equity: float) -> float:
        """The drawdown `equity` would be at the current peak (without recording it)."""
        return (self.peak - equity) / self.peak if self.peak > 0 else 0.0


def drawdown_series(equity: Iterable[float]) -> list[float]:
    """The drawdown at each sample of the curve `equity` (oldest first)."""
    tracker = DrawdownTracker()
    return [tracker.update(e) for e in equity]


def max_drawdown(equity: Iterable[float]) -> float:
    """The deepest drawdown of the curve `equity` (oldest first); 0.0 for an empty curve."""
    tracker = DrawdownTracker()
    for e in equity:
        tracker.update(e)
    return tracker.max_drawdown
