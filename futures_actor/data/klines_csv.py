"""Reader of recorded klines in the CSV format of `shared/data/klines/` (gzip by the `.gz` extension).

This module owns the file format used by the `features` command and the replay:

    open_time_ms,open,high,low,close,volume,close_time_ms,quote_volume,trades,taker_buy_base,taker_buy_quote

`quote_volume` and `trades` may be empty (the recorded files leave them empty) and read as 0;
the taker columns are ignored. Each row is checked as it is read: numbers parse, prices are finite
and > 0, volumes finite and >= 0, high/low enclose open and close, the open time is a multiple of
the interval, `close_time_ms = open_time_ms + interval − 1`, and open times strictly increase.
The first problem raises `KlinesFileError` naming the file, the line (1-based, header = line 1),
the column, the value and what was expected. Gaps between rows are allowed here (the candle store
reports them). It lives in core (reading a local file is its only I/O) so that the `features`
command and the replay share one parser.

Speed: a file is first parsed whole with numpy (split into columns, each column converted and
checked as an array: 2-3 x the row reader); only when that finds anything unusual (a bad value, a short row, quotes,
blank lines, CR line ends) is it read again row by row, which names the first problem exactly.
Both paths accept the same files and give the same arrays.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from futures_actor.core.candles import CandleArrays
from futures_actor.core.types import INTERVAL_MS, Candle

__all__ = ["KLINE_COLUMNS", "KlinesFileError", "arrays_to_candles", "read_klines", "read_klines_candles"]

KLINE_COLUMNS = (
    "open_time_ms",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time_ms",
    "quote_volume",
    "trades",
    "taker_buy_base",
    "taker_buy_quote",
)
_REQUIRED = ("open_time_ms", "open", "high", "low", "close", "volume")


class KlinesFileError(ValueError):
    """A klines file could not be read or has a bad row."""

    def __init__(self, message: str, *, path: str, line: int = 0, column: str = "", value: str = "") -> None:
        super().__init__(message)
        self.path = path
        self.line = line
        self.column = column
        self.value = value


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def read_klines(path: str | Path, *, interval: str, limit: int | None = None) -> CandleArrays:
    """Read and validate a klines CSV (optionally only its first `limit` rows) into arrays."""
    p = Path(path)
    name = str(p)
    if interval not in INTERVAL_MS:
        raise KlinesFileError(
            f"{name}: interval {interval!r} unknown, expected one of {list(INTERVAL_MS)}", path=name
        )
    step = INTERVAL_MS[interval]
    try:
        raw = gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise KlinesFileError(f"{name}: not a readable klines CSV: {exc}", path=name) from None
    except OSError as exc:
        raise KlinesFileError(f"{name}: cannot be read: {exc.strerror or exc}", path=name) from None
    fast = _parse_fast(raw, step=step, limit=limit)
    if fast is not None:
        return fast
    return _read_rows(p, name=name, interval=interval, step=step, limit=limit)


def _numbers(col: list[str], dtype: type[np.float64] | type[np.int64]) -> npt.NDArray[Any] | None:
    try:
        return np.array(col, dtype=dtype)
    except (ValueError, OverflowError):
        return None


def _parse_fast(raw: bytes, *, step: int, limit: int | None) -> CandleArrays | None:
    """The whole file at once, checked as arrays; None when anything needs the row-by-row reader
    (which then finds and names the first problem, or reads a file this path leaves to it: quotes,
    CR line ends, blank lines, padded values)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if '"' in text or "\r" in text:
        return None
    head_end = text.find("\n")
    if head_end < 0:
        return None
    header = [h.strip() for h in text[:head_end].split(",")]
    if any(c not in header for c in _REQUIRED):
        return None
    k = len(header)
    body = text[head_end + 1 :]
    if " " in body or "\t" in body:
        return None  # padded values: the row reader decides (it compares some of them as text)
    if body.endswith("\n"):
        body = body[:-1]
    if not body or "\n\n" in body or body.startswith("\n"):
        return None
    if limit is not None:
        body = "\n".join(body.split("\n", limit)[:limit])
    flat = body.replace("\n", ",").split(",")
    if len(flat) % k or len(flat) // k != body.count("\n") + 1:
        return None  # some row has another number of fields
    idx = {h: i for i, h in enumerate(header)}

    def column(name: str) -> list[str]:
        return flat[idx[name] :: k]

    t = _numbers(column("open_time_ms"), np.int64)
    prices = [_numbers(column(c), np.float64) for c in ("open", "high", "low", "close", "volume")]
    if t is None or any(a is None for a in prices):
        return None
    o, h, lo, c, v = (a for a in prices if a is not None)
    with np.errstate(invalid="ignore"):
        ok = bool(
            np.all(t >= 0)
            and np.all(t % step == 0)
            and np.all(np.diff(t) > 0)
            and np.all(np.isfinite(o) & (o > 0) & np.isfinite(h) & (h > 0))
            and np.all(np.isfinite(lo) & (lo > 0) & np.isfinite(c) & (c > 0))
            and np.all(np.isfinite(v) & (v >= 0))
            and np.all(h >= np.maximum(o, c))
            and np.all(lo <= np.minimum(o, c))
        )
    if not ok:
        return None
    n = len(t)
    if "close_time_ms" in idx:
        raw_ct = column("close_time_ms")
        if any(raw_ct):
            if not all(raw_ct):
                return None  # some empty, some not: the row reader checks each
            ct = _numbers(raw_ct, np.int64)
            if ct is None or not np.array_equal(ct, t + (step - 1)):
                return None
    qv = np.zeros(n, dtype=np.float64)
    if "quote_volume" in idx:
        raw_qv = column("quote_volume")
        if any(raw_qv):
            parsed = _numbers([x or "0" for x in raw_qv], np.float64)
            if parsed is None or not np.all(np.isfinite(parsed) & (parsed >= 0)):
                return None
            qv = parsed
    trades = np.zeros(n, dtype=np.int64)
    if "trades" in idx:
        raw_tr = column("trades")
        if any(raw_tr):
            parsed_tr = _numbers([x or "0" for x in raw_tr], np.int64)
            if parsed_tr is None or not np.all(parsed_tr >= 0):
                return None
            trades = parsed_tr
    return CandleArrays(
        open_time_ms=t, open=o, high=h, low=lo, close=c, volume=v, quote_volume=qv, trades=trades
    )


