"""Rebuild `data/sample/` from the full recorded data set (`../shared/data` by default).

The sample is what the repository ships so that the quick start and the test suite run without the full
data set. Kline and funding rows are copied verbatim (the text lines of the source files, filtered by time);
JSON payloads are decoded, cut down to a few symbols or messages, and written back compactly. Running it
twice gives byte-identical files (gzip without a timestamp, sorted inputs).

    python scripts/make_sample_data.py [--source ../shared/data] [--out data/sample]
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

# 60 days from the first recorded candle: 2024-12-31 00:00 UTC (inclusive) to 2025-03-01 00:00 UTC
# (exclusive). Starting at the first row keeps every test that used "the first N rows" of the full files
# on exactly the same candles.
START_MS = 1_735_603_200_000
END_MS = 1_740_787_200_000
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT")
INTERVALS = ("5m", "1h")

# Hourly klines only (small) of six more symbols over the same 60 days, for cross-symbol tests
# (correlation, indicators). In a sub-directory: the replay needs 5m klines too.
HOURLY_ONLY = ("BCHUSDT", "BNBUSDT", "DOGEUSDT", "INJUSDT", "OPUSDT", "ZECUSDT")

# A second, short window for stress tests: INJUSDT across the 2025-10-10 liquidation cascade (a 0.91
# log-return 5m candle). Kept in a sub-directory so that `--replay data/sample` does not pick it up.
STRESS_SYMBOL = "INJUSDT"
STRESS_START_MS = 1_759_276_800_000  # 2025-10-01 00:00 UTC
STRESS_END_MS = 1_760_486_400_000  # 2025-10-15 00:00 UTC
STRESS_HOUR_START_MS = STRESS_START_MS - 20 * 86_400_000  # 1h history before the 5m slice

# Symbols kept in the recorded mainnet exchangeInfo: the sample's, the rest of the full set's that the
# exchange listed then, a 1000-multiplier symbol, and one of each kind the universe rules exclude.
MAINNET_INFO_SYMBOLS = (
    *SYMBOLS,
    "DOGEUSDT",
    "BNBUSDT",
    "BCHUSDT",
    "INJUSDT",
    "OPUSDT",
    "ZECUSDT",
    "1000PEPEUSDT",
    "BTCUSDC",
    "ETHBTC",
    "BTCSTUSDT",
)
TESTNET_TOP_BY_VOLUME = 12
TESTNET_LOW_VOLUME = 6
TESTNET_PER_EXCLUDED_KIND = 2
PREMIUM_SYMBOLS = (*SYMBOLS, "HYPEUSDT", "INJUSDT", "BTCUSDC", "ETHBTC")
BRACKET_SYMBOLS = (*SYMBOLS, "1000PEPEUSDT")
WS_MESSAGES = 120

REST_VERBATIM = (
    "ccxt_static_binance_usdm_responses.json",
    "commissionRate_btcusdt_nautilus.json",
    "commissionRate_btcusdt_quarterly_nautilus.json",
    "commissionRate_ethusdt_nautilus.json",
    "exchangeInfo_testnet_2022-02-19_trimmed_nautilus.json",
    "userTrades_ETHUSDT_2022-02-27_nautilus.json",
)
WS_VERBATIM = (
    "algo_update_finished_canceled_nautilus.json",
    "algo_update_finished_nautilus.json",
    "algo_update_triggered_nautilus.json",
    "algo_update_triggering_nautilus.json",
    "trade_lite_nautilus.json",
    "fstream_kline_1m_mainnet_2021-07-22.json",
)


def write_gzip(path: Path, lines: Iterable[str]) -> None:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        gz.write("".join(lines).encode("utf-8"))
    path.write_bytes(buf.getvalue())


def time_filtered(lines: list[str], start_ms: int, end_ms: int) -> list[str]:
    header, rows = lines[0], lines[1:]
    return [header, *(r for r in rows if start_ms <= int(r.split(",", 1)[0]) < end_ms)]


def read_lines(path: Path) -> list[str]:
    if path.suffix == ".gz":
        with gzip.open(path, "rt", encoding="utf-8", newline="") as fh:
            return fh.readlines()
    return path.read_text(encoding="utf-8").splitlines(keepends=True)


def dump_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, separators=(",", ":")) + "\n", encoding="utf-8")


def klines_and_funding(src: Path, out: Path) -> None:
    (out / "funding").mkdir(parents=True, exist_ok=True)
    for symbol in SYMBOLS:
        for tf in INTERVALS:
            lines = read_lines(src / "klines" / f"{symbol}-{tf}.csv.gz")
            write_gzip(out / f"{symbol}-{tf}.csv.gz", time_filtered(lines, START_MS, END_MS))
        funding = read_lines(src / "funding" / f"{symbol}.csv")
        (out / "funding" / f"{symbol}.csv").write_text(
            "".join(time_filtered(funding, START_MS, END_MS)), encoding="utf-8"
        )
    hourly = out / "hourly"
    hourly.mkdir(exist_ok=True)
    for symbol in HOURLY_ONLY:
        lines = read_lines(src / "klines" / f"{symbol}-1h.csv.gz")
        write_gzip(hourly / f"{symbol}-1h.csv.gz", time_filtered(lines, START_MS, END_MS))
    stress = out / "stress"
    stress.mkdir(exist_ok=True)
    five = read_lines(src / "klines" / f"{STRESS_SYMBOL}-5m.csv.gz")
    hour = read_lines(src / "klines" / f"{STRESS_SYMBOL}-1h.csv.gz")
    write_gzip(stress / f"{STRESS_SYMBOL}-5m.csv.gz", time_filtered(five, STRESS_START_MS, STRESS_END_MS))
    write_gzip(
        stress / f"{STRESS_SYMBOL}-1h.csv.gz", time_filtered(hour, STRESS_HOUR_START_MS, STRESS_END_MS)
    )


def exchange_infos(rest: Path, out: Path) -> None:
    main = json.loads((rest / "exchangeInfo_mainnet_2024-10-02.json").read_text(encoding="utf-8"))
    keep = set(MAINNET_INFO_SYMBOLS)
    main["symbols"] = [s for s in main["symbols"] if s["symbol"] in keep]
    missing = keep - {s["symbol"] for s in main["symbols"]}
    if missing:
        raise SystemExit(f"mainnet exchangeInfo lacks {sorted(missing)}")
    # Inside the sample directory itself: `--replay data/sample` looks for exchangeInfo*.json there.
    dump_json(out / "exchangeInfo_mainnet_2024-10-02.json", main)

    testnet = json.loads((rest / "exchangeInfo_testnet_2025-01-09.json").read_text(encoding="utf-8"))
    tickers = json.loads((rest / "ticker24hr_all_testnet_2025-01-11.json").read_text(encoding="utf-8"))
    listed = {s["symbol"]: s for s in testnet["symbols"]}
    volume = {t["symbol"]: float(t["quoteVolume"]) for t in tickers if t["symbol"] in listed}
    eligible = [
        s
        for s, x in listed.items()
        if (x["contractType"], x["status"], x["quoteAsset"]) == ("PERPETUAL", "TRADING", "USDT")
        and s in volume
    ]
    by_volume = sorted(eligible, key=lambda s: (-volume[s], s))
    chosen = set(by_volume[:TESTNET_TOP_BY_VOLUME]) | set(by_volume[-TESTNET_LOW_VOLUME:])
    # One of each listing the rules exclude for its kind: not perpetual, not USDT, not trading.
    for kind in (
        lambda x: x["contractType"] != "PERPETUAL",
        lambda x: x["quoteAsset"] != "USDT",
        lambda x: x["status"] != "TRADING",
    ):
        chosen |= set([s for s, x in sorted(listed.items()) if kind(x)][:TESTNET_PER_EXCLUDED_KIND])
    testnet["symbols"] = [x for s, x in listed.items() if s in chosen]
    payloads = out / "binance-payloads" / "rest"
    dump_json(payloads / "exchangeInfo_testnet_2025-01-09.json", testnet)
    dump_json(
        payloads / "ticker24hr_all_testnet_2025-01-11.json", [t for t in tickers if t["symbol"] in chosen]
    )


def other_payloads(src_payloads: Path, out: Path) -> None:
    rest_in, ws_in = src_payloads / "rest", src_payloads / "ws"
    rest_out, ws_out = out / "binance-payloads" / "rest", out / "binance-payloads" / "ws"
    rest_out.mkdir(parents=True, exist_ok=True)
    ws_out.mkdir(parents=True, exist_ok=True)
    premium = json.loads((rest_in / "premiumIndex_all_mainnet_2025-06-17.json").read_text(encoding="utf-8"))
    dump_json(
        rest_out / "premiumIndex_all_mainnet_2025-06-17.json",
        [p for p in premium if p["symbol"] in PREMIUM_SYMBOLS or "_" in p["symbol"]],
    )
    brackets = json.loads(
        (rest_in / "leverageBracket_reconstructed_2024-10.json").read_text(encoding="utf-8")
    )
    dump_json(
        rest_out / "leverageBracket_reconstructed_2024-10.json",
        [b for b in brackets if b["symbol"] in BRACKET_SYMBOLS],
    )
    for name in REST_VERBATIM:
        shutil.copyfile(rest_in / name, rest_out / name)
    for sub_in, sub_out in ((rest_in, rest_out), (ws_in, ws_out)):
        examples = sub_in / "docs-examples"
        (sub_out / "docs-examples").mkdir(exist_ok=True)
        for p in sorted(examples.glob("*.json")):
            shutil.copyfile(p, sub_out / "docs-examples" / p.name)
    for name in WS_VERBATIM:
        shutil.copyfile(ws_in / name, ws_out / name)
    book = json.loads((ws_in / "fstream_bookTicker_mainnet_2021-07-22.json").read_text(encoding="utf-8"))
    book["messages"] = book["messages"][:WS_MESSAGES]
    book["count"] = len(book["messages"])
    dump_json(ws_out / "fstream_bookTicker_mainnet_2021-07-22.json", book)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=REPO / ".." / "shared" / "data")
    parser.add_argument("--out", type=Path, default=REPO / "data" / "sample")
    args = parser.parse_args()
    src: Path = args.source
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    klines_and_funding(src, out)
    exchange_infos(src / "binance-payloads" / "rest", out)
    other_payloads(src / "binance-payloads", out)
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"{out}: {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
