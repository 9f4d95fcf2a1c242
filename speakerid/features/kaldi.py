"""Kaldi-compatible log-mel filterbank features, batched over utterances and runnable on GPU.

``fbank(wave)`` equals ``torchaudio.compliance.kaldi.fbank(wave * 32768, num_mel_bins=80,
dither=0)`` (Kaldi's ``compute-fbank-feats`` defaults: 25 ms povey window, 10 ms shift,
snip_edges, preemphasis 0.97, DC removal, power spectrum, FFT size 512, mel bins 20 Hz to
Nyquist, ``log(max(x, FLT_EPSILON))``) to float32 rounding (max 2e-6 on the shared speech),
but computes a whole batch ``[B, T]`` at once: one unfold (a strided view), the per-frame
steps, one rfft and one matmul with the mel matrix, which is computed once (reusing
``torchaudio.compliance.kaldi.get_mel_banks``) and cached (a buffer in :class:`Fbank`).
On CPU the batch goes through in blocks of ~1k frames so that intermediates stay in cache
(one block for the whole batch is ~4x slower on CPU, see benchmarks/bench_features.py); on
GPU it is one block.

Scale: waves are float in [-1, 1] (what :func:`speakerid.audio.load_audio` returns); features
are those of the wave scaled by 32768, as Kaldi and WeSpeaker work at int16 scale (so
``dither=1.0`` means one int16 LSB of Gaussian noise, as in Kaldi). The scale is applied as
``2**30`` inside the mel matrix, which is exact and saves a pass over the wave.

Why the per-frame steps copy Kaldi's order op for op (DC removal, then preemphasis with the
first sample replicated, then the window) rather than, e.g., preemphasising the whole signal
once: low-energy bins (~1e-6 of the frame's energy, e.g. the lowest mel bins after
preemphasis) are ill-conditioned, and a float32 rounding taken in another order moves their
log by up to 3e-2; copying the order keeps the frames entering the FFT bitwise equal to the
reference's, hence the 1e-3 agreement everywhere.

One documented departure: dither (training only) is added once per waveform sample before
framing, where Kaldi adds independent noise to each frame's copy of a sample. The noise floor
it gives (so that ``log`` never sees 0) is the same; overlapping frames share their noise.

CMN (per-utterance cepstral/feature mean normalisation) subtracts the mean over frames of each
bin; ``sliding_cmn_frames > 0`` uses Kaldi's centred sliding window instead
(``apply-cmvn-sliding --center=true --cmn-window=N``). With ``lengths`` (samples per
utterance of a zero-padded batch) the means ignore the padding and padded frames are zeroed.
"""

from __future__ import annotations

import logging
from typing import Optional

import torch
import torchaudio.compliance.kaldi as kaldi
from torch import Tensor, nn

from speakerid.config import FeatureConfig
from speakerid.features.windows import wave_scale_factor, window_function

logger = logging.getLogger(__name__)

LOW_FREQ_HZ = 20.0  # Kaldi's --low-freq default
HIGH_FREQ_HZ = 0.0  # <= 0: offset from Nyquist (Kaldi's --high-freq default)
#: On CPU, frames are processed in blocks of about this many (cache-sized intermediates).
CPU_BLOCK_FRAMES = 1024
# Preemphasis 0.97 and the log floor FLT_EPSILON (1.1920928955078125e-07) are literals inside
# the scripted functions: TorchScript cannot read module-level floats.


def frame_geometry(sample_rate: int, frame_length_ms: float, frame_shift_ms: float) -> tuple[int, int, int]:
    """(window, shift, fft_size) in samples, rounded exactly as Kaldi/torchaudio do."""
    window = int(sample_rate * frame_length_ms * 0.001)
    shift = int(sample_rate * frame_shift_ms * 0.001)
    if window < 2 or shift < 1:
        raise ValueError(f"frame length {frame_length_ms} ms / shift {frame_shift_ms} ms too short at {sample_rate} Hz")
    fft_size = 1 << (window - 1).bit_length()  # round_to_power_of_two
    return window, shift, fft_size


def frames_of(num_samples: int, window: int, shift: int) -> int:
    """THE frame count (snip_edges=True): frames of ``window`` samples every ``shift``; 0 if shorter than a window."""
    return 0 if num_samples < window else 1 + (num_samples - window) // shift


