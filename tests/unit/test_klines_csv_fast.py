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
    # integers beyond int64 are named, not an OverflowError from numpy
    (13, f"{T0 + 13 * STEP},1,2,1,1.5,1,{T0 + 14 * STEP - 1},,{2**63},,\n", "trades"),
    (14, f"{2**63 // STEP * STEP + STEP},1,2,1,1.5,1,,,,,\n", "open_time_ms"),
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


def test_a_short_row_made_up_for_by_a_long_one_is_still_named(tmp_path: Path) -> None:
    """Row 6 lacks its last (empty) field, row 7 has one too many at the front: the field count of the
    file is right, and with row 7 shifted by one every value would still read well. The row reader
    names the short row; the fast path must not accept the file."""
    lines = rows(10)
    lines[4] = lines[4][: -len(",\n")] + "\n"
    lines[5] = "," + lines[5]
    p = write(tmp_path, "TORN-5m.csv.gz", lines)
    with pytest.raises(KlinesFileError, match=r"line 6: 10 fields, expected 11") as err:
        read_klines(p, interval="5m")
    assert err.value.line == 6


def exact(a: klines_csv.CandleArrays, b: klines_csv.CandleArrays) -> None:
    """Bit for bit (a -0.0 is not a 0.0), dtypes included."""
    for field in ("open_time_ms", "open", "high", "low", "close", "volume", "quote_volume", "trades"):
        x, y = getattr(a, field), getattr(b, field)
        assert x.dtype == y.dtype, field
        assert x.tobytes() == y.tobytes(), field


def no_row_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_rows(*a: object, **k: object) -> None:
        raise AssertionError("a good file must not need the row reader")

    monkeypatch.setattr(klines_csv, "_read_rows", no_rows)


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        # integer prices and volumes, exponents, long mantissas: all JSON numbers, all read in C
        ("ints", lambda i, x: str(int(x))),
        ("exponent", lambda i, x: f"{x:e}" if i % 2 else f"{x:E}"),
        ("long", lambda i, x: f"{x:.25f}"),
        ("repr", lambda i, x: repr(x)),
    ],
)
def test_number_forms_take_the_fast_path_and_read_as_float(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, fmt: object
) -> None:
    out = []
    for i in range(30):
        t = T0 + i * STEP
        o, c = 1000.0 + 3.7 * i, 1001.0 + 3.7 * i
        vals = [o, c + 2, o - 2, c, 5.5 + i]
        f = [fmt(i, x) for x in vals]  # type: ignore[operator]
        out.append(f"{t},{','.join(f)},{t + STEP - 1},{fmt(i, 40.25 * i)},{i},1,2\n")  # type: ignore[operator]
    p = write(tmp_path, f"{name.upper()}-5m.csv", out)
    expected = slow(p)
    no_row_reader(monkeypatch)
    exact(read_klines(p, interval="5m"), expected)


def test_empty_fields_inside_rows_take_the_fast_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """quote_volume / trades empty on some rows only, close_time_ms empty on all, a value in the last
    column: the empty fields are parsed as null (read as 0), nothing is dropped."""
    out = []
    for i in range(25):
        t = T0 + i * STEP
        qv = "" if i % 3 else f"{12.5 * i}"
        tr = "" if i % 4 else str(i)
        out.append(f"{t},10,11,9,10.5,{i},,{qv},{tr},,{i}.5\n")
    p = write(tmp_path, "HOLES-5m.csv.gz", out)
    expected = slow(p)
    no_row_reader(monkeypatch)
    got = read_klines(p, interval="5m")
    exact(got, expected)
    assert got.quote_volume[3] == 37.5
    assert got.quote_volume[1] == 0.0
    assert got.trades[4] == 4
    assert got.trades[1] == 0


def test_no_final_newline_one_row_and_plain_csv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    one = write(tmp_path, "ONE-5m.csv", [rows(1)[0].rstrip("\n")])
    many = write(tmp_path, "MANY-5m.csv", ["".join(rows(9)).rstrip("\n")])
    expected = [slow(one), slow(many)]
    no_row_reader(monkeypatch)
    exact(read_klines(one, interval="5m"), expected[0])
    exact(read_klines(many, interval="5m"), expected[1])
    assert len(read_klines(many, interval="5m")) == 9


def test_a_multi_member_gzip_reads_whole(tmp_path: Path) -> None:
    """`cat a.gz b.gz` is a valid gzip file: both members are read (the one-call zlib path reads one)."""
    lines = rows(12)
    p = tmp_path / "CAT-5m.csv.gz"
    p.write_bytes(
        gzip.compress((HEADER + "".join(lines[:5])).encode()) + gzip.compress("".join(lines[5:]).encode())
    )
    assert len(read_klines(p, interval="5m")) == 12


@pytest.mark.parametrize(
    ("torn", "message"),
    [
        (b"", "empty file, expected a header row"),
        (b"\x1f\x8b", "not a readable klines CSV"),  # a gzip magic only
        (None, "not a readable klines CSV"),  # the tail cut off
        (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xffgarbage", "not a readable klines CSV"),
    ],
)
def test_a_broken_gzip_is_a_clear_error(tmp_path: Path, torn: bytes | None, message: str) -> None:
    p = tmp_path / "BROKEN-5m.csv.gz"
    good = gzip.compress((HEADER + "".join(rows(50))).encode())
    p.write_bytes(good[: len(good) // 2] if torn is None else torn)
    with pytest.raises(KlinesFileError, match=message):
        read_klines(p, interval="5m")


# Field texts the two readers must agree on, value for value or error for error: JSON numbers and
# what JSON refuses but float()/int() read (leading zeros, a bare point, signs), and plain bad values.
FORMS = [
    "1", "2", "10", "0.5", "1.5", "1e1", "1E+1", "15e-1", "01.5", "1.", ".5", "+2", "-0", "-1", "0",
    "0.0", "1.0000000000000000000001", "9007199254740993", "123456789012345678901234567890",
    "1e400", "1e-400", "nan", "inf", "", " 1", "1_0", "0x1", "٣",
]  # fmt: skip


def test_the_fast_path_and_the_row_reader_agree_on_any_field(tmp_path: Path) -> None:
    """A seeded fuzz: random field texts in every column of a row. Either both readers give the same
    arrays bit for bit, or both raise the same error (line, column, value)."""
    import random

    rng = random.Random(12)
    good = rows(6, qv=True)
    for case in range(400):
        lines = list(good)
        at = rng.randrange(len(lines))
        fields = lines[at].rstrip("\n").split(",")
        for _ in range(rng.randint(1, 3)):
            col = rng.randrange(len(fields))
            if col == 0 or col == 6:  # keep the times consistent sometimes, or replace them
                choice = rng.choice(
                    [fields[col], fields[col] + ".0", f"{fields[col]}e0", "0" + fields[col], ""]
                )
            else:
                choice = rng.choice(FORMS)
            fields[col] = choice
        lines[at] = ",".join(fields) + "\n"
        p = write(tmp_path, f"F{case}-5m.csv", lines)
        try:
            expected: klines_csv.CandleArrays | KlinesFileError = slow(p)
        except KlinesFileError as e:
            expected = e
        if isinstance(expected, KlinesFileError):
            with pytest.raises(KlinesFileError) as err:
                read_klines(p, interval="5m")
            got = (err.value.line, err.value.column, err.value.value)
            assert got == (expected.line, expected.column, expected.value), lines[at]
        else:
            exact(read_klines(p, interval="5m"), expected)
