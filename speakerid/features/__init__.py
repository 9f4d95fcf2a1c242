"""The front end: waveform -> features.

``kaldi`` (Kaldi-compatible fbank / log-mel and CMN), ``speechbrain`` (SpeechBrain's front end,
for imported models), ``windows`` (Kaldi window functions and wave scales), ``vad`` (energy-based
silence trimming). Audio reading lives in :mod:`speakerid.audio`.
"""

from speakerid.features.kaldi import fbank

__all__ = ["fbank"]  # the stable public name (docs/ARCHITECTURE.md, "Python API")
