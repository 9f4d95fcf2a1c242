"""Pair- and triplet-based metric losses, wrapping pytorch-metric-learning (pml).

pml implements these well (reductions, miners, reference sets), so we only adapt them to the
common interface: MixUp's dominant label, float32 under AMP, and mining against a reference set whose
first rows are the batch itself (for :class:`~speakerid.losses.memory.CrossBatchMemory`), with the
self-comparisons removed from the index tuples. Embeddings are L2-normalised by pml's distances.
All of them need P x K batches (several utterances per speaker).
"""

from __future__ import annotations

import torch
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu

from .base import LossConfigError, PairLoss, full_precision

__all__ = ["ContrastiveLoss", "TripletLoss", "LiftedStructureLoss", "batch_hard_triplet"]


def _drop_self_pairs(indices: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """Remove anchor-positive pairs (i, i): anchors index the batch, which is ``ref[:B]``."""
    if len(indices) == 3:
        a, p, n = indices
        keep = a != p
        return a[keep], p[keep], n[keep]
    a1, p, a2, n = indices
    keep = a1 != p
    return a1[keep], p[keep], a2, n


class _PmlPairLoss(PairLoss):
    """Runs a pml loss (optionally with a pml miner) on our reference-set contract."""

    def __init__(self, loss: torch.nn.Module, miner: torch.nn.Module | None = None) -> None:
        super().__init__()
        self.loss = loss
        self.miner = miner

    def pair_forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        ref_emb: torch.Tensor,
        ref_labels: torch.Tensor,
    ) -> torch.Tensor:
        emb = full_precision(embeddings)
        ref = full_precision(ref_emb).to(emb.dtype)
        with torch.autocast(device_type=emb.device.type, enabled=False):
            if self.miner is not None:
                indices = self.miner(emb, labels, ref, ref_labels)
            else:
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


def batch_hard_triplet(
    embeddings: torch.Tensor, labels: torch.Tensor, ref_emb: torch.Tensor, ref_labels: torch.Tensor, margin: float
) -> torch.Tensor:
    """Batch-hard triplet loss (Hermans et al. 2017, Eq. 5) in one distance matrix.

    Per anchor ``i`` (a row of the batch): the farthest positive and the closest negative of the
    reference set (``ref_emb[:B]`` is the batch; ``(i, i)`` is skipped), Euclidean distances of
    L2-normalised embeddings, ``[d_ap - d_an + margin]_+`` averaged over the non-zero terms (the
    same values and gradients as pml's ``BatchHardMiner`` + ``TripletMarginLoss``, without pml's
    index tuples and its second distance pass).
    """
    emb = torch.nn.functional.normalize(embeddings, dim=1)
    ref = torch.nn.functional.normalize(ref_emb, dim=1)
    dist = torch.cdist(emb, ref)  # [B, R]
    b = emb.shape[0]
    same = labels[:, None] == ref_labels[None, :]
    not_self = torch.ones_like(same)
    not_self[:, :b].fill_diagonal_(False)
    pos = same & not_self
    neg = ~same
    big = torch.finfo(dist.dtype).max
    d_ap = torch.where(pos, dist, torch.full_like(dist, -1.0)).max(dim=1).values
    d_an = torch.where(neg, dist, torch.full_like(dist, big)).min(dim=1).values
    valid = pos.any(dim=1) & neg.any(dim=1)
    losses = torch.relu(d_ap[valid] - d_an[valid] + margin)
    nonzero = losses > 0
    if not bool(nonzero.any()):
        return embeddings.sum() * 0.0
    return losses[nonzero].mean()


class TripletLoss(_PmlPairLoss):
    """Triplet loss with online mining ("triplet").

    Schroff, Kalenichenko & Philbin, "FaceNet", CVPR 2015, Eq. (1): ``[d(a, p) - d(a, n) + margin]_+``
    on L2-normalised embeddings. Mining:

    - "batch_hard": per anchor the farthest positive and closest negative (Hermans, Beyer & Leibe,
      "In Defense of the Triplet Loss", 2017, Eq. 5) -- :func:`batch_hard_triplet` (pml's
      ``BatchHardMiner`` + ``TripletMarginLoss`` in one pass; equal to it, see the tests);
    - "semi_hard": all triplets with ``d(a, p) < d(a, n) < d(a, p) + margin`` (FaceNet Eq. 4) --
      pml ``TripletMarginMiner(type_of_triplets="semihard")``;
    - "all": every triplet (pml's loss averages the non-zero ones).

    Args:
        margin: triplet margin (0.2, as FaceNet).
        mining: "batch_hard" (default), "semi_hard" or "all".
    """

    MINING = ("batch_hard", "semi_hard", "all")

    def __init__(self, margin: float = 0.2, mining: str = "batch_hard") -> None:
        if mining not in self.MINING:
            raise LossConfigError(f"TripletLoss: mining must be one of {self.MINING}, got {mining!r}")
        if margin <= 0:
            raise LossConfigError(f"TripletLoss: margin must be > 0, got {margin}")
        if mining == "batch_hard":
            miner: torch.nn.Module | None = None
        elif mining == "semi_hard":
            miner = pml_miners.TripletMarginMiner(margin=margin, type_of_triplets="semihard")
        else:
            miner = pml_miners.TripletMarginMiner(margin=margin, type_of_triplets="all")
        super().__init__(pml_losses.TripletMarginLoss(margin=margin), miner)
        self.margin = float(margin)
        self.mining = mining

    def pair_forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        ref_emb: torch.Tensor,
        ref_labels: torch.Tensor,
    ) -> torch.Tensor:
        if self.mining != "batch_hard":
            return super().pair_forward(embeddings, labels, ref_emb, ref_labels)
        emb = full_precision(embeddings)
        ref = full_precision(ref_emb).to(emb.dtype)
        with torch.autocast(device_type=emb.device.type, enabled=False):
            return batch_hard_triplet(emb, labels, ref, ref_labels, self.margin)


class LiftedStructureLoss(_PmlPairLoss):
    """Lifted structured embedding loss ("lifted_structure").

    Oh Song, Xiang, Jegelka & Savarese, "Deep Metric Learning via Lifted Structured Feature
    Embedding", CVPR 2016, Eq. (4): per positive pair (i, j),
    ``J_ij = log(sum_{(i,k) neg} e^{margin - d_ik} + sum_{(j,l) neg} e^{margin - d_jl}) + d_ij``,
    loss ``1/(2|P|) sum [J_ij]_+^2``; pml's ``LiftedStructureLoss``. Against a cross-batch memory,
    positives j from the memory contribute only the anchor's negatives (memory items are not anchors).

    Args:
        margin: negative margin (1.0), pos_margin: positive margin (0).
    """

    def __init__(self, margin: float = 1.0, pos_margin: float = 0.0) -> None:
        super().__init__(pml_losses.LiftedStructureLoss(neg_margin=margin, pos_margin=pos_margin))
        self.margin = float(margin)
        self.pos_margin = float(pos_margin)
