"""Enrolment database (SQLite): enrol speakers, verify a claimed identity, identify a voice.

>>> from speakerid.enroll import SpeakerDB
>>> db = SpeakerDB("speakers.db", "campplus")           # a packaged name ("campplus", "starter") or an experiment dir
>>> db.enroll("alice", ["a1.wav", "a2.wav"])
>>> db.verify("alice", "test.wav").accept
>>> db.identify("test.wav", top_k=3).decision          # a speaker's name or "unknown"
Speaker model: the DB keeps EVERY enrolment embedding (length-normalised; the SQLite layer is
:mod:`speakerid.enroll.store`), so a speaker enrolled from a headset and from a phone call keeps
both. A test is scored against them by one of :data:`SCORE_RULES`: ``mean`` (cosine with the
unit mean of the references), ``max`` (the best reference) or ``topk`` (mean of the ``k``
best). The default, :data:`DEFAULT_SCORE_RULE` = ``mean``, is what
``benchmarks/bench_enroll_scoring.py`` measured best on held-out real speech
(benchmarks/results_enroll_scoring.txt: lowest pooled EER in 3 of its 4 settings, 3 or 5
enrolment files x cosine or AS-norm, and within 0.2 points in the fourth; max and top-2 never
clearly better).

Scoring backends (:mod:`speakerid.scoring.backend`): the decision scores with the backend
``scoring`` names, else the one the model's calibration was fitted on, else AS-norm when the
model dir has ``cohort.npz`` (top 300 cohort scores per side; with the max / topk rules each
reference is normalised, then the rule applies), else cosine; ``plda`` reads the model dir's
``plda.npz`` (``speakerid train-plda``). The cosine is always reported beside it.

Decisions: when the model has ``calibration.json`` (a linear score -> LLR map,
:mod:`speakerid.scoring.calibrate`) it is applied to the score kind it was fitted on (its
``score`` field: a backend's name; ``cosine`` in older files) and the threshold is
the Bayes threshold ``-logit(P_target)``; without a given P_target, the model's measured default
operating point (``default_p_target`` of its calibration, e.g. about 1 % false accepts on its dev
trials: :func:`speakerid.scoring.calibrate.with_operating_point`), else P_target 0.01. A calibration whose line
cannot reach that threshold over the plausible score range (it would reject, or accept,
everything) or whose slope is not positive is an error naming the file and what to do. Without
one: the cosine with the dev-set threshold of ``dev_eval.json``, else a given threshold. An explicit threshold
always wins and applies to the decision score (the LLR when calibrated). ``identify`` is open-set: the
best candidate is the answer only when its decision score reaches the threshold, else "unknown".

Scale: the speakers' scoring vectors (unit means, the ``mean`` rule) also live in a speaker
index beside the DB, ``<db>.index`` (:mod:`speakerid.enroll.index`: one memory-mapped float32
matrix with each speaker's AS-norm statistics, computed at enrolment), kept in step by every
writer inside its transaction and rebuilt from SQLite, with a logged message, when it is
missing or stale (:mod:`speakerid.enroll.sync`). ``identify`` ranks every speaker with one
matrix product and a partition, then scores the best ``top_k + RESCORE_MARGIN`` exactly from
their rows, so its answer and scores are those of ``identify(..., exact=True)`` (every speaker
read from SQLite; also the path of backends the index cannot rank: :data:`INDEX_RANKS`). With
``search="ann"`` (or ``"auto"`` on a large DB, faiss installed) binary codes beside the index
(sign random projections scanned by faiss) propose the candidates instead of the matrix product (:mod:`speakerid.enroll.ann`). ``verify``
reads one speaker by primary key. :meth:`SpeakerDB.add_many` (``enroll --batch FILE``) and
:meth:`SpeakerDB.add_embeddings` enrol many in one transaction.

Safety: every speaker row stores the model fingerprint (:func:`speakerid.extractor.model_fingerprint`);
scoring with another model raises :class:`ModelMismatchError`. Enrolment embeds all audio
first, then writes in one transaction (all or nothing, also under SIGKILL). Audio with less
than :data:`MIN_SPEECH_S` of speech after silence trimming (:func:`speakerid.features.vad.trim_silence`)
is used, with a warning naming the file; so is an enrolment whose files hold less than
:data:`MIN_ENROLL_SPEECH_S` of speech together.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from speakerid.enroll.decision import (
    DEFAULT_P_TARGET,
    Decision,
    IdentifyResult,
    Match,
    VerifyResult,
    bayes_threshold,
)
from speakerid.enroll.inputs import check_name, check_new_files
from speakerid.enroll.ann import ANN_MIN_SPEAKERS, Searcher
from speakerid.enroll.index import ProbeStats
from speakerid.enroll.model import MIN_ENROLL_SPEECH_S, SpeakerModel, unit_rows
from speakerid.enroll.rules import COHORT_TOP_K, DEFAULT_SCORE_RULE, DEFAULT_SCORE_TOP_K, SCORE_RULES, Scores, score_pairs
from speakerid.scoring.backend import BACKENDS, unit_vectors
from speakerid.enroll.records import Batch, SpeakerDBError, SpeakerInfo, SpeakerRefs
from speakerid.enroll.store import SpeakerStore

logger = logging.getLogger(__name__)

# identify through the index ranks this many candidates more than asked, then scores them all
# exactly (float64, from their SQLite rows): float32 near-ties cannot change the answer
RESCORE_MARGIN = 16
# the scoring backends the speaker index ranks by (cosine, and AS-norm / CSLS from the cohort
# statistics it stores); identify with any other backend scores every speaker exactly
INDEX_RANKS = ("cosine", "asnorm", "csls")


class ModelMismatchError(SpeakerDBError):
    """The DB's speakers were enrolled with a different model than the one given."""


