"""The `features` command and the klines CSV reader it shares with the replay."""

from __future__ import annotations

import csv
import gzip
import io
from pathlib import Path

import numpy as np
import pytest
import talib

from futures_actor.core.config import BotConfig
from futures_actor.core.features import compute_features
from futures_actor.core.regime import detect_regime
from futures_actor.data.klines_csv import KlinesFileError, read_klines, read_klines_candles
from futures_actor.tools.features_cmd import OUTPUT_COLUMNS, run_features

N_5M = 3_000
N_1H = 260


def real_lines(sample_dir: Path, name: str, n: int) -> list[str]:
    with gzip.open(sample_dir / name, "rt", encoding="utf-8") as fh:
        return [next(fh) for _ in range(n + 1)]  # header + n rows


@pytest.fixture
def inputs(tmp_path: Path, sample_dir: Path) -> tuple[Path, Path]:
    five = tmp_path / "BTCUSDT-5m.csv.gz"
    hour = tmp_path / "BTCUSDT-1h.csv"  # plain CSV: gzip is chosen by extension
    with gzip.open(five, "wt", encoding="utf-8") as fh:
        fh.writelines(real_lines(sample_dir, "BTCUSDT-5m.csv.gz", N_5M))
    hour.write_text("".join(real_lines(sample_dir, "BTCUSDT-1h.csv.gz", N_1H)), encoding="utf-8")
    return five, hour


