"""Training losses for speaker embeddings, built by name.

>>> from speakerid.losses import build_loss, CircleLoss
>>> loss = build_loss("circle_proxy", embed_dim=192, num_classes=1211)
>>> loss = build_loss("circle", embed_dim=192, num_classes=0, xbm_size=4096)  # pair loss + memory

Registry names and what the trainer must do with them:

============================  ==============================  ========  ==========  ======  =========
name                          class                           pair (PK  classifier  margin  two views
                                                              sampler)  weight      hook    (MoCo)
============================  ==============================  ========  ==========  ======  =========
circle                        CircleLoss                      yes       no          no      no
circle_proxy                  CircleProxyLoss                 no        yes         no      no
aam                           AAMSoftmax                      no        yes         yes     no
contrastive                   ContrastiveLoss                 yes       no          no      no
triplet                       TripletLoss                     yes       no          no      no
lifted_structure              LiftedStructureLoss             yes       no          no      no
lifted_structure_generalized  GeneralizedLiftedStructureLoss  yes       no          no      no
moco                          MoCoLoss                        no        no          no      yes
============================  ==============================  ========  ==========  ======  =========

Common interface (see :mod:`speakerid.losses.base`): ``forward(embeddings, labels, labels_b=None,
lam=1.0)`` (MoCo: ``forward(q, k)``), flags ``is_pair_based``, ``has_classifier``, ``has_margin``,
``needs_two_views`` and ``set_margin(m)``.
"""

from __future__ import annotations

import inspect

from torch import nn

from .base import ClassifierLoss, LossConfigError, PairLoss, SpeakerLoss, dominant_labels
from .circle import CircleLoss, CircleProxyLoss
from .margin import AAMSoftmax
from .memory import CrossBatchMemory
from .moco import MoCoLoss, MomentumEncoder
from .lifted import GeneralizedLiftedStructureLoss, LiftedStructureLoss
from .pair import ContrastiveLoss
from .triplet import TripletLoss

__all__ = [
    "LOSSES",
    "build_loss",
    "LossConfigError",
    "SpeakerLoss",
    "PairLoss",
    "ClassifierLoss",
    "dominant_labels",
    "CircleLoss",
    "CircleProxyLoss",
    "AAMSoftmax",
    "ContrastiveLoss",
    "TripletLoss",
    "LiftedStructureLoss",
    "GeneralizedLiftedStructureLoss",
    "CrossBatchMemory",
    "MoCoLoss",
    "MomentumEncoder",
]

LOSSES: dict[str, type[SpeakerLoss]] = {
    "circle": CircleLoss,
    "circle_proxy": CircleProxyLoss,
    "aam": AAMSoftmax,
    "contrastive": ContrastiveLoss,
    "triplet": TripletLoss,
    "lifted_structure": LiftedStructureLoss,
    "lifted_structure_generalized": GeneralizedLiftedStructureLoss,
    "moco": MoCoLoss,
}


def build_loss(
    name: str,
    embed_dim: int,
    num_classes: int,
    xbm_size: int = 0,
    xbm_start_step: int = 0,
    **kwargs,
) -> nn.Module:
    """Build the loss registered as ``name``.

    Args:
        name: a key of :data:`LOSSES`.
        embed_dim: embedding size of the encoder.
        num_classes: number of training classes (speakers, x speeds when speed-perturbed speakers
            count as new ones); used by classifier losses only.
        xbm_size: if > 0, wrap a pair-based loss in a :class:`CrossBatchMemory` of this many
            embeddings (``LossConfig.xbm_size``), mined from step ``xbm_start_step`` on.
        **kwargs: the loss's own arguments (``LossConfig.kwargs``), e.g. ``m``, ``gamma``, ``margin``,
            ``scale``, ``sub_centers``, ``mining``, ``queue_size``, ``temperature``.

    Raises:
        LossConfigError: unknown name, unknown/bad arguments, or xbm_size with a non-pair loss.
    """
    if name not in LOSSES:
        raise LossConfigError(f"unknown loss {name!r}; choose one of {sorted(LOSSES)}")
    cls = LOSSES[name]
    params = inspect.signature(cls.__init__).parameters
    args = dict(kwargs)
    if "embed_dim" in params:
        args["embed_dim"] = embed_dim
    if "num_classes" in params:
        args["num_classes"] = num_classes
    unknown = sorted(set(kwargs) - set(params) - {"self"})
    if unknown:
        allowed = sorted(set(params) - {"self", "embed_dim", "num_classes"})
        raise LossConfigError(f"loss {name!r}: unknown argument(s) {unknown}; allowed: {allowed}")
    try:
        loss = cls(**args)
    except TypeError as exc:
        raise LossConfigError(f"loss {name!r}: {exc}") from exc
    if xbm_size > 0:
        if not isinstance(loss, PairLoss):
            raise LossConfigError(f"loss {name!r}: xbm_size needs a pair-based loss, not a {cls.__name__}")
        loss = CrossBatchMemory(loss, embed_dim, xbm_size, start_step=xbm_start_step)
    return loss
