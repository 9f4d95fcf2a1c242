"""Waveform augmentation: additive noise (MUSAN categories at per-category SNRs), reverberation
with measured/simulated RIRs, speed perturbation, and :class:`WaveAugment`, their chain
(speed -> reverb -> noise, as WeSpeaker and Kaldi's recipes do). See :mod:`speakerid.augment.spec`
for the rules every op follows (explicit generators, ``from_config``).
"""

from __future__ import annotations

import logging
import math
import os
from collections import OrderedDict
from pathlib import Path
from typing import Optional, Sequence

import torch
import torchaudio.functional as AF
import torchaudio.transforms as AT
from torch import Tensor

from speakerid.audio import load_audio
from speakerid.augment.draws import draw_bernoulli, draw_randint, draw_uniform
from speakerid.augment.channel import TelephoneChannel
from speakerid.config import AugmentConfig, NoiseConfig, ReverbConfig, SpeedConfig

logger = logging.getLogger(__name__)


# --- noise / RIR lists and the audio cache ----------------------------------------------


class AugmentListError(ValueError):
    """A noise or RIR list file is missing, empty or has a bad line."""


class _AudioCache:
    """LRU cache of decoded noise/RIR files (float32 at one rate), bounded in megabytes."""

    def __init__(self, sample_rate: int, max_mb: float = 512.0) -> None:
        self.sample_rate = sample_rate
        self.max_bytes = int(max_mb * 2**20)
        self._items: OrderedDict[str, Tensor] = OrderedDict()
        self._bytes = 0

    def get(self, path: str) -> Tensor:
        wave = self._items.get(path)
        if wave is not None:
            self._items.move_to_end(path)
            return wave
        wave, _ = load_audio(path, self.sample_rate)
        size = wave.numel() * wave.element_size()
        while self._items and self._bytes + size > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self._bytes -= old.numel() * old.element_size()
        self._items[path] = wave
        self._bytes += size
        return wave

    def __len__(self) -> int:
        return len(self._items)


def _resolve(list_path: Path, lineno: int, entry: str) -> str:
    """A list entry as a path: absolute, or relative to the list file's folder."""
    path = Path(entry)
    if not path.is_absolute():
        path = list_path.parent / path
    if not path.exists():
        raise AugmentListError(f"{list_path}:{lineno}: file not found: {path}")
    return str(path)


def read_noise_list(path: str | os.PathLike) -> dict[str, list[str]]:
    """``<path> <category>`` per line (data_prep/musan.py) -> {category: [paths]}."""
    path = Path(path)
    if not path.is_file():
        raise AugmentListError(f"{path}: noise list not found")
    out: dict[str, list[str]] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise AugmentListError(f"{path}:{lineno}: expected '<path> <category>', got {line!r}")
        out.setdefault(parts[1], []).append(_resolve(path, lineno, parts[0]))
    if not out:
        raise AugmentListError(f"{path}: noise list is empty")
    return out


def read_rir_list(path: str | os.PathLike) -> list[str]:
    """One RIR path per line (data_prep/rirs.py); extra columns are ignored."""
    path = Path(path)
    if not path.is_file():
        raise AugmentListError(f"{path}: RIR list not found")
    out = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(_resolve(path, lineno, line.split()[0]))
    if not out:
        raise AugmentListError(f"{path}: RIR list is empty")
    return out


def _segment(noise: Tensor, length: int, generator: torch.Generator) -> Tensor:
    """A random ``length``-sample stretch of ``noise``, tiled (wrapped) when it is shorter."""
    if noise.numel() < length:
        reps = math.ceil(length / noise.numel()) + 1
        noise = noise.repeat(reps)
    start = draw_randint(generator, 0, noise.numel() - length + 1)
    return noise[start : start + length]


def _power(x: Tensor) -> float:
    return float(x.double().square().mean())


# --- additive noise ---------------------------------------------------------------------


