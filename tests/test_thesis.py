"""What a UNet block adds beyond CLIP, attribute entanglement, and the findings' verdicts (issue 18), on planted
data with known answers, an independent scikit-learn computation, and the leakage canary."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import Ridge as SkRidge
from sklearn.model_selection import PredefinedSplit
from sklearn.preprocessing import StandardScaler

from sdviz import entangle, findings, partition
from sdviz.probes import cross_validate, prepare_targets


def _t(X):
    return torch.as_tensor(np.asarray(X, dtype=np.float64))


def _parts(clip, block, Y, *, folds=10, perms=0, seed=0, **kw):
    """Scores of CLIP alone, the block alone (one step), both, and the residual probe."""
    targets = prepare_targets(Y, folds=folds, seed=seed, n_permutations=perms)
    c = partition.score(partition.cv_predict([_t(clip)[None]], targets, **kw), targets)
    fits = partition.fit_block(_t(clip), _t(block)[None], targets, **kw)
    return targets, c, fits


# -- an independent computation: scikit-learn's Ridge on each fold, scored by hand -----------------------------
def _sk_score(groups, Y, folds, alpha):
    """Mean over attributes of pooled Pearson r, predictions standardised and ratings centred within each fold."""
    test_fold = np.empty(len(Y), int)
    for i, f in enumerate(folds):
        test_fold[f] = i
    P, Yc = np.empty_like(Y), np.empty_like(Y)
    for train, test in PredefinedSplit(test_fold).split():
        scaled = [StandardScaler().fit(X[train]) for X in groups]
        Z_tr = np.hstack([s.transform(X[train]) for s, X in zip(scaled, groups)])
        Z_te = np.hstack([s.transform(X[test]) for s, X in zip(scaled, groups)])
        pred = SkRidge(alpha=alpha).fit(Z_tr, Y[train]).predict(Z_te)
        P[test] = (pred - pred.mean(0)) / pred.std(0)
        Yc[test] = Y[test] - Y[test].mean(0)
    return np.mean([np.corrcoef(P[:, t], Yc[:, t])[0, 1] for t in range(Y.shape[1])])


@pytest.mark.parametrize("d_block", [12, 150])  # the primal-sized and the dual-sized case (more dims than words)
def test_joint_and_unique_scores_equal_scikit_learn_at_equal_penalties(d_block):
    rng = np.random.default_rng(d_block)
    n, T = 90, 6
    clip = rng.normal(size=(n, 10))
    block = np.hstack([clip @ rng.normal(size=(10, d_block // 2)), rng.normal(size=(n, d_block - d_block // 2))]) * 3 + 7
    Y = clip @ rng.normal(size=(10, T)) + block[:, :8] @ rng.normal(size=(8, T)) * 0.3 + rng.normal(size=(n, T)) * 4
    equal = dict(ratios=torch.tensor([1.0], dtype=torch.float64), alphas=torch.tensor([40.0], dtype=torch.float64))
    targets, c, fits = _parts(clip, block, Y, folds=6, **equal)
    sk_clip = _sk_score([clip], Y, targets.folds, 40.0)
    sk_block = _sk_score([block], Y, targets.folds, 40.0)
    sk_joint = _sk_score([clip, block], Y, targets.folds, 40.0)
    parts = partition.block_parts(fits, c, targets.folds)
    assert abs(partition.estimate(c.pooled[0], c.fold[0], None, None, targets.folds)["value"] - sk_clip) < 1e-6
    assert abs(parts["block"][0]["value"] - sk_block) < 1e-6
    assert abs(parts["joint"][0]["value"] - sk_joint) < 1e-6
    assert abs(parts["unet_unique"][0]["value"] - (sk_joint - sk_clip)) < 1e-6
    assert abs(parts["clip_unique"][0]["value"] - (sk_joint - sk_block)) < 1e-6
    assert abs(parts["shared"][0]["value"] - (sk_block + sk_clip - sk_joint)) < 1e-6


def test_one_group_gives_the_probes_own_cross_validated_predictions():
    """The kernel form with one group is the project's probe: same standardisation, penalty grid and GCV."""
    rng = np.random.default_rng(5)
    for d in (20, 200):
        X, Y = rng.normal(size=(100, d)), rng.normal(size=(100, 5))
        Y[:, 0] += X[:, 0] * 2
        targets = prepare_targets(Y, folds=5, seed=1, n_permutations=3)
        ours = partition.cv_predict([_t(X)[None]], targets)[0]
        theirs = cross_validate(_t(X), Y, targets=targets).raw
        torch.testing.assert_close(ours, theirs, rtol=1e-7, atol=1e-7)


