"""MoCo: momentum contrast for label-free (self-supervised) speaker embedding training.

He, Fan, Wu, Xie & Girshick, "Momentum Contrast for Unsupervised Visual Representation Learning",
CVPR 2020. Two random chunks/augmentations of one utterance are a positive pair (same speaker);
keys of earlier batches, kept in a FIFO queue, are the negatives. Used for speaker verification by
e.g. Xia et al., "Momentum Contrast for Self-supervised Speaker Verification", ICASSP 2021.

Training step (Algorithm 1 of the paper)::

    q = model(feats)                       # query encoder, with gradient
    k = key_encoder(feats_k)               # MomentumEncoder, no gradient
    loss = moco_loss(q, k)                 # InfoNCE against [k; queue], then enqueue k
    loss.backward(); optimizer.step()
    key_encoder.update(model)              # theta_k <- m theta_k + (1 - m) theta_q
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from speakerid.distributed import all_gather_rows

from .base import LossConfigError, SpeakerLoss, full_precision
from .memory import ring_enqueue

__all__ = ["MoCoLoss", "MomentumEncoder"]


class MoCoLoss(SpeakerLoss):
    """InfoNCE with a queue of negative keys ("moco"); trainable without labels.

    He et al. 2020, Eq. (1): ``L_q = -log( exp(q.k+ / tau) / sum_{i=0..K} exp(q.k_i / tau) )`` where
    k+ is the key of the same utterance and k_1..k_K the queue; q and k are L2-normalised.
    ``forward(q, k)`` computes the loss against the queue as it is, then (in training mode, or
    with ``enqueue=True``) pushes the keys -- gathered from all DDP ranks, as the paper -- replacing
    the oldest (FIFO). Like the paper's code, the queue starts as random unit vectors (from
    ``torch.Generator().manual_seed(seed)``, so it is reproducible). Queue and pointer are buffers.
    Shuffling BN (paper Sec. 3.3) is not implemented: the two views are different chunks, the
    batch statistics leak less than for image crops, and ECAPA/ResNet keep per-device BN.

    Args:
        embed_dim: embedding size.
        queue_size: K, number of negative keys (65536).
        temperature: tau (0.07).
        seed: seed of the initial random queue.
    """

    needs_two_views = True

    def __init__(
        self, embed_dim: int, queue_size: int = 65536, temperature: float = 0.07, seed: int = 0, momentum: float = 0.999
    ) -> None:
        super().__init__()
        if queue_size < 1 or embed_dim < 1 or temperature <= 0 or not 0.0 <= momentum < 1.0:
            raise LossConfigError(
                f"MoCoLoss: need queue_size >= 1, embed_dim >= 1, temperature > 0, momentum in [0, 1); "
                f"got {queue_size}, {embed_dim}, {temperature}, {momentum}"
            )
        # the key encoder's EMA coefficient; the trainer reads it to build the MomentumEncoder
        self.momentum = float(momentum)
        self.embed_dim = embed_dim
        self.queue_size = queue_size
        self.temperature = float(temperature)
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, embed_dim, generator=gen), dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    def forward(self, q: torch.Tensor, k: torch.Tensor, enqueue: bool | None = None) -> torch.Tensor:
        """InfoNCE of queries ``q[B, D]`` (with grad) against keys ``k[B, D]`` (detached) and the queue.

        ``enqueue`` defaults to ``self.training``.
        """
        if q.shape != k.shape or q.dim() != 2 or q.size(1) != self.embed_dim:
            raise LossConfigError(
                f"MoCoLoss: q and k must both be [batch, {self.embed_dim}], got {tuple(q.shape)} and {tuple(k.shape)}"
            )
        q32 = F.normalize(full_precision(q), dim=1)
        k32 = F.normalize(full_precision(k).detach(), dim=1).to(q32.dtype)
        with torch.autocast(device_type=q32.device.type, enabled=False):
            l_pos = (q32 * k32).sum(dim=1, keepdim=True)  # [B, 1]
            # clone: the in-place enqueue below must not touch the tensor saved for backward
            l_neg = q32 @ self.queue.to(q32.dtype, copy=True).t()  # [B, K]
            logits = torch.cat([l_pos, l_neg], dim=1) / self.temperature
            loss = F.cross_entropy(logits, torch.zeros(q32.size(0), dtype=torch.long, device=q32.device))
        if self.training if enqueue is None else enqueue:
            self.enqueue(all_gather_rows(k32))
        return loss

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Replace the oldest queue entries with ``keys`` (normalised)."""
        ring_enqueue(self.ptr, (self.queue, F.normalize(keys.to(self.queue.dtype), dim=1)))

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, queue_size={self.queue_size}, temperature={self.temperature}"


def _unwrap(model: nn.Module) -> nn.Module:
    if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        return model.module
    return model


class MomentumEncoder(nn.Module):
    """Key encoder of MoCo: a frozen copy of the query encoder, updated by momentum (He et al., Eq. 2).

    ``update(model)``: ``theta_k <- momentum * theta_k + (1 - momentum) * theta_q`` for every parameter;
    buffers (BN running statistics) are copied from the query encoder, so the key encoder evaluates
    like a smoothed query encoder. ``__call__(feats)`` runs without gradient, in the key encoder's own
    train/eval mode (train mode as in the paper: BN uses batch statistics).
    Save/restore it with ``state_dict()`` to resume.
    """

    def __init__(self, model: nn.Module, momentum: float = 0.999) -> None:
        super().__init__()
        if not 0.0 <= momentum <= 1.0:
            raise LossConfigError(f"MomentumEncoder: momentum must be in [0, 1], got {momentum}")
        self.momentum = float(momentum)
        self.encoder = copy.deepcopy(_unwrap(model))
        for p in self.encoder.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.encoder(feats)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Momentum step towards ``model`` (the query encoder, DDP-wrapped or not)."""
        src = _unwrap(model)
        k_params = list(self.encoder.parameters())
        q_params = list(src.parameters())
        if len(k_params) != len(q_params):
            raise LossConfigError("MomentumEncoder.update: model does not match the key encoder")
        torch._foreach_mul_(k_params, self.momentum)
        torch._foreach_add_(k_params, [p.detach() for p in q_params], alpha=1.0 - self.momentum)
        for k_buf, q_buf in zip(self.encoder.buffers(), src.buffers()):
            k_buf.copy_(q_buf)
