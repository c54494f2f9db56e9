"""Plotly figures, pure functions: data in, figure out. Every figure has axis labels and a caption."""

import html

import numpy as np
import plotly.graph_objects as go

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"]
STEP_AXIS = "denoising step k (0 = pure noise)"
LAYOUT = dict(template="plotly_white", font=dict(size=13), margin=dict(l=60, r=20, t=50, b=55), legend=dict(orientation="h", y=-0.25))


def _reps(report: dict, per_step: bool) -> list[str]:
    return [n for n, r in report["representations"].items() if r["per_step"] == per_step]


def reference_names(report: dict) -> list[str]:
    """The once-per-prompt representations drawn as reference lines: pooled/mean/embedding and the best layer."""
    once = _reps(report, False)
    main = [n for n in once if n in ("clip.pooled", "clip.mean", "text.embedding")]
    layers = [n for n in once if n not in main and not n.startswith("baseline.")]
    if layers:
        main.append(max(layers, key=lambda n: report["representations"][n]["results"][0]["mean_r"]))
    return main


def best_per_step(report: dict) -> str | None:
    """The per-step representation with the highest mean r averaged over steps (the app's default block)."""
    reps = [n for n in _reps(report, True) if n.startswith("unet.")] or _reps(report, True)
    if not reps:
        return None
    return max(reps, key=lambda n: np.mean([r["mean_r"] for r in report["representations"][n]["results"]]))


def metric_curve(report: dict, metric: str, ylabel: str, title: str, chance: float | None = None, ci: str | None = None) -> go.Figure:
    fig = go.Figure()
    for i, name in enumerate(_reps(report, True)):
        res = report["representations"][name]["results"]
        steps = list(range(len(res)))
        color = PALETTE[i % len(PALETTE)]
        if ci and ci in res[0]:
            lo = [r[ci][0] for r in res]
            hi = [r[ci][1] for r in res]
            fig.add_trace(go.Scatter(x=steps + steps[::-1], y=hi + lo[::-1], fill="toself", fillcolor=color, opacity=0.15,
                                     line=dict(width=0), hoverinfo="skip", showlegend=False))
        fig.add_trace(go.Scatter(x=steps, y=[r[metric] for r in res], mode="lines+markers", name=name, line=dict(color=color)))
    for j, name in enumerate(reference_names(report)):
        value = report["representations"][name]["results"][0][metric]
        fig.add_hline(y=value, line=dict(dash="dash", color="black" if j == 0 else "#555", width=2 if j == 0 else 1),
                      annotation_text=f"{name} {value:.2f}", annotation_position="top left")
    if "baseline.wordform" in report["representations"] and metric in ("mean_r", "two_v_two", "disambiguation"):
        value = report["representations"]["baseline.wordform"]["results"][0][metric]
        fig.add_hline(y=value, line=dict(dash="dashdot", color="#b8860b"), annotation_text=f"word length alone {value:.2f}",
                      annotation_position="bottom left")
    if chance is not None:
        fig.add_hline(y=chance, line=dict(dash="dot", color="#999"), annotation_text=f"chance {chance}", annotation_position="bottom right")
    fig.update_layout(title=title, xaxis_title=STEP_AXIS, yaxis_title=ylabel, **LAYOUT)
    return fig


def decoding_curve(report: dict) -> go.Figure:
    return metric_curve(report, "mean_r", "mean Pearson r over attributes (held-out words)",
                        "How well each representation decodes human ratings, step by step", chance=0.0, ci="mean_r_ci")


def two_v_two_curve(report: dict) -> go.Figure:
    return metric_curve(report, "two_v_two", "2-vs-2 accuracy (word pairs)", "Telling two words apart from decoded attributes", chance=0.5)


def disambiguation_curve(report: dict) -> go.Figure:
    return metric_curve(report, "disambiguation", "fraction of attribute pairs disambiguated",
                        "Telling attributes apart: does decoded 'Loud' track human 'Loud' more than human 'Pleasant'?", chance=0.5)


def separation_curve(report: dict) -> go.Figure:
    first = next(iter(report["representations"].values()))["results"][0]
    return metric_curve(report, "knn_accuracy", f"category accuracy of {report['settings']['knn_k']}-NN (cosine)",
                        "How well object categories separate in each space", chance=round(first.get("knn_chance", 0), 3))


def group_bars(report: dict, names: list[str], steps: list[int | None]) -> go.Figure:
    """Mean r per attribute domain with 95% bootstrap CIs, one bar series per (representation, step)."""
    groups = report["group_names"]
    fig = go.Figure()
    for i, (name, step) in enumerate(zip(names, steps)):
        res = report["representations"][name]["results"][step or 0]
        y = [res["group_r"][g] for g in groups]
        err_hi = [res["group_r_ci"][g][1] - v for g, v in zip(groups, y)]
        err_lo = [v - res["group_r_ci"][g][0] for g, v in zip(groups, y)]
        label = name if step is None else f"{name} @ step {step}"
        fig.add_trace(go.Bar(x=groups, y=y, name=label, marker_color=PALETTE[i % len(PALETTE)],
                             error_y=dict(type="data", array=err_hi, arrayminus=err_lo, visible=True)))
    fig.update_layout(title="Decoding accuracy by attribute domain (95% bootstrap CI over words)", barmode="group",
                      xaxis_title="attribute domain (Binder et al. 2016)", yaxis_title="mean Pearson r (held-out words)", **LAYOUT)
    return fig


