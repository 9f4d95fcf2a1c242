"""Import 3D-Speaker checkpoints (``speakerid import --from 3dspeaker --checkpoint X.pt``).

3D-Speaker (Chen et al., "3D-Speaker-Toolkit: An Open-Source Toolkit for Multimodal Speaker
Verification and Diarization", ICASSP 2025; github.com/modelscope/3D-Speaker) saves the
embedding model as a plain state dict (``embedding_model.ckpt`` in training, ``*.pt`` for the
ModelScope releases such as ``iic/speech_campplus_sv_zh_en_16k-common_advanced``).
Supported: CAM++ (``speakerlab.models.campplus.DTDNN.CAMPPlus``; Wang et al., Interspeech
2023), built here as :class:`speakerid.models.CAMPPlus` with ``stats_eps=0`` (its state-dict
names are 3D-Speaker's; tests/test_3dspeaker_parity.py checks the computation).

``--config`` is optional: either 3D-Speaker's training YAML (``embedding_model`` /
``feature_extractor`` entries of ``obj`` + ``args``, ``<name>`` references resolved from the
top level) or a ModelScope ``configuration.json`` (``model.model_config``: ``fbank_dim``,
``emb_size``, ``sample_rate``). Without one, ``feat_dim`` and ``embedding_size`` are read from
the weights' shapes.

Front end (``speakerlab.process.processor.FBank`` as ``speakerlab/bin/infer_sv.py`` uses it):
16 kHz audio as read ([-1, 1]), Kaldi fbank with torchaudio's defaults (povey window, 25 / 10 ms,
no dither), ``n_mels`` bins, the mean over time subtracted (``mean_nor: True``).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import yaml

from speakerid.checkpoint import CheckpointError, load_checkpoint
from speakerid.config import FeatureConfig, ModelConfig, TrainConfig

from .experiment import ModelImportError, file_sha256, write_experiment

__all__ = ["ARCHITECTURES", "read_3dspeaker_config", "convert_3dspeaker", "import_3dspeaker"]

_REF = re.compile(r"^<([A-Za-z]\w*)>$")
_WRAPPERS = ("state_dict", "model", "embedding_model")  # dicts some savers nest the weights in


@dataclass(frozen=True)
class Architecture:
    """How one 3D-Speaker model class becomes a speakerid model."""

    model: str  # speakerid registry name
    kwargs: Callable[[dict[str, Any], dict[str, torch.Tensor], str], dict[str, Any]]  # (args, state, source) -> kwargs
    feat_dim: Callable[[dict[str, torch.Tensor]], int]  # fbank bins implied by the weights


def _campplus_feat_dim(state: dict[str, torch.Tensor]) -> int:
    """FCM flattens 32 channels x feat_dim / 8 into the first TDNN's input."""
    return int(state["xvector.tdnn.linear.weight"].shape[1]) // 32 * 8


def _campplus_kwargs(args: dict[str, Any], state: dict[str, torch.Tensor], source: str) -> dict[str, Any]:
    allowed = {"feat_dim", "embedding_size", "growth_rate", "bn_size", "init_channels", "config_str", "memory_efficient"}
    unknown = sorted(set(args) - allowed)
    if unknown:
        raise ModelImportError(f"{source}: CAMPPlus arguments {unknown} are not supported by the import")
    if args.get("config_str", "batchnorm-relu") != "batchnorm-relu":
        raise ModelImportError(f"{source}: CAMPPlus config_str={args['config_str']!r} not supported (only 'batchnorm-relu')")
    dense = state.get("xvector.dense.linear.weight")
    embed = int(args.get("embedding_size", dense.shape[0] if dense is not None else 512))
    kwargs: dict[str, Any] = {"embed_dim": embed, "stats_eps": 0.0}
    kwargs.update({k: int(args[k]) for k in ("growth_rate", "bn_size", "init_channels") if k in args})
    return kwargs


ARCHITECTURES: dict[str, Architecture] = {
    "speakerlab.models.campplus.DTDNN.CAMPPlus": Architecture("campplus", _campplus_kwargs, _campplus_feat_dim),
}
_MODELSCOPE_TYPES = {"cam++-sv": "speakerlab.models.campplus.DTDNN.CAMPPlus"}
_DEFAULT_ARCH = "speakerlab.models.campplus.DTDNN.CAMPPlus"


def _resolve(value: Any, root: dict[str, Any], source: str, seen: frozenset[str] = frozenset()) -> Any:
    """3D-Speaker's ``<key>`` references (speakerlab.utils.builder), as plain data."""
    if isinstance(value, str) and (m := _REF.match(value)):
        key = m.group(1)
        if key in seen or key not in root:
            raise ModelImportError(f"{source}: reference {value} names no top-level key (or refers to itself)")
        return _resolve(root[key], root, source, seen | {key})
    if isinstance(value, dict):
        return {k: _resolve(v, root, source, seen) for k, v in value.items()}
    return value


