"""Ridge probes from standardised features to all attributes: fit, cross-validate, predict.

One SVD per feature matrix serves every attribute and every alpha. The penalty is chosen per
attribute by generalised cross-validation (GCV) on the training words only, and the
standardisation is fitted on the training words only. Features may carry leading batch dims
(e.g. [steps, words, dim]): all steps of a representation are solved in one batched SVD.

Permutation nulls ride along as extra target columns (the ratings with their rows shuffled):
each gets its own alpha and its own fit, exactly like the real ratings, at the cost of one
matrix product.
"""

from dataclasses import dataclass, field

import numpy as np
import torch

from .errors import SdvizError

ALPHAS = torch.logspace(-2, 7, 19, dtype=torch.float64)  # standardised features: the scale is ~words x dims


CONSTANT_RTOL = 1e-10  # a column whose spread is below this fraction of its largest |value| is constant


def standardise_stats(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std per feature over words (axis -2). A constant feature gets std 1 (it stays 0
    after centring). "Constant" is judged relative to the column's own magnitude, so the
    probes are the same for features x 1e-9 and x 1e9 (an absolute threshold zeroed small features)."""
    mean = X.mean(-2, keepdim=True)
    std = X.std(-2, keepdim=True, correction=0)
    scale = X.abs().amax(-2, keepdim=True)
    return mean, torch.where(std > CONSTANT_RTOL * scale, std, torch.ones_like(std))


@dataclass
class Ridge:
    """A fitted probe: predict with ((x - mean) / std) @ weight + bias."""

    weight: torch.Tensor  # [..., dim, targets]
    bias: torch.Tensor  # [..., targets]
    mean: torch.Tensor  # [..., dim]
    std: torch.Tensor  # [..., dim]
    alpha: torch.Tensor  # [..., targets]

    def predict(self, X: torch.Tensor) -> torch.Tensor:
        Z = (X.to(self.weight) - self.mean[..., None, :]) / self.std[..., None, :]
        return Z @ self.weight + self.bias[..., None, :]


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


def _gcv_alphas(C: torch.Tensor, s: torch.Tensor, yy: torch.Tensor, n: int, alphas: torch.Tensor) -> torch.Tensor:
    """Per-target alpha minimising GCV = RSS / (1 - df/n)^2, from the decomposition alone.

    C = U'Yc [..., k, T] (the centred targets in the left singular basis), yy = ||Yc||^2 per target [..., T].
    """
    C2 = C**2
    s2 = s[..., None, :] ** 2  # [..., 1, k]
    f = s2 / (s2 + alphas[:, None])  # [..., A, k] shrinkage factors
    rss = yy[..., None, :] - (2 * f - f**2) @ C2  # [..., A, T]
    df = f.sum(-1, keepdim=True)  # [..., A, 1]
    gcv = rss.clamp_min(0) / (1 - df / n).clamp_min(1e-6) ** 2
    return alphas[gcv.argmin(-2)]  # [..., T]


def fit_ridge(X: torch.Tensor, Y: torch.Tensor, alphas: torch.Tensor = ALPHAS, alpha=None) -> Ridge:
    """Fit ridge from X [..., n, d] to Y [n, T]; alpha per target by GCV unless `alpha` is given."""
    X = X.to(torch.float64)
    Y = Y.to(X)
    mean, std, U, s, Vh = _decompose(X)
    y_mean = Y.mean(0)
    Yc = Y - y_mean
    C = U.transpose(-1, -2) @ Yc  # [..., k, T]
    if alpha is None:
        chosen = _gcv_alphas(C, s, (Yc**2).sum(0), Yc.shape[0], alphas.to(X))
    else:
        chosen = torch.full((*X.shape[:-2], Y.shape[1]), float(alpha), dtype=X.dtype)
    D = s[..., :, None] / (s[..., :, None] ** 2 + chosen[..., None, :])  # [..., k, T]
    weight = Vh.transpose(-1, -2) @ (D * C)
    bias = y_mean.expand(*X.shape[:-2], Y.shape[1])
    return Ridge(weight, bias.clone(), mean.squeeze(-2), std.squeeze(-2), chosen)


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
    raw: torch.Tensor | None = None  # [..., n, T * (1 + P)]: predictions and null predictions side by side

    def centred(self, Y: np.ndarray):
        """(predictions, ratings) centred within folds, as numpy."""
        return centre_within_folds(self.predictions.numpy(), self.folds, scale=True), centre_within_folds(Y, self.folds)

    def standardised_all(self) -> tuple[np.ndarray, np.ndarray | None]:
        """(predictions [..., n, T], null predictions [..., P, n, T]) standardised within folds, exactly as
        `centred` / `centred_null` do, in one in-place pass over the side-by-side array: the nulls are most of a
        build's numbers, and transposing them before centring cost more than the centring. The nulls come back as
        a strided view."""
        A = self.raw.clone()
        for test in self.folds:
            idx = torch.as_tensor(test)
            part = A.index_select(-2, idx)
            part -= part.mean(-2, keepdim=True)
            sd = part.std(-2, keepdim=True, correction=0)
            part /= torch.where(sd > 0, sd, torch.ones_like(sd))
            A.index_copy_(-2, idx, part)
        T = self.predictions.shape[-1]
        null = A[..., T:].unflatten(-1, (-1, T)).movedim(-2, -3).numpy() if self.null_predictions is not None else None
        return A[..., :T].numpy(), null

    def centred_null(self, Y: np.ndarray):
        """([P, ..., n, T] null predictions, [P, n, T] their shuffled ratings), centred within folds."""
        P = np.moveaxis(self.null_predictions.numpy(), -3, 0)
        return centre_within_folds(P, self.folds, scale=True), centre_within_folds(np.stack([Y[p] for p in self.permutations]), self.folds)


@dataclass
class Targets:
    """The ratings side of a cross-validation, computed once and shared by every representation:
    the outer folds, the permutations, and each fold's training targets (real ratings and the
    row-shuffled copies side by side as columns), centred on their training mean."""

    Y: np.ndarray  # [n, T] the real ratings
    folds: list[np.ndarray]
    permutations: np.ndarray | None  # [P, n]
    stacked: torch.Tensor  # [n, T * (1 + P)]: Y, then Y[permutations[p]] for each p
    train: list[np.ndarray]
    train_mean: list[torch.Tensor]  # per fold [T'], mean of the training words (uncentred units)
    train_centred: list[torch.Tensor]  # per fold [n_train, T']
    train_ss: list[torch.Tensor]  # per fold [T'], sum of squares of train_centred


def prepare_targets(Y: np.ndarray, *, folds: int = 10, seed: int = 0, n_permutations: int = 0) -> Targets:
    Yt = torch.as_tensor(np.asarray(Y, dtype=np.float64))
    n = Yt.shape[0]
    parts = kfold(n, folds, seed)
    perms = np.stack([np.random.default_rng([seed, 1, p]).permutation(n) for p in range(n_permutations)]) if n_permutations else None
    targets = Yt if perms is None else torch.cat([Yt] + [Yt[p] for p in perms], dim=1)
    trains = [np.setdiff1d(np.arange(n), test) for test in parts]
    means = [targets[train].mean(0) for train in trains]
    centred = [targets[train] - mean for train, mean in zip(trains, means)]
    return Targets(np.asarray(Y, dtype=np.float64), parts, perms, targets, trains, means, centred,
                   [(c**2).sum(0) for c in centred])


# Steps are solved together up to this many values in C = U'Yc ([steps, k, targets]): bounds memory.
_CHUNK_VALUES = 40_000_000


def cross_validate(X: torch.Tensor, Y: np.ndarray, *, folds: int = 10, seed: int = 0, n_permutations: int = 0,
                   alphas: torch.Tensor = ALPHAS, targets: Targets | None = None) -> CVResult:
    """Outer K-fold over words. Inside each fold, standardisation and alpha see training words only.

    X [..., n, d] (leading dims, e.g. steps, are solved in one batch). One eigendecomposition per fold
    and step serves every attribute, alpha and permutation. Pass `targets` (prepare_targets) to share
    the ratings side between representations.
    """
    targets = targets or prepare_targets(Y, folds=folds, seed=seed, n_permutations=n_permutations)
    X = X.to(torch.float64)
    n, T = targets.Y.shape
    if X.shape[-2] != n:
        raise SdvizError(f"{X.shape[-2]} feature rows but {n} rated words.")
    lead = X.shape[:-2]
    flat = X.reshape(-1, n, X.shape[-1])
    k = min(n, X.shape[-1])
    chunk = max(1, _CHUNK_VALUES // (k * targets.stacked.shape[1]))
    outs, alphas_out = [], []
    for start in range(0, flat.shape[0], chunk):
        out, chosen = _cross_validate_block(flat[start : start + chunk], targets, alphas.to(torch.float64))
        outs.append(out)
        alphas_out.append(chosen)
    out = torch.cat(outs).reshape(*lead, n, -1)
    fold_alphas = torch.cat(alphas_out).reshape(*lead, len(targets.folds), -1)[..., :T]
    P = 0 if targets.permutations is None else len(targets.permutations)
    null = out[..., T:].unflatten(-1, (P, T)).movedim(-2, -3) if P else None
    return CVResult(out[..., :T], null, targets.permutations, fold_alphas, targets.folds, out)


def _cross_validate_block(X: torch.Tensor, targets: Targets, alphas: torch.Tensor):
    """[S, n, d] features -> ([S, n, T'] out-of-fold predictions, [S, folds, T'] chosen alphas).

    Held-out ratings never enter a fold's arithmetic, not even as rounding: the primal path sums
    per-fold products of the *training* folds only (prefix + suffix sums).
    """
    S, n, d = X.shape
    out = torch.empty(S, n, targets.stacked.shape[1], dtype=torch.float64)
    x_all = X.mean(-2, keepdim=True)
    Xg = X - x_all  # a shift of every word's features cancels in each fold's standardisation
    others = None  # yields, fold by fold, the sum of Xg'Y over the other folds' words
    chosen_all = []
    for test, train, y_mean, Yc, yy in zip(targets.folds, targets.train, targets.train_mean, targets.train_centred,
                                           targets.train_ss):
        n_tr = len(train)
        mean, std = standardise_stats(X[:, train, :])
        Z = (X[:, train, :] - mean) / std
        Zte = (X[:, test, :] - mean) / std
        if n_tr <= d:  # more dims than words: the dual, from the words' Gram matrix
            evals, U = torch.linalg.eigh(Z @ Z.mT)
            s, inv = _singular(evals)
            C = U.mT @ Yc  # [S, k, T']
            Zt = (Zte @ Z.mT) @ U * inv[:, None, :]  # test words in the singular basis
        else:  # more words than dims: the primal, with Z'Yc from per-fold products shared by all folds
            if others is None:
                others = _leave_one_out_sums([Xg[:, t, :].mT @ targets.stacked[t] for t in targets.folds])
            ZtY_all = next(others)
            evals, V = torch.linalg.eigh(Z.mT @ Z)
            s, inv = _singular(evals)
            # C = U'Yc = inv * V' Z'Yc, with Z'Yc = (others - n_tr * shift y_mean') / std for the training words
            # (shift: their mean in globally centred units); the small [S, k, d] factors are applied first, so
            # the [S, d, T'] sums are read once by one product and one rank-1 update
            W = V.mT * inv[:, :, None] / std  # [S, k, d]
            C = W @ ZtY_all
            C -= (W @ (mean - x_all).mT) * (n_tr * y_mean)
            Zt = Zte @ V
        chosen = _gcv_alphas(C, s, yy, n_tr, alphas)  # [S, T']
        D = chosen[:, None, :] + s[:, :, None] ** 2  # s / (s^2 + alpha) * C, in place: [S, k, T'] is the big one
        D.reciprocal_().mul_(s[:, :, None]).mul_(C)
        out[:, test, :] = Zt @ D + y_mean
        chosen_all.append(chosen)
    return out, torch.stack(chosen_all, -2)


def _leave_one_out_sums(blocks: list[torch.Tensor]):
    """Yield, for f = 0..K-1, the sum of every block but the f-th, from prefix and suffix sums (about 3K
    additions, not K^2). The prefix is accumulated in place and each sum lands in one reused buffer: these are
    the largest arrays of a build, so fresh memory per addition costs more than the additions (the yielded
    tensor is valid until the next one)."""
    K = len(blocks)
    suffix = [None] * K
    for f in range(K - 2, -1, -1):
        suffix[f] = blocks[K - 1] if f == K - 2 else suffix[f + 1] + blocks[f + 1]
    yield suffix[0]
    prefix, buffer = blocks[0].clone(), torch.empty_like(blocks[0])
    for f in range(1, K):
        if f > 1:
            prefix += blocks[f - 1]
        suffix[f - 1] = None
        yield prefix if f == K - 1 else torch.add(prefix, suffix[f], out=buffer)


def _singular(evals: torch.Tensor):
    """Singular values from Gram eigenvalues; directions below 1e-10 of the largest get s = 0 (inv = 0)."""
    s = evals.clamp_min(0).sqrt()
    inv = torch.where(s > 1e-10 * s.amax(-1, keepdim=True), 1 / s, torch.zeros_like(s))
    return torch.where(inv > 0, s, torch.zeros_like(s)), inv
