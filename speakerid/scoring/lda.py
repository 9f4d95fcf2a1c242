"""The linear algebra of PLDA's pre-processing: LDA, length normalisation to sqrt(d), and the
simultaneous diagonalisation of two covariances (:mod:`speakerid.scoring.plda` uses all three)."""

from __future__ import annotations

import numpy as np

try:  # scipy is optional; numpy's Cholesky + eigh do the same job
    import scipy.linalg as _sla
except ImportError:  # pragma: no cover - exercised only without scipy
    _sla = None

__all__ = ["class_stats", "joint_diagonaliser", "lda_transform", "length_normalise_sqrt_dim"]


def joint_diagonaliser(between: np.ndarray, within: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(A [d, d], psi [d]) with ``A W A' = I`` and ``A B A' = diag(psi)``, psi descending.

    The generalised symmetric eigenproblem ``B v = psi W v`` (Kaldi: Cholesky of W, then the
    eigenvectors of ``L^-1 B L^-T``); the rows of A are the eigenvectors.
    """
    if _sla is not None:
        psi, v = _sla.eigh(between, within)
    else:
        lower = np.linalg.cholesky(within)
        l_inv = np.linalg.inv(lower)
        psi, u = np.linalg.eigh(l_inv @ between @ l_inv.T)
        v = l_inv.T @ u
    order = np.argsort(psi)[::-1]
    return np.ascontiguousarray(v[:, order].T), psi[order]


def length_normalise_sqrt_dim(x: np.ndarray) -> np.ndarray:
    """Rows rescaled to norm ``sqrt(dim)`` (Kaldi's ``ivector-normalize-length``), float64."""
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError(f"{int((norms == 0).sum())} embedding(s) have zero length after centring")
    return x * (np.sqrt(x.shape[1]) / norms)


def class_stats(x: np.ndarray, classes: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(counts [K], class means [K, d], within-class scatter sum [d, d]) for class indices ``classes``."""
    counts = np.bincount(classes, minlength=n_classes).astype(np.float64)
    sums = np.zeros((n_classes, x.shape[1]))
    np.add.at(sums, classes, x)
    means = sums / counts[:, None]
    dev = x - means[classes]
    return counts, means, dev.T @ dev


def lda_transform(x: np.ndarray, classes: np.ndarray, n_classes: int, lda_dim: int) -> np.ndarray:
    """LDA projection [D, lda_dim] (``x @ P``): top generalised eigenvectors of ``S_b v = l S_w v``.

    ``S_w``: within-class scatter / N; ``S_b``: sum of n_k (m_k - m)(m_k - m)' / N (Fukunaga
    1990, ch. 10). Scaled so the projected within-class covariance is the identity.
    """
    counts, means, scatter = class_stats(x, classes, n_classes)
    n = x.shape[0]
    s_w = scatter / n
    centred = means - (counts @ means) / n
    s_b = (centred * counts[:, None]).T @ centred / n
    try:
        proj, _ = joint_diagonaliser(s_b, s_w)
    except np.linalg.LinAlgError as e:  # scipy raises LinAlgError too
        raise ValueError(f"LDA: the within-class scatter is singular ({e}); too few utterances per speaker "
                         f"for dimension {x.shape[1]}") from None
    return np.ascontiguousarray(proj[:lda_dim].T)
