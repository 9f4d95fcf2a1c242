"""Experiment configuration: plain YAML read into validated dataclasses.

A config file is a YAML mapping whose sections mirror :class:`TrainConfig`. Every key
must be known (a typo is an error naming the file and the key path), and every value is
checked against the field's type. The fully resolved config (defaults filled in) is
written beside each experiment as ``exp/config.yaml``.

Model and loss sections are ``{name: <registry name>, <kwargs of that class>...}``: the
kwargs are checked by the class's own signature when it is built.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from speakerid.fileio import write_text_atomic


class ConfigError(ValueError):
    """A config file has an unknown key or a value of the wrong type."""


@dataclass
class FeatureConfig:
    """Kaldi-compatible log-mel fbank front end (``speakerid.features.fbank``)."""

    sample_rate: int = 16000
    num_mel_bins: int = 80
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    # Training-time dither (1.0 = one int16 LSB); evaluation always uses 0. Default off: on
    # recordings with digital silence (RAVDESS is ~50% exact zeros) dithered training frames and
    # undithered test frames disagree by ~20 log units, which cost 33% vs 17.5% dev EER on the
    # shared speech (benchmarks/train_shared_speech.sh). VoxCeleb recipes set 1.0 as WeSpeaker.
    dither: float = 0.0
    cmn: bool = True  # per-utterance mean normalisation
    sliding_cmn_frames: int = 0  # >0: sliding-window CMN of that many frames instead
    # Front-end choices of imported models (speakerid.interop); the defaults are speakerid's own.
    window_type: str = "povey"  # Kaldi window: "povey", "hamming" (WeSpeaker), "hanning", "rectangular"
    wave_scale: str = "int16"  # fbank of the wave x 32768 ("int16", Kaldi/WeSpeaker) or as read ("float", [-1, 1])
    frontend: str = "kaldi"  # "kaldi" (speakerid.features.Fbank) or "speechbrain" (speakerid.features_speechbrain)


@dataclass
class SpecAugConfig:
    enabled: bool = False
    freq_masks: int = 1
    freq_width: int = 10
    time_masks: int = 1
    time_width: int = 20
    time_warp: int = 0  # 0 = off; else the warp window W in frames
    prob: float = 0.6


@dataclass
class MixupConfig:
    """MixUp (Zhang et al. 2018): lambda ~ Beta(alpha, alpha)."""

    enabled: bool = False
    alpha: float = 0.2
    prob: float = 0.5  # probability that a batch is mixed
    domain: str = "features"  # "features" or "waveform" (named so: YAML 1.1 reads a bare `on` as true)


@dataclass
class NoiseConfig:
    enabled: bool = False
    prob: float = 0.6
    noise_list: str = ""  # file written by data_prep/musan.py: "<path> <category>" per line
    snr: dict[str, list[float]] = field(
        default_factory=lambda: {"noise": [0.0, 15.0], "music": [5.0, 15.0], "babble": [13.0, 20.0], "speech": [13.0, 20.0]}
    )


@dataclass
class ReverbConfig:
    enabled: bool = False
    prob: float = 0.6
    rir_list: str = ""  # file written by data_prep/rirs.py: one RIR path per line


@dataclass
class SpeedConfig:
    enabled: bool = False
    speeds: list[float] = field(default_factory=lambda: [0.9, 1.0, 1.1])
    prob: float = 0.6
    as_new_speaker: bool = True  # WeSpeaker: each speed factor is a new speaker label


@dataclass
class AugmentConfig:
    specaug: SpecAugConfig = field(default_factory=SpecAugConfig)
    mixup: MixupConfig = field(default_factory=MixupConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    reverb: ReverbConfig = field(default_factory=ReverbConfig)
    speed: SpeedConfig = field(default_factory=SpeedConfig)


@dataclass
class DataConfig:
    chunk_frames: int = 200  # training chunk length in frames (10 ms each)
    sampler: str = "shuffle"  # "shuffle" or "pk" (P speakers x K utterances)
    batch_size: int = 32  # shuffle sampler; pk uses speakers_per_batch * utts_per_speaker
    speakers_per_batch: int = 16
    utts_per_speaker: int = 2
    num_workers: int = 0
    use_cached_features: bool = False  # read feats.scp instead of computing fbank
    shards: str = ""  # glob/brace pattern of webdataset tar shards; empty = data dir


@dataclass
class ModelConfig:
    name: str = "ecapa_tdnn"
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class LossConfig:
    name: str = "circle_proxy"
    kwargs: dict[str, Any] = field(default_factory=dict)
    xbm_size: int = 0  # >0: wrap a pair-based loss in a cross-batch memory of this many embeddings
    xbm_start_step: int = 0


@dataclass
class OptimConfig:
    name: str = "sgd"  # "sgd" (Nesterov), "adam", "adamw"
    lr: float = 0.1
    final_lr: float = 5e-5
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    scheduler: str = "exponential"  # "exponential" or "cosine"
    grad_clip: float = 0.0  # 0 = off; else max global grad norm


@dataclass
class MarginScheduleConfig:
    """Margin warm-up for margin losses, as WeSpeaker: 0 until ``start``, then up to ``final``."""

    enabled: bool = True
    initial: float = 0.0
    final: float = 0.2
    increase_start_epoch: int = 1
    fix_start_epoch: int = 3


@dataclass
class TrainConfig:
    seed: int = 42
    epochs: int = 10
    max_steps_per_epoch: int = 0  # 0 = a full pass of the sampler
    features: FeatureConfig = field(default_factory=FeatureConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    margin: MarginScheduleConfig = field(default_factory=MarginScheduleConfig)
    amp: str = "none"  # "none", "bf16", "fp16" (GPU)
    keep_checkpoints: int = 5
    average_last: int = 3
    log_every: int = 10
    dev_trials: str = ""  # trial list of a dev data dir; per-epoch EER when given
    dev_data: str = ""


def _check_type(value: Any, tp: Any, where: str) -> Any:
    """Check (and lightly coerce int -> float) ``value`` against the annotation ``tp``."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _check_type(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} is not of type {tp}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where}: expected null, got {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (arg,) = typing.get_args(tp)
        return [_check_type(v, arg, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        _, varg = typing.get_args(tp)
        return {str(k): _check_type(v, varg, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return _from_dict(tp, value, where)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is bool and not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def _from_dict(cls: type, data: Any, where: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(names)}")
    kwargs = {k: _check_type(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def config_from_dict(cls: type, data: dict, source: str = "<config>") -> Any:
    """Build dataclass ``cls`` from a (nested) dict; unknown keys and bad types are errors.

    Errors read ``<source>: <key.path>: <problem>``.
    """
    try:
        return _from_dict(cls, data, "")
    except ConfigError as e:
        raise ConfigError(f"{source}: {str(e).lstrip(': ')}") from None


def load_config(path: str | os.PathLike, cls: type = TrainConfig, overrides: list[str] | None = None) -> Any:
    """Read a YAML config into ``cls``; ``overrides`` are ``a.b.c=value`` strings (YAML values)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key.path=value")
        key, value = item.split("=", 1)
        node = data
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = yaml.safe_load(value)
    return config_from_dict(cls, data, str(path))


def config_to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def save_config(cfg: Any, path: str | os.PathLike) -> None:
    """Write the fully resolved config as YAML, atomically."""
    write_text_atomic(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
