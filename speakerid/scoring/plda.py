"""Two-covariance PLDA: a log-likelihood-ratio scoring backend for speaker embeddings.

Model (Ioffe 2006, "Probabilistic linear discriminant analysis", ECCV; the "two-covariance
model" of Sizov, Lee & Kinnunen 2014, "Unifying probabilistic linear discriminant analysis
variants in biometric authentication", S+SSPR, eq. 5): a pre-processed embedding of speaker s is

    x = m + y_s + e,    y_s ~ N(0, B)  (between-class),    e ~ N(0, W)  (within-class).

Pre-processing, as Kaldi's x-vector recipes and SpeechBrain do (order fixed):

1. centring: subtract the mean of the training embeddings;
2. optional LDA to ``lda_dim`` (generalised eigenproblem ``S_b v = lambda S_w v`` of the
   between- and within-class scatter, top ``lda_dim`` directions, scaled so ``V' S_w V = I``);
3. length normalisation (Garcia-Romero & Espy-Wilson 2011, "Analysis of i-vector length
   normalization in speaker recognition systems", Interspeech): every vector is rescaled to
   norm ``sqrt(d)`` (d the dimension after LDA), Kaldi's ``ivector-normalize-length``.

Training (Kaldi's ``PldaEstimator``, ``ivector-compute-plda``): EM on the class means and the
within-class scatter, a fixed number of iterations (default 10), one class per speaker; a
speaker with one utterance contributes to the EM through its mean only (it informs B + W, not W
alone). Unlike Kaldi (which starts at B = W = I) the EM starts from the moment estimates
(W: pooled within-class scatter; B: covariance of the class means minus W, eigenvalues floored),
so a few iterations suffice. The result is deterministic (no random initialisation).

Scoring: B and W are diagonalised simultaneously (Kaldi's ``Plda::ComputeNormalizingTransform``
+ eigendecomposition): ``A W A' = I``, ``A B A' = diag(psi)``, u = A (x - m). For an enrolment
vector ``ubar`` that is the mean of n utterances and a test vector ``t`` (Kaldi's
``Plda::LogLikelihoodRatio``; Ioffe 2006 eq. 4; Sizov et al. 2014 eq. 12), per dimension i

    same speaker:      t_i ~ N( n psi_i / (n psi_i + 1) * ubar_i,  1 + psi_i / (n psi_i + 1) )
    different speaker: t_i ~ N( 0,  1 + psi_i )

and the score is the log-ratio of the two densities. For n = 1 this is exactly
``log N([e; t]; 0, [[B+W, B], [B, B+W]]) - log N(e; 0, B+W) - log N(t; 0, B+W)``; for n > 1 it
is the exact LLR of all n + 1 vectors, since the mean is a sufficient statistic for y.

With ``normalize_length`` (default, Kaldi's ``PldaConfig::normalize_length``) u is rescaled in
the diagonal space before scoring so that ``sum_i u_i^2 / (psi_i + 1/n) = d``
(``Plda::GetNormalizationFactor``), n = 1 for test vectors.

Vectorised: ``score_matrix`` is two matrix products per block of test rows
(``[r, q] @ [t, t**2]'``), no Python loop over enrolment or test rows.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from speakerid.fileio import atomic_path
from speakerid.scoring.lda import class_stats, joint_diagonaliser, lda_transform, length_normalise_sqrt_dim

__all__ = ["PLDA", "DEFAULT_ITERS"]

DEFAULT_ITERS = 10
_FORMAT = "speakerid-plda-1"
_CHUNK_ROWS = 1 << 15  # test rows per block in score_matrix (2 x 32768 x 2d float64: 200 MiB at d=192)


def _sym(a: np.ndarray) -> np.ndarray:
    return 0.5 * (a + a.T)


def _floor_eig(a: np.ndarray, floor: float) -> np.ndarray:
    """``a`` with its eigenvalues raised to at least ``floor`` (a symmetric PD result)."""
    w, v = np.linalg.eigh(_sym(a))
    return _sym((v * np.maximum(w, floor)) @ v.T)


def _em(x: np.ndarray, classes: np.ndarray, n_classes: int, iters: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean [d], between B [d, d], within W [d, d]) by Kaldi's PLDA EM (``PldaEstimator``).

    E-step per class k with n_k examples and centred mean m_k: the posterior of y_k is
    ``N(w_k, C_k)``, ``C_k = (B^-1 + n_k W^-1)^-1``, ``w_k = C_k n_k W^-1 m_k``. M-step:
    ``B = mean_k (C_k + w_k w_k')``; ``W = (S + sum_k n_k (C_k + (m_k - w_k)(m_k - w_k)')) / N``
    with S the within-class scatter about the class means. Classes are grouped by n_k, so the
    d x d inversions are one per distinct class size, not one per class.
    """
    counts, means, scatter = class_stats(x, classes, n_classes)
    mean = means.mean(axis=0)  # Kaldi: the mean of the class means
    means = means - mean
    d = x.shape[1]
    n_total = counts.sum()
    multi = counts >= 2
    within = scatter / (counts[multi] - 1).sum()
    trace_floor = 1e-6 * np.trace(within) / d
    between = _floor_eig(np.cov(means.T, bias=True).reshape(d, d) - within * np.mean(1.0 / counts), trace_floor)
    sizes, size_index = np.unique(counts, return_inverse=True)
    for _ in range(iters):
        b_inv = np.linalg.inv(between)
        w_inv = np.linalg.inv(within)
        b_stats = np.zeros((d, d))
        w_stats = scatter.copy()
        for j, n in enumerate(sizes):
            members = size_index == j
            mixed = _sym(np.linalg.inv(b_inv + n * w_inv))
            m = means[members]
            w = (n * m @ w_inv) @ mixed  # rows: posterior means of y (mixed, w_inv symmetric)
            k = m.shape[0]
            diff = m - w
            b_stats += k * mixed + w.T @ w
            w_stats += n * (k * mixed + diff.T @ diff)
        between = _sym(b_stats / n_classes)
        within = _sym(w_stats / n_total)
    return mean, between, within


