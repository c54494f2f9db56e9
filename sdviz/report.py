"""The report: its figures in reading order with numbers, titles, captions and one-line takeaways computed from the
report's numbers (never written by hand), the summary table, the steering section, and the self-contained
report.html (`write_report`). The app's Report tab shows the same items (`report_items(..., for_app=True)`).
Figures come from `plots`; the report's numbers are read through `results`. (Over 450 lines: the HTML page and the
app's tab are one list of items in one reading order, so a new section is one change in one file.)
"""

import html
import json
import logging
import re
from pathlib import Path

import numpy as np
import plotly.graph_objects as go

from .analysis import pearson
from .bundle import _Defect, load_bundle, validate_steer_eval
from .config import is_random_weight_model
from .io import atomic_write
from .labels import label, scheduler_note, short, step_text
from .plots import (
    corr_heatmap,
    decoding_curve,
    disambiguation_curve,
    entanglement_curve,
    group_bars,
    partition_curve,
    separation_curve,
    steer_eval_figure,
    two_v_two_curve,
)
from .results import (
    WORDFORM,
    best_per_step,
    entanglement,
    findings,
    first_result,
    knn_chance,
    null,
    partition,
    random_weights,
    reference_names,
    result,
    summary_rows,
    wordform_value,
)

CAPTIONS = {
    "decoding": "A probe is a small linear model that reads the 65 human-rated attributes from a layer's activations; it is scored "
                "on words it never saw (r between its guesses and the human ratings, averaged over attributes). Each solid line "
                "is one part of the UNet across the denoising steps (left = pure noise); dashed lines are computed once per "
                "prompt (CLIP's text encoder, the word-length baseline) and so are flat. Higher is better; chance is 0. "
                "Bands: 95% intervals from the cross-validation folds (refitting included).",
    "two_v_two": "Take two held-out words: are their decoded attribute profiles closer to their own human profiles than to each "
                 "other's? The line is the fraction of word pairs where they are. Chance is 0.5.",
    "groups": "The same decoding score split by Binder's 14 attribute domains, for CLIP and for the best UNet block at its "
              "last step. Error bars are 95% intervals from the folds (refitting included): where they cross 0 (chance), the domain is not decoded.",
    "disambiguation": "For every pair of attributes, e.g. Loud and Pleasant: does the decoded Loud follow human Loud more than "
                      "human Pleasant? Falling lines mean attributes blur together as the image forms. Chance is 0.5, but "
                      "with few words it varies a lot by luck: compare with the shuffled-ratings null in the table.",
    "heatmaps": "How the attributes go together over words (red = rise together, blue = opposite): human ratings in this "
                "figure, decoded from CLIP and from the best UNet block at its last step in the next two. Similar patterns "
                "mean the probes keep the structure of human meaning. Lines separate the domains.",
    "separation": "Are words of the same category (animals, tools, emotions, ...) neighbours in each layer's activations? "
                  "For every word, the 5 most similar words vote on its category; the line is how often they are right. "
                  "Falling lines mean categories collapse together as diffusion proceeds; the dotted line is chance.",
    "partition": "Does the UNet know anything CLIP does not? Three probes are trained for each block and step: on what the "
                 "UNet reads from CLIP alone, on the block alone, and on both together. The red line is what the block adds "
                 "beyond CLIP: the score of both together minus CLIP's alone (mean r over attributes on held-out words), "
                 "with its 95% interval shaded. The grey band is chance: what the same number gives with the ratings shuffled. A "
                 "red line inside it means the block adds nothing CLIP lacks, at this precision. Dotted: a second view of "
                 "the same question, the block's own probe after removing everything CLIP explains. Dashed: what CLIP "
                 "adds beyond the block; dash-dot: what the two share. Thin grey lines: the other blocks.",
    "entanglement": "Do the decoded attributes go together the way people's ratings do? At every step, the probes' "
                    "guesses for held-out words give an attribute × attribute correlation pattern, as in the heatmaps. "
                    "Top: how well that pattern matches the human one (RSA, the rank correlation of the two patterns; "
                    "0 = unrelated, 1 = the same order), with its 95% interval and, in grey, chance: what shuffled ratings give. "
                    "Bottom: how strongly attributes go together on average (mean |r| between two attributes); above the "
                    "dotted human line the model ties attributes together more than people do. Dashed: CLIP, read once "
                    "per prompt.",
}
HEADINGS = {
    "decoding": "Decoding human ratings, step by step", "groups": "Decoding by attribute domain",
    "disambiguation": "Telling attributes apart", "separation": "Do object categories stay apart?",
    "two_v_two": "Telling two words apart", "heatmaps_human": "Human ratings: how attributes go together",
    "steer_eval": "Steering: does only the target move?",
    "partition": "What the UNet adds beyond CLIP, step by step", "entanglement": "Are attributes entangled like the humans'?",
    "findings": "Findings",
}
ORDER = ["decoding", "partition", "groups", "disambiguation", "separation", "two_v_two", "heatmaps_human", "heatmaps_ref",
         "heatmaps_best", "entanglement"]
