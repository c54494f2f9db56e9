"""What a UNet block holds beyond CLIP: variance partitioning and a residual probe (docs/methods.md).

Per block x step, cross-validated ridge from CLIP alone (`clip.cond`), the block alone, and both together as two
feature groups with one penalty each (banded ridge), all on the existing outer folds and permutations
(`probes.prepare_targets`). Inside each fold, everything is fitted on the training words only: each group's
standardisation, each penalty (by GCV), and the residual probe's regression of the block on CLIP.

Banded ridge in kernel form: with both groups standardised, the joint fit with penalties (l_clip, l_block) is
ridge with one penalty a = l_clip on the Gram matrix K_clip + K_block / rho, rho = l_block / l_clip. For each
target, GCV picks (rho, a) from RATIOS x probes.ALPHAS. One group alone is the same code with one Gram matrix,
and gives the same predictions as `probes.cross_validate` (same standardisation, grid and GCV).

Scores are the project's r (held-out predictions standardised and ratings centred within folds, Pearson r per
attribute, mean over attributes); the parts are differences of scores: unet_unique = joint - clip,
clip_unique = joint - block, shared = block + clip - joint. Each part's null is the same difference computed on
the permuted ratings (every permutation refitted exactly like the real ratings), its interval the fold
interval of the per-fold differences (`analysis.fold_interval`, the factor measured on the nulls).
"""

from dataclasses import dataclass

import numpy as np
import torch

from . import analysis
from .probes import ALPHAS, Targets, centre_within_folds, standardise_stats

RATIOS = torch.tensor([0.01, 0.1, 1.0, 10.0, 100.0], dtype=torch.float64)  # l_block / l_clip, chosen per target by GCV
METHOD = ("banded ridge: CLIP and the block standardised on training words, one penalty each; per attribute, GCV on "
          "the training words picks the penalty (logspace(-2, 7, 19)) and the block/CLIP penalty ratio (0.01 to 100)")


@dataclass
class Scores:
    """Cross-validated mean r of one fit (or a difference of fits) at every step: pooled [S], per fold [S, K],
    and the same for each permutation null: [S, M] and [S, M, K]. Differences of Scores are Scores (paired
    by step, fold and permutation), so every part of the partition has its per-fold values and its null."""

    pooled: np.ndarray
    fold: np.ndarray
    null: np.ndarray
    null_fold: np.ndarray

    def __add__(self, other: "Scores") -> "Scores":
        return Scores(self.pooled + other.pooled, self.fold + other.fold, self.null + other.null, self.null_fold + other.null_fold)

    def __sub__(self, other: "Scores") -> "Scores":
        return Scores(self.pooled - other.pooled, self.fold - other.fold, self.null - other.null, self.null_fold - other.null_fold)

    def estimate(self, step: int, folds: list[np.ndarray]) -> dict:
        """The contract's estimate at one step: value, fold interval, null [mean, sd], one-sided p (null >= value)."""
        return estimate(self.pooled[step], self.fold[step], self.null[step], self.null_fold[step], folds)

    def estimates(self, folds: list[np.ndarray]) -> list[dict]:
        return [self.estimate(k, folds) for k in range(len(self.pooled))]


def estimate(value: float, per_fold: np.ndarray, null: np.ndarray | None, null_fold: np.ndarray | None,
             folds: list[np.ndarray]) -> dict:
    """{"value", "ci", "null", "p"} as the existing numbers do it: a fold interval whose factor is measured on the
    nulls (Nadeau–Bengio's with fewer than 10), null [mean, sd], p = (1 + #null >= value) / (1 + M)."""
    nb = analysis.nadeau_bengio_factor(folds)
    if null is None or len(null) == 0:
        return {"value": float(value), "ci": analysis.fold_interval(float(value), per_fold, nb), "null": None, "p": None}
    factor = float(analysis.null_fold_factor(np.asarray(null), np.asarray(null_fold), nb))
    return {"value": float(value), "ci": analysis.fold_interval(float(value), per_fold, factor),
            "null": [float(np.mean(null)), float(np.std(null))], "p": float((1 + (null >= value).sum()) / (1 + len(null)))}


