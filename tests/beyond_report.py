"""A report with the three keys of issue 18 (partition, entanglement, findings), made up but shaped exactly as the
report.json contract says, added to a real report (the tiny bundle's): the figures, report.html and the app are tested
against it without waiting for a build that computes them. The numbers are seeded and deliberately include values
whose intervals run past the metric's range (the figures must clip them)."""

import copy

import numpy as np


def estimate(rng, centre: float, spread: float = 0.05, null: bool = True) -> dict:
    value = float(centre + rng.normal(0, spread / 3))
    lo, hi = value - spread, value + spread
    return {"value": value, "ci": [lo, hi], "null": [0.0, spread / 2] if null else None,
            "p": float(rng.uniform(0.01, 0.5)) if null else None}


FINDINGS = [
    ("clip_vs_unet", "CLIP decodes better than the UNet", "holds"),
    ("domains", "Some attribute domains are decoded better than others", "does not hold"),
    ("steps", "Attributes blur together as the image forms", "cannot tell at this precision"),
]


def with_beyond_keys(report: dict, seed: int = 0, *, extreme: bool = True) -> dict:
    """A copy of `report` with made-up partition, entanglement and findings keys. extreme: the first block's
    intervals reach past ±1 (a figure must clip them to the metric's range)."""
    rng = np.random.default_rng(seed)
    out = copy.deepcopy(report)
    reps = out["representations"]
    per_step = [n for n, r in reps.items() if r["per_step"]]
    steps = len(reps[per_step[0]]["results"])
    A = len(out["attributes"])
    blocks = {}
    for i, name in enumerate(per_step):
        series = {part: [estimate(rng, c) for _ in range(steps)] for part, c in (
            ("block", 0.1), ("joint", 0.2), ("unet_unique", 0.02 * i), ("clip_unique", 0.1), ("shared", 0.05),
            ("residual", 0.01))}
        if extreme and i == 0:
            series["joint"][0] = {"value": 0.98, "ci": [0.9, 1.3], "null": [0.0, 0.6], "p": 0.01}
            series["unet_unique"][0] = {"value": -0.9, "ci": [-1.4, -0.5], "null": [0.0, 0.6], "p": 0.9}
        blocks[name] = series
    out["partition"] = {"clip": "clip.cond", "metric": "r", "method": "banded ridge: one penalty per feature group by GCV",
                        "clip_alone": estimate(rng, 0.15), "blocks": blocks}
    human = np.asarray(out["human_corr"], float)
    ent = {}
    for name in ["clip.cond", *per_step]:
        n = 1 if name == "clip.cond" else steps
        mats = []
        for k in range(n):
            noise = rng.normal(0, 0.2 + 0.1 * k, (A, A))
            M = np.clip(human + (noise + noise.T) / 2, -1, 1)
            np.fill_diagonal(M, 1.0)
            mats.append(np.round(M, 3).tolist())
        ent[name] = {"per_step": name != "clip.cond", "rsa": [estimate(rng, 0.5 - 0.1 * k) for k in range(n)],
                     "offdiag": [estimate(rng, 0.2 + 0.05 * k, null=False) for k in range(n)], "matrices": mats}
    off = np.abs(human[np.triu_indices(A, k=1)])
    out["entanglement"] = {"human_offdiag": float(off.mean()), "reps": ent}
    out["findings"] = [
        {"id": fid, "title": title, "sentence": f"{title} <b>& not</b> made up: value 0.12, 95% CI [0.02, 0.22], p = 0.04.",
         "value": 0.12, "ci": [0.02, 0.22], "p": 0.04, "verdict": verdict,
         "baseline": "Chance gives 0.00 ± 0.02 and word form alone gives 0.05."}
        for fid, title, verdict in FINDINGS]
    return out