# Said once, where a bundle lacks what issue 18 added (built before it): what a rebuild shows, never an error.
REBUILD = ("Rebuild this bundle (`python -m sdviz build`) to see the findings, what the UNet adds beyond CLIP and how "
           "attributes entangle across steps: it was built before sdviz computed them.")
RANDOM_FINDINGS = ("This model has random weights: these verdicts show how each test works, not what the paper "
                   "claims. Read every number against what chance and word form alone give, beside it.")
VERDICTS = {"holds": "✓ holds", "does not hold": "✗ does not hold", "cannot tell at this precision": "? cannot tell at this precision"}


def _chance_text(report: dict, name: str, metric: str, chance: float | None) -> tuple[str, dict]:
    """('chance 0.5', numbers) or, where the report holds a permutation null at the last step, ('shuffled-ratings
    null 0.49 ± 0.07', ...)."""
    shuffled = null(report, name, metric)
    if shuffled:
        return f"shuffled-ratings null {shuffled[0]:.2f} ± {shuffled[1]:.2f}", {"null_mean": shuffled[0], "null_sd": shuffled[1]}
    return ("", {}) if chance is None else (f"chance {chance:g}", {"chance": chance})


def _vs(report: dict, metric: str, a: str, b: str, chance_text: str, unit: str) -> tuple[str, dict]:
    """'CLIP all words is higher: mean r 0.12 vs 0.03 for UNet middle at its last step (chance 0).'"""
    va, vb = result(report, a)[metric], result(report, b)[metric]
    where = " at its last step" if report["representations"][b]["per_step"] else ""
    where_a = " at its last step" if report["representations"][a]["per_step"] else ""
    (w, vw, ww), (l_, vl, wl) = sorted([(a, va, where_a), (b, vb, where)], key=lambda t: -t[1])
    text = f"{label(w)}{ww} scores higher: {unit} {vw:.2f} vs {vl:.2f} for {label(l_)}{wl} ({chance_text})."
    return text, {w: vw, l_: vl}


def _curve_takeaway(report: dict, metric: str, unit: str, chance: float) -> tuple[str, dict]:
    refs, best = reference_names(report), best_per_step(report)
    chance_text, values = _chance_text(report, best or refs[0], metric, chance)
    if refs and best:
        text, quoted = _vs(report, metric, refs[0], best, chance_text, unit)
        values |= quoted
    else:
        name = (refs or [best])[0]
        values[name] = result(report, name)[metric]
        text = f"{label(name)}: {unit} {values[name]:.2f} ({chance_text})."
    if WORDFORM in report["representations"] and metric in result(report, WORDFORM):
        v = result(report, WORDFORM)[metric]
        values[WORDFORM] = v
        text += f" Word length alone: {v:.2f}."
    return text, values


def _trend_takeaway(report: dict, metric: str, unit: str, chance: float) -> tuple[str, dict]:
    best = best_per_step(report)
    res = report["representations"][best]["results"]
    first, last = res[0][metric], res[-1][metric]
    verb = "rises" if last > first else "falls" if last < first else "stays"
    chance_text, values = _chance_text(report, best, metric, chance)
    text = (f"{label(best)}: {unit} {verb} from {first:.2f} at step 0 to {last:.2f} at {step_text(len(res) - 1, len(res))} "
            f"({chance_text}).")
    note, quoted = _random_note(report, metric, chance)
    return text + note, values | quoted | {f"{best}@0": first, f"{best}@{len(res) - 1}": last}


