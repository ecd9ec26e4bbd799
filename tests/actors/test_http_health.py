"""/health, /metrics, /kill, /resume: request logic without sockets, and one real loopback test."""

from __future__ import annotations

import json

import httpx
import pytest
import trio

from futures_actor.actors.health import HealthSnapshot
from futures_actor.actors.http_health import (
    ControlPolicy,
    HealthHttpApp,
    HttpRequest,
    is_loopback_host,
    serve_http,
)
from futures_actor.actors.metrics import (
    API_WEIGHT_USED,
    DATA_AGE_SECONDS,
    DECISIONS,
    EQUITY,
    ERRORS,
    KILL_SWITCH,
    OPEN_POSITIONS,
    OPEN_RISK_PCT,
    OPEN_RISK_USD,
    ORDERS,
    REJECTIONS,
    SAFE_MODE,
    SYMBOLS_MONITORED,
    UNPROTECTED_POSITIONS,
    MetricError,
    Metrics,
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
    """The Prometheus text exposition format 0.0.4 (prometheus_client's), exactly."""

    def test_render(self) -> None:
        m = Metrics(standard=False, process=False)
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
            'fa_rejections_total{reason="CORRELATION"} 2.0\n'
            'fa_rejections_total{reason="DAILY_STOP"} 2.0\n'
            "# HELP fa_age Age with a \\\\ and\\nnewline.\n"
            "# TYPE fa_age gauge\n"
            'fa_age{symbol="we\\"ird\\\\sym\\n"} 3.0\n'
        )

    def test_special_values(self) -> None:
        m = Metrics(standard=False, process=False)
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
            UNPROTECTED_POSITIONS,
            KILL_SWITCH,
            SYMBOLS_MONITORED,
            API_WEIGHT_USED,
            OPEN_RISK_USD,
            OPEN_RISK_PCT,
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
        resp = await app.handle(post("/kill", b'{"reason": "drill"}'))
        assert resp.status == 202
        assert calls == [("kill", "drill")]
        resp = await app.handle(post("/kill"))
        assert resp.status == 202
        assert calls[-1] == ("kill", "OPERATOR")
        assert (await app.handle(post("/kill", b"{bad"))).status == 400
        assert (await app.handle(post("/resume"))).status == 500
        unwired = HealthHttpApp(snapshot=lambda: None, metrics=Metrics())
        assert (await unwired.handle(post("/kill"))).status == 503

    async def test_health_shows_the_kill_switch_and_is_unhealthy_while_engaged(self) -> None:
        engaged = [False]
        app = HealthHttpApp(snapshot=snapshot, metrics=Metrics(), kill_engaged=lambda: engaged[0])
        resp = await app.handle(HttpRequest(method="GET", target="/health"))
        assert (resp.status, json.loads(resp.body)["kill_switch"]) == (200, False)
        engaged[0] = True
        resp = await app.handle(HttpRequest(method="GET", target="/health"))
        assert (resp.status, json.loads(resp.body)["kill_switch"]) == (503, True)


def post(
    target: str,
    body: bytes = b"",
    *,
    content_type: str | None = "application/json",
    host: str = "127.0.0.1:8080",
    origin: str | None = None,
    authorization: str | None = None,
) -> HttpRequest:
    headers = [("host", host)]
    if content_type is not None:
        headers.append(("content-type", content_type))
    if origin is not None:
        headers.append(("origin", origin))
    if authorization is not None:
        headers.append(("authorization", authorization))
    return HttpRequest(method="POST", target=target, body=body, headers=tuple(headers))


class TestControlIsNotCrossSite:
    """POST /kill and /resume: JSON only, same origin, loopback Host or a bearer token (issue 9 #11)."""

    @staticmethod
    def _app(calls: list[str], policy: ControlPolicy | None = None) -> HealthHttpApp:
        async def kill(reason: str) -> None:
            calls.append(reason)

        return HealthHttpApp(
            snapshot=snapshot, metrics=Metrics(), on_kill=kill, on_resume=kill, control=policy
        )

    async def test_the_reported_cross_site_form_post_is_refused(self) -> None:
        calls: list[str] = []
        app = self._app(calls)
        reported = post("/kill", b'{"reason":"x"}', content_type="text/plain", origin="https://evil.example")
        assert (await app.handle(reported)).status == 415
        form = post("/kill", b"reason=x", content_type="application/x-www-form-urlencoded")
        assert (await app.handle(form)).status == 415
        assert (await app.handle(post("/kill", content_type=None))).status == 415
        assert calls == []

    async def test_foreign_origin_and_foreign_host_are_refused(self) -> None:
        calls: list[str] = []
        app = self._app(calls)
        assert (await app.handle(post("/kill", origin="https://evil.example"))).status == 403
        assert (await app.handle(post("/kill", origin="null"))).status == 403
        # DNS rebinding: a page of evil.example resolving to 127.0.0.1 sends Host: evil.example.
        rebound = post("/kill", host="evil.example:8080", origin="http://evil.example:8080")
        assert (await app.handle(rebound)).status == 403
        assert calls == []
        assert (await app.handle(post("/kill", origin="http://127.0.0.1:8080"))).status == 202
        assert (await app.handle(post("/resume", host="localhost:8080"))).status == 202
        assert (await app.handle(post("/kill", host="[::1]:8080"))).status == 202
        assert len(calls) == 3

    async def test_token_required_when_configured(self) -> None:
        calls: list[str] = []
        app = self._app(calls, ControlPolicy(token="s3cret-token", bind_host="0.0.0.0"))
        assert (await app.handle(post("/kill", host="bot.lan:8080"))).status == 401
        assert (await app.handle(post("/kill", authorization="Bearer wrong"))).status == 401
        ok = post("/kill", host="bot.lan:8080", authorization="Bearer s3cret-token")
        assert (await app.handle(ok)).status == 202
        assert calls == ["OPERATOR"]
        assert "s3cret" not in repr(ControlPolicy(token="s3cret-token"))

    def test_loopback_hosts(self) -> None:
        for host in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"):
            assert is_loopback_host(host), host
        for host in ("0.0.0.0", "192.168.1.5", "bot.lan", "::", ""):
            assert not is_loopback_host(host), host


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
                resp = await client.post("/kill", content=b'{"reason": "test"}')
                assert resp.status_code == 415  # no Content-Type: application/json
                resp = await client.post(
                    "/kill", json={"reason": "test"}, headers={"origin": "https://evil.example"}
                )
                assert resp.status_code == 403
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