class SpeakerDB:
    """A speaker enrolment database in one SQLite file.

    ``model``: a model dir (path or packaged name, e.g. ``"campplus"``), a :class:`SpeakerModel`, an
    ``EmbeddingExtractor``, or None (then only :meth:`list`, :meth:`info` and :meth:`remove`
    work). ``threshold`` overrides the decision threshold; ``p_target`` sets the Bayes threshold
    of calibrated models (None: the model's default operating point, else 0.01); ``score_rule``/``score_top_k`` choose the rule of :data:`SCORE_RULES`;
    ``scoring`` names the scoring backend (:data:`speakerid.scoring.backend.BACKENDS`; None: the model's). ``timeout``:
    seconds a writer waits for another one. ``search``: ``exact``, ``ann`` or ``auto`` (ann from
    ``ann_min_speakers`` speakers when faiss is installed): :mod:`speakerid.enroll.ann`."""

    def __init__(
        self,
        path: str | os.PathLike,
        model: "str | os.PathLike | SpeakerModel | object | None" = None,
        *,
        p_target: float | None = None,
        threshold: float | None = None,
        score_rule: str = DEFAULT_SCORE_RULE,
        score_top_k: int = DEFAULT_SCORE_TOP_K,
        scoring: str | None = None,
        timeout: float = 60.0,
        device: str = "cpu", backend: str = "auto",
        search: str = "auto", ann_min_speakers: int = ANN_MIN_SPEAKERS,
    ) -> None:
        self.path, self.p_target = Path(path), None if p_target is None else float(p_target)
        if self.p_target is not None:
            bayes_threshold(self.p_target)  # validates
        if threshold is not None and p_target is not None:
            raise SpeakerDBError("give a threshold or a p_target (--threshold / --p-target), not both: "
                                 "the threshold replaces the Bayes threshold that p_target sets")
        if threshold is not None and not np.isfinite(threshold):
            raise SpeakerDBError(f"threshold must be a finite number, got {threshold}")
        if score_rule not in SCORE_RULES:
            raise SpeakerDBError(f"unknown score rule {score_rule!r}; choose from {', '.join(SCORE_RULES)}")
        if int(score_top_k) < 1:
            raise SpeakerDBError(f"score top-k must be >= 1, got {score_top_k}")
        if scoring is not None and scoring not in BACKENDS:
            raise SpeakerDBError(f"unknown scoring backend {scoring!r}; choose from {', '.join(BACKENDS)}")
        self.scoring, self.threshold = scoring, threshold
        self.score_rule, self.score_top_k = score_rule, int(score_top_k)
        self.store = SpeakerStore(self.path, timeout)
        self._index = None  # the speaker index last used (speakerid.enroll.index.SpeakerIndex)
        self._cohort_key: str | None = None
        self.searcher = Searcher(self.path, search, ann_min_speakers)  # exact matrix product or the ANN codes
        if model is None or isinstance(model, SpeakerModel):
            self.model = model
        elif isinstance(model, (str, os.PathLike)):
            self.model = SpeakerModel.from_experiment(model, device=device, backend=backend)
        else:
            self.model = SpeakerModel.from_extractor(model)

    def close(self) -> None:
        self.store.close()

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
        speaker = check_name(speaker)
        if not wav_paths:
            raise SpeakerDBError(f"enrolling {speaker!r}: no audio files given")
        model = self._require_model("enroll")
        check_new_files(self.store, [(speaker, p) for p in wav_paths])
        emb, speech = model.embed_with_speech(wav_paths)  # all audio is read and embedded BEFORE the transaction
        if sum(speech) < MIN_ENROLL_SPEECH_S:
            logger.warning("enrolling %r: only %.1f s of speech in %d file(s) (%s; < %.1f s): its verify decisions are "
                           "unreliable; enrol more audio", speaker, sum(speech), len(wav_paths),
                           ", ".join(str(p) for p in wav_paths[:3]) + (", ..." if len(wav_paths) > 3 else ""),
                           MIN_ENROLL_SPEECH_S)
        paths = [str(Path(p).resolve()) for p in wav_paths]
        self.store.add(speaker, model.fingerprint, paths, emb, self._write_check(f"enrolling {speaker!r}"), self._index_hook())
        logger.info("%s: enrolled %d file(s) for %r", self.path, len(paths), speaker)
        return self.info(speaker)

    def add_many(self, pairs: Iterable[tuple[str, str | os.PathLike]], batch_size: int = 64,
                 progress: bool = True) -> dict:
        """Enrol many ``(speaker, audio file)`` pairs in ONE transaction (all or nothing): every
        file is embedded first, ``batch_size`` at a time with a progress bar, then written."""
        pairs = [(check_name(s), p) for s, p in pairs]
        if not pairs:
            raise SpeakerDBError("batch enrolment: no (speaker, audio file) pairs given")
        model = self._require_model("enroll")
        check_new_files(self.store, pairs)
        emb = model.embed_batches([p for _, p in pairs], batch_size, progress)
        return self.add_embeddings([s for s, _ in pairs], emb, [str(Path(p).resolve()) for _, p in pairs])

    def add_embeddings(self, speakers: Sequence[str], embeddings: np.ndarray,
                       paths: Sequence[str] | None = None, in_transaction=None) -> dict:
        """Enrol precomputed embeddings of this model in ONE transaction: row ``i`` of
        ``embeddings [N, D]`` (made unit length) is an enrolment of ``speakers[i]`` (from
        ``paths[i]``, default ``"<precomputed>"``). Returns ``{"speakers": S, "embeddings": N}``.
        ``in_transaction(conn)``, when given, runs inside the write transaction before COMMIT
        (a caller's own rows in the same file change with the speakers' or not at all)."""
        model = self._require_model("enroll")
        emb = unit_rows(embeddings, "enrolling precomputed embeddings")
        if len(speakers) != emb.shape[0] or (paths is not None and len(paths) != emb.shape[0]):
            raise SpeakerDBError(f"enrolling precomputed embeddings: {emb.shape[0]} rows, {len(speakers)} speaker names"
                                 f"{'' if paths is None else f', {len(paths)} paths'}")
        dims = {int(d) for d in (getattr(model.extractor, "embed_dim", None),
                                 None if model.cohort is None else model.cohort.shape[1]) if d is not None}
        if dims and dims != {emb.shape[1]}:
            raise SpeakerDBError(f"enrolling precomputed embeddings: dimension {emb.shape[1]}, {model.source} gives {min(dims)}")
        batch = Batch.of_rows([check_name(s) for s in speakers],
                              ["<precomputed>"] * emb.shape[0] if paths is None else [str(p) for p in paths], emb)
        self.store.add_many(model.fingerprint, batch, self._write_check("enrolling a batch"), self._index_hook(in_transaction))
        logger.info("%s: enrolled %d embedding(s) of %d speaker(s)", self.path, emb.shape[0], len(batch.names))
        return {"speakers": len(batch.names), "embeddings": int(emb.shape[0])}

    def _write_check(self, what: str):
        """``check_model`` of a write: the DB holds speakers of another model (it always raises)."""
        def check(name: str, fingerprint: str) -> None:
            model = self._require_model("enroll")
            raise ModelMismatchError(
                f"{self.path}: {what}: the DB's speakers were enrolled with another model (e.g. {name!r}, fingerprint "
                f"{fingerprint[:12]}), not {model.source} ({model.fingerprint[:12]}); use that model or another DB")
        return check

    def remove(self, speaker: str, in_transaction=None) -> None:
        """Delete ``speaker`` and its stored embeddings; :class:`UnknownSpeakerError` when absent.
        ``in_transaction(conn)``: as in :meth:`add_embeddings`."""
        self.store.delete(speaker, self._index_hook(in_transaction))

    def _index_hook(self, in_transaction=None):
        from speakerid.enroll.sync import writer_hook

        m = self.model
        hook = writer_hook(self.store, None if m is None else m.fingerprint, None if m is None else m.cohort,
                           COHORT_TOP_K if m is None else m.cohort_top_k)
        if in_transaction is None:
            return hook

        def both(conn, *args):
            hook(conn, *args)
            in_transaction(conn)

        return both

    # ---- reading
    def info(self, speaker: str) -> SpeakerInfo:
        return self.store.info(speaker)

    def list(self) -> list[SpeakerInfo]:
        """All enrolled speakers, sorted by name."""
        return self.store.speakers()

    def references(self, speakers: Sequence[str] | None = None) -> list[SpeakerRefs]:
        """Checked enrolment embeddings of ``speakers`` (all when None), fingerprints matched to the model."""
        refs = self.store.references(speakers)
        for r in refs:
            self._check_fingerprint(r.name, r.fingerprint)
        return refs

    def speaker_embedding(self, speaker: str) -> np.ndarray:
        """The unit-length mean of the speaker's enrolment embeddings ``[D]``."""
        return unit_vectors(self.references([speaker])[0].refs.mean(axis=0))

    def score_references(self, speaker: str, test_emb: np.ndarray, rule: str | None = None) -> Scores:
        """Raw scores (floats) of one unit test embedding against ``speaker`` by ``rule``."""
        model = self._require_model("scoring")
        backend = model.scoring_backend(self.scoring or model.default_scoring())
        s = score_pairs([self.references([speaker])[0].refs], np.asarray(test_emb)[None, :], [0], [0],
                        rule or self.score_rule, self.score_top_k, backend)
        return Scores(float(s.cosine[0]), s.kind, None if s.backend is None else float(s.backend[0]))

    def decision(self) -> Decision:
        """The decision rule of this model and settings, or a SpeakerDBError saying what is missing.

        The scoring backend is ``scoring`` when given, else the model's (:meth:`SpeakerModel.default_scoring`:
        the one its calibration was fitted on, else AS-norm with a cohort, else cosine). A calibration
        applies only to scores of the backend it was fitted on."""
        from speakerid.scoring.calibrate import decision_problem

        model = self._require_model("a decision")
        kind = self.scoring or model.default_scoring()
        try:
            backend = model.scoring_backend(kind)  # an error naming the missing file (cohort.npz, plda.npz)
        except SpeakerDBError as e:
            if self.scoring is None and model.calibration is not None:
                raise SpeakerDBError(f"{model.calibration_path}: fitted on {kind} scores, but {e}; "
                                     "add it or refit the calibration on cosine scores") from None
            raise
        cal = model.calibration if model.calibration is not None and model.calibration.score == kind else None
        if cal is not None and self.threshold is not None and not cal.a > 0:
            logger.warning("%s: degenerate calibration (slope %.3g) ignored: --threshold applies to the raw %s score",
                           model.calibration_path, cal.a, cal.score)
            return Decision(kind, None, float(self.threshold), "given", backend)
        if cal is not None:
            if self.threshold is not None:
                return Decision(kind, cal, float(self.threshold), "given", backend)
            p_target, why = self._p_target(cal)
            problem = decision_problem(cal, p_target, model.calibration_path)
            if problem:
                raise SpeakerDBError(problem)
            return Decision(kind, cal, bayes_threshold(p_target),
                            f"Bayes threshold of the calibration at P_target={p_target:.4g}{why}", backend)
        if self.threshold is not None:
            return Decision(kind, None, float(self.threshold), "given", backend)
        if kind == "cosine" and model.dev_threshold is not None:
            return Decision(kind, None, model.dev_threshold, "dev-set EER threshold (dev_eval.json)", backend)
        fitted = "" if model.calibration is None else f" (its calibration.json is for {model.calibration.score} scores)"
        raise SpeakerDBError(
            f"{model.source}: no decision threshold for {kind} scores{fitted}: the model has no calibration.json"
            f" for them{'' if kind != 'cosine' else ' nor dev_eval.json'}; give one (--threshold)"
        )

    def _p_target(self, cal) -> tuple[float, str]:
        """The prior of the Bayes threshold: the one given, else the model's measured default
        operating point (``calibration.json``'s ``default_p_target``), else DEFAULT_P_TARGET."""
        if self.p_target is not None:
            return self.p_target, ""
        if cal.default_p_target is not None:
            fa = f", about {cal.target_fa * 100:g}% false accepts on its dev trials" if cal.target_fa else ""
            return cal.default_p_target, f": the model's default operating point{fa}"
        return DEFAULT_P_TARGET, ""

    def verify(self, speaker: str, wav_path: str | os.PathLike) -> VerifyResult:
        """Score ``wav_path`` against ``speaker`` and decide accept/reject."""
        refs = self.references([speaker])  # unknown speaker / model mismatch first, before any audio work
        self.decision()
        model = self._require_model("verify")
        return self.verify_embedding(speaker, model.embed([wav_path])[0], str(wav_path), refs)

    def verify_embedding(self, speaker: str, embedding: np.ndarray, test: str = "<embedding>",
                         refs: list[SpeakerRefs] | None = None) -> VerifyResult:
        """:meth:`verify` of a test embedding ``[D]`` of this model (made unit length); the
        speaker's rows are read by primary key."""
        refs = refs or self.references([speaker])
        rule = self.decision()
        emb = unit_rows(np.asarray(embedding).reshape(1, -1), f"verifying {test}")
        s = score_pairs([refs[0].refs], emb, [0], [0], self.score_rule, self.score_top_k, rule.backend)
        dec, llr = rule.apply(s)
        return VerifyResult(
            speaker, test, float(s.cosine[0]), None if llr is None else float(llr[0]), rule.threshold,
            rule.source, bool(dec[0] >= rule.threshold), None if s.asnorm is None else float(s.asnorm[0]),
            rule.kind, self.score_rule, float(dec[0]), None if s.backend is None else float(s.backend[0]),
        )

    def verify_trials(self, trials: str | os.PathLike, output: str | os.PathLike,
                      decisions: str | os.PathLike | None = None, progress: bool = True) -> dict:
        """Score a list of (enrolled speaker, audio file) trials; see :mod:`speakerid.enroll.trials`."""
        from speakerid.enroll.trials import verify_trial_list

        return verify_trial_list(self, trials, output, decisions, progress)

    def identify(self, wav_path: str | os.PathLike, top_k: int = 5, exact: bool = False) -> IdentifyResult:
        """Open-set identification: the ``top_k`` closest enrolled speakers and the answer
        (the best one when it reaches the threshold, else ``"unknown"``). See :meth:`identify_embedding`."""
        if top_k < 1:
            raise SpeakerDBError(f"top_k must be >= 1, got {top_k}")
        model = self._require_model("identify")
        if exact or self.score_rule != "mean" or self.decision().kind not in INDEX_RANKS:
            self._exact_refs()  # an empty DB or another model's speakers: an error before any audio work
        else:
            with self.store.read_transaction(" identifying") as conn:
                self._current_index(conn)
        self.decision()
        return self.identify_embedding(model.embed([wav_path])[0], top_k, exact, str(wav_path))

    def identify_embedding(self, embedding: np.ndarray, top_k: int = 5, exact: bool = False,
                           test: str = "<embedding>") -> IdentifyResult:
        """Identify a test embedding ``[D]`` of this model (made unit length).

        With the ``mean`` rule (the default) the speaker index beside the DB
        (:mod:`speakerid.enroll.index`) ranks every speaker in one matrix product (AS-norm
        statistics stored at enrolment) and the best ``top_k + RESCORE_MARGIN`` are scored
        exactly from their rows, so the answer equals the ``exact`` path's (every speaker read
        from SQLite and scored; with ``search`` ann, only the codes' candidates are ranked, so
        recall may differ, not scores); ``max`` / ``topk`` rules always take the exact path."""
        if top_k < 1:
            raise SpeakerDBError(f"top_k must be >= 1, got {top_k}")
        model = self._require_model("identify")
        emb = unit_rows(np.asarray(embedding).reshape(1, -1), f"identifying {test}")
        rule = self.decision()
        if exact or self.score_rule != "mean" or rule.kind not in INDEX_RANKS:
            return self._ranked(self._exact_refs(), emb, top_k, rule, test)
        with self.store.read_transaction(" identifying") as conn:
            index = self._current_index(conn)
            stats = None
            if rule.kind in ("asnorm", "csls"):
                from speakerid.scoring.norm import cohort_statistics

                mu, sd = cohort_statistics(emb, model.cohort, min(model.cohort_top_k, model.cohort.shape[0]))
                stats = ProbeStats(rule.kind, float(mu[0]), float(sd[0]))
            rowids = index.rowids[self.searcher.rank(index, emb[0], top_k + RESCORE_MARGIN, stats)].tolist()
            names = self.store.names_of(conn, rowids)
            if len(names) != len(rowids):
                raise SpeakerDBError(f"{self.path}: the speaker index names speakers the DB does not have; "
                                     f"delete {index.path} (it is rebuilt)")
            refs = self.references(sorted(names[r] for r in rowids))
        return self._ranked(refs, emb, top_k, rule, test)

    def _exact_refs(self) -> list[SpeakerRefs]:
        if not (refs := self.references()):
            raise SpeakerDBError(f"{self.path}: no speakers enrolled")
        return refs

    def _current_index(self, conn):
        """The index of the DB's committed state (rebuilt when stale); errors when the DB is empty
        or of another model."""
        from speakerid.enroll.sync import current_index

        model = self._require_model("identify")
        if self._cohort_key is None:
            from speakerid.enroll.index import cohort_key

            self._cohort_key = cohort_key(model.cohort, model.cohort_top_k)
        index = current_index(self.store, conn, model.cohort, self._index, self._cohort_key, model.cohort_top_k)
        if index.n == 0:
            raise SpeakerDBError(f"{self.path}: no speakers enrolled")
        if index.header.fingerprint != model.fingerprint:
            other = self.store.any_other_fingerprint(conn, model.fingerprint)
            if other is not None:
                self._check_fingerprint(*other)
        self._index = index
        return index

    def _ranked(self, refs: list[SpeakerRefs], test: np.ndarray, top_k: int, rule: Decision, name: str) -> IdentifyResult:
        """Score ``test [1, D]`` against ``refs`` (in name order) and rank them by decision score."""
        s = score_pairs([r.refs for r in refs], test, np.arange(len(refs)), np.zeros(len(refs), dtype=np.int64),
                        self.score_rule, self.score_top_k, rule.backend)
        dec, llr = rule.apply(s)
        order = np.argsort(-dec, kind="stable")[:top_k]
        cands = [
            Match(refs[i].name, float(s.cosine[i]), None if llr is None else float(llr[i]),
                  None if s.asnorm is None else float(s.asnorm[i]), float(dec[i]), bool(dec[i] >= rule.threshold),
                  None if s.backend is None else float(s.backend[i]))
            for i in order
        ]
        answer = cands[0].speaker if cands[0].accept else "unknown"
        return IdentifyResult(name, answer, cands, rule.threshold, rule.source, rule.kind, self.score_rule)