def corr_heatmap(matrix, attributes: list[str], title: str) -> go.Figure:
    fig = go.Figure(go.Heatmap(z=matrix, x=attributes, y=attributes, zmin=-1, zmax=1, colorscale="RdBu_r",
                               colorbar=dict(title="r")))
    fig.update_layout(title=title, xaxis_title="attribute", yaxis_title="attribute", height=560,
                      **{**LAYOUT, "margin": dict(l=90, r=20, t=50, b=90)})
    fig.update_yaxes(autorange="reversed")
    return fig


def attribute_bars(attributes: list[str], groups: dict[str, str], series: dict[str, np.ndarray], reliability: dict[str, np.ndarray] | None = None,
                   domain_means: bool = False, title: str = "") -> go.Figure:
    """Decoded attributes (0-6 rating scale) as grouped bars; series: label -> values per attribute.

    With domain_means, one bar per domain (mean over its attributes). Hover shows each probe's
    cross-validated r so users can tell trustworthy bars from noise.
    """
    order = list(dict.fromkeys(groups[a] for a in attributes))
    if domain_means:
        labels = order
        idx = [[i for i, a in enumerate(attributes) if groups[a] == g] for g in order]
        series = {k: np.array([np.mean(v[i]) for i in idx]) for k, v in series.items()}
        reliability = {k: np.array([np.mean(v[i]) for i in idx]) for k, v in (reliability or {}).items()}
    else:
        labels = [f"{a} ({groups[a]})" for a in attributes]
    colors = {"human": "#444"}
    fig = go.Figure()
    for i, (label, values) in enumerate(series.items()):
        rel = (reliability or {}).get(label)
        custom = None if rel is None else np.round(rel, 2)
        hover = "%{x}<br>%{y:.2f}" + ("<br>probe r = %{customdata}" if custom is not None else "") + f"<extra>{html.escape(label)}</extra>"
        fig.add_trace(go.Bar(x=labels, y=values, name=label, customdata=custom, hovertemplate=hover,
                             marker_color=colors.get(label, PALETTE[i % len(PALETTE)])))
    fig.update_layout(title=title, barmode="group", xaxis_title="attribute domain" if domain_means else "attribute (domain)",
                      yaxis_title="rating (0-6 scale)", yaxis_range=[-0.5, 6.5], height=430, **LAYOUT)
    fig.update_xaxes(tickangle=-60 if not domain_means else -30)
    return fig


def closeness_curve(steps: list[int], to_clip: list[float], to_human: list[float] | None, total_steps: int) -> go.Figure:
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=steps, y=to_clip, mode="lines+markers", name="UNet vs CLIP decoding"))
    if to_human:
        fig.add_trace(go.Scatter(x=steps, y=to_human, mode="lines+markers", name="UNet decoding vs human ratings"))
    fig.update_layout(title="How close the UNet's decoding is, step by step", xaxis_title=STEP_AXIS, yaxis_title="Pearson r over attributes",
                      xaxis_range=[-0.5, max(total_steps - 0.5, 0.5)], yaxis_range=[-1.05, 1.05], height=320, **LAYOUT)
    return fig


