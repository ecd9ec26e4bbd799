"""The metrics registry every actor updates, exposed in the Prometheus text format by `prometheus_client`.

`Metrics` holds the bot's own gauges and counters (the families below, declared once, with fixed label
names) and is a `prometheus_client` collector: `render()` runs `generate_latest` over a registry of this
instance only (never prometheus_client's process-wide default `REGISTRY`), which also holds the process
collector (CPU seconds, resident and virtual memory, open and maximum file descriptors, start time; read
from /proc where the platform has it) and the garbage-collector collector (collections, collected and
uncollectable objects per generation). Two instances never share a sample.

Why a collector over our own samples rather than prometheus_client's `Gauge`/`Counter` objects: an update
stays a dict write (every actor updates from the one trio thread, no lock is needed), the `_created`
series prometheus_client adds to every counter (a process-wide switch) are not exposed, an update with an
unknown name or the wrong labels is refused with a `MetricError` naming them, and `/health` reads the
present value back with `get()` (`benchmarks/metrics_bench.py` measures both ways; README, *Health and
metrics*).

Exposition: text format 0.0.4 (`CONTENT_TYPE_METRICS`), samples of a family sorted by label values.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Literal

from prometheus_client import CollectorRegistry, GCCollector, ProcessCollector
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

__all__ = [
    "API_WEIGHT_USED",
    "CONTENT_TYPE_METRICS",
    "DATA_AGE_SECONDS",
    "DECISIONS",
    "EQUITY",
    "ERRORS",
    "KILL_SWITCH",
    "OPEN_POSITIONS",
    "OPEN_RISK_PCT",
    "OPEN_RISK_USD",
    "ORDERS",
    "REJECTIONS",
    "SAFE_MODE",
    "SYMBOLS_MONITORED",
    "UNPROTECTED_POSITIONS",
    "MetricError",
    "MetricKind",
    "Metrics",
]

MetricKind = Literal["gauge", "counter"]

PREFIX = "futures_actor_"
EQUITY = PREFIX + "equity_usd"
OPEN_RISK_USD = PREFIX + "open_risk_usd"
OPEN_RISK_PCT = PREFIX + "open_risk_pct"
OPEN_POSITIONS = PREFIX + "open_positions"
ORDERS = PREFIX + "orders"
DECISIONS = PREFIX + "decisions_total"
REJECTIONS = PREFIX + "rejections_total"
API_WEIGHT_USED = PREFIX + "api_weight_used_1m"
ERRORS = PREFIX + "errors_total"
SAFE_MODE = PREFIX + "safe_mode"
DATA_AGE_SECONDS = PREFIX + "data_age_seconds"
UNPROTECTED_POSITIONS = PREFIX + "unprotected_positions"
KILL_SWITCH = PREFIX + "kill_switch"
SYMBOLS_MONITORED = PREFIX + "symbols_monitored"

# (name, kind, help, label names): the standard families, rendered in this order.
_STANDARD: tuple[tuple[str, MetricKind, str, tuple[str, ...]], ...] = (
    (EQUITY, "gauge", "Account equity in USDT.", ()),
    (OPEN_RISK_USD, "gauge", "Open risk (loss to all stops) in USDT.", ()),
    (OPEN_RISK_PCT, "gauge", "Open risk as a fraction of equity.", ()),
    (OPEN_POSITIONS, "gauge", "Symbols with a position on the account (our trades and any other).", ()),
    (ORDERS, "gauge", "Orders of ours by state.", ("state",)),
    (DECISIONS, "counter", "Risk decisions by outcome.", ("outcome",)),
    (REJECTIONS, "counter", "Rejected trade candidates by reason code.", ("reason",)),
    (API_WEIGHT_USED, "gauge", "Binance request weight used in the current minute.", ()),
    (ERRORS, "counter", "Errors by code.", ("code",)),
    (SAFE_MODE, "gauge", "1 while in safe mode, else 0.", ()),
    (UNPROTECTED_POSITIONS, "gauge", "Positions on the account without a stop for their whole quantity.", ()),
    (KILL_SWITCH, "gauge", "1 while the kill switch is engaged, else 0.", ()),
    (SYMBOLS_MONITORED, "gauge", "Symbols the bot monitors (the universe and those it manages).", ()),
    (
        DATA_AGE_SECONDS,
        "gauge",
        "Seconds since the last market data, per symbol (stalest stream).",
        ("symbol",),
    ),
)

CONTENT_TYPE_METRICS = CONTENT_TYPE_PLAIN_0_0_4


class MetricError(ValueError):
    """A metric update was refused (unknown name, wrong labels, bad value); the message names them."""


class _Family:
    __slots__ = ("help", "kind", "labels", "name", "samples")

    def __init__(self, name: str, kind: MetricKind, help_text: str, labels: tuple[str, ...]) -> None:
        self.name = name
        self.kind = kind
        self.help = help_text
        self.labels = labels
        self.samples: dict[tuple[str, ...], float] = {}


class Metrics:
    """Gauges and counters updated by the actors (one trio thread: no locks), and their exposition.

    `standard=False` starts without the bot's families (tests declare their own); `process=False` leaves
    out the process and GC collectors (a registry with only our samples)."""

    def __init__(self, *, standard: bool = True, process: bool = True) -> None:
        self._families: dict[str, _Family] = {}
        if standard:
            for name, kind, help_text, labels in _STANDARD:
                self.declare(name, kind, help_text, labels)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        if process:
            ProcessCollector(registry=self.registry)
            GCCollector(registry=self.registry)

    def declare(self, name: str, kind: MetricKind, help_text: str, labels: tuple[str, ...] = ()) -> None:
        if name in self._families:
            raise MetricError(f"metric {name!r} is already declared")
        if kind == "counter" and not name.endswith("_total"):
            raise MetricError(f"counter {name!r}: expected a name ending in _total")
        self._families[name] = _Family(name, kind, help_text, labels)

    def _key(self, family: _Family, labels: Mapping[str, str]) -> tuple[str, ...]:
        if set(labels) != set(family.labels):
            raise MetricError(
                f"metric {family.name}: labels {sorted(labels)} given, expected {list(family.labels)}"
            )
        return tuple(str(labels[name]) for name in family.labels)

    def _family(self, name: str) -> _Family:
        family = self._families.get(name)
        if family is None:
            raise MetricError(f"metric {name!r} is not declared")
        return family

    def set(self, name: str, value: float, **labels: str) -> None:
        """Set a gauge."""
        family = self._family(name)
        if family.kind != "gauge":
            raise MetricError(f"metric {name}: set() on a {family.kind}; expected a gauge")
        if not isinstance(value, int | float) or isinstance(value, bool) or math.isnan(value):
            raise MetricError(f"metric {name}: value {value!r}; expected a number")
        family.samples[self._key(family, labels)] = float(value)

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        """Add to a counter (never negative)."""
        family = self._family(name)
        if family.kind != "counter":
            raise MetricError(f"metric {name}: inc() on a {family.kind}; expected a counter")
        if not isinstance(amount, int | float) or not math.isfinite(amount) or amount < 0:
            raise MetricError(f"metric {name}: increment {amount!r}; expected a finite number >= 0")
        key = self._key(family, labels)
        family.samples[key] = family.samples.get(key, 0.0) + float(amount)

    def remove(self, name: str, **labels: str) -> None:
        """Drop one labelled sample (a symbol that left the universe)."""
        family = self._family(name)
        family.samples.pop(self._key(family, labels), None)

    def get(self, name: str, **labels: str) -> float | None:
        family = self._family(name)
        return family.samples.get(self._key(family, labels))

    def collect(self) -> Iterator[Metric]:
        """The prometheus_client collector protocol: our families, in declaration order."""
        for family in self._families.values():
            metric: GaugeMetricFamily | CounterMetricFamily
            if family.kind == "counter":
                metric = CounterMetricFamily(family.name, family.help, labels=family.labels)
            else:
                metric = GaugeMetricFamily(family.name, family.help, labels=family.labels)
            for key in sorted(family.samples):
                metric.add_metric(key, family.samples[key])
            yield metric

    def render(self) -> str:
        """The text exposition format 0.0.4 of the whole registry (ours, process, GC)."""
        return generate_latest(self.registry).decode()
