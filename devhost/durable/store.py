"""SQLite state of the durable engine: instances, their history, pending messages and activity work.

One file (``<state>/durable.sqlite3``, WAL). Every state transition is one transaction, opened with
``transaction()`` and built from the small write methods below, so a process killed at any point
leaves either the whole transition or none of it. Messages are the engine's queue: everything that
wakes an orchestration (start, activity result, timer, external event, terminate, child result) is a
message row until an episode consumes it. A durable timer is a TimerFired message with ``visible_at``.
All access happens on the engine's event-loop thread.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS instances (
    instance_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    execution_id TEXT NOT NULL,
    status TEXT NOT NULL,
    input TEXT,
    output TEXT,
    custom_status TEXT,
    created_time TEXT NOT NULL,
    last_updated_time TEXT NOT NULL,
    parent_instance_id TEXT,
    parent_execution_id TEXT,
    parent_task_id INTEGER,
    parent_name TEXT
);
CREATE TABLE IF NOT EXISTS history (
    instance_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    event TEXT NOT NULL,
    PRIMARY KEY (instance_id, seq)
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id TEXT NOT NULL,
    execution_id TEXT,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    visible_at TEXT,
    timer_id INTEGER
);
CREATE INDEX IF NOT EXISTS messages_by_instance ON messages (instance_id, id);
CREATE INDEX IF NOT EXISTS messages_by_time ON messages (visible_at);
CREATE TABLE IF NOT EXISTS activities (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id TEXT NOT NULL,
    execution_id TEXT NOT NULL,
    task_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    input TEXT
);
"""

INSTANCE_COLUMNS = (
    "instance_id",
    "name",
    "execution_id",
    "status",
    "input",
    "output",
    "custom_status",
    "created_time",
    "last_updated_time",
    "parent_instance_id",
    "parent_execution_id",
    "parent_task_id",
    "parent_name",
)


@dataclass
class Instance:
    instance_id: str
    name: str
    execution_id: str
    status: str
    input: str | None
    output: str | None
    custom_status: str | None
    created_time: str
    last_updated_time: str
    parent_instance_id: str | None = None
    parent_execution_id: str | None = None
    parent_task_id: int | None = None
    parent_name: str | None = None


@dataclass
class Message:
    id: int
    instance_id: str
    execution_id: str | None  # None: for whichever execution is current (events, terminate)
    kind: str  # "start" | "event" | "terminate"
    body: dict[str, Any]
    visible_at: str | None
    timer_id: int | None


@dataclass
class ActivityWork:
    id: int
    instance_id: str
    execution_id: str
    task_id: int
    name: str
    input: str | None


