"""Write an imported model as a normal speakerid experiment dir.

The dir holds what training writes and what ``extract`` / ``enroll`` / ``export`` read:
``config.yaml`` (the full resolved :class:`speakerid.config.TrainConfig`, front end included) and
``model.pt`` (the encoder's state dict), plus ``import.json`` (where it came from: toolkit, files,
their sha256, the source config). The weights are checked by loading them strictly into the
encoder the config builds before anything is written; the dir is assembled under a temporary
name beside ``out`` and renamed into place, so a failed import leaves nothing half-written.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from speakerid.config import TrainConfig, save_config
from speakerid.models import build_encoder

__all__ = ["ModelImportError", "file_sha256", "check_state_dict", "write_experiment"]


class ModelImportError(ValueError):
    """A source checkpoint or config that cannot be imported (one line, names the file)."""


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_state_dict(cfg: TrainConfig, state: dict[str, torch.Tensor], source: str) -> torch.nn.Module:
    """Build the config's encoder and load ``state`` strictly; errors name ``source`` and the keys.
    Non-finite weights (NaN / inf, e.g. a diverged training run) are refused."""
    encoder = build_encoder(cfg)
    own = encoder.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ModelImportError(
            f"{source}: weights do not fit {cfg.model.name}: missing {missing[:3]}{'...' if len(missing) > 3 else ''}"
            f" ({len(missing)}), unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''} ({len(unexpected)})"
        )
    for key, value in state.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise ModelImportError(f"{source}: {key} has shape {tuple(value.shape)}, {cfg.model.name} expects {tuple(own[key].shape)}")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise ModelImportError(f"{source}: {key} has {bad} non-finite value(s) (NaN or inf) of {value.numel()}")
    encoder.load_state_dict(state, strict=True)
    return encoder.eval()


def write_experiment(
    out: str | os.PathLike, cfg: TrainConfig, state: dict[str, torch.Tensor], provenance: dict[str, Any],
    force: bool = False, source: str = "<checkpoint>", files: dict[str, Path] | None = None, check: bool = True,
) -> Path:
    """Check ``state`` against ``cfg``'s encoder, then write ``out/{config.yaml, model.pt, import.json}``
    (plus ``files``: name in ``out`` -> source path, copied).

    ``check=False`` skips building the encoder (its files only exist once ``out`` is in place;
    the caller checked ``state`` itself). ``out`` must not exist or be empty unless ``force``
    (then it is replaced as a whole).
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise ModelImportError(f"{out}: exists and is not empty; pass --force to replace it")
    weights = check_state_dict(cfg, state, source).state_dict() if check else state
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for name, src in (files or {}).items():
            shutil.copyfile(src, stage / name)
        save_config(cfg, stage / "config.yaml")
        torch.save({k: v.detach().clone().contiguous() for k, v in weights.items()}, stage / "model.pt")
        (stage / "import.json").write_text(json.dumps(provenance, indent=1, sort_keys=True, default=str) + "\n", encoding="utf-8")
        os.chmod(stage, 0o777 & ~_umask())
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
        os.replace(stage, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return out


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
