"""Enrolment database (SQLite): enrol speakers, verify a claimed identity, identify a voice.

>>> from speakerid.enroll import SpeakerDB
>>> db = SpeakerDB("speakers.db", "exp/ecapa")          # a trained experiment dir
>>> db.enroll("alice", ["a1.wav", "a2.wav"])
>>> db.verify("alice", "test.wav").accept
>>> db.identify("test.wav", top_k=3)

Speaker model: the embedding of every enrolment file (:func:`speakerid.inference.embed_files`,
whole utterances, windows averaged when long) is length-normalised, and the speaker's model
is the mean of those unit vectors. The DB keeps their float64 SUM and COUNT per speaker
(enrolling again just adds), plus each embedding with its file path (for auditing or
re-averaging). Scores are cosine similarities between the speaker's mean and the test
embedding.

Decisions (``verify``): when the experiment has ``calibration.json`` (a linear map of the
cosine score to a log-likelihood ratio, :mod:`speakerid.scoring.calibrate`, fit on RAW
cosine scores by the recipes' calibrate stage) the score is reported as an LLR and the
threshold is the Bayes threshold ``log((1 - P_target) / P_target)`` for the stated prior
(default P_target = 0.01, C_miss = C_fa = 1); otherwise the threshold that the trainer chose
on the dev set (``dev_eval.json`` "threshold", on cosine); otherwise the caller must give one.
An explicit threshold always wins and applies to the reported score (LLR when calibrated).
The calibration was fit on one-utterance-versus-one-utterance trials; a speaker enrolled
with several files scores somewhat higher for targets, so the LLR is then conservative-ish,
not exact.

Safety:

- Every speaker row stores the model fingerprint (:func:`speakerid.inference.model_fingerprint`:
  sha256 of the encoder weights and the front-end settings); using a speaker with another
  model raises :class:`ModelMismatchError` instead of returning a meaningless score.
- Enrolment computes all embeddings first, then writes in ONE ``BEGIN IMMEDIATE``
  transaction: a crash or SIGKILL leaves the DB as before or as after, never half-written
  (SQLite's journal rolls an unfinished transaction back on the next open).
- WAL journal and a busy timeout: several processes may enrol and read at once; writers
  queue on the lock instead of failing.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from speakerid.scoring import metrics

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
DEFAULT_P_TARGET = 0.01
#: Test hook: seconds to sleep after each row written inside the enrolment transaction, so a
#: test can SIGKILL the process mid-transaction. Unset in normal use.
TEST_SLEEP_ENV = "SPEAKERID_TEST_ENROLL_SLEEP_S"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS speakers (
    name TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    embed_dim INTEGER NOT NULL,
    emb_sum BLOB NOT NULL,
    num_utts INTEGER NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS utterances (
    id INTEGER PRIMARY KEY,
    speaker TEXT NOT NULL REFERENCES speakers(name) ON DELETE CASCADE,
    path TEXT NOT NULL,
    embedding BLOB NOT NULL,
    added REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS utterances_by_speaker ON utterances(speaker);
"""


class SpeakerDBError(ValueError):
    """The speaker DB cannot answer: missing/corrupt file, no threshold, bad speaker name, ..."""


class UnknownSpeakerError(SpeakerDBError):
    """The speaker is not enrolled in the DB."""


class ModelMismatchError(SpeakerDBError):
    """The DB's speakers were enrolled with a different model than the one given."""


