"""Profiles of one tenant, in the tenant's speaker DB file ``DIR/tenants/<tenant-id>.db``.

The file holds the :class:`speakerid.enroll.speaker_db.SpeakerDB` tables (speakers, utterances, meta) and
two of the service's own:

- ``serve_profiles(id, display_name, created, speech_s, clips, status)``: every profile; ``id`` is a
  server-made uuid hex, which is also the profile's speaker name in the SpeakerDB tables.
- ``serve_pending(profile_id, emb, speech_s, created)``: enrolment embeddings of a profile still
  ``enrolling`` (less than the minimum of speech so far).

A profile is in the SpeakerDB tables exactly when it is ``enrolled``: the enrolment that reaches
the minimum moves its pending embeddings and the new one there with
:meth:`SpeakerDB.add_embeddings`, whose ``in_transaction`` hook deletes the pending rows and updates
the profile row in the SAME transaction; deletes and resets do the same through
:meth:`SpeakerDB.remove`. So a write is all there or not at all, also under SIGKILL, and
``identify`` over the SpeakerDB ranks only enrolled profiles. Writes of one tenant are serialised
by a lock (one server process); every call opens its own connections (thread-safe).
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Iterator

import numpy as np

from speakerid.transactions import execute_script, transaction
from speakerid.serve.faults import kill_point

PROFILE_ID = re.compile(r"^[0-9a-f]{32}$")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS serve_profiles (
    id TEXT PRIMARY KEY, display_name TEXT, created REAL NOT NULL, speech_s REAL NOT NULL DEFAULT 0,
    clips INTEGER NOT NULL DEFAULT 0, status TEXT NOT NULL DEFAULT 'enrolling');
CREATE TABLE IF NOT EXISTS serve_pending (
    profile_id TEXT NOT NULL REFERENCES serve_profiles(id), emb BLOB NOT NULL, speech_s REAL NOT NULL,
    created REAL NOT NULL);
CREATE INDEX IF NOT EXISTS serve_pending_profile ON serve_pending(profile_id);
CREATE INDEX IF NOT EXISTS serve_profiles_created ON serve_profiles(created, id)
"""
_COLUMNS = "id, display_name, created, speech_s, clips, status"
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


class ProfileNotFound(LookupError):
    pass


class NotEnrolled(RuntimeError):
    pass


def _row(r) -> dict:
    return {"id": r[0], "display_name": r[1], "created": r[2], "speech_seconds": round(float(r[3]), 3),
            "clips": int(r[4]), "status": r[5]}


