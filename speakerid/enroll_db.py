"""The SQLite layer of the speaker DB: schema, read-only and writing connections, checked rows.

Tables: ``speakers`` (name, model fingerprint, embedding dimension, float64 SUM of the unit
enrolment embeddings, their count ``num_utts``, times) and ``utterances`` (every enrolment
embedding, float32, with its file path), plus ``meta`` (``schema_version``).

Rules:

- Reading (list, verify, identify) opens the file ``mode=ro`` through a URI: it never writes,
  never creates the schema, and works on a read-only file. A file that is empty, not SQLite,
  or another program's SQLite DB is refused with a message naming it.
- Writing (enroll, remove) runs in ONE ``BEGIN IMMEDIATE`` transaction; only enrolment
  creates the schema (in a new or empty file). The journal is SQLite's rollback journal
  (``journal_mode=DELETE``): a killed writer leaves a hot ``-journal`` that the next writer
  (or a reader allowed to write the file) rolls back, and nothing (no ``-wal``/``-shm``) is
  left beside the file after a clean run. A DB written in WAL mode by an older speakerid is
  switched to the rollback journal by its next writer.
- Every SQLite error becomes :class:`SpeakerDBError` naming the file; every stored row is
  checked (blob sizes, finite values, ``num_utts >= 1``), the error naming file and speaker.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
SPEAKERID_TABLES = {"meta", "speakers", "utterances"}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS speakers (
    name TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    embed_dim INTEGER NOT NULL,
    emb_sum BLOB NOT NULL,
    num_utts INTEGER NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS utterances (
    id INTEGER PRIMARY KEY,
    speaker TEXT NOT NULL REFERENCES speakers(name) ON DELETE CASCADE,
    path TEXT NOT NULL,
    embedding BLOB NOT NULL,
    added REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS utterances_by_speaker ON utterances(speaker);
"""


class SpeakerDBError(ValueError):
    """The speaker DB cannot answer: missing/corrupt file, no threshold, bad speaker name, ..."""


class UnknownSpeakerError(SpeakerDBError):
    """The speaker is not enrolled in the DB."""


@dataclass
class SpeakerInfo:
    name: str
    num_utts: int
    created: float
    updated: float
    fingerprint: str

    def to_dict(self) -> dict:
        return {"speaker": self.name, "num_utts": self.num_utts, "created": self.created,
                "updated": self.updated, "fingerprint": self.fingerprint}


@dataclass
class SpeakerRefs:
    """A speaker's stored enrolment embeddings ``refs [N, D]`` (unit length, float64)."""

    name: str
    fingerprint: str
    refs: np.ndarray


def _insert_utterance(conn: sqlite3.Connection, speaker: str, path: str, emb: np.ndarray, now: float) -> None:
    """One enrolment embedding row (a function of its own so that tests can stop a writer here)."""
    conn.execute(
        "INSERT INTO utterances(speaker, path, embedding, added) VALUES (?, ?, ?, ?)",
        (speaker, path, np.asarray(emb, dtype=np.float32).tobytes(), now),
    )


def _is_wal_file(path: Path) -> bool:
    """Whether the SQLite header says WAL mode (file format version bytes 18-19 == 2)."""
    try:
        with open(path, "rb") as f:
            header = f.read(20)
    except OSError:
        return False
    return len(header) == 20 and header[:16] == b"SQLite format 3\x00" and header[18] == 2


