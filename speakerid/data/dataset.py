"""Training chunks: random fixed-length crops of a data dir's utterances, augmented, as fbank.

One sample is made from one utterance by :class:`ChunkPipeline`, in this order (the order
WeSpeaker and Kaldi recipes use; the *why* of each step is in the step's comment):

1. read a random region long enough for the chunk (after the slowest speed perturbation);
2. speed perturbation of that region (before cropping, so the chunk has the exact length);
3. crop to ``chunk_samples = (chunk_frames - 1) * shift + window`` samples, or repeat a short
   utterance (``pad_mode="repeat"``, default) / zero-pad it (``"zero"``);
4. reverb and additive noise on the chunk (:class:`speakerid.augment.spec.WaveAugment`);
5. Kaldi fbank with the training dither, then CMN over the chunk -> ``[chunk_frames, bins]``.

When MixUp works on waveforms (``augment.mixup.domain == "waveform"``) step 5 moves to the batch
step, which mixes the waveforms first and then computes fbank for the whole batch at once.
With cached features (``feats.scp``) steps 1-4 are replaced by a random crop of the matrix.

Determinism: every random choice of a sample comes from one ``torch.Generator`` seeded from
``(seed, epoch, pos)`` (:class:`speakerid.data.sampler.SampleKey`), so a sample is the same
in any DataLoader worker, after a resume, and under any DDP world size. The batch step
(:class:`BatchAugment`) seeds SpecAugment per sample the same way, and MixUp per global batch.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from torch import Tensor
from torch.utils.data import Dataset

from speakerid.audio import FFMPEG_ONLY_EXTENSIONS, AudioError, load_audio
from speakerid.augment.spec import WAVEFORM_SECTIONS, check_mixup, mixes_waveforms
from speakerid.config import AugmentConfig, FeatureConfig
from speakerid.data.datadir import DataDir, DataDirError, read_data_dir
from speakerid.data.sampler import SampleKey
from speakerid.data.seeding import STREAM_CHUNK, sample_generator
from speakerid.features.kaldi import apply_cmn, fbank_from_config, frame_geometry

logger = logging.getLogger(__name__)

# Independent random streams of one sample / one batch (the last part of the seed tuple).
PAD_MODES = ("repeat", "zero")


def randint_below(g: torch.Generator, high: int) -> int:
    """Uniform integer in ``[0, high)``."""
    return int(torch.randint(high, (1,), generator=g).item()) if high > 1 else 0


def fit_length(x: Tensor, length: int, g: torch.Generator, pad_mode: str = "repeat") -> Tensor:
    """Random crop of ``x`` (time on dim 0) to ``length``, or repeat / zero-pad it when shorter.

    Repeating (WeSpeaker's choice) keeps a short chunk all speech, so chunk CMN and the
    statistics pooling see no artificial silence; the repetition starts at a random phase.
    """
    n = x.size(0)
    if n >= length:
        start = randint_below(g, n - length + 1)
        return x[start : start + length]
    if pad_mode == "zero":
        pad = torch.zeros((length - n,) + tuple(x.shape[1:]), dtype=x.dtype)
        return torch.cat([x, pad], dim=0)
    reps = -(-(length + n) // n)
    phase = randint_below(g, n)
    return x.repeat((reps,) + (1,) * (x.dim() - 1))[phase : phase + length]


def chunk_num_samples(feature_cfg: FeatureConfig, chunk_frames: int) -> int:
    """Samples whose fbank has exactly ``chunk_frames`` frames: ``(chunk_frames - 1) * shift + window``."""
    window, shift, _ = frame_geometry(feature_cfg.sample_rate, feature_cfg.frame_length_ms, feature_cfg.frame_shift_ms)
    return (chunk_frames - 1) * shift + window


class ChunkPipeline:
    """Waveform region -> augmented chunk (fbank ``[frames, bins]`` or waveform ``[samples]``).

    Shared by :class:`ChunkDataset` (regions read from files) and
    :class:`speakerid.data.shards.ShardDataset` (decoded from tar shards), so both yield the
    same samples from the same audio and generator.
    """

    def __init__(
        self,
        feature_cfg: FeatureConfig,
        augment_cfg: AugmentConfig,
        chunk_frames: int,
        train: bool = True,
        return_waveform: bool = False,
        pad_mode: str = "repeat",
    ) -> None:
        if chunk_frames < 1:
            raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
        if pad_mode not in PAD_MODES:
            raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
        self.feature_cfg = feature_cfg
        self.augment_cfg = augment_cfg
        self.chunk_frames = chunk_frames
        self.chunk_samples = chunk_num_samples(feature_cfg, chunk_frames)
        self.sample_rate = feature_cfg.sample_rate
        self.train = train
        self.return_waveform = return_waveform
        self.pad_mode = pad_mode
        self.dither = feature_cfg.dither if train else 0.0
        self.speed = None
        self.wave_aug = None
        self.num_speeds = 1
        if train:
            self.speed, self.wave_aug = _build_wave_augment(augment_cfg, self.sample_rate)
            if self.speed is not None:
                self.num_speeds = len(augment_cfg.speed.speeds)
        # Read enough audio that the chunk is still full after the fastest speed-up.
        max_speed = max(augment_cfg.speed.speeds) if self.speed is not None else 1.0
        self.source_samples = int(math.ceil(self.chunk_samples * max_speed)) + (1 if self.speed is not None else 0)

    def __call__(self, region: Tensor, g: torch.Generator) -> tuple[Tensor, int]:
        """``region [T]`` (ideally ``source_samples`` long) -> (chunk, speed_index)."""
        speed_index = 0
        wave = region
        if self.speed is not None:
            wave, speed_index = self.speed(wave, g)
        wave = fit_length(wave, self.chunk_samples, g, self.pad_mode)
        if self.wave_aug is not None:
            wave, _ = self.wave_aug(wave, g)
        wave = wave.contiguous().float()
        if self.return_waveform:
            return wave, speed_index
        feats = fbank_from_config(wave.unsqueeze(0), self.feature_cfg, dither=self.dither, generator=g)[0]
        return feats, speed_index


def _build_wave_augment(cfg: AugmentConfig, sample_rate: int) -> tuple[Any, Any]:
    """(SpeedPerturb or None, WaveAugment-without-speed or None) from the config.

    Speed is split off WaveAugment's speed -> reverb -> noise chain because it must act
    before the crop (it changes the length); reverb and noise then act on the chunk only,
    not the whole utterance (cheaper; same distribution).
    """
    speed = None
    wave_aug = None
    if cfg.speed.enabled:
        from speakerid.augment.wave import SpeedPerturb

        if 1.0 not in cfg.speed.speeds:
            raise ValueError(f"augment.speed.speeds must contain 1.0, got {cfg.speed.speeds}")
        speed = SpeedPerturb.from_config(cfg.speed, sample_rate)
    if any(getattr(cfg, name).enabled for name in WAVEFORM_SECTIONS if name != "speed"):
        from speakerid.augment.wave import WaveAugment

        no_speed = dataclasses.replace(cfg, speed=dataclasses.replace(cfg.speed, enabled=False))
        wave_aug = WaveAugment.from_config(no_speed, sample_rate)
    return speed, wave_aug


def _parse_key(key: Any) -> SampleKey:
    """Accept a :class:`SampleKey`, ``(epoch, index)`` or a plain index (epoch 0, pos = index)."""
    if isinstance(key, SampleKey):
        return key
    if isinstance(key, (tuple, list)):
        if len(key) == 4:
            return SampleKey(*(int(k) for k in key))
        if len(key) == 2:
            epoch, index = int(key[0]), int(key[1])
            return SampleKey(epoch, -1, index, index)
        raise TypeError(f"dataset key must be (epoch, index) or a SampleKey, got {key!r}")
    index = int(key)
    return SampleKey(0, -1, index, index)


class ChunkDataset(Dataset):
    """Map-style dataset of random, augmented fixed-length chunks of a data dir.

    ``dataset[key]`` with ``key`` a :class:`SampleKey` (what the samplers yield), an
    ``(epoch, index)`` pair, or an index, returns::

        {"feats": FloatTensor[chunk_frames, bins]   # or "wave": [chunk_samples] (waveform MixUp)
         "label": int,                              # speaker label (+ speed_index * num_speakers)
         "utt": str,
         "key": (epoch, batch, pos),
         "feats_k" / "wave_k", "label_k"            # only with two_views (MoCo)}

    ``speaker_to_label`` defaults to sorted speakers -> 0..N-1. ``num_classes`` is
    ``num_speakers * len(speeds)`` when speed perturbation makes new speakers, else
    ``num_speakers``. ``train=False`` turns augmentation and dither off (validation crops).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike | DataDir,
        feature_cfg: FeatureConfig,
        augment_cfg: AugmentConfig,
        chunk_frames: int,
        seed: int,
        speaker_to_label: dict[str, int] | None = None,
        use_cached_features: bool = False,
        two_views: bool = False,
        train: bool = True,
        pad_mode: str = "repeat",
    ) -> None:
        self.data = data_dir if isinstance(data_dir, DataDir) else read_data_dir(data_dir)
        self.seed = int(seed)
        self.two_views = two_views
        self.use_cached_features = use_cached_features
        check_mixup(augment_cfg, two_views)
        waveform_mixup = mixes_waveforms(augment_cfg, train)
        if use_cached_features:
            _check_cached(self.data, augment_cfg, train, waveform_mixup)
        self.pipeline = ChunkPipeline(
            feature_cfg, augment_cfg, chunk_frames, train=train, return_waveform=waveform_mixup, pad_mode=pad_mode
        )
        self.utts = self.data.utts
        self.speaker_to_label = speaker_to_label or {s: i for i, s in enumerate(self.data.speakers)}
        missing = sorted({self.data.utt2spk[u] for u in self.utts} - set(self.speaker_to_label))
        if missing:
            raise DataDirError(f"{self.data.path}: {len(missing)} speaker(s) have no label, e.g. {missing[:3]}")
        self.utt_labels = [self.speaker_to_label[self.data.utt2spk[u]] for u in self.utts]
        self.num_speakers = len(self.speaker_to_label)
        speed_cfg = augment_cfg.speed
        new_speakers = train and speed_cfg.enabled and speed_cfg.as_new_speaker and not use_cached_features
        self.num_classes = self.num_speakers * (len(speed_cfg.speeds) if new_speakers else 1)
        self._speed_as_new_speaker = new_speakers

    # -- public helpers -------------------------------------------------------------------
    @property
    def chunk_frames(self) -> int:
        return self.pipeline.chunk_frames

    @property
    def chunk_samples(self) -> int:
        return self.pipeline.chunk_samples

    @property
    def returns_waveform(self) -> bool:
        """True when items carry ``wave`` (fbank is computed by :class:`BatchAugment`)."""
        return self.pipeline.return_waveform

    def __len__(self) -> int:
        return len(self.utts)

    def __getitem__(self, key: Any) -> dict[str, Any]:
        k = _parse_key(key)
        if not 0 <= k.index < len(self.utts):
            raise IndexError(f"utterance index {k.index} out of range (0..{len(self.utts) - 1})")
        utt = self.utts[k.index]
        return build_item(self, utt, self.utt_labels[k.index], (k.epoch, k.batch, k.pos), lambda g: self._make_chunk(utt, g))

    # -- internals ------------------------------------------------------------------------
    def _make_chunk(self, utt: str, g: torch.Generator) -> tuple[Tensor, int]:
        if self.use_cached_features:
            return self._cached_chunk(utt, g), 0
        region = read_region(self.data.wav[utt], self.pipeline.source_samples, self.pipeline.sample_rate, g)
        return self.pipeline(region, g)

    def _cached_chunk(self, utt: str, g: torch.Generator) -> Tensor:
        import kaldiio

        spec = self.data.feats[utt]
        try:
            mat = np.array(kaldiio.load_mat(spec), dtype=np.float32)  # a writable copy
        except Exception as e:  # kaldiio raises assorted errors for a bad ark/offset
            raise DataDirError(f"{self.data.path / 'feats.scp'}: cannot read features of {utt} ({spec}): {e}") from None
        cfg = self.pipeline.feature_cfg
        if mat.ndim != 2 or mat.shape[1] != cfg.num_mel_bins or mat.shape[0] == 0:
            raise DataDirError(
                f"{self.data.path / 'feats.scp'}: features of {utt} have shape {mat.shape}, "
                f"expected [frames, {cfg.num_mel_bins}] (features.num_mel_bins)"
            )
        feats = fit_length(torch.from_numpy(mat), self.pipeline.chunk_frames, g, self.pipeline.pad_mode)
        if cfg.cmn:  # CMN over the chunk, as the waveform path computes it (idempotent if cached with CMN)
            feats = apply_cmn(feats.unsqueeze(0), None, cfg.sliding_cmn_frames)[0]
        return feats.contiguous()


def build_item(ds: Any, utt: str, label: int, key: tuple[int, int, int], make_chunk: Any) -> dict[str, Any]:
    """The one item rule of :class:`ChunkDataset` and :class:`speakerid.data.shards.ShardDataset`.

    ``key = (epoch, batch, pos)``; view ``v`` (two with ``ds.two_views``) draws from the
    generator of ``(ds.seed, epoch, pos, STREAM_CHUNK + v)``; ``make_chunk(g) -> (x, speed_index)``.
    Labels: the speaker's, or a new class per speed when speed perturbation makes new speakers.
    """
    epoch, _, pos = key
    item: dict[str, Any] = {"utt": utt, "key": key}
    for v in range(2 if ds.two_views else 1):
        x, speed_index = make_chunk(sample_generator(ds.seed, epoch, pos, STREAM_CHUNK + v))
        suffix = "" if v == 0 else "_k"
        item[("wave" if ds.returns_waveform else "feats") + suffix] = x
        item["label" + suffix] = label + speed_index * ds.num_speakers if ds._speed_as_new_speaker else label
    return item


def _check_cached(data: DataDir, augment_cfg: AugmentConfig, train: bool, waveform_mixup: bool) -> None:
    if not data.feats:
        raise DataDirError(f"{data.path / 'feats.scp'}: not found; run `speakerid features` first")
    missing = [u for u in data.utts if u not in data.feats]
    if missing:
        raise DataDirError(f"{data.path / 'feats.scp'}: {len(missing)} utterance(s) have no features, e.g. {missing[:3]}")
    wave_ops = [n for n in WAVEFORM_SECTIONS if getattr(augment_cfg, n).enabled]
    if train and (wave_ops or waveform_mixup):
        ops = ", ".join(wave_ops + (["mixup.domain=waveform"] if waveform_mixup else []))
        raise ValueError(f"augment {ops} act on waveforms and cannot be used with cached features (data.use_cached_features)")


def read_region(path: str, num_samples: int, sample_rate: int, g: torch.Generator) -> Tensor:
    """A random region of ``num_samples`` samples of an audio file (the whole file when shorter).

    Reads only the region (soundfile seek) when the file is at ``sample_rate`` and libsndfile
    reads it; otherwise loads and resamples the whole file with :func:`load_audio`. Both
    paths draw the same offset from ``g``.
    """
    info = None
    if Path(path).suffix.lower() not in FFMPEG_ONLY_EXTENSIONS:
        try:
            info = sf.info(path)
        except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
            info = None  # load_audio gives the precise error
    if info is None or info.samplerate != sample_rate or info.frames <= num_samples:
        wave, _ = load_audio(path, sample_rate)
        if wave.numel() <= num_samples:
            return wave
        start = randint_below(g, wave.numel() - num_samples + 1)
        return wave[start : start + num_samples]
    start = randint_below(g, info.frames - num_samples + 1)
    try:
        data, _ = sf.read(path, start=start, frames=num_samples, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError) as e:
        raise AudioError(f"{path}: cannot read samples {start}..{start + num_samples}: {e}") from None
    if data.shape[0] == 0:
        raise AudioError(f"{path}: no samples at offset {start} (header says {info.frames})")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    wave = torch.from_numpy(np.ascontiguousarray(mono))
    if not torch.isfinite(wave).all():
        raise AudioError(f"{path}: NaN or inf samples (a corrupt or badly written float file)")
    return wave
