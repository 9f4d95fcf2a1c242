"""Training checkpoints: atomic save, keep-last-N, resume, weight averaging, RNG state.

A checkpoint (``exp/checkpoints/epoch_NNNN.pt``) is a dict of tensors, numbers, strings,
lists and dicts only, so that it loads with ``torch.load(..., weights_only=True)`` and
never unpickles code. It is written to a temporary file and renamed (atomic on POSIX), so
a run killed while saving leaves the previous checkpoints intact.

``model.pt`` is the ENCODER's state dict, averaged over the last K checkpoints (weight
averaging as in WeSpeaker's ``average_model.py``: float tensors are averaged, integer
buffers such as BatchNorm's ``num_batches_tracked`` are taken from the newest).
"""

from __future__ import annotations

import io
import logging
import os
import random
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from speakerid.fileio import write_bytes_atomic
from speakerid.limits import shorten

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
_CKPT_RE = re.compile(r"^epoch_(\d{4,})\.pt$")


class CheckpointError(ValueError):
    """A checkpoint or model file is missing, unreadable or of the wrong kind."""


def checkpoint_path(exp_dir: str | os.PathLike, epoch: int) -> Path:
    """``exp/checkpoints/epoch_NNNN.pt`` for a 1-based epoch number."""
    return Path(exp_dir) / CHECKPOINT_DIR / f"epoch_{epoch:04d}.pt"


def list_checkpoints(exp_dir: str | os.PathLike) -> list[Path]:
    """Checkpoints of an experiment, oldest first (by epoch number, not file time)."""
    ckpt_dir = Path(exp_dir) / CHECKPOINT_DIR
    if not ckpt_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in ckpt_dir.iterdir() if (m := _CKPT_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def torch_bytes(obj: Any) -> memoryview:
    """``torch.save(obj)`` into memory: the file is then written by Python, whose write errors
    (a full disk) are ordinary ``OSError``s naming the file, where torch's own file writer
    raises ``c10::Error`` or aborts the process."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getbuffer()


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """``torch.save`` through a temporary file + rename."""
    write_bytes_atomic(path, torch_bytes(state))


def file_budget(expected_bytes: int) -> int:
    """Most bytes a weights file for a model of ``expected_bytes`` may declare: room for a
    training checkpoint (optimizer moments) and a large loss head, not for a gigabyte more."""
    return 4 * int(expected_bytes) + (512 << 20)


def state_bytes(module: torch.nn.Module) -> int:
    """Bytes of ``module``'s state dict (its parameters and buffers)."""
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


def declared_bytes(path: Path) -> int:
    """Bytes a torch file will inflate to: the sum of its zip records' declared sizes (the
    file size for the legacy, uncompressed format); read from the zip directory, nothing inflated."""
    try:
        with zipfile.ZipFile(path) as z:
            return sum(info.file_size for info in z.infolist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return path.stat().st_size


def check_weights(state: dict[Any, Any], source: str) -> None:
    """A state dict of named tensors with finite floating values; else CheckpointError naming
    ``source`` and the first bad entry (NaN/inf weights give NaN embeddings that compare equal to nothing)."""
    for key, value in state.items():
        if not isinstance(key, str):
            raise CheckpointError(f"{source}: state dict key {shorten(repr(key))} is not a string")
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{source}: {shorten(key)} is a {type(value).__name__}, not a tensor")
        if torch.is_floating_point(value) or torch.is_complex(value):
            bad = int(value.numel() - torch.isfinite(value).sum())
            if bad:
                raise CheckpointError(f"{source}: {shorten(key)} has {bad} of {value.numel()} values NaN or infinite")


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", max_bytes: int | None = None
) -> dict[str, Any]:
    """Load a checkpoint or state dict safely (``weights_only=True``); errors name the file.

    ``max_bytes``: refuse, before reading any tensor, a file whose records declare more bytes
    (a small compressed file can declare gigabytes).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    if max_bytes is not None and (declared := declared_bytes(path)) > max_bytes:
        raise CheckpointError(
            f"{path}: declares {declared / 2**20:.0f} MiB of data, more than the {max_bytes / 2**20:.0f} MiB "
            "a weights file for this model may hold; not read"
        )
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for corrupt / foreign files
        raise CheckpointError(f"{path}: not a loadable weights-only checkpoint ({type(e).__name__}: {e})".splitlines()[0]) from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict, found {type(obj).__name__}")
    return obj


def prune_checkpoints(exp_dir: str | os.PathLike, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` checkpoints (``keep <= 0`` keeps all); returns the deleted."""
    if keep <= 0:
        return []
    old = list_checkpoints(exp_dir)[:-keep]
    for p in old:
        p.unlink(missing_ok=True)
    return old


def average_state_dicts(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Element-wise mean of float tensors (accumulated in float64); other tensors from the last."""
    if not states:
        raise CheckpointError("no state dicts to average")
    keys = list(states[-1])
    for i, s in enumerate(states[:-1]):
        if list(s) != keys:
            raise CheckpointError(f"cannot average: state dict {i} has different keys from the newest")
    out: dict[str, torch.Tensor] = {}
    for k in keys:
        last = states[-1][k]
        if torch.is_floating_point(last):
            acc = torch.zeros_like(last, dtype=torch.float64)
            for s in states:
                acc += s[k].to(torch.float64)
            out[k] = (acc / len(states)).to(last.dtype)
        else:
            out[k] = last.clone()
    return out


def average_checkpoints(paths: list[Path], key: str = "model") -> dict[str, torch.Tensor]:
    """Average ``ckpt[key]`` (the encoder state dict) over checkpoint files."""
    states = []
    for p in paths:
        ckpt = load_checkpoint(p)
        if key not in ckpt:
            raise CheckpointError(f"{p}: no {key!r} entry; not a speakerid training checkpoint")
        states.append(ckpt[key])
    return average_state_dicts(states)


def get_rng_state() -> dict[str, Any]:
    """Global RNG states (torch CPU/CUDA, numpy, python) as weights_only-loadable values."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {"version": py_state[0], "state": list(py_state[1]), "gauss": py_state[2]},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`get_rng_state`."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