def read_3dspeaker_config(path: str | os.PathLike) -> dict[str, Any]:
    """``{"obj": model class, "args": model args, "features": FBank args, "source": path}`` from a 3D-Speaker
    YAML or a ModelScope ``configuration.json``; errors name the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise ModelImportError(f"{path}: config file not found")
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ModelImportError(f"{path}: not a readable config ({str(exc).splitlines()[0][:120]})") from None
    if not isinstance(data, dict):
        raise ModelImportError(f"{path}: expected a mapping")
    if isinstance(data.get("model"), dict) and "model_config" in data["model"]:  # ModelScope configuration.json
        model, mc = data["model"], data["model"]["model_config"] or {}
        if model.get("type") not in _MODELSCOPE_TYPES:
            raise ModelImportError(f"{path}: model type {model.get('type')!r} not supported; choose one of {sorted(_MODELSCOPE_TYPES)}")
        args = {k2: mc[k1] for k1, k2 in (("fbank_dim", "feat_dim"), ("emb_size", "embedding_size")) if k1 in mc}
        features = {"n_mels": mc.get("fbank_dim", 80), "sample_rate": mc.get("sample_rate", 16000), "mean_nor": True}
        return {"obj": _MODELSCOPE_TYPES[model["type"]], "args": args, "features": features, "source": str(path)}
    model = _resolve(data.get("embedding_model"), data, str(path))
    if not isinstance(model, dict) or "obj" not in model:
        raise ModelImportError(f"{path}: no 'embedding_model' with 'obj' / 'args' (expected a 3D-Speaker config)")
    if model["obj"] not in ARCHITECTURES:
        raise ModelImportError(f"{path}: embedding_model {model['obj']!r} not supported; choose one of {sorted(ARCHITECTURES)}")
    feats = _resolve(data.get("feature_extractor") or {}, data, str(path))
    if feats and not str(feats.get("obj", "")).endswith("processor.FBank"):
        raise ModelImportError(f"{path}: feature_extractor {feats.get('obj')!r} not supported (speakerlab FBank only)")
    return {"obj": model["obj"], "args": dict(model.get("args") or {}), "features": dict(feats.get("args") or {}),
            "source": str(path)}


def _unwrap(state: dict[str, Any], source: str) -> dict[str, torch.Tensor]:
    """The tensor dict itself: nested under a wrapper key, ``module.`` (DDP) prefixes dropped."""
    for key in _WRAPPERS:
        if isinstance(state.get(key), dict) and not any(isinstance(v, torch.Tensor) for v in state.values()):
            state = state[key]
            break
    if not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelImportError(f"{source}: not a state dict of tensors")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _features(fb: dict[str, Any], feat_dim: int, source: str) -> FeatureConfig:
    sample_rate = int(fb.get("sample_rate", 16000))
    if sample_rate != 16000:
        raise ModelImportError(f"{source}: FBank sample_rate {sample_rate} not supported (3D-Speaker's FBank is 16 kHz only)")
    if int(fb.get("n_mels", feat_dim)) != feat_dim:
        raise ModelImportError(f"{source}: FBank n_mels {fb['n_mels']} != the model's feat_dim {feat_dim}")
    return FeatureConfig(sample_rate=sample_rate, num_mel_bins=feat_dim, frame_length_ms=25.0, frame_shift_ms=10.0,
                         dither=0.0, cmn=bool(fb.get("mean_nor", True)), window_type="povey", wave_scale="float")


def convert_3dspeaker(
    state: dict[str, Any], spec: dict[str, Any] | None = None, source: str = "<3dspeaker>",
) -> tuple[TrainConfig, dict[str, torch.Tensor]]:
    """A 3D-Speaker state dict (+ the :func:`read_3dspeaker_config` spec) -> (config, state dict).
    Errors about the weights name ``source``; about the config's settings, the config file."""
    spec = spec or {"obj": _DEFAULT_ARCH, "args": {}, "features": {}, "source": source}
    arch = ARCHITECTURES[spec["obj"]]
    state = _unwrap(state, source)
    try:
        feat_dim = int(spec["args"].get("feat_dim", arch.feat_dim(state)))
    except KeyError as exc:
        raise ModelImportError(f"{source}: not a {spec['obj'].rsplit('.', 1)[-1]} state dict (no {exc})") from None
    cfg = TrainConfig(
        features=_features(spec.get("features") or {}, feat_dim, spec["source"]),
        model=ModelConfig(name=arch.model, kwargs=arch.kwargs(spec["args"], state, spec["source"])),
    )
    return cfg, dict(state)


def import_3dspeaker(
    checkpoint: str | os.PathLike, out: str | os.PathLike, config: str | os.PathLike | None = None,
    force: bool = False, **unused: Any,
) -> Path:
    """3D-Speaker ``*.pt`` / ``embedding_model.ckpt`` (+ optional config) -> experiment dir ``out``."""
    for key, value in unused.items():
        if value is not None:
            raise ModelImportError(f"--{key.replace('_', '-')} does not apply to --from 3dspeaker (its front end is fixed)")
    spec = read_3dspeaker_config(config) if config is not None else None
    try:
        state = load_checkpoint(checkpoint)  # torch.load(weights_only=True)
    except CheckpointError as exc:
        raise ModelImportError(str(exc)) from None
    cfg, encoder = convert_3dspeaker(state, spec, str(checkpoint))
    provenance = {
        "toolkit": "3dspeaker",
        "architecture": (spec or {}).get("obj", _DEFAULT_ARCH),
        "checkpoint": str(Path(checkpoint).resolve()),
        "checkpoint_sha256": file_sha256(checkpoint),
        "config": str(Path(config).resolve()) if config is not None else None,
    }
    return write_experiment(out, cfg, encoder, provenance, force=force, source=str(checkpoint))
