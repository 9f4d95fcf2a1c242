"""The embedding rule: a model source -> front end -> segment policy -> one vector per utterance.

``load_experiment(exp_dir)`` rebuilds the inference chain of a training run as one
TorchScript-able module, :class:`EmbeddingExtractor`: waveform ``[B, T]`` -> Kaldi fbank
(no dither) -> CMN (per-utterance mean, as configured in ``features``) -> encoder ->
embedding ``[B, D]``. 

How a whole utterance of any length becomes one embedding (:class:`SegmentPolicy`; the same
rule for ``speakerid extract``, ``enroll``/``verify``/``identify`` and
:func:`embed_waveform`, so a file gets the same vector whichever path it takes):

1. Utterances shorter than ``min_seconds`` (0.5 s) are tiled (repeated) up to it, so that
   every encoder sees enough frames for its convolutions and pooling.
2. Utterances longer than ``max_window_seconds`` (20 s) are cut into ``n = ceil(len / 20 s)``
   equal windows spread evenly over the utterance (the first starts at 0, the last ends at
   the end); the utterance embedding is the MEAN of the window embeddings (raw, before
   length normalisation; the windows are equally long, so equally weighted). 20 s keeps
   the activations of ECAPA c1024 on a GPU bounded while being longer than all but a few
   VoxCeleb1 test utterances, which are therefore embedded whole.
3. Batches stack segments of EQUAL length only (no padding), so a batched embedding equals
   the one-at-a-time embedding: padding would change it (CMN and the encoders' statistics
   pooling would see the padded frames; the encoders take no lengths). A segment is a whole
   number of ``length_quantum_frames``; the default, 1 frame, embeds every frame of the clip
   (the sub-frame remainder is dropped by the fbank itself, as in Kaldi). A quantum of 10
   frames (the default before issue 16) dropped up to 99 ms of trailing audio to make lengths
   repeat: ``benchmarks/bench_length_quantum.py`` measured the same dev EER within noise, a
   median embedding change of 1e-2 (1 - cosine) on clips of 1 s or less, and no speed gain on
   a CPU (benchmarks/results_length_quantum.md).

Also here: :class:`Embedder`, what :func:`speakerid.load_model` returns, and
:func:`model_fingerprint`. Where a model comes from and the experiment dir's other files are
:mod:`speakerid.experiment`'s. Every path that embeds (``extract``, ``enroll``/``verify``/
``identify``, ``export``, the trainer's dev evaluation) goes through :func:`embed_waves`, so a
file gets one embedding whichever path it takes.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from speakerid.config import FeatureConfig, TrainConfig, load_config
from speakerid.extractor import EmbeddingExtractor, model_fingerprint
from speakerid.experiment import CONFIG_FILE, MODEL_FILE, ExperimentError, require_files, resolve_model_source

# --------------------------------------------------------------------------- the model chain
def build_frontend(cfg: FeatureConfig) -> nn.Module:
    """The evaluation front end that ``cfg.frontend`` names (speakerid's Kaldi fbank, or SpeechBrain's)."""
    from speakerid.features.kaldi import Fbank
    from speakerid.features.speechbrain import SpeechBrainFbank

    if cfg.frontend == "speechbrain":  # imported SpeechBrain models: same call signature and attributes
        return SpeechBrainFbank(cfg.sample_rate, cfg.num_mel_bins, cfg.frame_length_ms, cfg.frame_shift_ms, cfg.cmn)
    return Fbank.from_config(cfg, train=False)


def build_extractor(cfg: TrainConfig, state_dict: dict[str, Tensor] | None = None, source: str = "<model>",
                    encoder: nn.Module | None = None) -> EmbeddingExtractor:
    """The extractor for ``cfg`` (encoder rebuilt as the trainer builds it, unless given), with ``state_dict`` loaded."""
    from speakerid.models import build_encoder

    encoder = build_encoder(cfg) if encoder is None else encoder
    if state_dict is not None:
        try:
            encoder.load_state_dict(state_dict, strict=True)
        except RuntimeError as e:
            first = str(e).strip().splitlines()
            detail = " ".join(line.strip() for line in first[:3])
            raise ExperimentError(f"{source}: weights do not fit model {cfg.model.name!r} of the config ({detail})") from None
    frontend = build_frontend(cfg.features)
    embed_dim = int(getattr(encoder, "embed_dim", 0)) or _probe_embed_dim(frontend, encoder, cfg.features.sample_rate)
    return EmbeddingExtractor(frontend, encoder, cfg.features.sample_rate, embed_dim).eval()


def _probe_embed_dim(frontend: nn.Module, encoder: nn.Module, sample_rate: int) -> int:
    with torch.no_grad():
        return int(encoder.eval()(frontend(torch.randn(1, sample_rate) * 0.1)).shape[-1])


def load_experiment(exp_dir: str | os.PathLike, device: str | torch.device = "cpu",
                    backend: str = "torch") -> tuple[EmbeddingExtractor, TrainConfig]:
    """Load ``exp_dir/config.yaml`` and ``exp_dir/model.pt`` (weights_only) -> (extractor in eval mode, config).

    ``exp_dir`` is any model source :func:`resolve_model_source` accepts (a dir or a packaged name).
    ``backend``: what runs the encoder, ``"torch"`` (here the default: the eager modules, for code
    that inspects or exports them), ``"auto"`` (onnxruntime on a CPU where it reproduces the eager
    model, else torch: the default of :func:`load_model`, ``SpeakerModel``, ``extract`` and the CLI)
    or ``"onnxruntime"`` (:mod:`speakerid.encoder_runtime`: the same embeddings within float
    rounding, 1.6x as fast as eager torch on a CPU for CAM++ at batch 1).
    """
    from speakerid.encoder_runtime import BackendError, apply_backend
    from speakerid.checkpoint import CheckpointError, check_weights, file_budget, load_checkpoint, state_bytes
    from speakerid.models import build_encoder

    exp_dir = resolve_model_source(exp_dir)
    require_files(exp_dir)
    cfg = load_config(exp_dir / CONFIG_FILE)
    weights = exp_dir / MODEL_FILE
    try:
        # sizes declared in the file are checked against the config's encoder before any tensor is read
        encoder = build_encoder(cfg)
        state = load_checkpoint(weights, max_bytes=file_budget(state_bytes(encoder)))  # weights_only=True
        if "model" in state and isinstance(state["model"], dict):  # a full training checkpoint
            state = state["model"]
        check_weights(state, str(weights))  # tensors only, no NaN / inf
    except CheckpointError as e:
        raise ExperimentError(str(e)) from None
    extractor = build_extractor(cfg, state, source=str(weights), encoder=encoder).to(device)
    try:
        return apply_backend(extractor, backend, str(exp_dir), device), cfg
    except BackendError as e:
        raise ExperimentError(str(e)) from None


# --------------------------------------------------------------------------- segmentation
MIN_TRIMMED_S = 0.3  # below this much speech after trimming, the untrimmed clip is embedded


@dataclass(frozen=True)
class SegmentPolicy:
    """How an utterance of any length is cut into equal-length segments (see the module doc)."""

    max_window_seconds: float = 20.0
    min_seconds: float = 0.5
    length_quantum_frames: int = 1
    trim_silence: bool = False  # drop leading/trailing/long silences first (speakerid.features.vad.trim_silence)

    @classmethod
    def from_config(cls, cfg: TrainConfig) -> "SegmentPolicy":
        """The default policy, with silence trimming as the experiment's ``features.trim_silence`` says (off by default)."""
        return cls(trim_silence=bool(getattr(cfg.features, "trim_silence", False)))

    def __post_init__(self) -> None:
        if self.max_window_seconds < self.min_seconds or self.min_seconds <= 0:
            raise ValueError(f"bad segment policy: need 0 < min_seconds <= max_window_seconds, got {self}")
        if self.length_quantum_frames < 1:
            raise ValueError(f"bad segment policy: length_quantum_frames must be >= 1, got {self.length_quantum_frames}")


