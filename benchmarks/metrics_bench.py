"""Cost of a metric update and of a `/metrics` scrape.

    .venv/bin/python benchmarks/metrics_bench.py [--repeat 7]

Rows:
- `Metrics.set` (a gauge without labels), `Metrics.set` with a `symbol` label, `Metrics.inc` with a
  `reason` label: what an actor pays per update (the registry the bot runs with).
- `Metrics.render`: one scrape of a populated registry (every standard family, 20 symbols' data ages,
  3 order states, 10 rejection reasons, 5 error codes), process and GC collectors included when the
  registry has them.
- For comparison, prometheus_client's own `Gauge` / `Counter` objects on a private registry (the same
  updates through `.labels(...).set()` / `.inc()`) and the scrape of only our samples (`process=False`).

Runs against whatever `futures_actor` is importable: the registry in `actors.metrics`, or, on a tree
before it existed, the hand-written one in `actors.http_health` (that is how the "before" figures of
README were taken). Median of `--repeat` rounds; CPU time of this process per operation (the machine is
shared: wall time varies with the load, CPU time much less).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

try:
    from futures_actor.actors import metrics as registry_module

    WHERE = "futures_actor.actors.metrics"
except ImportError:  # a tree from before the registry had its own module
    from futures_actor.actors import http_health as registry_module  # type: ignore[no-redef]

    WHERE = "futures_actor.actors.http_health"

SYMBOLS = [f"SYM{i:02d}USDT" for i in range(20)]
REASONS = [f"REASON_{i}" for i in range(10)]
CODES = [f"CODE_{i}" for i in range(5)]


def populated(**kwargs: Any) -> Any:
    m = registry_module.Metrics(**kwargs)
    rm = registry_module
    m.set(rm.EQUITY, 10_000.25)
    m.set(rm.OPEN_RISK_USD, 120.5)
    m.set(rm.OPEN_RISK_PCT, 0.012)
    m.set(rm.OPEN_POSITIONS, 2)
    m.set(rm.SAFE_MODE, 0)
    m.set(rm.UNPROTECTED_POSITIONS, 0)
    m.set(rm.API_WEIGHT_USED, 40)
    for state in ("NEW", "PARTIALLY_FILLED", "STOP"):
        m.set(rm.ORDERS, 2, state=state)
    for s in SYMBOLS:
        m.set(rm.DATA_AGE_SECONDS, 1.5, symbol=s)
    for r in REASONS:
        m.inc(rm.REJECTIONS, 3, reason=r)
    for c in CODES:
        m.inc(rm.ERRORS, code=c)
    m.inc(rm.DECISIONS, 7, outcome="APPROVED")
    return m


def per_op(fn: Callable[[], object], n: int, repeat: int) -> float:
    """Median CPU seconds per call of `fn` over `repeat` rounds of `n` calls."""
    rounds = []
    for _ in range(repeat):
        t0 = time.process_time()
        for _ in range(n):
            fn()
        rounds.append((time.process_time() - t0) / n)
    return statistics.median(rounds)


def native_rows(n: int, repeat: int) -> list[tuple[str, float]]:
    """prometheus_client's own metric objects (None when it is not installed)."""
    try:
        from prometheus_client import CollectorRegistry, Counter, Gauge
    except ImportError:
        return []
    reg = CollectorRegistry()
    gauge = Gauge("bench_equity_usd", "Equity.", registry=reg)
    age = Gauge("bench_data_age_seconds", "Age.", ["symbol"], registry=reg)
    rejections = Counter("bench_rejections", "Rejections.", ["reason"], registry=reg)
    return [
        ("prometheus_client Gauge.set", per_op(lambda: gauge.set(1.0), n, repeat)),
        (
            "prometheus_client Gauge.labels().set",
            per_op(lambda: age.labels(symbol="SYM07USDT").set(2.0), n, repeat),
        ),
        (
            "prometheus_client Counter.labels().inc",
            per_op(lambda: rejections.labels(reason="X").inc(), n, repeat),
        ),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--updates", type=int, default=200_000)
    ap.add_argument("--scrapes", type=int, default=2_000)
    args = ap.parse_args()
    rm = registry_module
    m = populated()
    rows: list[tuple[str, float]] = [
        ("Metrics.set (no labels)", per_op(lambda: m.set(rm.EQUITY, 10_001.0), args.updates, args.repeat)),
        (
            "Metrics.set (symbol label)",
            per_op(lambda: m.set(rm.DATA_AGE_SECONDS, 2.0, symbol="SYM07USDT"), args.updates, args.repeat),
        ),
        (
            "Metrics.inc (reason label)",
            per_op(lambda: m.inc(rm.REJECTIONS, reason="X"), args.updates, args.repeat),
        ),
    ]
    rows += native_rows(args.updates, args.repeat)
    rows.append(("Metrics.render (scrape)", per_op(m.render, args.scrapes, args.repeat)))
    text = m.render()
    try:
        ours_only = populated(process=False)
    except TypeError:  # the hand-written registry has no process collectors to leave out
        ours_only = None
    if ours_only is not None:
        rows.append(("Metrics.render, ours only", per_op(ours_only.render, args.scrapes, args.repeat)))
    print(f"registry: {WHERE}; scrape size {len(text.encode())} bytes, {text.count(chr(10))} lines")
    print(f"{'operation':<40} {'CPU µs/op':>10}")
    for name, seconds in rows:
        print(f"{name:<40} {seconds * 1e6:>10.2f}")


if __name__ == "__main__":
    main()
