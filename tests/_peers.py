"""Helpers for parity tests against peer toolkits: random weights with non-trivial BatchNorm
statistics, each peer's own front end, and the relative-difference measure."""

from __future__ import annotations

import torch
import torchaudio.compliance.kaldi as kaldi
from torch import nn

PARITY_RTOL = 1e-4


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random affine + running statistics in every norm layer, and PReLU slopes, in eval mode.

    Default-initialised BatchNorm (mean 0, var 1, weight 1, bias 0) is the identity, which would
    hide a mismatch in BN placement; these values make every BN layer do something.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                if m.running_mean is not None:
                    m.running_mean.copy_(0.2 * torch.randn(m.running_mean.shape, generator=g))
                    m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
                if m.affine:
                    m.weight.copy_(0.8 + 0.4 * torch.rand(m.weight.shape, generator=g))
                    m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
            elif isinstance(m, nn.PReLU):
                m.weight.copy_(0.5 * torch.rand(m.weight.shape, generator=g))
    return model.eval()


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |a| (the parity measure: max relative difference)."""
    return float((a - b).abs().max() / a.abs().max().clamp_min(1e-12))


def wespeaker_embed(model: nn.Module, wave: torch.Tensor, window_type: str = "hamming", int16: bool = True) -> torch.Tensor:
    """WeSpeaker's inference path (wespeaker/cli/speaker.py, Speaker.extract_embedding_from_pcm and
    compute_features), for a [-1, 1] mono wave at 16 kHz: torchaudio.load(normalize=False) gives the
    int16 values (wave * 32768) unless the CLI normalises (CAM++ / ERes2Net), then Kaldi fbank
    (80 bins, 25/10 ms, given window), CMN, model, last output."""
    pcm = (wave * 32768.0 if int16 else wave).unsqueeze(0).to(torch.float)
    feat = kaldi.fbank(pcm, num_mel_bins=80, frame_length=25, frame_shift=10, sample_frequency=16000,
                       window_type=window_type)
    feat = (feat - torch.mean(feat, dim=0)).unsqueeze(0)
    with torch.no_grad():
        out = model(feat)
    out = out[-1] if isinstance(out, tuple) else out
    return out[0]


def save_wespeaker(model: nn.Module, name: str, model_args: dict, out_dir, num_speakers: int = 7) -> tuple:
    """Save ``model`` the way WeSpeaker's training does: ``avg_model.pt`` = the state dict of the
    speaker model with its ``projection`` (loss head) module added, and the training
    ``config.yaml`` (model / model_args / dataset_args / projection_args). Returns both paths."""
    import yaml

    from pathlib import Path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = dict(model.state_dict())
    embed_dim = int(model_args["embed_dim"])
    state["projection.weight"] = torch.randn(num_speakers, embed_dim)  # ArcMarginProduct head
    torch.save(state, out / "avg_model.pt")
    config = {
        "model": name,
        "model_args": model_args,
        "model_init": None,
        "dataset_args": {
            "resample_rate": 16000,
            "sample_num_per_epoch": 0,
            "shuffle": True,
            "speed_perturb": True,
            "num_frms": 200,
            "aug_prob": 0.6,
            "fbank_args": {"num_mel_bins": 80, "frame_shift": 10, "frame_length": 25, "dither": 1.0},
            "spec_aug": False,
        },
        "projection_args": {"project_type": "arc_margin", "scale": 32.0, "easy_margin": False},
        "num_epochs": 150,
    }
    (out / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return out / "avg_model.pt", out / "config.yaml"


SPEECHBRAIN_HYPERPARAMS = """\
n_mels: 80
compute_features: !new:speechbrain.lobes.features.Fbank
    n_mels: !ref <n_mels>
mean_var_norm: !new:speechbrain.processing.features.InputNormalization
    norm_type: sentence
    std_norm: False
embedding_model: !new:speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN
    input_size: !ref <n_mels>
    channels: {channels}
    kernel_sizes: [5, 3, 3, 3, 1]
    dilations: [1, 2, 3, 4, 1]
    attention_channels: 128
    lin_neurons: 192
"""


def save_speechbrain(model: nn.Module, channels: list, out_dir) -> tuple:
    """Save a SpeechBrain ECAPA_TDNN as its pretrained models ship: ``embedding_model.ckpt`` (the
    state dict, as its Checkpointer writes it) and the embedding part of ``hyperparams.yaml``."""
    from pathlib import Path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / "embedding_model.ckpt")
    (out / "hyperparams.yaml").write_text(SPEECHBRAIN_HYPERPARAMS.format(channels=list(channels)), encoding="utf-8")
    return out / "embedding_model.ckpt", out / "hyperparams.yaml"
