"""/health, /metrics, /kill, /resume: request logic without sockets, and one real loopback test."""

from __future__ import annotations

import json

import httpx
import pytest
import trio

from futures_actor.actors.health import HealthSnapshot
from futures_actor.actors.http_health import (
    DATA_AGE_SECONDS,
    DECISIONS,
    EQUITY,
    ERRORS,
    OPEN_POSITIONS,
    ORDERS,
    REJECTIONS,
    SAFE_MODE,
    HealthHttpApp,
    HttpRequest,
    MetricError,
    Metrics,
    serve_http,
)


def snapshot(*, safe_mode: bool = False, trading_state: str = "ACTIVE") -> HealthSnapshot:
    return HealthSnapshot(
        ts="2025-01-01T00:00:00.000Z",
        ts_ms=1_735_689_600_000,
        state="SAFE_MODE" if safe_mode else "HEALTHY",
        trading_state=trading_state,
        safe_mode=safe_mode,
        reasons=("RATE_LIMIT",) if safe_mode else (),
        data_age_seconds={"BTCUSDT": 1.5},
        last_data_age_seconds=1.5,
        stale_streams=(),
    )


class TestMetricsText:
    """The Prometheus text exposition format, exactly."""

    def test_render(self) -> None:
        m = Metrics(standard=False)
        m.declare("fa_equity_usd", "gauge", "Equity.")
        m.declare("fa_rejections_total", "counter", "Rejections by reason.", ("reason",))
        m.declare("fa_age", "gauge", "Age with a \\ and\nnewline.", ("symbol",))
        m.set("fa_equity_usd", 10_000.5)
        m.inc("fa_rejections_total", reason="DAILY_STOP")
        m.inc("fa_rejections_total", 2, reason="CORRELATION")
        m.inc("fa_rejections_total", reason="DAILY_STOP")
        m.set("fa_age", 3, symbol='we"ird\\sym\n')
        assert m.render() == (
            "# HELP fa_equity_usd Equity.\n"
            "# TYPE fa_equity_usd gauge\n"
            "fa_equity_usd 10000.5\n"
            "# HELP fa_rejections_total Rejections by reason.\n"
            "# TYPE fa_rejections_total counter\n"
            'fa_rejections_total{reason="CORRELATION"} 2\n'
            'fa_rejections_total{reason="DAILY_STOP"} 2\n'
            "# HELP fa_age Age with a \\\\ and\\nnewline.\n"
            "# TYPE fa_age gauge\n"
            'fa_age{symbol="we\\"ird\\\\sym\\n"} 3\n'
        )

    def test_special_values(self) -> None:
        m = Metrics(standard=False)
        m.declare("g", "gauge", "g")
        m.set("g", float("inf"))
        assert m.render().endswith("g +Inf\n")

    def test_refusals(self) -> None:
        m = Metrics()
        with pytest.raises(MetricError, match="not declared"):
            m.set("nope", 1)
        with pytest.raises(MetricError, match="expected a gauge"):
            m.set(REJECTIONS, 1, reason="X")
        with pytest.raises(MetricError, match="labels"):
            m.inc(REJECTIONS)
        with pytest.raises(MetricError, match=">= 0"):
            m.inc(ERRORS, -1, code="-1021")
        with pytest.raises(MetricError, match="_total"):
            m.declare("bad_counter", "counter", "x")

    def test_standard_families_present(self) -> None:
        text = Metrics().render()
        for name in (
            EQUITY,
            OPEN_POSITIONS,
            ORDERS,
            DECISIONS,
            REJECTIONS,
            ERRORS,
            SAFE_MODE,
            DATA_AGE_SECONDS,
        ):
            assert f"# TYPE {name} " in text


