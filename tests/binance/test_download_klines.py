"""`download-klines` against a MockTransport fapi: format, completeness, funding, resume, errors."""

from __future__ import annotations

import gzip
import io
import itertools
import json
from pathlib import Path

import httpx
import pytest
import trio
import trio.testing

from futures_actor.tools.download_klines import FUNDING_HEADER, KLINE_HEADER, amain, run_download_klines

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample"  # bundled recorded klines
START_MS = 1_767_225_600_000  # 2026-01-01 00:00 UTC
STEP = {"5m": 300_000, "1h": 3_600_000}
FUNDING_STEP = 8 * 3_600_000


class TrioWallClock:
    def now_ms(self) -> int:
        return START_MS + int(trio.current_time() * 1000)


def handler(requests: list[httpx.Request]) -> httpx.MockTransport:
    def serve(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        q = dict(request.url.params)
        now = START_MS + int(trio.current_time() * 1000)
        if request.url.path == "/fapi/v1/time":
            return httpx.Response(200, json={"serverTime": now})
        if request.url.path == "/fapi/v1/klines":
            step = STEP[q["interval"]]
            t = -(-int(q["startTime"]) // step) * step
            end, limit = int(q["endTime"]), int(q["limit"])
            rows = []
            while t <= min(end, now) and len(rows) < limit:
                i = t // step % 1000
                rows.append([t, f"{100 + i}.10", f"{101 + i}.00", f"{99 + i}.00", f"{100 + i}.50", "12.345",
                             t + step - 1, "1234.5", 42, "6.1", "617.2", "0"])  # fmt: skip
                t += step
            return httpx.Response(200, content=json.dumps(rows).encode())
        if request.url.path == "/fapi/v1/fundingRate":
            t = -(-int(q["startTime"]) // FUNDING_STEP) * FUNDING_STEP
            rows = []
            while t <= int(q["endTime"]) and len(rows) < int(q["limit"]):
                rows.append(
                    {
                        "symbol": q["symbol"],
                        "fundingRate": "0.00010000",
                        "fundingTime": t + 7,
                        "markPrice": "1",
                    }
                )
                t += FUNDING_STEP
            return httpx.Response(200, content=json.dumps(rows).encode())
        return httpx.Response(404, json={"code": -1121, "msg": "no route"})

    return httpx.MockTransport(serve)


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


def read_rows(path: Path) -> list[list[str]]:
    with gzip.open(path, "rt") as fh:
        lines = fh.read().splitlines()
    assert lines[0] == KLINE_HEADER
    return [line.split(",") for line in lines[1:]]


ARGS = ["--symbols", "BTCUSDT,ETHUSDT", "--intervals", "5m,1h", "--days", "3", "--funding"]


class TestDownload:
    """The replay format, complete and resumable."""

    async def test_header_matches_the_recorded_format(self) -> None:
        with gzip.open(SAMPLE / "BTCUSDT-5m.csv.gz", "rt") as fh:
            assert fh.readline().strip() == KLINE_HEADER

    async def test_fresh_download_then_resume(
        self, autojump_clock: trio.testing.MockClock, tmp_path: Path
    ) -> None:
        requests: list[httpx.Request] = []
        err = io.StringIO()
        await trio.sleep(10 * 86_400)  # "now" is 10 days after START_MS
        argv = [*ARGS, "--out", str(tmp_path)]
        assert await amain(argv, transport=handler(requests), wall_clock=TrioWallClock(), stderr=err) == 0
        rows = read_rows(tmp_path / "BTCUSDT-5m.csv.gz")
        assert len(rows) == 3 * 288  # three days of closed 5m candles
        times = [int(r[0]) for r in rows]
        assert all(b - a == STEP["5m"] for a, b in itertools.pairwise(times))
        assert all(int(r[6]) == int(r[0]) + STEP["5m"] - 1 for r in rows)
        assert all(len(r) == 11 and all(r) for r in rows)  # every field filled
        assert times[-1] + STEP["5m"] <= START_MS + 10 * 86_400_000  # only closed candles
        assert len(read_rows(tmp_path / "ETHUSDT-1h.csv.gz")) == 72
        funding = (tmp_path / "funding" / "BTCUSDT.csv").read_text().splitlines()
        assert funding[0] == FUNDING_HEADER
        assert len(funding) == 1 + 10
        assert funding[1].split(",")[1:] == ["BTCUSDT", "0.00010000", ""]
        assert "BTCUSDT 5m 864/864 candles" in err.getvalue()
        assert {r.url.params["limit"] for r in requests if r.url.path == "/fapi/v1/klines"} == {"1500"}

        # An hour later, a second run appends only the new candles.
        await trio.sleep(3600)
        assert await amain(argv, transport=handler(requests), wall_clock=TrioWallClock(), stderr=err) == 0
        resumed = read_rows(tmp_path / "BTCUSDT-5m.csv.gz")
        times2 = [int(r[0]) for r in resumed]
        assert times2[: len(times)] == times
        assert len(resumed) == len(rows) + 12
        assert len(set(times2)) == len(times2)
        funding2 = (tmp_path / "funding" / "BTCUSDT.csv").read_text().splitlines()
        assert len(funding2) == len(set(funding2))
        assert funding2.count(FUNDING_HEADER) == 1

    async def test_exchange_failure_exits_1(
        self, autojump_clock: trio.testing.MockClock, tmp_path: Path
    ) -> None:
        transport = httpx.MockTransport(
            lambda r: httpx.Response(400, json={"code": -1121, "msg": "Invalid symbol."})
        )
        err = io.StringIO()
        code = await amain(
            [*ARGS, "--out", str(tmp_path)], transport=transport, wall_clock=TrioWallClock(), stderr=err
        )
        assert code == 1
        assert "Invalid symbol" in err.getvalue()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--symbols", "btc-usdt", "--intervals", "5m", "--days", "1", "--out", "x"], "--symbols"),
        (["--symbols", "BTCUSDT", "--intervals", "7m", "--days", "1", "--out", "x"], "--intervals"),
        (["--symbols", "BTCUSDT", "--intervals", "5m", "--days", "0", "--out", "x"], "--days"),
        (["--symbols", "BTCUSDT"], "required"),
    ],
)
def test_bad_arguments_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_download_klines(argv) == 2
    assert message in capsys.readouterr().err
