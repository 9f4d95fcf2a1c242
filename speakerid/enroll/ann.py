"""Approximate search over the speaker index for large DBs (optional: ``pip install faiss-cpu``,
the ``faiss`` extra).

``identify`` ranks speakers through the speaker index (:mod:`speakerid.enroll.index`) by one
matrix product over every speaker (``search="exact"``). With ``search="ann"`` (or ``"auto"`` at
:data:`ANN_MIN_SPEAKERS` speakers or more, when faiss is installed) a faiss ``IndexHNSWFlat``
(inner product over the index's float32 unit vectors, :data:`HNSW_M` links per node,
efConstruction :data:`EF_CONSTRUCTION`) proposes the best :data:`CANDIDATES` speakers by
cosine; they are ranked again exactly from the index (the cosine, or the AS-norm sum from the
per-speaker statistics, which the graph does not know), and the best ``top_k + 16`` are scored
exactly from their SQLite rows as before. So an ANN answer is always a correctly scored
speaker; what ANN can lose is recall (the exact best not among the candidates):
``benchmarks/bench_identify_ann.py`` measures it.

Why HNSW and not IVF: no training step (IVF needs k-means over the DB, again as it drifts), the
best recall per millisecond at these sizes, and appends are cheap. HNSW cannot delete, so
removed or re-enrolled speakers are tombstones (their label maps to no row; the search asks
for proportionally more candidates) and the graph is rebuilt once tombstones exceed
:data:`REBUILD_FRACTION` of the speakers. New speakers are appended to the graph.

The file ``<db>.index.hnsw`` (:func:`ann_path`): faiss's own serialisation, then ``labels``
(int64: the SQLite rowid of each faiss label, -1 for a tombstone), a JSON trailer (the speaker
index ``token`` it reflects, the sizes, crc32 of all the bytes before it) and 16 bytes: magic
``SPKANN01``, the trailer's length and crc32. Writers of the DB never touch it: a reader
whose file's token differs from the speaker index's catches it up (adds the rows that are
new or changed, tombstones the rest, from the index's rowids and vectors) and writes it back
atomically (temp + fsync + rename), so a kill at any moment leaves the old file or the new one,
both valid for the state they name. A file that is not whole (torn, truncated, garbage, another
dimension) is rebuilt, with a logged message.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import time
import zlib
from pathlib import Path

import numpy as np

from speakerid.enroll.index import SpeakerIndex, positions
from speakerid.enroll.records import SpeakerDBError

logger = logging.getLogger(__name__)

ANN_SUFFIX = ".index.hnsw"
SEARCH_MODES = ("auto", "exact", "ann")
# "auto" uses the graph from this many speakers (benchmarks/results_identify_ann.md: below it the
# matrix product costs a few ms, no more than the graph's search plus the exact rescoring)
ANN_MIN_SPEAKERS = 50_000
HNSW_M = 32
EF_CONSTRUCTION = 80
# graph candidates re-ranked exactly (efSearch = max(this, count)); results_identify_ann.md: at 10^5
# speakers 128 missed 0.9 % of the exact best rows, 256 0.2 %, for ~1 ms more
CANDIDATES = 256
REBUILD_FRACTION = 0.25
MAGIC = b"SPKANN01"
_TAIL = struct.Struct("<8sII")
_CHUNK = 65536
INSTALL_HINT = "search 'ann' needs faiss: pip install faiss-cpu (or the extra: pip install 'speakerid[faiss]')"


def faiss_module():
    """The faiss module, or None when it is not installed."""
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def ann_path(db_path: str | os.PathLike) -> Path:
    return Path(f"{db_path}{ANN_SUFFIX}")


def check_search(mode: str) -> str:
    """``mode`` when valid (``"ann"`` only with faiss installed), else a one-line SpeakerDBError."""
    if mode not in SEARCH_MODES:
        raise SpeakerDBError(f"unknown search {mode!r}; choose from {', '.join(SEARCH_MODES)}")
    if mode == "ann" and faiss_module() is None:
        raise SpeakerDBError(INSTALL_HINT)
    return mode


class AnnIndex:
    """An HNSW graph over speaker-index rows: ``labels[i]`` is faiss label i's SQLite rowid (-1:
    tombstone); ``to_row[i]`` its row in the speaker index it was last bound to (-1: none)."""

    def __init__(self, graph, labels: np.ndarray, token: str, built: int) -> None:
        self.graph, self.labels, self.token, self.built = graph, labels, token, built
        self.to_row = np.full(labels.size, -1, dtype=np.int64)
        self.bound: SpeakerIndex | None = None

    @property
    def dim(self) -> int:
        return int(self.graph.d)

    @classmethod
    def build(cls, index: SpeakerIndex, m: int = HNSW_M, ef_construction: int = EF_CONSTRUCTION) -> AnnIndex:
        faiss = faiss_module()
        n = index.n
        t0 = time.perf_counter()
        graph = faiss.IndexHNSWFlat(index.header.dim, m, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = ef_construction
        for start in range(0, n, _CHUNK):
            graph.add(np.ascontiguousarray(index.matrix[start : min(n, start + _CHUNK)], dtype=np.float32))
        ann = cls(graph, np.array(index.rowids[:n], dtype=np.int64), index.header.token, n)
        ann.to_row = np.arange(n, dtype=np.int64)
        ann.bound = index
        logger.info("ANN index of %d speakers built in %.1f s", n, time.perf_counter() - t0)
        return ann

    def _vectors(self) -> np.ndarray:
        """The graph's stored vectors ``[ntotal, D]`` (a view, no copy)."""
        faiss = faiss_module()
        storage = faiss.downcast_index(self.graph.storage)
        return faiss.rev_swig_ptr(storage.get_xb(), self.graph.ntotal * self.dim).reshape(-1, self.dim)

    def catch_up(self, index: SpeakerIndex) -> bool | None:
        """Bind to ``index`` (a current speaker index): map labels to its rows; when its token
        differs, tombstone labels whose speaker is gone or whose vector changed and add its
        rows the graph lacks. Returns whether the graph changed, or None when a rebuild is due
        (tombstones over REBUILD_FRACTION of the speakers, or another dimension)."""
        if index.header.dim != self.dim:
            return None
        n = index.n
        rows = positions(index.rowids[:n], self.labels)
        rows[self.labels < 0] = -1
        changed = False
        if index.header.token != self.token:
            stored = self._vectors()
            live = np.flatnonzero(rows >= 0)
            for start in range(0, live.size, _CHUNK):  # a changed vector (re-enrolment): tombstone it
                part = live[start : start + _CHUNK]
                moved = np.any(stored[part] != index.matrix[rows[part]], axis=1)
                rows[part[moved]] = -1
            gone = (rows < 0) & (self.labels >= 0)
            covered = np.zeros(n, dtype=bool)
            covered[rows[rows >= 0]] = True
            add = np.flatnonzero(~covered)
            dead = int((self.labels < 0).sum() + gone.sum())
            if dead > REBUILD_FRACTION * max(n, 1):  # appends do not wear a graph; tombstones waste its search
                return None
            self.labels[gone] = -1
            for start in range(0, add.size, _CHUNK):
                self.graph.add(np.ascontiguousarray(index.matrix[add[start : start + _CHUNK]], dtype=np.float32))
            self.labels = np.concatenate([self.labels, np.asarray(index.rowids[add], dtype=np.int64)])
            rows = np.concatenate([rows, add])
            changed = True  # at least the token: written back so that the next reader need not compare
            self.token = index.header.token
        self.to_row, self.bound = rows, index
        return changed

    def search(self, index: SpeakerIndex, test: np.ndarray, count: int,
               test_stats: tuple[float, float] | None = None) -> np.ndarray:
        """Rows of ``index`` (the one bound) of the ``count`` best speakers among the graph's
        candidates, ranked exactly (see :meth:`SpeakerIndex.rank_rows`), best first."""
        faiss = faiss_module()
        live = max(1, int((self.labels >= 0).sum()))
        k = min(self.graph.ntotal, int(max(CANDIDATES, count) * self.graph.ntotal / live) + 1)
        params = faiss.SearchParametersHNSW(efSearch=max(k, CANDIDATES))
        _, found = self.graph.search(np.asarray(test, dtype=np.float32).reshape(1, -1), k, params=params)
        found = found[0][found[0] >= 0]
        rows = self.to_row[found]
        return index.rank_rows(test, rows[rows >= 0], count, test_stats)

    # ---- the file
    def save(self, path: str | os.PathLike) -> None:
        from speakerid.fileio import atomic_path

        faiss = faiss_module()
        with atomic_path(path) as tmp:
            faiss.write_index(self.graph, str(tmp))
            size = tmp.stat().st_size
            with open(tmp, "r+b") as f:
                crc = _crc_of(f, size)
                labels = np.ascontiguousarray(self.labels, dtype="<i8").tobytes()
                crc = zlib.crc32(labels, crc)
                trailer = json.dumps({"token": self.token, "dim": self.dim, "ntotal": int(self.graph.ntotal),
                                      "built": int(self.built), "faiss_bytes": size, "crc": crc}).encode()
                f.seek(size)
                f.write(labels + trailer + _TAIL.pack(MAGIC, len(trailer), zlib.crc32(trailer)))
                f.flush()
                os.fsync(f.fileno())

    @classmethod
    def load(cls, path: str | os.PathLike) -> tuple[AnnIndex | None, str]:
        """The graph of ``path`` and "", or None and why it is not usable ("missing", "not a whole ANN file")."""
        path = Path(path)
        bad = None, "not a whole ANN index file (torn, truncated or overwritten)"
        try:
            total = path.stat().st_size
            with open(path, "rb") as f:
                if total < _TAIL.size:
                    return bad
                f.seek(total - _TAIL.size)
                magic, length, tcrc = _TAIL.unpack(f.read(_TAIL.size))
                if magic != MAGIC or length > total - _TAIL.size:
                    return bad
                f.seek(total - _TAIL.size - length)
                raw = f.read(length)
                if zlib.crc32(raw) != tcrc:
                    return bad
                meta = json.loads(raw)
                size, ntotal = int(meta["faiss_bytes"]), int(meta["ntotal"])
                if size + 8 * ntotal + length + _TAIL.size != total:
                    return bad
                f.seek(0)
                crc = _crc_of(f, size)
                labels_raw = f.read(8 * ntotal)
                if zlib.crc32(labels_raw, crc) != int(meta["crc"]):
                    return bad
        except FileNotFoundError:
            return None, "missing"
        except (OSError, ValueError, KeyError, TypeError) as e:
            return None, f"unreadable ({getattr(e, 'strerror', None) or e})"
        faiss = faiss_module()
        try:
            graph = faiss.read_index(str(path))
        except RuntimeError:
            return bad
        if (graph.ntotal != ntotal or graph.d != int(meta["dim"]) or graph.metric_type != faiss.METRIC_INNER_PRODUCT
                or not isinstance(graph, faiss.IndexHNSWFlat)):
            return bad
        return cls(graph, np.frombuffer(labels_raw, dtype="<i8").astype(np.int64), str(meta["token"]), int(meta["built"])), ""


