"""Additive angular margin softmax (AAM-softmax, ArcFace), the standard speaker-verification baseline.

Deng et al., "ArcFace: Additive Angular Margin Loss for Deep Face Recognition", CVPR 2019, Eq. (3)::

    L = -log( e^{s cos(theta_y + m)} / (e^{s cos(theta_y + m)} + sum_{j != y} e^{s cos(theta_j)}) )

with sub-centers as in Deng et al., "Sub-center ArcFace", ECCV 2020 (k weights per class, the
class cosine is their max).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .base import ClassifierLoss, LossConfigError

__all__ = ["AAMSoftmax"]


class AAMSoftmax(ClassifierLoss):
    """AAM-softmax / ArcFace ("aam") with a margin-schedule hook.

    ``cos(theta_y + m)`` is only monotonic in theta while ``theta_y + m < pi``. Beyond that
    (``cos theta_y <= cos(pi - m)``) we use WeSpeaker's linear fallback ``cos theta_y - (1 + cos(pi - m))``,
    which meets ``cos(theta + m) = -1`` continuously at ``theta = pi - m``. ``easy_margin=True``
    instead applies the margin only where ``cos theta_y > 0`` (InsightFace's option).

    The trainer drives the margin with :meth:`set_margin` (WeSpeaker: 0 -> 0.2 over the first epochs).

    Args:
        embed_dim, num_classes: embedding size and number of speakers.
        margin: initial additive angular margin m (radians).
        scale: s (32, as WeSpeaker).
        sub_centers: k weights per class (1 = plain ArcFace).
        easy_margin: see above.
    """

    has_margin = True

    def __init__(
        self,
        embed_dim: int,
        num_classes: int,
        margin: float = 0.2,
        scale: float = 32.0,
        sub_centers: int = 1,
        easy_margin: bool = False,
    ) -> None:
        super().__init__(embed_dim, num_classes, sub_centers)
        if scale <= 0:
            raise LossConfigError(f"AAMSoftmax: scale must be > 0, got {scale}")
        self.scale = float(scale)
        self.easy_margin = easy_margin
        self.margin = 0.0
        self.set_margin(margin)

    def set_margin(self, m: float) -> None:
        """Set the angular margin (radians), 0 <= m < pi/2."""
        if not 0.0 <= float(m) < math.pi / 2:
            raise LossConfigError(f"AAMSoftmax: margin must be in [0, pi/2), got {m}")
        self.margin = float(m)

    def class_loss(self, cos: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        target = labels.view(-1, 1)
        cos_y = cos.gather(1, target)
        m = self.margin
        # sin(theta) >= 0 for theta in [0, pi]; the clamp keeps sqrt's gradient finite at |cos| = 1.
        sin_y = torch.sqrt((1.0 - cos_y * cos_y).clamp(min=1e-9))
        phi = cos_y * math.cos(m) - sin_y * math.sin(m)
        if self.easy_margin:
            phi = torch.where(cos_y > 0, phi, cos_y)
        else:
            phi = torch.where(cos_y > math.cos(math.pi - m), phi, cos_y - (1.0 + math.cos(math.pi - m)))
        logits = self.scale * cos.scatter(1, target, phi)
        return F.cross_entropy(logits, labels)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, margin={self.margin}, scale={self.scale}, easy_margin={self.easy_margin}"
