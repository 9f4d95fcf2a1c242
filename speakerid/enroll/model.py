"""The model side of the speaker DB: an embedding extractor with what decisions need.

:class:`SpeakerModel` holds the extractor, its fingerprint, the calibration, the dev threshold,
the AS-norm cohort and the experiment dir (where a scoring backend finds its files, e.g.
``plda.npz``), and embeds whole files by the one embedding rule (:mod:`speakerid.inference`),
warning about files with too little speech.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from speakerid.enroll.rules import COHORT_TOP_K
from speakerid.scoring.backend import unit_vectors
from speakerid.enroll.records import SpeakerDBError
from speakerid.scoring.backend import BackendError, BackendResources, ScoringBackend, build_backend, default_backend_name

logger = logging.getLogger(__name__)

# Warn below these (benchmarks/bench_min_speech.py, benchmarks/results_min_speech.md: with the default
# model, a test side of 2 / 1.5 / 1 / 0.5 s of speech gave dev EER 5.3 / 6.3 / 11.0 / 20.6 %).
MIN_SPEECH_S = 1.5  # per file (a test clip, or one enrolment file)
MIN_ENROLL_SPEECH_S = 3.0  # over the files of one enrolment


@dataclass
class SpeakerModel:
    """An embedding extractor with what decisions need: fingerprint, calibration, dev threshold, cohort."""

    extractor: object  # speakerid.extractor.EmbeddingExtractor
    fingerprint: str
    calibration: object | None = None  # speakerid.scoring.calibrate.Calibration
    dev_threshold: float | None = None
    source: str = "<model>"
    cohort: np.ndarray | None = None  # [C, D] unit length, float32
    calibration_path: str = "calibration.json"
    policy: object = None  # speakerid.inference.SegmentPolicy; None = the default policy
    exp_dir: Path | None = None  # where scoring backends find their files (plda.npz)
    cohort_top_k: int = COHORT_TOP_K  # cohort scores per side for asnorm / csls (cohort.npz's ``top_k``)
    _backends: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_experiment(cls, exp_dir: str | os.PathLike, device: str = "cpu", backend: str = "auto") -> "SpeakerModel":
        """Load a model dir (model.pt + config.yaml) and, when present, calibration.json,
        dev_eval.json and cohort.npz (the readers of :mod:`speakerid.inference`); a packaged
        name (``"campplus"``, the default model, or ``"starter"``) is the packaged model."""
        from speakerid.experiment import (CALIBRATION_FILE, COHORT_FILE, read_calibration, read_cohort, read_cohort_top_k,
                                          read_dev_threshold, resolve_model_source)
        from speakerid.inference import SegmentPolicy, load_experiment
        from speakerid.extractor import model_fingerprint

        exp_dir = resolve_model_source(exp_dir)
        extractor, cfg = load_experiment(exp_dir, device=device, backend=backend)
        policy = SegmentPolicy.from_config(cfg)  # the embedding rule of `extract`, calibration and cohort
        model = cls(extractor, model_fingerprint(extractor, policy), source=str(exp_dir),
                    calibration_path=str(exp_dir / CALIBRATION_FILE), policy=policy, exp_dir=Path(exp_dir))
        model.calibration = read_calibration(exp_dir)
        model.dev_threshold = read_dev_threshold(exp_dir)
        cohort = read_cohort(exp_dir)
        if cohort is not None:
            model.cohort = check_cohort(exp_dir / COHORT_FILE, cohort[1], int(extractor.embed_dim))
            model.cohort_top_k = read_cohort_top_k(exp_dir)
        return model

    @classmethod
    def from_extractor(cls, extractor, calibration=None, dev_threshold: float | None = None,
                       cohort: np.ndarray | None = None, policy=None, cohort_top_k: int = COHORT_TOP_K) -> "SpeakerModel":
        from speakerid.extractor import model_fingerprint

        return cls(extractor, model_fingerprint(extractor, policy), calibration, dev_threshold,
                   cohort=None if cohort is None else unit_vectors(np.asarray(cohort, dtype=np.float32)), policy=policy,
                   cohort_top_k=int(cohort_top_k))

    def resources(self) -> BackendResources:
        """What this model's scoring backends are built from: its cohort and experiment dir."""
        return BackendResources(cohort=self.cohort, exp_dir=self.exp_dir, top_k=self.cohort_top_k, source=self.source)

    def default_scoring(self) -> str:
        """The backend this model scores with when nothing names one: the one its calibration was
        fitted on, else AS-norm with a cohort, else cosine (:func:`speakerid.scoring.backend.default_backend_name`)."""
        return default_backend_name(None if self.calibration is None else self.calibration.score, self.cohort is not None)

    def scoring_backend(self, name: str) -> ScoringBackend:
        """The scoring backend ``name`` built from this model's resources (cached)."""
        if name not in self._backends:
            try:
                self._backends[name] = build_backend(name, self.resources())
            except BackendError as e:
                raise SpeakerDBError(str(e)) from None
        return self._backends[name]

    def embed(self, wav_paths: Sequence[str | os.PathLike]) -> np.ndarray:
        """Length-normalised embeddings ``[N, D]`` (float32) of whole files; a file with less
        than MIN_SPEECH_S of speech after silence trimming gets a warning naming it."""
        return self.embed_with_speech(wav_paths)[0]

    def embed_with_speech(self, wav_paths: Sequence[str | os.PathLike]) -> tuple[np.ndarray, list[float]]:
        """:meth:`embed` and each file's seconds of speech (after :func:`speakerid.features.vad.trim_silence`)."""
        import torch

        from speakerid.audio import load_audio, native_sample_rate
        from speakerid.inference import SegmentPolicy, embed_waves
        from speakerid.features.vad import speech_seconds

        sr = int(self.extractor.sample_rate)
        for path in wav_paths:
            native = native_sample_rate(path)
            if native is not None and native < sr:
                logger.warning("%s: %d Hz audio, upsampled to the model's %d Hz: narrowband audio gets lower scores "
                               "(fewer accepts of the true speaker); record at %d Hz or more where you can",
                               path, native, sr, sr)
        waves = [load_audio(p, sr)[0] for p in wav_paths]
        speech = [speech_seconds(wave, sr) for wave in waves]
        for path, seconds in zip(wav_paths, speech):
            if seconds < MIN_SPEECH_S:
                logger.warning("%s: only %.2f s of speech after silence trimming (< %.1f s): its score is unreliable",
                               path, seconds, MIN_SPEECH_S)
        with torch.no_grad():
            emb = embed_waves(self.extractor, waves, self.policy or SegmentPolicy()).numpy().astype(np.float64)
        bad = np.flatnonzero(~np.isfinite(emb).all(axis=1))
        if bad.size:  # an overflowing model: refused before anything is stored or scored
            raise SpeakerDBError(f"{wav_paths[int(bad[0])]}: the model gives a NaN or infinite embedding for this file")
        return unit_vectors(emb).astype(np.float32), speech

    def embed_batches(self, wav_paths: Sequence[str | os.PathLike], batch_size: int = 64,
                      progress: bool = True) -> np.ndarray:
        """:meth:`embed` over ``batch_size`` files at a time, with a progress bar."""
        from tqdm import tqdm

        parts = []
        with tqdm(total=len(wav_paths), desc="embedding", unit="file", disable=not progress) as bar:
            for start in range(0, len(wav_paths), batch_size):
                parts.append(self.embed(wav_paths[start : start + batch_size]))
                bar.update(len(parts[-1]))
        return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def unit_rows(emb: np.ndarray, what: str, chunk: int = 65536) -> np.ndarray:
    """float32 unit-length copies of the rows of ``emb [N, D]`` (normalised in float64, as
    :meth:`SpeakerModel.embed` does); NaN/inf or zero rows are an error naming ``what``."""
    emb = np.asarray(emb)
    if emb.ndim != 2 or emb.shape[0] == 0 or emb.shape[1] == 0:
        raise SpeakerDBError(f"{what}: expected embeddings [N, D] with N, D >= 1, got shape {emb.shape}")
    out = np.empty(emb.shape, dtype=np.float32)
    for start in range(0, emb.shape[0], chunk):
        part = emb[start : start + chunk].astype(np.float64)
        norms = np.linalg.norm(part, axis=1, keepdims=True)
        bad = ~(np.isfinite(part).all(axis=1) & (norms[:, 0] > 0))
        if bad.any():
            raise SpeakerDBError(f"{what}: embedding row {start + int(np.flatnonzero(bad)[0])} has NaN/inf or zero values")
        out[start : start + chunk] = part / norms
    return out


def check_cohort(path: Path, emb: np.ndarray, embed_dim: int) -> np.ndarray:
    """The AS-norm cohort ``[C, D]`` of ``path`` made unit length; errors name the file."""
    if emb.shape[1] != embed_dim:
        raise SpeakerDBError(f"{path}: cohort embeddings of dimension {emb.shape[1]}, the model's are {embed_dim}")
    if emb.shape[0] < 2:
        raise SpeakerDBError(f"{path}: a cohort needs at least 2 embeddings, got {emb.shape[0]}")
    return unit_vectors(emb.astype(np.float32))