class TestHandle:
    """Routing, status codes and the operator callbacks."""

    async def test_health_healthy_and_unhealthy(self) -> None:
        metrics = Metrics()
        metrics.set(EQUITY, 10_000)
        metrics.set(OPEN_POSITIONS, 2)
        current: list[HealthSnapshot | None] = [None]
        app = HealthHttpApp(snapshot=lambda: current[0], metrics=metrics)
        resp = await app.handle(HttpRequest(method="GET", target="/health"))
        assert resp.status == 503
        assert json.loads(resp.body)["state"] == "STARTING"
        current[0] = snapshot()
        resp = await app.handle(HttpRequest(method="GET", target="/health?verbose=1"))
        body = json.loads(resp.body)
        assert resp.status == 200
        assert body["state"] == "HEALTHY"
        assert body["equity"] == 10_000
        assert body["open_positions"] == 2
        assert body["last_data_age_seconds"] == 1.5
        assert body["safe_mode"] is False
        current[0] = snapshot(safe_mode=True)
        resp = await app.handle(HttpRequest(method="GET", target="/health"))
        assert resp.status == 503
        assert json.loads(resp.body)["reasons"] == ["RATE_LIMIT"]
        current[0] = snapshot(trading_state="HALTED")
        assert (await app.handle(HttpRequest(method="GET", target="/health"))).status == 503

    async def test_routes(self) -> None:
        app = HealthHttpApp(snapshot=lambda: None, metrics=Metrics())
        assert (await app.handle(HttpRequest(method="GET", target="/nope"))).status == 404
        resp = await app.handle(HttpRequest(method="GET", target="/kill"))
        assert resp.status == 405
        assert resp.headers == (("allow", "POST"),)
        resp = await app.handle(HttpRequest(method="GET", target="/metrics"))
        assert resp.status == 200
        assert resp.content_type.startswith("text/plain; version=0.0.4")

    async def test_kill_and_resume_forward(self) -> None:
        calls: list[tuple[str, str]] = []

        async def kill(reason: str) -> None:
            calls.append(("kill", reason))

        async def resume(reason: str) -> None:
            raise RuntimeError("not now")

        app = HealthHttpApp(snapshot=lambda: None, metrics=Metrics(), on_kill=kill, on_resume=resume)
        resp = await app.handle(HttpRequest(method="POST", target="/kill", body=b'{"reason": "drill"}'))
        assert resp.status == 202
        assert calls == [("kill", "drill")]
        resp = await app.handle(HttpRequest(method="POST", target="/kill"))
        assert resp.status == 202
        assert calls[-1] == ("kill", "OPERATOR")
        assert (await app.handle(HttpRequest(method="POST", target="/kill", body=b"{bad"))).status == 400
        assert (await app.handle(HttpRequest(method="POST", target="/resume"))).status == 500
        unwired = HealthHttpApp(snapshot=lambda: None, metrics=Metrics())
        assert (await unwired.handle(HttpRequest(method="POST", target="/kill"))).status == 503


async def test_real_loopback_socket() -> None:
    """Real clock, port 0 on 127.0.0.1, short bounds."""
    metrics = Metrics()
    metrics.set(EQUITY, 123.25)
    killed: list[str] = []

    async def kill(reason: str) -> None:
        killed.append(reason)

    app = HealthHttpApp(snapshot=snapshot, metrics=metrics, on_kill=kill)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(
                lambda task_status: serve_http(app, host="127.0.0.1", port=0, task_status=task_status)
            )
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                resp = await client.get("/health")
                assert resp.status_code == 200
                assert resp.json()["equity"] == 123.25
                resp = await client.get("/metrics")
                assert "futures_actor_equity_usd 123.25\n" in resp.text
                resp = await client.post("/kill", json={"reason": "test"})
                assert resp.status_code == 202
                assert killed == ["test"]
                resp = await client.post("/kill", content=b"x" * 5000)
                assert resp.status_code == 413
            # A garbage request gets a 400, not a crash.
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(b"NOT HTTP\r\n\r\n")
            data = await stream.receive_some(4096)
            assert data.startswith(b"HTTP/1.1 400")
            await stream.aclose()
            nursery.cancel_scope.cancel()
