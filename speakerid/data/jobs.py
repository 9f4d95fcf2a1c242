"""Resumable jobs over a data dir (``features``, ``shards``, ``extract``): one set of rules.

* Inputs are identified by content proxies: :func:`inputs_digest` hashes every
  ``(id, path, file size, mtime)``, so pointing the same ids at other files (or rewriting a
  file) makes a rerun recompute instead of keeping stale results.
* Finished pieces of work are kept in a :class:`PartStore`: each part is written under a
  unique hidden temporary name and renamed into place (:func:`speakerid.fileio.atomic_path`),
  the part glob never matches those temporaries, and a part that cannot be read (a crash of
  the file system, a hand copy) is removed with a warning and recomputed.
* :func:`remove_temporaries` clears the hidden temporaries a killed writer left next to the
  outputs, once the outputs are known to be complete.
* Pool workers die with their parent (:func:`die_with_parent`, ``PR_SET_PDEATHSIG``), so a
  killed job leaves no worker racing its rerun.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import signal
import sys
import uuid
import zipfile
from pathlib import Path
from typing import Iterable

import numpy as np

from speakerid.fileio import atomic_path

logger = logging.getLogger(__name__)

PART_PREFIX = "rank"
_UNREADABLE = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)


def inputs_digest(items: Iterable[tuple[str, str]]) -> str:
    """sha256 over ``id path size mtime_ns`` of every (id, path); a missing file hashes as size -1."""
    h = hashlib.sha256()
    for utt, path in items:
        try:
            st = os.stat(path)
            size, mtime = st.st_size, st.st_mtime_ns
        except OSError:
            size, mtime = -1, -1
        h.update(f"{utt}\t{path}\t{size}\t{mtime}\n".encode("utf-8"))
    return h.hexdigest()


def unique_temp(path: str | os.PathLike) -> Path:
    """A hidden temporary name next to ``path``, unique per writer (pid + random)."""
    path = Path(path)
    return path.parent / f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"


def remove_temporaries(directory: str | os.PathLike, names: Iterable[str]) -> int:
    """Delete the hidden temporaries (``.<name>.*``) of ``names`` in ``directory``; returns how many."""
    directory = Path(directory)
    count = 0
    for name in names:
        for tmp in directory.glob(f".{name}.*"):
            if tmp.is_file():
                tmp.unlink(missing_ok=True)
                count += 1
    return count


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux; a no-op elsewhere).

    Used as the initializer of worker pools, so that SIGKILL of a job takes its workers along.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except OSError:  # no libc under that name: keep the default behaviour
        return
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


class PartStore:
    """Finished chunks of a job, ``<dir>/rankRRR-NNNNNN.npz``, each tagged with the run ``key``.

    A part holds ``ids``, ``embeddings`` (any 2-D array) and ``key``. Parts of another key
    (another model or other inputs) and unreadable parts are removed with a warning.
    """

    def __init__(self, directory: str | os.PathLike, key: str) -> None:
        self.dir, self.key = Path(directory), key

    def paths(self, rank: int | None = None) -> list[Path]:
        if not self.dir.is_dir():
            return []
        pattern = f"{PART_PREFIX}{rank:03d}-*.npz" if rank is not None else f"{PART_PREFIX}*-*.npz"
        return sorted(p for p in self.dir.glob(pattern) if not p.name.startswith(".") and p.is_file())

    def read(self) -> dict[str, np.ndarray]:
        """id -> row of every readable part written with this key."""
        done: dict[str, np.ndarray] = {}
        for p in self.paths():
            try:
                with np.load(p, allow_pickle=False) as z:
                    key, ids, rows = str(z["key"]), z["ids"].tolist(), np.asarray(z["embeddings"])
            except _UNREADABLE as e:
                logger.warning("%s: unreadable part (%s); removed, it will be recomputed", p, type(e).__name__)
                p.unlink(missing_ok=True)
                continue
            if key != self.key:
                logger.warning("%s: from another model, policy or input set; removed (it will be recomputed)", p)
                p.unlink(missing_ok=True)
                continue
            for utt, row in zip(ids, rows):
                done[str(utt)] = row
        return done

    def write(self, rank: int, ids: list[str], rows: np.ndarray) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        index = 1 + max((int(p.stem.split("-")[1]) for p in self.paths(rank)), default=-1)
        path = self.dir / f"{PART_PREFIX}{rank:03d}-{index:06d}.npz"
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez(tmp, ids=np.array(ids), embeddings=np.asarray(rows, dtype=np.float32), key=np.array(self.key))
        return path

    def remove(self) -> None:
        """Delete the whole store (after a successful merge)."""
        shutil.rmtree(self.dir, ignore_errors=True)
