"""Embedding files: ``.npz`` (arrays ``ids`` and ``embeddings``) or Kaldi ``.scp``/``.ark``.

``load_embeddings`` also accepts a directory holding ``embeddings.npz`` or ``embedding.scp``
(what ``speakerid extract`` writes). ``.npz`` files are read with ``allow_pickle=False``:
user files are never unpickled. Ids go through the trial-list id rule
(:func:`speakerid.scoring.trials.normalise_id`) so they match trial ids.
"""

from __future__ import annotations

import io
import logging
import os
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np

from speakerid.fileio import atomic_path, atomic_write
from speakerid.limits import MAX_ID_CHARS, shorten
from speakerid.scoring.trials import normalise_id

__all__ = [
    "EmbeddingsError",
    "MissingIdsError",
    "load_embeddings",
    "save_embeddings",
    "lookup_ids",
    "missing_ids",
    "DIR_CANDIDATES",
]

logger = logging.getLogger(__name__)

#: files looked for, in order, when ``load_embeddings`` is given a directory
DIR_CANDIDATES = ("embeddings.npz", "embedding.scp", "embeddings.scp", "embedding.ark")


class EmbeddingsError(ValueError):
    """An unreadable or inconsistent embedding file (the message names it)."""


class MissingIdsError(EmbeddingsError):
    """Ids asked for that an embedding file does not have."""


def _resolve(path: Path) -> Path:
    if path.is_dir():
        for name in DIR_CANDIDATES:
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(f"{path}: directory has none of {', '.join(DIR_CANDIDATES)}")
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    return path


