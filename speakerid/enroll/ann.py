"""Approximate search over the speaker index for large DBs (optional: ``pip install faiss-cpu``,
the ``faiss`` extra).

``identify`` ranks speakers through the speaker index (:mod:`speakerid.enroll.index`) by one
matrix product over every speaker (``search="exact"``): at 10^6 speakers that reads the whole
float32 matrix (768 MB for 192-d) and costs about 100 ms. With ``search="ann"`` (or ``"auto"`` at
:data:`ANN_MIN_SPEAKERS` speakers or more, when faiss is installed) a short binary code of each
speaker is scanned instead and only the best :data:`CANDIDATES` by code are ranked exactly.

The codes are sign random projections (Charikar, "Similarity estimation techniques from rounding
algorithms", STOC 2002, section 3): bit j of a unit vector v is ``[v . r_j > 0]``, and the
fraction of bits in which two codes differ estimates ``angle(u, v) / pi``, so the Hamming distance
ranks speakers by cosine up to a binomial error that shrinks with the number of bits. The
directions ``r_j`` are :data:`BITS_PER_DIM` random orthogonal bases side by side (orthogonal
directions carry independent bits; at 10^6 speakers 192-bit orthogonal codes found the exact best
row for 99.7 % of real-speech probes at 256 candidates where Gaussian ones found 96.0 %:
benchmarks/results_identify_ann.md). faiss's ``IndexBinaryFlat`` scans the codes (24 bytes per
speaker for 192-d: 1/32 of the float32 matrix); the candidates are ranked again exactly from the index (the
cosine, or the AS-norm sum from the per-speaker statistics), and the best ``top_k + 16`` are scored
exactly from their SQLite rows as before. So an ANN answer is always a correctly scored speaker;
what ANN can lose is recall (the exact best not among the candidates):
``benchmarks/bench_identify_ann.py`` measures it.

Why codes and not a graph (HNSW, which this module used before) or IVF: no training step (the
projection is random, fixed at build), a build that is one matrix product (10^6 speakers in
about 2 s where the HNSW graph took 13 minutes on 2 threads), appends and deletes of a row each,
and on random distractors at 10^6 the graph's greedy walk found the exact best for only 93 % of
real-speech probes. Removed or re-enrolled speakers are tombstones (their label maps to no row;
the search asks for proportionally more candidates) and the codes are rebuilt once tombstones
exceed :data:`REBUILD_FRACTION` of the speakers. New speakers are appended.

The file ``<db>.index.codes`` (:func:`ann_path`): the codes (uint8 ``[ntotal, bits / 8]``), the
``labels`` (int64: the SQLite rowid of each faiss label, -1 for a tombstone), ``signature``
(uint64: a hash of each coded vector's bits, to see that a speaker's vector changed without
coding it again), the projection (float32 ``[dim, bits]``), a JSON trailer
(the speaker index ``token`` it reflects, the sizes, crc32 of all the bytes before it) and 16
bytes: magic ``SPKANN02``, the trailer's length and crc32. Writers of the DB never touch it: a
reader whose file's token differs from the speaker index's catches it up (codes the rows that
are new or changed, tombstones the rest, from the index's rowids and vectors) and writes it back
atomically (temp + fsync + rename), so a kill at any moment leaves the old file or the new one,
both valid for the state they name. A file that is not whole (torn, truncated, garbage, another
dimension) is rebuilt, with a logged message.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import struct
import time
import zlib
from pathlib import Path

import numpy as np

from speakerid.enroll.index import SpeakerIndex, ProbeStats, positions
from speakerid.enroll.records import SpeakerDBError

logger = logging.getLogger(__name__)

ANN_SUFFIX = ".index.codes"
SEARCH_MODES = ("auto", "exact", "ann")
# "auto" uses the codes from this many speakers (benchmarks/results_identify_ann.md: below it the
# matrix product costs a few ms, no more than the code scan plus the exact rescoring)
ANN_MIN_SPEAKERS = 50_000
BITS_PER_DIM = 1  # 192-bit codes (24 bytes) for 192-d embeddings
MIN_BITS = 128  # small embeddings still get codes long enough to rank by
SEED = 0  # the projection's; fixed so that a rebuild gives the same file
# candidates ranked exactly (results_identify_ann.md, 10^6 speakers, orthogonal codes: 192 bits found
# the exact best row of every probe at 1024 candidates (0.998 at 256) with a 4.4 ms scan; 384 bits
# at 128+ candidates with a 5.0 ms one)
CANDIDATES = 1024
REBUILD_FRACTION = 0.25
MAGIC = b"SPKANN02"
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


def projection(dim: int, bits: int, seed: int = SEED) -> np.ndarray:
    """``[dim, bits]`` float32: ``ceil(bits / dim)`` random orthonormal bases side by side, the
    first ``bits`` columns (QR of a Gaussian matrix, signs fixed so the basis is uniform)."""
    rng = np.random.default_rng(seed)
    blocks = []
    for _ in range(-(-bits // dim)):
        q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
        blocks.append(q * np.sign(np.diag(r)))
    return np.ascontiguousarray(np.concatenate(blocks, axis=1)[:, :bits], dtype=np.float32)


def signatures(vectors: np.ndarray) -> np.ndarray:
    """uint64 ``[n]``: a multilinear hash of each float32 row's bits (integer arithmetic mod 2^64,
    so it does not depend on the summation order as a floating-point dot product would)."""
    words = np.ascontiguousarray(vectors, dtype=np.float32).view(np.uint32).astype(np.uint64)
    keys = np.random.default_rng(SEED + 1).integers(1, 2**63, words.shape[1], dtype=np.uint64) | np.uint64(1)
    return (words * keys).sum(axis=1, dtype=np.uint64)


class AnnIndex:
    """Binary codes of speaker-index rows: ``labels[i]`` is code i's SQLite rowid (-1: tombstone);
    ``to_row[i]`` its row in the speaker index it was last bound to (-1: none)."""

    def __init__(self, codes, rotation: np.ndarray, labels: np.ndarray, signature: np.ndarray, token: str,
                 built: int) -> None:
        self.codes, self.rotation, self.labels, self.signature = codes, rotation, labels, signature
        self.token, self.built = token, built
        self.to_row = np.full(labels.size, -1, dtype=np.int64)
        self.bound: SpeakerIndex | None = None

    @property
    def dim(self) -> int:
        return int(self.rotation.shape[0])

    @property
    def bits(self) -> int:
        return int(self.rotation.shape[1])

    def encode(self, vectors: np.ndarray) -> np.ndarray:
        """The codes of ``vectors`` ``[n, dim]``: uint8 ``[n, bits / 8]``."""
        return np.packbits(np.asarray(vectors, dtype=np.float32) @ self.rotation > 0, axis=1)

    def _append(self, vectors: np.ndarray) -> np.ndarray:
        """Codes ``vectors`` (chunked) onto the faiss index; returns their signatures."""
        sigs = []
        for start in range(0, len(vectors), _CHUNK):
            part = np.asarray(vectors[start : start + _CHUNK], dtype=np.float32)
            self.codes.add(self.encode(part))
            sigs.append(signatures(part))
        return np.concatenate(sigs) if sigs else np.zeros(0, dtype=np.uint64)

    @classmethod
    def build(cls, index: SpeakerIndex, bits_per_dim: int = BITS_PER_DIM) -> AnnIndex:
        faiss = faiss_module()
        n, dim = index.n, index.header.dim
        bits = -(-max(bits_per_dim * dim, MIN_BITS) // 8) * 8
        t0 = time.perf_counter()
        ann = cls(faiss.IndexBinaryFlat(bits), projection(dim, bits), np.array(index.rowids[:n], dtype=np.int64),
                  np.zeros(0, dtype=np.uint64), index.header.token, n)
        ann.signature = ann._append(index.matrix[:n])
        ann.to_row = np.arange(n, dtype=np.int64)
        ann.bound = index
        logger.info("ANN codes of %d speakers built in %.1f s", n, time.perf_counter() - t0)
        return ann

    def catch_up(self, index: SpeakerIndex) -> bool | None:
        """Bind to ``index`` (a current speaker index): map labels to its rows; when its token
        differs, tombstone labels whose speaker is gone or whose vector changed (its signature
        differs) and code its rows the index lacks. Returns whether the codes changed, or None
        when a rebuild is due (tombstones over REBUILD_FRACTION of the speakers, or another dimension)."""
        if index.header.dim != self.dim:
            return None
        n = index.n
        rows = positions(index.rowids[:n], self.labels)
        rows[self.labels < 0] = -1
        changed = False
        if index.header.token != self.token:
            live = np.flatnonzero(rows >= 0)
            for start in range(0, live.size, _CHUNK):  # a changed vector (re-enrolment): tombstone it
                part = live[start : start + _CHUNK]
                now = signatures(index.matrix[rows[part]])
                rows[part[now != self.signature[part]]] = -1
            gone = (rows < 0) & (self.labels >= 0)
            covered = np.zeros(n, dtype=bool)
            covered[rows[rows >= 0]] = True
            add = np.flatnonzero(~covered)
            dead = int((self.labels < 0).sum() + gone.sum())
            if dead > REBUILD_FRACTION * max(n, 1):  # tombstones waste the scan and the candidates
                return None
            self.labels[gone] = -1
            self.signature = np.concatenate([self.signature, self._append(index.matrix[add])])
            self.labels = np.concatenate([self.labels, np.asarray(index.rowids[add], dtype=np.int64)])
            rows = np.concatenate([rows, add])
            changed = True  # at least the token: written back so that the next reader need not compare
            self.token = index.header.token
        self.to_row, self.bound = rows, index
        return changed

    def search(self, index: SpeakerIndex, test: np.ndarray, count: int,
               test_stats: ProbeStats | None = None) -> np.ndarray:
        """Rows of ``index`` (the one bound) of the ``count`` best speakers among the candidates
        nearest by code, ranked exactly (see :meth:`SpeakerIndex.rank_rows`), best first."""
        total = self.codes.ntotal
        live = max(1, int((self.labels >= 0).sum()))
        k = min(total, int(max(CANDIDATES, count) * total / live) + 1)
        if k == 0:
            return np.zeros(0, dtype=np.int64)
        _, found = self.codes.search(self.encode(np.reshape(test, (1, -1))), k)
        found = found[0][found[0] >= 0]
        rows = self.to_row[found]
        return index.rank_rows(test, rows[rows >= 0], count, test_stats)

    # ---- the file
    def _parts(self) -> list[bytes]:
        return [faiss_module().vector_to_array(self.codes.xb).tobytes(),  # uint8 [ntotal * bits / 8]
                np.ascontiguousarray(self.labels, dtype="<i8").tobytes(),
                np.ascontiguousarray(self.signature, dtype="<u8").tobytes(),
                np.ascontiguousarray(self.rotation, dtype="<f4").tobytes()]

    def save(self, path: str | os.PathLike) -> None:
        from speakerid.fileio import atomic_path

        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            crc = 0
            for part in self._parts():
                f.write(part)
                crc = zlib.crc32(part, crc)
            trailer = json.dumps({"token": self.token, "dim": self.dim, "bits": self.bits,
                                  "ntotal": int(self.codes.ntotal), "built": int(self.built), "crc": crc}).encode()
            f.write(trailer + _TAIL.pack(MAGIC, len(trailer), zlib.crc32(trailer)))
            f.flush()
            os.fsync(f.fileno())

    @classmethod
    def load(cls, path: str | os.PathLike) -> tuple[AnnIndex | None, str]:
        """The codes of ``path`` and "", or None and why they are not usable ("missing", "not a whole ANN file")."""
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
                dim, bits, ntotal = int(meta["dim"]), int(meta["bits"]), int(meta["ntotal"])
                sizes = (ntotal * bits // 8, 8 * ntotal, 8 * ntotal, 4 * dim * bits)
                if dim <= 0 or bits <= 0 or bits % 8 or sum(sizes) + length + _TAIL.size != total:
                    return bad
                f.seek(0)
                body = f.read(sum(sizes))
                if zlib.crc32(body) != int(meta["crc"]):
                    return bad
        except FileNotFoundError:
            return None, "missing"
        except (OSError, ValueError, KeyError, TypeError) as e:
            return None, f"unreadable ({getattr(e, 'strerror', None) or e})"
        ends = np.cumsum((0,) + sizes)
        codes, labels, signature, rotation = (body[a:b] for a, b in itertools.pairwise(ends))
        index = faiss_module().IndexBinaryFlat(bits)
        index.add(np.frombuffer(codes, dtype=np.uint8).reshape(ntotal, bits // 8))
        return cls(index, np.frombuffer(rotation, dtype="<f4").reshape(dim, bits).astype(np.float32),
                   np.frombuffer(labels, dtype="<i8").astype(np.int64),
                   np.frombuffer(signature, dtype="<u8").astype(np.uint64), str(meta["token"]), int(meta["built"])), ""


class Searcher:
    """How a :class:`~speakerid.enroll.speaker_db.SpeakerDB` ranks speakers through its index:
    the exact matrix product, or the ANN codes (kept in memory between calls, caught up from
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
             test_stats: ProbeStats | None = None) -> np.ndarray:
        """Rows of the ``count`` best speakers of ``index`` for the unit vector ``test``, best first."""
        if not self.uses_ann(index.n):
            self.last = "exact"
            return index.rank(test, count, test_stats)
        ann = self.ann_index(index)
        self.last = "ann"
        return ann.search(index, test, count, test_stats)

    def ann_index(self, index: SpeakerIndex) -> AnnIndex:
        """The ANN codes of ``index`` (a current speaker index; call inside the DB's read transaction)."""
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
