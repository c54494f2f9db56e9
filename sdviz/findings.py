"""The paper's three findings as verdicts computed from a bundle's own numbers (docs/methods.md).

Each finding is one claim with a direction, one number with its 95% interval (and p where it has a null), and a
verdict by one rule for every model, random weights included: "holds" when the interval excludes 0 in the
claimed direction, "does not hold" when it excludes 0 the other way, else "cannot tell at this precision".
`baseline` says, in words with numbers, what chance (the permutation null) and word form alone give.
"""

from . import results
from .analysis import WORDFORM

HOLDS, FAILS, UNSURE = results.VERDICTS


def verdict(ci: list[float]) -> str:
    """The one rule: the claim is that the value is above 0."""
    lo, hi = ci
    return HOLDS if lo > 0 else FAILS if hi < 0 else UNSURE


def _num(x: float) -> str:
    return f"{x:+.3f}"


def _interval(est: dict) -> str:
    lo, hi = est["ci"]
    p = "" if est.get("p") is None else f", p = {est['p']:.3g}"
    return f"{_num(est['value'])} (95% interval {_num(lo)} to {_num(hi)}{p})"


def _finding(id_: str, title: str, sentence: str, est: dict, baseline: str) -> dict:
    return {"id": id_, "title": title, "sentence": sentence, "value": float(est["value"]), "ci": [float(c) for c in est["ci"]],
            "p": est.get("p"), "verdict": verdict(est["ci"]), "baseline": baseline}


def _wordform_r(report: dict) -> str:
    if WORDFORM not in report["representations"]:
        return "word form alone: not in this report"
    res = results.result(report, WORDFORM)
    lo, hi = res["mean_r_ci"]
    return f"word form alone (length in characters and words) gives mean r {res['mean_r']:.3f} [{lo:.3f}, {hi:.3f}]"


def _chance_r(report: dict, name: str, step: int | None = None) -> str:
    null = results.null(report, name, "mean_r", step)
    return "chance: not measured (this build has no permutation null)" if null is None else \
        f"chance (shuffled ratings) gives mean r {null[0]:.3f} ± {null[1]:.3f}"


def clip_vs_unet(report: dict, clip: str, est: dict, block: str, step: int, steps: int) -> dict:
    """Finding 1. est: CLIP's r minus the best UNet block's (at its best step), paired over folds, with its null."""
    clip_r = results.result(report, clip)["mean_r"]
    block_r = results.result(report, block, step)["mean_r"]
    sentence = (f"CLIP ({clip}) decodes the human ratings at mean r {clip_r:.3f}, the best UNet block ({block} at step "
                f"{step} of 0–{steps - 1}) at {block_r:.3f}: CLIP minus UNet is {_interval(est)}, paired over folds.")
    baseline = f"{_chance_r(report, clip)} (the difference: {est['null'][0]:+.3f} ± {est['null'][1]:.3f})" \
        if est.get("null") else _chance_r(report, clip)
    return _finding("clip_vs_unet", "CLIP carries the human-like semantics: it decodes better than any UNet block",
                    sentence, est, f"{baseline}; {_wordform_r(report)}.")


def domains(report: dict, name: str) -> dict:
    """Finding 2: attribute domains decoded above (or below) the mean over attributes, from the per-domain r and
    intervals already in the report. The number is the domain whose interval lies furthest above the mean:
    its r minus the mean, with its interval shifted by the mean (the mean taken as fixed)."""
    res = results.result(report, name)
    mean, group_r, group_ci = res["mean_r"], res["group_r"], res["group_r_ci"]
    above = [g for g in group_r if group_ci[g][0] > mean]
    below = [g for g in group_r if group_ci[g][1] < mean]
    top = max(group_r, key=lambda g: (group_ci[g][0] - mean, g))
    est = {"value": group_r[top] - mean, "ci": [group_ci[top][0] - mean, group_ci[top][1] - mean], "p": None}
    listed = lambda gs: ", ".join(f"{g} ({group_r[g]:.2f})" for g in gs) or "none"  # noqa: E731
    sentence = (f"In {name} (mean r {mean:.3f}), the interval of {len(above) + len(below)} of the {len(group_r)} attribute "
                f"domains excludes the mean: above it {listed(above)}; below it {listed(below)}. The domain whose interval "
                f"reaches highest above the mean, {top}, lies {_interval(est)} from it.")
    wf = ""
    if WORDFORM in report["representations"]:
        wf_res = results.result(report, WORDFORM)
        wf = f"; word form alone gives {top} r {wf_res['group_r'].get(top, float('nan')):.3f} against its mean {wf_res['mean_r']:.3f}"
    chance = _chance_r(report, name)
    chance += " for every domain alike" if results.null(report, name, "mean_r") is not None else ""
    return _finding("domains", "Some attribute domains are decoded better than the average attribute", sentence, est,
                    f"{chance}{wf}.")


def steps(report: dict, block: str, entangled: dict, disambiguated: dict, human_offdiag: float, wordform_offdiag: float | None,
          n_steps: int) -> dict:
    """Finding 3: the slope over the step fraction (0 = pure noise, 1 = the last step) of the best block's
    entanglement (mean |off-diagonal| of its predicted attribute matrix), and of its attribute disambiguation."""
    sentence = (f"In {block}, from the first to the last of {n_steps} steps, entanglement (mean |off-diagonal| of the "
                f"predicted attributes' correlations; the humans' is {human_offdiag:.3f}) changes by {_interval(entangled)} "
                f"and attribute disambiguation by {_interval(disambiguated)}.")
    null = entangled.get("null")
    chance = f"chance (shuffled ratings) gives an entanglement slope of {null[0]:+.3f} ± {null[1]:.3f}" if null else \
        "chance: not measured (this build has no permutation null)"
    wf = "" if wordform_offdiag is None else \
        f"; word form alone (read once, no steps) gives predictions entangled at {wordform_offdiag:.3f}"
    return _finding("steps", "Toward the image, the UNet's attributes get more entangled", sentence, entangled, chance + wf + ".")
