"""The command line (`python -m futures_actor ...`): parse, validate the config, dispatch.

This module owns argument parsing, the choice of mode, config file resolution and exit codes:
0 ok, 2 usage or config error (nothing has connected anywhere yet), 1 runtime failure. The bot itself
runs in `futures_actor.replay_run.run_replay(options)` (a replay, under trio's mock clock) or
`futures_actor.live_run.run_live(options)` under `trio.run`; the tool commands live in
`futures_actor.tools.*` and are imported only when called, so a missing tool cannot break the CLI.

Mode rule (BOT_SPEC §13): LIVE needs both `"mode": "LIVE"` in the config and `--live`. `--live` with a
PAPER_LIVE config is refused (exit 2); a LIVE config without `--live` runs PAPER_LIVE with a warning.

Operator kill switch: `kill` writes `<state_dir>/control/kill` (JSON: time and reason); the running bot
watches for it, flattens every position and stops entering. `resume` removes the file.

Config file and paths: `--config PATH`, else `config/config.json`, else `config/config.example.json` (in the
working directory), else the example config shipped inside the package (every key at its default), so the
console script runs from any directory. Relative `state.state_dir` and `logging.log_dir` of a config file are
resolved against the config's base directory (`config_base_dir`), never the working directory, so the bot
and a `kill`/`resume` run from elsewhere with the same `--config` agree on the state directory.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from futures_actor import __version__
from futures_actor.control import EXIT_CONFIG, EXIT_OK, EXIT_RUNTIME, KILL_FILE, RunOptions, kill_file_path
from futures_actor.core.clock import SystemWallClock, iso_utc
from futures_actor.core.config import BotConfig, ConfigError, Mode, config_to_dict, load_config
from futures_actor.core.secrets import MASK, Secrets, load_dotenv

if TYPE_CHECKING:
    import trio
from futures_actor.logs import redact, register_secrets

__all__ = [
    "DEFAULT_CONFIG",
    "EXAMPLE_CONFIG",
    "EXIT_CONFIG",
    "EXIT_OK",
    "EXIT_RUNTIME",
    "RunOptions",
    "build_parser",
    "kill_file_path",
    "main",
    "resolve_run_options",
]

DEFAULT_CONFIG = Path("config/config.json")
EXAMPLE_CONFIG = Path("config/config.example.json")
PACKAGED_EXAMPLE_NAME = "config.example.json"
HEALTHCHECK_TIMEOUT_S = 4.0  # below the container HEALTHCHECK's --timeout=5s
HTTP_OK = 200
CONFIG_DIR_NAME = "config"
DEFAULT_ENV_FILE = Path(".env")

# Tool subcommands: (module, function). Each function takes the remaining argv and returns an exit code.
TOOLS: dict[str, tuple[str, str]] = {
    "features": ("futures_actor.tools.features_cmd", "run_features"),
    "download-klines": ("futures_actor.tools.download_klines", "run_download_klines"),
    "sim-exchange": ("futures_actor.tools.sim_exchange_cmd", "run_sim_exchange"),
    "preflight": ("futures_actor.preflight", "run_preflight"),
}


class UsageError(Exception):
    """A command line that cannot be run as given (exit 2)."""


def packaged_example_config() -> Path:
    """The example config shipped inside the package (equal to `config/config.example.json`)."""
    return Path(__file__).resolve().parent / PACKAGED_EXAMPLE_NAME


def config_base_dir(config_path: Path) -> Path:
    """The directory that relative paths in the config file `config_path` are resolved against.

    For `<dir>/config/<name>.json` (the layout of this repository and of the container) it is `<dir>`;
    for any other file, the directory holding it; for the example shipped in the package (used when
    there is no config file at all), the working directory. Relative in, relative out (`config/config.json`
    gives `.`), so paths stay as short as the operator wrote them.
    """
    if config_path.resolve() == packaged_example_config():
        return Path()
    parent = config_path.parent
    return parent.parent if parent.name == CONFIG_DIR_NAME else parent


def resolve_config_dir(value: str, config_path: Path) -> Path:
    """A directory named in the config (`state.state_dir`, `logging.log_dir`): `~` expanded, and a
    relative path taken from `config_base_dir(config_path)`."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else config_base_dir(config_path) / path


# ---------------------------------------------------------------------------------------------- parser