class TenantStore:
    """The profiles of one tenant; ``model`` is the shared :class:`speakerid.enroll.speaker_db.SpeakerModel`."""

    def __init__(self, root: str | Path, tenant_id: str, model, min_enroll_speech: float, **db_options) -> None:
        if not PROFILE_ID.match(tenant_id):
            raise ValueError("bad tenant id")
        self.path = Path(root) / "tenants" / f"{tenant_id}.db"
        self.model = model
        self.min_enroll_speech = float(min_enroll_speech)
        self.db_options = db_options
        with _locks_guard:
            self.lock = _locks.setdefault(str(self.path), threading.Lock())

    # ---- connections
    def speaker_db(self):
        from speakerid.enroll.speaker_db import SpeakerDB

        return SpeakerDB(self.path, self.model, **self.db_options)

    def _ensure(self) -> None:
        if self.path.exists():
            return
        from speakerid.enroll.store import SpeakerStore

        store = SpeakerStore(self.path)
        try:
            store.writer(create=True)
        finally:
            store.close()
        with self._write():
            pass

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(str(self.path), timeout=60.0, isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout = 60000")
            conn.execute("PRAGMA synchronous = FULL")
            yield conn
        finally:
            conn.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as conn, transaction(conn, "EXCLUSIVE"):
            execute_script(conn, _SCHEMA)
            yield conn

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection | None]:
        if not self.path.exists():
            yield None
            return
        with self._connect() as conn:
            if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'serve_profiles'").fetchone() is None:
                yield None
            else:
                yield conn

    # ---- profiles
    def create(self, display_name: str | None) -> dict:
        with self.lock:
            self._ensure()
            pid = uuid.uuid4().hex
            with self._write() as conn:
                conn.execute("INSERT INTO serve_profiles(id, display_name, created) VALUES (?, ?, ?)",
                             (pid, display_name, time.time()))
                row = conn.execute(f"SELECT {_COLUMNS} FROM serve_profiles WHERE id = ?", (pid,)).fetchone()
        return _row(row)

    def get(self, pid: str) -> dict:
        if not PROFILE_ID.match(pid):
            raise ProfileNotFound(pid)
        with self._read() as conn:
            row = None if conn is None else conn.execute(
                f"SELECT {_COLUMNS} FROM serve_profiles WHERE id = ?", (pid,)).fetchone()
        if row is None:
            raise ProfileNotFound(pid)
        return _row(row)

    def list(self, limit: int, offset: int) -> tuple[list[dict], int]:
        with self._read() as conn:
            if conn is None:
                return [], 0
            total = conn.execute("SELECT COUNT(*) FROM serve_profiles").fetchone()[0]
            rows = conn.execute(f"SELECT {_COLUMNS} FROM serve_profiles ORDER BY created, id LIMIT ? OFFSET ?",
                                (limit, offset)).fetchall()
        return [_row(r) for r in rows], int(total)

    def enrolled_ids(self, ids: list[str] | None = None) -> list[str]:
        with self._read() as conn:
            if conn is None:
                return []
            rows = conn.execute("SELECT id FROM serve_profiles WHERE status = 'enrolled' ORDER BY id").fetchall()
        found = [r[0] for r in rows]
        return found if ids is None else [i for i in found if i in set(ids)]

    def delete(self, pid: str) -> None:
        self._clear(pid, delete=True)

    def reset(self, pid: str) -> dict:
        self._clear(pid, delete=False)
        return self.get(pid)

    def _clear(self, pid: str, delete: bool) -> None:
        with self.lock:
            status = self.get(pid)["status"]

            def mine(conn: sqlite3.Connection) -> None:
                execute_script(conn, _SCHEMA)
                conn.execute("DELETE FROM serve_pending WHERE profile_id = ?", (pid,))
                if delete:
                    conn.execute("DELETE FROM serve_profiles WHERE id = ?", (pid,))
                else:
                    conn.execute("UPDATE serve_profiles SET speech_s = 0, clips = 0, status = 'enrolling' WHERE id = ?",
                                 (pid,))

            if status == "enrolled":
                db = self.speaker_db()
                try:
                    db.remove(pid, in_transaction=mine)
                finally:
                    db.close()
            else:
                with self._write() as conn:
                    mine(conn)

    def add_enrollment(self, pid: str, emb: np.ndarray, speech_s: float) -> dict:
        """Add one clip's unit embedding ``[D]`` with ``speech_s`` seconds of speech, in one transaction."""
        emb = np.ascontiguousarray(emb, dtype=np.float32).reshape(-1)
        with self.lock:
            prof = self.get(pid)
            total, clips = prof["speech_seconds"] + speech_s, prof["clips"] + 1
            status = "enrolled" if total >= self.min_enroll_speech else "enrolling"
            now = time.time()
            kill_point("before_transaction")

            def mine(conn: sqlite3.Connection) -> None:
                execute_script(conn, _SCHEMA)
                if conn.execute("SELECT 1 FROM serve_profiles WHERE id = ?", (pid,)).fetchone() is None:
                    raise ProfileNotFound(pid)
                if status == "enrolled":  # the pending rows moved to the SpeakerDB tables in this transaction
                    conn.execute("DELETE FROM serve_pending WHERE profile_id = ?", (pid,))
                else:
                    conn.execute("INSERT INTO serve_pending(profile_id, emb, speech_s, created) VALUES (?, ?, ?, ?)",
                                 (pid, emb.tobytes(), float(speech_s), now))
                conn.execute("UPDATE serve_profiles SET speech_s = ?, clips = ?, status = ? WHERE id = ?",
                             (total, clips, status, pid))
                kill_point("in_transaction")

            if status == "enrolled":
                with self._read() as conn:
                    pending = [np.frombuffer(r[0], np.float32) for r in conn.execute(
                        "SELECT emb FROM serve_pending WHERE profile_id = ? ORDER BY rowid", (pid,))]
                rows = np.stack(pending + [emb])
                db = self.speaker_db()
                try:
                    db.add_embeddings([pid] * len(rows), rows, ["<upload>"] * len(rows), in_transaction=mine)
                finally:
                    db.close()
            else:
                with self._write() as conn:
                    mine(conn)
        return self.get(pid)