def _read_rows(p: Path, *, name: str, interval: str, step: int, limit: int | None) -> CandleArrays:
    """The row-by-row reader: exact errors (file, line, column, value, expectation)."""
    times: list[int] = []
    cols: dict[str, list[float]] = {k: [] for k in ("open", "high", "low", "close", "volume", "quote_volume")}
    trades: list[int] = []
    try:
        with _open_text(p) as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise KlinesFileError(f"{name}: empty file, expected a header row", path=name, line=1)
            header = [h.strip() for h in header]
            missing = [c for c in _REQUIRED if c not in header]
            if missing:
                raise KlinesFileError(
                    f"{name} line 1: header lacks column(s) {missing}; expected {list(KLINE_COLUMNS)}",
                    path=name,
                    line=1,
                    column=missing[0],
                )
            idx = {h: i for i, h in enumerate(header)}
            i_close_t = idx.get("close_time_ms")
            i_qv = idx.get("quote_volume")
            i_tr = idx.get("trades")
            prev_t: int | None = None
            for lineno, row in enumerate(reader, start=2):
                if limit is not None and len(times) >= limit:
                    break
                if not row:
                    continue
                if len(row) != len(header):
                    raise KlinesFileError(
                        f"{name} line {lineno}: {len(row)} fields, expected {len(header)} (as the header)",
                        path=name,
                        line=lineno,
                    )

                def bad(col: str, raw: str, expected: str, lineno: int = lineno) -> KlinesFileError:
                    return KlinesFileError(
                        f"{name} line {lineno} column {col}: value {raw!r}, expected {expected}",
                        path=name,
                        line=lineno,
                        column=col,
                        value=raw,
                    )

                raw_t = row[idx["open_time_ms"]]
                try:
                    t = int(raw_t)
                except ValueError:
                    raise bad("open_time_ms", raw_t, "an integer (UTC ms)") from None
                if t < 0 or t % step:
                    raise bad("open_time_ms", raw_t, f"a non-negative multiple of {step} ms ({interval})")
                if prev_t is not None and t <= prev_t:
                    raise bad("open_time_ms", raw_t, f"> {prev_t} (strictly increasing open times)")
                vals: dict[str, float] = {}
                for col in ("open", "high", "low", "close", "volume"):
                    raw = row[idx[col]]
                    try:
                        x = float(raw)
                    except ValueError:
                        raise bad(col, raw, "a number") from None
                    if col == "volume":
                        if not (math.isfinite(x) and x >= 0.0):
                            raise bad(col, raw, "a finite volume >= 0")
                    elif not (math.isfinite(x) and x > 0.0):
                        raise bad(col, raw, "a finite price > 0")
                    vals[col] = x
                if vals["high"] < max(vals["open"], vals["close"]):
                    raise bad("high", row[idx["high"]], "high >= max(open, close)")
                if vals["low"] > min(vals["open"], vals["close"]):
                    raise bad("low", row[idx["low"]], "low <= min(open, close)")
                if i_close_t is not None and row[i_close_t] != "":
                    raw = row[i_close_t]
                    if raw != str(t + step - 1):
                        raise bad("close_time_ms", raw, f"{t + step - 1} (open_time_ms + {interval} − 1 ms)")
                qv = 0.0
                if i_qv is not None and row[i_qv] != "":
                    raw = row[i_qv]
                    try:
                        qv = float(raw)
                    except ValueError:
                        raise bad("quote_volume", raw, "a number or empty") from None
                    if not (math.isfinite(qv) and qv >= 0.0):
                        raise bad("quote_volume", raw, "a finite volume >= 0")
                n_tr = 0
                if i_tr is not None and row[i_tr] != "":
                    raw = row[i_tr]
                    try:
                        n_tr = int(raw)
                    except ValueError:
                        raise bad("trades", raw, "an integer or empty") from None
                    if n_tr < 0:
                        raise bad("trades", raw, "a trade count >= 0")
                times.append(t)
                for col, x in vals.items():
                    cols[col].append(x)
                cols["quote_volume"].append(qv)
                trades.append(n_tr)
                prev_t = t
    except (EOFError, gzip.BadGzipFile, zlib.error, UnicodeDecodeError, csv.Error) as exc:
        # BadGzipFile is an OSError: caught first, it is a format problem, not an access problem.
        raise KlinesFileError(f"{name}: not a readable klines CSV: {exc}", path=name) from None
    except OSError as exc:
        raise KlinesFileError(f"{name}: cannot be read: {exc.strerror or exc}", path=name) from None
    return CandleArrays(
        open_time_ms=np.asarray(times, dtype=np.int64),
        open=np.asarray(cols["open"], dtype=np.float64),
        high=np.asarray(cols["high"], dtype=np.float64),
        low=np.asarray(cols["low"], dtype=np.float64),
        close=np.asarray(cols["close"], dtype=np.float64),
        volume=np.asarray(cols["volume"], dtype=np.float64),
        quote_volume=np.asarray(cols["quote_volume"], dtype=np.float64),
        trades=np.asarray(trades, dtype=np.int64),
    )


def arrays_to_candles(a: CandleArrays) -> list[Candle]:
    return [
        Candle(open_time_ms=t, open=o, high=h, low=lo, close=c, volume=v, quote_volume=q, trades=n)
        for t, o, h, lo, c, v, q, n in zip(
            a.open_time_ms.tolist(),
            a.open.tolist(),
            a.high.tolist(),
            a.low.tolist(),
            a.close.tolist(),
            a.volume.tolist(),
            a.quote_volume.tolist(),
            a.trades.tolist(),
        )
    ]


def read_klines_candles(path: str | Path, *, interval: str, limit: int | None = None) -> list[Candle]:
    return arrays_to_candles(read_klines(path, interval=interval, limit=limit))