_EPILOG = """\
commands:
  (none)                 run the bot (paper unless --live and the config says LIVE)
  check-config [PATH]    validate a config file and print the effective config as JSON (secrets masked)
  features ...           compute features over recorded klines (see `features --help`)
  download-klines ...    download klines from Binance public endpoints (see `download-klines --help`)
  sim-exchange ...       run the simulated Binance exchange on 127.0.0.1 (see `sim-exchange --help`)
  preflight [--testnet]  check the account is safe for live trading (key, permissions, modes, balance,
                         margin/leverage, brackets, positions and orders, rate limits); 0 only when safe
  report LOG_DIR         render LOG_DIR/report.html from the run's files (a replay's run directory or
                         a live log directory with daily trades files); --output PATH to write elsewhere
  kill [--reason TEXT]   engage the operator kill switch: writes <state_dir>/control/kill; the running
                         bot cancels working orders, closes every position and stops entering
  resume                 remove <state_dir>/control/kill

config: --config PATH, else config/config.json, else config/config.example.json, else the example shipped
with the package (with a warning). Relative state/log dirs of a config file are taken from its directory
(the one above it when that is named config/), so kill/resume find the bot from any working directory.
secrets: only from the environment (a .env file in the working directory is read; it never overrides
variables already set): the variable names are in the config (exchange.api_key_env, ...).
exit codes: 0 ok, 2 usage or configuration error (nothing was sent anywhere), 1 runtime failure.
"""


