"""speakerid: a speaker verification toolkit.

See ``DESIGN.md`` (shared) for the architecture: audio -> features -> encoders + losses ->
training -> embeddings -> scoring -> enrolment.

``speakerid.load_model(source="starter")`` returns an embedder (``.embed(wave, sr)``,
``.embed_files(paths)``); it imports torch only when called.
"""

from __future__ import annotations

__version__ = "0.1.0"


def load_model(source="starter", device="cpu"):
    """An embedder for a model source: an experiment dir or a packaged name (see :mod:`speakerid.inference`)."""
    from speakerid.inference import load_model as _load_model

    return _load_model(source, device=device)
