"""The speaker index kept in step with the speaker DB: the writers' side (inside their SQLite
transaction) and the readers' side (a current index, rebuilt from SQLite when it is stale).

The file format and the search are :mod:`speakerid.enroll.index`'s; the rows and transactions
:mod:`speakerid.enroll.store`'s. Nothing here loops over speakers in Python.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Callable

import numpy as np

from speakerid.enroll.records import IndexChange
from speakerid.enroll.store import SpeakerStore
from speakerid.enroll.index import (
    IndexRows,
    SpeakerIndex,
    cohort_key,
    grown_capacity,
    index_path,
    positions,
    row_statistics,
    update_index,
    write_index,
)
from speakerid.enroll.rules import COHORT_TOP_K

logger = logging.getLogger(__name__)

SyncHook = Callable[[sqlite3.Connection, "str | None", str, IndexChange], None]


def rows_from_db(store: SpeakerStore, conn: sqlite3.Connection, cohort: np.ndarray | None,
                 top_k: int = COHORT_TOP_K) -> tuple[IndexRows, str]:
    """Every speaker's index row from SQLite, and the DB's model fingerprint ("" when mixed or empty)."""
    rowids, vectors, fingerprints = store.index_source(conn)
    mu, sd = row_statistics(vectors, cohort, top_k)
    return IndexRows(rowids, vectors, mu, sd), fingerprints[0] if len(fingerprints) == 1 else ""


def _merged(rows: IndexRows, upsert: IndexRows, remove: np.ndarray) -> IndexRows:
    """``rows`` with ``upsert`` written over (or appended to) them and ``remove`` dropped."""
    at = positions(rows.rowids, upsert.rowids)
    new = at < 0
    keep = positions(rows.rowids, remove)
    drop = np.zeros(len(rows), dtype=bool)
    drop[keep[keep >= 0]] = True
    parts = []
    for old, add in ((rows.rowids, upsert.rowids), (rows.vectors, upsert.vectors), (rows.mu, upsert.mu), (rows.sd, upsert.sd)):
        old = np.array(old)
        old[at[~new]] = add[~new]
        parts.append(np.concatenate([old[~drop], add[new]]))
    return IndexRows(*parts)


def writer_hook(store: SpeakerStore, fingerprint: str | None, cohort: np.ndarray | None,
                top_k: int = COHORT_TOP_K) -> SyncHook:
    """The ``sync_index`` of :meth:`SpeakerStore.add_many` / :meth:`SpeakerStore.delete`: change
    the index in place when it is current, else rebuild it (or, without a model to compute the
    AS-norm statistics, delete it: the next reader rebuilds it)."""

    def sync(conn: sqlite3.Connection, old: str | None, token: str, change: IndexChange) -> None:
        path = index_path(store.path)
        ckey = cohort_key(cohort, top_k)
        upsert = None
        if change.vectors is not None:
            upsert = IndexRows(change.rowids, change.vectors, *row_statistics(change.vectors, cohort, top_k))
        if change.was_empty and upsert is not None:
            write_index(path, upsert, token, fingerprint or "", ckey, grown_capacity(len(upsert)))
            return
        index = SpeakerIndex.open(path, writable=True)
        usable = (index is not None and old is not None and index.header.token == old
                  and (upsert is None or (index.header.cohort == ckey and index.header.dim == upsert.vectors.shape[1]
                                          and index.header.fingerprint == fingerprint)))
        if usable:
            empty = IndexRows.empty(index.header.dim)
            if update_index(index, upsert or empty, change.removed, token):
                return
            rows = _merged(index.rows(), upsert, change.removed)
            write_index(path, rows, token, index.header.fingerprint, index.header.cohort, grown_capacity(len(rows)))
            return
        if fingerprint is None:  # no model: no cohort to compute the statistics with
            logger.warning("%s: speaker index out of step with the DB: removed (the next identify rebuilds it)", path)
            path.unlink(missing_ok=True)
            return
        rows, fp = rows_from_db(store, conn, cohort, top_k)
        logger.warning("%s: speaker index %s: rebuilt from the DB (%d speakers)", path,
                       "missing" if index is None else "out of step with the DB", len(rows))
        write_index(path, rows, token, fp, ckey, grown_capacity(len(rows)))

    return sync


def current_index(store: SpeakerStore, conn: sqlite3.Connection, cohort: np.ndarray | None,
                  cached: SpeakerIndex | None = None, ckey: str | None = None,
                  top_k: int = COHORT_TOP_K) -> SpeakerIndex:
    """An index that matches the DB's committed state (call inside a read transaction): the
    cached one, the file, or one rebuilt from SQLite (written back when the folder allows)."""
    token, ckey = store.token(conn), ckey or cohort_key(cohort, top_k)
    if cached is not None and cached.is_current(token, ckey):
        return cached
    path = index_path(store.path)
    found = SpeakerIndex.open(path)
    if found is not None and found.is_current(token, ckey):
        return found
    if found is not None and token is not None and found.current_token() == token:
        reason = "built for another cohort (or top-k)"
        rows = found.rows()
        rows = IndexRows(rows.rowids, rows.vectors, *row_statistics(rows.vectors, cohort, top_k))
        fingerprint = found.header.fingerprint
    else:
        reason = "missing" if not path.exists() else "out of step with the DB"
        rows, fingerprint = rows_from_db(store, conn, cohort, top_k)
    if token is None:
        reason += " (the DB predates speaker indexes: rebuilt on every identify until its next enrol or remove)"
    logger.warning("%s: speaker index %s: rebuilt from the DB (%d speakers)", path, reason, len(rows))
    if token is not None and len(rows):
        try:
            write_index(path, rows, token, fingerprint, ckey, grown_capacity(len(rows)))
        except OSError as e:
            logger.warning("%s: cannot write the rebuilt speaker index (%s): it is kept in memory", path, e.strerror or e)
        else:
            index = SpeakerIndex.open(path)
            if index is not None and index.is_current(token, ckey):
                return index
    return SpeakerIndex.in_memory(rows, token or "", fingerprint, ckey)