# --------------------------------------------------------------------------- the model side
@dataclass
class SpeakerModel:
    """An embedding extractor with what verification needs: fingerprint, calibration, dev threshold."""

    extractor: object  # speakerid.inference.EmbeddingExtractor
    fingerprint: str
    calibration: object | None = None  # speakerid.scoring.calibrate.Calibration
    dev_threshold: float | None = None
    source: str = "<model>"

    @classmethod
    def from_experiment(cls, exp_dir: str | os.PathLike, device: str = "cpu") -> "SpeakerModel":
        """Load ``exp_dir`` (model.pt + config.yaml) and, when present, calibration.json and dev_eval.json."""
        from speakerid.inference import load_experiment, model_fingerprint

        exp_dir = Path(exp_dir)
        extractor, _ = load_experiment(exp_dir, device=device)
        calibration = None
        cal_path = exp_dir / "calibration.json"
        if cal_path.is_file():
            from speakerid.scoring.calibrate import Calibration

            calibration = Calibration.load(cal_path)
        dev_threshold = None
        dev_path = exp_dir / "dev_eval.json"
        if dev_path.is_file():
            try:
                value = json.loads(dev_path.read_text(encoding="utf-8")).get("threshold")
            except (OSError, ValueError, AttributeError) as e:
                raise SpeakerDBError(f"{dev_path}: not a JSON object with a 'threshold' ({e})") from None
            if value is not None:
                dev_threshold = float(value)
        return cls(extractor, model_fingerprint(extractor), calibration, dev_threshold, str(exp_dir))

    @classmethod
    def from_extractor(cls, extractor, calibration=None, dev_threshold: float | None = None) -> "SpeakerModel":
        from speakerid.inference import model_fingerprint

        return cls(extractor, model_fingerprint(extractor), calibration, dev_threshold)

    def embed(self, wav_paths: Sequence[str | os.PathLike]) -> np.ndarray:
        """Length-normalised embeddings ``[N, D]`` (float32) of whole files."""
        import torch

        from speakerid.inference import embed_files

        with torch.no_grad():
            emb = embed_files(self.extractor, list(wav_paths)).numpy().astype(np.float64)
        return _unit(emb).astype(np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def bayes_threshold(p_target: float) -> float:
    """The LLR threshold minimising the expected cost with C_miss = C_fa = 1: ``-logit(P_target)``.

    The formula lives in :func:`speakerid.scoring.metrics.bayes_threshold`; this wrapper only
    turns a bad ``p_target`` into the database's own error type.
    """
    if not 0.0 < p_target < 1.0:
        raise SpeakerDBError(f"p_target must be in (0, 1), got {p_target}")
    return metrics.bayes_threshold(p_target)


# --------------------------------------------------------------------------- results
@dataclass
class SpeakerInfo:
    name: str
    num_utts: int
    created: float
    updated: float
    fingerprint: str


@dataclass
class VerifyResult:
    """``score`` is the cosine; ``llr`` the calibrated LLR (or None); ``accept = decision score >= threshold``."""

    speaker: str
    test: str
    score: float
    llr: float | None
    threshold: float
    threshold_source: str
    accept: bool

    @property
    def decision_score(self) -> float:
        return self.llr if self.llr is not None else self.score

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class Match:
    speaker: str
    score: float
    llr: float | None = None


# --------------------------------------------------------------------------- the DB
class SpeakerDB:
    """A speaker enrolment database in one SQLite file.

    ``model``: an experiment dir (path), a :class:`SpeakerModel`, an ``EmbeddingExtractor``, or
    None (then only :meth:`list` and :meth:`remove` work). ``threshold`` overrides the decision
    threshold; ``p_target`` sets the Bayes threshold of calibrated models. ``timeout``: seconds
    a writer waits for another one (busy timeout).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        model: "str | os.PathLike | SpeakerModel | object | None" = None,
        *,
        p_target: float = DEFAULT_P_TARGET,
        threshold: float | None = None,
        timeout: float = 60.0,
        device: str = "cpu",
    ) -> None:
        self.path = Path(path)
        self.p_target = float(p_target)
        bayes_threshold(self.p_target)  # validates
        self.threshold = threshold
        self.timeout = float(timeout)
        if model is None or isinstance(model, SpeakerModel):
            self.model = model
        elif isinstance(model, (str, os.PathLike)):
            self.model = SpeakerModel.from_experiment(model, device=device)
        else:
            self.model = SpeakerModel.from_extractor(model)
        self._conn: sqlite3.Connection | None = None

    # ---- connection
    def _connect(self, create: bool) -> sqlite3.Connection:
        if self._conn is not None:
            return self._conn
        if not self.path.exists():
            if not create:
                raise SpeakerDBError(f"{self.path}: speaker DB not found (enrol a speaker first)")
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(str(self.path), timeout=self.timeout, isolation_level=None)
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            conn.execute("PRAGMA foreign_keys = ON")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                logger.warning("%s: WAL journal not available (%s); concurrent access will block more", self.path, mode)
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("BEGIN IMMEDIATE")
            try:
                # statement by statement: executescript() would COMMIT the open transaction first
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
        except sqlite3.DatabaseError as e:
            raise SpeakerDBError(f"{self.path}: not a usable speaker DB ({e})") from None
        if int(version) != SCHEMA_VERSION:
            conn.close()
            raise SpeakerDBError(f"{self.path}: speaker DB schema version {version}, this speakerid reads {SCHEMA_VERSION}")
        self._conn = conn
        return conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> "SpeakerDB":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _require_model(self, what: str) -> SpeakerModel:
        if self.model is None:
            raise SpeakerDBError(f"{what} needs a model (an experiment dir: --model EXP)")
        return self.model

    def _check_fingerprint(self, name: str, fingerprint: str) -> None:
        model = self._require_model("scoring")
        if fingerprint != model.fingerprint:
            raise ModelMismatchError(
                f"{self.path}: speaker {name!r} was enrolled with another model (fingerprint "
                f"{fingerprint[:12]}), not {model.source} ({model.fingerprint[:12]}); use that model or re-enrol"
            )

    # ---- writing
    def enroll(self, speaker: str, wav_paths: Sequence[str | os.PathLike]) -> SpeakerInfo:
        """Add the files' embeddings to ``speaker`` (created if new); all-or-nothing."""
        speaker = _check_name(speaker)
        if not wav_paths:
            raise SpeakerDBError(f"enrolling {speaker!r}: no audio files given")
        model = self._require_model("enroll")
        emb = model.embed(wav_paths)  # all audio is read and embedded BEFORE the transaction
        paths = [str(Path(p).resolve()) for p in wav_paths]
        conn = self._connect(create=True)
        sleep_s = float(os.environ.get(TEST_SLEEP_ENV, "0") or 0)
        now = time.time()
        conn.execute("BEGIN IMMEDIATE")
        try:
            others = conn.execute(
                "SELECT name, fingerprint FROM speakers WHERE fingerprint != ? LIMIT 1", (model.fingerprint,)
            ).fetchone()
            if others is not None:
                self._check_fingerprint(others[0], others[1])
            row = conn.execute("SELECT emb_sum, num_utts, embed_dim FROM speakers WHERE name = ?", (speaker,)).fetchone()
            total = emb.astype(np.float64).sum(axis=0)
            if row is None:
                conn.execute(
                    "INSERT INTO speakers(name, fingerprint, embed_dim, emb_sum, num_utts, created, updated) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (speaker, model.fingerprint, emb.shape[1], total.tobytes(), len(paths), now, now),
                )
            else:
                old = np.frombuffer(row[0], dtype=np.float64)
                conn.execute(
                    "UPDATE speakers SET emb_sum = ?, num_utts = ?, updated = ? WHERE name = ?",
                    ((old + total).tobytes(), row[1] + len(paths), now, speaker),
                )
            for path, e in zip(paths, emb):
                if sleep_s > 0:
                    time.sleep(sleep_s)
                conn.execute(
                    "INSERT INTO utterances(speaker, path, embedding, added) VALUES (?, ?, ?, ?)",
                    (speaker, path, e.astype(np.float32).tobytes(), now),
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        logger.info("%s: enrolled %d file(s) for %r", self.path, len(paths), speaker)
        return self.info(speaker)

    def remove(self, speaker: str) -> None:
        """Delete ``speaker`` and its stored embeddings; :class:`UnknownSpeakerError` when absent."""
        conn = self._connect(create=False)
        conn.execute("BEGIN IMMEDIATE")
        try:
            cur = conn.execute("DELETE FROM speakers WHERE name = ?", (speaker,))
            conn.execute("DELETE FROM utterances WHERE speaker = ?", (speaker,))
            if cur.rowcount == 0:
                raise UnknownSpeakerError(f"{self.path}: no enrolled speaker {speaker!r}{self._known_hint(conn)}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    # ---- reading
    def _known_hint(self, conn: sqlite3.Connection) -> str:
        names = [r[0] for r in conn.execute("SELECT name FROM speakers ORDER BY name LIMIT 6")]
        if not names:
            return " (the DB is empty)"
        more = ", ..." if len(names) > 5 else ""
        return f" (enrolled: {', '.join(names[:5])}{more})"

    def info(self, speaker: str) -> SpeakerInfo:
        conn = self._connect(create=False)
        row = conn.execute(
            "SELECT name, num_utts, created, updated, fingerprint FROM speakers WHERE name = ?", (speaker,)
        ).fetchone()
        if row is None:
            raise UnknownSpeakerError(f"{self.path}: no enrolled speaker {speaker!r}{self._known_hint(conn)}")
        return SpeakerInfo(*row)

    def list(self) -> list[SpeakerInfo]:
        """All enrolled speakers, sorted by name."""
        conn = self._connect(create=False)
        rows = conn.execute("SELECT name, num_utts, created, updated, fingerprint FROM speakers ORDER BY name").fetchall()
        return [SpeakerInfo(*r) for r in rows]

    def speaker_embedding(self, speaker: str) -> np.ndarray:
        """The speaker's model: the unit-length mean of the enrolment embeddings ``[D]``."""
        conn = self._connect(create=False)
        row = conn.execute("SELECT emb_sum, num_utts, fingerprint FROM speakers WHERE name = ?", (speaker,)).fetchone()
        if row is None:
            raise UnknownSpeakerError(f"{self.path}: no enrolled speaker {speaker!r}{self._known_hint(conn)}")
        self._check_fingerprint(speaker, row[2])
        return _unit(np.frombuffer(row[0], dtype=np.float64) / row[1])

    def _decide(self, score: float) -> tuple[float | None, float, str]:
        model = self._require_model("verify")
        llr = float(model.calibration.apply(np.array([score]))[0]) if model.calibration is not None else None
        if self.threshold is not None:
            return llr, float(self.threshold), "given"
        if llr is not None:
            return llr, bayes_threshold(self.p_target), f"Bayes threshold of the calibration at P_target={self.p_target:g}"
        if model.dev_threshold is not None:
            return None, model.dev_threshold, "dev-set EER threshold (dev_eval.json)"
        raise SpeakerDBError(
            f"{model.source}: no decision threshold: the experiment has neither calibration.json nor "
            "dev_eval.json; give one (--threshold)"
        )

    def verify(self, speaker: str, wav_path: str | os.PathLike) -> VerifyResult:
        """Score ``wav_path`` against ``speaker`` and decide accept/reject."""
        target = self.speaker_embedding(speaker)  # unknown speaker / model mismatch first, before any audio work
        model = self._require_model("verify")
        test = model.embed([wav_path])[0].astype(np.float64)
        score = float(np.dot(target, test))
        llr, threshold, source = self._decide(score)
        decision = llr if llr is not None else score
        return VerifyResult(speaker, str(wav_path), score, llr, threshold, source, bool(decision >= threshold))

    def identify(self, wav_path: str | os.PathLike, top_k: int = 5) -> list[Match]:
        """The ``top_k`` enrolled speakers closest to ``wav_path`` (highest cosine first)."""
        if top_k < 1:
            raise SpeakerDBError(f"top_k must be >= 1, got {top_k}")
        conn = self._connect(create=False)
        rows = conn.execute("SELECT name, emb_sum, num_utts, fingerprint FROM speakers ORDER BY name").fetchall()
        if not rows:
            raise SpeakerDBError(f"{self.path}: no speakers enrolled")
        for name, _, _, fp in rows:
            self._check_fingerprint(name, fp)
        model = self._require_model("identify")
        means = _unit(np.stack([np.frombuffer(r[1], dtype=np.float64) / r[2] for r in rows]))
        test = model.embed([wav_path])[0].astype(np.float64)
        scores = means @ test
        order = np.argsort(-scores, kind="stable")[:top_k]
        llrs = model.calibration.apply(scores[order]) if model.calibration is not None else None
        return [
            Match(rows[i][0], float(scores[i]), None if llrs is None else float(llrs[j])) for j, i in enumerate(order)
        ]


def _check_name(speaker: str) -> str:
    name = str(speaker).strip()
    if not name or any(ord(c) < 32 for c in name):
        raise SpeakerDBError(f"invalid speaker name {speaker!r}: must be non-empty, without control characters")
    return name
