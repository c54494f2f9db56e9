"""How attributes entangle in a representation's predictions, against the human ratings' own pattern
(docs/methods.md).

For one representation x step: the attribute x attribute correlation matrix of the held-out predictions (pooled
over folds, each fold's predictions standardised within it) set against the human ratings' matrix:
- RSA: Spearman correlation of the two upper triangles;
- off-diagonal: mean |r| over the predicted matrix's upper triangle (the human one: `human_offdiag`).
Each has its permutation null (the same numbers from the predictions of row-shuffled ratings, refitted exactly
like the real ones), a one-sided p (null >= value) and a fold interval (the same numbers from each fold's
held-out words, `analysis.fold_interval` with the factor measured on the nulls). Pure functions on arrays.

Why the null matters here: a probe trained on shuffled ratings still predicts attributes whose ratings correlate
as correlated (ridge weights inherit the ratings' covariance), so RSA is far above 0 with no word-level signal
at all; only the distance from the null says something.
"""

import numpy as np
from scipy import stats

from . import analysis
from .partition import Scores

MATRIX_DECIMALS = 3
MAX_MATRIX_STEPS = 50  # report.json keeps every step's predicted matrix up to this many steps, else evenly spaced ones


def _z(A: np.ndarray) -> np.ndarray:
    A = A - A.mean(-2, keepdims=True)
    sd = A.std(-2, keepdims=True)
    return A / np.where(sd > 0, sd, 1)


def correlation_matrices(P: np.ndarray) -> np.ndarray:
    """Attribute x attribute Pearson r over words [..., n, T] -> [..., T, T]; a column without spread gives 0."""
    Z = _z(P)
    return np.swapaxes(Z, -1, -2) @ Z / P.shape[-2]


def upper(M: np.ndarray) -> np.ndarray:
    i, j = np.triu_indices(M.shape[-1], k=1)
    return M[..., i, j]


def offdiag(M: np.ndarray) -> np.ndarray:
    """Mean |r| over the upper triangle: how entangled the attributes are [..., T, T] -> [...]."""
    return np.abs(upper(M)).mean(-1)


def ranks(a: np.ndarray) -> np.ndarray:
    """Ranks along the last axis, ties given their average rank (scipy's rankdata); without ties (the usual case)
    from one sort, which is most of the entanglement numbers' cost."""
    order = np.argsort(a, axis=-1)
    if (np.diff(np.take_along_axis(a, order, -1), axis=-1) == 0).any():
        return stats.rankdata(a, axis=-1)
    out = np.empty(a.shape)
    np.put_along_axis(out, order, np.broadcast_to(np.arange(1.0, a.shape[-1] + 1), a.shape), -1)
    return out


def rsa(M: np.ndarray, human: np.ndarray) -> np.ndarray:
    """Spearman r of the upper triangles of M [..., T, T] and the human matrix [T, T] -> [...]."""
    a = ranks(upper(M))
    b = ranks(upper(human))
    return analysis.pearson_columns(a[..., None], b[:, None])[..., 0]


def entangle(P: np.ndarray, T: int, human: np.ndarray, folds: list[np.ndarray]) -> tuple[Scores, Scores, np.ndarray]:
    """P: held-out predictions [S, n, T(1+M)] standardised within folds (the real ratings' T columns first, then
    each permutation's). -> (RSA Scores, off-diagonal Scores, predicted matrices [S, T, T])."""
    S, n, cols = P.shape
    M = cols // T - 1
    rsa_all, off_all, matrices = np.empty((S, 1 + M)), np.empty((S, 1 + M)), np.empty((S, T, T))
    rsa_fold, off_fold = np.empty((S, 1 + M, len(folds))), np.empty((S, 1 + M, len(folds)))
    for k in range(S):
        Pk = np.moveaxis(P[k].reshape(n, 1 + M, T), 1, 0)  # [1 + M, n, T]
        C = correlation_matrices(Pk)
        matrices[k] = C[0]
        rsa_all[k], off_all[k] = rsa(C, human), offdiag(C)
        for i, f in enumerate(folds):
            Cf = correlation_matrices(Pk[:, f])
            rsa_fold[k, :, i], off_fold[k, :, i] = rsa(Cf, human), offdiag(Cf)
    as_scores = lambda a, fa: Scores(a[:, 0], fa[:, 0], a[:, 1:], fa[:, 1:])  # noqa: E731
    return as_scores(rsa_all, rsa_fold), as_scores(off_all, off_fold), matrices


def disambiguation(P: np.ndarray, Yc: np.ndarray, T: int, folds: list[np.ndarray]) -> Scores:
    """Attribute disambiguation (analysis) of predictions [S, n, T(1+M)] against the ratings and their
    permutations Yc [n, T(1+M)] (centred within folds), pooled and per fold, with its nulls."""
    S, n, cols = P.shape
    M = cols // T - 1
    Pb = np.moveaxis(P.reshape(S, n, 1 + M, T), 2, 1)  # [S, 1 + M, n, T]
    Yb = np.broadcast_to(np.moveaxis(Yc.reshape(n, 1 + M, T), 1, 0), Pb.shape)
    pooled = analysis.disambiguation_many(Pb.reshape(-1, n, T), np.ascontiguousarray(Yb).reshape(-1, n, T)).reshape(S, 1 + M)
    fold = np.stack([analysis.disambiguation_many(np.ascontiguousarray(Pb[:, :, f]).reshape(-1, len(f), T),
                                                  np.ascontiguousarray(Yb[:, :, f]).reshape(-1, len(f), T)).reshape(S, 1 + M)
                     for f in folds], -1)
    return Scores(pooled[:, 0], fold[:, 0], pooled[:, 1:], fold[:, 1:])


def slope(scores: Scores) -> Scores:
    """Least-squares slope of a per-step quantity against the step fraction k/(S-1) (0 = pure noise, 1 = the
    last step), for the pooled value, each fold and each null. One step: a slope of 0 everywhere."""
    S = len(scores.pooled)
    if S < 2:
        zero = lambda a: np.zeros(a.shape[1:])  # noqa: E731
        return Scores(np.float64(0.0), zero(scores.fold), zero(scores.null), zero(scores.null_fold))
    x = np.arange(S) / (S - 1)
    w = (x - x.mean()) / ((x - x.mean()) ** 2).sum()
    along = lambda a: np.tensordot(w, a, axes=(0, 0))  # noqa: E731
    return Scores(along(scores.pooled), along(scores.fold), along(scores.null), along(scores.null_fold))


def kept_steps(S: int) -> list[int]:
    """The steps whose predicted matrix report.json keeps: all up to MAX_MATRIX_STEPS, else that many evenly spaced."""
    if S <= MAX_MATRIX_STEPS:
        return list(range(S))
    return sorted({round(i * (S - 1) / (MAX_MATRIX_STEPS - 1)) for i in range(MAX_MATRIX_STEPS)})
