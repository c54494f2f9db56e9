"""Reading a report (report.json, written by `build`): which representations it holds, their numbers at a step,
the ones a reader should look at first, and each one's best step. Pure functions on the report dict; the figures
(`plots`), the report page (`report`), the CLI, the model card (`hub`) and the app all read a report through these.

A report's shape: report["representations"][name] = {"per_step": bool, "dim": int, "results": [one dict of
numbers per step; a single one for a once-per-prompt representation], "pred_corr": {step: T x T}}
(`analysis.analyse`; the numbers are defined in docs/methods.md).
"""

import numpy as np

from .analysis import WORDFORM
from .bundle import FINDING_IDS, VERDICTS  # noqa: F401  (the contract's constants, checked by bundle)
from .config import is_random_weight_model

MAIN_ONCE = ("clip.pooled", "clip.mean", "text.embedding")  # once-per-prompt representations always drawn as references


def names(report: dict, per_step: bool) -> list[str]:
    """The representations read at every denoising step (per_step=True) or once per prompt (False), in report order."""
    return [n for n, r in report["representations"].items() if r["per_step"] == per_step]


def result(report: dict, name: str, step: int | None = None) -> dict:
    """The numbers of one representation: at `step` (default: the last step) if it is read per step, else its only ones."""
    rep = report["representations"][name]
    return rep["results"][-1 if step is None else step] if rep["per_step"] else rep["results"][0]


def first_result(report: dict) -> dict:
    """The first representation's first numbers: which metrics this report holds (every representation has the same)."""
    return next(iter(report["representations"].values()))["results"][0]


def knn_chance(report: dict) -> float:
    """Chance level of the category-neighbour accuracy (sum of squared category frequencies), rounded for print."""
    return round(first_result(report).get("knn_chance", 0), 3)


def null(report: dict, name: str, metric: str, step: int | None = None) -> list[float] | None:
    """[mean, sd] of `metric` under the permutation null, or None where the report holds no null."""
    return result(report, name, step).get(f"null_{metric}")


def reference_names(report: dict) -> list[str]:
    """The once-per-prompt representations drawn as reference lines: pooled/mean/embedding and the best layer."""
    once = names(report, False)
    main = [n for n in once if n in MAIN_ONCE]
    layers = [n for n in once if n not in main and not n.startswith("baseline.")]
    if layers:
        main.append(max(layers, key=lambda n: report["representations"][n]["results"][0]["mean_r"]))
    return main


def best_per_step(report: dict) -> str | None:
    """The per-step representation with the highest mean r averaged over steps (the app's default block)."""
    reps = [n for n in names(report, True) if n.startswith("unet.")] or names(report, True)
    if not reps:
        return None
    return max(reps, key=lambda n: np.mean([r["mean_r"] for r in report["representations"][n]["results"]]))


def default_highlight(report: dict) -> list[str]:
    """The lines a reader should look at first: the CLIP reference, the best UNet block and the word-form floor."""
    refs = reference_names(report)
    highlight = [refs[0]] if refs else []
    best = best_per_step(report)
    if best:
        highlight.append(best)
    if WORDFORM in report["representations"]:
        highlight.append(WORDFORM)
    return highlight


def summary_rows(report: dict) -> list[dict]:
    """One row per representation: its best step by mean r (CLIP: its only one)."""
    rows = []
    for name, rep in report["representations"].items():
        best = max(range(len(rep["results"])), key=lambda k: rep["results"][k]["mean_r"])
        res = rep["results"][best]
        rows.append({"name": name, "step": best if rep["per_step"] else None, **{k: res.get(k) for k in (
            "mean_r", "mean_r_ci", "two_v_two", "p_mean_r", "p_two_v_two", "disambiguation", "knn_accuracy", "silhouette")}})
    return rows


# -- what the UNet adds beyond CLIP, entanglement, findings (issue 18; docs/methods.md) ----------------------
# Each key is optional: bundles built before it lack it, and a reader then says "rebuild this bundle to see …".
# An "estimate" is {"value": float, "ci": [lo, hi], "null": [mean, sd] | None, "p": float | None}; per-step
# quantities are lists of estimates indexed like report["representations"][name]["results"].


def partition(report: dict) -> dict | None:
    """report["partition"]: {"clip", "metric", "method", "clip_alone": estimate, "blocks": {block: {"block",
    "joint", "unet_unique", "clip_unique", "shared", "residual": [estimate per step]}}}, or None."""
    return report.get("partition")


def entanglement(report: dict) -> dict | None:
    """report["entanglement"]: {"human_offdiag": float, "reps": {name: {"per_step", "rsa": [estimate per step],
    "offdiag": [estimate per step], "matrices": [A x A per step]}}}, or None."""
    return report.get("entanglement")


def findings(report: dict) -> list[dict] | None:
    """report["findings"]: three dicts ("clip_vs_unet", "domains", "steps", in this order) with "id", "title",
    "sentence", "value", "ci", "p", "verdict" (one of VERDICTS) and "baseline", or None."""
    return report.get("findings")


def random_weights(report: dict) -> bool:
    """Whether the report's model has random weights (a built-in tiny stand-in or a `--random-init` encoder): its
    numbers show the machinery, never a finding, and every page says what chance and word form alone give."""
    return is_random_weight_model(report.get("model"))


def wordform_value(report: dict, metric: str, step: int | None = None) -> float | None:
    """What word form alone gives for `metric` (the baseline.wordform probe's number), or None where not reported."""
    if WORDFORM not in report["representations"]:
        return None
    return result(report, WORDFORM, step).get(metric)
