"""The v0.1 probe and metric algorithms, kept verbatim as the reference the fast code is tested against
(tests/test_build_speed.py: the report of a 60-word build must be identical to 1e-10). Slow by design."""

import math  # noqa: F401
from dataclasses import dataclass, field

import numpy as np
import torch

from sdviz.errors import SdvizError

ALPHAS = torch.logspace(-2, 7, 19, dtype=torch.float64)  # standardised features: the scale is ~words x dims


def standardise_stats(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = X.mean(-2, keepdim=True)
    std = X.std(-2, keepdim=True, correction=0)
    return mean, torch.where(std > 1e-8 * (1 + mean.abs()), std, torch.ones_like(std))


def _thin_svd(Z: torch.Tensor):
    """Thin SVD via the eigendecomposition of the smaller Gram matrix (ZZ' or Z'Z): several times
    cheaper than a full SVD for the shapes here. Null directions get s = 0 and zero vectors."""
    n, d = Z.shape[-2:]
    if n <= d:
        evals, U = torch.linalg.eigh(Z @ Z.mT)
        s = evals.clamp_min(0).sqrt()
        inv = torch.where(s > 1e-10 * s.amax(-1, keepdim=True), 1 / s, torch.zeros_like(s))
        Vh = (U.mT @ Z) * inv[..., :, None]
    else:
        evals, V = torch.linalg.eigh(Z.mT @ Z)
        s = evals.clamp_min(0).sqrt()
        inv = torch.where(s > 1e-10 * s.amax(-1, keepdim=True), 1 / s, torch.zeros_like(s))
        U, Vh = (Z @ V) * inv[..., None, :], V.mT
    return U, torch.where(inv > 0, s, torch.zeros_like(s)), Vh


def _decompose(X: torch.Tensor):
    mean, std = standardise_stats(X)
    Z = (X - mean) / std
    U, s, Vh = _thin_svd(Z)
    return mean, std, U, s, Vh


def _gcv_alphas(U, s, Yc, alphas) -> torch.Tensor:
    """Per-target alpha minimising GCV = RSS / (1 - df/n)^2, from the SVD alone."""
    n = Yc.shape[-2]
    C2 = (U.transpose(-1, -2) @ Yc) ** 2  # [..., k, T]
    s2 = s[..., None, :] ** 2  # [..., 1, k]
    f = s2 / (s2 + alphas[:, None])  # [..., A, k] shrinkage factors
    rss = (Yc**2).sum(-2, keepdim=True) - (2 * f - f**2) @ C2  # [..., A, T]
    df = f.sum(-1, keepdim=True)  # [..., A, 1]
    gcv = rss.clamp_min(0) / (1 - df / n).clamp_min(1e-6) ** 2
    return alphas[gcv.argmin(-2)]  # [..., T]


def kfold(n: int, folds: int, seed: int) -> list[np.ndarray]:
    """Test-word indices of each outer fold: a seeded shuffle cut into `folds` near-equal parts."""
    if not 2 <= folds <= n:
        raise SdvizError(f"Cross-validation needs 2 to {n} folds for {n} words; got {folds}.")
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(part) for part in np.array_split(order, folds)]


def centre_within_folds(A: np.ndarray, folds: list[np.ndarray], scale: bool = False) -> np.ndarray:
    """Per fold, subtract the held-out words' own mean per column (word axis -2); with `scale`,
    divide by their standard deviation too."""
    A = np.array(A, dtype=np.float64, copy=True)
    for test in folds:
        part = A[..., test, :] - A[..., test, :].mean(-2, keepdims=True)
        if scale:
            sd = part.std(-2, keepdims=True)
            part = part / np.where(sd > 0, sd, 1)
        A[..., test, :] = part
    return A


