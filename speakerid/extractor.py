"""The waveform -> embedding module (:class:`EmbeddingExtractor`: front end + encoder, one
TorchScript-able ``nn.Module``) and its fingerprint (:func:`model_fingerprint`), apart from the
embedding rule of :mod:`speakerid.inference` so that what runs the encoder
(:mod:`speakerid.encoder_runtime`) can build one without importing the rule."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import torch
from torch import Tensor, nn


class EmbeddingExtractor(nn.Module):
    """``waveform [B, T]`` (float in [-1, 1], at ``sample_rate``) -> ``embedding [B, D]``.

    ``frontend`` is a :class:`speakerid.features.kaldi.Fbank` in evaluation mode (no dither; CMN as
    the training config says) and ``encoder`` the trained network. Both are TorchScript-able,
    so ``torch.jit.script(extractor)`` works (used by :mod:`speakerid.export`).
    """

    def __init__(self, frontend: nn.Module, encoder: nn.Module, sample_rate: int, embed_dim: int) -> None:
        super().__init__()
        self.frontend = frontend
        self.encoder = encoder
        self.sample_rate = int(sample_rate)
        self.embed_dim = int(embed_dim)

    def forward(self, wave: Tensor) -> Tensor:
        return self.encoder(self.frontend(wave))


def model_fingerprint(extractor: EmbeddingExtractor, policy: Any = None) -> str:
    """sha256 over the encoder's state dict (names, dtypes, shapes, bytes), the front end's
    settings and, when given, the segment policy (a dataclass: :class:`speakerid.inference.SegmentPolicy`) (silence trimming changes the embeddings).

    Two (extractor, policy) pairs share a fingerprint exactly when they compute the same
    embeddings, so a speaker DB or a set of saved embeddings can refuse a different model.
    """
    extractor = getattr(extractor, "reference", extractor)  # a backend's extractor: the eager model's fingerprint
    h = hashlib.sha256()
    fe = extractor.frontend
    front = {
        k: getattr(fe, k, None)
        for k in ("sample_rate", "num_mel_bins", "window", "shift", "fft_size", "cmn", "sliding_cmn_frames",
                  "window_type", "wave_scale")
    }
    front["class"] = type(fe).__name__
    meta = {"frontend": front, "embed_dim": extractor.embed_dim}
    if policy is not None:
        meta["policy"] = dataclasses.asdict(policy)
    h.update(json.dumps(meta, sort_keys=True).encode())
    for name, tensor in sorted(extractor.encoder.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
