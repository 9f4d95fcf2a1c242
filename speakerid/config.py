"""Experiment configuration: plain YAML read into validated dataclasses.

A config file is a YAML mapping whose sections mirror :class:`TrainConfig`. Every key
must be known (a typo is an error naming the file and the key path), and every value is
checked against the field's type when the file is read: ``Literal[...]`` fields list their
allowed values (``<file>: data.sampler: got 'x', allowed shuffle|pk``), ``Annotated[..., Range]``
fields their bounds (``<file>: optim.lr: must be > 0, got -0.1``). The margin of a
margin-scheduled loss (AAM) has one owner: setting it in ``loss.kwargs.margin`` while the
``margin`` schedule is enabled is an error that says which to keep. The fully resolved config
(defaults filled in) is written beside each experiment as ``exp/config.yaml``.

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
from typing import Annotated, Any, Literal

import yaml

from speakerid.fileio import write_text_atomic
from speakerid.limits import shorten
from speakerid.yaml_safe import load_yaml, yaml_problem


class ConfigError(ValueError):
    """A config file has an unknown key or a value of the wrong type."""


@dataclass(frozen=True)
class Range:
    """Bounds of a numeric field, checked at load: ``Annotated[float, Range(gt=0)]``."""

    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None

    def problem(self, value: float) -> str | None:
        """Why ``value`` is out of range (NaN is always out), or None."""
        checks = (
            (self.gt, ">", lambda b: value > b),
            (self.ge, ">=", lambda b: value >= b),
            (self.lt, "<", lambda b: value < b),
            (self.le, "<=", lambda b: value <= b),
        )
        if all(ok(b) for b, _, ok in checks if b is not None):
            return None
        wanted = " and ".join(f"{op} {b:g}" for b, op, _ in checks if b is not None)
        return f"must be {wanted}, got {value!r}"


Positive = Range(gt=0)
NonNegative = Range(ge=0)
Probability = Range(ge=0, le=1)
PosInt = Annotated[int, Range(ge=1)]
NonNegInt = Annotated[int, NonNegative]
PosFloat = Annotated[float, Positive]
NonNegFloat = Annotated[float, NonNegative]
Prob = Annotated[float, Probability]


@dataclass
class FeatureConfig:
    """Kaldi-compatible log-mel fbank front end (``speakerid.features.kaldi.fbank``)."""

    sample_rate: PosInt = 16000
    num_mel_bins: PosInt = 80
    frame_length_ms: PosFloat = 25.0
    frame_shift_ms: PosFloat = 10.0
    # Training-time dither (1.0 = one int16 LSB); evaluation always uses 0. Default off: on
    # recordings with digital silence (RAVDESS is ~50% exact zeros) dithered training frames and
    # undithered test frames disagree by ~20 log units, which cost 33% vs 17.5% dev EER on the
    # shared speech (benchmarks/train_shared_speech.sh). VoxCeleb recipes set 1.0 as WeSpeaker.
    dither: NonNegFloat = 0.0
    cmn: bool = True  # per-utterance mean normalisation
    sliding_cmn_frames: NonNegInt = 0  # >0: sliding-window CMN of that many frames instead
    # Front-end choices of imported models (speakerid.interop); the defaults are speakerid's own.
    window_type: Literal["povey", "hamming", "hanning", "rectangular"] = "povey"  # hamming = WeSpeaker
    wave_scale: Literal["int16", "float"] = "int16"  # fbank of wave x 32768 (Kaldi/WeSpeaker) or as read ([-1, 1])
    frontend: Literal["kaldi", "speechbrain"] = "kaldi"  # speakerid.features.kaldi.Fbank or speakerid.features.speechbrain
    # Embedding only: drop silence (speakerid.features.vad.trim_silence) before the segment policy cuts
    # an utterance; the starter model is trained and embeds on trimmed audio.
    trim_silence: bool = False


@dataclass
class SpecAugConfig:
    enabled: bool = False
    freq_masks: NonNegInt = 1
    freq_width: NonNegInt = 10
    time_masks: NonNegInt = 1
    time_width: NonNegInt = 20
    time_warp: NonNegInt = 0  # 0 = off; else the warp window W in frames
    prob: Prob = 0.6


@dataclass
class MixupConfig:
    """MixUp (Zhang et al. 2018): lambda ~ Beta(alpha, alpha)."""

    enabled: bool = False
    alpha: PosFloat = 0.2
    prob: Prob = 0.5  # probability that a batch is mixed
    domain: Literal["features", "waveform"] = "features"  # "features" or "waveform" (named so: YAML 1.1 reads a bare `on` as true)


@dataclass
class NoiseConfig:
    enabled: bool = False
    prob: Prob = 0.6
    noise_list: str = ""  # file written by data_prep/musan.py: "<path> <category>" per line
    snr: dict[str, list[float]] = field(
        default_factory=lambda: {"noise": [0.0, 15.0], "music": [5.0, 15.0], "babble": [13.0, 20.0], "speech": [13.0, 20.0]}
    )


@dataclass
class ReverbConfig:
    enabled: bool = False
    prob: Prob = 0.6
    rir_list: str = ""  # file written by data_prep/rirs.py: one RIR path per line


@dataclass
class SpeedConfig:
    enabled: bool = False
    speeds: list[PosFloat] = field(default_factory=lambda: [0.9, 1.0, 1.1])
    prob: Prob = 0.6
    as_new_speaker: bool = True  # WeSpeaker: each speed factor is a new speaker label


@dataclass
class TelephoneConfig:
    """Telephone channel simulation (speakerid.augment.channel.TelephoneChannel)."""

    enabled: bool = False
    prob: Prob = 0.3  # probability that a chunk goes through the channel
    band_rate: PosInt = 8000  # the narrow-band sample rate the audio passes through
    highpass_hz: NonNegFloat = 300.0  # low edge of the telephone band; 0 = off
    mulaw_prob: Prob = 0.5  # of those, the share also companded by 8-bit G.711 mu-law


@dataclass
class AugmentConfig:
    specaug: SpecAugConfig = field(default_factory=SpecAugConfig)
    mixup: MixupConfig = field(default_factory=MixupConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    reverb: ReverbConfig = field(default_factory=ReverbConfig)
    speed: SpeedConfig = field(default_factory=SpeedConfig)
    telephone: TelephoneConfig = field(default_factory=TelephoneConfig)


@dataclass
class DataConfig:
    chunk_frames: PosInt = 200  # training chunk length in frames (10 ms each)
    sampler: Literal["shuffle", "pk"] = "shuffle"  # "shuffle" or "pk" (P speakers x K utterances)
    batch_size: PosInt = 32  # shuffle sampler; pk uses speakers_per_batch * utts_per_speaker
    speakers_per_batch: PosInt = 16
    utts_per_speaker: PosInt = 2
    num_workers: NonNegInt = 0
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
    xbm_size: NonNegInt = 0  # >0: wrap a pair-based loss in a cross-batch memory of this many embeddings
    xbm_start_step: NonNegInt = 0


@dataclass
class OptimConfig:
    name: Literal["sgd", "adam", "adamw"] = "sgd"  # "sgd" (Nesterov), "adam", "adamw"
    lr: PosFloat = 0.1
    final_lr: NonNegFloat = 5e-5
    momentum: Annotated[float, Range(ge=0, lt=1)] = 0.9
    nesterov: bool = True
    weight_decay: NonNegFloat = 1e-4
    warmup_epochs: NonNegFloat = 1.0
    scheduler: Literal["exponential", "cosine"] = "exponential"  # "exponential" or "cosine"
    grad_clip: NonNegFloat = 0.0  # 0 = off; else max global grad norm


@dataclass
class MarginScheduleConfig:
    """Margin warm-up for margin losses, as WeSpeaker: 0 until ``start``, then up to ``final``."""

    enabled: bool = True
    initial: NonNegFloat = 0.0
    final: NonNegFloat = 0.2
    increase_start_epoch: NonNegInt = 1
    fix_start_epoch: NonNegInt = 3


@dataclass
class TrainConfig:
    seed: int = 42
    epochs: PosInt = 10
    max_steps_per_epoch: NonNegInt = 0  # 0 = a full pass of the sampler
    features: FeatureConfig = field(default_factory=FeatureConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    margin: MarginScheduleConfig = field(default_factory=MarginScheduleConfig)
    amp: Literal["none", "bf16", "fp16"] = "none"  # "none", "bf16", "fp16" (GPU)
    keep_checkpoints: PosInt = 5
    average_last: PosInt = 3  # model.pt = mean of the last N checkpoints
    log_every: PosInt = 10
    dev_trials: str = ""  # trial list of a dev data dir; per-epoch EER when given
    dev_data: str = ""


def check_field(obj: Any, name: str, where: str) -> Any:
    """Check one field of a config dataclass built in Python (not read from YAML) against its
    annotation: the same rule, and the same message, as at load."""
    hints = typing.get_type_hints(type(obj), include_extras=True)
    return _check_type(getattr(obj, name), hints[name], where)


def _check_type(value: Any, tp: Any, where: str) -> Any:
    """Check (and lightly coerce int -> float) ``value`` against the annotation ``tp``.

    ``Annotated[T, Range(...)]`` adds bounds, ``Literal[...]`` lists the allowed values.
    """
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is Annotated:
        base, *extras = typing.get_args(tp)
        value = _check_type(value, base, where)
        for extra in extras:
            problem = extra.problem(value) if isinstance(extra, Range) else None
            if problem:
                raise ConfigError(f"{where}: {problem}")
        return value
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed or isinstance(value, bool) != isinstance(allowed[0], bool):
            raise ConfigError(f"{where}: got {value!r}, allowed {'|'.join(map(str, allowed))}")
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
    hints = typing.get_type_hints(cls, include_extras=True)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(names)}")
    kwargs = {k: _check_type(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def _check_margin_owner(cfg: Any, source: str) -> None:
    """The margin of a margin-scheduled loss (AAM) has one owner: ``margin.*`` or ``loss.kwargs.margin``."""
    if not isinstance(cfg, TrainConfig) or "margin" not in cfg.loss.kwargs or not cfg.margin.enabled:
        return
    from speakerid.losses import LOSSES  # noqa: PLC0415  (only here: the rest of config needs no torch)

    if getattr(LOSSES.get(cfg.loss.name), "has_margin", False):
        raise ConfigError(
            f"{source}: loss.kwargs.margin ({cfg.loss.kwargs['margin']}) and the margin schedule "
            f"(margin.enabled: true, margin.final: {cfg.margin.final}) both set the {cfg.loss.name} margin; keep one: "
            "remove loss.kwargs.margin (the schedule sets it every step), or set margin.enabled: false"
        )


def config_from_dict(cls: type, data: dict, source: str = "<config>") -> Any:
    """Build dataclass ``cls`` from a (nested) dict; unknown keys and bad types are errors.

    Errors read ``<source>: <key.path>: <problem>``.
    """
    try:
        cfg = _from_dict(cls, data, "")
    except ConfigError as e:
        raise ConfigError(f"{source}: {str(e).lstrip(': ')}") from None
    _check_margin_owner(cfg, source)
    return cfg


def apply_overrides(data: dict, overrides: list[str], source: str) -> dict:
    """Apply ``a.b.c=value`` overrides (values read as YAML) to the raw config mapping."""
    for item in overrides:
        key, sep, value = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise ConfigError(f"--set {item!r}: expected key.path=value, e.g. optim.lr=0.05")
        node = data
        for i, p in enumerate(parts[:-1]):
            child = node.setdefault(p, {})
            if not isinstance(child, dict):
                raise ConfigError(
                    f"{source}: --set {item}: {'.'.join(parts[: i + 1])} is a value ({child!r}), not a section"
                )
            node = child
        try:
            node[parts[-1]] = load_yaml(value)
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {shorten(item)!r}: {yaml_problem(e)}") from None
    return data


def load_config(path: str | os.PathLike, cls: type = TrainConfig, overrides: list[str] | None = None) -> Any:
    """Read a YAML config into ``cls``; ``overrides`` are ``a.b.c=value`` strings (YAML values)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = load_yaml(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: {yaml_problem(e)}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a UTF-8 text file ({e.reason})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a YAML mapping of sections, got {type(data).__name__}")
    apply_overrides(data, overrides or [], str(path))
    return config_from_dict(cls, data, str(path))


def config_to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def save_config(cfg: Any, path: str | os.PathLike) -> None:
    """Write the fully resolved config as YAML, atomically."""
    write_text_atomic(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
