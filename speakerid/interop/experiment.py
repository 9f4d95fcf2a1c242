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

from speakerid.checkpoint import CheckpointError, check_weights, file_budget, state_bytes, torch_bytes
from speakerid.config import TrainConfig, save_config
from speakerid.limits import shorten
from speakerid.models import build_encoder

__all__ = ["ModelImportError", "file_sha256", "check_state_dict", "checkpoint_budget", "write_experiment"]


class ModelImportError(ValueError):
    """A source checkpoint or config that cannot be imported (one line, names the file)."""


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def build_checked_encoder(cfg: TrainConfig, config_source: str) -> torch.nn.Module:
    """The config's encoder; model arguments it cannot be built with (a negative size) are an
    error naming ``config_source``."""
    try:
        return build_encoder(cfg)
    except (RuntimeError, ValueError, TypeError) as e:
        detail = shorten(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
        raise ModelImportError(
            f"{config_source}: cannot build {cfg.model.name} from {shorten(cfg.model.kwargs)} ({detail})"
        ) from None


def check_state_dict(cfg: TrainConfig, state: dict[str, torch.Tensor], source: str,
                     config_source: str | None = None) -> torch.nn.Module:
    """Build the config's encoder and load ``state`` strictly; errors name ``source`` and the keys.

    Non-tensor values and NaN / infinite weights are refused first (:func:`check_weights`)."""
    try:
        check_weights(state, source)
    except CheckpointError as e:
        raise ModelImportError(str(e)) from None
    encoder = build_checked_encoder(cfg, config_source or source)
    own = encoder.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ModelImportError(
            f"{source}: weights do not fit {cfg.model.name}: missing {shorten(missing[:3])}{'...' if len(missing) > 3 else ''}"
            f" ({len(missing)}), unexpected {shorten(unexpected[:3])}{'...' if len(unexpected) > 3 else ''} ({len(unexpected)})"
        )
    for key, value in state.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise ModelImportError(f"{source}: {key} has shape {shorten(tuple(value.shape))}, {cfg.model.name} expects {tuple(own[key].shape)}")
    encoder.load_state_dict(state, strict=True)
    return encoder.eval()


def checkpoint_budget(cfg: TrainConfig, config_source: str) -> int:
    """Most bytes a source checkpoint for ``cfg``'s encoder may declare (:func:`speakerid.checkpoint.file_budget`)."""
    return file_budget(state_bytes(build_checked_encoder(cfg, config_source)))


def check_front_end(cfg: TrainConfig, config_source: str) -> torch.nn.Module:
    """Validate the config (the same rules as a config file: positive frame length and shift, ...)
    and build its front end, so a bad one fails here rather than at the first ``enroll``."""
    from speakerid.config import ConfigError, config_from_dict, config_to_dict
    from speakerid.inference import build_frontend

    try:
        config_from_dict(TrainConfig, config_to_dict(cfg), config_source)
    except ConfigError as e:
        raise ModelImportError(str(e)) from None
    try:
        frontend = build_frontend(cfg.features)
        frontend(torch.zeros(1, cfg.features.sample_rate))
    except (RuntimeError, ValueError) as e:
        raise ModelImportError(f"{config_source}: front end unusable ({shorten(str(e).strip().splitlines()[0])})") from None
    return frontend


def check_probe(frontend: torch.nn.Module, encoder: torch.nn.Module, sample_rate: int, source: str) -> None:
    """One second of noise through front end and encoder must give a finite embedding."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        try:
            out = encoder.eval()(frontend(0.1 * torch.randn(1, sample_rate, generator=g)))
        except (RuntimeError, ValueError) as e:
            raise ModelImportError(f"{source}: the model cannot embed 1 s of audio ({shorten(str(e).strip().splitlines()[0])})") from None
    if not bool(torch.isfinite(out).all()):
        raise ModelImportError(f"{source}: the model gives a NaN or infinite embedding for 1 s of audio")


def write_experiment(
    out: str | os.PathLike, cfg: TrainConfig, state: dict[str, torch.Tensor], provenance: dict[str, Any],
    force: bool = False, source: str = "<checkpoint>", files: dict[str, Path] | None = None, check: bool = True,
    config_source: str | None = None,
) -> Path:
    """Check ``state`` against ``cfg``'s encoder, then write ``out/{config.yaml, model.pt, import.json}``
    (plus ``files``: name in ``out`` -> source path, copied).

    ``check=False`` skips building the encoder (its files only exist once ``out`` is in place;
    the caller checked ``state`` itself). The front end is always checked (``config_source``,
    default ``source``, is named in its errors). ``out`` must not exist or be an empty folder
    unless ``force`` (then a folder or regular file there is replaced as a whole; anything else
    never is). Write errors (a read-only folder, a full disk) name ``out``.
    """
    out = Path(out)
    if out.exists() and not (out.is_dir() or out.is_file()):
        raise ModelImportError(f"{out}: exists and is not a folder or a regular file; refusing to replace it")
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise ModelImportError(f"{out}: exists and is not empty; pass --force to replace it")
    frontend = check_front_end(cfg, config_source or source)
    if check:
        encoder = check_state_dict(cfg, state, source, config_source)
        check_probe(frontend, encoder, cfg.features.sample_rate, source)
        weights = encoder.state_dict()
    else:
        weights = state
    model_bytes = torch_bytes({k: v.detach().clone().contiguous() for k, v in weights.items()})
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as e:
        raise ModelImportError(f"{out}: cannot write here ({e.strerror or e})") from None
    try:
        for name, src in (files or {}).items():
            shutil.copyfile(src, stage / name)
        save_config(cfg, stage / "config.yaml")
        (stage / "model.pt").write_bytes(model_bytes)
        (stage / "import.json").write_text(json.dumps(provenance, indent=1, sort_keys=True, default=str) + "\n", encoding="utf-8")
        os.chmod(stage, 0o777 & ~_umask())
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old"
            if old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
        os.replace(stage, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)
    except OSError as e:
        shutil.rmtree(stage, ignore_errors=True)
        raise ModelImportError(f"{out}: cannot write the experiment ({e.strerror or shorten(e)})") from None
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return out


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
