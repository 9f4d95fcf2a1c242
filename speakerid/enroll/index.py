"""The speaker index: every speaker's scoring vector in one contiguous float32 matrix beside the DB.

SQLite (:mod:`speakerid.enroll.store`) stays the source of truth; ``<db>.index`` is derived from it
and serves ``identify`` without reading every row: the unit mean of each speaker's enrolment
embeddings (the ``mean`` score rule) as a row of a memory-mapped ``[capacity, D]`` float32
matrix, the speaker's SQLite ``rowid``, and its AS-norm / CSLS statistics against the model's cohort
(mean and std of the top cohort scores; they depend only on the speaker and the cohort, so
they are computed once, at enrolment).

File layout (little-endian): a 4096-byte header (magic ``SPKIDX01``, crc32, the length of a
JSON object: ``dim``, ``capacity``, ``n``, ``token``, ``fingerprint``, ``cohort``), then
``rowids`` int64[capacity], ``mu`` and ``sd`` float64[capacity] and the matrix, each region
4096-aligned. Rows ``[0, n)`` are live; the rest is a sparse hole for appends.

Freshness: every write transaction stores a new random ``index_token`` in the DB's ``meta``
table (triggers do it for UPDATE / DELETE made by any program); the index header carries the
token of the state it reflects. A writer changes the index inside its SQLite transaction (which
it holds EXCLUSIVE, so no reader scans meanwhile): header token cleared, rows changed, header
with the new token, then COMMIT. A writer killed at any step leaves a header that does not
match the committed token, and the next reader rebuilds the index from SQLite (with a logged
message). Tokens are random, so a rolled-back token never matches a later commit.

This module knows nothing of SQLite: :class:`SpeakerIndex` reads and ranks,
:func:`write_index` writes a whole file atomically, :func:`update_index` changes one in place.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from speakerid.enroll.rules import COHORT_TOP_K

INDEX_SUFFIX = ".index"
MAGIC = b"SPKIDX01"
HEADER_BYTES = 4096
_ALIGN = 4096
NO_TOKEN = ""


def write_step(step: str) -> None:
    """Called after each step of a DB write (tests stop a writer here to kill it)."""


def index_path(db_path: str | os.PathLike) -> Path:
    return Path(f"{db_path}{INDEX_SUFFIX}")


def cohort_key(cohort: np.ndarray | None, top_k: int = COHORT_TOP_K) -> str:
    """What the stored cohort statistics were computed against ("none": no cohort): the cohort's
    digest, and its top-k when that is not :data:`COHORT_TOP_K` (keys of indexes written before
    models could name their top-k stay valid)."""
    if cohort is None:
        return "none"
    key = hashlib.sha256(np.ascontiguousarray(cohort, dtype=np.float32).tobytes()).hexdigest()[:32]
    return key if top_k == COHORT_TOP_K else f"{key}-k{int(top_k)}"


@dataclass(frozen=True)
class ProbeStats:
    """The test side's cohort statistics for ranking by ``kind`` (``asnorm`` or ``csls``)."""

    kind: str
    mu: float
    sd: float


@dataclass(frozen=True)
class IndexRows:
    """Rows of the index: SQLite rowids ``[m]``, unit scoring vectors ``[m, D]`` float32, AS-norm mean/std ``[m]``."""

    rowids: np.ndarray
    vectors: np.ndarray
    mu: np.ndarray
    sd: np.ndarray

    @classmethod
    def empty(cls, dim: int) -> "IndexRows":
        return cls(np.zeros(0, np.int64), np.zeros((0, dim), np.float32), np.zeros(0), np.zeros(0))

    def __len__(self) -> int:
        return int(self.rowids.size)


