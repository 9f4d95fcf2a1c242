"""Import SpeechBrain speaker models (``embedding_model.ckpt`` + ``hyperparams.yaml``).

SpeechBrain (Ravanelli et al., "SpeechBrain: A General-Purpose Speech Toolkit", 2021) describes a
pretrained model in a HyperPyYAML file: ``compute_features`` (``lobes.features.Fbank``),
``mean_var_norm`` (``InputNormalization``), ``embedding_model`` (``lobes.models.ECAPA_TDNN``) and
``mean_var_norm_emb`` (the global embedding statistics, ``mean_var_norm_emb.ckpt``). The import
reads the YAML without executing it (tags become plain data; ``!ref <key>`` is resolved), maps
the ECAPA-TDNN arguments onto :class:`speakerid.models.ECAPATDNNSpeechBrain` (same state-dict
names) and sets ``features.frontend: speechbrain`` (:mod:`speakerid.features.speechbrain`).
Feature and normalisation settings other than the ones implemented are refused by name.
With ``norm_stats`` (``mean_var_norm_emb.ckpt``) the embedding mean is subtracted, as
SpeechBrain's ``encode_batch(normalize=True)``; its ``verify_batch`` does not normalise.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch
import yaml

from speakerid.checkpoint import CheckpointError, check_weights, load_checkpoint
from speakerid.config import FeatureConfig, ModelConfig, TrainConfig
from speakerid.limits import MAX_YAML_NODES, shorten
from speakerid.yaml_safe import BoundedSafeLoader, load_yaml, yaml_problem

from .experiment import ModelImportError, checkpoint_budget, file_sha256, write_experiment

__all__ = ["read_hyperparams", "convert_speechbrain", "import_speechbrain"]

_REF = re.compile(r"^<([A-Za-z0-9_.]+)>$")
# Fbank / ECAPA_TDNN arguments and the values speakerid implements (None: any value is mapped).
_FBANK_ARGS = {"n_mels": None, "sample_rate": None, "deltas": False, "context": False, "f_min": 0, "n_fft": 400,
               "win_length": 25, "hop_length": 10, "requires_grad": False, "filter_shape": "triangular", "f_max": None}
_ECAPA_ARGS = {"input_size", "lin_neurons", "channels", "kernel_sizes", "dilations", "attention_channels",
               "res2net_scale", "se_channels", "global_context", "device", "groups", "dropout"}


class _Tagged(dict):
    """A ``!new:`` / ``!name:`` object: its class path under ``__class__`` plus its arguments."""


class _Loader(BoundedSafeLoader):
    pass


def _tagged(loader: BoundedSafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        value: Any = _Tagged(loader.construct_mapping(node, deep=True))
    elif isinstance(node, yaml.SequenceNode):
        value = _Tagged(args=loader.construct_sequence(node, deep=True))
    else:
        scalar = loader.construct_scalar(node)
        if suffix == "ref":
            return ("__ref__", scalar)
        value = _Tagged(arg=scalar)
    value["__class__"] = suffix
    return value


_Loader.add_multi_constructor("!", _tagged)


def _resolve(value: Any, root: dict[str, Any], source: str, chain: tuple[str, ...] = (), budget: list[int] | None = None) -> Any:
    """``value`` with every ``!ref <key>`` replaced by what it names; a reference loop or an
    expansion past :data:`speakerid.limits.MAX_YAML_NODES` values is an error naming ``source``."""
    budget = [MAX_YAML_NODES] if budget is None else budget
    budget[0] -= 1
    if budget[0] < 0:
        raise ModelImportError(f"{source}: its !ref references expand to more than {MAX_YAML_NODES} values")
    if isinstance(value, tuple) and len(value) == 2 and value[0] == "__ref__":
        m = _REF.match(str(value[1]).strip())
        if not m:
            raise ModelImportError(f"{source}: !ref {shorten(value[1])!r} is an expression; only plain <key> references are supported")
        key = m.group(1)
        if key in chain:
            loop = " -> ".join(f"<{k}>" for k in (*chain[chain.index(key):], key))
            raise ModelImportError(f"{source}: !ref loop {shorten(loop)}")
        node: Any = root
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                raise ModelImportError(f"{source}: !ref <{shorten(key)}> names no key")
            node = node[part]
        return _resolve(node, root, source, (*chain, key), budget)
    if isinstance(value, dict):
        return type(value)({k: _resolve(v, root, source, chain, budget) for k, v in value.items()})
    if isinstance(value, list):
        return [_resolve(v, root, source, chain, budget) for v in value]
    return value


def read_hyperparams(path: str | os.PathLike) -> dict[str, Any]:
    """A SpeechBrain ``hyperparams.yaml`` as plain data (nothing is imported or executed)."""
    path = Path(path)
    if not path.is_file():
        raise ModelImportError(f"{path}: hyperparams file not found")
    try:
        data = load_yaml(path.read_text(encoding="utf-8"), _Loader)
    except yaml.YAMLError as exc:
        raise ModelImportError(f"{path}: {yaml_problem(exc)}") from None
    if not isinstance(data, dict):
        raise ModelImportError(f"{path}: expected a mapping")
    return _resolve(data, data, str(path))


def _entry(hp: dict[str, Any], key: str, cls_suffix: str, source: str) -> dict[str, Any]:
    value = hp.get(key)
    if not isinstance(value, _Tagged) or not str(value["__class__"]).endswith(cls_suffix):
        raise ModelImportError(f"{source}: {key} must be !new:speechbrain...{cls_suffix}, found {value!r:.80}")
    return {k: v for k, v in value.items() if k != "__class__"}


def convert_speechbrain(
    state: dict[str, torch.Tensor], hp: dict[str, Any], source: str = "<hyperparams>",
    norm_stats: dict[str, Any] | None = None,
) -> tuple[TrainConfig, dict[str, torch.Tensor]]:
    """SpeechBrain ECAPA state dict + hyperparams -> (speakerid config, speakerid state dict)."""
    try:
        check_weights(state, source)
        return _convert_speechbrain(state, hp, source, norm_stats)
    except CheckpointError as e:
        raise ModelImportError(str(e)) from None
    except (TypeError, ValueError, AttributeError) as e:  # a value of the wrong type (a list for a number, ...)
        if isinstance(e, ModelImportError):
            raise
        raise ModelImportError(f"{source}: bad hyperparameter value ({shorten(e)})") from None


def _convert_speechbrain(
    state: dict[str, torch.Tensor], hp: dict[str, Any], source: str, norm_stats: dict[str, Any] | None
) -> tuple[TrainConfig, dict[str, torch.Tensor]]:
    fb = _entry(hp, "compute_features", "lobes.features.Fbank", source)
    for key, value in fb.items():
        if key not in _FBANK_ARGS:
            raise ModelImportError(f"{source}: compute_features.{shorten(key)} is not supported by the import")
        if _FBANK_ARGS[key] is not None and value != _FBANK_ARGS[key]:
            raise ModelImportError(f"{source}: compute_features.{key}={shorten(repr(value))} not supported (only {_FBANK_ARGS[key]!r})")
    sample_rate = int(fb.get("sample_rate", 16000))
    if fb.get("f_max") not in (None, sample_rate // 2):
        raise ModelImportError(f"{source}: compute_features.f_max={shorten(repr(fb['f_max']))} not supported (Nyquist only)")
    cmn = False
    if "mean_var_norm" in hp:
        norm = _entry(hp, "mean_var_norm", "InputNormalization", source)
        if norm.get("norm_type", "global") != "sentence" or norm.get("std_norm", True):
            raise ModelImportError(f"{source}: mean_var_norm must be norm_type: sentence, std_norm: False (found {shorten(norm)})")
        cmn = True
    ecapa = _entry(hp, "embedding_model", "ECAPA_TDNN.ECAPA_TDNN", source)
    unknown = sorted(set(ecapa) - _ECAPA_ARGS)
    if unknown:
        raise ModelImportError(f"{source}: embedding_model arguments {shorten(unknown)} not supported")
    if any(g != 1 for g in ecapa.get("groups", [1])) or float(ecapa.get("dropout", 0.0)) != 0.0:
        raise ModelImportError(f"{source}: embedding_model groups / dropout other than 1 / 0 are not supported")
    n_mels = int(fb.get("n_mels", 40))
    if int(ecapa.get("input_size", n_mels)) != n_mels:
        raise ModelImportError(f"{source}: embedding_model.input_size {ecapa['input_size']} != compute_features.n_mels {n_mels}")
    kwargs: dict[str, Any] = {"embed_dim": int(ecapa.get("lin_neurons", 192))}
    for key in ("channels", "kernel_sizes", "dilations", "attention_channels", "res2net_scale", "se_channels", "global_context"):
        if key in ecapa:
            kwargs[key] = ecapa[key]
    encoder = dict(state)
    if norm_stats is not None:
        emb_norm = hp.get("mean_var_norm_emb")
        if isinstance(emb_norm, _Tagged) and emb_norm.get("std_norm", True):
            raise ModelImportError(f"{source}: mean_var_norm_emb with std_norm is not supported (mean only)")
        if not isinstance(norm_stats.get("glob_mean"), torch.Tensor):
            raise ModelImportError(f"{source}: embedding statistics have no glob_mean tensor")
        kwargs["embedding_norm"] = True
        encoder["embedding_mean"] = norm_stats["glob_mean"].reshape(-1).float()
    cfg = TrainConfig(
        features=FeatureConfig(sample_rate=sample_rate, num_mel_bins=n_mels, cmn=cmn, frontend="speechbrain",
                               window_type="hamming", wave_scale="float"),
        model=ModelConfig(name="ecapa_tdnn_speechbrain", kwargs=kwargs),
    )
    return cfg, encoder


def import_speechbrain(
    checkpoint: str | os.PathLike, config: str | os.PathLike, out: str | os.PathLike, force: bool = False,
    norm_stats: str | os.PathLike | None = None, **unused: Any,
) -> Path:
    """``embedding_model.ckpt`` + ``hyperparams.yaml`` (+ ``mean_var_norm_emb.ckpt``) -> experiment dir."""
    for key, value in unused.items():
        if value is not None:
            raise ModelImportError(f"--{key.replace('_', '-')} does not apply to --from speechbrain (its front end is fixed)")
    if config is None:
        raise ModelImportError("--from speechbrain needs --config (its hyperparams.yaml)")
    hp = read_hyperparams(config)
    cfg, _ = convert_speechbrain({}, hp, str(config))  # the hyperparams' errors first
    budget = checkpoint_budget(cfg, str(config))
    try:
        state = load_checkpoint(checkpoint, max_bytes=budget)  # torch.load(weights_only=True)
        stats = load_checkpoint(norm_stats, max_bytes=budget) if norm_stats is not None else None
        check_weights(state, str(checkpoint))
    except CheckpointError as exc:
        raise ModelImportError(str(exc)) from None
    cfg, encoder = convert_speechbrain(state, hp, str(config), stats)
    provenance = {
        "toolkit": "speechbrain",
        "architecture": "speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN",
        "checkpoint": str(Path(checkpoint).resolve()),
        "checkpoint_sha256": file_sha256(checkpoint),
        "config": str(Path(config).resolve()),
        "norm_stats": str(Path(norm_stats).resolve()) if norm_stats is not None else None,
    }
    return write_experiment(out, cfg, encoder, provenance, force=force, source=str(checkpoint), config_source=str(config))