def _upper(matrix) -> np.ndarray:
    M = np.asarray(matrix, float)
    return M[np.triu_indices(M.shape[0], k=1)]


def _heatmap_takeaway(report: dict, matrix, who: str) -> tuple[str, dict]:
    human, pred = _upper(report["human_corr"]), _upper(matrix)
    ok = np.isfinite(human) & np.isfinite(pred)
    r = pearson(human[ok], pred[ok]) if ok.sum() > 2 else 0.0
    text, values = f"{who}: its pattern matches the human one with r = {r:.2f} over attribute pairs (0 = unrelated).", {"pattern_r": r}
    wf = report["representations"].get(WORDFORM, {}).get("pred_corr", {}).get("0")
    if random_weights(report) and wf is not None:
        w = _upper(wf)
        ok = np.isfinite(human) & np.isfinite(w)
        values["wordform_pattern_r"] = v = pearson(human[ok], w[ok]) if ok.sum() > 2 else 0.0
        text += f" Random weights: word form alone gives r = {v:.2f}."
    return text, values


def _human_takeaway(report: dict) -> tuple[str, dict]:
    attrs, groups = report["attributes"], report["groups"]
    M = np.asarray(report["human_corr"], float)
    i, j = np.triu_indices(len(attrs), k=1)
    same = np.array([groups[attrs[a]] == groups[attrs[b]] for a, b in zip(i, j)], dtype=bool)
    if not same.any() or same.all():  # one domain (any table without a groups file), or one attribute per domain
        overall = float(np.mean(M[i, j])) if len(i) else 0.0
        return (f"The attributes go together with mean r {overall:.2f} over attribute pairs (0 = unrelated); the table "
                "has no domains to compare."), {"overall": overall}
    within, between = float(np.mean(M[i, j][same])), float(np.mean(M[i, j][~same]))
    verdict = "go together more" if within > between else "do not go together more"
    return (f"Attributes of one domain {verdict} than attributes of different domains: mean r {within:.2f} within "
            f"domains vs {between:.2f} between them (0 = unrelated)."), {"within": within, "between": between}


def _groups_takeaway(report: dict, name: str, step: int | None) -> tuple[str, dict]:
    g = result(report, name, step)["group_r"]
    top, bottom = max(g, key=g.get), min(g, key=g.get)
    where = "" if step is None else f" at {step_text(step, report['steps'])}"
    text, values = (f"{label(name)}{where} decodes {top} best (r {g[top]:.2f}) and {bottom} worst (r {g[bottom]:.2f}); "
                    "chance is 0."), {top: g[top], bottom: g[bottom]}
    if random_weights(report) and WORDFORM in report["representations"]:
        wf = result(report, WORDFORM)["group_r"]
        text += f" Random weights: word form alone gives {top} r {wf[top]:.2f} and {bottom} r {wf[bottom]:.2f}."
        values |= {f"wordform {top}": wf[top], f"wordform {bottom}": wf[bottom]}
    return text, values


def _estimate_text(e: dict, spec: str = "+.3f") -> tuple[str, dict]:
    """'+0.012 [95% CI -0.010, +0.034] (shuffled ratings: +0.000 ± 0.011; p = 0.270)' and the numbers it quotes."""
    text, values = f"{e['value']:{spec}} [95% CI {e['ci'][0]:{spec}}, {e['ci'][1]:{spec}}]", {
        "value": e["value"], "ci_lo": e["ci"][0], "ci_hi": e["ci"][1]}
    extra = []
    if e.get("null"):
        extra.append(f"shuffled ratings: {e['null'][0]:{spec}} ± {e['null'][1]:.3f}")
        values |= {"null_mean": e["null"][0], "null_sd": e["null"][1]}
    if e.get("p") is not None:
        extra.append(f"p = {e['p']:.3f}")
        values["p"] = e["p"]
    return text + (f" ({'; '.join(extra)})" if extra else ""), values