def embedding_map(coords: np.ndarray, words: list[str], categories: list[str] | None, title: str,
                  here: tuple[float, float] | None = None, here_label: str = "your prompt") -> go.Figure:
    fig = go.Figure()
    cats = categories or ["word"] * len(words)
    for i, cat in enumerate(sorted(set(cats))):
        idx = [j for j, c in enumerate(cats) if c == cat]
        fig.add_trace(go.Scattergl(x=coords[idx, 0], y=coords[idx, 1], mode="markers", name=cat, text=[words[j] for j in idx],
                                   hovertemplate="%{text}<extra>" + html.escape(cat) + "</extra>",
                                   marker=dict(size=7, color=PALETTE[i % len(PALETTE)], symbol=i // len(PALETTE))))
    if here is not None:
        fig.add_trace(go.Scatter(x=[here[0]], y=[here[1]], mode="markers+text", name=here_label, text=[here_label],
                                 textposition="top center", marker=dict(size=16, color="black", symbol="star")))
    fig.update_layout(title=title, xaxis_title="UMAP 1", yaxis_title="UMAP 2", height=480,
                      **{**LAYOUT, "legend": dict(font=dict(size=10))})
    return fig


CAPTIONS = {
    "decoding": "Each line is one UNet block across reverse diffusion; dashed lines are CLIP's text encoding (the same at every step). "
                "Higher = the block's activations predict human ratings of held-out words better. Bands: 95% bootstrap CI over words.",
    "two_v_two": "For every pair of held-out words: are the two decoded attribute profiles closer to their own human profiles than to "
                 "each other's? 0.5 is chance.",
    "groups": "Mean r per attribute domain for CLIP and for the best UNet block at its last step. Domains differ a lot: "
              "error bars are 95% bootstrap CIs over words.",
    "disambiguation": "For every pair of attributes: does the decoded attribute follow its own human ratings more than the other "
                      "attribute's? Falling lines mean attributes blur together as the image is decoded. 0.5 is chance.",
    "heatmaps": "Attribute x attribute correlations over words: human ratings (left) vs decoded attributes. Similar patterns "
                "mean the probe keeps the structure of human semantics.",
    "separation": "Leave-one-out 5-nearest-neighbour category accuracy in each feature space (z-scored, cosine). "
                  "Falling lines mean object categories collapse together as diffusion proceeds; the dotted line is chance.",
}


def report_figures(report: dict) -> list[tuple[str, go.Figure, str]]:
    """(key, figure, caption) for the report and the app's Report tab."""
    figs = [("decoding", decoding_curve(report)), ("two_v_two", two_v_two_curve(report))]
    refs = reference_names(report)
    best = best_per_step(report)
    names, steps = refs[:2], [None] * len(refs[:2])
    if best:
        names.append(best)
        steps.append(len(report["representations"][best]["results"]) - 1)
    figs.append(("groups", group_bars(report, names, steps)))
    if best:
        figs.append(("disambiguation", disambiguation_curve(report)))
    attrs = report["attributes"]
    figs.append(("heatmaps_human", corr_heatmap(report["human_corr"], attrs, "Human ratings: attribute x attribute correlation")))
    if refs:
        figs.append(("heatmaps_ref", corr_heatmap(report["representations"][refs[0]]["pred_corr"]["0"], attrs,
                                                  f"Decoded from {refs[0]}: attribute x attribute correlation")))
    if best:
        pc = report["representations"][best]["pred_corr"]
        last = max(pc, key=int)
        figs.append(("heatmaps_best", corr_heatmap(pc[last], attrs, f"Decoded from {best} at step {last}: attribute x attribute correlation")))
    first = next(iter(report["representations"].values()))["results"][0]
    if "knn_accuracy" in first:
        figs.append(("separation", separation_curve(report)))
    return [(k, f, CAPTIONS[k.split("_")[0] if k.startswith("heatmaps") else k]) for k, f in figs]


def _fmt(value, spec: str = ".3f") -> str:
    return "" if value is None else format(value, spec)


def report_html(report: dict, meta: dict) -> str:
    """A self-contained HTML page (plotly.js inlined once) with every report figure and its caption."""
    from .analysis import summary_rows

    rows = "".join(
        f"<tr><td>{html.escape(r['name'])}</td><td>{'' if r['step'] is None else r['step']}</td><td>{r['mean_r']:+.3f}</td>"
        f"<td>[{r['mean_r_ci'][0]:+.3f}, {r['mean_r_ci'][1]:+.3f}]</td><td>{r['two_v_two']:.3f}</td>"
        f"<td>{_fmt(r['p_mean_r'])}</td><td>{r['disambiguation']:.3f}</td></tr>"
        for r in summary_rows(report))
    parts = []
    for i, (_, fig, caption) in enumerate(report_figures(report)):
        parts.append(fig.to_html(full_html=False, include_plotlyjs="inline" if i == 0 else False))
        parts.append(f"<p class='caption'>{html.escape(caption)}</p>")
    s = report["settings"]
    warning = ("<p class='warn'>Built on the tiny demo model with random weights. Random networks still encode word form "
               "(length, shared sub-word tokens), so expect numbers near the <i>baseline.wordform</i> row (word length alone), "
               "not zero; trained encoders sit far above it.</p>") if meta.get("model") == "tiny" else ""
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>sdviz report: {html.escape(str(report['model']))}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}}.caption{{color:#444;margin:0 0 2.5em}}
table{{border-collapse:collapse}}td,th{{border-bottom:1px solid #ddd;padding:4px 10px;text-align:right}}.warn{{background:#fff3cd;padding:.6em}}</style></head>
<body><h1>sdviz report: {html.escape(str(report['model']))}</h1>{warning}
<p>{report['n_words']} words of {html.escape(report['dataset'])}, {len(report['attributes'])} attributes, {report['steps']} denoising steps.
Ridge probes, {s['folds']}-fold cross-validation over words (standardisation and penalty fitted inside training folds),
95% intervals from the folds (refitting included), {s['permutations']} permutations of word&harr;rating pairs for p-values.</p>
<h2>Summary (best step per representation)</h2><table><tr><th>representation</th><th>step</th><th>mean r</th><th>95% CI</th>
<th>2v2</th><th>p (mean r)</th><th>disambiguation</th></tr>{rows}</table>
{''.join(parts)}</body></html>"""
