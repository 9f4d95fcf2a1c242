"""The trained module: encoder + loss head as one ``nn.Module`` (:class:`SpeakerNet`), and the optimizer."""

from __future__ import annotations

from typing import Callable, Iterator

import torch
import torch.nn as nn

from speakerid.config import OptimConfig, TrainConfig
from speakerid.data.training import TrainError
from speakerid.distributed import DistInfo, gather_no_grad, gather_with_grad


class SpeakerNet(nn.Module):
    """Encoder + loss head as ONE module (so DDP synchronises the classifier weights too).

    ``forward`` returns the training loss. Pair-based losses get the embeddings of the
    global batch (see the module docstring for why the gradient is then exact).
    """

    def __init__(self, encoder: nn.Module, head: nn.Module, info: DistInfo) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.info = info
        self.global_batch = bool(getattr(head, "is_pair_based", False))

    def forward(
        self,
        feats: torch.Tensor,
        labels: torch.Tensor,
        labels_b: torch.Tensor | None = None,
        lam: float = 1.0,
        keys: torch.Tensor | None = None,
    ) -> torch.Tensor:
        emb = self.encoder(feats)
        with torch.autocast(device_type=emb.device.type, enabled=False):
            emb = emb.float()
            if getattr(self.head, "needs_two_views", False):
                # InfoNCE is a mean of per-sample terms given the queue, so the local loss needs no
                # gather; MoCoLoss itself gathers the keys of all ranks for its queue (rank order).
                if keys is None:
                    raise TrainError("the MoCo loss needs key embeddings from the momentum encoder")
                return self.head(emb, keys.float())
            if self.global_batch:
                emb = gather_with_grad(emb, self.info)
                labels = gather_no_grad(labels, self.info)
                labels_b = None if labels_b is None else gather_no_grad(labels_b, self.info)
            if labels_b is None:
                return self.head(emb, labels)
            return self.head(emb, labels, labels_b=labels_b, lam=lam)


def build_head(cfg: TrainConfig, embed_dim: int, num_classes: int) -> nn.Module:
    """The loss, with a cross-batch memory (XBM, Wang et al. 2020) around pair losses when asked."""
    from speakerid.losses import build_loss

    return build_loss(
        cfg.loss.name, embed_dim, num_classes, xbm_size=cfg.loss.xbm_size, xbm_start_step=cfg.loss.xbm_start_step,
        **cfg.loss.kwargs,
    )


OPTIMIZERS: dict[str, Callable[[list[nn.Parameter], OptimConfig], torch.optim.Optimizer]] = {
    "sgd": lambda params, o: torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov and o.momentum > 0,
                                             weight_decay=o.weight_decay),
    "adam": lambda params, o: torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay),
    "adamw": lambda params, o: torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay),
}  # the keys are OptimConfig.name's allowed values (checked when the config is read)


def build_optimizer(cfg: TrainConfig, params: Iterator[nn.Parameter]) -> torch.optim.Optimizer:
    return OPTIMIZERS[cfg.optim.name]([p for p in params if p.requires_grad], cfg.optim)
