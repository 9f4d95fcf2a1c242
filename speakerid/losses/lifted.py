"""Lifted structure losses, vectorised over the batch: the distance matrix once, every
log-sum-exp a masked row reduction.

pytorch-metric-learning's ``LiftedStructureLoss`` builds a ``[positive pairs x negative pairs]``
matrix (768 x 64,768 on a 64 x 4 batch) to find each positive pair's negatives; here the
log-sum-exp over a pair's negatives is the ``logaddexp`` of its two anchors' row log-sum-exps,
so the whole loss is a few ``[B, R]`` operations (``benchmarks/losses_speed.py`` times both). The
values and gradients equal pml's (``tests/test_losses_lifted.py``).
"""

from __future__ import annotations

import torch

from .base import PairLoss, l2_distances, pair_masks
from .reduce import masked_logsumexp, mean_over

__all__ = ["LiftedStructureLoss", "GeneralizedLiftedStructureLoss"]


class _LiftedBase(PairLoss):
    """Margins, masks and distances shared by both forms."""

    def __init__(self, margin: float = 1.0, pos_margin: float = 0.0) -> None:
        super().__init__()
        self.margin = float(margin)
        self.pos_margin = float(pos_margin)

    def compute_loss(self, emb: torch.Tensor, labels: torch.Tensor, ref: torch.Tensor, ref_labels: torch.Tensor) -> torch.Tensor:
        pos, neg = pair_masks(labels, ref_labels)
        return self.lifted(l2_distances(emb, ref), pos, neg)

    def lifted(self, dist: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        """The loss from the distances ``[B, R]`` and the positive / negative masks."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"margin={self.margin}, pos_margin={self.pos_margin}"


class LiftedStructureLoss(_LiftedBase):
    """Lifted structured embedding loss, the original form ("lifted_structure").

    Oh Song, Xiang, Jegelka & Savarese, "Deep Metric Learning via Lifted Structured Feature
    Embedding", CVPR 2016, Eq. (4): for a positive pair (i, j)

        J_ij = log( sum_{k in N(i)} exp(margin - d_ik) + sum_{l in N(j)} exp(margin - d_jl) ) + d_ij - pos_margin

    and the loss ``[J_ij]_+^2 / 2`` averaged over the ordered positive pairs (each unordered pair
    counted twice, so this is Eq. 4's ``1/(2|P|) sum_{(i,j) in P} [J_ij]_+^2``); pml's
    ``LiftedStructureLoss(neg_margin=margin, pos_margin=pos_margin)`` with its ``MeanReducer``.
    The log-sum-exp over ``N(i) u N(j)`` is ``logaddexp(lse_i, lse_j)`` of the per-anchor row
    log-sum-exps. Against a cross-batch memory, a positive j from the memory is no anchor and adds
    only the anchor's negatives (as pml with a reference set).

    Args:
        margin: negative margin alpha (1.0), pos_margin: positive margin (0).
    """

    def lifted(self, dist: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        b = dist.shape[0]
        lse = masked_logsumexp(self.margin - dist, neg)  # [B]: log sum_{k in N(i)} e^{margin - d_ik}
        # Columns beyond the batch (memory) are no anchors: their term is exp(-inf) = 0. Every anchor has
        # a negative whenever any negative pair exists (ref[:B] is the batch), so the empty-row 0 of
        # masked_logsumexp never enters a pair with negatives.
        lse_col = torch.cat([lse, lse.new_full((dist.shape[1] - b,), float("-inf"))])
        j = torch.logaddexp(lse.view(-1, 1), lse_col.view(1, -1)) + dist - self.pos_margin
        per_pair = torch.relu(j).pow(2) / 2
        return mean_over(per_pair, pos & neg.any())  # no negative pair at all: zero (as pml)


class GeneralizedLiftedStructureLoss(_LiftedBase):
    """Generalized lifted structure loss ("lifted_structure_generalized").

    Hermans, Beyer & Leibe, "In Defense of the Triplet Loss for Person Re-Identification", 2017,
    Sec. 2 (the generalization of Song et al. on page 4): per anchor a

        L_a = [ log sum_{p in P(a)} exp(d_ap - pos_margin) + log sum_{n in N(a)} exp(margin - d_an) ]_+

    averaged over all anchors (pml's ``GeneralizedLiftedStructureLoss`` with its ``MeanReducer``).
    As in pml, an empty sum counts as 0 (not log 0 = -inf): an anchor without a positive still pays
    ``[log sum_n exp(margin - d_an)]_+``.

    Args:
        margin: negative margin (1.0), pos_margin: positive margin (0).
    """

    def lifted(self, dist: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        per_anchor = torch.relu(masked_logsumexp(dist - self.pos_margin, pos) + masked_logsumexp(self.margin - dist, neg))
        return per_anchor.mean()
