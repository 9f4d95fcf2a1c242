"""Import WeSpeaker checkpoints (``avg_model.pt`` + its training ``config.yaml``).

WeSpeaker (Wang et al., "WeSpeaker: A Research and Production Oriented Speaker Embedding Learning
Toolkit", ICASSP 2023) saves a state dict (encoder plus the ``projection.*`` loss head) and a
config with ``model`` (a constructor name such as ``ResNet34``), ``model_args`` and
``dataset_args.fbank_args``. Each supported constructor maps to a speakerid model whose
computation is the same (tests/test_wespeaker_parity.py: within 1e-4 relative through both
front ends); the weights keep their names, except ECAPA-TDNN's and ReDimNet's, which are renamed.

Front end (``wespeaker/cli/speaker.py``): Kaldi fbank of the int16-valued samples
(``torchaudio.load(normalize=False)``) with a hamming window, then CMN; for CAM++ and ERes2Net the
CLI reads normalised [-1, 1] audio and uses the povey window. Both choices are written into the
experiment's ``features`` section (``window_type``, ``wave_scale``) and can be overridden.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import yaml

from speakerid.checkpoint import CheckpointError, check_weights, load_checkpoint
from speakerid.config import FeatureConfig, ModelConfig, TrainConfig
from speakerid.limits import shorten
from speakerid.yaml_safe import load_yaml, yaml_problem

from .experiment import ModelImportError, checkpoint_budget, file_sha256, write_experiment

__all__ = ["ARCHITECTURES", "wespeaker_config", "import_wespeaker", "convert_wespeaker"]


@dataclass(frozen=True)
class Architecture:
    """How one WeSpeaker constructor becomes a speakerid model."""

    model: str  # speakerid registry name
    kwargs: Callable[[str, dict[str, Any], str], dict[str, Any]]  # (wespeaker name, model_args, source) -> kwargs
    rename: Callable[[str], str] = lambda key: key  # state-dict key, WeSpeaker -> speakerid
    window_type: str = "hamming"
    wave_scale: str = "int16"


def _only(args: dict[str, Any], allowed: dict[str, Any], source: str, name: str) -> None:
    """Refuse model_args speakerid cannot honour (a value other than the one it implements)."""
    for key, value in args.items():
        if key in ("feat_dim", "embed_dim"):
            continue
        if key not in allowed:
            raise ModelImportError(f"{source}: model_args.{key} of {name} is not supported by the import")
        if allowed[key] is not None and value != allowed[key]:
            raise ModelImportError(f"{source}: model_args.{key}={value!r} of {name} is not supported (only {allowed[key]!r})")


def _resnet_kwargs(name: str, args: dict[str, Any], source: str) -> dict[str, Any]:
    _only(args, {"pooling_func": "TSTP", "two_emb_layer": None}, source, name)
    return {"embed_dim": int(args.get("embed_dim", 256)), "two_emb_layer": bool(args.get("two_emb_layer", False))}


def _ecapa_kwargs(name: str, args: dict[str, Any], source: str) -> dict[str, Any]:
    _only(args, {"pooling_func": "ASTP", "emb_bn": False}, source, name)
    return {
        "channels": 1024 if name.endswith("c1024") else 512,
        "embed_dim": int(args.get("embed_dim", 192)),
        "mfa_channels": 1536,
        "global_context": "_GLOB_" in name,
    }


def _campplus_kwargs(name: str, args: dict[str, Any], source: str) -> dict[str, Any]:
    _only(args, {"pooling_func": "TSTP", "config_str": "batchnorm-relu", "growth_rate": None, "bn_size": None,
                 "init_channels": None}, source, name)
    kwargs = {"embed_dim": int(args.get("embed_dim", 512))}
    kwargs.update({k: int(args[k]) for k in ("growth_rate", "bn_size", "init_channels") if k in args})
    return kwargs


# WeSpeaker ECAPA_TDNN -> speakerid ECAPATDNN: same modules, other names.
_ECAPA_RENAMES = [
    (re.compile(r"^(layer[234])\.se_res2block\.0\."), r"\1.conv1."),
    (re.compile(r"^(layer[234])\.se_res2block\.1\.convs\.(\d+)\."), r"\1.res2.blocks.\2.conv."),
    (re.compile(r"^(layer[234])\.se_res2block\.1\.bns\.(\d+)\."), r"\1.res2.blocks.\2.bn."),
    (re.compile(r"^(layer[234])\.se_res2block\.2\."), r"\1.conv2."),
    (re.compile(r"^(layer[234])\.se_res2block\.3\."), r"\1.se."),
    (re.compile(r"^conv\."), "mfa."),
]


def _ecapa_rename(key: str) -> str:
    for pattern, repl in _ECAPA_RENAMES:
        key = pattern.sub(repl, key)
    return key


def _redimnet_kwargs(name: str, args: dict[str, Any], source: str) -> dict[str, Any]:
    _only(args, {"pooling_func": "ASTP", "two_emb_layer": None}, source, name)
    return {"embed_dim": int(args.get("embed_dim", 192)), "two_emb_layer": bool(args.get("two_emb_layer", False))}


def _redimnet_rename(config: str) -> Callable[[str], str]:
    from speakerid.models.redimnet import REDIMNET_CONFIGS, wespeaker_key

    num_stages = len(REDIMNET_CONFIGS[config][2])
    return lambda key: wespeaker_key(key, num_stages)


ARCHITECTURES: dict[str, Architecture] = {
    **{f"ResNet{d}": Architecture(f"resnet{d}", _resnet_kwargs) for d in (18, 34, 50, 101, 152, 221, 293)},
    **{
        name: Architecture("ecapa_tdnn", _ecapa_kwargs, _ecapa_rename)
        for name in ("ECAPA_TDNN_c512", "ECAPA_TDNN_c1024", "ECAPA_TDNN_GLOB_c512", "ECAPA_TDNN_GLOB_c1024")
    },
    "CAMPPlus": Architecture("campplus", _campplus_kwargs, window_type="povey", wave_scale="float"),
    **{f"ReDimNet{b}": Architecture(f"redimnet_{b.lower()}", _redimnet_kwargs, _redimnet_rename(b))
       for b in ("B0", "B1", "B2", "B3", "B4", "B5", "B6")},
}


def wespeaker_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read a WeSpeaker ``config.yaml``; errors name the file and the missing key."""
    path = Path(path)
    if not path.is_file():
        raise ModelImportError(f"{path}: config file not found")
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ModelImportError(f"{path}: {yaml_problem(exc)}") from None
    if not isinstance(data, dict) or "model" not in data:
        raise ModelImportError(f"{path}: no 'model' key (expected a WeSpeaker config with model / model_args)")
    if data["model"] not in ARCHITECTURES:
        raise ModelImportError(f"{path}: model {data['model']!r} not supported; choose one of {sorted(ARCHITECTURES)}")
    if not isinstance(data.get("model_args", {}), dict):
        raise ModelImportError(f"{path}: model_args must be a mapping")
    return data