def segment_plan(num_samples: int, window: int, shift: int, sample_rate: int, policy: SegmentPolicy) -> tuple[int, list[int]]:
    """(segment length in samples, start offsets) for an utterance of ``num_samples`` samples.

    When the utterance is shorter than ``min_seconds`` the single "segment" is longer than
    the utterance: the caller tiles the waveform up to it (see :func:`cut_segments`).
    """
    from speakerid.features.kaldi import frames_of

    q = policy.length_quantum_frames
    min_frames = max(q, q * math.ceil(policy.min_seconds * sample_rate / shift / q))
    max_frames = max(min_frames, q * int(policy.max_window_seconds * sample_rate / shift / q))
    frames = frames_of(num_samples, window, shift)
    if frames < min_frames:
        return window + shift * (min_frames - 1), [0]
    n = math.ceil(frames / max_frames)
    per = max(min_frames, (frames // n) // q * q)
    seg = window + shift * (per - 1)
    if n == 1:
        return seg, [0]
    span = num_samples - seg
    return seg, [round(i * span / (n - 1)) for i in range(n)]


def cut_segments(wave: Tensor, window: int, shift: int, sample_rate: int, policy: SegmentPolicy) -> Tensor:
    """``wave [T]`` -> ``[n, seg]`` equal-length segments per :func:`segment_plan` (short waves tiled)."""
    seg, starts = segment_plan(wave.numel(), window, shift, sample_rate, policy)
    if wave.numel() < seg:
        reps = math.ceil(seg / wave.numel())
        return wave.repeat(reps)[:seg].unsqueeze(0)
    return torch.stack([wave[s : s + seg] for s in starts])


def _frontend_geometry(extractor: EmbeddingExtractor) -> tuple[int, int]:
    return int(extractor.frontend.window), int(extractor.frontend.shift)


def segment_batches(
    waves: Sequence[Tensor], window: int, shift: int, sample_rate: int, policy: SegmentPolicy = SegmentPolicy(), batch_size: int = 16
) -> list[tuple[Tensor, Tensor]]:
    """The batches :func:`embed_waves` runs: ``(utterance indices [b], segments [b, seg])``, equal lengths per batch.

    Longest segments first; silence trimmed first when the policy says so.
    """
    if policy.trim_silence:
        from speakerid.features.vad import trim_silence

        trimmed = [trim_silence(w.reshape(-1), sample_rate) for w in waves]
        # almost nothing left (a quiet or very short clip): embed the whole clip rather than a fragment
        waves = [t if t.numel() >= MIN_TRIMMED_S * sample_rate else w.reshape(-1) for t, w in zip(trimmed, waves)]
    by_len: dict[int, list[tuple[int, Tensor]]] = {}
    for i, w in enumerate(waves):
        for seg in cut_segments(w.reshape(-1), window, shift, sample_rate, policy):
            by_len.setdefault(seg.numel(), []).append((i, seg))
    batches = []
    for length in sorted(by_len, reverse=True):
        group = by_len[length]
        for b in range(0, len(group), batch_size):
            items = group[b : b + batch_size]
            batches.append((torch.tensor([i for i, _ in items]), torch.stack([seg for _, seg in items])))
    return batches


@torch.no_grad()
def mean_embeddings(fn, batches: Sequence[tuple[Tensor, Tensor]], num_utts: int, embed_dim: int, device: torch.device) -> Tensor:
    """``[N, D]`` float32: the mean over each utterance's segments of ``fn(batch)`` (float64 sums)."""
    sums = torch.zeros(num_utts, embed_dim, dtype=torch.float64)
    counts = torch.zeros(num_utts, dtype=torch.float64)
    for idx, x in batches:
        emb = fn(x.to(device)).float().cpu().to(torch.float64)
        sums.index_add_(0, idx, emb)
        counts.index_add_(0, idx, torch.ones(idx.numel(), dtype=torch.float64))
    return (sums / counts.unsqueeze(1)).float()


@torch.no_grad()
def embed_waves(
    extractor: EmbeddingExtractor,
    waves: Sequence[Tensor],
    policy: SegmentPolicy = SegmentPolicy(),
    batch_size: int = 16,
) -> Tensor:
    """Embeddings ``[N, D]`` (float32, CPU) of N whole waveforms, batched by equal segment length."""
    if not waves:
        return torch.zeros(0, extractor.embed_dim)
    window, shift = _frontend_geometry(extractor)
    device = next(extractor.parameters(), torch.zeros(0)).device
    batches = segment_batches(waves, window, shift, extractor.sample_rate, policy, batch_size)
    return mean_embeddings(extractor, batches, len(waves), extractor.embed_dim, device)


def embed_waveform(extractor: EmbeddingExtractor, wave: Tensor, policy: SegmentPolicy = SegmentPolicy()) -> Tensor:
    """Embedding ``[D]`` of one whole waveform ``[T]`` (windows averaged when long)."""
    return embed_waves(extractor, [wave], policy)[0]


def embed_files(
    extractor: EmbeddingExtractor,
    paths: Sequence[str | os.PathLike],
    policy: SegmentPolicy = SegmentPolicy(),
    batch_size: int = 16,
) -> Tensor:
    """Embeddings ``[N, D]`` of audio files (read with :func:`speakerid.audio.load_audio`)."""
    from speakerid.audio import load_audio, require_min_length

    waves = [require_min_length(load_audio(p, extractor.sample_rate)[0], extractor.sample_rate, p) for p in paths]
    return embed_waves(extractor, waves, policy, batch_size)


# --------------------------------------------------------------------------- the user-facing embedder
class Embedder:
    """A loaded model source: ``embed(wave, sr)`` and ``embed_files(paths)`` under its segment policy."""

    def __init__(self, extractor: EmbeddingExtractor, cfg: TrainConfig | None = None, source: str = "<model>",
                 policy: SegmentPolicy | None = None, batch_size: int = 16) -> None:
        self.extractor, self.cfg, self.source = extractor, cfg, source
        self.policy = policy if policy is not None else (SegmentPolicy.from_config(cfg) if cfg is not None else SegmentPolicy())
        self.batch_size = batch_size

    @property
    def sample_rate(self) -> int:
        return self.extractor.sample_rate

    @property
    def embed_dim(self) -> int:
        return self.extractor.embed_dim

    @property
    def fingerprint(self) -> str:
        return model_fingerprint(self.extractor, self.policy)

    def embed(self, wave: np.ndarray | Tensor, sr: int) -> np.ndarray:
        """Embedding ``[D]`` (float32, not length-normalised) of one mono waveform in [-1, 1] at ``sr`` Hz."""
        w = torch.as_tensor(np.asarray(wave, dtype=np.float32) if not isinstance(wave, Tensor) else wave).float()
        if w.dim() != 1:
            raise ValueError(f"{self.source}: embed() takes one mono waveform [T], got shape {tuple(w.shape)}")
        if int(sr) != self.sample_rate:
            import torchaudio.functional as AF

            w = AF.resample(w, int(sr), self.sample_rate)
        return embed_waves(self.extractor, [w], self.policy, self.batch_size)[0].numpy()

    def embed_files(self, paths: Sequence[str | os.PathLike]) -> np.ndarray:
        """Embeddings ``[N, D]`` (float32) of audio files."""
        return embed_files(self.extractor, list(paths), self.policy, self.batch_size).numpy()


def load_model(source: str | os.PathLike | None = None, device: str | torch.device = "cpu", backend: str = "auto") -> Embedder:
    """An :class:`Embedder` for a model source (experiment dir or packaged name; None: the packaged
    default, :data:`speakerid.pretrained.DEFAULT_MODEL`); ``backend``: what runs the encoder, as in
    :func:`load_experiment` (:mod:`speakerid.encoder_runtime`)."""
    if source is None:
        from speakerid.pretrained import DEFAULT_MODEL

        source = DEFAULT_MODEL
    exp_dir = resolve_model_source(source)
    extractor, cfg = load_experiment(exp_dir, device=device, backend=backend)
    return Embedder(extractor, cfg, str(exp_dir))