class SpeakerStore:
    """One speaker DB file; connections are opened lazily, read-only unless a write needs one."""

    def __init__(self, path: str | os.PathLike, timeout: float = 60.0) -> None:
        self.path = Path(path)
        self.timeout = float(timeout)
        self._conn: sqlite3.Connection | None = None
        self._writable = False

    # ---- connections
    @contextlib.contextmanager
    def errors(self, what: str = "") -> Iterator[None]:
        """Turn any SQLite error inside the block into one SpeakerDBError naming the file."""
        try:
            yield
        except sqlite3.Error as e:
            raise SpeakerDBError(f"{self.path}: not a usable speaker DB (SQLite error{what}: {e})") from None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
            self._writable = False

    def _open(self, writable: bool) -> sqlite3.Connection:
        if self._conn is not None and (self._writable or not writable):
            return self._conn
        self.close()
        if writable:
            conn = sqlite3.connect(str(self.path), timeout=self.timeout, isolation_level=None)
        else:
            conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=self.timeout,
                                   isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
        conn.execute("PRAGMA foreign_keys = ON")
        self._conn, self._writable = conn, writable
        return conn

    def _tables(self, conn: sqlite3.Connection) -> set[str]:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}

    def _check_is_speaker_db(self, conn: sqlite3.Connection) -> None:
        tables = self._tables(conn)
        if not tables:
            raise SpeakerDBError(f"{self.path}: empty database file, not a speaker DB (enrol a speaker first)")
        if not SPEAKERID_TABLES <= tables:
            shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
            raise SpeakerDBError(f"{self.path}: an SQLite database of another program (tables: {shown}), not a speakerid speaker DB")
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is None or str(row[0]) != str(SCHEMA_VERSION):
            raise SpeakerDBError(
                f"{self.path}: speaker DB schema version {None if row is None else row[0]}, this speakerid reads {SCHEMA_VERSION}"
            )

    def reader(self) -> sqlite3.Connection:
        """A connection for queries: ``mode=ro``; the file must exist and be a speakerid DB."""
        if self._conn is not None:
            return self._conn
        if not self.path.is_file():
            raise SpeakerDBError(f"{self.path}: speaker DB not found (enrol a speaker first)")
        if self.path.stat().st_size == 0:
            raise SpeakerDBError(f"{self.path}: empty file, not a speaker DB (enrol a speaker first)")
        with self.errors():
            # a WAL-mode file (older speakerid) read through mode=ro leaves -wal/-shm behind: when
            # the file is writable, read it through a read-write connection that writes nothing
            conn = self._open(writable=_is_wal_file(self.path) and os.access(self.path, os.W_OK))
            try:
                self._check_is_speaker_db(conn)
            except sqlite3.OperationalError as e:
                if getattr(e, "sqlite_errorname", "") != "SQLITE_READONLY_ROLLBACK":
                    raise
                self._roll_back_hot_journal()
                conn = self._open(writable=False)
                self._check_is_speaker_db(conn)
        return self._conn

    def _roll_back_hot_journal(self) -> None:
        """A killed writer left a hot journal: a read-write open rolls it back (restoring the file)."""
        self.close()
        if not os.access(self.path, os.W_OK):
            raise SpeakerDBError(
                f"{self.path}: an unfinished transaction of a killed writer ({self.path}-journal) must be rolled "
                "back, but the file is read-only; make it writable once or run speakerid enroll/remove on it"
            )
        logger.info("%s: rolling back the unfinished transaction of a killed writer", self.path)
        conn = sqlite3.connect(str(self.path), timeout=self.timeout, isolation_level=None)
        try:
            conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        finally:
            conn.close()

    def writer(self, create: bool) -> sqlite3.Connection:
        """A read-write connection; ``create`` makes the file and the schema when they are new."""
        if not self.path.exists():
            if not create:
                raise SpeakerDBError(f"{self.path}: speaker DB not found (enrol a speaker first)")
            self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.errors():
            conn = self._open(writable=True)
            if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "delete":
                conn.execute("PRAGMA journal_mode = DELETE")
            conn.execute("PRAGMA synchronous = FULL")
            if not create or self._tables(conn):
                self._check_is_speaker_db(conn)
                return conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                if not self._tables(conn):  # another process may have created it meanwhile
                    # statement by statement: executescript() would COMMIT the open transaction first
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            conn.execute(statement)
                    conn.execute("INSERT INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            self._check_is_speaker_db(conn)
        return conn

    # ---- rows
    def known_hint(self) -> str:
        with self.errors():
            names = [r[0] for r in self.reader().execute("SELECT name FROM speakers ORDER BY name LIMIT 6")]
        if not names:
            return " (the DB is empty)"
        return f" (enrolled: {', '.join(names[:5])}{', ...' if len(names) > 5 else ''})"

    def _unknown(self, speaker: str) -> UnknownSpeakerError:
        return UnknownSpeakerError(f"{self.path}: no enrolled speaker {speaker!r}{self.known_hint()}")

    def speakers(self) -> list[SpeakerInfo]:
        with self.errors(" listing speakers"):
            rows = self.reader().execute(
                "SELECT name, num_utts, created, updated, fingerprint FROM speakers ORDER BY name"
            ).fetchall()
        return [SpeakerInfo(*r) for r in rows]

    def info(self, speaker: str) -> SpeakerInfo:
        with self.errors(f" reading speaker {speaker!r}"):
            row = self.reader().execute(
                "SELECT name, num_utts, created, updated, fingerprint FROM speakers WHERE name = ?", (speaker,)
            ).fetchone()
        if row is None:
            raise self._unknown(speaker)
        return SpeakerInfo(*row)

    def references(self, names: Sequence[str] | None = None) -> list[SpeakerRefs]:
        """The checked enrolment embeddings of ``names`` (all speakers when None), in name order."""
        with self.errors(" reading enrolment embeddings"):
            conn = self.reader()
            if names is None:
                spk_rows = conn.execute("SELECT name, fingerprint, embed_dim, emb_sum, num_utts FROM speakers ORDER BY name").fetchall()
            else:
                spk_rows = []
                for name in names:
                    row = conn.execute(
                        "SELECT name, fingerprint, embed_dim, emb_sum, num_utts FROM speakers WHERE name = ?", (name,)
                    ).fetchone()
                    if row is None:
                        raise self._unknown(name)
                    spk_rows.append(row)
            utt_rows: dict[str, list[bytes]] = {}
            if names is None:
                query = conn.execute("SELECT speaker, embedding FROM utterances ORDER BY speaker, id")
            else:
                query = (row for r in spk_rows for row in conn.execute(
                    "SELECT speaker, embedding FROM utterances WHERE speaker = ? ORDER BY id", (r[0],)))
            for spk, blob in query:
                utt_rows.setdefault(spk, []).append(blob)
        return [self._check_row(r, utt_rows.get(r[0], [])) for r in spk_rows]

    def _check_row(self, row: tuple, blobs: list[bytes]) -> SpeakerRefs:
        name, fingerprint, dim, emb_sum, num_utts = row
        where = f"{self.path}: speaker {name!r}"
        if not isinstance(dim, int) or dim < 1:
            raise SpeakerDBError(f"{where}: bad embedding dimension {dim!r} (corrupt row; remove and re-enrol the speaker)")
        if not isinstance(num_utts, int) or num_utts < 1:
            raise SpeakerDBError(f"{where}: num_utts = {num_utts!r}, no enrolment to score against (remove and re-enrol the speaker)")
        if not isinstance(emb_sum, bytes) or len(emb_sum) != 8 * dim:
            size = len(emb_sum) if isinstance(emb_sum, bytes) else type(emb_sum).__name__
            raise SpeakerDBError(f"{where}: embedding sum blob of {size} bytes, expected {8 * dim} (corrupt row; remove and re-enrol)")
        if not blobs:
            # a DB whose utterance rows are gone: the stored sum is all there is
            refs = np.frombuffer(emb_sum, dtype=np.float64)[None, :] / num_utts
        else:
            bad = next((len(b) if isinstance(b, bytes) else type(b).__name__ for b in blobs
                        if not isinstance(b, bytes) or len(b) != 4 * dim), None)
            if bad is not None:
                raise SpeakerDBError(f"{where}: an enrolment embedding blob of {bad} bytes, expected {4 * dim} (corrupt row; remove and re-enrol)")
            refs = np.stack([np.frombuffer(b, dtype=np.float32) for b in blobs]).astype(np.float64)
        norms = np.linalg.norm(refs, axis=1)
        if not np.isfinite(refs).all() or not (norms > 0).all():
            raise SpeakerDBError(f"{where}: enrolment embedding with NaN/inf or zero values (corrupt row; remove and re-enrol)")
        return SpeakerRefs(name, fingerprint, refs / norms[:, None])

    def any_other_fingerprint(self, conn: sqlite3.Connection, fingerprint: str) -> tuple[str, str] | None:
        return conn.execute("SELECT name, fingerprint FROM speakers WHERE fingerprint != ? LIMIT 1", (fingerprint,)).fetchone()

    # ---- writing
    def add(self, speaker: str, fingerprint: str, paths: Sequence[str], emb: np.ndarray, check_model) -> None:
        """Add unit embeddings ``emb [N, D]`` of ``paths`` to ``speaker`` in one transaction.

        ``check_model(name, fingerprint)`` raises when a stored speaker is of another model."""
        conn = self.writer(create=True)
        now = time.time()
        with self.errors(f" enrolling {speaker!r}"):
            conn.execute("BEGIN IMMEDIATE")
            try:
                other = self.any_other_fingerprint(conn, fingerprint)
                if other is not None:
                    check_model(*other)
                row = conn.execute("SELECT emb_sum, num_utts, embed_dim FROM speakers WHERE name = ?", (speaker,)).fetchone()
                total = emb.astype(np.float64).sum(axis=0)
                if row is None:
                    conn.execute(
                        "INSERT INTO speakers(name, fingerprint, embed_dim, emb_sum, num_utts, created, updated) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (speaker, fingerprint, emb.shape[1], total.tobytes(), len(paths), now, now),
                    )
                else:
                    self._check_row((speaker, fingerprint, row[2], row[0], row[1]), [])
                    old = np.frombuffer(row[0], dtype=np.float64)
                    conn.execute(
                        "UPDATE speakers SET emb_sum = ?, num_utts = ?, updated = ? WHERE name = ?",
                        ((old + total).tobytes(), row[1] + len(paths), now, speaker),
                    )
                for path, e in zip(paths, emb):
                    _insert_utterance(conn, speaker, path, e, now)
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise

    def delete(self, speaker: str) -> None:
        """Delete ``speaker`` and its stored embeddings; UnknownSpeakerError when absent."""
        conn = self.writer(create=False)
        with self.errors(f" removing {speaker!r}"):
            conn.execute("BEGIN IMMEDIATE")
            try:
                cur = conn.execute("DELETE FROM speakers WHERE name = ?", (speaker,))
                conn.execute("DELETE FROM utterances WHERE speaker = ?", (speaker,))
                if cur.rowcount == 0:
                    names = [r[0] for r in conn.execute("SELECT name FROM speakers ORDER BY name LIMIT 6")]
                    hint = f" (enrolled: {', '.join(names[:5])}{', ...' if len(names) > 5 else ''})" if names else " (the DB is empty)"
                    raise UnknownSpeakerError(f"{self.path}: no enrolled speaker {speaker!r}{hint}")
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
