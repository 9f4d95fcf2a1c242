"""Energy voice-activity detection: cut leading, trailing and inner silence from a waveform.

A frame (25 ms, 10 ms hop) is speech when its RMS energy is within ``top_db`` (40 dB) of the
loudest frame and above an absolute floor (-60 dBFS), the rule of librosa's ``effects.split``
plus a floor for all-quiet recordings. Runs of silence shorter than ``min_gap`` (0.3 s) stay
(pauses between words), so only real silence is cut; what is kept is the concatenation of
the speech regions, padded by one hop each side.
"""

from __future__ import annotations

import numpy as np

__all__ = ["trim_silence", "speech_mask", "speech_seconds"]

FRAME_S = 0.025
HOP_S = 0.010


def speech_mask(
    wave: np.ndarray, sample_rate: int, top_db: float = 40.0, floor_db: float = -60.0, min_gap: float = 0.3
) -> np.ndarray:
    """Boolean mask ``[T]`` of the samples kept as speech (see the module docstring)."""
    x = np.asarray(wave, dtype=np.float64).reshape(-1)
    frame, hop = max(1, int(FRAME_S * sample_rate)), max(1, int(HOP_S * sample_rate))
    if x.size < frame:
        return np.full(x.size, bool(x.size) and float(np.sqrt(np.mean(x**2))) > 10 ** (floor_db / 20))
    n = 1 + (x.size - frame) // hop
    idx = np.arange(frame)[None, :] + hop * np.arange(n)[:, None]
    rms_db = 10 * np.log10(np.mean(x[idx] ** 2, axis=1) + 1e-20)
    voiced = (rms_db > rms_db.max() - top_db) & (rms_db > floor_db)
    # fill short pauses between voiced frames
    gap = int(round(min_gap / HOP_S))
    on = np.flatnonzero(voiced)
    if on.size > 1:
        for a, b in zip(on[:-1], on[1:]):
            if 1 < b - a <= gap:
                voiced[a:b] = True
    mask = np.zeros(x.size, dtype=bool)
    for i in np.flatnonzero(voiced):
        mask[max(0, i * hop - hop) : i * hop + frame + hop] = True
    return mask


def trim_silence(wave, sample_rate: int):
    """The speech samples of ``wave`` (a 1-D numpy array or torch tensor; same type back)."""
    is_tensor = hasattr(wave, "detach")
    x = wave.detach().cpu().numpy() if is_tensor else np.asarray(wave)
    mask = speech_mask(x, sample_rate)
    if is_tensor:
        import torch

        return wave.reshape(-1)[torch.from_numpy(mask).to(wave.device)]
    return x.reshape(-1)[mask]


def speech_seconds(wave, sample_rate: int) -> float:
    """Seconds of speech in ``wave`` (numpy or torch): what :func:`trim_silence` keeps, counted.
    The minimum-speech rules (enrolment, a test clip, the service) are stated in these seconds."""
    x = wave.detach().cpu().numpy() if hasattr(wave, "detach") else wave
    return int(np.count_nonzero(speech_mask(x, sample_rate))) / sample_rate
