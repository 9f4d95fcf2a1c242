"""Triplet loss with online mining over one distance matrix ("triplet").

Schroff, Kalenichenko & Philbin, "FaceNet: A Unified Embedding for Face Recognition and
Clustering", CVPR 2015, Eq. (1): per triplet (anchor a, positive p, negative n) the term
``[d(a, p) - d(a, n) + margin]_+`` on L2-normalised embeddings (Euclidean distance). The mining
decides which triplets exist; the reduction (:func:`~speakerid.losses.reduce.mean_nonzero`,
pml's ``AvgNonZeroReducer``) averages the terms that are > 0.

All three minings are masks over the one ``[B, R]`` distance matrix (no index tuples, no second
distance pass), with the same values and gradients as pytorch-metric-learning's miner + loss
(``tests/test_losses_triplet.py``); ``benchmarks/losses_speed.py`` times them against pml.
"""

from __future__ import annotations

import torch

from .base import LossConfigError, PairLoss, l2_distances, pair_masks
from .reduce import mean_nonzero

__all__ = ["TripletLoss", "batch_hard_triplet", "all_triplets", "positives_by_anchor"]


def positives_by_anchor(dist: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each anchor's positive distances packed to the left: ``(d_ap [B, K], valid [B, K])``.

    K is the largest number of positives of one anchor (one host sync). A P x K batch has K - 1
    positives per anchor, so the triplet tensor ``[B, K, R]`` stays small where the dense
    ``[B, R, R]`` would be R / K times larger.
    """
    counts = pos.sum(dim=1)
    k = max(1, int(counts.max())) if pos.numel() else 1
    order = torch.sort(pos.to(torch.uint8), dim=1, descending=True, stable=True).indices[:, :k]  # positives first
    valid = torch.arange(k, device=pos.device).view(1, -1) < counts.view(-1, 1)
    return dist.gather(1, order), valid


def all_triplets(
    dist: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, margin: float, semi_hard: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Terms ``[d_ap - d_an + margin]_+`` of every triplet ``[B, K, R]`` and the mask of those that exist.

    ``semi_hard`` keeps only the triplets with ``0 < d_an - d_ap <= margin`` (pml's
    ``TripletMarginMiner(type_of_triplets="semihard")``; FaceNet Eq. 4 up to the closed end).
    """
    d_ap, pos_valid = positives_by_anchor(dist, pos)
    d_an = dist.unsqueeze(1)  # [B, 1, R]
    d_ap = d_ap.unsqueeze(2)  # [B, K, 1]
    exists = pos_valid.unsqueeze(2) & neg.unsqueeze(1)
    if semi_hard:
        gap = d_an - d_ap
        exists = exists & (gap > 0) & (gap <= margin)
    return torch.relu(d_ap - d_an + margin), exists


def batch_hard_triplet(
    embeddings: torch.Tensor, labels: torch.Tensor, ref_emb: torch.Tensor, ref_labels: torch.Tensor, margin: float
) -> torch.Tensor:
    """Batch-hard triplet loss (Hermans, Beyer & Leibe 2017, Eq. 5) in one distance matrix.

    Per anchor ``i`` (a row of the batch): the farthest positive and the closest negative of the
    reference set (``ref_emb[:B]`` is the batch; ``(i, i)`` is skipped), ``[d_ap - d_an + margin]_+``
    averaged over the non-zero terms (pml's ``BatchHardMiner`` + ``TripletMarginLoss``).
    """
    dist = l2_distances(embeddings, ref_emb)
    pos, neg = pair_masks(labels, ref_labels)
    big = torch.finfo(dist.dtype).max
    d_ap = torch.where(pos, dist, torch.full_like(dist, -1.0)).max(dim=1).values
    d_an = torch.where(neg, dist, torch.full_like(dist, big)).min(dim=1).values
    valid = pos.any(dim=1) & neg.any(dim=1)
    return mean_nonzero(torch.relu(d_ap - d_an + margin), valid)


class TripletLoss(PairLoss):
    """Triplet loss with online mining ("triplet"); FaceNet (Schroff et al., CVPR 2015) Eq. (1).

    Mining (all on the one distance matrix):

    - "batch_hard": per anchor the farthest positive and closest negative (Hermans, Beyer & Leibe,
      "In Defense of the Triplet Loss", 2017, Eq. 5): :func:`batch_hard_triplet`, equal to pml's
      ``BatchHardMiner`` + ``TripletMarginLoss``;
    - "semi_hard": every triplet with ``0 < d(a, n) - d(a, p) <= margin`` (FaceNet Eq. 4), equal to
      pml's ``TripletMarginMiner(type_of_triplets="semihard")`` + ``TripletMarginLoss``;
    - "all": every triplet, equal to pml's ``TripletMarginLoss()`` without a miner.

    Reduction: the mean of the non-zero terms (pml's ``AvgNonZeroReducer``); zero, still in the
    graph, when no triplet exists. Needs P x K batches (several utterances per speaker).

    Args:
        margin: triplet margin (0.2, as FaceNet; pml's default is 0.05).
        mining: "batch_hard" (default), "semi_hard" or "all".
    """

    MINING = ("batch_hard", "semi_hard", "all")

    def __init__(self, margin: float = 0.2, mining: str = "batch_hard") -> None:
        super().__init__()
        if mining not in self.MINING:
            raise LossConfigError(f"TripletLoss: mining must be one of {self.MINING}, got {mining!r}")
        if margin <= 0:
            raise LossConfigError(f"TripletLoss: margin must be > 0, got {margin}")
        self.margin = float(margin)
        self.mining = mining

    def compute_loss(self, emb: torch.Tensor, labels: torch.Tensor, ref: torch.Tensor, ref_labels: torch.Tensor) -> torch.Tensor:
        if self.mining == "batch_hard":
            return batch_hard_triplet(emb, labels, ref, ref_labels, self.margin)
        pos, neg = pair_masks(labels, ref_labels)
        terms, exists = all_triplets(l2_distances(emb, ref), pos, neg, self.margin, self.mining == "semi_hard")
        return mean_nonzero(terms, exists)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, mining={self.mining!r}"
