"""The numbers sdviz reports (definitions in docs/methods.md): r, 2v2, attribute disambiguation, each with
its permutation null and p-value, intervals that include refitting variability, and category separation.
Pure functions on arrays."""

from dataclasses import dataclass

import numpy as np
from scipy import stats

from .io import stage

KNN_K = 5
TWO_V_TWO_TOL = 1e-4  # float32 pair margins closer to zero than this are decided again in float64
TIE = 1e-12  # 2v2 sides (sums of two distances, 0-4) this close are equal: below float64 rounding noise of the product
WORDFORM = "baseline.wordform"  # probe on word length alone: what any encoder of the word's form gets for free


def pearson_columns(P: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Pearson r of each column of P with the same column of Y (over rows); [..., n, T] -> [..., T]."""
    Pc = P - P.mean(-2, keepdims=True)
    Yc = Y - Y.mean(-2, keepdims=True)
    den = np.sqrt((Pc**2).sum(-2) * (Yc**2).sum(-2))
    return np.where(den > 0, (Pc * Yc).sum(-2) / np.where(den > 0, den, 1), 0.0)


def pearson(a, b) -> float:
    """Pearson r of two 1-D sequences; 0.0 where either has no spread (a flat profile is unrelated, not undefined).
    The one zero-spread rule of the project: `pearson_columns` on one column."""
    return float(pearson_columns(np.asarray(a, float)[:, None], np.asarray(b, float)[:, None])[0])


def _row_z(A: np.ndarray) -> np.ndarray:
    A = A - A.mean(-1, keepdims=True)
    norm = np.linalg.norm(A, axis=-1, keepdims=True)
    return A / np.where(norm > 0, norm, 1)


def two_v_two(P: np.ndarray, Y: np.ndarray) -> float:
    """Fraction of word pairs (i, j) with d(p_i, y_i) + d(p_j, y_j) < d(p_i, y_j) + d(p_j, y_i),
    d = correlation distance over the attribute vector; ties count one half. Chance 0.5.
    Sides within TIE of each other are a tie: words with equal predictions (e.g. equal word form) must
    not be split by float rounding in the matrix product."""
    D = 1 - _row_z(P) @ _row_z(Y).T  # D[i, j] = d(pred_i, true_j)
    margin = (D + D.T) - (np.diag(D)[:, None] + np.diag(D)[None, :])  # swap - match
    score = (margin > TIE) + 0.5 * (np.abs(margin) <= TIE)
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


def two_v_two_many(P: np.ndarray, Y: np.ndarray, Yz: np.ndarray | None = None) -> np.ndarray:
    """two_v_two for a batch [B, n, T] at once (the permutation nulls), with the same answers.

    Pair scores come from float32 batched products, a few nulls at a time so each product stays in cache;
    pairs whose margin is within TWO_V_TWO_TOL of a tie are decided again in float64 exactly as `two_v_two`
    does, so the counts are those of float64. `Yz`: Y already row-z-scored (shared by many calls).
    """
    import torch

    Pz = _row_z(np.asarray(P, np.float64))
    Yz = _row_z(np.asarray(Y, np.float64)) if Yz is None else Yz
    P32, Y32 = torch.from_numpy(Pz.astype(np.float32)), torch.from_numpy(Yz.astype(np.float32))
    out = np.empty(len(Pz))
    for b in range(0, len(Pz), _NULL_CHUNK):
        part = slice(b, b + _NULL_CHUNK)
        M = torch.bmm(P32[part], Y32[part].mT).numpy()
        out[part] = _count_2v2(M, Pz[part], Yz[part], TWO_V_TWO_TOL)
    return out


_NULL_CHUNK = 8  # nulls per float32 product: 8 x 434 x 434 floats stay in cache for the count


def _count_2v2(M, Pz, Yz, tol):
    return _numba_kernels()[0](M, Pz, Yz, tol, TIE)


_KERNELS: list = []


def _numba_kernels():
    """Compiled once per process (and cached on disk): numba ships with umap-learn."""
    if not _KERNELS:
        import numba

        @numba.njit(cache=True)  # serial: numba's default threading layer is unsafe when app threads call it at once
        def count(M, Pz, Yz, tol, tie):
            B, n, T = Pz.shape
            out = np.zeros(B)
            for b in range(B):
                match = np.diag(M[b]).copy()
                swap = M[b] + M[b].T  # the same float32 sums as M[i, j] + M[j, i], read row by row
                wins, close = 0, 0.0
                for i in range(n):
                    for j in range(i + 1, n):
                        margin = (match[i] + match[j]) - swap[i, j]
                        wins += margin > tol  # no branch: about half the pairs go each way
                        if abs(margin) <= tol:  # rare, too close to call in float32: float64 like two_v_two
                            cii = cjj = cij = cji = 0.0
                            for t in range(T):
                                cii += Pz[b, i, t] * Yz[b, i, t]
                                cjj += Pz[b, j, t] * Yz[b, j, t]
                                cij += Pz[b, i, t] * Yz[b, j, t]
                                cji += Pz[b, j, t] * Yz[b, i, t]
                            exact = ((1 - cij) + (1 - cji)) - ((1 - cii) + (1 - cjj))
                            close += 1.0 if exact > tie else (0.5 if abs(exact) <= tie else 0.0)
                out[b] = (wins + close) / (n * (n - 1) / 2)
            return out

        @numba.njit(cache=True)
        def disambiguation(C):
            B, T, _ = C.shape
            out = np.zeros(B)
            for b in range(B):
                match = np.diag(C[b]).copy()
                swap = C[b] + C[b].T
                wins, ties = 0, 0
                for a in range(T):
                    for c in range(a + 1, T):
                        lhs = match[a] + match[c]
                        wins += lhs > swap[a, c]
                        ties += lhs == swap[a, c]
                pairs = T * (T - 1) / 2
                out[b] = (wins + 0.5 * ties) / pairs if pairs else np.nan  # one attribute: no pairs (as numpy's empty mean)
            return out

        _KERNELS.extend([count, disambiguation])
    return _KERNELS


def _z_columns(A: np.ndarray) -> np.ndarray:
    """Columns z-scored over words (axis -2), ddof 0; a column without spread stays 0."""
    A = A - A.mean(-2, keepdims=True)
    sd = A.std(-2, keepdims=True)
    return A / np.where(sd > 0, sd, 1)


def _disambiguation_from(C: np.ndarray) -> np.ndarray:
    """Attribute disambiguation from cross-correlation matrices C [..., T, T] -> [...]."""
    flat = np.ascontiguousarray(C.reshape(-1, *C.shape[-2:]), dtype=np.float64)
    return _numba_kernels()[1](flat).reshape(C.shape[:-2])


def _cross(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """A' B / n over words for column-z-scored [..., n, T] arrays: the cross-correlation matrices [..., T, T].
    In torch, so the build's products share one thread pool (numpy's BLAS threads spin against torch's)."""
    import torch

    return (torch.from_numpy(A).mT @ torch.from_numpy(B)).numpy() / A.shape[-2]


def disambiguation_many(P: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """attribute_disambiguation over a leading batch dim [B, n, T] -> [B]."""
    return _disambiguation_from(_cross(_z_columns(P), _z_columns(Y)))


@dataclass
class NullRatings:
    """The ratings side of the permutation-null scores, computed once and shared by every representation x
    step: the shuffled ratings [M, n, T] z-scored over words within each fold and pooled (r, disambiguation),
    and over attributes (2v2)."""

    folds: list[np.ndarray]
    fold_z: list[np.ndarray]  # per fold [M, n_f, T]
    pooled_z: np.ndarray  # [M, n, T]
    row_z: np.ndarray  # [M, n, T]

    @classmethod
    def of(cls, null_Y: np.ndarray, folds: list[np.ndarray]) -> "NullRatings":
        return cls(folds, [_z_columns(null_Y[:, f]) for f in folds], _z_columns(null_Y), _row_z(null_Y))


def null_scores(null_P: np.ndarray, side: NullRatings) -> dict[str, np.ndarray]:
    """Every null score of one representation x step from its M null predictions [M, n, T]: pooled r per
    attribute [M, T] and per fold [M, K, T], 2v2 [M], disambiguation pooled [M] and per fold [M, K].
    r and disambiguation both come from one cross-correlation matrix per null (and per fold): its
    diagonal is each attribute's r, the whole matrix gives the disambiguation."""
    pooled = _cross(_z_columns(null_P), side.pooled_z)  # [M, T, T]
    per_fold = np.stack([_cross(_z_columns(null_P[:, f]), z) for f, z in zip(side.folds, side.fold_z)], 1)  # [M, K, T, T]
    return {
        "r": np.diagonal(pooled, axis1=-2, axis2=-1),
        "fold_r": np.diagonal(per_fold, axis1=-2, axis2=-1),
        "two_v_two": two_v_two_many(null_P, None, side.row_z),
        "disambiguation": _disambiguation_from(pooled),
        "fold_disambiguation": _disambiguation_from(per_fold),
    }


def fold_interval(estimate: float, per_fold: np.ndarray, factor: float,
                  bounds: tuple[float, float] = (-1.0, 1.0)) -> list[float]:
    """95% interval around a cross-validated score that includes refitting variability: a t-interval
    (K-1 df) on the per-fold scores, their variance scaled by `factor` instead of 1/K because the folds
    share training words (Nadeau & Bengio 2003: 1/K + n_test/n_train; `null_fold_factor` measures it).
    Clipped to the metric's range (`bounds`: r lies in [-1, 1], a fraction in [0, 1]): the t-interval is symmetric
    and knows no bounds, and a fraction's band reaching 1.15 would claim values the metric cannot take."""
    K = len(per_fold)
    half = stats.t.ppf(0.975, K - 1) * np.sqrt(factor * np.var(per_fold, ddof=1))
    lo, hi = bounds
    return [float(np.clip(estimate - half, lo, hi)), float(np.clip(estimate + half, lo, hi))]


def nadeau_bengio_factor(folds: list[np.ndarray]) -> float:
    n = sum(len(f) for f in folds)
    n_test = n / len(folds)
    return 1 / len(folds) + n_test / (n - n_test)


def null_fold_factor(null_pooled: np.ndarray, null_per_fold: np.ndarray, fallback: float) -> np.ndarray:
    """How much the fold scores' variance understates the pooled score's, measured on the permutation refits
    (same folds, same refitting, no signal): var over nulls of the pooled score / mean per-null variance of
    its fold scores. null_pooled [M, ...], null_per_fold [M, K, ...]. Needs >= 10 nulls, else `fallback`."""
    if null_pooled.shape[0] < 10:
        return np.full(null_pooled.shape[1:], fallback)
    within = np.var(null_per_fold, axis=1, ddof=1).mean(0)
    return np.where(within > 0, np.var(null_pooled, axis=0, ddof=1) / np.where(within > 0, within, 1), fallback)


def _p_value(null: np.ndarray, observed: float) -> float:
    return float((1 + (null >= observed).sum()) / (1 + len(null)))


def evaluate(P: np.ndarray, Y: np.ndarray, attributes: list[str], groups: dict[str, str], *, folds: list[np.ndarray],
             null_P: np.ndarray | None = None, null_Y: np.ndarray | None = None, timings: dict | None = None) -> dict:
    """Every probe number for one representation (x step) from its out-of-fold predictions P [n, T] and
    ratings Y, both centred within folds (CVResult.centred); null_P/null_Y [perm, n, T] likewise
    (null_Y may be a `NullRatings` computed once for many calls).

    Intervals: `fold_interval` with the fold-correlation factor measured on the nulls (Nadeau–Bengio's
    without them). Every score has its null [mean, sd] and p = (1 + #null >= observed) / (1 + perms).
    """
    timings = {} if timings is None else timings
    with stage(timings, "metrics"):
        group_names = list(dict.fromkeys(groups[a] for a in attributes))
        members = [[i for i, a in enumerate(attributes) if groups[a] == g] for g in group_names]
        r = pearson_columns(P, Y)
        fold_r = np.stack([pearson_columns(P[f], Y[f]) for f in folds])  # [K, T]
        fold_dis = np.array([attribute_disambiguation(P[f], Y[f]) for f in folds])
        out = {
            "mean_r": float(r.mean()),
            "r": [float(x) for x in r],
            "group_r": {g: float(r[idx].mean()) for g, idx in zip(group_names, members)},
            "two_v_two": two_v_two(P, Y),
            "disambiguation": attribute_disambiguation(P, Y),
            "chance": {"mean_r": 0.0, "two_v_two": 0.5, "disambiguation": 0.5},
        }
    nb = nadeau_bengio_factor(folds)
    f_mean = f_dis = nb
    f_group = np.full(len(members), nb)
    if null_P is not None:
        with stage(timings, "nulls"):
            side = null_Y if isinstance(null_Y, NullRatings) else NullRatings.of(null_Y, folds)
            scores = null_scores(null_P, side)
            null_r, null_fold_r, null_2v2 = scores["r"], scores["fold_r"], scores["two_v_two"]
            null_dis, null_fold_dis = scores["disambiguation"], scores["fold_disambiguation"]
            f_mean = float(null_fold_factor(null_r.mean(-1), null_fold_r.mean(-1), nb))
            f_dis = float(null_fold_factor(null_dis, null_fold_dis, nb))
            f_group = null_fold_factor(np.stack([null_r[:, i].mean(-1) for i in members], -1),
                                       np.stack([null_fold_r[..., i].mean(-1) for i in members], -1), nb)
            null_mean_r = null_r.mean(-1)
            out |= {
                "null_mean_r": [float(null_mean_r.mean()), float(null_mean_r.std())],
                "null_two_v_two": [float(null_2v2.mean()), float(null_2v2.std())],
                "null_disambiguation": [float(null_dis.mean()), float(null_dis.std())],
                "p_mean_r": _p_value(null_mean_r, out["mean_r"]),
                "p_two_v_two": _p_value(null_2v2, out["two_v_two"]),
                "p_disambiguation": _p_value(null_dis, out["disambiguation"]),
            }
    with stage(timings, "metrics"):
        out["ci_factor"] = f_mean
        out["mean_r_ci"] = fold_interval(out["mean_r"], fold_r.mean(1), f_mean)
        out["group_r_ci"] = {g: fold_interval(out["group_r"][g], fold_r[:, idx].mean(1), float(fg))
                             for g, idx, fg in zip(group_names, members, f_group)}
        out["disambiguation_ci"] = fold_interval(out["disambiguation"], fold_dis, f_dis, bounds=(0.0, 1.0))  # a fraction
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
    nb_labels = labels[neighbours]  # [n, k], nearest first
    votes = np.zeros((len(X), labels.max() + 1))
    np.add.at(votes, (np.arange(len(X))[:, None], nb_labels), 1)
    top = np.take_along_axis(votes, nb_labels, 1) == votes.max(1, keepdims=True)
    winner = nb_labels[np.arange(len(X)), top.argmax(1)]  # tie: the nearest of the tied classes
    freqs = np.bincount(labels) / len(labels)
    sil = silhouette_score(Zn, labels, metric="cosine") if len(set(labels)) > 1 and np.ptp(Zn) > 0 else 0.0
    return {"knn_accuracy": float((winner == labels).mean()), "knn_chance": float((freqs**2).sum()), "silhouette": float(sil)}


def analyse(features: dict, Y: np.ndarray, attributes: list[str], groups: dict[str, str], categories: list[str] | None,
            *, folds: int = 10, seed: int = 0, n_permutations: int = 100, progress: bool = True,
            timings: dict | None = None) -> dict:
    """Cross-validate a probe for every representation x step and compute every reported number.

    features: name -> [words, dim] (once per prompt) or [words, steps, dim] (per step).
    Returns {name: {"per_step", "dim", "results": [metrics per step], "pred_corr": {step: TxT}}}.
    The ratings side (folds, permutations, centred targets) is prepared once for all representations.
    """
    from tqdm.auto import tqdm

    from .probes import centre_within_folds, cross_validate, prepare_targets

    timings = {} if timings is None else timings
    with stage(timings, "cross-validate"):
        targets = prepare_targets(Y, folds=folds, seed=seed, n_permutations=n_permutations)
    parts = targets.folds
    Yc = centre_within_folds(Y, parts)
    null_Y = centre_within_folds(np.stack([Y[p] for p in targets.permutations]), parts) if n_permutations else None
    null_side = NullRatings.of(null_Y, parts) if n_permutations else None  # the same for every representation
    out = {}
    for name in tqdm(list(features), desc="probes", unit="repr", disable=not progress):
        X = features[name]
        per_step = X.dim() == 3
        Xs = X.transpose(0, 1) if per_step else X[None]  # [steps, words, dim]
        S = Xs.shape[0]
        keep = sorted({0, S // 2, S - 1}) if per_step else [0]  # pred_corr: at the first, middle and last step
        with stage(timings, "cross-validate"):
            cv = cross_validate(Xs, Y, targets=targets)
            P, nP = cv.standardised_all()  # [S, n, T], [S, M, n, T]
        results, pred_corr = [], {}
        for step in range(S):
            metrics = evaluate(P[step], Yc, attributes, groups, folds=parts, timings=timings,
                               null_P=None if nP is None else nP[step], null_Y=null_side)
            with stage(timings, "metrics"):
                metrics["alpha_median"] = float(cv.alphas[step].median())  # torch: the lower middle value
                if categories is not None:
                    metrics |= separation(Xs[step].double().numpy(), categories)
                if step in keep:
                    pred_corr[str(step)] = np.round(np.nan_to_num(np.corrcoef(P[step].T)), 4).tolist()
            results.append(metrics)
        out[name] = {"per_step": per_step, "dim": int(X.shape[-1]), "results": results, "pred_corr": pred_corr}
    return out
