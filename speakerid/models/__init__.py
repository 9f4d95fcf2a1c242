"""Speaker encoders, built by name.

Every model maps fbank features ``(batch, frames, feat_dim)`` to embeddings ``(batch, embed_dim)``,
has an ``embed_dim`` attribute, accepts any number of frames at inference, and is TorchScript-able
(``torch.jit.script(model)``).

>>> from speakerid.models import build_model
>>> model = build_model("ecapa_tdnn", channels=512, feat_dim=80, embed_dim=192)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from .campplus import CAMPPlus
from .ecapa_tdnn import ECAPATDNN, ECAPATDNNC512, ECAPATDNNC1024
from .ecapa_tdnn_speechbrain import ECAPATDNNSpeechBrain
from .onnx_encoder import OnnxEncoder
from .pooling import ASTP, TSTP, build_pooling
from .redimnet import ReDimNet, ReDimNetB0, ReDimNetB1, ReDimNetB2, ReDimNetB3, ReDimNetB4, ReDimNetB5, ReDimNetB6
from .resnet import ResNet, ResNet18, ResNet34, ResNet50, ResNet101, ResNet152, ResNet221, ResNet293

if TYPE_CHECKING:
    from speakerid.config import TrainConfig

__all__ = [
    "MODELS",
    "INFERENCE_ONLY",
    "ModelConfigError",
    "build_model",
    "build_encoder",
    "count_parameters",
    "CAMPPlus",
    "ECAPATDNN",
    "ECAPATDNNC512",
    "ECAPATDNNC1024",
    "ECAPATDNNSpeechBrain",
    "ResNet",
    "ResNet18",
    "ResNet34",
    "ResNet50",
    "ResNet101",
    "ResNet152",
    "ResNet221",
    "ResNet293",
    "ReDimNet",
    "TSTP",
    "ASTP",
    "build_pooling",
]

MODELS: dict[str, type[nn.Module]] = {
    "ecapa_tdnn": ECAPATDNN,
    "ecapa_tdnn_c512": ECAPATDNNC512,
    "ecapa_tdnn_c1024": ECAPATDNNC1024,
    "resnet": ResNet,
    "resnet18": ResNet18,
    "resnet34": ResNet34,
    "resnet50": ResNet50,
    "resnet101": ResNet101,
    "resnet152": ResNet152,
    "resnet221": ResNet221,
    "resnet293": ResNet293,
    "campplus": CAMPPlus,
    "ecapa_tdnn_speechbrain": ECAPATDNNSpeechBrain,
    "redimnet": ReDimNet,
    "redimnet_b0": ReDimNetB0,
    "redimnet_b1": ReDimNetB1,
    "redimnet_b2": ReDimNetB2,
    "redimnet_b3": ReDimNetB3,
    "redimnet_b4": ReDimNetB4,
    "redimnet_b5": ReDimNetB5,
    "redimnet_b6": ReDimNetB6,
    "onnx_encoder": OnnxEncoder,  # inference only (speakerid import --from onnx)
}


#: Registered encoders that only run inference (no training, no TorchScript).
INFERENCE_ONLY: frozenset[str] = frozenset({"onnx_encoder"})


class ModelConfigError(ValueError):
    """An unknown model name or bad model arguments (one line, names the problem)."""


def build_model(name: str, **kwargs) -> nn.Module:
    """Build the encoder registered as ``name`` with keyword arguments ``kwargs``.

    Raises:
        ModelConfigError: unknown name, or arguments the model does not accept / rejects.
    """
    if name not in MODELS:
        raise ModelConfigError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    try:
        return MODELS[name](**kwargs)
    except TypeError as exc:  # unexpected / missing keyword
        raise ModelConfigError(f"model {name!r}: {exc}") from exc
    except ValueError as exc:
        raise ModelConfigError(f"model {name!r}: {exc}") from exc


def build_encoder(cfg: "TrainConfig") -> nn.Module:
    """The encoder of an experiment config, the one rule the trainer, extract and export share:
    ``build_model(cfg.model.name, feat_dim=cfg.features.num_mel_bins, **cfg.model.kwargs)``."""
    return build_model(cfg.model.name, feat_dim=cfg.features.num_mel_bins, **cfg.model.kwargs)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
