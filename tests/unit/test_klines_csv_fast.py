"""The numpy reader of klines CSV files (issue 12: >= 500k rows/s) gives the same arrays as the
row-by-row reader on every good file, and the same precise error (file, line, column, value) on
every bad one: a bad file always goes to the row reader."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from futures_actor.data import klines_csv
from futures_actor.data.klines_csv import KlinesFileError, read_klines

HEADER = "open_time_ms,open,high,low,close,volume,close_time_ms,quote_volume,trades,taker_buy_base,taker_buy_quote\n"
STEP = 300_000
T0 = 1_735_603_200_000


def rows(n: int, *, qv: bool = False) -> list[str]:
    out = []
    for i in range(n):
        t = T0 + i * STEP
        o = 100.0 + i * 0.5
        c = o + 0.25
        extra = f"{o * 3.5!r},{i * 7}" if qv else ","
        out.append(f"{t},{o!r},{c + 1!r},{o - 1!r},{c!r},{10.5 + i!r},{t + STEP - 1},{extra},,\n")
    return out


def write(tmp: Path, name: str, lines: list[str], *, header: str = HEADER) -> Path:
    p = tmp / name
    data = (header + "".join(lines)).encode()
    p.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    return p


def same(a: klines_csv.CandleArrays, b: klines_csv.CandleArrays) -> None:
    for field in ("open_time_ms", "open", "high", "low", "close", "volume", "quote_volume", "trades"):
        x, y = getattr(a, field), getattr(b, field)
        assert x.dtype == y.dtype, field
        assert np.array_equal(x, y), field


def slow(p: Path, limit: int | None = None) -> klines_csv.CandleArrays:
    return klines_csv._read_rows(p, name=str(p), interval="5m", step=STEP, limit=limit)


@pytest.mark.parametrize("qv", [False, True])
@pytest.mark.parametrize("limit", [None, 1, 7, 50])
def test_good_files_take_the_fast_path_and_equal_the_row_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, qv: bool, limit: int | None
) -> None:
    p = write(tmp_path, "X-5m.csv.gz", rows(20, qv=qv))
    expected = slow(p, limit)

    def no_rows(*a: object, **k: object) -> None:
        raise AssertionError("a good file must not need the row reader")

    monkeypatch.setattr(klines_csv, "_read_rows", no_rows)
    same(read_klines(p, interval="5m", limit=limit), expected)


def test_the_bundled_sample_reads_the_same_both_ways(sample_dir: Path) -> None:
    for p in sorted(sample_dir.glob("*-5m.csv.gz"))[:2]:
        same(read_klines(p, interval="5m"), slow(p))


BAD = [
    # (line index to replace, replacement row, column named in the error)
    (3, f"{T0 + 3 * STEP},abc,2,1,1.5,1,{T0 + 4 * STEP - 1},,,,\n", "open"),
    (4, f"{T0 + 4 * STEP},1,2,1,1.5,nan,{T0 + 5 * STEP - 1},,,,\n", "volume"),
    (5, f"{T0 + 5 * STEP},1,1.2,1,1.5,1,{T0 + 6 * STEP - 1},,,,\n", "high"),
    (6, f"{T0 + 6 * STEP + 1},1,2,1,1.5,1,{T0 + 7 * STEP},,,,\n", "open_time_ms"),
    (7, f"{T0 + 7 * STEP},1,2,1,1.5,1,{T0 + 7 * STEP},,,,\n", "close_time_ms"),
    (8, f"{T0 + 8 * STEP},1,2,1,1.5,1,{T0 + 9 * STEP - 1},-3,,,\n", "quote_volume"),
    (9, f"{T0 + 9 * STEP},1,2,1,1.5,1,{T0 + 10 * STEP - 1},,x,,\n", "trades"),
    (10, f"{T0 + 2 * STEP},1,2,1,1.5,1,{T0 + 3 * STEP - 1},,,,\n", "open_time_ms"),
    (11, f"{T0 + 11 * STEP},1,2,1.6,1.5,1,{T0 + 12 * STEP - 1},,,,\n", "low"),
    (12, f"{T0 + 12 * STEP},0,2,1,1.5,1,{T0 + 13 * STEP - 1},,,,\n", "open"),
]


@pytest.mark.parametrize(("at", "row", "column"), BAD)
def test_a_bad_row_is_named_exactly(tmp_path: Path, at: int, row: str, column: str) -> None:
    lines = rows(20)
    lines[at] = row
    p = write(tmp_path, "BAD-5m.csv.gz", lines)
    with pytest.raises(KlinesFileError) as err:
        read_klines(p, interval="5m")
    e = err.value
    assert (e.path, e.line, e.column) == (str(p), at + 2, column)
    assert f"line {at + 2} column {column}: value {e.value!r}" in str(e)
    assert str(p) in str(e)


def test_a_short_row_and_crlf_and_blank_lines(tmp_path: Path) -> None:
    lines = rows(10)
    lines[4] = lines[4].replace(",,,,\n", ",,\n")
    p = write(tmp_path, "SHORT-5m.csv", lines)
    with pytest.raises(KlinesFileError, match=r"line 6: 9 fields, expected 11"):
        read_klines(p, interval="5m")
    crlf = write(tmp_path, "CRLF-5m.csv", [r.replace("\n", "\r\n") for r in rows(10)])
    same(read_klines(crlf, interval="5m"), slow(crlf))
    blank = write(tmp_path, "BLANK-5m.csv", [*rows(5), "\n", *rows(10)[5:]])
    same(read_klines(blank, interval="5m"), slow(blank))
