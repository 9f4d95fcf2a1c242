"""speakerid: a speaker verification toolkit.

See ``DESIGN.md`` (shared) for the architecture: audio -> features -> encoders + losses ->
training -> embeddings -> scoring -> enrolment.
"""

__version__ = "0.1.0"