def _features(data: dict[str, Any], arch: Architecture, source: str, window_type: str | None, wave_scale: str | None) -> FeatureConfig:
    dataset = data.get("dataset_args") or {}
    if dataset.get("frontend", "fbank") != "fbank":
        raise ModelImportError(f"{source}: dataset_args.frontend {dataset['frontend']!r} not supported (fbank only)")
    fb = dataset.get("fbank_args") or {}
    feat_dim = int(data.get("model_args", {}).get("feat_dim", fb.get("num_mel_bins", 80)))
    if int(fb.get("num_mel_bins", feat_dim)) != feat_dim:
        raise ModelImportError(f"{source}: model_args.feat_dim {feat_dim} != dataset_args.fbank_args.num_mel_bins {fb['num_mel_bins']}")
    return FeatureConfig(
        sample_rate=int(dataset.get("resample_rate", 16000)),
        num_mel_bins=feat_dim,
        frame_length_ms=float(fb.get("frame_length", 25)),
        frame_shift_ms=float(fb.get("frame_shift", 10)),
        dither=float(fb.get("dither", 1.0)),
        cmn=True,
        window_type=window_type or arch.window_type,
        wave_scale=wave_scale or arch.wave_scale,
    )


def convert_wespeaker(
    state: dict[str, torch.Tensor], data: dict[str, Any], source: str = "<wespeaker>",
    window_type: str | None = None, wave_scale: str | None = None,
) -> tuple[TrainConfig, dict[str, torch.Tensor]]:
    """A WeSpeaker state dict + config dict -> (speakerid config, speakerid state dict)."""
    arch = ARCHITECTURES[data["model"]]
    args = dict(data.get("model_args") or {})
    try:
        cfg = TrainConfig(
            features=_features(data, arch, source, window_type, wave_scale),
            model=ModelConfig(name=arch.model, kwargs=arch.kwargs(data["model"], args, source)),
        )
    except (TypeError, ValueError, AttributeError) as e:  # a value of the wrong type (a list for a number, ...)
        if isinstance(e, ModelImportError):
            raise
        raise ModelImportError(f"{source}: bad model_args / dataset_args value ({shorten(e)})") from None
    if isinstance(state.get("state_dict"), dict):  # a training checkpoint rather than avg_model.pt
        state = state["state_dict"]
    try:
        check_weights(state, source)
    except CheckpointError as e:
        raise ModelImportError(str(e)) from None
    encoder = {arch.rename(k): v for k, v in state.items() if not k.startswith("projection.")}
    return cfg, encoder