class AddNoise:
    """Additive noise at a random SNR per category (MUSAN as in Snyder et al., 2018, x-vectors).

    Categories come from the noise list (``noise``, ``music``, ``speech`` in MUSAN); ``babble``
    is synthesised as the sum of 3-7 ``speech`` files, each at its own SNR from the babble range
    (Kaldi's recipe). A call picks a category uniformly among those that have an SNR range in
    ``snr`` and files to draw from, then ``noise * g`` is added with ``g`` chosen so that
    ``10 log10(P_speech / P_noise) = snr`` (powers are mean squares over the utterance).
    """

    BABBLE_SOURCE = "speech"

    def __init__(
        self,
        noises: dict[str, list[str]],
        snr: dict[str, Sequence[float]],
        sample_rate: int = 16000,
        prob: float = 0.6,
        babble_speakers: tuple[int, int] = (3, 7),
        cache_mb: float = 512.0,
        source: str = "<noise list>",
    ) -> None:
        for cat, rng in snr.items():
            if len(rng) != 2 or rng[0] > rng[1]:
                raise ValueError(f"augment.noise.snr.{cat}: expected [low, high] in dB, got {list(rng)}")
        unknown = sorted(c for c in noises if c not in snr and not (c == self.BABBLE_SOURCE and "babble" in snr))
        if unknown:
            raise AugmentListError(f"{source}: categories {unknown} have no SNR range in augment.noise.snr ({sorted(snr)})")
        self.noises = noises
        self.snr = {k: (float(v[0]), float(v[1])) for k, v in snr.items()}
        self.categories = sorted(
            c for c in self.snr if noises.get(self.BABBLE_SOURCE if c == "babble" else c)
        )
        if not self.categories:
            raise AugmentListError(f"{source}: no category with both files and an SNR range ({sorted(snr)})")
        self.prob = prob
        self.babble_speakers = babble_speakers
        self.cache = _AudioCache(sample_rate, cache_mb)

    @classmethod
    def from_config(cls, cfg: NoiseConfig, sample_rate: int = 16000) -> "AddNoise":
        if not cfg.noise_list:
            raise AugmentListError("augment.noise.noise_list: empty; give the list written by data_prep/musan.py")
        return cls(read_noise_list(cfg.noise_list), cfg.snr, sample_rate, cfg.prob, source=cfg.noise_list)

    def _scaled(self, path: str, length: int, speech_power: float, snr_db: float, generator: torch.Generator) -> Tensor:
        noise = _segment(self.cache.get(path), length, generator)
        noise_power = max(_power(noise), 1e-20)
        gain = math.sqrt(speech_power / (noise_power * 10.0 ** (snr_db / 10.0)))
        return noise * gain

    def __call__(self, wave: Tensor, generator: torch.Generator, category: Optional[str] = None) -> Tensor:
        """``wave [T]`` plus noise (or ``wave`` itself with probability ``1 - prob``)."""
        if not draw_bernoulli(generator, self.prob):
            return wave
        speech_power = _power(wave)
        if speech_power == 0.0:
            return wave  # a silent chunk has no SNR; leave it
        cat = category if category is not None else self.categories[draw_randint(generator, 0, len(self.categories))]
        low, high = self.snr[cat]
        length = wave.numel()
        if cat == "babble":
            files = self.noises[self.BABBLE_SOURCE]
            count = min(draw_randint(generator, self.babble_speakers[0], self.babble_speakers[1] + 1), len(files))
            picks = torch.randperm(len(files), generator=generator, device=generator.device)[:count].tolist()
            noise = sum(self._scaled(files[i], length, speech_power, draw_uniform(generator, low, high), generator) for i in picks)
        else:
            files = self.noises[cat]
            path = files[draw_randint(generator, 0, len(files))]
            noise = self._scaled(path, length, speech_power, draw_uniform(generator, low, high), generator)
        return wave + noise.to(device=wave.device, dtype=wave.dtype)


# --- reverberation ----------------------------------------------------------------------


class Reverb:
    """Reverberation by convolution with a real room impulse response (Ko et al., 2017).

    The RIR is normalised to unit energy, the output is aligned on the RIR's direct-path peak
    (so the speech does not shift in time) and cut to the input length, and its peak level is
    restored to the input's (WeSpeaker does the same), so the result stays in [-1, 1].
    Convolution is ``torchaudio.functional.fftconvolve``.
    """

    def __init__(self, rirs: list[str], sample_rate: int = 16000, prob: float = 0.6, cache_mb: float = 256.0) -> None:
        if not rirs:
            raise AugmentListError("Reverb: empty RIR list")
        self.rirs = rirs
        self.prob = prob
        self.cache = _AudioCache(sample_rate, cache_mb)

    @classmethod
    def from_config(cls, cfg: ReverbConfig, sample_rate: int = 16000) -> "Reverb":
        if not cfg.rir_list:
            raise AugmentListError("augment.reverb.rir_list: empty; give the list written by data_prep/rirs.py")
        return cls(read_rir_list(cfg.rir_list), sample_rate, cfg.prob)

    @staticmethod
    def apply_rir(wave: Tensor, rir: Tensor) -> Tensor:
        """Convolve ``wave [T]`` with ``rir``: unit-energy RIR, direct-path aligned, same length and peak."""
        rir = rir.to(device=wave.device, dtype=wave.dtype)
        rir = rir / rir.square().sum().sqrt().clamp_min(1e-12)
        peak = int(rir.abs().argmax())
        out = AF.fftconvolve(wave, rir)[peak : peak + wave.numel()]
        in_peak = wave.abs().max()
        out_peak = out.abs().max().clamp_min(1e-12)
        return out * (in_peak / out_peak)

    def __call__(self, wave: Tensor, generator: torch.Generator) -> Tensor:
        if not draw_bernoulli(generator, self.prob):
            return wave
        rir = self.cache.get(self.rirs[draw_randint(generator, 0, len(self.rirs))])
        return self.apply_rir(wave, rir)


# --- speed perturbation -----------------------------------------------------------------


