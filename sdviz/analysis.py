"""The numbers sdviz reports (definitions in docs/methods.md): r with bootstrap CIs, 2v2, permutation
p-values, attribute disambiguation and category separation. Pure functions on arrays."""

import numpy as np

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

    from .probes import cross_validate

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


def summary_rows(report: dict) -> list[dict]:
    """One row per representation: its best step by mean r (CLIP: its only one)."""
    rows = []
    for name, rep in report["representations"].items():
        best = max(range(len(rep["results"])), key=lambda k: rep["results"][k]["mean_r"])
        res = rep["results"][best]
        rows.append({"name": name, "step": best if rep["per_step"] else None, **{k: res.get(k) for k in (
            "mean_r", "mean_r_ci", "two_v_two", "p_mean_r", "p_two_v_two", "disambiguation", "knn_accuracy", "silhouette")}})
    return rows