def _used_fbank_args(data: dict[str, Any]) -> dict[str, Any]:
    """The source's front-end settings the import reads (the rest of ``dataset_args`` is not kept)."""
    dataset = data.get("dataset_args") or {}
    fb = dataset.get("fbank_args") or {}
    used = {k: dataset[k] for k in ("frontend", "resample_rate") if k in dataset}
    used["fbank_args"] = {k: fb[k] for k in ("num_mel_bins", "frame_length", "frame_shift", "dither") if k in fb}
    return used


def import_wespeaker(
    checkpoint: str | os.PathLike, config: str | os.PathLike, out: str | os.PathLike, force: bool = False,
    window_type: str | None = None, wave_scale: str | None = None, norm_stats: str | os.PathLike | None = None,
) -> Path:
    """``avg_model.pt`` + ``config.yaml`` -> speakerid experiment dir ``out`` (see the module doc)."""
    if norm_stats is not None:
        raise ModelImportError("--norm-stats applies to --from speechbrain only")
    if config is None:
        raise ModelImportError("--from wespeaker needs --config (the config.yaml beside avg_model.pt)")
    data = wespeaker_config(config)
    cfg, _ = convert_wespeaker({}, data, str(config), window_type, wave_scale)  # the config's errors first
    try:
        state = load_checkpoint(checkpoint, max_bytes=checkpoint_budget(cfg, str(config)))  # weights_only=True
    except CheckpointError as exc:
        raise ModelImportError(str(exc)) from None
    cfg, encoder = convert_wespeaker(state, data, str(checkpoint), window_type, wave_scale)
    provenance = {
        "toolkit": "wespeaker",
        "architecture": data["model"],
        "checkpoint": str(Path(checkpoint).resolve()),
        "checkpoint_sha256": file_sha256(checkpoint),
        "config": str(Path(config).resolve()),
        "source_model_args": data.get("model_args") or {},
        "source_dataset_args": _used_fbank_args(data),
    }
    return write_experiment(out, cfg, encoder, provenance, force=force, source=str(checkpoint), config_source=str(config))
