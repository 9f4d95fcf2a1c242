"""Models that ship inside the package: ``speakerid/pretrained/<name>/``.

Each folder has the files of an experiment dir: ``config.yaml``, ``model.pt`` (state dict),
``calibration.json``, ``dev_eval.json``, ``cohort.npz`` (AS-norm cohort: ``ids``, ``embeddings``)
and ``MODEL_CARD.md`` (training data, licences and attribution, measured figures, the command
that trained it). :data:`DEFAULT_MODEL` (``campplus``, 3D-Speaker's CAM++ imported, calibrated
and packaged by ``recipes/pretrained/run.sh``) is what every command and
:func:`speakerid.load_model` use when no model is named; ``starter`` (trained from scratch here by
``recipes/starter/run.sh``) stays available by name.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["DEFAULT_MODEL", "PACKAGED_FILES", "packaged_names", "packaged_dir", "examples_dir"]

DEFAULT_MODEL = "starter"  # becomes "campplus" once recipes/pretrained/run.sh has packaged it

PACKAGED_FILES = ("config.yaml", "model.pt", "calibration.json", "dev_eval.json", "MODEL_CARD.md")  # + cohort.npz when AS-norm helps
_ROOT = Path(__file__).resolve().parent


def packaged_names() -> list[str]:
    """Names of the packaged models present in this installation."""
    return sorted(p.name for p in _ROOT.iterdir() if p.is_dir() and (p / "model.pt").is_file())


def packaged_dir(name: str = DEFAULT_MODEL) -> Path:
    """The folder of packaged model ``name``; a clear error when it or one of its files is missing."""
    folder = _ROOT / name
    if not folder.is_dir():
        have = ", ".join(packaged_names()) or "none"
        raise FileNotFoundError(f"no packaged model {name!r} (packaged: {have})")
    missing = [f for f in PACKAGED_FILES if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(f"packaged model {name!r} at {folder} lacks {', '.join(missing)}")
    return folder


def examples_dir() -> Path:
    """The example clips that ship with the package (two held-out speakers; see ``examples/ATTRIBUTION.md``)."""
    return _ROOT / "examples"
