"""Secrets come only from the environment and never show in a repr, str or format."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from futures_actor.core.config import default_config, load_config_bytes
from futures_actor.core.secrets import MASK, Secret, Secrets, load_dotenv, parse_dotenv

KEY = "k3y-AbCdEf0123456789"
SECRET = "s3cr3t-ZyXwVu9876543210"
TOKEN = "123456:tg-T0k3n-value"


class TestSecret:
    """A Secret hides its value everywhere but `reveal()`."""

    def test_hidden_in_repr_str_format(self) -> None:
        s = Secret(KEY)
        assert KEY not in repr(s)
        assert str(s) == MASK
        assert f"{s}" == MASK
        assert f"{s!r}" == "Secret(***)"
        assert s.reveal() == KEY

    def test_cannot_be_pickled(self) -> None:
        with pytest.raises(TypeError, match="cannot be pickled"):
            pickle.dumps(Secret(KEY))

    def test_empty_is_false(self) -> None:
        assert not Secret("")
        assert Secret("x")


class TestSecretsFromEnv:
    """The config names the variables; the values come from the environment only."""

    def test_reads_named_variables(self) -> None:
        env = {"BINANCE_API_KEY": KEY, "BINANCE_API_SECRET": SECRET, "TELEGRAM_BOT_TOKEN": TOKEN}
        secrets = Secrets.from_env(default_config(), env)
        assert secrets.api_key.reveal() == KEY
        assert secrets.api_secret.reveal() == SECRET
        assert sorted(secrets.values()) == sorted([KEY, SECRET, TOKEN])
        shown = repr(secrets)
        for value in (KEY, SECRET, TOKEN):
            assert value not in shown

    def test_custom_variable_names(self) -> None:
        cfg = load_config_bytes(b'{"exchange": {"api_key_env": "MY_KEY", "api_secret_env": "MY_SECRET"}}')
        secrets = Secrets.from_env(cfg, {"MY_KEY": KEY, "BINANCE_API_KEY": "other"})
        assert secrets.api_key.reveal() == KEY
        assert not secrets.api_secret

    def test_missing_is_empty(self) -> None:
        secrets = Secrets.from_env(default_config(), {})
        assert secrets.values() == []

    def test_config_file_cannot_hold_a_secret(self) -> None:
        with pytest.raises(ValueError, match=r"config key exchange.api_secret: unknown key"):
            load_config_bytes(b'{"exchange": {"api_secret": "x"}}')


class TestDotenv:
    """`.env` parsing; the process environment wins."""

    def test_parse(self) -> None:
        text = "\n".join(
            [
                "# comment",
                "export A=1",
                "B = 'two words'",
                'C="quoted # not a comment"',
                "D=value # trailing comment",
                "no_equals_line",
                "",
            ]
        )
        assert parse_dotenv(text) == {"A": "1", "B": "two words", "C": "quoted # not a comment", "D": "value"}

    def test_load_does_not_override(self, tmp_path: Path) -> None:
        env_file = tmp_path / ".env"
        env_file.write_text(f"BINANCE_API_KEY={KEY}\nBINANCE_API_SECRET={SECRET}\n", encoding="utf-8")
        environ = {"BINANCE_API_KEY": "already-set"}
        loaded = load_dotenv(env_file, environ)
        assert loaded == ["BINANCE_API_SECRET"]
        assert environ == {"BINANCE_API_KEY": "already-set", "BINANCE_API_SECRET": SECRET}

    def test_missing_file_is_nothing(self, tmp_path: Path) -> None:
        assert load_dotenv(tmp_path / "absent.env", {}) == []
