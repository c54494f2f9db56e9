"""Reading a report (report.json, written by `build`): which representations it holds, their numbers at a step,
the ones a reader should look at first, and each one's best step. Pure functions on the report dict; the figures
(`plots`), the report page (`report`), the CLI, the model card (`hub`) and the app all read a report through these.

A report's shape: report["representations"][name] = {"per_step": bool, "dim": int, "results": [one dict of
numbers per step; a single one for a once-per-prompt representation], "pred_corr": {step: T x T}}
(`analysis.analyse`; the numbers are defined in docs/methods.md).
"""

import numpy as np

from .analysis import WORDFORM
from .config import TINY_MODELS

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


# -- issue 18: the thesis keys (optional: bundles built before them lack them; readers then say "rebuild") ----------
def partition(report: dict) -> dict | None:
    """report["partition"] (what each UNet block adds beyond CLIP, per step), or None for a bundle built before it."""
    return report.get("partition") or None


def entanglement(report: dict) -> dict | None:
    """report["entanglement"] (RSA and mean |off-diagonal| per representation x step), or None where absent."""
    return report.get("entanglement") or None


def findings(report: dict) -> list[dict] | None:
    """report["findings"] (the paper's three findings as verdicts), or None where absent."""
    return report.get("findings") or None


def random_weights(report: dict) -> bool:
    """Whether the report's model has random weights (a built-in tiny stand-in or a `--random-init` encoder): its
    numbers show the machinery, never a finding, and every page says what chance and word form alone give."""
    model = str(report.get("model", ""))
    return model in TINY_MODELS or model.startswith("random-init:")


def wordform_value(report: dict, metric: str, step: int | None = None) -> float | None:
    """What word form alone gives for `metric` (the baseline.wordform probe's number), or None where not reported."""
    if WORDFORM not in report["representations"]:
        return None
    return result(report, WORDFORM, step).get(metric)