def partition_block(report: dict) -> str | None:
    """The block the report's partition figure draws in colour: the best-decoding one, else the first."""
    part = partition(report)
    if not part or not part["blocks"]:
        return None
    best = best_per_step(report)
    return best if best in part["blocks"] else next(iter(part["blocks"]))


def _partition_takeaway(report: dict, block: str) -> tuple[str, dict]:
    parts = partition(report)["blocks"][block]
    last = len(parts["unet_unique"]) - 1
    text, values = _estimate_text(parts["unet_unique"][last])
    clip_unique = parts["clip_unique"][last]["value"]
    out = (f"What {label(block)} adds to CLIP's mean r at {step_text(last, last + 1)}: {text}. CLIP adds "
           f"{clip_unique:+.3f} beyond the block.")
    values["clip_unique"] = clip_unique
    if random_weights(report) and wordform_value(report, "mean_r") is not None:
        wf = wordform_value(report, "mean_r")
        out += (f" Random weights: word form alone decodes mean r {wf:.2f}, so anything above the shuffled band here "
                "is word form, not meaning.")
        values["wordform_mean_r"] = wf
    return out, values


def _spearman_upper(a, b) -> float:
    """Spearman correlation of two matrices' upper triangles (ties ranked by order; for a takeaway's baseline)."""
    x, y = _upper(a), _upper(b)
    ok = np.isfinite(x) & np.isfinite(y)
    rank = lambda v: np.argsort(np.argsort(v)).astype(float)  # noqa: E731
    return pearson(rank(x[ok]), rank(y[ok])) if ok.sum() > 2 else 0.0


def entanglement_names(report: dict) -> list[str]:
    """The entanglement figure's lines: the best block (drawn with its interval and null band), then CLIP."""
    reps = entanglement(report)["reps"]
    per_step = [n for n, r in reps.items() if r["per_step"]]
    best = best_per_step(report)
    first = best if best in per_step else (per_step[0] if per_step else None)
    clip = (partition(report) or {}).get("clip", "clip.cond")
    once = [clip] if clip in reps else [n for n, r in reps.items() if not r["per_step"]][:1]
    return [n for n in [first, *once] if n]


def _entanglement_takeaway(report: dict, name: str) -> tuple[str, dict]:
    ent = entanglement(report)
    rep = ent["reps"][name]
    last = len(rep["rsa"]) - 1
    where = f" at {step_text(last, last + 1)}" if rep["per_step"] else ""
    rsa_text, values = _estimate_text(rep["rsa"][last], ".2f")
    off, human = rep["offdiag"][last], ent["human_offdiag"]
    lo, hi = off["ci"]
    verdict = ("more than people's" if lo > human else "less than people's" if hi < human
               else "about as much as people's, within its interval")
    text = (f"{label(name)}{where} matches the humans' pattern of attributes with RSA {rsa_text}. Its attributes go "
            f"together with mean |r| {off['value']:.2f} [95% CI {lo:.2f}, {hi:.2f}] against {human:.2f} in the human "
            f"ratings: {verdict}.")
    values |= {"offdiag": off["value"], "offdiag_lo": lo, "offdiag_hi": hi, "human_offdiag": human}
    wf = report["representations"].get(WORDFORM, {}).get("pred_corr", {}).get("0")
    if random_weights(report) and wf is not None:
        v = _spearman_upper(wf, report["human_corr"])
        text += f" Random weights: word form alone matches the human pattern with a rank correlation of {v:.2f}."
        values["wordform_rsa"] = v
    return text, values


def _random_note(report: dict, metric: str, chance: float) -> tuple[str, dict]:
    """On a random-weight model, beside a number: ' Random weights: chance gives 0.5 and word form alone 0.53.'"""
    if not random_weights(report):
        return "", {}
    wf = wordform_value(report, metric)
    if wf is None:
        return f" Random weights: chance gives {chance:g}.", {"chance": chance}
    return f" Random weights: chance gives {chance:g} and word form alone {wf:.2f}.", {"chance": chance, "wordform": wf}