# -- planted data with known answers ----------------------------------------------------------------------------
def _planted(seed, n=400, extra=True):
    """Ratings from 3 factors CLIP and the block share and 2 factors only the block holds (if `extra`). The held-out
    r of a perfect linear read-out of a feature set is sqrt(its explained variance), so the known unique part of
    the block is the mean over attributes of sqrt(var(shared + extra) / var) - sqrt(var(shared) / var)."""
    rng = np.random.default_rng(seed)
    T = 8
    f_shared, f_extra = rng.normal(size=(n, 3)), rng.normal(size=(n, 2))
    A, B = rng.normal(size=(3, T)), rng.normal(size=(2, T)) * (1.0 if extra else 0.0)
    noise_sd = 1.5
    Y = f_shared @ A + f_extra @ B + rng.normal(size=(n, T)) * noise_sd
    clip = f_shared @ rng.normal(size=(3, 24)) + rng.normal(size=(n, 24)) * 0.05
    block = np.hstack([f_shared @ rng.normal(size=(3, 16)), f_extra @ rng.normal(size=(2, 16))]) + rng.normal(size=(n, 32)) * 0.05
    if not extra:  # UNet = CLIP + noise: the block is a noisy copy of CLIP's features
        block = clip @ rng.normal(size=(24, 32)) + rng.normal(size=(n, 32)) * 0.5
    total = (A**2).sum(0) + (B**2).sum(0) + noise_sd**2
    known = np.mean(np.sqrt(((A**2).sum(0) + (B**2).sum(0)) / total) - np.sqrt((A**2).sum(0) / total))
    return clip, block, Y, known


def test_a_unet_that_is_clip_plus_noise_adds_nothing_beyond_its_null():
    clip, block, Y, known = _planted(0, extra=False)
    assert known == 0
    targets, c, fits = _parts(clip, block, Y, perms=50)
    part = partition.block_parts(fits, c, targets.folds)
    unique = part["unet_unique"][0]
    mean, sd = unique["null"]
    assert abs(unique["value"] - mean) < 3 * sd and unique["p"] > 0.05, unique
    assert unique["ci"][0] < 0 < unique["ci"][1], unique
    residual = part["residual"][0]  # what is left of the block once CLIP is regressed out carries nothing either
    assert abs(residual["value"] - residual["null"][0]) < 3 * residual["null"][1], residual
    assert part["shared"][0]["value"] > 0.5  # and all it knows, CLIP knows too


def test_a_unet_with_planted_extra_signal_gives_a_unique_part_of_the_planted_size():
    clip, block, Y, known = _planted(1)
    targets, c, fits = _parts(clip, block, Y, perms=20)
    part = partition.block_parts(fits, c, targets.folds)
    unique = part["unet_unique"][0]
    assert known > 0.1
    assert abs(unique["value"] - known) < 0.03, (unique["value"], known)
    assert unique["ci"][0] > 0 and unique["p"] == pytest.approx(1 / 21)
    assert part["clip_unique"][0]["value"] == pytest.approx(0, abs=0.02)  # the block holds CLIP's factors too
    residual = part["residual"][0]  # the residual probe sees the extra factors, so it decodes well above its null
    assert residual["ci"][0] > 0 and residual["value"] > residual["null"][0] + 3 * residual["null"][1]


