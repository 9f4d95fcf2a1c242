"""Circle Loss (Sun et al., "Circle Loss: A Unified Perspective of Pair Similarity Optimization",
CVPR 2020), in its pair-based and class-level (proxy) forms.

Both use the unified formula, Eq. (6) of the paper::

    L = log[1 + sum_j exp(gamma * a_n^j * (s_n^j - D_n)) * sum_i exp(-gamma * a_p^i * (s_p^i - D_p))]

with cosine similarities s, self-paced weights ``a_p = [O_p - s_p]_+`` and ``a_n = [s_n - O_n]_+``
(Eq. 5), optima ``O_p = 1 + m``, ``O_n = -m`` and margins ``D_p = 1 - m``, ``D_n = m`` (Eq. 8).
As in the authors' code (and pytorch-metric-learning) the weights a are computed from detached
similarities, i.e. treated as constants in the gradient (``detach_weights=True``).

The log(1 + e^x) is computed as ``softplus(logsumexp_n + logsumexp_p)``, which stays finite at
gamma=256 where the raw exponentials overflow float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import ClassifierLoss, LossConfigError, PairLoss, normalized_pair
from .reduce import mean_over, neg_fill

__all__ = ["CircleLoss", "CircleProxyLoss"]


def _check_circle_args(name: str, m: float, gamma: float) -> None:
    if not 0.0 <= m < 1.0 or gamma <= 0.0:
        raise LossConfigError(f"{name}: need 0 <= m < 1 and gamma > 0, got m={m}, gamma={gamma}")


class CircleLoss(PairLoss):
    """Pair-based Circle Loss over all positive and negative pairs of a batch ("circle").

    Sun et al., CVPR 2020, Eq. (6) with pairwise labels: every embedding is an anchor; its
    positives are the other embeddings of its speaker and its negatives all embeddings of other
    speakers. The per-anchor losses are averaged over anchors that have at least one positive and one
    negative. This matches ``pytorch_metric_learning.losses.CircleLoss`` (tested to 1e-5), whose
    ``AvgNonZeroReducer`` averages the per-anchor losses that are > 0; the two differ only when an
    anchor's loss underflows to exactly 0, where pml then also drops it from the count.

    Our own implementation rather than a pml wrapper because (a) it mines against a reference set
    whose first rows are the batch itself (cross-batch memory, one joint logsumexp per anchor), with
    boolean masks instead of pml's index tuples, and (b) it is faster: pml builds index tuples and
    index-assigns into a zeros matrix each call (``benchmarks/losses_speed.py`` prints the ratio).
    Needs P x K batches (several utterances per speaker) so that anchors have positives.

    Args:
        m: relaxation margin (0.25; Sun et al. use 0.25 for face recognition).
        gamma: scale (256).
        detach_weights: treat a_p, a_n as constants in the gradient (paper's code; default).
    """

    def __init__(self, m: float = 0.25, gamma: float = 256.0, detach_weights: bool = True) -> None:
        super().__init__()
        _check_circle_args("CircleLoss", m, gamma)
        self.m = float(m)
        self.gamma = float(gamma)
        self.detach_weights = detach_weights

    def compute_loss(self, emb: torch.Tensor, labels: torch.Tensor, ref: torch.Tensor, ref_labels: torch.Tensor) -> torch.Tensor:
        emb_n, ref_n = normalized_pair(emb, ref)
        sim = emb_n @ ref_n.t()  # [B, R]
        # The masks the formula fills, built once: ``same`` (not a negative) and ``not_pos`` (same
        # without the anchor itself, whose column is i in ref[:B]; pair_masks' contract). Fewer
        # [B, R] passes than (pos, neg) = pair_masks() plus their negations: benchmarks/losses_speed.py.
        same = labels.view(-1, 1) == ref_labels.view(1, -1)
        not_pos = ~same
        not_pos[:, : emb.shape[0]].fill_diagonal_(True)
        n_same = same.sum(dim=1)  # including the anchor itself
        m, gamma = self.m, self.gamma
        w = sim.detach() if self.detach_weights else sim
        fill = neg_fill(sim.dtype)  # finite: an empty row stays NaN-free (exp of it is exactly 0 beside a real term)
        logit_p = (-gamma * torch.relu(1.0 + m - w) * (sim - (1.0 - m))).masked_fill_(not_pos, fill)
        logit_n = (gamma * torch.relu(w + m) * (sim - m)).masked_fill_(same, fill)
        lse_p, lse_n = torch.logsumexp(logit_p, dim=1), torch.logsumexp(logit_n, dim=1)
        # An anchor without a positive or a negative gets a huge negative sum (softplus -> 0, zero
        # gradient) and is left out of the mean.
        return mean_over(F.softplus(lse_p + lse_n), (n_same > 1) & (n_same < same.shape[1]))

    def extra_repr(self) -> str:
        return f"m={self.m}, gamma={self.gamma}"


class CircleProxyLoss(ClassifierLoss):
    """Class-level Circle Loss against a learned proxy per speaker ("circle_proxy").

    Sun et al., CVPR 2020, Eq. (6) with class-level labels (Sec. 3.1): for an embedding x of class y,
    s_p = cos(x, w_y) (one positive, K=1) and s_n^j = cos(x, w_j), j != y (N-1 negatives). Then
    Eq. (6) equals a cross-entropy over the logits ``z_y = gamma a_p (s_p - D_p)`` and
    ``z_j = gamma a_n^j (s_n^j - D_n)``, since ``-log softmax(z)_y = log(1 + sum_j exp(z_j - z_y))``;
    that is how it is computed (fused, stable, scales to thousands of speakers).

    MixUp: ``lam * L(labels) + (1 - lam) * L(labels_b)``. Our own code: pml has no proxy Circle Loss.

    Args:
        embed_dim, num_classes: embedding size, number of speakers (classes).
        m: relaxation margin (0.25).
        gamma: scale. Default 64 rather than the paper's face-recognition 256: with a_p <= 1 + m
            the logit scale is then comparable to AAM's s=32 at the SGD learning rates used for
            speaker training (lr 0.1); set 256 in the YAML for the paper's value.
        sub_centers: k proxies per class, max cosine over them (as sub-center ArcFace).
        detach_weights: treat a_p, a_n as constants in the gradient (paper's code; default).
    """

    def __init__(
        self,
        embed_dim: int,
        num_classes: int,
        m: float = 0.25,
        gamma: float = 64.0,
        sub_centers: int = 1,
        detach_weights: bool = True,
    ) -> None:
        super().__init__(embed_dim, num_classes, sub_centers)
        _check_circle_args("CircleProxyLoss", m, gamma)
        self.m = float(m)
        self.gamma = float(gamma)
        self.detach_weights = detach_weights

    def class_loss(self, cos: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        m, gamma = self.m, self.gamma
        w = cos.detach() if self.detach_weights else cos
        target = labels.view(-1, 1)
        logits = gamma * torch.relu(w + m) * (cos - m)
        s_p = cos.gather(1, target)
        z_p = gamma * torch.relu(1.0 + m - w.gather(1, target)) * (s_p - (1.0 - m))
        logits = logits.scatter(1, target, z_p)
        return F.cross_entropy(logits, labels)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, m={self.m}, gamma={self.gamma}"