def report_items(report: dict, *, for_app: bool = False) -> list[dict]:
    """The report's figures in reading order, numbered: dicts with key, number, heading, title ("Figure n. heading"),
    figure, caption and takeaway (one sentence whose numbers come from the report), plus `values`, the numbers the
    takeaway quotes. for_app: the figures as the app's Report tab shows them: untitled (the tab writes each title as
    text, where it wraps at any width) and with the domain names turned by plotly only where they do not fit."""
    reps = report["representations"]
    refs, best = reference_names(report), best_per_step(report)
    first = first_result(report)
    attrs, groups = report["attributes"], report.get("groups")
    # key -> (heading, figure(title), (takeaway, values)); figures are drawn in reading order, once numbered
    plan = {"decoding": (HEADINGS["decoding"], lambda t: decoding_curve(report, title=t),
                         _curve_takeaway(report, "mean_r", "mean r", 0.0))}
    block = partition_block(report)
    if block:
        plan["partition"] = (HEADINGS["partition"], lambda t: partition_curve(partition(report), block, title=t),
                             _partition_takeaway(report, block))
    names = refs[:2] + ([best] if best else [])
    steps = [None] * len(refs[:2]) + ([len(reps[best]["results"]) - 1] if best else [])
    plan["groups"] = (HEADINGS["groups"], lambda t: group_bars(report, names, steps, title=t, tick_angle=None if for_app else -35),
                      _groups_takeaway(report, names[-1], steps[-1]))
    if best and "disambiguation" in first:
        plan["disambiguation"] = (HEADINGS["disambiguation"],
                                  lambda t: disambiguation_curve(report, title=t),
                                  _trend_takeaway(report, "disambiguation", "attribute pairs told apart", 0.5))
    if "knn_accuracy" in first:
        plan["separation"] = (HEADINGS["separation"], lambda t: separation_curve(report, title=t),
                              _curve_takeaway(report, "knn_accuracy", "neighbours right", knn_chance(report)))
    plan["two_v_two"] = (HEADINGS["two_v_two"], lambda t: two_v_two_curve(report, title=t),
                         _curve_takeaway(report, "two_v_two", "2v2", 0.5))
    plan["heatmaps_human"] = (HEADINGS["heatmaps_human"], lambda t: corr_heatmap(report["human_corr"], attrs, t, groups=groups),
                              _human_takeaway(report))
    if refs:
        M = reps[refs[0]]["pred_corr"]["0"]
        plan["heatmaps_ref"] = (f"Decoded from {short(refs[0])}", lambda t: corr_heatmap(M, attrs, t, groups=groups),
                                _heatmap_takeaway(report, M, f"Decoded from {label(refs[0])}"))
    if best:
        pc = reps[best]["pred_corr"]
        last = max(pc, key=int)
        where = step_text(int(last), report["steps"])
        plan["heatmaps_best"] = (f"Decoded from {short(best)}, {where}", lambda t: corr_heatmap(pc[last], attrs, t, groups=groups),
                                 _heatmap_takeaway(report, pc[last], f"Decoded from {label(best)} at {where}"))
    if entanglement(report) and entanglement_names(report):
        lines = entanglement_names(report)
        plan["entanglement"] = (HEADINGS["entanglement"], lambda t: entanglement_curve(entanglement(report), lines, title=t),
                                _entanglement_takeaway(report, lines[0]))
    items, first_map = [], None
    for key in [k for k in ORDER if k in plan]:
        number = len(items) + 1
        heading, figure, (text, values) = plan[key]
        title = f"Figure {number}. {heading}"
        fig = figure(None if for_app else title)
        caption = CAPTIONS.get(key)
        if key.startswith("heatmaps"):  # shown one after the other: described once
            first_map = first_map or number
            caption = CAPTIONS["heatmaps"] if first_map == number else f"Read it like Figure {first_map}."
        items.append(dict(key=key, number=number, heading=heading, title=title, figure=fig, takeaway=text, values=values,
                          caption=caption))
    return items


def report_figures(report: dict) -> list[tuple[str, go.Figure, str]]:
    """(key, figure, caption) in reading order: the report's numbered figures, the takeaway opening each caption."""
    return [(it["key"], it["figure"], f"{it['takeaway']} {it['caption']}") for it in report_items(report)]