@dataclass
class FoldGram:
    """One group's features in one fold, standardised on the training words: K = Z_tr Z_tr' [S, n_tr, n_tr] and
    K_te = Z_te Z_tr' [S, n_te, n_tr], with Z_tr and Z_te kept for the residual probe."""

    Z_tr: torch.Tensor
    Z_te: torch.Tensor

    @classmethod
    def of(cls, X: torch.Tensor, train: np.ndarray, test: np.ndarray) -> "FoldGram":
        mean, std = standardise_stats(X[:, train, :])
        return cls((X[:, train, :] - mean) / std, (X[:, test, :] - mean) / std)

    @property
    def K(self) -> torch.Tensor:
        return self.Z_tr @ self.Z_tr.mT

    @property
    def K_te(self) -> torch.Tensor:
        return self.Z_te @ self.Z_tr.mT


def _eig(K: torch.Tensor):
    """Eigenvalues (clamped at 0; singular values below 1e-10 of the largest set to 0) and eigenvectors of a Gram matrix."""
    e, U = torch.linalg.eigh(K)
    e = e.clamp_min(0)
    return torch.where(e > 1e-20 * e.amax(-1, keepdim=True), e, torch.zeros_like(e)), U


def _gcv(C2: torch.Tensor, e: torch.Tensor, yy: torch.Tensor, n: int, alphas: torch.Tensor) -> torch.Tensor:
    """GCV = RSS / (1 - df/n)^2 for every alpha and target [S, A, T'] (the formula of probes._gcv_alphas)."""
    f = e[:, None, :] / (e[:, None, :] + alphas[:, None])  # [S, A, k]
    rss = yy - (2 * f - f**2) @ C2
    df = f.sum(-1, keepdim=True)
    return rss.clamp_min(0) / (1 - df / n).clamp_min(1e-6) ** 2


def kernel_ridge_fold(K: torch.Tensor, K_te: torch.Tensor, Yc: torch.Tensor, yy: torch.Tensor, y_mean: torch.Tensor,
                      alphas: torch.Tensor):
    """Ridge in kernel form for one fold: per target the alpha with least GCV. -> (predictions [S, n_te, T'],
    their GCV [S, T']). Yc: training targets centred on their training mean."""
    e, U = _eig(K)
    C = U.mT @ Yc  # [S, k, T']
    gcv = _gcv(C**2, e, yy, K.shape[-1], alphas)
    best, idx = gcv.min(-2)  # [S, T']
    chosen = alphas[idx]
    D = C / (e[:, :, None] + chosen[:, None, :])
    return (K_te @ U) @ D + y_mean, best


def cv_predict(groups: list[torch.Tensor], targets: Targets, *, ratios: torch.Tensor = RATIOS,
               alphas: torch.Tensor = ALPHAS) -> torch.Tensor:
    """Out-of-fold predictions [S, n, T'] of every target column (ratings, then their permutations) from one or
    two feature groups ([S or 1, n, d] each), each group standardised on the training words; with two groups the
    second one's penalty is `ratio` times the first's, ratio and penalty chosen per target by GCV."""
    S = max(X.shape[0] for X in groups)
    n = targets.Y.shape[0]
    out = torch.empty(S, n, targets.stacked.shape[1], dtype=torch.float64)
    alphas = alphas.to(torch.float64)
    for test, train, y_mean, Yc, yy in zip(targets.folds, targets.train, targets.train_mean, targets.train_centred,
                                           targets.train_ss):
        grams = [FoldGram.of(X.to(torch.float64), train, test) for X in groups]
        K0, K0_te = grams[0].K.expand(S, -1, -1), grams[0].K_te.expand(S, -1, -1)
        if len(grams) == 1:
            out[:, test, :] = kernel_ridge_fold(K0, K0_te, Yc, yy, y_mean, alphas)[0]
            continue
        K1, K1_te = grams[1].K.expand(S, -1, -1), grams[1].K_te.expand(S, -1, -1)
        best_pred, best_gcv = None, None
        for rho in ratios.tolist():
            pred, gcv = kernel_ridge_fold(K0 + K1 / rho, K0_te + K1_te / rho, Yc, yy, y_mean, alphas)
            if best_pred is None:
                best_pred, best_gcv = pred, gcv
            else:
                better = gcv < best_gcv  # ties keep the earlier ratio: deterministic
                best_pred = torch.where(better[:, None, :], pred, best_pred)
                best_gcv = torch.where(better, gcv, best_gcv)
        out[:, test, :] = best_pred
    return out