def row_statistics(vectors: np.ndarray, cohort: np.ndarray | None, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """AS-norm mean / std of each vector against the cohort (NaN without a cohort)."""
    if cohort is None or vectors.shape[0] == 0:
        nan = np.full(vectors.shape[0], np.nan)
        return nan, nan.copy()
    from speakerid.scoring.norm import cohort_statistics

    return cohort_statistics(np.asarray(vectors, dtype=np.float32), cohort, min(top_k, cohort.shape[0]))


@dataclass
class Header:
    dim: int
    capacity: int
    n: int
    token: str
    fingerprint: str
    cohort: str

    def to_bytes(self) -> bytes:
        body = json.dumps(asdict(self), sort_keys=True).encode()
        raw = MAGIC + struct.pack("<II", zlib.crc32(body), len(body)) + body
        if len(raw) > HEADER_BYTES:
            raise ValueError("speaker index header too long")
        return raw.ljust(HEADER_BYTES, b"\0")

    @classmethod
    def from_bytes(cls, raw: bytes) -> "Header | None":
        """The header, or None when it is not one (wrong magic, torn write, bad fields)."""
        if len(raw) < 16 or raw[:8] != MAGIC:
            return None
        crc, size = struct.unpack("<II", raw[8:16])
        body = raw[16 : 16 + size]
        if len(body) != size or zlib.crc32(body) != crc:
            return None
        try:
            fields = json.loads(body)
            h = cls(**fields)
        except (ValueError, TypeError):
            return None
        ints = (h.dim, h.capacity, h.n)
        if not all(isinstance(v, int) for v in ints) or h.dim < 1 or not 0 <= h.n <= h.capacity:
            return None
        return h


def _up(x: int) -> int:
    return -(-x // _ALIGN) * _ALIGN


def _layout(capacity: int, dim: int) -> tuple[int, int, int, int, int]:
    """Byte offsets of rowids, mu, sd, the matrix, and the file size."""
    rowids = HEADER_BYTES
    mu = _up(rowids + 8 * capacity)
    sd = _up(mu + 8 * capacity)
    mat = _up(sd + 8 * capacity)
    return rowids, mu, sd, mat, _up(mat + 4 * capacity * dim)


class SpeakerIndex:
    """The live rows of an index (memory-mapped from its file, or in memory after a rebuild that
    could not be written). ``rank`` is the search; nothing here loops over rows in Python."""

    def __init__(self, header: Header, rowids: np.ndarray, mu: np.ndarray, sd: np.ndarray, matrix: np.ndarray,
                 path: Path | None = None, raw: np.memmap | None = None) -> None:
        self.header, self.path, self._raw = header, path, raw
        self.rowids, self.mu, self.sd, self.matrix = rowids, mu, sd, matrix

    @property
    def n(self) -> int:
        return self.header.n

    @classmethod
    def open(cls, path: str | os.PathLike, writable: bool = False) -> "SpeakerIndex | None":
        """Map ``path``; None when it is missing, unreadable or not a whole index file."""
        path = Path(path)
        try:
            size = path.stat().st_size
            with open(path, "rb") as f:
                header = Header.from_bytes(f.read(HEADER_BYTES))
        except OSError:
            return None
        if header is None:
            return None
        off_r, off_mu, off_sd, off_m, total = _layout(header.capacity, header.dim)
        if size < total:
            return None
        try:
            raw = np.memmap(path, dtype=np.uint8, mode="r+" if writable else "r", shape=(total,))
        except (OSError, ValueError):
            return None
        cap, n, dim = header.capacity, header.n, header.dim
        rowids = raw[off_r : off_r + 8 * cap].view(np.int64)
        mu = raw[off_mu : off_mu + 8 * cap].view(np.float64)
        sd = raw[off_sd : off_sd + 8 * cap].view(np.float64)
        matrix = raw[off_m : off_m + 4 * cap * dim].view(np.float32).reshape(cap, dim)
        if writable:
            return cls(header, rowids, mu, sd, matrix, path, raw)
        return cls(header, rowids[:n], mu[:n], sd[:n], matrix[:n], path, raw)

    @classmethod
    def in_memory(cls, rows: IndexRows, token: str, fingerprint: str, cohort: str) -> "SpeakerIndex":
        dim = int(rows.vectors.shape[1])
        header = Header(dim, len(rows), len(rows), token, fingerprint, cohort)
        return cls(header, rows.rowids, rows.mu, rows.sd, np.ascontiguousarray(rows.vectors, dtype=np.float32))

    def current_token(self) -> str:
        """The token in the file's header now (a writer may have changed it since it was mapped)."""
        if self._raw is None:
            return self.header.token
        h = Header.from_bytes(bytes(self._raw[:HEADER_BYTES]))
        return NO_TOKEN if h is None or h.n != self.header.n else h.token

    def is_current(self, token: str | None, cohort: str) -> bool:
        return (token is not None and token != NO_TOKEN and self.header.token == token
                and self.current_token() == token and self.header.cohort == cohort)

    def rows(self) -> IndexRows:
        n = self.n
        return IndexRows(np.array(self.rowids[:n]), np.array(self.matrix[:n]), np.array(self.mu[:n]), np.array(self.sd[:n]))

    def rank(self, test: np.ndarray, count: int, test_stats: ProbeStats | None = None) -> np.ndarray:
        """Row numbers of the ``count`` best rows for the unit vector ``test``, best first.

        The score is the cosine, or with ``test_stats`` (the test's cohort mean / std) the AS-norm
        sum ``(s - mu_e) / sd_e + (s - mu_t) / sd_t`` or the CSLS ``s - mu_e`` (monotone maps of
        AS-norm and CSLS for one test)."""
        n = self.n
        return _best(self._scores(self.matrix[:n], slice(0, n), test, test_stats), count)

    def rank_rows(self, test: np.ndarray, rows: np.ndarray, count: int,
                  test_stats: ProbeStats | None = None) -> np.ndarray:
        """:meth:`rank` among ``rows`` only (candidates of an approximate search): row numbers, best first."""
        rows = np.unique(np.asarray(rows, dtype=np.int64))
        return rows[_best(self._scores(self.matrix[rows], rows, test, test_stats), count)]

    def _scores(self, vectors: np.ndarray, rows, test: np.ndarray, test_stats: ProbeStats | None) -> np.ndarray:
        scores = vectors @ np.asarray(test, dtype=np.float32)
        if test_stats is None:
            return scores
        if test_stats.kind == "csls":
            return scores - self.mu[rows]
        if test_stats.kind == "asnorm":
            return (scores - self.mu[rows]) / self.sd[rows] + (scores - test_stats.mu) / test_stats.sd
        raise ValueError(f"the speaker index cannot rank by {test_stats.kind!r}")


def _best(scores: np.ndarray, count: int) -> np.ndarray:
    """Positions of the ``count`` highest ``scores``, best first (ties: the lower position)."""
    n = scores.size
    count = min(int(count), n)
    if count < n:
        top = np.argpartition(-scores, count - 1)[:count]
    else:
        top = np.arange(n)
    return top[np.argsort(-scores[top], kind="stable")]


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_index(path: str | os.PathLike, rows: IndexRows, token: str, fingerprint: str, cohort: str,
                capacity: int | None = None) -> None:
    """Write a whole index file (temp file, fsync, rename)."""
    from speakerid.fileio import atomic_path

    dim = int(rows.vectors.shape[1])
    n = len(rows)
    capacity = max(n, int(capacity or 0), 1)
    off_r, off_mu, off_sd, off_m, total = _layout(capacity, dim)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.truncate(total)  # sparse: the unused capacity takes no disk
            f.write(Header(dim, capacity, n, token, fingerprint, cohort).to_bytes())
            for offset, arr, dtype in ((off_r, rows.rowids, np.int64), (off_mu, rows.mu, np.float64),
                                       (off_sd, rows.sd, np.float64), (off_m, rows.vectors, np.float32)):
                f.seek(offset)
                _write_array(f, np.asarray(arr, dtype=dtype))
            f.flush()
            os.fsync(f.fileno())
    write_step("index-file")


def _write_array(f, arr: np.ndarray, chunk_bytes: int = 64 * 2**20) -> None:
    """Write ``arr`` in slices (no whole-array byte copy of a large matrix)."""
    flat = np.ascontiguousarray(arr).reshape(-1)
    step = max(1, chunk_bytes // max(flat.itemsize, 1))
    for start in range(0, flat.size, step):
        f.write(flat[start : start + step].tobytes())


def grown_capacity(needed: int) -> int:
    """Capacity of a new file for ``needed`` rows: room to append a quarter more in place."""
    return needed + needed // 4 + 1024


def positions(rowids: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Row number of each of ``wanted`` in ``rowids`` (-1 where absent); vectorised."""
    wanted = np.asarray(wanted, dtype=np.int64)
    if rowids.size == 0 or wanted.size == 0:
        return np.full(wanted.size, -1, dtype=np.int64)
    order = np.argsort(rowids, kind="stable")
    at = np.minimum(np.searchsorted(rowids[order], wanted), rowids.size - 1)
    found = rowids[order][at] == wanted
    return np.where(found, order[at], -1)


def update_index(index: SpeakerIndex, upsert: IndexRows, remove: np.ndarray, token: str) -> bool:
    """Apply a change to a writable, current index file in place: overwrite the rows of known
    rowids, append new ones, drop ``remove`` (the last rows fill the holes). False when the
    file has no room (the caller writes a new file)."""
    h = index.header
    n = h.n
    pos = positions(index.rowids[:n], upsert.rowids)
    new = pos < 0
    gone = positions(index.rowids[:n], remove)
    gone = np.unique(gone[gone >= 0])
    end = n + int(new.sum())
    if end > h.capacity:
        return False
    raw = index._raw
    raw[:HEADER_BYTES] = np.frombuffer(Header(h.dim, h.capacity, n, NO_TOKEN, h.fingerprint, h.cohort).to_bytes(), np.uint8)
    raw.flush()
    write_step("index-invalidated")
    arrays = (index.rowids, index.mu, index.sd, index.matrix)
    values = (upsert.rowids, upsert.mu, upsert.sd, upsert.vectors)
    at = np.where(new, n + np.cumsum(new) - 1, pos)
    for dst, src in zip(arrays, values):
        dst[at] = src
    if gone.size:
        keep_end = end - gone.size
        holes = gone[gone < keep_end]
        tail = np.setdiff1d(np.arange(keep_end, end), gone, assume_unique=True)
        for dst in arrays:
            dst[holes] = dst[tail]
        end = keep_end
    raw.flush()
    write_step("index-rows")
    raw[:HEADER_BYTES] = np.frombuffer(Header(h.dim, h.capacity, end, token, h.fingerprint, h.cohort).to_bytes(), np.uint8)
    raw.flush()
    write_step("index-header")
    return True