def _load_npz(path: Path) -> tuple[list[str], np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = {"ids", "embeddings"} - set(z.files)
            if missing:
                raise EmbeddingsError(f"{path}: .npz lacks array(s) {sorted(missing)} (has {z.files})")
            ids = z["ids"]
            emb = z["embeddings"]
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise EmbeddingsError(f"{path}: not a readable .npz file ({e})") from None
    except ValueError as e:  # object arrays would need pickle
        raise EmbeddingsError(f"{path}: {e}") from None
    if ids.dtype.kind not in "US":
        raise EmbeddingsError(f"{path}: 'ids' must be a string array, got dtype {ids.dtype}")
    ids_list = [i.decode() if isinstance(i, bytes) else str(i) for i in ids.tolist()]
    return ids_list, emb


def _load_kaldi(path: Path) -> tuple[list[str], np.ndarray]:
    import kaldiio

    reader = kaldiio.load_ark if path.suffix == ".ark" else kaldiio.load_scp_sequential
    ids: list[str] = []
    rows: list[np.ndarray] = []
    try:
        for key, value in reader(str(path)):
            arr = np.asarray(value)
            if arr.ndim == 2 and arr.shape[0] == 1:
                arr = arr[0]
            if arr.ndim != 1:
                raise EmbeddingsError(f"{path}: entry {key!r} has shape {arr.shape}, expected a vector")
            ids.append(key)
            rows.append(arr)
    except EmbeddingsError:
        raise
    except (OSError, ValueError, KeyError, EOFError) as e:
        raise EmbeddingsError(f"{path}: not a readable Kaldi {path.suffix} file ({e})") from None
    if not rows:
        raise EmbeddingsError(f"{path}: no embeddings in the file")
    dims = {r.shape[0] for r in rows}
    if len(dims) > 1:
        raise EmbeddingsError(f"{path}: embeddings of different dimensions {sorted(dims)}")
    return ids, np.stack(rows)


def load_embeddings(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """Read embeddings: ``(ids, emb[N, D] float32)``; errors name the file and the problem."""
    path = _resolve(Path(path))
    if path.suffix == ".npz":
        ids, emb = _load_npz(path)
    elif path.suffix in (".scp", ".ark"):
        ids, emb = _load_kaldi(path)
    else:
        raise EmbeddingsError(f"{path}: unknown embedding format; use .npz, .scp or .ark")
    if emb.ndim != 2 or emb.shape[0] != len(ids):
        raise EmbeddingsError(f"{path}: {len(ids)} ids but embeddings of shape {emb.shape}")
    if emb.shape[0] == 0:
        raise EmbeddingsError(f"{path}: no embeddings in the file")
    if emb.dtype.kind != "f":
        raise EmbeddingsError(f"{path}: embeddings must be floats, got dtype {emb.dtype}")
    emb = emb.astype(np.float32, copy=False)
    if not np.isfinite(emb).all():
        bad = int(np.flatnonzero(~np.isfinite(emb).all(axis=1))[0])
        raise EmbeddingsError(f"{path}: embedding of {shorten(ids[bad])!r} has NaN/inf values")
    long = next((i for i in ids if len(i) > MAX_ID_CHARS), None)
    if long is not None:
        raise EmbeddingsError(f"{path}: an id of {len(long)} characters (ids are at most {MAX_ID_CHARS}): {shorten(long)!r}")
    ids = [normalise_id(i) for i in ids]
    uniq, counts = np.unique(np.asarray(ids), return_counts=True)
    if uniq.size != len(ids):
        dup = uniq[counts > 1]
        raise EmbeddingsError(f"{path}: {dup.size} duplicate id(s), e.g. {shorten(dup[0])!r}")
    logger.debug("%s: %d embeddings of dimension %d", path, emb.shape[0], emb.shape[1])
    return ids, emb


def save_embeddings(path: str | os.PathLike, ids: Sequence[str], emb: np.ndarray,
                    extra: dict[str, np.ndarray] | None = None) -> None:
    """Write embeddings atomically; the format follows the extension.

    ``.npz``: arrays ``ids`` (str) and ``embeddings`` (float32), plus ``extra`` arrays by name
    (e.g. a cohort's ``top_k``; ``.npz`` only). ``.ark``: a Kaldi binary archive of float32
    vectors. ``.scp``: the same archive written next to it (same name, ``.ark``) plus the scp
    index, whose ark paths are absolute so it can be read from any working directory.
    """
    path = Path(path)
    emb = np.asarray(emb, dtype=np.float32)
    ids = [str(i) for i in ids]
    if emb.ndim != 2 or emb.shape[0] != len(ids):
        raise EmbeddingsError(f"{path}: {len(ids)} ids but embeddings of shape {emb.shape}")
    if len(set(ids)) != len(ids):
        raise EmbeddingsError(f"{path}: duplicate ids given")
    if any(not i or any(c.isspace() for c in i) for i in ids):
        raise EmbeddingsError(f"{path}: ids must be non-empty and contain no whitespace")
    if extra and (path.suffix != ".npz" or {"ids", "embeddings"} & set(extra)):
        raise EmbeddingsError(f"{path}: extra arrays {sorted(extra)} need a .npz file and names other than ids / embeddings")
    if path.suffix == ".npz":
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez(tmp, ids=np.asarray(ids, dtype=str), embeddings=emb, **(extra or {}))
    elif path.suffix == ".ark":
        _save_ark(path, ids, emb)
    elif path.suffix == ".scp":
        ark = path.with_suffix(".ark").resolve()
        offsets = _save_ark(ark, ids, emb)
        with atomic_write(path) as f:
            for key, off in zip(ids, offsets):
                f.write(f"{key} {ark}:{off}\n")
    else:
        raise EmbeddingsError(f"{path}: unknown embedding format; use .npz, .scp or .ark")


def _save_ark(path: Path, ids: list[str], emb: np.ndarray) -> list[int]:
    """Write a Kaldi ark atomically; return each entry's byte offset (for an scp)."""
    import kaldiio

    index = io.StringIO()
    with atomic_path(path, suffix=".ark") as tmp:
        with open(tmp, "wb") as f:
            # kaldiio writes "key name:offset" scp lines; we only keep the offsets, the ark's
            # final name is not the temporary one
            kaldiio.save_ark(f, {k: v for k, v in zip(ids, emb)}, scp=index)
            f.flush()
            os.fsync(f.fileno())
    return [int(line.rsplit(":", 1)[1]) for line in index.getvalue().splitlines()]


def missing_ids(known: Sequence[str] | np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """The sorted unique ids of ``wanted`` that are not in ``known``."""
    return np.setdiff1d(np.asarray(wanted), np.asarray(known))


def lookup_ids(known: Sequence[str] | np.ndarray, wanted: np.ndarray, source: str = "embeddings") -> np.ndarray:
    """Row index in ``known`` of every id in ``wanted`` (vectorised: sort + searchsorted).

    Raises MissingIdsError saying how many ids are missing and naming the first few.
    """
    known_arr = np.asarray(known)
    wanted = np.asarray(wanted)
    order = np.argsort(known_arr, kind="stable")
    sorted_known = known_arr[order]
    pos = np.searchsorted(sorted_known, wanted)
    pos_clipped = np.minimum(pos, sorted_known.size - 1)
    found = sorted_known[pos_clipped] == wanted
    if not found.all():
        missing = np.unique(wanted[~found])
        raise MissingIdsError(
            f"{source}: no embedding for {missing.size} id(s) (of {np.unique(wanted).size} needed), "
            f"e.g. {shorten(', '.join(missing[:5].tolist()), 240)}"
        )
    return order[pos_clipped]
