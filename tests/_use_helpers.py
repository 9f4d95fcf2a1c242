"""Helpers shared by the extract / enroll / export tests: a tiny experiment dir and test audio.

The experiment is a randomly initialised, tiny ECAPA-TDNN (24 mel bins, 16 channels, 16-dim
embeddings) saved exactly as the trainer saves one (``config.yaml`` + ``model.pt`` state dict),
so the tests exercise the real loading path in seconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from speakerid.config import ModelConfig, TrainConfig, save_config

TINY_MODEL = ModelConfig(
    "ecapa_tdnn", {"channels": 16, "embed_dim": 16, "mfa_channels": 48, "se_bottleneck": 8, "attention_dim": 8}
)


def make_tiny_experiment(exp_dir: Path, seed: int = 0, num_mel_bins: int = 24) -> Path:
    """Write ``config.yaml`` + ``model.pt`` of a random tiny encoder (BatchNorm stats made non-trivial)."""
    from speakerid.models import build_model

    exp_dir.mkdir(parents=True, exist_ok=True)
    cfg = TrainConfig()
    cfg.features.num_mel_bins = num_mel_bins
    cfg.model = TINY_MODEL
    torch.manual_seed(seed)
    model = build_model(cfg.model.name, feat_dim=num_mel_bins, **cfg.model.kwargs)
    # random running statistics, so eval-mode BatchNorm is not the identity
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    save_config(cfg, exp_dir / "config.yaml")
    torch.save(model.state_dict(), exp_dir / "model.pt")
    return exp_dir


def voice(path: Path, f0: float, seconds: float = 2.0, seed: int = 0, sr: int = 16000, tilt: float = 1.0) -> Path:
    """A crude voiced signal: harmonics of ``f0`` with a spectral tilt, vibrato and a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f = f0 * (1 + 0.02 * np.sin(2 * np.pi * 5 * t + rng.uniform(0, 6)))
    phase = 2 * np.pi * np.cumsum(f) / sr
    x = sum(np.sin(k * phase + rng.uniform(0, 6)) / k**tilt for k in range(1, 20))
    x = x + 0.05 * rng.standard_normal(t.size)
    x = 0.3 * x / np.abs(x).max()
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x.astype(np.float32), sr, subtype="PCM_16")
    return path
