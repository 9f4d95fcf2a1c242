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

import math

import torch
import torch.nn.functional as F

from .base import ClassifierLoss, LossConfigError, PairLoss, normalized_pair
from .reduce import mean_over, neg_fill

__all__ = ["CircleLoss", "CircleProxyLoss"]


def _check_circle_args(name: str, m: float, gamma: float) -> None:
    if not 0.0 <= m < 1.0 or gamma <= 0.0:
        raise LossConfigError(f"{name}: need 0 <= m < 1 and gamma > 0, got m={m}, gamma={gamma}")


def pair_circle_terms(
    sim: torch.Tensor, same: torch.Tensor, not_pos: torch.Tensor, m: float, gamma: float, detach: bool
) -> torch.Tensor:
    """Per-anchor loss of Eq. (6), ``softplus(lse_p + lse_n)`` over the rows of ``sim[B, R]``, by autograd.

    ``not_pos`` masks what is not a positive (other speakers and the anchor itself), ``same`` what is
    not a negative. ``detach`` treats the weights a_p, a_n as constants (then
    :class:`PairCircleTerms` computes the same thing with its gradient in closed form).
    """
    w = sim.detach() if detach else sim
    fill = neg_fill(sim.dtype)  # finite: an empty row stays NaN-free (exp of it is exactly 0 beside a real term)
    logit_p = (-gamma * torch.relu(1.0 + m - w) * (sim - (1.0 - m))).masked_fill_(not_pos, fill)
    logit_n = (gamma * torch.relu(w + m) * (sim - m)).masked_fill_(same, fill)
    return F.softplus(torch.logsumexp(logit_p, dim=1) + torch.logsumexp(logit_n, dim=1))


def _masked_softmax_terms(logit: torch.Tensor, drop: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(exp(logit - max), its row sums, log-sum-exp)`` of each row of ``logit[B, R]`` over the entries ``drop`` leaves.

    ``logit`` is overwritten. Dropped entries give exactly 0, an empty row a log-sum-exp of -inf.
    The exponent is floored at log(smallest normal) before ``exp``: an exp that underflows (to a
    subnormal or 0) costs about 30x one that does not on x86 CPUs (measured: 256 x 256 exp at -88,
    2.3 ms; at -87, 0.06 ms), and with gamma 80-256 most of a row's terms lie that far below its
    largest. A floored term adds at most R * 3.2e-38 to a sum whose largest term is 1.
    """
    floor = math.log(torch.finfo(logit.dtype).tiny) + 1.0  # exp(floor) stays a normal number with margin
    logit.masked_fill_(drop, -math.inf)
    top = logit.amax(dim=1, keepdim=True).clamp_(min=torch.finfo(logit.dtype).min)  # an empty row: finite
    e = logit.sub_(top).clamp_(min=floor).exp_().masked_fill_(drop, 0.0)
    total = e.sum(dim=1, keepdim=True)
    return e, total, top + total.log()


class PairCircleTerms(torch.autograd.Function):
    """:func:`pair_circle_terms` with detached weights, its gradient written out in the forward pass.

    With a_p, a_n constants, Eq. (6) per anchor i is ``softplus(z_i)``, ``z_i = lse_p_i + lse_n_i``, so

        dL_i / ds_ij = sigmoid(z_i) * (softmax_p(logit_p)_ij * (-gamma a_p_ij) + softmax_n(logit_n)_ij * gamma a_n_ij)

    (the two softmaxes over the row's positives and negatives). One ``exp`` per logit matrix gives
    both the log-sum-exps and the softmaxes, none of them underflowing (:func:`_masked_softmax_terms`),
    and the backward pass is one multiply: on a CPU at these sizes that is what the loss costs
    (``benchmarks/losses_speed.py``, "Circle (pair) against a plain dense version").
    """

    @staticmethod
    def forward(ctx, sim, same, not_pos, m: float, gamma: float):  # type: ignore[override]
        slope_p = (1.0 + m - sim).clamp_(min=0.0).mul_(-gamma)  # -gamma a_p = d logit_p / d s
        slope_n = (sim + m).clamp_(min=0.0).mul_(gamma)  # gamma a_n = d logit_n / d s
        e_p, sum_p, lse_p = _masked_softmax_terms((sim - (1.0 - m)).mul_(slope_p), not_pos)
        e_n, sum_n, lse_n = _masked_softmax_terms((sim - m).mul_(slope_n), same)
        z = (lse_p + lse_n).squeeze(1)  # -inf for an anchor without a positive or a negative
        if ctx.needs_input_grad[0]:
            tiny = torch.finfo(sim.dtype).tiny  # an empty row's zeros stay 0, not 0 / 0
            coef = torch.sigmoid(z).unsqueeze(1)
            grad = e_p.mul_(slope_p).mul_(coef / sum_p.clamp_(min=tiny))
            grad.addcmul_(e_n, slope_n.mul_(coef / sum_n.clamp_(min=tiny)))
            ctx.save_for_backward(grad)
        return F.softplus(z)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        return grad * grad_out.unsqueeze(1), None, None, None, None


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
        if self.detach_weights:
            per_anchor = PairCircleTerms.apply(sim, same, not_pos, self.m, self.gamma)
        else:
            per_anchor = pair_circle_terms(sim, same, not_pos, self.m, self.gamma, detach=False)
        # An anchor without a positive or a negative gets a huge negative sum (softplus -> 0, zero
        # gradient) and is left out of the mean.
        return mean_over(per_anchor, (n_same > 1) & (n_same < same.shape[1]))

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