def run(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    code = run_features(argv, stderr=err)
    return code, err.getvalue()


def read_out(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return rows


class TestFeaturesCommand:
    """One row per closed 5m candle, computed by the live engine + regime, empty before warm-up."""

    def test_writes_every_candle_with_live_path_values(
        self, inputs: tuple[Path, Path], tmp_path: Path
    ) -> None:
        five, hour = inputs
        out = tmp_path / "out.csv"
        code, err = run(["--klines", str(five), "--trend-klines", str(hour), "--out", str(out)])
        assert (code, err) == (0, "")
        with open(out, encoding="utf-8") as fh:
            assert fh.readline().rstrip("\n").split(",") == list(OUTPUT_COLUMNS)
        rows = read_out(out)
        assert len(rows) == N_5M
        candles = read_klines_candles(five, interval="5m")
        assert [int(r["open_time_ms"]) for r in rows] == [c.open_time_ms for c in candles]
        # warm-up: nothing defined on the first candle, regime WARMUP
        assert rows[0]["rsi"] == rows[0]["adx"] == rows[0]["ema20_1h"] == ""
        assert (rows[0]["regime"], rows[0]["regime_reason"]) == ("CHOP_NO_TRADE", "WARMUP")
        # the same values as the engine + regime function, float for float
        steps = compute_features(
            symbol="BTCUSDT",
            config=BotConfig(),
            candles_5m=candles,
            candles_1h=read_klines_candles(hour, interval="1h"),
        )
        for row, step in zip(rows[-500:], steps[-500:]):
            f = step.features
            assert f is not None
            assert f.warm
            for col in OUTPUT_COLUMNS[1:14]:
                assert float(row[col]) == getattr(f, col), col
            r = detect_regime(f, BotConfig())
            assert row["regime"] == r.regime.value
            assert row["regime_reason"] == r.reason
            assert float(row["regime_confidence"]) == r.confidence
            assert row["direction"] == ("" if r.direction is None else r.direction.value)
        close = np.array([c.close for c in candles])
        rsi = np.array([float(r["rsi"]) if r["rsi"] else np.nan for r in rows])
        ref = talib.RSI(close, 14)
        assert np.array_equal(np.isnan(rsi), np.isnan(ref))
        assert np.allclose(rsi[14:], ref[14:], rtol=1e-12, atol=0)
        assert {r["regime"] for r in rows} >= {"TREND", "CHOP_NO_TRADE"}

    def test_gap_in_file_restarts_and_warns(
        self, inputs: tuple[Path, Path], tmp_path: Path, sample_dir: Path
    ) -> None:
        _, hour = inputs
        lines = real_lines(sample_dir, "BTCUSDT-5m.csv.gz", 400)
        gapped = tmp_path / "gap-5m.csv"
        gapped.write_text("".join(lines[:301] + lines[311:]), encoding="utf-8")  # rows 300..309 missing
        out = tmp_path / "out.csv"
        code, err = run(["--klines", str(gapped), "--trend-klines", str(hour), "--out", str(out)])
        assert code == 0
        assert "gap" in err
        assert "10 candles missing" in err
        rows = read_out(out)
        assert len(rows) == 390  # no row dropped
        assert rows[299]["rsi"] != ""
        assert rows[300]["rsi"] == ""  # restarted after the gap: warm-up again
        assert rows[300]["regime_reason"] == "WARMUP"

    def test_config_is_used(self, inputs: tuple[Path, Path], tmp_path: Path) -> None:
        five, hour = inputs
        conf = tmp_path / "c.json"
        conf.write_text('{"regime": {"confidence_threshold": 1.0}}', encoding="utf-8")
        out = tmp_path / "out.csv"
        assert (
            run(
                ["--klines", str(five), "--trend-klines", str(hour), "--config", str(conf), "--out", str(out)]
            )[0]
            == 0
        )
        regimes = {r["regime"] for r in read_out(out)}
        assert "RANGE" not in regimes  # nothing reaches confidence 1.0 in a range


class TestFeaturesCommandErrors:
    """Exit code 2 and one clear message on stderr for bad arguments or input."""

    def test_missing_argument(self) -> None:
        code, err = run(["--klines", "a.csv"])
        assert code == 2
        assert "futures_actor features" in err
        assert "--trend-klines" in err

    def test_help_exits_zero(self, capsys: pytest.CaptureFixture[str]) -> None:
        assert run(["--help"])[0] == 0
        assert "--trend-klines" in capsys.readouterr().out

    def test_missing_file(self, tmp_path: Path, inputs: tuple[Path, Path]) -> None:
        _, hour = inputs
        code, err = run(
            [
                "--klines",
                str(tmp_path / "nope.csv"),
                "--trend-klines",
                str(hour),
                "--out",
                str(tmp_path / "o.csv"),
            ]
        )
        assert code == 2
        assert "nope.csv" in err
        assert not (tmp_path / "o.csv").exists()

    def test_bad_row_names_file_line_column(
        self, tmp_path: Path, inputs: tuple[Path, Path], sample_dir: Path
    ) -> None:
        _, hour = inputs
        lines = real_lines(sample_dir, "BTCUSDT-5m.csv.gz", 10)
        fields = lines[4].split(",")
        fields[2] = "abc"
        lines[4] = ",".join(fields)
        bad = tmp_path / "bad-5m.csv"
        bad.write_text("".join(lines), encoding="utf-8")
        code, err = run(["--klines", str(bad), "--trend-klines", str(hour), "--out", str(tmp_path / "o.csv")])
        assert code == 2
        assert "bad-5m.csv line 5 column high" in err
        assert "'abc'" in err

    def test_bad_config(self, tmp_path: Path, inputs: tuple[Path, Path]) -> None:
        five, hour = inputs
        conf = tmp_path / "c.json"
        conf.write_text('{"regime": {"trend_adx_min": 500}}', encoding="utf-8")
        code, err = run(
            [
                "--klines",
                str(five),
                "--trend-klines",
                str(hour),
                "--config",
                str(conf),
                "--out",
                str(tmp_path / "o.csv"),
            ]
        )
        assert code == 2
        assert "regime.trend_adx_min" in err

    def test_out_in_a_missing_directory_creates_it(self, tmp_path: Path, inputs: tuple[Path, Path]) -> None:
        """Issue 13 review #4: `--out results/new/btc.csv` creates `results/new` (like --log-dir) and says so."""
        five, hour = inputs
        out = tmp_path / "no" / "dir" / "o.csv"
        code, err = run(["--klines", str(five), "--trend-klines", str(hour), "--out", str(out)])
        assert code == 0, err
        assert err == f"futures_actor features: created directory {out.parent}\n"
        assert len(read_out(out)) == N_5M
        assert [p.name for p in out.parent.iterdir()] == ["o.csv"]  # no temp file left

    def test_unwritable_output_names_the_path_before_computing(
        self, tmp_path: Path, inputs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A directory that cannot be created (a file is in the way): exit 2, the path named, no work done."""
        import futures_actor.tools.features_cmd as cmd

        def never(**_: object) -> list[object]:
            raise AssertionError("features computed although the output cannot be written")

        monkeypatch.setattr(cmd, "compute_features", never)
        five, hour = inputs
        (tmp_path / "afile").write_text("x", encoding="utf-8")
        out = tmp_path / "afile" / "dir" / "o.csv"
        code, err = run(["--klines", str(five), "--trend-klines", str(hour), "--out", str(out)])
        assert code == 2
        assert err.startswith(f"futures_actor features: error: --out {out}: cannot create the directory ")
        assert str(tmp_path / "afile") in err

    def test_out_is_a_directory(self, tmp_path: Path, inputs: tuple[Path, Path]) -> None:
        five, hour = inputs
        code, err = run(["--klines", str(five), "--trend-klines", str(hour), "--out", str(tmp_path)])
        assert code == 2
        assert f"--out {tmp_path}: is a directory (expected a file path)" in err


HEADER = "open_time_ms,open,high,low,close,volume,close_time_ms,quote_volume,trades,taker_buy_base,taker_buy_quote\n"
ROW0 = "1735603200000,92759.3,92819.7,92680.3,92755.5,547.689,1735603499999,,,,\n"
ROW1 = "1735603500000,92755.6,92875.4,92715.6,92835,310.319,1735603799999,1000.5,42,,\n"


class TestKlinesReader:
    """Rows are validated with errors naming file, line, column, value and expectation."""

    def write(self, tmp_path: Path, *rows: str) -> Path:
        p = tmp_path / "k.csv"
        p.write_text(HEADER + "".join(rows), encoding="utf-8")
        return p

    def test_reads_rows_and_empty_optional_columns(self, tmp_path: Path) -> None:
        a = read_klines(self.write(tmp_path, ROW0, ROW1), interval="5m")
        assert a.open_time_ms.tolist() == [1735603200000, 1735603500000]
        assert a.close.tolist() == [92755.5, 92835.0]
        assert a.quote_volume.tolist() == [0.0, 1000.5]
        assert a.trades.tolist() == [0, 42]

    def test_limit(self, tmp_path: Path) -> None:
        assert len(read_klines(self.write(tmp_path, ROW0, ROW1), interval="5m", limit=1)) == 1

    @pytest.mark.parametrize(
        ("row", "column", "expected"),
        [
            (ROW1.replace("92755.6", "nan"), "open", "finite price"),
            (ROW1.replace("92755.6", "-1"), "open", "finite price"),
            (ROW1.replace("310.319", "-3"), "volume", "volume >= 0"),
            (ROW1.replace("92875.4", "92800"), "high", "max(open, close)"),
            (ROW1.replace("92715.6", "92760"), "low", "min(open, close)"),
            (ROW1.replace("1735603799999", "1735603799000"), "close_time_ms", "1735603799999"),
            (ROW1.replace("1735603500000", "1735603500001"), "open_time_ms", "multiple"),
            (ROW0, "open_time_ms", "strictly increasing"),
            (ROW1.replace(",42,", ",x,"), "trades", "integer"),
        ],
    )
    def test_bad_row(self, tmp_path: Path, row: str, column: str, expected: str) -> None:
        p = self.write(tmp_path, ROW0, row)
        with pytest.raises(KlinesFileError) as info:
            read_klines(p, interval="5m")
        e = info.value
        assert (e.line, e.column) == (3, column)
        assert f"{p} line 3 column {column}" in str(e)
        assert expected in str(e)

    def test_wrong_field_count(self, tmp_path: Path) -> None:
        with pytest.raises(KlinesFileError, match="line 2: 3 fields"):
            read_klines(self.write(tmp_path, "1,2,3\n"), interval="5m")

    def test_missing_header_column(self, tmp_path: Path) -> None:
        p = tmp_path / "k.csv"
        p.write_text("open_time_ms,open,high,low,close\n", encoding="utf-8")
        with pytest.raises(KlinesFileError, match="volume") as info:
            read_klines(p, interval="5m")
        assert info.value.line == 1

    def test_not_gzip(self, tmp_path: Path) -> None:
        p = tmp_path / "k.csv.gz"
        p.write_text(HEADER + ROW0, encoding="utf-8")
        with pytest.raises(KlinesFileError, match="not a readable klines CSV"):
            read_klines(p, interval="5m")

    def test_empty_and_unknown_interval(self, tmp_path: Path) -> None:
        p = tmp_path / "e.csv"
        p.write_text("", encoding="utf-8")
        with pytest.raises(KlinesFileError, match="empty"):
            read_klines(p, interval="5m")
        with pytest.raises(KlinesFileError, match="interval"):
            read_klines(p, interval="2m")

    def test_every_real_file_reads(self, sample_dir: Path) -> None:
        """Every bundled 1h file passes validation (the 5m ones are read by other tests): 60 days of
        4 + 6 symbols, and the 34-day INJUSDT stress slice."""
        files = sorted(sample_dir.rglob("*-1h.csv.gz"))
        assert len(files) == 11
        for f in files:
            a = read_klines(f, interval="1h")
            assert len(a) == (816 if f.parent.name == "stress" else 1_440)
            assert np.all(np.diff(a.open_time_ms) == 3_600_000)
