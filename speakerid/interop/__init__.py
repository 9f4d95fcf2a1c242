"""Import other toolkits' checkpoints as speakerid experiment dirs (``speakerid import --from ...``).

>>> from speakerid.interop import import_model
>>> import_model("wespeaker", checkpoint="avg_model.pt", config="config.yaml", out="exp/ws_resnet34")

Sources: ``wespeaker`` (avg_model.pt + config.yaml), ``speechbrain`` (embedding_model.ckpt +
hyperparams.yaml), ``3dspeaker`` (a 3D-Speaker CAM++ state dict, optional config), ``onnx`` (an
ONNX encoder run by onnxruntime). Each importer writes
``config.yaml`` + ``model.pt`` (+ ``import.json``), which ``extract``,
``enroll``, ``verify``, ``identify`` and ``export`` use as they use a trained experiment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from .experiment import ModelImportError
from .onnx import import_onnx
from .speechbrain import import_speechbrain
from .threedspeaker import import_3dspeaker
from .wespeaker import import_wespeaker

__all__ = ["IMPORTERS", "ModelImportError", "import_model"]

IMPORTERS: dict[str, Callable[..., Path]] = {
    "wespeaker": import_wespeaker,
    "speechbrain": import_speechbrain,
    "3dspeaker": import_3dspeaker,
    "onnx": import_onnx,
}


def import_model(source: str, out: str | os.PathLike, **kwargs: Any) -> Path:
    """Import with the importer registered as ``source``; ``kwargs`` are that importer's."""
    if source not in IMPORTERS:
        raise ModelImportError(f"unknown source toolkit {source!r}; choose one of {sorted(IMPORTERS)}")
    return IMPORTERS[source](out=out, **kwargs)