def num_frames(num_samples: int, sample_rate: int = 16000, frame_length_ms: float = 25.0, frame_shift_ms: float = 10.0) -> int:
    """Number of fbank frames of ``num_samples`` samples (snip_edges=True; 0 if shorter than a window)."""
    window, shift, _ = frame_geometry(sample_rate, frame_length_ms, frame_shift_ms)
    return frames_of(num_samples, window, shift)


def fbank_from_config(
    wave: Tensor, cfg: FeatureConfig, cmn: Optional[bool] = None, dither: float = 0.0, generator: Optional[torch.Generator] = None
) -> Tensor:
    """:func:`fbank` with the settings of a :class:`speakerid.config.FeatureConfig`.

    ``dither`` is explicit (0 unless the caller trains); ``cmn`` overrides the config's (the
    feature cache stores raw features)."""
    return fbank(
        wave,
        sample_rate=cfg.sample_rate,
        num_mel_bins=cfg.num_mel_bins,
        frame_length_ms=cfg.frame_length_ms,
        frame_shift_ms=cfg.frame_shift_ms,
        dither=dither,
        cmn=cfg.cmn if cmn is None else cmn,
        sliding_cmn_frames=cfg.sliding_cmn_frames,
        generator=generator,
    )


def povey_window(window: int, device: Optional[torch.device] = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """Kaldi's povey window: a symmetric Hann window raised to 0.85 (zero at both ends)."""
    return torch.hann_window(window, periodic=False, device=device, dtype=dtype).pow(0.85)


def mel_matrix(num_mel_bins: int, fft_size: int, sample_rate: int) -> Tensor:
    """Kaldi's triangular mel filters, transposed to ``[fft_size // 2 + 1, num_mel_bins]``.

    Reuses ``torchaudio.compliance.kaldi.get_mel_banks`` (the exact Kaldi construction) and
    appends the zero row for the Nyquist bin, as ``kaldi.fbank`` does.
    """
    banks, _ = kaldi.get_mel_banks(num_mel_bins, fft_size, float(sample_rate), LOW_FREQ_HZ, HIGH_FREQ_HZ, 100.0, -500.0, 1.0)
    banks = torch.nn.functional.pad(banks.float(), (0, 1))  # [bins, fft_size // 2 + 1]
    return banks.t().contiguous()


def scaled_mel_matrix(num_mel_bins: int, fft_size: int, sample_rate: int) -> Tensor:
    """:func:`mel_matrix` times ``32768 ** 2``: applied to the power spectrum of a [-1, 1] wave it
    gives Kaldi's int16-scale mel energies. Scaling by a power of two is exact in floating
    point, and DC removal, preemphasis, window, FFT and |.|^2 are all (homogeneously) linear or
    quadratic, so this equals scaling the wave first, bit for bit, without a pass over it."""
    return mel_matrix(num_mel_bins, fft_size, sample_rate) * float(2**30)


def mel_for_scale(num_mel_bins: int, fft_size: int, sample_rate: int, wave_scale: str) -> Tensor:
    """The mel matrix times the square of the wave scale (exact: both factors are powers of two)."""
    factor = wave_scale_factor(wave_scale)
    if factor == 32768.0:
        return scaled_mel_matrix(num_mel_bins, fft_size, sample_rate)
    return mel_matrix(num_mel_bins, fft_size, sample_rate) * (factor * factor)


def frame_lengths(lengths: Tensor, window: int, shift: int) -> Tensor:
    """Frames per utterance for sample ``lengths`` (snip_edges=True)."""
    return torch.where(lengths >= window, torch.div(lengths - window, shift, rounding_mode="floor") + 1, torch.zeros_like(lengths))


def _frames_to_log_mel(
    frames: Tensor, window_fn: Tensor, mel_t: Tensor, out: Tensor, z: Tensor, y: Tensor, padded: Tensor
) -> None:
    """Raw frames ``[..., window]`` (a strided view is fine) -> log-mel written into ``out [..., bins]``.

    ``z``, ``y`` (frame-shaped) and ``padded`` (``[..., fft_size]``, zero beyond ``window``)
    are reused work buffers. The pre-FFT steps repeat ``torchaudio.compliance.kaldi`` op for
    op, so the frames entering the FFT are bitwise the reference's (why: module docstring).
    """
    window = frames.size(-1)
    torch.sub(frames, frames.mean(-1, keepdim=True), out=z)  # remove DC offset per frame
    # Kaldi's preemphasis: y[j] = z[j] - 0.97 * z[j-1], y[0] = z[0] - 0.97 * z[0].
    torch.mul(z[..., : window - 1], 0.97, out=y[..., 1:])
    torch.mul(z[..., :1], 0.97, out=y[..., :1])
    torch.sub(z, y, out=y)
    # Windowed frames go straight into the zero-padded FFT buffer (no padding copy).
    torch.mul(y, window_fn, out=padded[..., :window])
    spec = torch.view_as_real(torch.fft.rfft(padded))  # [..., fft_size // 2 + 1, 2]
    # |X|^2 = re^2 + im^2: one contiguous in-place square, one add (abs().pow(2) is ~8x slower
    # on CPU: a hypot per bin; the results agree to float32 rounding, 1e-7 relative).
    spec.square_()
    power = torch.add(spec[..., 0], spec[..., 1])
    torch.matmul(power, mel_t, out=out)
    out.clamp_min_(1.1920928955078125e-07).log_()  # Kaldi: log(max(x, FLT_EPSILON))


def _log_mel(
    wave: Tensor,
    window_fn: Tensor,
    mel_t: Tensor,
    window: int,
    shift: int,
    fft_size: int,
    dither: float,
    generator: Optional[torch.Generator],
    block_frames: int,
) -> Tensor:
    """Log-mel energies ``[B, frames, bins]`` of ``wave [B, T]`` (float in [-1, 1]).

    ``block_frames > 0`` (CPU) processes about that many frames at a time through work
    buffers allocated once: the intermediates then stay in cache, which on CPU is ~4x faster
    than one pass over a 100 x 6 s batch (benchmarks/bench_features.py).
    ``block_frames <= 0`` (GPU) does the whole batch in one shot.
    """
    if wave.size(-1) < window:
        raise ValueError(f"waveform of {wave.size(-1)} samples is shorter than one analysis window ({window} samples)")
    # No pass to scale the wave to int16 range: the 32768**2 = 2**30 factor is in ``mel_t``
    # (see scaled_mel_matrix), which is exact, as every step before it is linear.
    x = wave
    if dither != 0.0:
        x = x + (dither / 32768.0) * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    frames = x.unfold(-1, window, shift)  # [B, F, window], a strided view: no copy
    batch, num_f = frames.size(0), frames.size(1)
    out = torch.empty((batch, num_f, mel_t.size(1)), device=x.device, dtype=x.dtype)
    if block_frames <= 0 or batch * num_f <= block_frames:
        mode, rows, per_row = 0, batch, num_f  # one block: the whole batch
    elif num_f >= block_frames:
        mode, rows, per_row = 1, 1, block_frames  # blocks of frames within each utterance
    else:
        mode, rows, per_row = 2, block_frames // num_f, num_f  # several whole utterances per block
    z = torch.empty((rows, per_row, window), device=x.device, dtype=x.dtype)
    y = torch.empty_like(z)
    padded = torch.zeros((rows, per_row, fft_size), device=x.device, dtype=x.dtype)
    if mode == 0:
        _frames_to_log_mel(frames, window_fn, mel_t, out, z, y, padded)
    elif mode == 1:
        for b in range(batch):
            for f0 in range(0, num_f, block_frames):
                n = min(block_frames, num_f - f0)
                _frames_to_log_mel(
                    frames[b, f0 : f0 + n], window_fn, mel_t, out[b, f0 : f0 + n], z[0, :n], y[0, :n], padded[0, :n]
                )
    else:
        for b0 in range(0, batch, rows):
            n = min(rows, batch - b0)
            _frames_to_log_mel(frames[b0 : b0 + n], window_fn, mel_t, out[b0 : b0 + n], z[:n], y[:n], padded[:n])
    return out


def apply_cmn(feats: Tensor, frame_lens: Optional[Tensor] = None, sliding_cmn_frames: int = 0) -> Tensor:
    """Mean normalisation of ``feats [B, F, D]`` over frames (per utterance, or Kaldi sliding-centred).

    ``frame_lens [B]``: valid frames per utterance; padding is ignored and zeroed.
    """
    num_f = feats.size(1)
    if frame_lens is None:
        lens = torch.full((feats.size(0),), num_f, dtype=torch.long, device=feats.device)
    else:
        lens = frame_lens.to(device=feats.device, dtype=torch.long).clamp(0, num_f)
    t = torch.arange(num_f, device=feats.device).unsqueeze(0)  # [1, F]
    valid = t < lens.unsqueeze(1)  # [B, F]
    masked = feats * valid.unsqueeze(-1).to(feats.dtype)
    if sliding_cmn_frames <= 0:
        denom = lens.clamp_min(1).to(feats.dtype).view(-1, 1, 1)
        out = feats - masked.sum(1, keepdim=True) / denom
    else:
        # Kaldi apply-cmvn-sliding, center=true: window [t - N/2, t - N/2 + N), shifted to stay
        # inside the utterance, clipped when the utterance is shorter than N.
        n = lens.unsqueeze(1)  # [B, 1]
        start = t - sliding_cmn_frames // 2
        end = start + sliding_cmn_frames
        end = torch.where(start < 0, end - start, end)
        start = start.clamp_min(0)
        over = (end - n).clamp_min(0)
        start = (start - over).clamp_min(0)
        end = torch.minimum(end, n).clamp_min(1)
        # float64 prefix sums: float32 over thousands of frames of values ~20 loses ~1e-3.
        csum = torch.cat(
            [torch.zeros_like(masked[:, :1], dtype=torch.float64), masked.to(torch.float64).cumsum(1)], dim=1
        )  # [B, F + 1, D]
        dim = feats.size(2)
        hi = csum.gather(1, end.unsqueeze(-1).expand(-1, -1, dim))
        lo = csum.gather(1, start.unsqueeze(-1).expand(-1, -1, dim))
        mean = (hi - lo) / (end - start).clamp_min(1).unsqueeze(-1).to(torch.float64)
        out = feats - mean.to(feats.dtype)
    if frame_lens is not None:
        out = out * valid.unsqueeze(-1).to(out.dtype)
    return out


def _fbank_batched(
    wave: Tensor,
    window_fn: Tensor,
    mel_t: Tensor,
    window: int,
    shift: int,
    fft_size: int,
    dither: float,
    cmn: bool,
    sliding_cmn_frames: int,
    lengths: Optional[Tensor],
    generator: Optional[torch.Generator],
    cpu_block_frames: int,
) -> Tensor:
    """``wave [..., T]`` -> ``[..., frames, bins]``; shared by :func:`fbank` and :class:`Fbank` (scriptable)."""
    lead = wave.shape[:-1]
    x = wave.reshape(-1, wave.size(-1))
    block = cpu_block_frames if x.device.type == "cpu" else 0
    feats = _log_mel(x, window_fn.to(x.dtype), mel_t.to(x.dtype), window, shift, fft_size, dither, generator, block)
    frame_lens: Optional[Tensor] = None
    if lengths is not None:
        frame_lens = frame_lengths(lengths.reshape(-1).to(device=x.device, dtype=torch.long), window, shift)
    if cmn:
        feats = apply_cmn(feats, frame_lens, sliding_cmn_frames)
    elif frame_lens is not None:
        valid = torch.arange(feats.size(1), device=feats.device).unsqueeze(0) < frame_lens.unsqueeze(1)
        feats = feats * valid.unsqueeze(-1).to(feats.dtype)
    out_shape = list(lead) + [feats.size(1), feats.size(2)]
    return feats.reshape(out_shape)


_CONSTANTS: dict[tuple, tuple[Tensor, Tensor]] = {}


def _constants(
    num_mel_bins: int, window: int, fft_size: int, sample_rate: int, device: torch.device,
    window_type: str = "povey", wave_scale: str = "int16",
) -> tuple[Tensor, Tensor]:
    """Window and mel matrix, computed once per (geometry, window, scale, device) and cached."""
    key = (num_mel_bins, window, fft_size, sample_rate, str(device), window_type, wave_scale)
    if key not in _CONSTANTS:
        _CONSTANTS[key] = (
            window_function(window_type, window, device=device),
            mel_for_scale(num_mel_bins, fft_size, sample_rate, wave_scale).to(device),
        )
    return _CONSTANTS[key]


def fbank(
    wave: Tensor,
    sample_rate: int = 16000,
    num_mel_bins: int = 80,
    frame_length_ms: float = 25.0,
    frame_shift_ms: float = 10.0,
    dither: float = 0.0,
    cmn: bool = True,
    sliding_cmn_frames: int = 0,
    generator: Optional[torch.Generator] = None,
    lengths: Optional[Tensor] = None,
    window_type: str = "povey",
    wave_scale: str = "int16",
) -> Tensor:
    """Kaldi log-mel fbank of ``wave [..., T]`` (float in [-1, 1]) -> ``[..., frames, num_mel_bins]``.

    Batched over leading dims, computed on ``wave``'s device and dtype. ``dither`` is in int16
    units (Kaldi's 1.0 for training, 0 for evaluation); its noise comes from ``generator``
    (which must live on ``wave``'s device). ``cmn``: subtract the per-utterance mean
    (``sliding_cmn_frames > 0``: Kaldi's centred sliding window of that many frames).
    ``lengths [B]``: valid samples per row of a zero-padded batch (CMN ignores padding,
    padded frames are 0). Without CMN this matches ``torchaudio.compliance.kaldi.fbank(wave *
    32768, num_mel_bins=num_mel_bins, dither=0)`` within float32 rounding. ``window_type`` and
    ``wave_scale`` are Kaldi's ``--window-type`` and the wave's scale (``"float"``: no x 32768).
    """
    if not wave.is_floating_point():
        raise TypeError(f"fbank expects a float waveform in [-1, 1], got dtype {wave.dtype}")
    window, shift, fft_size = frame_geometry(sample_rate, frame_length_ms, frame_shift_ms)
    window_fn, mel_t = _constants(num_mel_bins, window, fft_size, sample_rate, wave.device, window_type, wave_scale)
    return _fbank_batched(
        wave, window_fn, mel_t, window, shift, fft_size, float(dither), cmn, int(sliding_cmn_frames), lengths, generator,
        CPU_BLOCK_FRAMES,
    )


class Fbank(nn.Module):
    """:func:`fbank` as a TorchScript-able module: ``forward(wave [B, T]) -> [B, frames, bins]``.

    The window and mel matrix are non-persistent buffers (they follow ``.to(device)`` but do
    not appear in the state dict, which stays the encoder's alone).
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        num_mel_bins: int = 80,
        frame_length_ms: float = 25.0,
        frame_shift_ms: float = 10.0,
        dither: float = 0.0,
        cmn: bool = True,
        sliding_cmn_frames: int = 0,
        window_type: str = "povey",
        wave_scale: str = "int16",
    ) -> None:
        super().__init__()
        window, shift, fft_size = frame_geometry(sample_rate, frame_length_ms, frame_shift_ms)
        self.window_type = str(window_type)
        self.wave_scale = str(wave_scale)
        self.sample_rate = int(sample_rate)
        self.num_mel_bins = int(num_mel_bins)
        self.window = window
        self.shift = shift
        self.fft_size = fft_size
        self.dither = float(dither)
        self.cmn = bool(cmn)
        self.sliding_cmn_frames = int(sliding_cmn_frames)
        self.cpu_block_frames = CPU_BLOCK_FRAMES
        self.register_buffer("window_fn", window_function(self.window_type, window), persistent=False)
        self.register_buffer("mel_t", mel_for_scale(num_mel_bins, fft_size, sample_rate, self.wave_scale), persistent=False)

    @classmethod
    def from_config(cls, cfg: FeatureConfig, train: bool = False) -> nn.Module:
        """Build from a :class:`speakerid.config.FeatureConfig`; dither only when ``train``.

        The Kaldi front end only; :func:`speakerid.inference.build_frontend` picks the class that
        ``cfg.frontend`` names (``speechbrain``: :mod:`speakerid.features.speechbrain`).
        """
        if cfg.frontend != "kaldi":
            raise ValueError(f"features.frontend: {cfg.frontend!r} is not the Kaldi front end; use speakerid.inference.build_frontend")
        return cls(
            sample_rate=cfg.sample_rate,
            num_mel_bins=cfg.num_mel_bins,
            frame_length_ms=cfg.frame_length_ms,
            frame_shift_ms=cfg.frame_shift_ms,
            dither=cfg.dither if train else 0.0,
            cmn=cfg.cmn,
            sliding_cmn_frames=cfg.sliding_cmn_frames,
            window_type=cfg.window_type,
            wave_scale=cfg.wave_scale,
        )

    def num_frames(self, num_samples: int) -> int:
        return frames_of(num_samples, self.window, self.shift)

    def forward(
        self, wave: Tensor, lengths: Optional[Tensor] = None, generator: Optional[torch.Generator] = None
    ) -> Tensor:
        return _fbank_batched(
            wave,
            self.window_fn,
            self.mel_t,
            self.window,
            self.shift,
            self.fft_size,
            self.dither,
            self.cmn,
            self.sliding_cmn_frames,
            lengths,
            generator,
            self.cpu_block_frames,
        )

    def extra_repr(self) -> str:
        return (
            f"sample_rate={self.sample_rate}, num_mel_bins={self.num_mel_bins}, window={self.window}, "
            f"shift={self.shift}, dither={self.dither}, cmn={self.cmn}, sliding_cmn_frames={self.sliding_cmn_frames}, "
            f"window_type={self.window_type}, wave_scale={self.wave_scale}"
        )