@dataclass(frozen=True, eq=False)
class PLDA:
    """A trained two-covariance PLDA model with its pre-processing (see the module docstring).

    ``mean`` [D]: training mean subtracted first; ``lda`` [D, d]: projection (identity when no
    LDA); ``length_norm``: rescale to ``sqrt(d)`` after LDA; ``plda_mean`` [d], ``between`` and
    ``within`` [d, d]: the PLDA model in the pre-processed space; ``normalize_length``: Kaldi's
    length normalisation in the diagonal space before scoring. ``transform_`` [d, d] and
    ``psi`` [d] are derived (``transform_ W transform_' = I``, ``... B ... = diag(psi)``).
    """

    mean: np.ndarray
    lda: np.ndarray
    plda_mean: np.ndarray
    between: np.ndarray
    within: np.ndarray
    length_norm: bool = True
    normalize_length: bool = True
    info: dict = field(default_factory=dict)
    transform_: np.ndarray = field(init=False, repr=False)
    psi: np.ndarray = field(init=False, repr=False)
    _offset: np.ndarray = field(init=False, repr=False)
    _identity_lda: bool = field(init=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("mean", "lda", "plda_mean", "between", "within"):
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=np.float64))
        problem = _shape_problem(self.mean, self.lda, self.plda_mean, self.between, self.within)
        if problem:
            raise ValueError(f"PLDA parameters: {problem}")
        a, psi = joint_diagonaliser(self.between, self.within)
        object.__setattr__(self, "transform_", a)
        object.__setattr__(self, "psi", np.maximum(psi, 0.0))
        object.__setattr__(self, "_offset", a @ self.plda_mean)
        d_in, d = self.lda.shape
        object.__setattr__(self, "_identity_lda", d_in == d and np.array_equal(self.lda, np.eye(d)))

    @property
    def dim(self) -> int:
        """Dimension of the input embeddings."""
        return int(self.mean.shape[0])

    @property
    def plda_dim(self) -> int:
        """Dimension of the PLDA space (after LDA)."""
        return int(self.lda.shape[1])

    @classmethod
    def fit(
        cls,
        embeddings: np.ndarray,
        labels: np.ndarray | list,
        lda_dim: int | None = None,
        iters: int = DEFAULT_ITERS,
        length_norm: bool = True,
        normalize_length: bool = True,
    ) -> "PLDA":
        """Train on ``embeddings`` [N, D] with speaker ``labels`` [N] (any hashable ids).

        Refuses (ValueError, one line): non-finite values, fewer than 2 speakers, no speaker with
        2+ utterances, ``lda_dim`` >= number of speakers or > D.
        """
        x = np.asarray(embeddings, dtype=np.float64)
        labels = np.asarray(labels)
        if x.ndim != 2 or x.shape[0] == 0:
            raise ValueError(f"PLDA training: embeddings must be a non-empty [N, D] array, got shape {x.shape}")
        if labels.shape != (x.shape[0],):
            raise ValueError(f"PLDA training: {labels.size} labels for {x.shape[0]} embeddings")
        bad = ~np.isfinite(x).all(axis=1)
        if bad.any():
            raise ValueError(f"PLDA training: {int(bad.sum())} embedding(s) have non-finite values (NaN/inf)")
        if iters < 0:
            raise ValueError(f"PLDA training: iters must be >= 0, got {iters}")
        speakers, classes = np.unique(labels, return_inverse=True)
        classes = classes.ravel()
        n_spk = speakers.size
        counts = np.bincount(classes, minlength=n_spk)
        if n_spk < 2:
            raise ValueError(f"PLDA training: needs at least 2 speakers, got {n_spk}")
        n_multi = int((counts >= 2).sum())
        if n_multi == 0:
            raise ValueError(f"PLDA training: none of the {n_spk} speakers has 2+ utterances (no within-speaker variability)")
        dim = x.shape[1]
        if lda_dim is not None and not (1 <= lda_dim < n_spk and lda_dim <= dim):
            raise ValueError(f"PLDA training: lda_dim {lda_dim} must be in [1, {min(n_spk - 1, dim)}] "
                             f"(< {n_spk} speakers and <= dimension {dim})")
        mean = x.mean(axis=0)
        x = x - mean
        lda = np.eye(dim) if lda_dim is None else lda_transform(x, classes, n_spk, lda_dim)
        y = x @ lda
        if length_norm:
            y = length_normalise_sqrt_dim(y)
        if int((counts[counts >= 2] - 1).sum()) < y.shape[1]:
            raise ValueError(f"PLDA training: {int((counts[counts >= 2] - 1).sum())} within-speaker degrees of freedom "
                             f"for dimension {y.shape[1]}: the within-class covariance would be singular")
        plda_mean, between, within = _em(y, classes, n_spk, iters)
        info = {"n_utterances": int(x.shape[0]), "n_speakers": int(n_spk), "n_speakers_multi": n_multi,
                "n_utterances_multi": int(counts[counts >= 2].sum()), "iters": int(iters)}
        return cls(mean, lda, plda_mean, between, within, length_norm, normalize_length, info)

    def preprocess(self, x: np.ndarray) -> np.ndarray:
        """Centre, LDA, length-normalise: raw embeddings [N, D] -> PLDA input space [N, d] (float64)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"PLDA: expected embeddings of shape [N, {self.dim}], got {x.shape}")
        y = x - self.mean
        if not self._identity_lda:
            y = y @ self.lda
        return length_normalise_sqrt_dim(y) if self.length_norm else y

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Raw embeddings [N, D] -> the diagonal PLDA space [N, d] (``A (preprocess(x) - plda_mean)``).

        For repeated scoring of the same test set, transform it once and call :meth:`llr`.
        """
        u = self.preprocess(x) @ self.transform_.T
        u -= self._offset
        return u

    def speaker_vector(self, utterances: np.ndarray) -> tuple[np.ndarray, int]:
        """(mean of the transformed utterance embeddings [d], n): the enrolment input of :meth:`llr`."""
        u = self.transform(np.atleast_2d(utterances))
        return u.mean(axis=0), u.shape[0]

    def _kaldi_dot(self, u: np.ndarray, n: np.ndarray, uu: np.ndarray | None = None) -> np.ndarray:
        """``sum_i u_i^2 / (psi_i + 1/n)`` per row (Kaldi's ``GetNormalizationFactor``)."""
        uu = u * u if uu is None else uu
        if np.all(n == n[0]):
            return uu @ (1.0 / (self.psi + 1.0 / n[0]))
        return np.einsum("ij,ij->i", uu, 1.0 / (self.psi[None, :] + 1.0 / n[:, None]))

    def _kaldi_factor(self, dot: np.ndarray) -> np.ndarray:
        """The length-normalisation factor ``sqrt(d / dot)`` (1 where dot is 0 or it is off)."""
        if not self.normalize_length:
            return np.ones_like(dot)
        ok = dot > 0
        return np.where(ok, np.sqrt(self.plda_dim / np.where(ok, dot, 1.0)), 1.0)

    def llr(self, enroll: np.ndarray, test: np.ndarray, n_enroll: np.ndarray | None = None) -> np.ndarray:
        """Log-likelihood ratios [E, T] (float64) of vectors ALREADY in the diagonal space.

        ``enroll`` [E, d]: each row the mean of ``n_enroll[e]`` transformed utterances (default 1);
        ``test`` [T, d]: single utterances. See the module docstring for the formula. With
        ``normalize_length`` the test factor f is applied to the two terms (f t.r + f^2 t^2.q)
        rather than to a scaled copy of ``test``.
        """
        enroll = np.atleast_2d(np.asarray(enroll, dtype=np.float64))
        test = np.atleast_2d(np.asarray(test, dtype=np.float64))
        d = self.plda_dim
        if enroll.shape[1] != d or test.shape[1] != d:
            raise ValueError(f"PLDA: expected vectors of dimension {d}, got enroll {enroll.shape}, test {test.shape}")
        n = _check_counts(n_enroll, enroll.shape[0])
        psi = self.psi
        if self.normalize_length:
            enroll = enroll * self._kaldi_factor(self._kaldi_dot(enroll, n))[:, None]
        npsi = n[:, None] * psi[None, :]
        a = npsi / (npsi + 1.0)                      # [E, d] shrinkage of the enrolment mean
        v = 1.0 + psi[None, :] / (npsi + 1.0)        # [E, d] same-speaker predictive variance
        r = a * enroll / v                           # linear term in t_i
        q = -0.5 * (1.0 / v - 1.0 / (1.0 + psi[None, :]))  # quadratic term in t_i^2
        const = -0.5 * (np.log(v).sum(axis=1) - np.log1p(psi).sum()) - 0.5 * ((a * enroll) ** 2 / v).sum(axis=1)
        out = np.empty((enroll.shape[0], test.shape[0]))
        ones = np.ones(1)
        for start in range(0, test.shape[0], _CHUNK_ROWS):
            t = test[start : start + _CHUNK_ROWS]
            tt = t * t
            f = self._kaldi_factor(self._kaldi_dot(t, ones, tt)) if self.normalize_length else None
            lin, quad = r @ t.T, q @ tt.T  # [E, rows] each
            if f is not None:
                lin *= f
                quad *= f * f
            lin += quad
            out[:, start : start + t.shape[0]] = lin
        out += const[:, None]
        return out

    def score_pairs(self, enroll: np.ndarray, test: np.ndarray, e_index: np.ndarray, t_index: np.ndarray) -> np.ndarray:
        """LLR (float64) of pair i: raw ``enroll[e_index[i]]`` vs raw ``test[t_index[i]]`` (one
        utterance each; :meth:`llr` with n = 1). The unique rows are transformed once and pairs
        scored in chunks, so a trial list never builds an [E, T] matrix."""
        u_e, u_t = self.transform(enroll), self.transform(test)
        one = np.ones(1)
        if self.normalize_length:
            u_e = u_e * self._kaldi_factor(self._kaldi_dot(u_e, one))[:, None]
            u_t = u_t * self._kaldi_factor(self._kaldi_dot(u_t, one))[:, None]
        psi = self.psi
        a, v = psi / (psi + 1.0), 1.0 + psi / (psi + 1.0)  # n = 1: shrinkage, same-speaker variance
        coef = np.concatenate([u_e * (a / v), np.broadcast_to(-0.5 * (1.0 / v - 1.0 / (1.0 + psi)), u_e.shape)], axis=1)
        const = -0.5 * (np.log(v).sum() - np.log1p(psi).sum()) - 0.5 * ((u_e * a) ** 2 / v).sum(axis=1)
        feats = np.concatenate([u_t, u_t * u_t], axis=1)
        e_index, t_index = np.asarray(e_index), np.asarray(t_index)
        out = np.empty(e_index.size)
        for start in range(0, e_index.size, _CHUNK_ROWS):
            sl = slice(start, start + _CHUNK_ROWS)
            out[sl] = np.einsum("ij,ij->i", coef[e_index[sl]], feats[t_index[sl]]) + const[e_index[sl]]
        return out

    def score_matrix(self, enroll: np.ndarray, test: np.ndarray, n_enroll: np.ndarray | None = None) -> np.ndarray:
        """LLR [E, T] float64 of raw enrolment embeddings [E, D] against raw test embeddings [T, D].

        A row of ``enroll`` with ``n_enroll[e] > 1`` is taken as the (raw) mean of that many
        utterances; to average in the PLDA space instead (Kaldi), use :meth:`speaker_vector`
        and :meth:`llr`. Test rows are transformed in blocks (bounded memory for T = 1e6).
        """
        u_e = self.transform(enroll)
        n = _check_counts(n_enroll, u_e.shape[0])
        test = np.asarray(test)
        if test.ndim != 2:
            raise ValueError(f"PLDA: expected test embeddings of shape [T, {self.dim}], got {test.shape}")
        out = np.empty((u_e.shape[0], test.shape[0]))
        for start in range(0, test.shape[0], _CHUNK_ROWS):
            block = test[start : start + _CHUNK_ROWS]
            out[:, start : start + block.shape[0]] = self.llr(u_e, self.transform(block), n)
        return out

    def save(self, path: str | os.PathLike) -> None:
        """Write the model to one ``.npz`` (float64 arrays + scalar metadata), atomically."""
        arrays = {"format": np.array(_FORMAT), "mean": self.mean, "lda": self.lda, "plda_mean": self.plda_mean,
                  "between": self.between, "within": self.within,
                  "length_norm": np.array(bool(self.length_norm)), "normalize_length": np.array(bool(self.normalize_length))}
        arrays.update({f"info_{k}": np.array(int(v)) for k, v in self.info.items()})
        with atomic_path(path, suffix=".npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **{k: np.asarray(v, dtype=np.float64) if v.dtype.kind == "f" else v for k, v in arrays.items()})
                f.flush()
                os.fsync(f.fileno())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PLDA":
        """Read a model written by :meth:`save`; a corrupt, non-finite or misshapen file is a one-line ValueError."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no such file") from None
        except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError) as e:
            raise ValueError(f"{path}: not a readable PLDA .npz file ({type(e).__name__}: {e})") from None
        if str(data.get("format", "")) != _FORMAT:
            raise ValueError(f"{path}: not a speakerid PLDA model (format {str(data.get('format', 'missing'))!r}, "
                             f"expected {_FORMAT!r})")
        names = ("mean", "lda", "plda_mean", "between", "within")
        missing = [k for k in (*names, "length_norm", "normalize_length") if k not in data]
        if missing:
            raise ValueError(f"{path}: missing array(s) {', '.join(missing)}")
        arrs = {}
        for k in names:
            a = data[k]
            if a.dtype.kind != "f":
                raise ValueError(f"{path}: {k} has dtype {a.dtype}, expected floating point")
            if not np.isfinite(a).all():
                raise ValueError(f"{path}: {k} has non-finite values")
            arrs[k] = a.astype(np.float64)
        problem = _shape_problem(*(arrs[k] for k in names))
        if problem:
            raise ValueError(f"{path}: {problem}")
        info = {k[5:]: int(v) for k, v in data.items() if k.startswith("info_")}
        try:
            return cls(**arrs, length_norm=bool(data["length_norm"]), normalize_length=bool(data["normalize_length"]), info=info)
        except (ValueError, np.linalg.LinAlgError) as e:
            raise ValueError(f"{path}: {e}") from None


def _check_counts(n_enroll: np.ndarray | None, rows: int) -> np.ndarray:
    if n_enroll is None:
        return np.ones(rows)
    n = np.asarray(n_enroll, dtype=np.float64).reshape(-1)
    if n.shape != (rows,) or not np.isfinite(n).all() or (n < 1).any():
        raise ValueError(f"PLDA: n_enroll must be {rows} count(s) >= 1, got shape {np.shape(n_enroll)}")
    return n


def _shape_problem(mean, lda, plda_mean, between, within) -> str | None:
    """A one-line description of what is wrong with the parameter shapes / values, or None."""
    if mean.ndim != 1 or lda.ndim != 2 or lda.shape[0] != mean.shape[0]:
        return f"mean {mean.shape} and lda {lda.shape} do not match (expected [D] and [D, d])"
    d = lda.shape[1]
    if d == 0 or d > lda.shape[0]:
        return f"lda {lda.shape}: expected 1 <= d <= D"
    if plda_mean.shape != (d,):
        return f"plda_mean has shape {plda_mean.shape}, expected ({d},)"
    for name, c in (("between", between), ("within", within)):
        if c.shape != (d, d):
            return f"{name} has shape {c.shape}, expected ({d}, {d})"
        if not np.isfinite(c).all():
            return f"{name} has non-finite values"
        if not np.allclose(c, c.T, rtol=1e-6, atol=1e-12 * max(1.0, float(np.abs(c).max()))):
            return f"{name} is not symmetric"
    if np.linalg.eigvalsh(within).min() <= 0:
        return "within is not positive definite"
    if np.linalg.eigvalsh(between).min() < -1e-9 * max(1.0, float(np.abs(between).max())):
        return "between is not positive semi-definite"
    return None
