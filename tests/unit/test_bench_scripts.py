"""Smoke test of the benchmark scripts: they import and parse their arguments (no benchmark is run).

The benchmarks print figures and are not tests; this only keeps them from rotting unnoticed. The
nautilus side needs the `bench` extra, which CI does not install: it is compiled, and imported only
where nautilus_trader is present.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def bench_path() -> Iterator[None]:
    sys.path.insert(0, str(BENCH))
    try:
        yield
    finally:
        sys.path.remove(str(BENCH))


def _load(name: str) -> ModuleType:
    return importlib.import_module(name)


@pytest.mark.usefixtures("bench_path")
def test_replay_vs_nautilus_parses_scenarios_and_rejects_bad_ones() -> None:
    mod = _load("replay_vs_nautilus")
    assert [(s.symbols, s.days) for s in mod.parse_scenarios("20x3, 200x1")] == [(20, 3), (200, 1)]
    assert mod.parse_strategies("ema_atr") == ["ema_atr"]
    for bad in ("20", "x3", "20x0", "ax3", ""):
        with pytest.raises(argparse.ArgumentTypeError, match="--scenarios"):
            mod.parse_scenarios(bad)
    with pytest.raises(argparse.ArgumentTypeError, match="--strategies: \\['sma'\\]"):
        mod.parse_strategies("trivial,sma")
    with pytest.raises(SystemExit) as exc:
        mod.main(["--help"])
    assert exc.value.code == 0


@pytest.mark.usefixtures("bench_path")
def test_replay_bench_parses_sizes() -> None:
    mod = _load("replay_bench")
    assert mod.parse_sizes("20,50,200,300") == [20, 50, 200, 300]
    for bad in ("0", "20,x", ","):
        with pytest.raises(argparse.ArgumentTypeError, match="--sizes"):
            mod.parse_sizes(bad)
    with pytest.raises(SystemExit) as exc:
        mod.main(["--help"])
    assert exc.value.code == 0


def test_nautilus_backtest_compiles_and_parses_where_installed() -> None:
    source = (BENCH / "nautilus_backtest.py").read_text()
    compile(source, "nautilus_backtest.py", "exec")
    if importlib.util.find_spec("nautilus_trader") is None:
        return  # the bench extra is not installed (CI): compiling is all that can be checked
    sys.path.insert(0, str(BENCH))
    try:
        mod = _load("nautilus_backtest")
        with pytest.raises(SystemExit) as exc:
            mod.main(["--help"])
        assert exc.value.code == 0
    finally:
        sys.path.remove(str(BENCH))
