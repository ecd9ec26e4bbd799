"""The local state store: one SQLite file in WAL mode (BOT_SPEC §10).

It owns the durable picture the bot resumes from after a crash: trade lifecycle snapshots, every client
order id ever sent, and opaque msgspec-encoded state objects (risk state, strategy selection, paper
account) keyed by kind and name, plus a meta table with the schema version.

Policy:
- One transaction per change (`transaction()` groups several writes into one); `synchronous=FULL`, so a
  committed change survives a power cut and an uncommitted one leaves nothing behind.
- A client id is recorded BEFORE its order is sent; the primary key on `sent_cids.cid` makes a second
  send of the same id impossible, across restarts too (`DuplicateClientOrderId`).
- The schema is versioned: an older file is migrated step by step in one transaction; a newer version,
  a corrupt file or an undecodable row is a `StateStoreError` naming the file and the problem. The file
  is never silently replaced.
- Synchronous and fast: the execution actor calls it directly after every lifecycle transition.
"""

from __future__ import annotations

import enum
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Final, Self, TypeVar

import msgspec

from futures_actor.core.config import StateConfig
from futures_actor.core.lifecycle import (
    Command,
    LifecycleError,
    LifecycleState,
    Phase,
    PlaceAlgoOrder,
    PlaceOrder,
    decode_state,
    encode_state,
)
from futures_actor.core.types import OrderRole

__all__ = [
    "SCHEMA_VERSION",
    "BlobKind",
    "DuplicateClientOrderId",
    "SentClientId",
    "StateStore",
    "StateStoreError",
]

SCHEMA_VERSION: Final = 2
_T = TypeVar("_T")

_V1_SCHEMA: Final = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE lifecycles (trade_id TEXT PRIMARY KEY, symbol TEXT NOT NULL, status TEXT NOT NULL,"
    " updated_ms INTEGER NOT NULL, snapshot BLOB NOT NULL)",
    "CREATE TABLE sent_cids (cid TEXT PRIMARY KEY, trade_id TEXT NOT NULL, role TEXT NOT NULL,"
    " attempt INTEGER NOT NULL, sent_ms INTEGER NOT NULL)",
    "CREATE TABLE kv_state (name TEXT PRIMARY KEY, data BLOB NOT NULL)",
)
# v1 -> v2: opaque state objects get a kind (risk / selection / paper) and an update time.
_MIGRATIONS: Final[dict[int, tuple[str, ...]]] = {
    1: (
        "CREATE TABLE blobs (kind TEXT NOT NULL, name TEXT NOT NULL, data BLOB NOT NULL,"
        " updated_ms INTEGER NOT NULL, PRIMARY KEY (kind, name))",
        "INSERT INTO blobs (kind, name, data, updated_ms) SELECT 'risk', name, data, 0 FROM kv_state",
        "DROP TABLE kv_state",
        "CREATE INDEX IF NOT EXISTS lifecycles_status ON lifecycles (status)",
        "CREATE INDEX IF NOT EXISTS sent_cids_trade ON sent_cids (trade_id)",
    ),
}