@dataclass
class CVResult:
    """Out-of-fold predictions of the real ratings and of P row-shuffled ratings (the null).

    Scores use `centred()`: predictions standardised and ratings centred within each fold. Each
    fold has its own intercept and penalty, fitted on its training words; pooled over folds, their
    location and scale run against the held-out ratings (a fold whose training covariance is
    inflated gets weaker shrinkage, and its held-out covariance runs the other way) and pull r,
    2v2 and disambiguation below chance even for pure-noise features. Removing them per fold
    makes r the variance-weighted mean of per-fold r. It touches no fit: the model never sees
    held-out ratings (the leakage canary test checks both).
    """

    predictions: torch.Tensor  # [..., n, T]
    null_predictions: torch.Tensor | None  # [..., P, n, T]
    permutations: np.ndarray | None  # [P, n]: null p predicts Y[permutations[p]]
    alphas: torch.Tensor  # [..., folds, T] chosen on each fold's training words
    folds: list[np.ndarray] = field(default_factory=list)

    def centred(self, Y: np.ndarray):
        """(predictions, ratings) centred within folds, as numpy."""
        return centre_within_folds(self.predictions.numpy(), self.folds, scale=True), centre_within_folds(Y, self.folds)

    def centred_null(self, Y: np.ndarray):
        """([P, ..., n, T] null predictions, [P, n, T] their shuffled ratings), centred within folds."""
        P = np.moveaxis(self.null_predictions.numpy(), -3, 0)
        return centre_within_folds(P, self.folds, scale=True), centre_within_folds(np.stack([Y[p] for p in self.permutations]), self.folds)


def cross_validate(X: torch.Tensor, Y: np.ndarray, *, folds: int = 10, seed: int = 0, n_permutations: int = 0,
                   alphas: torch.Tensor = ALPHAS) -> CVResult:
    """Outer K-fold over words. Inside each fold, standardisation and alpha see training words only."""
    X = X.to(torch.float64)
    Yt = torch.as_tensor(Y, dtype=torch.float64)
    n, T = Yt.shape
    if X.shape[-2] != n:
        raise SdvizError(f"{X.shape[-2]} feature rows but {n} rated words.")
    perms = np.stack([np.random.default_rng([seed, 1, p]).permutation(n) for p in range(n_permutations)]) if n_permutations else None
    targets = Yt if perms is None else torch.cat([Yt] + [Yt[p] for p in perms], dim=1)
    out = torch.empty(*X.shape[:-2], n, targets.shape[1], dtype=torch.float64)
    fold_alphas = []
    parts = kfold(n, folds, seed)
    for test in parts:
        train = np.setdiff1d(np.arange(n), test)
        mean, std, U, s, Vh = _decompose(X[..., train, :])
        y_mean = targets[train].mean(0)
        Yc = targets[train] - y_mean
        chosen = _gcv_alphas(U, s, Yc, alphas.to(X))
        C = U.transpose(-1, -2) @ Yc
        D = s[..., :, None] / (s[..., :, None] ** 2 + chosen[..., None, :])
        Zt = ((X[..., test, :] - mean) / std) @ Vh.transpose(-1, -2)  # test words in the SVD basis
        out[..., test, :] = Zt @ (D * C) + y_mean
        fold_alphas.append(chosen[..., :T])
    null = None
    if perms is not None:
        null = out[..., T:].unflatten(-1, (n_permutations, T)).movedim(-2, -3)
    return CVResult(out[..., :T], null, perms, torch.stack(fold_alphas, -2), parts)


BOOTSTRAPS = 1000
KNN_K = 5
WORDFORM = "baseline.wordform"  # probe on word length alone: what any encoder of the word's form gets for free


