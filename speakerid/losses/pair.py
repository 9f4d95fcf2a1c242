"""Pair-based metric losses that wrap pytorch-metric-learning (pml) as it is.

pml's contrastive loss costs a few ms on a 256 x 192 batch (``benchmarks/losses_speed.py``), so
it is used as it is; we only adapt it to the common interface: MixUp's dominant label,
float32 under AMP, and mining against a reference set whose first rows are the batch itself (for
:class:`~speakerid.losses.memory.CrossBatchMemory`), with the self-comparisons removed from the
index tuples. Triplet and lifted structure losses have their own vectorised code
(:mod:`~speakerid.losses.triplet`, :mod:`~speakerid.losses.lifted`), many times faster than pml's.
Needs P x K batches (several utterances per speaker).
"""

from __future__ import annotations

import torch
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu

from .base import LossConfigError, PairLoss

__all__ = ["ContrastiveLoss"]


def _drop_self_pairs(indices: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """Remove anchor-positive pairs (i, i): anchors index the batch, which is ``ref[:B]``."""
    a1, p, a2, n = indices
    keep = a1 != p
    return a1[keep], p[keep], a2, n


class _PmlPairLoss(PairLoss):
    """Runs a pml loss over all pairs on our reference-set contract."""

    def __init__(self, loss: torch.nn.Module) -> None:
        super().__init__()
        self.loss = loss

    def compute_loss(self, emb: torch.Tensor, labels: torch.Tensor, ref: torch.Tensor, ref_labels: torch.Tensor) -> torch.Tensor:
        indices = lmu.get_all_pairs_indices(labels, ref_labels)
        return self.loss(emb, labels, _drop_self_pairs(indices), ref, ref_labels)


class ContrastiveLoss(_PmlPairLoss):
    """Contrastive loss with margins ("contrastive").

    Hadsell, Chopra & LeCun, "Dimensionality Reduction by Learning an Invariant Mapping", CVPR 2006,
    Eq. (4): positives pay ``[d - pos_margin]_+``, negatives ``[margin - d]_+``, with d the Euclidean
    distance of L2-normalised embeddings (in [0, 2]). pml's ``ContrastiveLoss`` (each term averaged
    over its non-zero pairs, then summed); pml is used as is.

    Args:
        margin: negative margin (1.0, i.e. cosine similarity 0.5).
        pos_margin: positive margin (0).
    """

    def __init__(self, margin: float = 1.0, pos_margin: float = 0.0) -> None:
        if margin <= pos_margin:
            raise LossConfigError(f"ContrastiveLoss: margin {margin} must exceed pos_margin {pos_margin}")
        super().__init__(pml_losses.ContrastiveLoss(pos_margin=pos_margin, neg_margin=margin))
        self.margin = float(margin)
        self.pos_margin = float(pos_margin)