class StateStoreError(Exception):
    """The state file cannot be used (corrupt, newer schema, undecodable row)."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"state store {path}: {problem}")
        self.path = path
        self.problem = problem


class DuplicateClientOrderId(StateStoreError):
    """A client order id was already recorded as sent: the order must not be sent again."""

    def __init__(self, path: Path, cid: str) -> None:
        super().__init__(path, f"client order id {cid!r} was already sent")
        self.cid = cid


class BlobKind(enum.StrEnum):
    RISK = "risk"
    SELECTION = "selection"
    PAPER = "paper"


class SentClientId(msgspec.Struct, frozen=True, kw_only=True):
    cid: str
    trade_id: str
    role: OrderRole
    attempt: int
    sent_ms: int


class StateStore:
    """The SQLite state file. Open with `StateStore.open(path)` or `from_config`; close when done."""

    def __init__(self, *, path: Path, conn: sqlite3.Connection, durable: bool = True) -> None:
        self._path = path
        self._conn = conn
        self._depth = 0
        self._durable = durable

    # ---- opening

    @classmethod
    def from_config(cls, cfg: StateConfig) -> StateStore:
        return cls.open(Path(cfg.state_dir) / cfg.db_file)

    @classmethod
    def open(cls, path: Path, *, durable: bool = True) -> StateStore:
        """Open (creating or migrating) the state file; `StateStoreError` if it cannot be used.

        `durable=False` (replay only: a simulated account that is thrown away) skips the fsync per
        transaction; live and paper trading always run durable.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(path, isolation_level=None)
        except sqlite3.Error as exc:
            raise StateStoreError(path, f"cannot open: {exc}") from None
        store = cls(path=path, conn=conn, durable=durable)
        try:
            store._init()
        except StateStoreError:
            conn.close()
            raise
        except sqlite3.Error as exc:
            conn.close()
            raise StateStoreError(path, f"not a usable SQLite state file ({exc})") from None
        return store

    def _init(self) -> None:
        c = self._conn
        mode = c.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StateStoreError(self._path, f"journal mode is {mode!r}, expected 'wal'")
        c.execute("PRAGMA synchronous=FULL" if self._durable else "PRAGMA synchronous=OFF")
        check = c.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise StateStoreError(self._path, f"integrity check failed: {check}")
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables:
            with self.transaction():
                for sql in _V1_SCHEMA:
                    c.execute(sql)
                c.execute("INSERT INTO meta (key, value) VALUES ('schema_version', '1')")
                self._migrate_from(1)
            return
        if "meta" not in tables:
            raise StateStoreError(
                self._path, f"no meta table (tables: {sorted(tables)}); not a futures-actor state file"
            )
        row = c.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        try:
            version = int(row[0]) if row is not None else -1
        except ValueError:
            version = -1
        if version < 1:
            raise StateStoreError(
                self._path, f"schema_version {row[0] if row else None!r} is not a version >= 1"
            )
        if version > SCHEMA_VERSION:
            raise StateStoreError(
                self._path,
                f"schema version {version} is newer than this program's {SCHEMA_VERSION}; upgrade the bot",
            )
        if version < SCHEMA_VERSION:
            with self.transaction():
                self._migrate_from(version)

    def _migrate_from(self, version: int) -> None:
        for v in range(version, SCHEMA_VERSION):
            for sql in _MIGRATIONS[v]:
                self._conn.execute(sql)
        self._conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION),))

    @property
    def path(self) -> Path:
        return self._path

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ---- transactions

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic change; nested uses join the outer transaction. Rolled back on any exception."""
        if self._depth > 0:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self._conn.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield
        except BaseException:
            self._depth = 0
            self._conn.execute("ROLLBACK")
            raise
        self._depth = 0
        self._conn.execute("COMMIT")

    # ---- meta

    def schema_version(self) -> int:
        row = self._conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        return int(row[0])

    def get_meta(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        if key == "schema_version":
            raise StateStoreError(self._path, "schema_version is owned by the migrations, not set_meta")
        with self.transaction():
            self._conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # ---- lifecycles

    def save_lifecycle(self, state: LifecycleState, *, now_ms: int) -> None:
        with self.transaction():
            self._conn.execute(
                "INSERT OR REPLACE INTO lifecycles (trade_id, symbol, status, updated_ms, snapshot)"
                " VALUES (?, ?, ?, ?, ?)",
                (state.plan.trade_id, state.plan.symbol, state.phase.value, now_ms, encode_state(state)),
            )

    def persist(self, state: LifecycleState, commands: Iterable[Command], *, now_ms: int) -> None:
        """Save the snapshot and record the cid of every placement in `commands`, in one transaction.

        Call it BEFORE carrying the commands out. `DuplicateClientOrderId` (nothing written) means a
        placement would re-send an id: that command must not be sent.
        """
        with self.transaction():
            for cmd in commands:
                if isinstance(cmd, PlaceOrder | PlaceAlgoOrder):
                    attempt = int(cmd.cid.rsplit("-", 1)[-1][1:])
                    self.record_sent_cid(
                        cmd.cid, trade_id=cmd.trade_id, role=cmd.role, attempt=attempt, sent_ms=now_ms
                    )
            self.save_lifecycle(state, now_ms=now_ms)

    def load_lifecycle(self, trade_id: str) -> LifecycleState | None:
        row = self._conn.execute("SELECT snapshot FROM lifecycles WHERE trade_id=?", (trade_id,)).fetchone()
        return None if row is None else self._decode_lifecycle(trade_id, row[0])

    def load_lifecycles(self, *, include_closed: bool = False) -> list[LifecycleState]:
        sql = "SELECT trade_id, snapshot FROM lifecycles"
        params: tuple[str, ...] = ()
        if not include_closed:
            sql += " WHERE status != ?"
            params = (Phase.CLOSED.value,)
        rows = self._conn.execute(sql + " ORDER BY updated_ms, trade_id", params).fetchall()
        return [self._decode_lifecycle(tid, blob) for tid, blob in rows]

    def _decode_lifecycle(self, trade_id: str, blob: bytes) -> LifecycleState:
        try:
            return decode_state(bytes(blob))
        except LifecycleError as exc:
            raise StateStoreError(self._path, f"lifecycle {trade_id}: {exc}") from None

    # ---- sent client ids

    def record_sent_cid(
        self, cid: str, *, trade_id: str, role: OrderRole, attempt: int, sent_ms: int
    ) -> None:
        """Record `cid` as sent; `DuplicateClientOrderId` if it already was (then it must not be sent)."""
        try:
            with self.transaction():
                self._conn.execute(
                    "INSERT INTO sent_cids (cid, trade_id, role, attempt, sent_ms) VALUES (?, ?, ?, ?, ?)",
                    (cid, trade_id, role.value, attempt, sent_ms),
                )
        except sqlite3.IntegrityError:
            raise DuplicateClientOrderId(self._path, cid) from None

    def is_cid_sent(self, cid: str) -> bool:
        return self._conn.execute("SELECT 1 FROM sent_cids WHERE cid=?", (cid,)).fetchone() is not None

    def sent_cids(self, trade_id: str | None = None) -> list[SentClientId]:
        sql = "SELECT cid, trade_id, role, attempt, sent_ms FROM sent_cids"
        rows = (
            self._conn.execute(sql + " WHERE trade_id=? ORDER BY sent_ms, cid", (trade_id,))
            if trade_id is not None
            else self._conn.execute(sql + " ORDER BY sent_ms, cid")
        ).fetchall()
        return [
            SentClientId(cid=c, trade_id=t, role=OrderRole(r), attempt=a, sent_ms=s) for c, t, r, a, s in rows
        ]

    # ---- opaque state objects

    def put_blob(self, kind: BlobKind, name: str, data: bytes, *, now_ms: int) -> None:
        with self.transaction():
            self._conn.execute(
                "INSERT OR REPLACE INTO blobs (kind, name, data, updated_ms) VALUES (?, ?, ?, ?)",
                (kind.value, name, data, now_ms),
            )

    def get_blob(self, kind: BlobKind, name: str) -> bytes | None:
        row = self._conn.execute(
            "SELECT data FROM blobs WHERE kind=? AND name=?", (kind.value, name)
        ).fetchone()
        return None if row is None else bytes(row[0])

    def save_struct(self, kind: BlobKind, name: str, obj: msgspec.Struct, *, now_ms: int) -> None:
        """Store a msgspec Struct (risk state, selection state, paper account) msgpack-encoded."""
        self.put_blob(kind, name, msgspec.msgpack.encode(obj), now_ms=now_ms)

    def load_struct(self, kind: BlobKind, name: str, type_: type[_T]) -> _T | None:
        data = self.get_blob(kind, name)
        if data is None:
            return None
        try:
            return msgspec.msgpack.decode(data, type=type_)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise StateStoreError(self._path, f"{kind.value} state {name!r}: {exc}") from None