def _block_correlated(T, rng):
    """A human-like attribute matrix: two blocks of attributes that go together, from two latent factors."""
    load = np.zeros((2, T))
    load[0, : T // 2], load[1, T // 2 :] = 1, 1
    return load + rng.normal(size=(2, T)) * 0.3


def test_a_planted_entanglement_is_recovered_by_the_rsa():
    rng = np.random.default_rng(2)
    n, T = 300, 10
    Y = rng.normal(size=(n, 2)) @ _block_correlated(T, rng) + rng.normal(size=(n, T)) * 0.7
    human = np.corrcoef(Y.T)
    targets = prepare_targets(Y, folds=10, seed=0, n_permutations=30)
    folds = targets.folds
    # 1. predictions whose attribute pattern is the humans' own: RSA 1 and the same entanglement
    stacked = targets.stacked.numpy()[None]  # the ratings and their permutations, as if predicted perfectly
    P = partition.standardise_predictions(torch.as_tensor(stacked), folds)
    rsa, off, matrices = entangle.entangle(P, T, human, folds)
    assert rsa.pooled[0] > 0.99
    assert off.pooled[0] == pytest.approx(entangle.offdiag(human), abs=0.02)
    # 2. a probe on features that carry the ratings recovers the pattern, far above its null
    X = Y @ rng.normal(size=(T, 30)) + rng.normal(size=(n, 30)) * 0.5
    P = partition.standardise_predictions(partition.cv_predict([_t(X)[None]], targets), folds)
    rsa, off, _ = entangle.entangle(P, T, human, folds)
    est = rsa.estimate(0, folds)
    assert est["value"] > 0.9 and est["ci"][0] > 0.8 and est["p"] == pytest.approx(1 / 31)
    # 3. a planted entanglement the humans do not have: features that hold one mixture of all the ratings make
    # every prediction a multiple of it, so every pair of predicted attributes correlates near +-1
    mixture = Y @ rng.normal(size=T)
    X1 = np.outer(mixture, rng.normal(size=30)) + rng.normal(size=(n, 30)) * 0.05
    P1 = partition.standardise_predictions(partition.cv_predict([_t(X1)[None]], targets), folds)
    _, off1, m1 = entangle.entangle(P1, T, human, folds)
    assert off1.pooled[0] > 0.95 > 2 * entangle.offdiag(human)
    assert np.abs(entangle.upper(m1[0])).min() > 0.9
    assert off1.estimate(0, folds)["ci"][0] > entangle.offdiag(human)


# -- the canary: noise features, 20 seeds fixed in advance --------------------------------------------------------
CANARY_SEEDS = list(range(20))
Z_OUT = 3.0


@pytest.fixture(scope="module")
def nouns120(binder_csv):
    from sdviz.ratings import load_ratings

    return load_ratings(binder_csv).values[:120]


def _canary_scores(Y, seed: int, features=None) -> dict:
    """Every new number as Scores (value, per fold, null draws) for noise CLIP and a noise block at two steps."""
    from sdviz.probes import centre_within_folds

    rng = np.random.default_rng(200 + seed)
    clip, blocks = features or (rng.normal(size=(len(Y), 16)), rng.normal(size=(2, len(Y), 16)))
    targets = prepare_targets(Y, folds=10, seed=seed, n_permutations=100)
    folds, T = targets.folds, Y.shape[1]
    human = np.corrcoef(Y.T)
    clip_raw = partition.cv_predict([_t(clip)[None]], targets)
    c = partition.score(clip_raw, targets)
    fits = partition.fit_block(_t(clip), _t(blocks), targets)
    c2 = partition.Scores(*(np.repeat(a, 2, 0) for a in (c.pooled, c.fold, c.null, c.null_fold)))
    out = {"clip_alone": c, "block": fits.block, "joint": fits.joint, "unet_unique": fits.joint - c2,
           "clip_unique": fits.joint - fits.block, "shared": fits.block + c2 - fits.joint, "residual": fits.residual}
    for name, P in (("clip", partition.standardise_predictions(clip_raw, folds)), ("block", fits.block_predictions)):
        rsa, off, _ = entangle.entangle(P, T, human, folds)
        out |= {f"{name} rsa": rsa, f"{name} offdiag": off}
    dis = entangle.disambiguation(fits.block_predictions, centre_within_folds(targets.stacked.numpy(), folds), T, folds)
    for trend, scores in (("offdiag slope", out["block offdiag"]), ("disambiguation slope", dis)):
        s = entangle.slope(scores)
        out[trend] = partition.Scores(np.atleast_1d(s.pooled), s.fold[None], s.null[None], s.null_fold[None])
    return out


def _z(scores: partition.Scores):
    """(z of each step's value against its null, the null draws' own leave-one-out z) in null sd."""
    real, own = [], []
    for k in range(len(scores.pooled)):
        null = scores.null[k]
        real.append((scores.pooled[k] - null.mean()) / null.std())
        for i in range(len(null)):
            rest = np.delete(null, i)
            own.append((null[i] - rest.mean()) / rest.std())
    return np.array(real), np.array(own)


@pytest.fixture(scope="module")
def canary(nouns120):
    """{seed: {number: (z per step, null draws' own z)}} for every new number on noise features."""
    return {seed: {name: _z(s) for name, s in _canary_scores(nouns120, seed).items()} for seed in CANARY_SEEDS}


def test_canary_every_new_number_on_noise_features_stays_near_its_null(canary):
    """Pure noise: every new number (the partition's parts, RSA, off-diagonal, the slopes) at every step is one
    more draw from its null. About 20 numbers x 20 seeds are checked, so a few beyond 3 null sd are expected by
    chance, as the null draws themselves show: the check is that none is beyond 4 sd, and that those beyond 3 sd
    are no more frequent than among the null draws (with a binomial margin). A leak fails both (next test)."""
    real = np.concatenate([z for numbers in canary.values() for z, _ in numbers.values()])
    own = np.concatenate([o for numbers in canary.values() for _, o in numbers.values()])
    assert np.abs(real).max() < 4, {(seed, name): z.round(2).tolist() for seed, numbers in canary.items()
                                    for name, (z, _) in numbers.items() if np.abs(z).max() >= 4}
    rate = (np.abs(own) >= Z_OUT).mean()
    expected = rate * len(real)
    beyond = int((np.abs(real) >= Z_OUT).sum())
    print(f"canary: {len(real)} numbers, {beyond} beyond {Z_OUT} sd (the nulls' own rate gives {expected:.1f}), "
          f"largest |z| {np.abs(real).max():.2f}, mean z {real.mean():+.3f}")
    assert beyond <= expected + 3 * np.sqrt(expected) + 1, (beyond, expected, len(real))
    assert np.abs(real.mean()) < 3 / np.sqrt(len(CANARY_SEEDS))  # and not shifted: the mean z is near 0


def test_canary_fails_on_a_planted_leak(nouns120):
    """Features that carry the ratings (a leak through the features) put the numbers far outside their nulls."""
    rng = np.random.default_rng(7)
    Y = nouns120
    leak = np.hstack([rng.normal(size=(len(Y), 16)), Y[:, :4] + rng.normal(size=(len(Y), 4))])
    blocks = np.stack([leak, leak])
    scores = _canary_scores(Y, 0, features=(rng.normal(size=(len(Y), 16)), blocks))
    for name in ("block", "joint", "unet_unique", "residual"):
        assert _z(scores[name])[0].min() > 4, name


# -- verdicts ------------------------------------------------------------------------------------------------------
def test_the_verdict_rule_reads_only_the_interval():
    assert findings.verdict([0.01, 0.3]) == "holds"
    assert findings.verdict([-0.3, -0.01]) == "does not hold"
    assert findings.verdict([-0.01, 0.3]) == "cannot tell at this precision"


def test_a_slope_across_steps_is_recovered_with_its_sign():
    S, K, M = 6, 5, 4
    rising = np.linspace(0.2, 0.7, S)
    scores = partition.Scores(rising, np.tile(rising[:, None], K), np.zeros((S, M)), np.zeros((S, M, K)))
    assert float(entangle.slope(scores).pooled) == pytest.approx(0.5)


# -- in a build ----------------------------------------------------------------------------------------------------
def test_a_build_writes_the_partition_entanglement_and_findings_and_rebuilds_them_identically(tiny_bundle, subset_csv, tmp_path):
    import json

    from sdviz import results
    from sdviz.bundle import load_bundle
    from sdviz.cli import main

    report = load_bundle(tiny_bundle).report  # validated, the three keys included
    blocks = [n for n in results.names(report, True) if n.startswith("unet.")]
    part, ent, found = results.partition(report), results.entanglement(report), results.findings(report)
    assert part["clip"] == "clip.cond" and set(part["blocks"]) == set(blocks)
    for name in blocks:  # the block alone is the report's own mean r of that block, step by step
        ours = [e["value"] for e in part["blocks"][name]["block"]]
        assert ours == pytest.approx([r["mean_r"] for r in report["representations"][name]["results"]], abs=1e-9)
    assert part["clip_alone"]["value"] == pytest.approx(results.result(report, "clip.cond")["mean_r"], abs=1e-9)
    assert set(ent["reps"]) == {"clip.cond", *blocks}
    assert all(len(r["matrices"]) == len(report["representations"][n]["results"]) for n, r in ent["reps"].items())
    assert ent["human_offdiag"] == pytest.approx(entangle.offdiag(np.asarray(report["human_corr"])), abs=1e-3)
    assert [f["id"] for f in found] == ["clip_vs_unet", "domains", "steps"]
    for f in found:
        assert f["verdict"] == findings.verdict(f["ci"]) and f"{f['value']:+.3f}" in f["sentence"]
        assert "chance" in f["baseline"] and "word form" in f["baseline"]
    again = tmp_path / "again"
    args = ["build", "--model", "tiny", "--device", "cpu", "--ratings", str(subset_csv), "--steps", "3", "--folds", "5",
            "--permutations", "10", "--cache", str(tiny_bundle.parent / "cache"), "--out", str(again), "--quiet"]
    assert main(args) == 0
    assert json.loads((again / "report.json").read_text()) == json.loads((tiny_bundle / "report.json").read_text())


def test_ranks_equal_scipys_with_and_without_ties():
    from scipy import stats

    rng = np.random.default_rng(3)
    a = rng.normal(size=(4, 50))
    np.testing.assert_array_equal(entangle.ranks(a), stats.rankdata(a, axis=-1))
    a[1, :10] = 0.0  # ties: a constant prediction column gives exact zeros in its row of the matrix
    np.testing.assert_array_equal(entangle.ranks(a), stats.rankdata(a, axis=-1))
