"""Decode + dispatch throughput of market stream frames: msgspec typed path vs json.loads + dicts.

    .venv/bin/python benchmarks/ws_decode_bench.py [--n 200000]

Frames are real shapes: the recorded combined kline stream (`binance-payloads/ws/
fstream_kline_1m_mainnet_2021-07-22.json` of `bench_data.PAYLOADS`, bundled in `data/sample/`), every frame marked closed so each one becomes a typed
`Candle`) and markPrice frames in the documented shape (no recording exists). The baseline does the
same work with `json.loads` and dict look-ups. ccxt's parser is used if importable (it is not a
dependency of this project; the row is skipped otherwise).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from decimal import Decimal

from bench_data import PAYLOADS

from futures_actor.binance.market_ws import KlineClosed, MarkPrice, decode_market_frame
from futures_actor.core.types import Candle

DATA = PAYLOADS / "ws"


def kline_frames() -> list[bytes]:
    messages = json.loads((DATA / "fstream_kline_1m_mainnet_2021-07-22.json").read_text())["messages"]
    out = []
    for m in messages:
        msg = m["msg"]
        msg["data"]["k"]["x"] = True
        out.append(json.dumps(msg, separators=(",", ":")).encode())
    return out


def mark_frames() -> list[bytes]:
    out = []
    for i in range(64):
        data = {
            "e": "markPriceUpdate", "E": 1562305380000 + i, "s": f"S{i}USDT", "p": f"{11794.15 + i:.8f}",
            "ap": "11794.15000000", "i": "11784.62659091", "P": "11784.25641265", "r": "0.00038167",
            "T": 1562306400000,
        }  # fmt: skip
        out.append(
            json.dumps({"stream": f"s{i}usdt@markPrice", "data": data}, separators=(",", ":")).encode()
        )
    return out


def baseline(raw: bytes) -> object:
    frame = json.loads(raw)
    data = frame["data"]
    kind = data["e"]
    if kind == "kline":
        k = data["k"]
        if not k["x"]:
            return None
        return KlineClosed(
            symbol=k["s"],
            interval=k["i"],
            candle=Candle(
                open_time_ms=k["t"], open=float(k["o"]), high=float(k["h"]), low=float(k["l"]),
                close=float(k["c"]), volume=float(k["v"]), quote_volume=float(k["q"]), trades=k["n"],
            ),
            event_time_ms=data["E"],
        )  # fmt: skip
    if kind == "markPriceUpdate":
        return MarkPrice(
            symbol=data["s"], mark_price=Decimal(data["p"]), index_price=Decimal(data["i"]),
            funding_rate=Decimal(data["r"]), next_funding_time_ms=data["T"], event_time_ms=data["E"],
        )  # fmt: skip
    return None


def rate(fn: Callable[[bytes], object], frames: list[bytes], n: int) -> float:
    batch = (frames * (n // len(frames) + 1))[:n]
    for raw in batch[:1000]:
        fn(raw)
    best = 0.0
    for _ in range(3):
        t0 = time.perf_counter()
        for raw in batch:
            fn(raw)
        best = max(best, n / (time.perf_counter() - t0))
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200_000)
    n = parser.parse_args().n
    try:
        import ccxt  # type: ignore[import-not-found]  # noqa: F401

        ccxt_note = "ccxt importable, but its WS parser needs ccxt.pro; not measured"
    except ImportError:
        ccxt_note = "ccxt not installed: skipped"
    print(f"{'stream':<10} {'typed msgspec msg/s':>20} {'json.loads baseline':>20} {'speed-up':>9}")
    for name, frames in (("kline", kline_frames()), ("markPrice", mark_frames())):
        assert all(decode_market_frame(f) == baseline(f) for f in frames), name
        typed = rate(decode_market_frame, frames, n)
        base = rate(baseline, frames, n)
        print(f"{name:<10} {typed:>20,.0f} {base:>20,.0f} {typed / base:>8.2f}x")
    print(f"ccxt: {ccxt_note}")


if __name__ == "__main__":
    main()
