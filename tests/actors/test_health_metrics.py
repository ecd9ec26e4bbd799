"""The metrics registry in its own module (issue 12: no health <-> http_health circle) and its exposition
through prometheus_client (issue 13: process and GC metrics, a registry per instance)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import prometheus_client
import pytest

from futures_actor.actors.http_health import HealthHttpApp, HttpRequest
from futures_actor.actors.metrics import (
    CONTENT_TYPE_METRICS,
    EQUITY,
    KILL_SWITCH,
    OPEN_POSITIONS,
    SYMBOLS_MONITORED,
    UNPROTECTED_POSITIONS,
    Metrics,
)

PACKAGE = Path(__file__).resolve().parents[2] / "futures_actor"
MODULES = ("futures_actor.actors.metrics", "futures_actor.actors.health", "futures_actor.actors.http_health")


def _module_file(name: str) -> Path | None:
    rel = Path(*name.split(".")[1:])
    for candidate in (PACKAGE / rel.with_suffix(".py"), PACKAGE / rel / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imports_of(name: str) -> set[str]:
    """Every `futures_actor` module `name` imports, at run time or under TYPE_CHECKING alike."""
    path = _module_file(name)
    assert path is not None, name
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("futures_actor"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("futures_actor"):
            out.add(node.module)
            # `from futures_actor.actors import metrics` names a module too
            out.update(
                f"{node.module}.{a.name}"
                for a in node.names
                if _module_file(f"{node.module}.{a.name}") is not None
            )
    return {m for m in out if _module_file(m) is not None}


def reachable(start: str) -> set[str]:
    seen: set[str] = set()
    todo = list(imports_of(start))
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        todo.extend(imports_of(m))
    return seen


@pytest.mark.parametrize("module", MODULES)
def test_no_import_circle_through_the_health_modules(module: str) -> None:
    """None of the three modules can reach itself through the package's imports (TYPE_CHECKING included)."""
    assert module not in reachable(module)


def test_the_registry_does_not_depend_on_the_health_modules() -> None:
    assert reachable("futures_actor.actors.metrics").isdisjoint(MODULES)
    assert "futures_actor.actors.health" not in reachable("futures_actor.actors.http_health")


@pytest.mark.parametrize("module", MODULES)
def test_each_module_imports_alone_in_a_fresh_interpreter(module: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


def test_process_and_gc_metrics_come_with_every_registry() -> None:
    text = Metrics().render()
    for family in (
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "python_gc_collections_total",
    ):
        assert f"\n{family}" in text or text.startswith(family), family
    assert "futures_actor_equity_usd" in text
    assert "futures_actor_unprotected_positions" in text
    only_ours = Metrics(process=False).render()
    assert "process_" not in only_ours
    assert "python_gc" not in only_ours


def test_two_registries_share_nothing_and_the_global_registry_is_untouched() -> None:
    before = {m.name for m in prometheus_client.REGISTRY.collect()}
    a, b = Metrics(), Metrics()
    a.set(EQUITY, 1.0)
    b.set(EQUITY, 2.0)
    assert (a.get(EQUITY), b.get(EQUITY)) == (1.0, 2.0)
    assert "futures_actor_equity_usd 1.0" in a.render()
    assert "futures_actor_equity_usd 2.0" in b.render()
    assert {m.name for m in prometheus_client.REGISTRY.collect()} == before
    assert not any(name.startswith("futures_actor") for name in before)


def test_new_gauges_are_standard() -> None:
    m = Metrics(process=False)
    for name in (KILL_SWITCH, SYMBOLS_MONITORED, OPEN_POSITIONS, UNPROTECTED_POSITIONS):
        m.set(name, 0)
        assert f"# TYPE {name} gauge" in m.render()


async def test_metrics_endpoint_keeps_its_content_type() -> None:
    app = HealthHttpApp(snapshot=lambda: None, metrics=Metrics())
    resp = await app.handle(HttpRequest(method="GET", target="/metrics"))
    assert resp.status == 200
    assert resp.content_type == CONTENT_TYPE_METRICS == "text/plain; version=0.0.4; charset=utf-8"
    assert b"process_cpu_seconds_total" in resp.body


def test_the_exposition_parses_as_prometheus_text() -> None:
    """What Prometheus reads back: our counters keep their `_total` names and labels, no `_created`."""
    from prometheus_client.parser import text_string_to_metric_families

    from futures_actor.actors.metrics import ERRORS, REJECTIONS

    m = Metrics(process=False)
    m.inc(REJECTIONS, 2, reason="DAILY_STOP")
    m.inc(ERRORS, code="-2021")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(m.render())
        for s in family.samples
    }
    assert samples[("futures_actor_rejections_total", (("reason", "DAILY_STOP"),))] == 2.0
    assert samples[("futures_actor_errors_total", (("code", "-2021"),))] == 1.0
    assert not any(name.endswith("_created") for name, _ in samples)
