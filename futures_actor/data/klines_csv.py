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

Speed: a file is first parsed whole: its rows are joined into one JSON array that msgspec parses in C
(the same values as `float()` / `int()`, no Python string per field), and each column is then converted
and checked as a numpy array (2-2.4 x the old numpy-on-strings path, ~5 x the row reader). Only when that
finds anything unusual (a bad value, a short or long row, quotes, blanks, signs, blank lines, CR line
ends) is the file read again row by row, which names the first problem exactly. Both paths accept the
same files and give the same arrays.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import zlib
from pathlib import Path
from typing import Any

import msgspec
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
_INT64_MAX = 2**63 - 1  # the integer columns are int64 arrays
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
        raw = _gunzip(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise KlinesFileError(f"{name}: not a readable klines CSV: {exc}", path=name) from None
    except OSError as exc:
        raise KlinesFileError(f"{name}: cannot be read: {exc.strerror or exc}", path=name) from None
    fast = _parse_fast(raw, step=step, limit=limit)
    if fast is not None:
        return fast
    return _read_rows(p, name=name, interval=interval, step=step, limit=limit)


# The bytes the numpy path reads: digits, the decimal point, exponents and the separators. Anything
# else (quotes, CR, blanks, signs, letters such as nan or inf, non-ASCII) goes to the row reader, which
# reads or rejects it; without `-` a value such as "-0" never reaches the fast path.
_FAST_BYTES = b"0123456789.eE+,\n"
_ROW_END = ""  # quotes never reach the fast path: an empty string in the parsed list is this marker
_ROW_END_JSON = b',"",'
_JSON = msgspec.json.Decoder()  # untyped: an integer stays int, a number with . or e is a float


def _gunzip(data: bytes) -> bytes:
    """A gzip file's content: zlib in one call (CRC and length checked) when the file is one gzip
    member, as written by gzip and by our tools; `gzip.decompress` (slower) for anything else."""
    d = zlib.decompressobj(wbits=31)
    try:
        out = d.decompress(data)
    except zlib.error:
        return gzip.decompress(data)  # raises the error the caller reports
    return out if d.eof and not d.unused_data else gzip.decompress(data)


def _parse_fast(raw: bytes, *, step: int, limit: int | None) -> CandleArrays | None:
    """The whole file at once, checked as arrays; None when anything needs the row-by-row reader
    (which then finds and names the first problem, or reads a file this path leaves to it: quotes,
    CR line ends, blank lines, padded or signed values).

    The fields are parsed in C by msgspec's JSON number parser (the rows joined into one JSON array;
    it rounds as `float()` and `int()` do), so no Python string is made per field."""
    head_end = raw.find(b"\n")
    if head_end < 0:
        return None
    head = raw[:head_end]
    if b'"' in head or b"\r" in head:
        return None
    try:
        header = [h.strip() for h in head.decode("utf-8").split(",")]
    except UnicodeDecodeError:
        return None
    if any(c not in header for c in _REQUIRED):
        return None
    body = raw[head_end + 1 :]
    if body.translate(None, _FAST_BYTES):
        return None
    if body.endswith(b"\n"):
        body = body[:-1]
    if limit is not None:
        body = b"\n".join(body.split(b"\n", limit)[:limit])
    if not body or b"\n\n" in body or body.startswith(b"\n"):
        return None
    n = body.count(b"\n") + 1
    width, flat = _fields(body, header, n)
    if flat is None:
        return None
    # Each row is followed by an end-of-row marker (""): every row has exactly `width` fields when
    # the n - 1 markers all sit one after every `width` fields (a short row is never made up for by
    # a long one).
    stride = width + 1
    if len(flat) != n * stride - 1 or flat[width::stride].count(_ROW_END) != n - 1:
        return None
    idx = {h: i for i, h in enumerate(header)}

    def column(name: str) -> list[Any] | None:
        """The column's values (int, float, or None where empty); None when empty on every row."""
        i = idx.get(name)
        return None if i is None or i >= width else flat[i::stride]

    t = _ints(column("open_time_ms"))
    o, h, lo, c, v = (_floats(column(x)) for x in ("open", "high", "low", "close", "volume"))
    if t is None or o is None or h is None or lo is None or c is None or v is None:
        return None
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
    raw_ct = column("close_time_ms")
    if raw_ct is not None and raw_ct.count(None) != n:
        ct = _ints(raw_ct)  # some empty, some not: None, and the row reader checks each
        if ct is None or not np.array_equal(ct, t + (step - 1)):
            return None
    qv = np.zeros(n, dtype=np.float64)
    raw_qv = column("quote_volume")
    if raw_qv is not None and raw_qv.count(None) != n:
        parsed = _floats([0 if x is None else x for x in raw_qv] if None in raw_qv else raw_qv)
        if parsed is None or not np.all(np.isfinite(parsed) & (parsed >= 0)):
            return None
        qv = parsed
    trades = np.zeros(n, dtype=np.int64)
    raw_tr = column("trades")
    if raw_tr is not None and raw_tr.count(None) != n:
        parsed_tr = _ints([0 if x is None else x for x in raw_tr] if None in raw_tr else raw_tr)
        if parsed_tr is None or not np.all(parsed_tr >= 0):
            return None
        trades = parsed_tr
    return CandleArrays(
        open_time_ms=t, open=o, high=h, low=lo, close=c, volume=v, quote_volume=qv, trades=trades
    )


def _fields(body: bytes, header: list[str], n: int) -> tuple[int, list[Any] | None]:
    """Every field of the body, row after row, as one list of JSON numbers (None for an empty field)
    with an end-of-row marker after each row but the last, and the number of fields kept per row:
    the trailing optional columns empty on every row (the recorded files leave the last four empty)
    are cut before parsing. (k, None) when a field is not a JSON number."""
    k = len(header)
    first_end = body.find(b"\n")
    first = body if first_end < 0 else body[:first_end]
    drop = 0
    while drop < k - 1 and header[k - 1 - drop] not in _REQUIRED and first.endswith(b"," * (drop + 1)):
        drop += 1
    tail = b"," * drop
    if drop and body.count(tail + b"\n") == n - 1 and body.endswith(tail):
        joined = body.replace(tail + b"\n", _ROW_END_JSON)[:-drop]
    else:
        drop, joined = 0, body.replace(b"\n", _ROW_END_JSON)
    try:
        return k - drop, _JSON.decode(b"[" + joined + b"]")
    except msgspec.DecodeError:
        pass
    # Empty fields inside rows: each becomes null (two passes turn every run of commas into nulls).
    padded = (b"," + joined + b",").replace(b",,", b",null,").replace(b",,", b",null,")
    try:
        return k - drop, _JSON.decode(b"[" + padded[1:-1] + b"]")
    except msgspec.DecodeError:
        return k - drop, None


def _ints(col: list[Any] | None) -> npt.NDArray[np.int64] | None:
    """int64 when every value is a JSON integer that fits; None otherwise (a float, an empty field)."""
    if col is None or set(map(type, col)) != {int}:
        return None
    try:
        return np.fromiter(col, dtype=np.int64, count=len(col))
    except OverflowError:
        return None


def _floats(col: list[Any] | None) -> npt.NDArray[np.float64] | None:
    """float64; None when a field is empty (None) or too large for a float."""
    if col is None:
        return None
    try:
        return np.fromiter(col, dtype=np.float64, count=len(col))
    except (TypeError, OverflowError):
        return None


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
                if t < 0 or t % step or t > _INT64_MAX:
                    raise bad(
                        "open_time_ms",
                        raw_t,
                        f"a non-negative multiple of {step} ms ({interval}) within 64 bits",
                    )
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
                    if not 0 <= n_tr <= _INT64_MAX:
                        raise bad("trades", raw, "a trade count >= 0 within 64 bits")
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
