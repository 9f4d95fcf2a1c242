"""Cross-batch memory (XBM) for pair-based losses.

Wang, Zhang, Huang & Scott, "Cross-Batch Memory for Embedding Learning", CVPR 2020 (Sec. 4,
Algorithm 1): embeddings drift slowly once training has warmed up, so the embeddings of the last
M samples, kept in a FIFO queue without gradients, are nearly as informative as fresh ones. Mining
each anchor against batch + memory gives a small batch the many positive/negative pairs of a large
one -- which is what Circle Loss's logsumexp over pairs needs.
"""

from __future__ import annotations

import torch

from .base import LossConfigError, PairLoss, SpeakerLoss, dominant_labels, full_precision

__all__ = ["CrossBatchMemory"]


@torch.no_grad()
def ring_enqueue(ptr: torch.Tensor, *pairs: tuple[torch.Tensor, torch.Tensor]) -> int:
    """Write rows into ring buffers that share the write pointer ``ptr`` (a 0-d long buffer).

    Each pair is ``(buffer [M, ...], rows [n, ...])``; when ``n > M`` only the newest M rows
    stay. The oldest entries are overwritten and ``ptr`` advances by n (mod M). Returns the
    number of rows written. Used by the cross-batch memory and MoCo's queue.
    """
    size = pairs[0][0].size(0)
    rows = [r[-size:] for _, r in pairs]
    n, start = rows[0].size(0), int(ptr)
    idx = (torch.arange(start, start + n) % size).to(pairs[0][0].device)
    for (buf, _), r in zip(pairs, rows):
        buf[idx] = r.to(buf.device, buf.dtype)
    ptr.fill_((start + n) % size)
    return n


class CrossBatchMemory(SpeakerLoss):
    """Wraps any :class:`~speakerid.losses.base.PairLoss` with a FIFO memory of past embeddings.

    ``forward(embeddings, labels, labels_b=None, lam=1.0)``: in training mode and from step
    ``start_step`` on, each anchor is compared with the reference set ``[batch; memory]`` through the
    wrapped loss's ``pair_forward`` (one joint loss per anchor: for Circle Loss one logsumexp over
    in-batch and memory pairs). The memory holds only *past* batches and is updated after the loss,
    so self-pairs are just the batch diagonal, which ``pair_forward`` excludes; in-batch pairs keep
    their gradient on both sides as without the memory. (Official XBM enqueues first and then
    filters self-matches; the only difference is that ours keeps the in-batch gradient on both sides.)
    The current batch is enqueued (detached, float32, with its dominant MixUp labels) in every
    training step, also before ``start_step``, so the memory is full when mining starts. Eval mode
    neither reads nor writes the memory.

    The memory, its write pointer and the step counter are buffers: ``state_dict()`` resumes them.
    With DDP each rank keeps its own memory of its own embeddings.

    Args:
        pair_loss: the pair-based loss to wrap (Circle first).
        embed_dim: embedding size.
        memory_size: M, number of past embeddings kept.
        start_step: training step from which the memory is mined (XBM starts after warm-up).
    """

    is_pair_based = True

    def __init__(self, pair_loss: PairLoss, embed_dim: int, memory_size: int, start_step: int = 0) -> None:
        super().__init__()
        if not isinstance(pair_loss, PairLoss):
            raise LossConfigError(
                f"CrossBatchMemory wraps pair-based losses only, got {type(pair_loss).__name__}"
            )
        if memory_size < 1 or embed_dim < 1 or start_step < 0:
            raise LossConfigError(
                f"CrossBatchMemory: need memory_size >= 1, embed_dim >= 1, start_step >= 0; "
                f"got {memory_size}, {embed_dim}, {start_step}"
            )
        self.pair_loss = pair_loss
        self.embed_dim = embed_dim
        self.memory_size = memory_size
        self.start_step = start_step
        self.register_buffer("memory_emb", torch.zeros(memory_size, embed_dim))
        self.register_buffer("memory_labels", torch.full((memory_size,), -1, dtype=torch.long))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    @property
    def has_margin(self) -> bool:  # type: ignore[override]
        return self.pair_loss.has_margin

    def set_margin(self, m: float) -> None:
        self.pair_loss.set_margin(m)

    def memory(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The stored ``(embeddings[n, D], labels[n])``, oldest first."""
        n, ptr = int(self.filled), int(self.ptr)
        if n < self.memory_size:
            return self.memory_emb[:n], self.memory_labels[:n]
        order = torch.cat([torch.arange(ptr, n), torch.arange(0, ptr)]).to(self.memory_emb.device)
        return self.memory_emb[order], self.memory_labels[order]

    @torch.no_grad()
    def enqueue(self, embeddings: torch.Tensor, labels: torch.Tensor) -> None:
        """Write a batch into the ring buffer, overwriting the oldest entries."""
        n = ring_enqueue(self.ptr, (self.memory_emb, embeddings.detach()), (self.memory_labels, labels.long()))
        self.filled.fill_(min(int(self.filled) + n, self.memory_size))

    def reset(self) -> None:
        """Empty the memory (e.g. when the label set changes)."""
        self.memory_emb.zero_()
        self.memory_labels.fill_(-1)
        self.ptr.zero_()
        self.filled.zero_()

    def forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        labels_b: torch.Tensor | None = None,
        lam: float = 1.0,
    ) -> torch.Tensor:
        labels = dominant_labels(labels, labels_b, lam)
        if embeddings.dim() != 2 or embeddings.size(1) != self.embed_dim:
            raise LossConfigError(
                f"CrossBatchMemory: embeddings must be [batch, {self.embed_dim}], got {tuple(embeddings.shape)}"
            )
        ref_emb, ref_labels = embeddings, labels
        if self.training and int(self.step) >= self.start_step and int(self.filled) > 0:
            mem_emb, mem_labels = self.memory()
            emb = full_precision(embeddings)
            ref_emb = torch.cat([emb, mem_emb.to(emb.dtype)])
            ref_labels = torch.cat([labels, mem_labels])
        loss = self.pair_loss.pair_forward(embeddings, labels, ref_emb, ref_labels)
        if self.training:
            self.enqueue(embeddings, labels)
            self.step += 1
        return loss

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, memory_size={self.memory_size}, start_step={self.start_step}"
