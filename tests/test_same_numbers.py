"""The fast probe pipeline (issue: build speed) reports exactly the numbers of the v0.1 algorithms.

tests/reference_v01.py keeps the v0.1 cross-validation and metrics verbatim. On the same features (the 60-word
tiny cache), every number both report must agree to 1e-10. Two definitions changed on purpose and are
compared only for their new meaning elsewhere (tests/test_probes.py): the intervals `mean_r_ci` and
`group_r_ci` now include refitting variability (docs/methods.md). One rule was made exact: in 2v2, a pair whose
two sides differ by less than float64 rounding noise (analysis.TIE) is a tie (1/2): words with equal predictions
(equal word form) were split at random by rounding in v0.1, so the reference here gets the same rule (`_exact_ties`).
"""

import numpy as np
import pytest
import reference_v01 as ref
import torch

from sdviz import analysis
from sdviz.build import wordform_features
from sdviz.extract import load_features
from sdviz.ratings import load_ratings

REDEFINED = {"mean_r_ci", "group_r_ci"}


def _assert_same(ours, theirs, where=""):
    if isinstance(theirs, dict):
        for key, value in theirs.items():
            if key not in REDEFINED:
                _assert_same(ours[key], value, f"{where}.{key}")
    elif isinstance(theirs, (list, tuple)):
        assert len(ours) == len(theirs), where
        for i, (a, b) in enumerate(zip(ours, theirs)):
            _assert_same(a, b, f"{where}[{i}]")
    elif isinstance(theirs, float):
        assert ours == pytest.approx(theirs, abs=1e-10, rel=0), where
    else:
        assert ours == theirs, where


def _exact_ties(P, Y):
    """v0.1's two_v_two with analysis.TIE: sides closer than float rounding noise are a tie."""
    D = 1 - ref._row_z(P) @ ref._row_z(Y).T
    margin = (D + D.T) - (np.diag(D)[:, None] + np.diag(D)[None, :])
    score = (margin > analysis.TIE) + 0.5 * (np.abs(margin) <= analysis.TIE)
    i, j = np.triu_indices(len(P), k=1)
    return float(score[i, j].mean())


def test_report_numbers_equal_the_v01_algorithms_on_the_same_features(tiny_bundle, subset_csv, monkeypatch):
    monkeypatch.setattr(ref, "two_v_two", _exact_ties)
    cache = load_features(tiny_bundle.parent / "cache")
    ratings = load_ratings(subset_csv)
    features = cache.features | {analysis.WORDFORM: wordform_features(cache.words)}
    args = (ratings.values, ratings.attributes, ratings.groups, ratings.categories)
    ours = analysis.analyse(features, *args, folds=6, seed=3, n_permutations=12, progress=False)
    theirs = ref.analyse(features, *args, folds=6, seed=3, n_permutations=12, bootstraps=50, progress=False)
    assert set(ours) == set(theirs)
    for name in theirs:
        _assert_same(ours[name], theirs[name], name)
    # and the new numbers sit beside them
    res = ours["unet.mid"]["results"][-1]
    assert {"null_disambiguation", "p_disambiguation", "disambiguation_ci", "chance"} <= set(res)


def test_batched_null_two_v_two_equals_one_at_a_time():
    rng = np.random.default_rng(0)
    P, Y = rng.normal(size=(7, 50, 9)), rng.normal(size=(7, 50, 9))
    P[3] = Y[3]  # perfect
    P[4, :, :] = 1.0  # constant rows: every pair a tie
    batched = analysis.two_v_two_many(P, Y)
    assert batched.tolist() == [_exact_ties(p, y) for p, y in zip(P, Y)] == [analysis.two_v_two(p, y) for p, y in zip(P, Y)]
    assert batched[3] == 1.0 and batched[4] == 0.5
    assert analysis.disambiguation_many(P, Y).tolist() == pytest.approx([ref.attribute_disambiguation(p, y) for p, y in zip(P, Y)],
                                                                       abs=1e-12)


def test_fast_cross_validation_equals_v01_in_primal_and_dual():
    rng = np.random.default_rng(1)
    from sdviz.probes import cross_validate

    Y = rng.uniform(0, 6, size=(80, 5))
    for d in (3, 40, 200):  # 200 > training words: the dual path
        X = torch.as_tensor(rng.normal(size=(2, 80, d)) * 4 + 7)
        a = cross_validate(X, Y, folds=5, seed=2, n_permutations=4)
        b = ref.cross_validate(X, Y, folds=5, seed=2, n_permutations=4)
        torch.testing.assert_close(a.predictions, b.predictions, rtol=0, atol=1e-10)
        torch.testing.assert_close(a.null_predictions, b.null_predictions, rtol=0, atol=1e-10)
        assert torch.equal(a.alphas, b.alphas)