def _fmt(value, spec: str = ".3f") -> str:
    return "" if value is None else format(value, spec)


def _null(res: dict, metric: str, chance: float) -> str:
    shuffled = res.get(f"null_{metric}")
    return f"{shuffled[0]:.2f} ± {shuffled[1]:.2f}" if shuffled else f"{chance:g}"


def _p_cell(report: dict, p: float | None) -> str:
    """p, and where it is the smallest the shuffles allow (1/(1 + m)), a note saying so: it is a floor, not a finding."""
    m = report["settings"].get("permutations")
    if p is None or not m or abs(p - 1 / (1 + m)) > 1e-9:
        return _fmt(p)
    return f"{_fmt(p)}<br><small>the smallest p {m} shuffles allow</small>"


def summary_table_html(report: dict) -> str:
    """Per representation: human name and id, best step, mean r [CI], 2v2, p, disambiguation, each with its chance level;
    on a random-weight model each chance cell also says what word form alone gives."""
    S = report.get("steps")
    random = random_weights(report)

    def chance(res: dict, metric: str, level: float) -> str:
        text = _null(res, metric, level)
        wf = wordform_value(report, metric) if random else None
        return text if wf is None else f"{text}<br><small>word form alone {wf:.3f}</small>"

    rows = []
    for r in summary_rows(report):
        res = result(report, r["name"], r["step"])
        ci = r["mean_r_ci"]
        step = "once per prompt" if r["step"] is None else step_text(r["step"], S)
        rows.append(
            f"<tr><td class='name'>{html.escape(label(r['name']))}<br><code>{html.escape(r['name'])}</code></td><td>{step}</td>"
            f"<td><b>{r['mean_r']:+.3f}</b><br><small>[{ci[0]:+.3f}, {ci[1]:+.3f}]</small></td>"
            f"<td>{chance(res, 'mean_r', 0.0)}</td><td>{_p_cell(report, r['p_mean_r'])}</td>"
            f"<td>{r['two_v_two']:.3f}</td><td>{chance(res, 'two_v_two', 0.5)}</td>"
            f"<td>{r['disambiguation']:.3f}</td><td>{chance(res, 'disambiguation', 0.5)}</td></tr>")
    return ("<table><thead><tr><th>representation</th><th>best step</th><th>mean r<br><small>[95% CI, folds]</small></th>"
            "<th>chance r</th><th>p of mean r<br><small>(shuffled ratings)</small></th><th>2v2</th><th>chance 2v2</th>"
            "<th>attribute<br>disambiguation</th><th>chance</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
            + SOURCES_NOTE)


# the CI and p come from two different tests and can disagree near the edge (docs/methods.md): said under the table
SOURCES_NOTE = ("<p class='settings'><b>Two tests, two questions.</b> The 95% CI comes from the spread of the score over "
                "the cross-validation folds, refitting included: would another sample of words give a similar score? "
                "The p-value comes from refitting on shuffled ratings: could a score this high arise with no link between "
                "words and ratings? Near the edge they can disagree (a CI just crossing 0 beside p just under 0.05); "
                "read a score as clearly above chance only when both agree.</p>")


def verdict_class(verdict: str) -> str:
    """The CSS class of a verdict's badge: holds, fails, unsure."""
    return {"holds": "holds", "does not hold": "fails"}.get(verdict, "unsure")


def findings_html(report: dict) -> str:
    """The Findings section at the top of report.html: each finding's title, its sentence with the bundle's own numbers,
    its verdict as a badge, and beside it what chance and word form alone give; or one line saying to rebuild."""
    found = findings(report)
    if not found:
        rebuild = re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(REBUILD))
        return f"<section id='findings'><h2>{HEADINGS['findings']}</h2><p class='rebuild'>{rebuild}</p></section>"
    cards = []
    for f in found:
        verdict = str(f["verdict"])
        cards.append(
            f"<div class='finding'><div class='claim'><span class='verdict {verdict_class(verdict)}'>"
            f"{html.escape(VERDICTS.get(verdict, verdict))}</span> <b>{html.escape(str(f['title']))}</b>"
            f"<p>{html.escape(str(f['sentence']))}</p></div>"
            f"<p class='baseline'><b>Chance and word form alone:</b> {html.escape(str(f['baseline']))}</p></div>")
    random = f"<p class='warn'>{html.escape(RANDOM_FINDINGS)}</p>" if random_weights(report) else ""
    return (f"<section id='findings'><h2>{HEADINGS['findings']}</h2>{random}<p>The paper's three findings, each tested on "
            "this bundle's own numbers: <i>holds</i> and <i>does not hold</i> where the 95% interval decides, <i>cannot "
            "tell at this precision</i> where it does not.</p>" + "".join(cards) + "</section>")



