"""speakerid: a speaker verification toolkit.

See ``docs/ARCHITECTURE.md`` for the architecture: audio -> features -> encoders + losses ->
training -> embeddings -> scoring -> enrolment.

``speakerid.load_model()`` returns an embedder of the packaged default model, ``campplus``
(``load_model("starter")``, ``load_model("exp/dir")`` for others): ``.embed(wave, sr)``,
``.embed_files(paths)``; it imports torch only when called.
"""

from __future__ import annotations

import os as _os
import sys as _sys

__version__ = "0.1.0"

# Idle OpenMP threads sleep instead of spinning for long (read by the OpenMP runtime when torch
# loads, so only when speakerid is imported first, as the CLI does): a thread that spins for
# milliseconds burns the time slice its descheduled sibling needs on a busy machine. With GNU
# OpenMP (Linux wheels) they first spin briefly (GOMP_SPINCOUNT, OMP_SPIN_COUNT below; PASSIVE
# alone means no spin, and each of the hundreds of small parallel regions of a batch-1 forward
# pass then waits for a sleeping thread to wake: benchmarks/losses_speed.py, issue 20). Settings
# you make win; SPEAKERID_THREADS=torch keeps torch's defaults.
OMP_SPIN_COUNT = "30000"
if "torch" not in _sys.modules and _os.environ.get("SPEAKERID_THREADS", "").strip() != "torch":
    if "OMP_WAIT_POLICY" not in _os.environ:
        _os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        _os.environ.setdefault("GOMP_SPINCOUNT", OMP_SPIN_COUNT)


def load_model(source=None, device="cpu", backend="torch"):
    """An embedder for a model source: an experiment dir or a packaged name (see :mod:`speakerid.inference`);
    None: the packaged default model (``speakerid.pretrained.DEFAULT_MODEL``). ``backend="onnxruntime"`` runs
    the encoder in onnxruntime (the ``onnx`` extra; :mod:`speakerid.encoder_runtime`)."""
    from speakerid.inference import load_model as _load_model

    return _load_model(source, device=device, backend=backend)