class SpeedPerturb:
    """Speed perturbation (Ko et al., 2015): tempo and pitch change together by factor ``s``.

    Done as Kaldi/WeSpeaker do with sox ``speed``: resample as if the audio had been recorded
    at ``sr * s`` to ``sr`` (length ``T / s``); the windowed-sinc kernels of
    ``torchaudio.transforms.Resample`` are built once per factor. With probability ``prob`` a
    factor other than 1.0 is chosen uniformly.

    ``speed_index`` numbering: 0 is always 1.0 (unperturbed speech keeps its speaker label);
    the other factors are 1, 2, ... in the order of ``speeds``; ``self.index_speeds[i]`` gives
    the factor. With ``as_new_speaker`` (WeSpeaker) the dataset maps
    ``label -> label + speed_index * num_speakers``.
    """

    def __init__(self, speeds: Sequence[float] = (0.9, 1.0, 1.1), sample_rate: int = 16000, prob: float = 0.6) -> None:
        speeds = [float(s) for s in speeds]
        if 1.0 not in speeds:
            raise ValueError(f"augment.speed.speeds must contain 1.0, got {speeds}")
        if len(set(speeds)) != len(speeds) or any(s <= 0 for s in speeds):
            raise ValueError(f"augment.speed.speeds must be distinct and positive, got {speeds}")
        self.index_speeds = [1.0] + [s for s in speeds if s != 1.0]
        self.sample_rate = sample_rate
        self.prob = prob
        self._resamplers = {
            i: AT.Resample(orig_freq=round(sample_rate * s), new_freq=sample_rate)
            for i, s in enumerate(self.index_speeds)
            if i > 0
        }

    @classmethod
    def from_config(cls, cfg: SpeedConfig, sample_rate: int = 16000) -> "SpeedPerturb":
        return cls(cfg.speeds, sample_rate, cfg.prob)

    @property
    def num_speeds(self) -> int:
        return len(self.index_speeds)

    def perturb(self, wave: Tensor, speed_index: int) -> Tensor:
        """``wave`` played at ``index_speeds[speed_index]`` (length ~ T / speed)."""
        if speed_index == 0:
            return wave
        resampler = self._resamplers[speed_index].to(wave.device)
        return resampler(wave)

    def __call__(self, wave: Tensor, generator: torch.Generator) -> tuple[Tensor, int]:
        if self.num_speeds == 1 or not draw_bernoulli(generator, self.prob):
            return wave, 0
        index = 1 + draw_randint(generator, 0, self.num_speeds - 1)
        return self.perturb(wave, index), index


# --- the waveform chain -----------------------------------------------------------------


class WaveAugment:
    """Speed -> reverb -> noise -> telephone channel on one waveform; ops disabled in the
    config are skipped (the channel comes last: it carries the room and the noise).

    ``__call__(wave [T], generator) -> (wave, speed_index)`` (``speed_index`` 0 without speed
    perturbation). ``num_speeds`` is 1 unless speed perturbation is on with ``as_new_speaker``.
    """

    def __init__(
        self,
        speed: Optional[SpeedPerturb] = None,
        reverb: Optional[Reverb] = None,
        noise: Optional[AddNoise] = None,
        speed_as_new_speaker: bool = False,
        telephone: Optional[TelephoneChannel] = None,
    ) -> None:
        self.speed, self.reverb, self.noise, self.telephone = speed, reverb, noise, telephone
        self.speed_as_new_speaker = speed_as_new_speaker and speed is not None

    @classmethod
    def from_config(cls, cfg: AugmentConfig, sample_rate: int = 16000) -> "WaveAugment":
        return cls(
            speed=SpeedPerturb.from_config(cfg.speed, sample_rate) if cfg.speed.enabled else None,
            reverb=Reverb.from_config(cfg.reverb, sample_rate) if cfg.reverb.enabled else None,
            noise=AddNoise.from_config(cfg.noise, sample_rate) if cfg.noise.enabled else None,
            speed_as_new_speaker=cfg.speed.enabled and cfg.speed.as_new_speaker,
            telephone=TelephoneChannel.from_config(cfg.telephone, sample_rate) if cfg.telephone.enabled else None,
        )

    @property
    def enabled(self) -> bool:
        return any(op is not None for op in (self.speed, self.reverb, self.noise, self.telephone))

    @property
    def num_speeds(self) -> int:
        """Label multiplier: ``num_classes = num_speakers * num_speeds``."""
        return self.speed.num_speeds if self.speed_as_new_speaker and self.speed is not None else 1

    def __call__(self, wave: Tensor, generator: torch.Generator) -> tuple[Tensor, int]:
        speed_index = 0
        if self.speed is not None:
            wave, speed_index = self.speed(wave, generator)
        if self.reverb is not None:
            wave = self.reverb(wave, generator)
        if self.noise is not None:
            wave = self.noise(wave, generator)
        if self.telephone is not None:
            wave = self.telephone(wave, generator)
        return wave, speed_index