COND_NAME = "clip.cond"


def steer_eval_html(doc: dict, number: int) -> str:
    """The report's steering section: a table of the summary and the figure (docs/steering.md)."""
    rows = []
    for where in doc["wheres"]:
        for strength, r in doc["summary"][where].items():
            ratio = r["target"] / r["others"] if r["others"] > 0 else float("nan")
            rows.append(f"<tr><td class='name'>{html.escape(label(COND_NAME if where == 'clip' else where))}<br>"
                        f"<code>{html.escape(where)}</code></td><td>{float(strength):+g}</td><td><b>{r['target']:+.3f}</b></td>"
                        f"<td>{r['others']:.3f}</td><td>{ratio:.2f}</td><td>{r['random_target']:+.3f}</td></tr>")
    table = ("<table><thead><tr><th>steered at</th><th>strength</th><th>target change</th><th>others, mean |change|</th>"
             "<th>target / others</th><th>random direction: target change</th></tr></thead><tbody>" + "".join(rows) +
             "</tbody></table>")
    fig = steer_eval_figure(doc, title=f"Figure {number}. {HEADINGS['steer_eval']}").to_html(full_html=False, include_plotlyjs=False,
                                                         div_id="figure-steer_eval",
                                                         config={"responsive": True, "displaylogo": False})
    caption = (f"<p class='caption'><b>Figure {number}.</b> Each attribute's probe direction was added, at each strength, "
               f"to what the denoiser reads (CLIP: the conditioning; a block: its output), for {len(doc['words'])} words whose "
               f"directions and readout probes were fitted without them; the image was generated again with the same seed "
               f"and read from {html.escape(label(doc['readout']))} at the last step. Solid: how far the target attribute "
               "moved; dotted: how far the other attributes moved on average (absolute); dashed: the target under a random "
               "direction of the same length. Specific steering: solid far above dotted and dashed.</p>")
    return f"<h2>Steering</h2>{table}<section id='steer_eval'>{fig}{caption}</section>"


