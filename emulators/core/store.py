"""SQLite state shared by every emulated service, so emulator state survives a restart.

All access happens on the event loop thread of the emulator, so one connection suffices; the lock
guards the odd call from another thread (tests reading state in-process).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from emulators.core import clock

CORE_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS requests (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, ts TEXT NOT NULL, method TEXT NOT NULL, path TEXT NOT NULL,
    query TEXT NOT NULL, service TEXT, operation TEXT, caller TEXT, status INTEGER, duration_ms REAL,
    fault TEXT, wall_ts TEXT);
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, request_seq INTEGER, ts TEXT NOT NULL, kind TEXT NOT NULL,
    subject TEXT NOT NULL, detail TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS faults (
    id INTEGER PRIMARY KEY AUTOINCREMENT, operation TEXT NOT NULL, match TEXT, status INTEGER,
    code TEXT, message TEXT, retry_after REAL, latency_ms REAL NOT NULL DEFAULT 0, mode TEXT,
    remaining INTEGER, hits INTEGER NOT NULL DEFAULT 0, created TEXT NOT NULL);
"""


def utcnow() -> datetime:
    """Now on the emulators' shared clock (emulators/core/clock.py)."""
    return clock.utcnow()


def wall_iso() -> str:
    """Now on the wall clock: the request log's `wall_ts`, for checks that time clients' real waits
    (Retry-After) while `ts` follows the shared, possibly virtual, clock."""
    return iso(datetime.now(UTC))


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def fingerprint(value: str) -> str:
    """A short digest that lets tests compare values in the change journal without copying them."""
    return hashlib.sha256(value.encode()).hexdigest()[:16]


class Store:
    """Thin wrapper over one SQLite connection in WAL mode."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self.ensure_schema(CORE_SCHEMA)
        columns = {r[1] for r in self._conn.execute("PRAGMA table_info(requests)")}
        if "wall_ts" not in columns:  # added with the shared clock: state folders made before get it on open
            self._conn.execute("ALTER TABLE requests ADD COLUMN wall_ts TEXT")

    def ensure_schema(self, ddl: str) -> None:
        with self._lock:
            self._conn.executescript(ddl)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, so a multi-row change lands whole or not at all."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def execute(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._conn.execute(sql, tuple(params))

    def query(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, tuple(params)).fetchall()

    def one(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Row | None:
        with self._lock:
            return self._conn.execute(sql, tuple(params)).fetchone()

    # -- small key/value settings (topic key, workspace id, chosen port) --
    def get_setting(self, key: str) -> str | None:
        row = self.one("SELECT value FROM kv WHERE key = ?", (key,))
        return row["value"] if row else None

    def set_setting(self, key: str, value: str) -> None:
        self.execute("INSERT OR REPLACE INTO kv(key, value) VALUES (?, ?)", (key, value))

    # -- the change journal: every state mutation, tied to the request that made it --
    def record_change(self, request_seq: int | None, kind: str, subject: str, detail: dict[str, Any]) -> None:
        self.execute(
            "INSERT INTO changes(request_seq, ts, kind, subject, detail) VALUES (?, ?, ?, ?, ?)",
            (request_seq, iso(utcnow()), kind, subject, json.dumps(detail, sort_keys=True)),
        )
