"""speakerid: a speaker verification toolkit.

See ``docs/ARCHITECTURE.md`` for the architecture: audio -> features -> encoders + losses ->
training -> embeddings -> scoring -> enrolment.

``speakerid.load_model()`` returns an embedder of the packaged default model, ``campplus``
(``load_model("starter")``, ``load_model("exp/dir")`` for others): ``.embed(wave, sr)``,
``.embed_files(paths)``; it imports torch only when called. ``speakerid.load_scorer()`` returns the
scoring backend the same model decides with (the default model: CSLS against its cohort):
``.score(enroll_embeddings, test_embeddings)`` row by row; it imports no torch.
"""

from __future__ import annotations

import os as _os
import sys as _sys

__version__ = "0.1.0"

# Idle OpenMP threads sleep instead of spinning (read by the OpenMP runtime when torch loads, so
# only when speakerid is imported first, as the CLI does): a spinning thread burns the time slice
# its descheduled sibling needs on a busy machine. No spin at all: any spin gave up the contention
# figures (benchmarks/bench_contention.py, extraction beside 1 / 3 busy processes: GOMP_SPINCOUNT 0
# 0.99x / 3.0x, 3000 2.5x / 6.3x, 10000 5.1x / 12.4x, 30000 5.0x / 10.0x) for a batch-1 ECAPA gain
# within the run-to-run noise (benchmarks/results_contention.txt). Settings you make win;
# SPEAKERID_THREADS=torch keeps torch's defaults.
if "torch" not in _sys.modules and _os.environ.get("SPEAKERID_THREADS", "").strip() != "torch":
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def load_model(source=None, device="cpu", backend="auto"):
    """An embedder for a model source: an experiment dir or a packaged name (see :mod:`speakerid.inference`);
    None: the packaged default model (``speakerid.pretrained.DEFAULT_MODEL``). ``backend``: ``"auto"`` (the
    encoder in onnxruntime on a CPU where it reproduces the eager model, else torch), ``"torch"`` or
    ``"onnxruntime"`` (:mod:`speakerid.encoder_runtime`)."""
    from speakerid.inference import load_model as _load_model

    return _load_model(source, device=device, backend=backend)


def load_scorer(source=None):
    """The scoring backend a model decides with: the one its calibration.json was fitted on, with its
    cohort and top-k (None: the packaged default model, CSLS top 20); ``.score(enroll, test)`` scores
    row-paired embeddings of that model (:func:`speakerid.experiment.model_backend`)."""
    from speakerid.experiment import model_backend
    from speakerid.pretrained import DEFAULT_MODEL

    return model_backend(DEFAULT_MODEL if source is None else source)
