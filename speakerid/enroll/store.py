"""The SQLite layer of the speaker DB: schema, read-only and writing connections, checked rows.

Tables: ``speakers`` (name, model fingerprint, embedding dimension, float64 SUM of the unit
enrolment embeddings, their count ``num_utts``, times) and ``utterances`` (every enrolment
embedding, float32, with its file path), plus ``meta`` (``schema_version``).

Rules:

- Reading (list, verify, identify) opens the file ``mode=ro`` through a URI: it never writes,
  never creates the schema, and works on a read-only file. A file that is empty, not SQLite,
  or another program's SQLite DB is refused with a message naming it.
- Writing (enroll, remove) runs in ONE ``BEGIN EXCLUSIVE`` transaction; only enrolment
  creates the schema (in a new or empty file). The journal is SQLite's rollback journal
  (``journal_mode=DELETE``): a killed writer leaves a hot ``-journal`` that the next writer
  (or a reader allowed to write the file) rolls back, and nothing (no ``-wal``/``-shm``) is
  left beside the file after a clean run. A DB written in WAL mode by an older speakerid is
  switched to the rollback journal by its next writer.
- Writers take the lock ``BEGIN EXCLUSIVE`` (readers wait for the transaction to end, so none
  reads the speaker index while it changes) and store a new random ``index_token`` in ``meta``
  (triggers do it for any UPDATE / DELETE, by any program): the speaker index beside the DB
  (:mod:`speakerid.enroll.index`) carries the token of the state it reflects. ``identify``
  reads inside one read transaction (a consistent snapshot of the rows and the index).
- Every SQLite error becomes :class:`SpeakerDBError` naming the file; every stored row is
  checked (blob sizes, finite values, ``num_utts >= 1``), the error naming file and speaker.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from speakerid.enroll import index as enroll_index
from speakerid.transactions import execute_script, transaction
from speakerid.enroll.schema import SCHEMA, SCHEMA_VERSION, SPEAKERID_TABLES, TOKEN_KEY, TRIGGERS
from speakerid.enroll.records import Batch, IndexChange, SpeakerDBError, SpeakerInfo, SpeakerRefs, UnknownSpeakerError, unit_means

logger = logging.getLogger(__name__)



def _insert_utterances(conn: sqlite3.Connection, rows: Iterable[tuple]) -> None:
    """Enrolment embedding rows ``(speaker, path, float32 blob, time)`` (a function of its own so
    that tests can stop a writer here)."""
    conn.executemany("INSERT INTO utterances(speaker, path, embedding, added) VALUES (?, ?, ?, ?)", rows)


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
            if not os.access(self.path.parent, os.W_OK | os.X_OK):
                raise SpeakerDBError(f"{self.path}: cannot create the speaker DB: the directory {self.path.parent} "
                                     "is not writable")
        elif not os.access(self.path, os.W_OK):
            raise SpeakerDBError(f"{self.path}: the speaker DB file is not writable")
        elif not os.access(self.path.parent, os.W_OK | os.X_OK):
            raise SpeakerDBError(f"{self.path}: the directory {self.path.parent} is not writable (SQLite writes "
                                 "its journal beside the DB)")
        with self.errors():
            conn = self._open(writable=True)
            if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "delete":
                conn.execute("PRAGMA journal_mode = DELETE")
            conn.execute("PRAGMA synchronous = FULL")
            if not create or self._tables(conn):
                self._check_is_speaker_db(conn)
                return conn
            with transaction(conn, "IMMEDIATE"):
                if not self._tables(conn):  # another process may have created it meanwhile
                    execute_script(conn, SCHEMA)
                    conn.execute("INSERT INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                    for trigger in TRIGGERS:
                        conn.execute(trigger)
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

    def enrolled_paths(self, speakers: Sequence[str], paths: Sequence[str], step: int = 400) -> set[tuple[str, str]]:
        """The ``(speaker, path)`` pairs among ``speakers`` x ``paths`` already stored (empty for a new DB)."""
        if not self.path.exists() or not speakers or not paths:
            return set()
        found: set[tuple[str, str]] = set()
        wanted = set(speakers)
        try:
            with self.read_transaction() as conn:
                for start in range(0, len(paths), step):
                    part = list(paths[start : start + step])
                    rows = conn.execute(f"SELECT speaker, path FROM utterances WHERE path IN ({','.join('?' * len(part))})", part)
                    found.update((s, p) for s, p in rows if s in wanted)
        except SpeakerDBError:  # not (yet) a speaker DB: the write says what is wrong with it
            return set()
        return found

    def any_other_fingerprint(self, conn: sqlite3.Connection, fingerprint: str) -> tuple[str, str] | None:
        return conn.execute("SELECT name, fingerprint FROM speakers WHERE fingerprint != ? LIMIT 1", (fingerprint,)).fetchone()

    # ---- the index token and the rows the index is built from
    def token(self, conn: sqlite3.Connection) -> str | None:
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (TOKEN_KEY,)).fetchone()
        return None if row is None else str(row[0])

    def index_source(self, conn: sqlite3.Connection) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """(rowids, unit mean vectors float32 ``[N, D]``, distinct fingerprints) of every speaker,
        from the stored sums (the index's source; checked without a per-row Python loop)."""
        rows = conn.execute("SELECT rowid, name, fingerprint, embed_dim, emb_sum, num_utts FROM speakers ORDER BY rowid").fetchall()
        if not rows:
            return np.zeros(0, np.int64), np.zeros((0, 0), np.float32), []
        rowids, names, fps, dims, sums, counts = zip(*rows)
        bad = next((i for i, (d, c, b) in enumerate(zip(dims, counts, sums))
                    if not (isinstance(d, int) and d == dims[0] and isinstance(c, int) and c >= 1
                            and isinstance(b, bytes) and len(b) == 8 * d)), None)
        if bad is not None:
            self._check_row((names[bad], fps[bad], dims[bad], sums[bad], counts[bad]), [])
            raise SpeakerDBError(f"{self.path}: speaker {names[bad]!r}: embedding dimension {dims[bad]}, "
                                 f"others have {dims[0]} (remove and re-enrol the speaker)")
        vectors = unit_means(np.frombuffer(b"".join(sums), dtype=np.float64).reshape(len(rows), dims[0]), np.asarray(counts))
        broken = ~np.isfinite(vectors).all(axis=1)
        if broken.any():
            name = names[int(np.flatnonzero(broken)[0])]
            raise SpeakerDBError(f"{self.path}: speaker {name!r}: enrolment embedding with NaN/inf or zero values "
                                 "(corrupt row; remove and re-enrol)")
        return np.asarray(rowids, np.int64), vectors, sorted(set(fps))

    def names_of(self, conn: sqlite3.Connection, rowids: Sequence[int]) -> dict[int, str]:
        marks = ",".join("?" * len(rowids))
        return dict(conn.execute(f"SELECT rowid, name FROM speakers WHERE rowid IN ({marks})", [int(r) for r in rowids]))

    @contextlib.contextmanager
    def read_transaction(self, what: str = "") -> Iterator[sqlite3.Connection]:
        """One consistent snapshot: writers cannot commit (nor change the index) until it ends."""
        conn = self.reader()
        with self.errors(what):
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("COMMIT")

    # ---- writing
    @contextlib.contextmanager
    def write_transaction(self, create: bool, what: str) -> Iterator[tuple[sqlite3.Connection, str | None]]:
        """``BEGIN EXCLUSIVE`` (no reader scans the index while it changes) ... COMMIT, or
        ROLLBACK on any error; yields the connection and the index token before the change."""
        conn = self.writer(create=create)
        with self.errors(what), transaction(conn, "EXCLUSIVE"):
            for trigger in TRIGGERS:
                conn.execute(trigger)
            yield conn, self.token(conn)

    @staticmethod
    def new_token(conn: sqlite3.Connection) -> str:
        import secrets

        token = secrets.token_hex(16)
        conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (TOKEN_KEY, token))
        enroll_index.write_step("token")
        return token

    def add(self, speaker: str, fingerprint: str, paths: Sequence[str], emb: np.ndarray, check_model,
            sync_index=None) -> None:
        """Add unit embeddings ``emb [N, D]`` of ``paths`` to ``speaker`` in one transaction."""
        self.add_many(fingerprint, Batch([speaker], np.zeros(len(paths), np.int64), list(paths), emb), check_model, sync_index)

    def add_many(self, fingerprint: str, batch: Batch, check_model, sync_index=None, chunk: int = 50_000) -> None:
        """Add a batch of unit embeddings in ONE transaction (all or nothing).

        ``check_model(name, fingerprint)`` raises when a stored speaker is of another model;
        ``sync_index(conn, old_token, new_token, change)`` keeps the index in step before COMMIT."""
        now = time.time()
        dim = int(batch.emb.shape[1])
        sums, counts = batch.speaker_sums()
        with self.write_transaction(True, f" enrolling {batch.names[0]!r}" if len(batch.names) == 1 else " enrolling a batch") as (conn, old):
            other = self.any_other_fingerprint(conn, fingerprint)
            if other is not None:
                check_model(*other)
            was_empty = conn.execute("SELECT rowid FROM speakers LIMIT 1").fetchone() is None
            next_rowid = 1 + conn.execute("SELECT COALESCE(MAX(rowid), 0) FROM speakers").fetchone()[0]
            rowids = np.empty(len(batch.names), np.int64)
            totals = sums  # updated in place where a speaker is already enrolled
            total_counts = counts.copy()
            for start in range(0, len(batch.names), chunk):
                stop = min(start + chunk, len(batch.names))
                known = {} if was_empty else self._existing(conn, batch.names[start:stop])
                new = np.arange(start, stop)
                if known:
                    old_rows = np.fromiter((i for i in range(start, stop) if batch.names[i] in known), np.int64)
                    for i in old_rows.tolist():
                        rowid, old_sum, old_count = known[batch.names[i]]
                        totals[i] += old_sum
                        total_counts[i], rowids[i] = old_count + counts[i], rowid
                    conn.executemany("UPDATE speakers SET emb_sum = ?, num_utts = ?, updated = ? WHERE name = ?",
                                     [(totals[i].tobytes(), int(total_counts[i]), now, batch.names[i]) for i in old_rows.tolist()])
                    new = np.setdiff1d(new, old_rows, assume_unique=True)
                rowids[new] = next_rowid + np.arange(new.size)
                conn.executemany("INSERT INTO speakers(rowid, name, fingerprint, embed_dim, emb_sum, num_utts, created, "
                                 "updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                 ((r, batch.names[i], fingerprint, dim, sums[i].tobytes(), c, now, now)
                                  for i, r, c in zip(new.tolist(), rowids[new].tolist(), counts[new].tolist())))
                next_rowid += new.size
            enroll_index.write_step("speakers")
            blobs = np.ascontiguousarray(batch.emb, dtype=np.float32)
            _insert_utterances(conn, ((batch.names[o], p, blobs[i].tobytes(), now)
                                      for i, (o, p) in enumerate(zip(batch.owner.tolist(), batch.paths))))
            enroll_index.write_step("utterances")
            token = self.new_token(conn)
            if sync_index is not None:
                vectors = unit_means(totals, total_counts)
                sync_index(conn, old, token, IndexChange(rowids, vectors, np.zeros(0, np.int64), was_empty))

    def _existing(self, conn: sqlite3.Connection, names: Sequence[str], step: int = 500) -> dict[str, tuple]:
        """name -> (rowid, float64 sum, count) of the already enrolled ``names`` (rows checked)."""
        found = {}
        for start in range(0, len(names), step):
            part = names[start : start + step]
            for rowid, name, fp, dim, emb_sum, num_utts in conn.execute(
                f"SELECT rowid, name, fingerprint, embed_dim, emb_sum, num_utts FROM speakers WHERE name IN "
                f"({','.join('?' * len(part))})", part):
                self._check_row((name, fp, dim, emb_sum, num_utts), [])
                found[name] = (rowid, np.frombuffer(emb_sum, dtype=np.float64), num_utts)
        return found

    def delete(self, speaker: str, sync_index=None) -> None:
        """Delete ``speaker`` and its stored embeddings; UnknownSpeakerError when absent."""
        with self.write_transaction(False, f" removing {speaker!r}") as (conn, old):
            row = conn.execute("SELECT rowid FROM speakers WHERE name = ?", (speaker,)).fetchone()
            if row is None:
                names = [r[0] for r in conn.execute("SELECT name FROM speakers ORDER BY name LIMIT 6")]
                hint = f" (enrolled: {', '.join(names[:5])}{', ...' if len(names) > 5 else ''})" if names else " (the DB is empty)"
                raise UnknownSpeakerError(f"{self.path}: no enrolled speaker {speaker!r}{hint}")
            conn.execute("DELETE FROM speakers WHERE name = ?", (speaker,))
            conn.execute("DELETE FROM utterances WHERE speaker = ?", (speaker,))
            enroll_index.write_step("speakers")
            token = self.new_token(conn)
            if sync_index is not None:
                sync_index(conn, old, token, IndexChange(np.zeros(0, np.int64), None, np.array([row[0]], np.int64), False))
