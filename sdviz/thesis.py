"""The paper's thesis, tested on one build's features: report["partition"], report["entanglement"] and
report["findings"] (shapes: `results`; definitions: docs/methods.md).

Uses the build's own folds and permutations (`probes.prepare_targets` with the same settings), so every
number here is paired, fold by fold and permutation by permutation, with the report's other numbers.
"""

import numpy as np
import torch

from . import entangle, findings, partition, results
from .analysis import WORDFORM
from .families import COND
from .io import stage
from .probes import centre_within_folds, prepare_targets


def unet_names(features: dict) -> list[str]:
    """The per-step UNet representations partitioned against CLIP, in feature order."""
    return [n for n, X in features.items() if n.startswith("unet.") and X.dim() == 3]


def analyse_thesis(features: dict, Y: np.ndarray, report: dict, *, folds: int = 10, seed: int = 0,
                   n_permutations: int = 100, timings: dict | None = None) -> dict:
    """{"partition", "entanglement", "findings"} for a report whose representations include clip.cond and at least
    one per-step UNet block; {} otherwise (a text encoder, or a build without CLIP). features: name -> [n, d] or
    [n, steps, d] for the rated words of Y (complete cases), as given to `analysis.analyse`."""
    timings = {} if timings is None else timings
    blocks = unet_names(features)
    if COND not in features or not blocks:
        return {}
    with stage(timings, "thesis"):
        targets = prepare_targets(Y, folds=folds, seed=seed, n_permutations=n_permutations)
        parts, T = targets.folds, Y.shape[1]
        human = np.nan_to_num(np.corrcoef(np.asarray(Y, float).T))
        Yc_all = centre_within_folds(targets.stacked.numpy(), parts)
        clip_X = torch.as_tensor(features[COND], dtype=torch.float64)[None]
        clip_raw = partition.cv_predict([clip_X], targets)
        clip_scores = partition.score(clip_raw, targets)
        ent_reps = {COND: _entanglement(partition.standardise_predictions(clip_raw, parts), T, human, parts, per_step=False)}
        best = results.best_per_step(report)
        best = best if best in blocks else blocks[0]
        blocks_out, block_scores, trend = {}, {}, None
        for name in blocks:
            fits = partition.fit_block(clip_X, torch.as_tensor(features[name], dtype=torch.float64).transpose(0, 1), targets)
            blocks_out[name] = partition.block_parts(fits, clip_scores, parts)
            block_scores[name] = fits.block
            ent_reps[name], off = _entanglement(fits.block_predictions, T, human, parts, per_step=True, keep_offdiag=True)
            if name == best:
                dis = entangle.disambiguation(fits.block_predictions, Yc_all, T, parts)
                trend = (_slope_estimate(off, parts), _slope_estimate(dis, parts))
        top_block, top_step = max(((n, k) for n in blocks for k in range(len(block_scores[n].pooled))),
                                  key=lambda nk: (block_scores[nk[0]].pooled[nk[1]], nk[0]))
        diff = clip_scores - _at(block_scores[top_block], top_step)
        n_steps = len(block_scores[top_block].pooled)
        human_offdiag = float(entangle.offdiag(human))
        out = {
            "partition": {"clip": COND, "metric": "r", "method": partition.METHOD,
                          "clip_alone": clip_scores.estimate(0, parts), "blocks": blocks_out},
            "entanglement": {"human_offdiag": human_offdiag, "reps": ent_reps},
        }
        out["findings"] = [
            findings.clip_vs_unet(report, COND, diff.estimate(0, parts), top_block, top_step, n_steps),
            findings.domains(report, COND),
            findings.steps(report, best, trend[0], trend[1], human_offdiag, _wordform_offdiag(report), n_steps),
        ]
    return out


def _at(scores: partition.Scores, step: int) -> partition.Scores:
    """One step of Scores, kept as a one-step Scores."""
    return partition.Scores(*(a[step : step + 1] for a in (scores.pooled, scores.fold, scores.null, scores.null_fold)))


def _slope_estimate(scores: partition.Scores, folds: list[np.ndarray]) -> dict:
    s = entangle.slope(scores)
    return partition.estimate(float(s.pooled), s.fold, s.null if s.null.size else None, s.null_fold, folds)


def _entanglement(P: np.ndarray, T: int, human: np.ndarray, folds: list[np.ndarray], *, per_step: bool,
                  keep_offdiag: bool = False):
    rsa, off, matrices = entangle.entangle(P, T, human, folds)
    kept = entangle.kept_steps(len(matrices))
    rep = {"per_step": per_step, "rsa": rsa.estimates(folds), "offdiag": off.estimates(folds),
           "matrices": [np.round(matrices[k], entangle.MATRIX_DECIMALS).tolist() for k in kept]}
    if len(kept) != len(matrices):
        rep["matrix_steps"] = kept
    return (rep, off) if keep_offdiag else rep


def _wordform_offdiag(report: dict) -> float | None:
    """Mean |off-diagonal| of word form's predicted attribute matrix (report's pred_corr), or None."""
    rep = report["representations"].get(WORDFORM)
    if not rep or not rep.get("pred_corr"):
        return None
    return float(entangle.offdiag(np.asarray(next(iter(rep["pred_corr"].values())))))
