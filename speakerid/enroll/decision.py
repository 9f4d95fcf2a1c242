"""Decisions of the speaker DB and what verify / identify answer.

:class:`Decision`: which scoring backend's score decides (:mod:`speakerid.scoring.backend`), the
calibration that maps it to an LLR (or None), the threshold and why; :class:`VerifyResult`,
:class:`Match`, :class:`IdentifyResult`: the answers (``to_dict`` for ``--json`` and the service).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from speakerid.enroll.rules import DEFAULT_SCORE_RULE, Scores
from speakerid.enroll.records import SpeakerDBError
from speakerid.scoring import metrics
from speakerid.scoring.backend import ScoringBackend

DEFAULT_P_TARGET = 0.01


def bayes_threshold(p_target: float) -> float:
    """``-logit(P_target)`` (:func:`speakerid.scoring.metrics.bayes_threshold`) with the DB's error type."""
    if not 0.0 < p_target < 1.0:
        raise SpeakerDBError(f"p_target must be in (0, 1), got {p_target}")
    return metrics.bayes_threshold(p_target)



@dataclass
class VerifyResult:
    """``score`` is the cosine, ``backend_score`` the raw score of the scoring backend ``score_kind``
    when that is not cosine (``asnorm`` repeats it for AS-norm), ``llr`` the calibrated
    ``score_kind`` score (or None); ``accept = decision_score >= threshold``."""

    speaker: str
    test: str
    score: float
    llr: float | None
    threshold: float
    threshold_source: str
    accept: bool
    asnorm: float | None = None
    score_kind: str = "cosine"
    rule: str = DEFAULT_SCORE_RULE
    decision_score: float = float("nan")
    backend_score: float | None = None  # the raw ``score_kind`` score when that is not cosine

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class Match:
    speaker: str
    score: float
    llr: float | None = None
    asnorm: float | None = None
    decision_score: float = float("nan")
    accept: bool = False
    backend_score: float | None = None


@dataclass
class IdentifyResult:
    """Open-set answer: ``decision`` is the best candidate when it reaches ``threshold``, else "unknown"."""

    test: str
    decision: str
    candidates: list[Match] = field(default_factory=list)
    threshold: float = float("nan")
    threshold_source: str = ""
    score_kind: str = "cosine"
    rule: str = DEFAULT_SCORE_RULE

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Decision:
    """How a raw score becomes accept/reject: which score kind, the calibration (or None), the threshold."""

    kind: str
    calibration: object | None
    threshold: float
    source: str
    backend: ScoringBackend | None = None  # what computes the ``kind`` scores (None: cosine)

    def apply(self, scores: Scores) -> tuple[np.ndarray, np.ndarray | None]:
        """(decision scores, LLRs or None) of the chosen kind."""
        raw = np.asarray(scores.of(self.kind), dtype=np.float64)
        llr = None if self.calibration is None else self.calibration.apply(raw)
        return (raw if llr is None else llr), llr