def report_html(report: dict, meta: dict, steer_eval: dict | None = None) -> str:
    """A self-contained HTML page (plotly.js inlined once): summary table, numbered figures with takeaways and captions."""
    parts = []
    items = report_items(report)
    for i, it in enumerate(items):
        parts.append(f"<section id='{it['key']}'>")
        parts.append(f"<p class='takeaway'>{html.escape(it['takeaway'])}</p>")
        # a div id named after the figure, not plotly's random one: identical builds give byte-identical pages
        parts.append(it["figure"].to_html(full_html=False, include_plotlyjs="inline" if i == 0 else False,
                                          div_id=f"figure-{it['key']}", config={"responsive": True, "displaylogo": False}))
        parts.append(f"<p class='caption'><b>Figure {it['number']}.</b> {html.escape(it['caption'])}</p></section>")
    s = report["settings"]
    warning = ("<p class='warn'><b>Demo model with random weights:</b> these numbers show the machinery, not real semantics. "
               "Random networks still encode word form (length, shared sub-word tokens), so expect numbers near the "
               "<i>word length alone</i> row (<code>baseline.wordform</code>), not exactly zero; trained encoders sit far above it.</p>"
               ) if random_weights(report) or is_random_weight_model(meta.get("model")) else ""
    auto = ("<p class='warn'>Built with reduced settings for the app's automatic first build: fewer shuffles "
            "than a full build, so the CIs and p-values are rougher.</p>") if s.get("automatic") else ""
    steps = report["steps"]
    part = partition(report)
    method = (f" What the UNet adds beyond CLIP (against <code>{html.escape(str(part.get('clip', '')))}</code>): "
              f"{html.escape(str(part.get('method', '')))}.") if part else ""
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>sdviz report: {html.escape(str(report['model']))}</title>
<style>body{{font-family:system-ui,sans-serif;font-size:16px;line-height:1.5;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}}
.caption{{font-size:16px;color:#333;margin:.3em 0 2.8em}}.takeaway{{font-size:17px;font-weight:600;margin:1.6em 0 .2em}}
table{{border-collapse:collapse;font-size:15px;display:block;overflow-x:auto}}td,th{{border-bottom:1px solid #ddd;padding:6px 10px;text-align:right;vertical-align:top}}
td.name,th:first-child{{text-align:left}}td:not(.name){{white-space:nowrap}}code{{font-size:13px;color:#555}}.warn{{background:#fff3cd;padding:.6em .9em;border-radius:4px}}
.settings{{font-size:15px;color:#333}}
.finding{{display:flex;flex-wrap:wrap;gap:.2em 1.6em;border-top:1px solid #ddd;padding:.7em 0}}.claim{{flex:3 1 20em}}.claim p{{margin:.3em 0 0}}
.baseline{{flex:2 1 14em;margin:0;font-size:15px;color:#444;background:#f6f6f6;padding:.4em .7em;border-radius:4px;align-self:flex-start}}
.verdict{{display:inline-block;font-weight:700;font-size:14px;padding:.1em .6em;border-radius:1em;color:#fff;white-space:nowrap}}
.verdict.holds{{background:#1e7b34}}.verdict.fails{{background:#b3261e}}.verdict.unsure{{background:#666}}
.rebuild{{font-style:italic;color:#444}}</style></head>
<body><h1>sdviz report: {html.escape(str(report['model']))}</h1>{warning}{auto}
{findings_html(report)}
<p>{report['n_words']} words of {html.escape(report['dataset'])}, {len(report['attributes'])} human-rated attributes,
{steps} denoising steps (step 0 = pure noise, step {steps - 1} = the finished image). {html.escape(scheduler_note(meta.get('scheduler'), meta.get('checkpoint_scheduler')), quote=False)} Chance levels are given next to every
number: r 0, 2v2 0.5, attribute disambiguation 0.5 (where the report holds them, the mean ± sd of the same number with the
ratings shuffled).</p>
<h2>Summary: each representation at its best step</h2>{summary_table_html(report)}
<p class='settings'><b>Settings.</b> Ridge probes, {s['folds']}-fold cross-validation over words (standardisation and
penalty fitted inside training folds), 95% intervals from the folds with refitting included (docs/methods.md), {s['permutations']} shuffles of
word&harr;rating pairs for p-values, seed {s.get('seed', 0)}, prompt template <code>{html.escape(str(s.get('template', '')))}</code>.
Category separation: {s.get('knn_k', 5)} nearest neighbours (cosine).{method}</p>
<h2>Figures</h2>
{''.join(parts)}{steer_eval_html(steer_eval, len(items) + 1) if steer_eval else ''}</body></html>"""


def write_report(bundle_path: Path, out: Path | None = None) -> Path:
    """(Re)write a bundle's self-contained HTML report."""
    bundle = load_bundle(bundle_path)
    out = Path(out or Path(bundle_path) / "report.html")
    steering = Path(bundle_path) / "steer_eval.json"  # written by `sdviz steer-eval`, when it was run
    steer_eval = None
    if steering.is_file():
        try:
            steer_eval = json.loads(steering.read_text())
            validate_steer_eval(steer_eval)
        except (OSError, ValueError, RecursionError, _Defect) as err:
            # a damaged optional section is left out, said in one line; the probes' report still stands
            logging.getLogger("sdviz").warning("%s is damaged (%s), so the report leaves out the steering section; rerun "
                                               "`python -m sdviz steer-eval` to write it again.", steering,
                                               "nested too deeply" if isinstance(err, RecursionError) else err)
            steer_eval = None
    page = report_html(bundle.report, bundle.meta, steer_eval)
    atomic_write(out, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))
    return out
