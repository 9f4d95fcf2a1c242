"""The experiment dir: its layout, where one comes from, and the readers / writers of its files.

An experiment dir is the toolkit's central contract (docs/ARCHITECTURE.md, "Data formats"):
``speakerid train`` and ``speakerid import`` write one; ``extract``, ``enroll``/``verify``/
``identify``, ``score``, ``calibrate``, ``export`` and :func:`speakerid.load_model` read one.

- ``config.yaml`` (:data:`CONFIG_FILE`): the resolved training config (:mod:`speakerid.config`);
- ``model.pt`` (:data:`MODEL_FILE`): the encoder's state dict, read with ``weights_only=True``;
- ``checkpoints/epoch_*.pt`` (:data:`speakerid.checkpoint.CHECKPOINT_DIR`), ``train.log``;
- optional ``calibration.json`` (score -> LLR map and the default operating point),
  ``cohort.npz`` (AS-norm cohort), ``dev_eval.json`` (dev EER and threshold), ``speakers.txt``
  (training speakers), ``import.json`` (provenance of an imported model), ``plda.npz``
  (the PLDA scoring backend).

A model source is an experiment dir or a packaged name (``"campplus"``, the default, or
``"starter"`` -> ``speakerid/pretrained/<name>/``, a folder holding the same files):
:func:`resolve_model_source`. Building the model from these files is :mod:`speakerid.inference`'s job.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from speakerid.fileio import write_text_atomic

PACKAGED_DIR = Path(__file__).resolve().parent / "pretrained"
CONFIG_FILE = "config.yaml"  # the resolved training config (speakerid.config)
MODEL_FILE = "model.pt"  # the encoder state dict (read with weights_only=True)
IMPORT_FILE = "import.json"  # provenance of an imported model (speakerid.interop)
LOG_FILE = "train.log"
DEV_EVAL_FILE = "dev_eval.json"
CALIBRATION_FILE = "calibration.json"
SPEAKERS_FILE = "speakers.txt"
COHORT_FILE = "cohort.npz"


class ExperimentError(ValueError):
    """An experiment dir is incomplete or does not match its config."""


def resolve_model_source(name_or_path: str | os.PathLike) -> Path:
    """An experiment dir for ``name_or_path``: an existing dir, else a packaged model name.

    ``"starter"`` (or any name without a path separator) resolves to
    ``speakerid/pretrained/<name>/``, which holds the files of an experiment dir.
    """
    path = Path(name_or_path)
    if path.is_dir():
        return path
    name = str(name_or_path)
    if name and os.sep not in name and "/" not in name and not path.suffix:
        packaged = PACKAGED_DIR / name
        if packaged.is_dir():
            return packaged
        known = sorted(p.name for p in PACKAGED_DIR.iterdir() if p.is_dir()) if PACKAGED_DIR.is_dir() else []
        raise ExperimentError(
            f"{name}: neither an experiment dir nor a packaged model "
            f"({packaged} does not exist; packaged models here: {', '.join(known) or 'none'})"
        )
    raise ExperimentError(f"{path}: experiment dir not found (run the train stage first)")


def require_files(exp_dir: Path) -> None:
    if not exp_dir.is_dir():
        raise ExperimentError(f"{exp_dir}: experiment dir not found (run the train stage first)")
    for name in (CONFIG_FILE, MODEL_FILE):
        if not (exp_dir / name).is_file():
            raise ExperimentError(f"{exp_dir}: no {name} in the experiment dir (run the train stage first)")


def load_encoder_weights(source: str | os.PathLike) -> dict[str, "torch.Tensor"]:
    """Encoder state dict from an experiment dir (its ``model.pt``), a ``model.pt`` or a checkpoint.

    Used by fine-tuning (``--init-from``): only the encoder is taken, the loss head is rebuilt.
    """
    from speakerid.checkpoint import CheckpointError, check_weights, list_checkpoints, load_checkpoint

    source = Path(source)
    if source.is_dir():
        candidates = [source / MODEL_FILE] + list(reversed(list_checkpoints(source)))
        existing = [c for c in candidates if c.is_file()]
        if not existing:
            raise CheckpointError(f"{source}: experiment dir has neither model.pt nor checkpoints/epoch_*.pt")
        source = existing[0]
    obj = load_checkpoint(source)
    if "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    check_weights(obj, str(source))  # named tensors only, finite
    return obj


def write_dev_eval(exp_dir: str | os.PathLike, result: dict) -> Path:
    path = Path(exp_dir) / DEV_EVAL_FILE
    write_text_atomic(path, json.dumps(result, indent=2) + "\n")
    return path


def read_dev_eval(exp_dir: str | os.PathLike) -> dict | None:
    """``dev_eval.json`` as a dict (None when absent); a malformed file is an error naming it."""
    path = Path(exp_dir) / DEV_EVAL_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ExperimentError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ExperimentError(f"{path}: expected a JSON object")
    return data


def read_dev_threshold(exp_dir: str | os.PathLike) -> float | None:
    """The dev-set EER threshold (cosine) of ``dev_eval.json``, or None."""
    data = read_dev_eval(exp_dir)
    value = None if data is None else data.get("threshold")
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ExperimentError(f"{Path(exp_dir) / DEV_EVAL_FILE}: threshold: not a number ({value!r})") from None


def read_calibration(exp_dir: str | os.PathLike):
    """``calibration.json`` as a :class:`speakerid.scoring.calibrate.Calibration`, or None when absent."""
    path = Path(exp_dir) / CALIBRATION_FILE
    if not path.is_file():
        return None
    from speakerid.scoring.calibrate import Calibration

    return Calibration.load(path)


def write_speakers(exp_dir: str | os.PathLike, speakers: Sequence[str]) -> Path:
    path = Path(exp_dir) / SPEAKERS_FILE
    write_text_atomic(path, "".join(f"{s}\n" for s in speakers))
    return path


def read_speakers(exp_dir: str | os.PathLike) -> list[str]:
    path = Path(exp_dir) / SPEAKERS_FILE
    try:
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except OSError as e:
        raise ExperimentError(f"{path}: cannot read the speaker list ({e.strerror or e})") from None


def write_cohort(exp_dir: str | os.PathLike, ids: Sequence[str], embeddings: np.ndarray,
                 top_k: int | None = None) -> Path:
    """``cohort.npz`` (the format of :func:`speakerid.scoring.embeddings.save_embeddings`), with
    ``top_k`` (the cohort scores per side that AS-norm / CSLS use with it) when given."""
    from speakerid.scoring.embeddings import save_embeddings

    path = Path(exp_dir) / COHORT_FILE
    extra = None if top_k is None else {"top_k": np.int64(_check_top_k(top_k, path))}
    save_embeddings(path, ids, embeddings, extra)  # one atomic write: never a cohort without its top_k
    return path


def _check_top_k(value, path: Path) -> int:
    if not (np.ndim(value) == 0 and float(value) == int(value) and int(value) >= 2):
        raise ExperimentError(f"{path}: 'top_k' must be one integer >= 2, got {value!r}")
    return int(value)


def read_cohort(exp_dir: str | os.PathLike) -> tuple[np.ndarray, np.ndarray] | None:
    """(ids, embeddings) of ``cohort.npz``, or None when absent; a bad file is an error naming it."""
    from speakerid.scoring.embeddings import EmbeddingsError, load_embeddings

    path = Path(exp_dir) / COHORT_FILE
    if not path.is_file():
        return None
    try:
        ids, emb = load_embeddings(path)
    except EmbeddingsError as e:
        raise ExperimentError(str(e)) from None
    return np.asarray(ids), emb


def read_cohort_top_k(exp_dir: str | os.PathLike) -> int:
    """The top-k that ``cohort.npz`` names (its ``top_k`` array), else the default
    (:data:`speakerid.scoring.norm.DEFAULT_TOP_K`); a bad value is an error naming the file."""
    from speakerid.scoring.norm import DEFAULT_TOP_K

    path = Path(exp_dir) / COHORT_FILE
    try:
        with np.load(path, allow_pickle=False) as z:
            if "top_k" not in z.files:
                return DEFAULT_TOP_K
            value = z["top_k"]
    except (OSError, ValueError) as e:
        raise ExperimentError(f"{path}: not a readable cohort file ({e})") from None
    if value.dtype.kind not in "iuf":
        raise ExperimentError(f"{path}: 'top_k' must be one integer >= 2, got dtype {value.dtype}")
    return _check_top_k(value.item() if value.ndim == 0 else value, path)


@dataclass(frozen=True)
class ModelScoring:
    """How a model dir scores trials: its backend, cohort file (or None), top-k and PLDA file (or None)."""

    scoring: str
    cohort: str | None
    top_k: int
    plda: str | None


def model_scoring(model: str | os.PathLike) -> ModelScoring:
    """The scoring a model's own decisions use (``speakerid score --model``, as ``verify`` scores): the
    backend its ``calibration.json`` was fitted on, else AS-norm when it has ``cohort.npz``, else cosine;
    its cohort and the cohort's ``top_k``; its ``plda.npz``. Errors name the file."""
    from speakerid.scoring.backend import BACKENDS, default_backend_name
    from speakerid.scoring.norm import DEFAULT_TOP_K

    exp = resolve_model_source(model)
    cohort = exp / COHORT_FILE
    has_cohort = cohort.is_file()
    cal = read_calibration(exp)
    scoring = default_backend_name(None if cal is None else cal.score, has_cohort)
    if BACKENDS[scoring].uses_cohort and not has_cohort:
        raise ExperimentError(f"{exp}: calibration.json is fitted on {scoring} scores, but there is no {COHORT_FILE}")
    plda = exp / "plda.npz"
    return ModelScoring(scoring, str(cohort) if has_cohort else None,
                        read_cohort_top_k(exp) if has_cohort else DEFAULT_TOP_K, str(plda) if plda.is_file() else None)


def model_backend(model: str | os.PathLike):
    """The scoring backend (:class:`speakerid.scoring.backend.ScoringBackend`) built as ``model`` decides
    (:func:`model_scoring`: its calibrated backend, cohort and top-k, plda.npz); ``.score(enroll, test)``."""
    from speakerid.scoring.backend import BackendError, BackendResources, build_backend, unit_vectors

    exp = resolve_model_source(model)
    m = model_scoring(exp)
    cohort = read_cohort(exp) if m.cohort is not None else None
    files = {} if m.plda is None else {"plda.npz": Path(m.plda)}
    res = BackendResources(cohort=None if cohort is None else unit_vectors(cohort[1]), files=files, top_k=m.top_k,
                           source=str(model))
    try:
        return build_backend(m.scoring, res)
    except BackendError as e:
        raise ExperimentError(str(e)) from None
