"""Common interface of the training losses.

Every loss is an ``nn.Module`` with ``forward(embeddings, labels, labels_b=None, lam=1.0) -> scalar``
(MoCo excepted: ``forward(q, k)``, see :mod:`speakerid.losses.moco`) and the class attributes

- ``is_pair_based``: compares embeddings with each other within a batch (and a memory); the
  trainer should then draw batches with the P x K sampler so that every anchor has positives;
- ``has_classifier``: owns a per-class weight matrix (``num_classes`` rows), to be rebuilt when
  fine-tuning on a different speaker set;
- ``has_margin``: supports ``set_margin(m)`` for a margin schedule (others: a no-op);
- ``needs_two_views``: wants two views per utterance (MoCo).

MixUp (Zhang et al., ICLR 2018) gives ``(labels_a, labels_b, lam)``. Class-level losses return
``lam * L(labels_a) + (1 - lam) * L(labels_b)`` (the MixUp objective of Eq. 1 for a cross-entropy
family). Pair-based losses have no notion of a soft label, so they use the dominant one:
``labels_a`` when ``lam >= 0.5`` else ``labels_b`` (:func:`dominant_labels`).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = [
    "LossConfigError",
    "SpeakerLoss",
    "PairLoss",
    "ClassifierLoss",
    "dominant_labels",
    "full_precision",
    "full_precision_pair",
    "pair_masks",
    "l2_distances",
    "normalized_pair",
]


class LossConfigError(ValueError):
    """Unknown loss name, bad loss arguments, or labels that do not fit the loss (one line)."""


def full_precision(x: torch.Tensor) -> torch.Tensor:
    """``x`` as float32 if it is half/bfloat16 (AMP), else unchanged (float64 stays for gradcheck)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def full_precision_pair(embeddings: torch.Tensor, ref_emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(embeddings, ref_emb)`` in full precision and one dtype; still one object when the reference set
    is the batch itself (so it is normalised once)."""
    emb = full_precision(embeddings)
    return emb, emb if ref_emb is embeddings else full_precision(ref_emb).to(emb.dtype)


def dominant_labels(labels: torch.Tensor, labels_b: torch.Tensor | None, lam: float) -> torch.Tensor:
    """Labels of the dominant MixUp component: ``labels`` if ``lam >= 0.5`` else ``labels_b``."""
    if labels_b is None or float(lam) >= 0.5:
        return labels
    return labels_b


class SpeakerLoss(nn.Module):
    """Base class: flags of the common interface and a no-op ``set_margin``."""

    is_pair_based: bool = False
    has_classifier: bool = False
    has_margin: bool = False
    needs_two_views: bool = False

    def set_margin(self, m: float) -> None:
        """Set the margin of a margin-scheduled loss; no-op for losses without one."""
        return None


class PairLoss(SpeakerLoss):
    """A loss over pairs/triplets of embeddings that can also mine against a reference set.

    Subclasses implement :meth:`compute_loss` (float32 or wider, autocast off; the formula and its
    reduction). ``forward`` compares the batch with itself;
    :class:`~speakerid.losses.memory.CrossBatchMemory` passes the batch followed by a memory of past
    embeddings as the reference set.
    """

    is_pair_based = True

    def forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        labels_b: torch.Tensor | None = None,
        lam: float = 1.0,
    ) -> torch.Tensor:
        labels = dominant_labels(labels, labels_b, lam)
        return self.pair_forward(embeddings, labels, embeddings, labels)

    def pair_forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        ref_emb: torch.Tensor,
        ref_labels: torch.Tensor,
    ) -> torch.Tensor:
        """Loss of the anchors ``embeddings[B]`` against ``ref_emb[R]``.

        Contract: ``ref_emb[:B]`` IS the batch (same rows, same order), so the pairs ``(i, i)`` are
        self-comparisons and are excluded; ``ref_emb[B:]`` (if any) are other embeddings.
        Half-precision (AMP) inputs are computed in float32.
        """
        emb, ref = full_precision_pair(embeddings, ref_emb)
        with torch.autocast(device_type=emb.device.type, enabled=False):
            return self.compute_loss(emb, labels, ref, ref_labels)

    def compute_loss(
        self, emb: torch.Tensor, labels: torch.Tensor, ref: torch.Tensor, ref_labels: torch.Tensor
    ) -> torch.Tensor:
        """:meth:`pair_forward` in full precision: ``ref`` is ``emb`` itself when the batch is its own reference."""
        raise NotImplementedError


class ClassifierLoss(SpeakerLoss):
    """A class-level (proxy) loss with a learned weight per class; MixUp mixes the two losses.

    Subclasses implement :meth:`class_loss` on the cosine matrix ``[B, num_classes]``.
    ``sub_centers`` k > 1 keeps k weights per class and takes the max cosine over them
    (sub-center ArcFace, Deng et al., ECCV 2020, Sec. 3.1).
    """

    has_classifier = True

    def __init__(self, embed_dim: int, num_classes: int, sub_centers: int = 1) -> None:
        super().__init__()
        if num_classes < 2:
            raise LossConfigError(f"{type(self).__name__}: num_classes must be >= 2, got {num_classes}")
        if embed_dim < 1 or sub_centers < 1:
            raise LossConfigError(
                f"{type(self).__name__}: embed_dim and sub_centers must be >= 1, got {embed_dim}, {sub_centers}"
            )
        self.embed_dim = embed_dim
        self.num_classes = num_classes
        self.sub_centers = sub_centers
        self.weight = nn.Parameter(torch.empty(num_classes * sub_centers, embed_dim))
        nn.init.xavier_uniform_(self.weight)

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of each embedding to each class, ``[B, num_classes]`` (float32 or wider)."""
        emb = full_precision(embeddings)
        w = self.weight.to(emb.dtype)
        with torch.autocast(device_type=emb.device.type, enabled=False):  # margins need fp32 cosines
            cos = nn.functional.linear(nn.functional.normalize(emb, dim=1), nn.functional.normalize(w, dim=1))
        if self.sub_centers > 1:
            cos = cos.view(-1, self.num_classes, self.sub_centers).amax(dim=2)
        return cos

    def check_labels(self, labels: torch.Tensor) -> None:
        """Raise a clear error for labels outside [0, num_classes) (one host sync per call)."""
        lo, hi = torch.stack(torch.aminmax(labels)).tolist()
        if lo < 0 or hi >= self.num_classes:
            raise LossConfigError(
                f"{type(self).__name__}: labels must be in [0, {self.num_classes}), got [{lo}, {hi}]"
            )

    def forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        labels_b: torch.Tensor | None = None,
        lam: float = 1.0,
    ) -> torch.Tensor:
        if embeddings.dim() != 2 or embeddings.size(1) != self.embed_dim:
            raise LossConfigError(
                f"{type(self).__name__}: embeddings must be [batch, {self.embed_dim}], got {tuple(embeddings.shape)}"
            )
        lam = float(lam)
        self.check_labels(labels)
        cos = self.cosine(embeddings)
        loss = self.class_loss(cos, labels)
        if labels_b is not None and lam < 1.0:
            self.check_labels(labels_b)
            loss = lam * loss + (1.0 - lam) * self.class_loss(cos, labels_b)
        return loss

    def class_loss(self, cos: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean loss over the batch given cosines ``[B, C]`` and integer labels ``[B]``."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_classes={self.num_classes}, sub_centers={self.sub_centers}"


def pair_masks(labels: torch.Tensor, ref_labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean ``(positive, negative)`` masks ``[B, R]`` of anchors ``labels[B]`` against ``ref_labels[R]``.

    Contract of :meth:`PairLoss.pair_forward`: ``ref[:B]`` is the batch, so the diagonal of the first B
    columns (an anchor with itself) is no positive.
    """
    same = labels.view(-1, 1) == ref_labels.view(1, -1)
    b, r = same.shape
    not_self = torch.arange(b, device=same.device).view(-1, 1) != torch.arange(r, device=same.device).view(1, -1)
    return same & not_self, ~same


def l2_distances(embeddings: torch.Tensor, ref_emb: torch.Tensor) -> torch.Tensor:
    """Euclidean distances ``[B, R]`` of the L2-normalised rows (pml's ``LpDistance()``: the same ``cdist``)."""
    emb, ref = normalized_pair(embeddings, ref_emb)
    return torch.cdist(emb, ref)


def normalized_pair(embeddings: torch.Tensor, ref_emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised ``(embeddings, ref_emb)``; one normalisation when the reference set is the batch itself."""
    emb = torch.nn.functional.normalize(embeddings, dim=1)
    return emb, emb if ref_emb is embeddings else torch.nn.functional.normalize(ref_emb, dim=1)