class Store:
    def __init__(self, path: Path, on_commit: Callable[[Store], None] | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # survives a killed process; WAL keeps it atomic
        self._db.executescript(SCHEMA)
        self._on_commit = on_commit
        self._depth = 0

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic state transition (re-entrant: inner blocks join the outer one)."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self._db.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield
            if self._on_commit:
                self._on_commit(self)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        finally:
            self._depth = 0

    # -- meta ---------------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # -- instances ----------------------------------------------------------------------------
    def get_instance(self, instance_id: str) -> Instance | None:
        cols = ", ".join(INSTANCE_COLUMNS)
        row = self._db.execute(f"SELECT {cols} FROM instances WHERE instance_id = ?", (instance_id,)).fetchone()  # nosec B608  # constant columns
        return Instance(*row) if row else None

    def list_instances(
        self,
        *,
        created_from: str | None = None,
        created_to: str | None = None,
        statuses: Sequence[str] | None = None,
        prefix: str | None = None,
    ) -> list[Instance]:
        clauses, params = [], []
        if created_from:
            clauses.append("created_time >= ?")
            params.append(created_from)
        if created_to:
            clauses.append("created_time <= ?")
            params.append(created_to)
        if statuses:
            clauses.append(f"status IN ({', '.join('?' * len(statuses))})")
            params.extend(statuses)
        if prefix:
            clauses.append("substr(instance_id, 1, ?) = ?")
            params.extend([len(prefix), prefix])
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        cols = ", ".join(INSTANCE_COLUMNS)
        rows = self._db.execute(f"SELECT {cols} FROM instances{where} ORDER BY created_time, instance_id", params)  # nosec B608  # fixed clauses
        return [Instance(*row) for row in rows]

    def put_instance(self, instance: Instance) -> None:
        """Create or replace the instance row; a replaced instance loses its history and queue."""
        self.delete_instance_state(instance.instance_id)
        cols = ", ".join(INSTANCE_COLUMNS)
        marks = ", ".join("?" * len(INSTANCE_COLUMNS))
        values = [getattr(instance, c) for c in INSTANCE_COLUMNS]
        self._db.execute(f"INSERT OR REPLACE INTO instances ({cols}) VALUES ({marks})", values)

    def update_instance(self, instance_id: str, **fields: Any) -> None:
        unknown = set(fields) - set(INSTANCE_COLUMNS)
        if unknown:
            raise ValueError(f"unknown instance columns: {sorted(unknown)}")
        assignments = ", ".join(f"{k} = ?" for k in fields)
        self._db.execute(f"UPDATE instances SET {assignments} WHERE instance_id = ?", [*fields.values(), instance_id])  # nosec B608  # names checked above

    def delete_instance_state(self, instance_id: str) -> None:
        """History and pending messages. Activity work is left alone: on Azure a queued activity of a
        replaced or purged instance still runs (its result is then dropped)."""
        self._db.execute("DELETE FROM history WHERE instance_id = ?", (instance_id,))
        self._db.execute("DELETE FROM messages WHERE instance_id = ?", (instance_id,))

    def purge_instance(self, instance_id: str) -> bool:
        deleted = self._db.execute("DELETE FROM instances WHERE instance_id = ?", (instance_id,)).rowcount
        self.delete_instance_state(instance_id)
        return deleted > 0

    # -- history ------------------------------------------------------------------------------
    def get_history(self, instance_id: str) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT event FROM history WHERE instance_id = ? ORDER BY seq", (instance_id,))
        return [json.loads(r[0]) for r in rows]

    def append_history(self, instance_id: str, events: Sequence[dict[str, Any]]) -> None:
        row = self._db.execute("SELECT COALESCE(MAX(seq), -1) FROM history WHERE instance_id = ?", (instance_id,))
        start = row.fetchone()[0] + 1
        self._db.executemany(
            "INSERT INTO history (instance_id, seq, event) VALUES (?, ?, ?)",
            [(instance_id, start + i, json.dumps(e)) for i, e in enumerate(events)],
        )

    def replace_history(self, instance_id: str, events: Sequence[dict[str, Any]]) -> None:
        self._db.execute("DELETE FROM history WHERE instance_id = ?", (instance_id,))
        self.append_history(instance_id, events)

    # -- messages -----------------------------------------------------------------------------
    def add_message(
        self,
        instance_id: str,
        execution_id: str | None,
        kind: str,
        body: dict[str, Any],
        *,
        visible_at: str | None = None,
        timer_id: int | None = None,
    ) -> None:
        self._db.execute(
            "INSERT INTO messages (instance_id, execution_id, kind, body, visible_at, timer_id) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (instance_id, execution_id, kind, json.dumps(body), visible_at, timer_id),
        )

    def ready_messages(self, instance_id: str, now: str) -> list[Message]:
        rows = self._db.execute(
            "SELECT id, instance_id, execution_id, kind, body, visible_at, timer_id FROM messages "
            "WHERE instance_id = ? AND (visible_at IS NULL OR visible_at <= ?) ORDER BY id",
            (instance_id, now),
        )
        return [Message(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6]) for r in rows]

    def ready_instance_ids(self, now: str) -> list[str]:
        rows = self._db.execute(
            "SELECT instance_id, MIN(id) AS first FROM messages WHERE visible_at IS NULL OR visible_at <= ? "
            "GROUP BY instance_id ORDER BY first",
            (now,),
        )
        return [r[0] for r in rows]

    def next_visible_at(self, now: str) -> str | None:
        row = self._db.execute("SELECT MIN(visible_at) FROM messages WHERE visible_at > ?", (now,)).fetchone()
        return row[0] if row else None

    def pending_timers(self) -> list[Message]:
        rows = self._db.execute(
            "SELECT id, instance_id, execution_id, kind, body, visible_at, timer_id FROM messages "
            "WHERE timer_id IS NOT NULL ORDER BY visible_at"
        )
        return [Message(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6]) for r in rows]

    def delete_messages(self, ids: Sequence[int]) -> None:
        self._db.executemany("DELETE FROM messages WHERE id = ?", [(i,) for i in ids])

    def delete_timers(self, instance_id: str, execution_id: str, timer_ids: Sequence[int]) -> None:
        self._db.executemany(
            "DELETE FROM messages WHERE instance_id = ? AND execution_id = ? AND timer_id = ?",
            [(instance_id, execution_id, t) for t in timer_ids],
        )

    def delete_all_timers(self, instance_id: str) -> None:
        self._db.execute("DELETE FROM messages WHERE instance_id = ? AND timer_id IS NOT NULL", (instance_id,))

    # -- activities ---------------------------------------------------------------------------
    def add_activity(
        self, instance_id: str, execution_id: str, task_id: int, name: str, input_text: str | None
    ) -> None:
        self._db.execute(
            "INSERT INTO activities (instance_id, execution_id, task_id, name, input) VALUES (?, ?, ?, ?, ?)",
            (instance_id, execution_id, task_id, name, input_text),
        )

    def queued_activities(self, exclude: Sequence[int], limit: int) -> list[ActivityWork]:
        if limit <= 0:
            return []
        rows = self._db.execute(
            "SELECT id, instance_id, execution_id, task_id, name, input FROM activities ORDER BY id LIMIT ?",
            (limit + len(exclude),),
        )
        skip = set(exclude)
        return [ActivityWork(*r) for r in rows if r[0] not in skip][:limit]

    def count_activities(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM activities").fetchone()[0]

    def delete_activity(self, activity_id: int) -> bool:
        return self._db.execute("DELETE FROM activities WHERE id = ?", (activity_id,)).rowcount > 0