def residual_predict(clip: torch.Tensor, block: torch.Tensor, targets: Targets, *, alphas: torch.Tensor = ALPHAS) -> torch.Tensor:
    """The residual probe: in each fold, the block's standardised features regressed on CLIP's (ridge, one penalty
    for all block features by GCV, training words only), and the ratings probed from what is left (training
    residuals; test residuals from the training fit). -> out-of-fold predictions [S, n, T']."""
    S = block.shape[0]
    n = targets.Y.shape[0]
    out = torch.empty(S, n, targets.stacked.shape[1], dtype=torch.float64)
    alphas = alphas.to(torch.float64)
    for test, train, y_mean, Yc, yy in zip(targets.folds, targets.train, targets.train_mean, targets.train_centred,
                                           targets.train_ss):
        a, b = FoldGram.of(clip.to(torch.float64), train, test), FoldGram.of(block.to(torch.float64), train, test)
        e, U = _eig(a.K)  # [1, n_tr]
        C = U.mT @ b.Z_tr  # [S, n_tr, d_b]
        gcv = _gcv((C**2).sum(-1, keepdim=True), e, (b.Z_tr**2).sum((-2, -1))[:, None, None], len(train), alphas)
        beta = alphas[gcv[..., 0].argmin(-1)]  # [S]: one penalty per step for all the block's features
        shrink = e / (e + beta[:, None])  # [S, n_tr]
        R_tr = b.Z_tr - U @ (shrink[:, :, None] * C)
        R_te = b.Z_te - (a.K_te @ U) @ (C / (e[..., None] + beta[:, None, None]))
        out[:, test, :] = kernel_ridge_fold(R_tr @ R_tr.mT, R_te @ R_tr.mT, Yc, yy, y_mean, alphas)[0]
    return out


def standardise_predictions(raw: torch.Tensor, folds: list[np.ndarray]) -> np.ndarray:
    """Held-out predictions standardised within each fold (as CVResult.standardised_all)."""
    return centre_within_folds(raw.numpy(), folds, scale=True)


def score(raw: torch.Tensor, targets: Targets) -> Scores:
    """Scores of out-of-fold predictions [S, n, T(1+M)] against the ratings and their permutations."""
    T = targets.Y.shape[1]
    P = standardise_predictions(raw, targets.folds)
    Yc = centre_within_folds(targets.stacked.numpy(), targets.folds)
    pooled = analysis.pearson_columns(P, Yc).reshape(P.shape[0], -1, T).mean(-1)  # [S, 1 + M]
    fold = np.stack([analysis.pearson_columns(P[:, f], Yc[f]).reshape(P.shape[0], -1, T).mean(-1) for f in targets.folds], -1)
    return Scores(pooled[:, 0], fold[:, 0], pooled[:, 1:], fold[:, 1:])


@dataclass
class BlockFits:
    """One block's fits: the scores of every view, and its own held-out predictions (for the entanglement)."""

    block: Scores
    joint: Scores
    residual: Scores
    block_predictions: np.ndarray  # [S, n, T(1+M)] standardised within folds


def fit_block(clip: torch.Tensor, block: torch.Tensor, targets: Targets, *, ratios: torch.Tensor = RATIOS,
              alphas: torch.Tensor = ALPHAS) -> BlockFits:
    """clip [n, d] or [1, n, d]; block [S, n, d] -> the block alone, CLIP + block, and the residual probe."""
    clip = clip if clip.dim() == 3 else clip[None]
    alone = cv_predict([block], targets, alphas=alphas)
    joint = cv_predict([clip, block], targets, ratios=ratios, alphas=alphas)
    residual = residual_predict(clip, block, targets, alphas=alphas)
    return BlockFits(score(alone, targets), score(joint, targets), score(residual, targets),
                     standardise_predictions(alone, targets.folds))


def block_parts(fits: BlockFits, clip: Scores, folds: list[np.ndarray]) -> dict:
    """The contract's per-block lists: block, joint, unet_unique, clip_unique, shared, residual (one estimate per step)."""
    S = len(fits.block.pooled)
    clip_s = Scores(*(np.repeat(a, S, 0) for a in (clip.pooled, clip.fold, clip.null, clip.null_fold)))
    return {
        "block": fits.block.estimates(folds),
        "joint": fits.joint.estimates(folds),
        "unet_unique": (fits.joint - clip_s).estimates(folds),
        "clip_unique": (fits.joint - fits.block).estimates(folds),
        "shared": (fits.block + clip_s - fits.joint).estimates(folds),
        "residual": fits.residual.estimates(folds),
    }