def _crc_of(f, size: int, chunk: int = 8 * 2**20) -> int:
    f.seek(0)
    crc, left = 0, size
    while left > 0:
        part = f.read(min(chunk, left))
        if not part:
            raise ValueError("file shorter than its trailer says")
        crc, left = zlib.crc32(part, crc), left - len(part)
    return crc


class Searcher:
    """How a :class:`~speakerid.enroll.speaker_db.SpeakerDB` ranks speakers through its index:
    the exact matrix product, or the ANN graph (kept in memory between calls, caught up from
    the file beside the DB, or built)."""

    def __init__(self, db_path: str | os.PathLike, mode: str = "auto", min_speakers: int = ANN_MIN_SPEAKERS) -> None:
        self.mode, self.min_speakers = check_search(mode), int(min_speakers)
        self.path = ann_path(db_path)
        self.ann: AnnIndex | None = None
        self.last = "exact"  # the path the last rank took (tests and benchmarks read it)

    def uses_ann(self, n: int) -> bool:
        if self.mode == "ann":
            return True
        return self.mode == "auto" and n >= self.min_speakers and faiss_module() is not None

    def rank(self, index: SpeakerIndex, test: np.ndarray, count: int,
             test_stats: tuple[float, float] | None = None) -> np.ndarray:
        """Rows of the ``count`` best speakers of ``index`` for the unit vector ``test``, best first."""
        if not self.uses_ann(index.n):
            self.last = "exact"
            return index.rank(test, count, test_stats)
        ann = self.graph(index)
        self.last = "ann"
        return ann.search(index, test, count, test_stats)

    def graph(self, index: SpeakerIndex) -> AnnIndex:
        """The ANN graph of ``index`` (a current speaker index; call inside the DB's read transaction)."""
        ann = self.ann
        if ann is not None and ann.bound is index and ann.token == index.header.token:
            return ann
        why = ""
        if ann is None or ann.token != index.header.token:
            found, why = AnnIndex.load(self.path)
            if found is not None or ann is None:
                ann = found
            if why and why != "missing":
                logger.warning("%s: ANN index %s", self.path, why)
        changed = None if ann is None else ann.catch_up(index)
        if changed is None:
            if ann is not None:
                why = "too many changes since it was built"
            logger.warning("%s: ANN index %s: building it for %d speakers", self.path, why or "of another dimension",
                           index.n)
            ann, changed = AnnIndex.build(index), True
        if changed:
            try:
                ann.save(self.path)
            except (OSError, RuntimeError) as e:
                logger.warning("%s: cannot write the ANN index (%s): it is kept in memory", self.path,
                               getattr(e, "strerror", None) or e)
        self.ann = ann
        return ann