def _add_common(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    default: Any = argparse.SUPPRESS if suppress else None
    parser.add_argument(
        "--config",
        metavar="PATH",
        type=Path,
        default=default,
        help="config file (default: config/config.json, else config/config.example.json, else the example "
        "shipped with the package)",
    )
    parser.add_argument(
        "--state-dir",
        metavar="DIR",
        type=Path,
        default=default,
        help="state directory (default: state.state_dir; relative to the config's directory, or to the "
        "directory above it when that is named config/)",
    )
    parser.add_argument(
        "--log-dir",
        metavar="DIR",
        type=Path,
        default=default,
        help="log directory (default: logging.log_dir, relative as for --state-dir; a replay: "
        "a new replay-YYYYMMDD-HHMMSS directory in it)",
    )
    parser.add_argument(
        "--env-file",
        metavar="PATH",
        type=Path,
        default=default,
        help="dotenv file with the secrets (default: .env; variables already set win)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="futures-actor",
        description="Binance USDT-M perpetual futures trading bot (actor model on trio).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common(parser, suppress=False)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--paper", action="store_true", help="paper trading on live market data (PAPER_LIVE)")
    mode.add_argument(
        "--live", action="store_true", help='trade real money; refused unless the config says "mode": "LIVE"'
    )
    parser.add_argument("--testnet", action="store_true", help="use Binance's futures testnet hosts")
    parser.add_argument(
        "--replay",
        metavar="DIR",
        type=Path,
        help="paper mode fed by recorded klines from DIR (simulated clock)",
    )
    parser.add_argument(
        "--timerange",
        metavar="START:END",
        help="replay only the 5m candles from START (00:00 UTC, inclusive) to END (00:00 UTC, exclusive); "
        "dates as YYYY-MM-DD, either side may be empty (e.g. 2025-01-01:2025-03-01, 2025-02-01:)",
    )
    parser.add_argument(
        "--symbols",
        metavar="SYM,SYM",
        help="replay only these symbols of the replay directory (e.g. BTCUSDT,ETHUSDT)",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no console log output (events.jsonl is still written; a replay still prints its summary)",
    )
    parser.add_argument(
        "--fresh-state",
        action="store_true",
        help="start with a new state file on purpose although the state file is missing or empty while "
        "the trade log (or, live, the exchange) shows earlier trading (refused without this flag)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    check = sub.add_parser("check-config", help="validate a config file and print the effective config")
    check.add_argument("path", nargs="?", type=Path, help="config file (default: as for running the bot)")
    _add_common(check, suppress=True)
    kill = sub.add_parser("kill", help="engage the operator kill switch (<state_dir>/control/kill)")
    kill.add_argument("--reason", default="operator", help="recorded in the kill file (default: operator)")
    _add_common(kill, suppress=True)
    resume = sub.add_parser("resume", help="release the operator kill switch")
    _add_common(resume, suppress=True)
    health = sub.add_parser(
        "healthcheck", help="exit 0 if the bot's /health (host and port from the config) answers 200"
    )
    health.add_argument(
        "--timeout",
        type=float,
        default=HEALTHCHECK_TIMEOUT_S,
        help=f"seconds to wait for the answer (default: {HEALTHCHECK_TIMEOUT_S})",
    )
    _add_common(health, suppress=True)
    report = sub.add_parser("report", help="render report.html from a log directory (replay or live)")
    report.add_argument("log_dir_arg", metavar="LOG_DIR", type=Path, help="the run's log directory")
    report.add_argument(
        "--output", metavar="PATH", type=Path, help="where to write the page (default: LOG_DIR/report.html)"
    )
    _add_common(report, suppress=True)
    for name in TOOLS:
        sub.add_parser(name, help=f"tool: {name} (arguments are passed to the tool; try `{name} --help`)")
    return parser


# --------------------------------------------------------------------------------------------- helpers


def _warn(message: str, stderr: TextIO) -> None:
    print(f"futures-actor: warning: {message}", file=stderr)


def _resolve_config_path(explicit: Path | None, stderr: TextIO, warnings: list[str]) -> Path:
    if explicit is not None:
        return explicit
    if DEFAULT_CONFIG.is_file():
        return DEFAULT_CONFIG
    if EXAMPLE_CONFIG.is_file():
        message = f"{DEFAULT_CONFIG} not found; using {EXAMPLE_CONFIG} (every key at its default)"
        path = EXAMPLE_CONFIG
    else:
        path = packaged_example_config()
        message = (
            f"{DEFAULT_CONFIG} not found; using the example config shipped with the package ({path}, every "
            "key at its default; relative paths from the working directory)"
        )
    _warn(message, stderr)
    warnings.append(message)
    return path


_DAY_MS = 86_400_000
_SYMBOL = re.compile(r"^[A-Z0-9]{2,30}$")


def parse_timerange(text: str) -> tuple[int | None, int | None]:
    """`START:END` (dates YYYY-MM-DD, UTC midnight; either side may be empty) as ms; UsageError if bad."""
    start_text, sep, end_text = text.partition(":")
    if not sep:
        raise UsageError(
            f"--timerange {text!r}: expected START:END with dates YYYY-MM-DD (either may be empty)"
        )

    def day_ms(value: str, side: str) -> int | None:
        value = value.strip()
        if not value:
            return None
        try:
            day = datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
        except ValueError:
            raise UsageError(f"--timerange {text!r}: {side} {value!r} is not a date YYYY-MM-DD") from None
        return int(day.timestamp() * 1000)

    start, end = day_ms(start_text, "start"), day_ms(end_text, "end")
    if start is None and end is None:
        raise UsageError(f"--timerange {text!r}: give a start, an end or both (START:END)")
    if start is not None and end is not None and end <= start:
        raise UsageError(f"--timerange {text!r}: the end must be after the start")
    return start, end


def parse_symbols(text: str) -> tuple[str, ...]:
    """`BTCUSDT,ETHUSDT` as a tuple (upper case, no duplicates); UsageError if a name is malformed."""
    names = [part.strip().upper() for part in text.split(",") if part.strip()]
    if not names:
        raise UsageError(f"--symbols {text!r}: expected comma-separated symbols like BTCUSDT,ETHUSDT")
    for name in names:
        if not _SYMBOL.match(name):
            raise UsageError(f"--symbols: {name!r} is not a symbol name (letters and digits, e.g. BTCUSDT)")
    return tuple(dict.fromkeys(names))


def _load_env(env_file: Path | None) -> None:
    load_dotenv(env_file if env_file is not None else DEFAULT_ENV_FILE)


def resolve_run_options(args: argparse.Namespace, stderr: TextIO) -> RunOptions:
    """Load and check the config, decide the mode. Raises `ConfigError` or `UsageError`."""
    warnings: list[str] = []
    config_path = _resolve_config_path(args.config, stderr, warnings)
    cfg = load_config(config_path)
    if args.live and args.replay is not None:
        raise UsageError("--live and --replay cannot be combined (a replay is always paper)")
    mode: Mode
    if args.live:
        if cfg.mode != "LIVE":
            raise UsageError(
                f'--live refused: config {config_path} has "mode": "{cfg.mode}"; '
                'live trading needs "mode": "LIVE" in the config and --live'
            )
        mode = "LIVE"
    else:
        mode = "PAPER_LIVE"
        if cfg.mode == "LIVE":
            message = f'config {config_path} says "mode": "LIVE" but --live was not given; running PAPER_LIVE'
            _warn(message, stderr)
            warnings.append(message)
    if args.replay is not None and not args.replay.is_dir():
        raise UsageError(f"--replay {args.replay}: not a directory")
    for flag, value in (("--timerange", args.timerange), ("--symbols", args.symbols)):
        if value is not None and args.replay is None:
            raise UsageError(f"{flag} applies to a replay only (give --replay DIR)")
    start_ms, end_ms = parse_timerange(args.timerange) if args.timerange is not None else (None, None)
    symbols = parse_symbols(args.symbols) if args.symbols is not None else None
    return RunOptions(
        config=cfg,
        config_path=config_path,
        mode=mode,
        testnet=bool(args.testnet),
        log_dir=_log_dir(args, cfg, config_path),
        state_dir=(
            args.state_dir
            if args.state_dir is not None
            else resolve_config_dir(cfg.state.state_dir, config_path)
        ),
        replay_dir=args.replay,
        replay_start_ms=start_ms,
        replay_end_ms=end_ms,
        replay_symbols=symbols,
        env_file=args.env_file,
        console="quiet" if args.quiet else "auto",
        warnings=tuple(warnings),
        fresh_state=bool(args.fresh_state),
    )


def _log_dir(args: argparse.Namespace, cfg: BotConfig, config_path: Path) -> Path:
    """--log-dir, else `logging.log_dir` (see `resolve_config_dir`); a replay without --log-dir gets its
    own run directory in it, `replay-YYYYMMDD-HHMMSS` (UTC now), so that runs never mix and a second
    run needs no new option."""
    if args.log_dir is not None:
        return Path(args.log_dir)
    base = resolve_config_dir(cfg.logging.log_dir, config_path)
    if args.replay is None:
        return base
    stamp = datetime.fromtimestamp(SystemWallClock().now_ms() / 1000, tz=UTC).strftime("%Y%m%d-%H%M%S")
    return base / f"replay-{stamp}"


def _env_report(cfg: BotConfig) -> dict[str, str]:
    names = [
        cfg.exchange.api_key_env,
        cfg.exchange.api_secret_env,
        cfg.notifications.telegram_token_env,
        cfg.notifications.telegram_chat_id_env,
    ]
    return {name: (MASK if os.environ.get(name) else "(not set)") for name in names}


def _check_config(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    path = args.path if args.path is not None else _resolve_config_path(args.config, stderr, [])
    cfg = load_config(path)
    _load_env(args.env_file)
    report = {
        "config_file": str(path),
        "valid": True,
        "environment": _env_report(cfg),
        "config": config_to_dict(cfg),
    }
    stdout.write(json.dumps(report, indent=2) + "\n")
    return EXIT_OK


def _state_dir_for_control(args: argparse.Namespace, stderr: TextIO) -> Path:
    """The state directory the running bot uses, resolved exactly as `resolve_run_options` does.

    The kill file must land where the running bot looks: a config that cannot be read is an error,
    never a silent fall-back to a default directory; a state directory that does not exist is refused
    (no bot has run with it, so none would see the switch there).
    """
    if args.state_dir is not None:
        state_dir = Path(args.state_dir)
        source = "--state-dir"
    else:
        config_path = _resolve_config_path(args.config, stderr, [])
        state_dir = resolve_config_dir(load_config(config_path).state.state_dir, config_path)
        source = f"state.state_dir of {config_path}"
    if not state_dir.is_dir():
        raise UsageError(
            f"{args.command}: state directory {state_dir.resolve()} ({source}) does not exist: no bot has run "
            "with it, so none would see the kill switch there. Give the running bot's --config or --state-dir "
            "(create the directory first to engage the switch before a bot's first start)."
        )
    return state_dir


def _kill(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    path = kill_file_path(_state_dir_for_control(args, stderr))
    path.parent.mkdir(exist_ok=True)
    body = {"requested_at": iso_utc(SystemWallClock().now_ms()), "reason": args.reason, "pid": os.getpid()}
    tmp = path.with_name(f".{KILL_FILE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(body) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    stdout.write(f"kill switch engaged: wrote {path}\n")
    return EXIT_OK


def _resume(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    path = kill_file_path(_state_dir_for_control(args, stderr))
    try:
        path.unlink()
    except FileNotFoundError:
        stdout.write(f"kill switch was not engaged ({path} absent)\n")
        return EXIT_OK
    stdout.write(f"kill switch released: removed {path}\n")
    return EXIT_OK


def _healthcheck(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    """GET /health of the running bot, on the host and port of the same config the bot reads.

    A wildcard bind address (`0.0.0.0`, `::`) is asked on loopback. Exit 0 on 200, 1 otherwise (503 in
    safe mode, no answer, the server disabled in the config): what a container HEALTHCHECK needs.
    """
    import urllib.error
    import urllib.request

    cfg = load_config(_resolve_config_path(args.config, stderr, [])).health
    if not cfg.http_enabled:
        print("futures-actor: healthcheck: health.http_enabled is false: no /health to ask", file=stderr)
        return EXIT_RUNTIME
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(cfg.http_host, cfg.http_host)
    url = f"http://{f'[{host}]' if ':' in host else host}:{cfg.http_port}/health"
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (OSError, ValueError) as exc:
        print(f"futures-actor: healthcheck: {url} unreachable: {type(exc).__name__}: {exc}", file=stderr)
        return EXIT_RUNTIME
    if status != HTTP_OK:
        print(f"futures-actor: healthcheck: {url}: {status}", file=stderr)
        return EXIT_RUNTIME
    stdout.write(f"{url}: {status}\n")
    return EXIT_OK


def _report(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    from futures_actor.tearsheet import write_report

    cfg = None
    config_path = (
        args.config if args.config is not None else (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
    )
    if config_path is not None:
        cfg = load_config(config_path)
    log_dir = Path(args.log_dir_arg)
    if not log_dir.is_dir():
        print(
            f"futures-actor: report: {log_dir}: not a directory (expected a run's log directory)", file=stderr
        )
        return EXIT_CONFIG
    result = write_report(log_dir, output=args.output, cfg=cfg)
    for problem in result.problems:
        print(f"futures-actor: report: warning: {problem}", file=stderr)
    stdout.write(f"report: {result.path} ({result.size_bytes} bytes, {result.trades} trades)\n")
    return EXIT_OK


def _run_tool(name: str, argv: list[str], stderr: TextIO) -> int:
    module_name, func_name = TOOLS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not module_name.startswith(exc.name):
            raise
        print(
            f"futures-actor: the `{name}` command is not available in this build ({module_name} is missing)",
            file=stderr,
        )
        return EXIT_RUNTIME
    func: Callable[[list[str]], int | None] | None = getattr(module, func_name, None)
    if func is None:
        print(
            f"futures-actor: the `{name}` command is not available ({module_name}.{func_name} is missing)",
            file=stderr,
        )
        return EXIT_RUNTIME
    result = func(argv)
    return EXIT_OK if result is None else int(result)


def replay_clock() -> trio.abc.Clock:
    """trio's MockClock with autojump, imported from where it lives: `trio.testing` re-exports it
    but importing that package imports pytest (~120 ms and test tooling in the bot's process)."""
    try:
        from trio._core import MockClock  # type: ignore[attr-defined]
    except ImportError:  # a trio that moved it: the public path still works
        from trio.testing import MockClock
    return MockClock(autojump_threshold=0)


def _run_bot(options: RunOptions) -> int:
    import trio

    if options.replay_dir is not None:
        from futures_actor import replay_run

        # Replay runs the same actors under trio's mock clock: simulated time jumps whenever every
        # actor is idle, so recorded days pass as fast as the CPU allows, deterministically.
        result = trio.run(replay_run.run_replay, options, clock=replay_clock())
    else:
        from futures_actor import live_run

        result = trio.run(live_run.run_live, options)
    return EXIT_OK if result is None else int(result)


def _redacted(text: str) -> str:
    return redact(text)


# ----------------------------------------------------------------------------------------------- main


def main(
    argv: Sequence[str] | None = None, *, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """Run the command line; returns the exit code (the console script passes it to `sys.exit`)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    if args_list and args_list[0] in TOOLS:
        try:
            return _run_tool(args_list[0], args_list[1:], err)
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else EXIT_CONFIG
        except Exception as exc:
            print(
                f"futures-actor: {args_list[0]} failed: {_redacted(f'{type(exc).__name__}: {exc}')}", file=err
            )
            return EXIT_RUNTIME
    parser = build_parser()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            args = parser.parse_args(args_list)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_CONFIG
    try:
        match args.command:
            case "check-config":
                return _check_config(args, out, err)
            case "kill":
                return _kill(args, out, err)
            case "resume":
                return _resume(args, out, err)
            case "healthcheck":
                return _healthcheck(args, out, err)
            case "report":
                return _report(args, out, err)
            case None:
                _load_env(args.env_file)
                options = resolve_run_options(args, err)
                register_secrets(Secrets.from_env(options.config).values())
                return _run_bot(options)
            case other:
                print(f"futures-actor: unknown command {other!r}", file=err)
                return EXIT_CONFIG
    except ConfigError as exc:
        print(f"futures-actor: configuration refused: {exc}", file=err)
        return EXIT_CONFIG
    except UsageError as exc:
        print(f"futures-actor: {exc}", file=err)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        print("futures-actor: interrupted", file=err)
        return EXIT_RUNTIME
    except Exception as exc:
        print(f"futures-actor: runtime failure: {_redacted(f'{type(exc).__name__}: {exc}')}", file=err)
        return EXIT_RUNTIME