def pearson_columns(P: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Pearson r of each column of P with the same column of Y (over rows); [..., n, T] -> [..., T]."""
    Pc = P - P.mean(-2, keepdims=True)
    Yc = Y - Y.mean(-2, keepdims=True)
    den = np.sqrt((Pc**2).sum(-2) * (Yc**2).sum(-2))
    return np.where(den > 0, (Pc * Yc).sum(-2) / np.where(den > 0, den, 1), 0.0)


def bootstrap_counts(n: int, bootstraps: int = BOOTSTRAPS, seed: int = 0) -> np.ndarray:
    """[B, n] how often each word is drawn in each bootstrap resample of the words."""
    rng = np.random.default_rng([seed, 2])
    return rng.multinomial(n, np.full(n, 1 / n), size=bootstraps).astype(np.float64)


def bootstrap_pearson(P: np.ndarray, Y: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """[B, T]: r per attribute in each resample, from count-weighted sums (no copies of the data)."""
    n = counts.sum(1, keepdims=True)
    sp, sy = counts @ P, counts @ Y
    spp, syy, spy = counts @ (P * P), counts @ (Y * Y), counts @ (P * Y)
    cov = n * spy - sp * sy
    den = np.sqrt(np.clip(n * spp - sp**2, 0, None) * np.clip(n * syy - sy**2, 0, None))
    return np.where(den > 0, cov / np.where(den > 0, den, 1), 0.0)


def ci95(samples: np.ndarray) -> list[float]:
    lo, hi = np.percentile(samples, [2.5, 97.5])
    return [float(lo), float(hi)]


def _row_z(A: np.ndarray) -> np.ndarray:
    A = A - A.mean(-1, keepdims=True)
    norm = np.linalg.norm(A, axis=-1, keepdims=True)
    return A / np.where(norm > 0, norm, 1)


def two_v_two(P: np.ndarray, Y: np.ndarray) -> float:
    """Fraction of word pairs (i, j) with d(p_i, y_i) + d(p_j, y_j) < d(p_i, y_j) + d(p_j, y_i),
    d = correlation distance over the attribute vector; ties count one half. Chance 0.5."""
    D = 1 - _row_z(P) @ _row_z(Y).T  # D[i, j] = d(pred_i, true_j)
    match = np.diag(D)[:, None] + np.diag(D)[None, :]
    swap = D + D.T
    score = (match < swap) + 0.5 * (match == swap)
    i, j = np.triu_indices(len(P), k=1)
    return float(score[i, j].mean())


def cross_correlation(P: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """C[a, b] = r(predicted attribute a, human attribute b) over words."""
    Pz = (P - P.mean(0)) / np.where(P.std(0) > 0, P.std(0), 1)
    Yz = (Y - Y.mean(0)) / np.where(Y.std(0) > 0, Y.std(0), 1)
    return Pz.T @ Yz / len(P)


def attribute_disambiguation(P: np.ndarray, Y: np.ndarray) -> float:
    """Fraction of attribute pairs (a, b) with r(p_a, y_a) + r(p_b, y_b) > r(p_a, y_b) + r(p_b, y_a). Chance 0.5."""
    C = cross_correlation(P, Y)
    a, b = np.triu_indices(C.shape[0], k=1)
    lhs, rhs = C[a, a] + C[b, b], C[a, b] + C[b, a]
    return float(((lhs > rhs) + 0.5 * (lhs == rhs)).mean())


def evaluate(P: np.ndarray, Y: np.ndarray, attributes: list[str], groups: dict[str, str], *, counts: np.ndarray,
             null_P: np.ndarray | None = None, null_Y: np.ndarray | None = None) -> dict:
    """Every probe number for one representation (x step) from its out-of-fold predictions P [n, T]
    and ratings Y, both centred on the training-fold mean (CVResult.centred); null_P/null_Y [perm, n, T]."""
    r = pearson_columns(P, Y)
    boot = bootstrap_pearson(P, Y, counts)  # [B, T]
    group_names = list(dict.fromkeys(groups[a] for a in attributes))
    members = {g: [i for i, a in enumerate(attributes) if groups[a] == g] for g in group_names}
    out = {
        "mean_r": float(r.mean()),
        "mean_r_ci": ci95(boot.mean(1)),
        "r": [float(x) for x in r],
        "group_r": {g: float(r[idx].mean()) for g, idx in members.items()},
        "group_r_ci": {g: ci95(boot[:, idx].mean(1)) for g, idx in members.items()},
        "two_v_two": two_v_two(P, Y),
        "disambiguation": attribute_disambiguation(P, Y),
    }
    if null_P is not None:
        null_r = pearson_columns(null_P, null_Y).mean(-1)
        null_2v2 = np.array([two_v_two(p, y) for p, y in zip(null_P, null_Y)])
        out |= {
            "null_mean_r": [float(null_r.mean()), float(null_r.std())],
            "null_two_v_two": [float(null_2v2.mean()), float(null_2v2.std())],
            "p_mean_r": float((1 + (null_r >= out["mean_r"]).sum()) / (1 + len(null_r))),
            "p_two_v_two": float((1 + (null_2v2 >= out["two_v_two"]).sum()) / (1 + len(null_2v2))),
        }
    return out


def separation(X: np.ndarray, categories: list[str], k: int = KNN_K) -> dict:
    """How well categories separate in a feature space: leave-one-out k-NN accuracy (cosine, majority
    vote, ties to the nearest) and silhouette (cosine), on features z-scored per dimension over words."""
    from sklearn.metrics import silhouette_score

    labels = np.unique(categories, return_inverse=True)[1]
    std = X.std(0)
    Z = (X - X.mean(0)) / np.where(std > 0, std, 1)
    Zn = Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)
    S = Zn @ Zn.T
    np.fill_diagonal(S, -np.inf)
    neighbours = np.argsort(-S, axis=1, kind="stable")[:, :k]
    correct = 0
    for i, nb in enumerate(neighbours):
        votes = np.bincount(labels[nb], minlength=labels.max() + 1)
        best = np.flatnonzero(votes == votes.max())
        winner = next(labels[j] for j in nb if labels[j] in best)  # tie: the nearest of the tied classes
        correct += winner == labels[i]
    freqs = np.bincount(labels) / len(labels)
    sil = silhouette_score(Zn, labels, metric="cosine") if len(set(labels)) > 1 and np.ptp(Zn) > 0 else 0.0
    return {"knn_accuracy": correct / len(X), "knn_chance": float((freqs**2).sum()), "silhouette": float(sil)}


CORR_STEPS = 3  # per-step representations keep predicted attribute x attribute matrices at first, middle, last step


def analyse(features: dict, Y: np.ndarray, attributes: list[str], groups: dict[str, str], categories: list[str] | None,
            *, folds: int = 10, seed: int = 0, n_permutations: int = 100, bootstraps: int = BOOTSTRAPS,
            progress: bool = True, timings: dict | None = None) -> dict:
    """Cross-validate a probe for every representation x step and compute every reported number.

    features: name -> [words, dim] (once per prompt) or [words, steps, dim] (per step).
    Returns {name: {"per_step", "dim", "results": [metrics per step], "pred_corr": {step: TxT}}}.
    """
    import torch
    from tqdm.auto import tqdm


    counts = bootstrap_counts(len(Y), bootstraps, seed)
    out = {}
    for name in tqdm(list(features), desc="probes", unit="repr", disable=not progress):
        X = features[name]
        per_step = X.dim() == 3
        Xs = X.transpose(0, 1) if per_step else X[None]  # [steps, words, dim]
        S = Xs.shape[0]
        keep = sorted({0, S // 2, S - 1}) if per_step else [0]
        results, pred_corr = [], {}
        for chunk in range(0, S, 8):  # bounds memory: predictions are [steps, words, targets x (1 + permutations)]
            cv = cross_validate(Xs[chunk : chunk + 8], Y, folds=folds, seed=seed, n_permutations=n_permutations)
            P, Yc = cv.centred(Y)
            nP, nY = cv.centred_null(Y) if n_permutations else (None, None)
            for j in range(P.shape[0]):
                step = chunk + j
                metrics = evaluate(P[j], Yc, attributes, groups, counts=counts,
                                   null_P=None if nP is None else nP[:, j], null_Y=nY)
                metrics["alpha_median"] = float(torch.median(cv.alphas[j]))
                if categories is not None:
                    metrics |= separation(Xs[step].double().numpy(), categories)
                results.append(metrics)
                if step in keep:
                    pred_corr[str(step)] = np.round(np.nan_to_num(np.corrcoef(P[j].T)), 4).tolist()
        out[name] = {"per_step": per_step, "dim": int(X.shape[-1]), "results": results, "pred_corr": pred_corr}
    return out


