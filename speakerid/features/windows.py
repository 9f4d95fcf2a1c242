"""Front-end choices of imported models: Kaldi's analysis windows and the wave scale.

``FeatureConfig.window_type`` (Kaldi's ``--window-type``) and ``FeatureConfig.wave_scale`` (the
fbank of the wave x 32768, as Kaldi and WeSpeaker's training read int16 samples, or of the [-1, 1]
wave, as WeSpeaker's CLI reads audio for CAM++) select what :class:`speakerid.features.kaldi.Fbank`
computes; the defaults (povey, int16) are speakerid's own front end.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

__all__ = ["WINDOW_TYPES", "WAVE_SCALES", "window_function", "wave_scale_factor"]

#: Kaldi's ``--window-type`` choices (feature-window.cc), by FeatureConfig.window_type.
WINDOW_TYPES = ("povey", "hamming", "hanning", "rectangular")
#: FeatureConfig.wave_scale -> factor applied to a [-1, 1] wave before the fbank.
WAVE_SCALES = {"int16": 32768.0, "float": 1.0}


def window_function(window_type: str, window: int, device: Optional[torch.device] = None) -> Tensor:
    """Kaldi's analysis window of ``window`` samples (povey, hamming 0.54/0.46, hanning, rectangular)."""
    if window_type == "povey":
        return torch.hann_window(window, periodic=False, device=device).pow(0.85)  # features.povey_window
    if window_type == "hamming":
        return torch.hamming_window(window, periodic=False, alpha=0.54, beta=0.46, device=device)
    if window_type == "hanning":
        return torch.hann_window(window, periodic=False, device=device)
    if window_type == "rectangular":
        return torch.ones(window, device=device)
    raise ValueError(f"features.window_type: unknown window {window_type!r}; choose one of {list(WINDOW_TYPES)}")


def wave_scale_factor(wave_scale: str) -> float:
    """The factor of a FeatureConfig.wave_scale name (the mel matrix carries its square)."""
    if wave_scale not in WAVE_SCALES:
        raise ValueError(f"features.wave_scale: unknown scale {wave_scale!r}; choose one of {sorted(WAVE_SCALES)}")
    return WAVE_SCALES[wave_scale]
