"""Load a peer toolkit's model code without its package ``__init__``.

WeSpeaker's PyPI build (``wespeaker-unofficial``) imports its CLI from ``wespeaker/__init__.py``
and the CLI needs packages a model does not (silero-vad, s3prl, ...). Its model files only import
``torch`` and ``wespeaker.models.pooling_layers``, so registering empty package objects for
``wespeaker`` and ``wespeaker.models`` (with the real ``__path__``) lets the model modules import
each other without running either ``__init__``. Parity tests and benchmarks use this to build
the peer's own models; the library itself never needs it.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path

__all__ = ["wespeaker_models"]


def _bare_package(name: str, path: Path) -> None:
    if name in sys.modules:
        return
    pkg = types.ModuleType(name)
    pkg.__path__ = [str(path)]  # a namespace-like package: submodules load, __init__ does not run
    sys.modules[name] = pkg


def wespeaker_models(module: str) -> types.ModuleType:
    """``wespeaker.models.<module>`` (e.g. "resnet", "campplus", "ecapa_tdnn") from wespeaker-unofficial.

    Raises:
        ImportError: wespeaker-unofficial is not installed.
    """
    spec = importlib.util.find_spec("wespeaker") if "wespeaker" not in sys.modules else None
    if "wespeaker" not in sys.modules:
        if spec is None or spec.origin is None:
            raise ImportError("wespeaker-unofficial is not installed (pip install --no-deps wespeaker-unofficial)")
        root = Path(spec.origin).parent
        _bare_package("wespeaker", root)
        _bare_package("wespeaker.models", root / "models")
    return importlib.import_module(f"wespeaker.models.{module}")
