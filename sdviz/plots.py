"""Plotly figures, pure functions: data in, figure out.

Every figure has axis labels, human names (`sdviz.labels`) with identifiers on hover, its chance level drawn
and labelled, and a legend that sits above the plot area (never over axis labels). Figures for the report are
numbered; their captions and one-line takeaways (computed from the report's numbers, never written by hand)
come from `report_items`.
"""

import html

import numpy as np
import plotly.graph_objects as go

from .labels import at_step, label, label_with_id, short, step_text

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"]
STEP_AXIS = "denoising step k (0 = pure noise)"
LAYOUT = dict(template="plotly_white", font=dict(size=13), margin=dict(l=60, r=20, t=50, b=55), legend=dict(orientation="h", y=-0.25))

# Roles in line and bar charts: the highlighted few get these colours, everything else is grey.
ROLE_COLORS = ["#1f5fa8", "#c0392b", "#b8860b", "#2e8b57"]
GREY = "#c4c4c4"
SERIES_COLORS = ["#1f5fa8", "#c0392b", "#2e8b57", "#8e44ad", "#d35400"]
HUMAN_COLOR = "#3a3a3a"
# Binder's 14 domains: pale band colours (bars in strong colours stay readable on top of them).
DOMAIN_COLORS = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
                 "#bab0ac", "#8cd17d", "#d37295", "#a0cbe8", "#f1ce63"]
# Up to 12 super categories (Binder has 12); beyond that the symbol changes too.
MAP_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
              "#393b79", "#637939"]
FADE_BELOW = 0.1  # probes with cross-validated r under this are drawn faded
FADED = 0.35
SCALE = (0.0, 6.0)  # Binder's rating scale
TITLE_PX, NOTE_PX, LEGEND_ROW_PX = 44, 22, 24



def _figure_text(text) -> str:
    """Escape text for plotly (it renders a little HTML): <, > and & only; plotly shows &#x27; literally."""
    return html.escape(str(text), quote=False)

def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    return f"rgba({int(h[0:2], 16)},{int(h[2:4], 16)},{int(h[4:6], 16)},{alpha})"


def _title(text: str, note: str | None = None) -> dict:
    """Title at the top left of the figure (one line: plotly mis-places multi-line titles; see `_note`)."""
    del note  # the note is an annotation placed by `_note`
    return dict(text=_figure_text(text) if text else "", x=0.01, xanchor="left", xref="container", y=1, yanchor="top",
                yref="container", pad=dict(t=12), font=dict(size=16))


def _note_annotation(note: str, top: int, plot_px: float, left: int) -> dict:
    return dict(text=_figure_text(note), xref="paper", x=0, xanchor="left", xshift=-(left - 12), yref="paper",
                y=1 + (top - TITLE_PX - NOTE_PX + 2) / max(plot_px, 1), yanchor="bottom", showarrow=False,
                font=dict(size=13, color="#555"), align="left")


def _note(fig: go.Figure, note: str | None, top: int, plot_px: float, left: int) -> None:
    """A smaller grey line right under the title (the caller reserved NOTE_PX in the top margin)."""
    if note:
        fig.add_annotation(**_note_annotation(note, top, plot_px, left))


def _dark(hex_color: str, f: float = 0.62) -> str:
    h = hex_color.lstrip("#")
    return "#" + "".join(f"{int(int(h[i:i + 2], 16) * f):02x}" for i in (0, 2, 4))


def _legend_under_title(height: int, note: str | None = None) -> dict:
    """A horizontal legend right under the title, the note as its heading; plotly pushes the plot down when it wraps."""
    legend = dict(orientation="h", x=0, xanchor="left", yref="container", y=1 - TITLE_PX / height, yanchor="top",
                  font=dict(size=12), bgcolor="rgba(255,255,255,0)")
    if note:
        legend["title"] = dict(text=_figure_text(note), side="top", font=dict(size=13, color="#555"))
    return legend


def _legend_below() -> dict:
    """A horizontal legend at the bottom of the figure; plotly grows the bottom margin to fit it at any width."""
    return dict(orientation="h", x=0, xanchor="left", yref="container", y=0, yanchor="bottom", font=dict(size=12),
                bgcolor="rgba(255,255,255,0)")


def _stagger(values: list[float], px_per_unit: float, min_px: float = 16) -> list[float]:
    """Positions as close to `values` as possible but at least min_px apart on screen (for margin labels)."""
    if not values:
        return []
    order = np.argsort(values)
    pos = np.array(values, float)[order] * px_per_unit
    for i in range(1, len(pos)):
        pos[i] = max(pos[i], pos[i - 1] + min_px)
    pos -= (pos - np.array(values, float)[order] * px_per_unit).mean()  # centre the block on the true values
    out = np.empty(len(pos))
    out[order] = pos / px_per_unit
    return out.tolist()


# -- report helpers ------------------------------------------------------------------------------
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


def default_highlight(report: dict) -> list[str]:
    """The lines a reader should look at first: the CLIP reference, the best UNet block and the word-form floor."""
    refs = reference_names(report)
    names = [refs[0]] if refs else []
    best = best_per_step(report)
    if best:
        names.append(best)
    if "baseline.wordform" in report["representations"]:
        names.append("baseline.wordform")
    return names


def _result(report: dict, name: str, step: int | None = None) -> dict:
    res = report["representations"][name]["results"]
    return res[-1 if step is None else step] if report["representations"][name]["per_step"] else res[0]


def _chance_text(report: dict, name: str, metric: str, chance: float | None, step: int | None = None) -> tuple[str, dict]:
    """('chance 0.5', numbers) or, where the report holds a permutation null, ('shuffled-ratings null 0.49 ± 0.07', ...)."""
    null = _result(report, name, step).get(f"null_{metric}")
    if null:
        return f"shuffled-ratings null {null[0]:.2f} ± {null[1]:.2f}", {"null_mean": null[0], "null_sd": null[1]}
    return ("", {}) if chance is None else (f"chance {chance:g}", {"chance": chance})


# -- line charts ---------------------------------------------------------------------------------
def metric_curve(report: dict, metric: str, ylabel: str, title: str, chance: float | None = None, ci: str | None = None, *,
                 highlight: list[str] | None = None, number: int | None = None, note: str | None = None,
                 height: int = 460) -> go.Figure:
    """One line per per-step representation across denoising steps, once-per-prompt ones as flat reference lines.

    The `highlight` names (default: `default_highlight`) are coloured, with CI bands where `ci` is given; the rest
    are grey and share one legend entry (click it to hide them). Values and the chance level are labelled in the
    right margin, staggered so labels never overlap.
    """
    reps = report["representations"]
    highlight = [n for n in (default_highlight(report) if highlight is None else highlight) if n in reps]
    per_step = [n for n in _reps(report, True) if metric in reps[n]["results"][0]]
    refs = [n for n in reference_names(report) + ["baseline.wordform"] if n in reps and metric in reps[n]["results"][0]]
    refs += [n for n in highlight if n not in refs and not reps[n]["per_step"] and metric in reps[n]["results"][0]]
    steps = max((len(reps[n]["results"]) for n in per_step), default=1)
    xs = list(range(steps))
    pad = 0.3 + 0.03 * (steps - 1)  # room right of the last step for the flat lines' CI bars, side by side
    x_ref = [-pad / 2, steps - 1 + pad / 2]
    ref_ci = 0
    colour = {n: ROLE_COLORS[i % len(ROLE_COLORS)] for i, n in enumerate(highlight)}
    fig = go.Figure()
    values: list[float] = [] if chance is None else [chance]
    margin_labels: list[tuple[float, str, str]] = []  # (y, text, colour)
    grey_legend = False

    def grey_entry() -> dict:
        nonlocal grey_legend
        first, grey_legend = not grey_legend, True
        return dict(legendgroup="others", showlegend=first, name="others (grey)")

    ordered = [n for n in per_step + refs if n not in highlight] + [n for n in per_step + refs if n in highlight]
    for name in ordered:  # grey first, so the highlighted lines are drawn on top
        res = reps[name]["results"]
        is_step = reps[name]["per_step"]
        x = xs[: len(res)] if is_step else x_ref
        y = [r[metric] for r in res] if is_step else [res[0][metric]] * 2
        values += y
        hover = f"{_figure_text(label_with_id(name))}<br>" + ("step %{x}: " if is_step else "") + "%{y:.3f}<extra></extra>"
        if name in highlight:
            c = colour[name]
            if ci and ci in res[0] and is_step:  # a band along the line
                lo, hi = [r[ci][0] for r in res], [r[ci][1] for r in res]
                values += lo + hi
                fig.add_trace(go.Scatter(x=x + x[::-1], y=hi + lo[::-1], fill="toself", fillcolor=_rgba(c, 0.16), mode="lines",
                                         line=dict(width=0), hoverinfo="skip", showlegend=False, legendgroup=name))
            elif ci and ci in res[0]:  # a flat line's CI: one error bar at its right end, not a band over everything
                lo, hi = res[0][ci]
                values += [lo, hi]
                ref_ci += 1
                fig.add_trace(go.Scatter(x=[steps - 1 + pad * (0.2 + 0.25 * ref_ci)], y=[y[0]], mode="markers", marker=dict(color=c, size=5), showlegend=False,
                                         legendgroup=name, hovertemplate=f"95% CI [{lo:.3f}, {hi:.3f}]<extra></extra>",
                                         error_y=dict(type="data", symmetric=False, array=[hi - y[0]], arrayminus=[y[0] - lo],
                                                      color=c, thickness=2, width=6)))
            fig.add_trace(go.Scatter(x=x, y=y, name=short(name), legendgroup=name, hovertemplate=hover,
                                     mode="lines+markers" if is_step else "lines",
                                     line=dict(color=c, width=3, dash=None if is_step else "dash")))
            margin_labels.append((y[-1], f"{short(name)} {y[-1]:.2f}", c))
        else:
            fig.add_trace(go.Scatter(x=x, y=y, hovertemplate=hover, mode="lines", line=dict(color=GREY, width=1.3,
                                     dash=None if is_step else "dash"), **grey_entry()))
    if chance is not None:
        fig.add_trace(go.Scatter(x=x_ref, y=[chance] * 2, mode="lines", line=dict(color="#777", dash="dot", width=1.5),
                                 hovertemplate=f"chance level {chance:g}<extra></extra>", showlegend=False))
        margin_labels.append((chance, f"chance {chance:g}", "#555"))
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    pad = max(hi - lo, 0.05) * 0.08
    y_range = [lo - pad, hi + pad]
    n_legend = len(highlight) + grey_legend
    top = TITLE_PX + (NOTE_PX if note else 0) + 6
    bottom = 60
    plot_px = height - top - bottom - LEGEND_ROW_PX * n_legend  # the legend below may take a row per entry on a phone
    placed = _stagger([v for v, _, _ in margin_labels], plot_px / (y_range[1] - y_range[0]))
    right = 14 + 7.5 * max((len(t) for _, t, _ in margin_labels), default=0)
    for (_, text, c), y in zip(margin_labels, placed):
        fig.add_annotation(x=1, xref="paper", xanchor="left", xshift=6, y=y, yref="y", text=_figure_text(text), showarrow=False,
                           font=dict(size=12, color=c), align="left")
    full = f"Figure {number}. {title}" if number else title
    fig.update_layout(template="plotly_white", font=dict(size=13), height=height, title=_title(full, note),
                      margin=dict(l=64, r=int(right), t=top, b=bottom), legend=_legend_below(),
                      xaxis=dict(title=STEP_AXIS, range=[-pad, steps - 1 + pad * 1.1], dtick=max(1, steps // 10)),
                      yaxis=dict(title=ylabel, range=y_range), hovermode="closest")
    _note(fig, note, top, height - top - bottom, 64)
    return fig


def decoding_curve(report: dict, **kwargs) -> go.Figure:
    return metric_curve(report, "mean_r", "mean r (held-out words)",
                        "Decoding human ratings, step by step", chance=0.0, ci="mean_r_ci", **kwargs)


def two_v_two_curve(report: dict, **kwargs) -> go.Figure:
    return metric_curve(report, "two_v_two", "2-vs-2 accuracy (word pairs)", "Telling two words apart", chance=0.5,
                        ci="two_v_two_ci", **kwargs)


def disambiguation_curve(report: dict, **kwargs) -> go.Figure:
    return metric_curve(report, "disambiguation", "attribute pairs told apart", "Telling attributes apart", chance=0.5,
                        ci="disambiguation_ci", **kwargs)


def separation_curve(report: dict, **kwargs) -> go.Figure:
    first = next(iter(report["representations"].values()))["results"][0]
    return metric_curve(report, "knn_accuracy", "category guessed right",
                        "Do object categories stay apart?", chance=round(first.get("knn_chance", 0), 3), **kwargs)


def closeness_curve(steps: list[int], to_clip: list[float], to_human: list[float] | None, total_steps: int) -> go.Figure:
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=steps, y=to_clip, mode="lines+markers", name="UNet's profile vs CLIP's",
                             line=dict(color=ROLE_COLORS[0], width=3)))
    if to_human:
        fig.add_trace(go.Scatter(x=steps, y=to_human, mode="lines+markers", name="UNet's profile vs human ratings",
                                 line=dict(color=HUMAN_COLOR, width=3)))
    fig.add_hline(y=0, line=dict(dash="dot", color="#777"), annotation_text="0 = unrelated", annotation_position="bottom right")
    height, top, bottom = 340, TITLE_PX + 6, 60
    fig.update_layout(template="plotly_white", font=dict(size=13), height=height,
                      title=_title("How alike are the decoded attribute profiles?"), margin=dict(l=64, r=20, t=top, b=bottom),
                      legend=_legend_below(), xaxis_title=STEP_AXIS,
                      yaxis_title="r over the 65 attributes (1 = same)",
                      xaxis_range=[-0.5, max(total_steps - 0.5, 0.5)], yaxis_range=[-1.05, 1.05])
    return fig


# -- bars ----------------------------------------------------------------------------------------
def group_bars(report: dict, names: list[str], steps: list[int | None], *, number: int | None = None,
               note: str | None = None, height: int = 460) -> go.Figure:
    """Mean r per attribute domain with 95% CIs (from the folds, refitting included), one bar series per (representation, step)."""
    groups = report["group_names"]
    S = report.get("steps")
    roles = default_highlight(report)  # the same colour for the same representation as in the line charts
    spare = iter(["#7fa7d6", "#2e8b57", "#8e44ad", "#d35400"])
    colours = [ROLE_COLORS[roles.index(n)] if n in roles else next(spare, GREY) for n in names]
    fig = go.Figure()
    for i, (name, step) in enumerate(zip(names, steps)):
        res = report["representations"][name]["results"][step or 0]
        y = [res["group_r"][g] for g in groups]
        err_hi = [res["group_r_ci"][g][1] - v for g, v in zip(groups, y)]
        err_lo = [v - res["group_r_ci"][g][0] for g, v in zip(groups, y)]
        name_text = at_step(name, step, S)
        fig.add_trace(go.Bar(x=groups, y=y, name=name_text, marker_color=colours[i],
                             hovertemplate=f"{_figure_text(label_with_id(name))}<br>%{{x}}: r = %{{y:.3f}}<extra></extra>",
                             error_y=dict(type="data", array=err_hi, arrayminus=err_lo, visible=True, thickness=1.2)))
    fig.add_hline(y=0, line=dict(dash="dot", color="#777"))
    top = TITLE_PX + (NOTE_PX if note else 0) + 6
    bottom = 100
    fig.update_layout(template="plotly_white", font=dict(size=13), height=height, barmode="group",
                      title=_title(f"Figure {number}. Decoding by attribute domain" if number else
                                   "Decoding by attribute domain", note),
                      margin=dict(l=64, r=20, t=top, b=bottom), legend=_legend_below(),
                      xaxis=dict(title="attribute domain (Binder et al. 2016)", tickangle=-35),
                      yaxis_title="mean r, 95% CI (chance 0, dotted)")
    _note(fig, note, top, height - top - bottom, 64)
    return fig


def _domain_runs(attributes: list[str], groups: dict[str, str]) -> list[tuple[str, int, int]]:
    """(domain, first index, last index) for consecutive attributes of one domain, in order."""
    runs: list[list] = []
    for i, a in enumerate(attributes):
        g = groups.get(a, "")
        if runs and runs[-1][0] == g:
            runs[-1][2] = i
        else:
            runs.append([g, i, i])
    return [tuple(r) for r in runs]


def attribute_bars(attributes: list[str], groups: dict[str, str], series: dict[str, np.ndarray], reliability: dict[str, np.ndarray] | None = None,
                   domain_means: bool = False, title: str = "", *, orientation: str = "v", note: str | None = None,
                   fade_below: float = FADE_BELOW, height: int | None = None) -> go.Figure:
    """Decoded attributes on the 0-6 rating scale; series: label -> values per attribute ('human' = human ratings).

    Attributes keep their full names and sit on coloured bands, one per domain, named above (orientation "v")
    or at the right (orientation "h", for phones: one row per attribute). Bars of probes whose cross-validated r
    (`reliability`, same labels as `series`) is below `fade_below` are faded. Values outside 0-6 are clipped
    at the scale's edge and marked with a triangle (hover gives the value). `note` is a line under the title.
    With domain_means, one bar per domain (mean over its attributes).
    """
    horizontal = orientation == "h"
    reliability = reliability or {}
    if domain_means:
        order = list(dict.fromkeys(groups[a] for a in attributes))
        idx = [[i for i, a in enumerate(attributes) if groups[a] == g] for g in order]
        series = {k: np.array([np.mean(np.asarray(v, float)[i]) for i in idx]) for k, v in series.items()}
        reliability = {k: np.array([np.mean(np.asarray(v, float)[i]) for i in idx]) for k, v in reliability.items() if v is not None}
        names, domain_of = order, {g: g for g in order}
    else:
        names, domain_of = list(attributes), groups
    runs = _domain_runs(names, domain_of)
    domain_colour = {g: DOMAIN_COLORS[i % len(DOMAIN_COLORS)] for i, g in enumerate(dict.fromkeys(r[0] for r in runs))}
    n, m = len(names), max(len(series), 1)
    pos = np.arange(n, dtype=float)
    width = 0.84 / m
    lo_edge, hi_edge = SCALE[0] - 0.35, SCALE[1] + 0.35
    fig = go.Figure()
    outside = {"x": [], "y": [], "symbol": [], "color": [], "text": [], "hover": [], "where": []}
    any_faded = False
    for i, (name, values) in enumerate(series.items()):
        values = np.asarray(values, float)
        colour = HUMAN_COLOR if name == "human" else SERIES_COLORS[i % len(SERIES_COLORS)]
        shown_name = "human ratings" if name == "human" else name
        rel = reliability.get(name)
        opacity = np.ones(n) if rel is None else np.where(np.asarray(rel, float) < fade_below, FADED, 1.0)
        any_faded |= bool((opacity < 1).any())
        offset = -0.42 + i * width
        custom = np.stack([values, np.full(n, np.nan) if rel is None else np.asarray(rel, float)], axis=1)
        hover = (f"<b>%{{customdata[2]}}</b> ({'domain' if domain_means else '%{customdata[3]}'})<br>"
                 f"{_figure_text(shown_name)}: %{{customdata[0]:.2f}}" + ("" if rel is None else "<br>probe r = %{customdata[1]:.2f}")
                 + "<extra></extra>")
        custom = [[v, r, nm, domain_of.get(nm, "")] for (v, r), nm in zip(custom.tolist(), names)]
        clipped = np.clip(values, lo_edge, hi_edge)
        bar = dict(name=shown_name, customdata=custom, hovertemplate=hover, width=width * 0.95, offset=offset,
                   marker=dict(color=colour, opacity=opacity.tolist(), line=dict(width=0)))
        if horizontal:
            fig.add_trace(go.Bar(y=pos, x=clipped, orientation="h", **bar))
        else:
            fig.add_trace(go.Bar(x=pos, y=clipped, **bar))
        for j in np.flatnonzero((values > SCALE[1]) | (values < SCALE[0])):
            above = values[j] > SCALE[1]
            outside["x"].append(pos[j] + offset + width / 2)
            outside["y"].append(hi_edge + 0.15 if above else lo_edge - 0.15)
            outside["symbol"].append(("triangle-right" if above else "triangle-left") if horizontal else
                                     ("triangle-up" if above else "triangle-down"))
            outside["color"].append(colour)
            # left of the axis there is no room in a phone's row (the name is there): that value is on hover only
            outside["text"].append("" if horizontal and not above else f"{values[j]:.1f}")
            outside["where"].append(("middle right" if above else "middle left") if horizontal else
                                    ("top center" if above else "bottom center"))
            outside["hover"].append(f"{names[j]}: {shown_name} {values[j]:.2f} ({'above 6' if above else 'below 0'}, off the scale)")
    if outside["x"]:
        few = len(outside["x"]) <= 8  # print the values only where they cannot crowd each other
        coords = dict(x=outside["y"], y=outside["x"]) if horizontal else dict(x=outside["x"], y=outside["y"])
        fig.add_trace(go.Scatter(**coords, mode="markers+text" if few else "markers", text=outside["text"],
                                 textposition=outside["where"], textfont=dict(size=10),
                                 cliponaxis=False,
                                 marker=dict(symbol=outside["symbol"], color=outside["color"], size=9),
                                 name=f"{'◀▶' if horizontal else '▲▼'} off the 0–6 scale (bar cut at the edge)", hovertext=outside["hover"],
                                 hovertemplate="%{hovertext}<extra></extra>"))
    if any_faded:
        fig.add_trace(go.Bar(x=[None], y=[None], name=f"faded: unreliable probe (cross-validated r < {fade_below:g})",
                             marker=dict(color="#888", opacity=FADED), hoverinfo="skip"))
    # domain bands and their names
    row_px = max(16, 7 * m + 4)
    n_legend = len(fig.data)
    # the legend (with the note as its heading) hangs under the title; plotly grows the top margin when it wraps
    top = TITLE_PX + (NOTE_PX if note else 0) + LEGEND_ROW_PX + 8
    if horizontal:
        bottom = 56
        height = height or int(top + LEGEND_ROW_PX * (n_legend - 1) + bottom + row_px * n)
    else:
        bottom = 90 if domain_means else 112
        height = height or 560
    for k, (g, a, b) in enumerate(runs):
        c = domain_colour[g]
        band = dict(type="rect", layer="below", line=dict(width=0), fillcolor=_rgba(c, 0.16 if k % 2 == 0 else 0.24))
        if horizontal:
            fig.add_shape(**band, xref="paper", x0=0, x1=1, yref="y", y0=a - 0.5, y1=b + 0.5)
        else:
            fig.add_shape(**band, yref="paper", y0=0, y1=1, xref="x", x0=a - 0.5, x1=b + 0.5)
        if domain_means:
            continue
        if horizontal:
            fig.add_annotation(x=1, xref="paper", xanchor="left", xshift=4, y=(a + b) / 2, yref="y", text=_figure_text(g),
                               showarrow=False, font=dict(size=11, color=_dark(c)), hovertext=g)
        else:  # inside the band above the scale, two staggered rows: one-attribute neighbours never print over each other
            fig.add_annotation(x=(a + b) / 2, xref="x", y=SCALE[1] + 1.15 + 0.55 * (k % 2), yref="y", yanchor="middle",
                               text=html.escape(g), showarrow=False, font=dict(size=11, color=_dark(c)), hovertext=g)
    head = 0.5 if (domain_means or horizontal) else 1.65  # room above the scale for the domain names
    value_axis = dict(title="rating (0–6 scale)", range=[lo_edge - 0.5, hi_edge + head], tickvals=list(range(7)),
                      zeroline=True, zerolinecolor="#999")
    name_axis = dict(tickvals=pos.tolist(), ticktext=names, range=[-0.6, n - 0.4], showgrid=False,
                     title="attribute domain" if domain_means else None)
    longest = max((len(s) for s in names), default=4)
    if horizontal:
        name_axis |= dict(autorange="reversed", tickfont=dict(size=12))
        name_axis.pop("range")
        layout_axes = dict(yaxis=name_axis, xaxis=value_axis)
        margin = dict(l=int(16 + 7 * longest), r=84 if not domain_means else 20, t=top, b=bottom)
    else:
        name_axis |= dict(tickangle=-35 if domain_means else -60, tickfont=dict(size=11))
        layout_axes = dict(xaxis=name_axis, yaxis=value_axis)
        margin = dict(l=64, r=36, t=top, b=bottom)  # r: room for the last domain's name
    fig.update_layout(template="plotly_white", font=dict(size=13), height=height, barmode="overlay", bargap=0,
                      title=_title(title), margin=margin, legend=_legend_under_title(height, note), **layout_axes)
    return fig


# -- heatmaps ------------------------------------------------------------------------------------
def corr_heatmap(matrix, attributes: list[str], title: str, *, groups: dict[str, str] | None = None,
                 number: int | None = None, height: int = 640) -> go.Figure:
    """Attribute x attribute correlation; thin lines separate Binder's domains when `groups` is given."""
    fig = go.Figure(go.Heatmap(z=matrix, x=attributes, y=attributes, zmin=-1, zmax=1, colorscale="RdBu_r",
                               colorbar=dict(title="r", thickness=12),
                               hovertemplate="%{y} × %{x}: r = %{z:.2f}<extra></extra>"))
    for _, a, _end in _domain_runs(attributes, groups or {})[1:] if groups else []:
        for kind in ("x", "y"):
            other = "y" if kind == "x" else "x"
            fig.add_shape(type="line", line=dict(color="#222", width=0.8), **{f"{kind}ref": kind, f"{other}ref": "paper",
                          f"{kind}0": a - 0.5, f"{kind}1": a - 0.5, f"{other}0": 0, f"{other}1": 1})
    full = f"Figure {number}. {title}" if number else title
    fig.update_layout(template="plotly_white", font=dict(size=13), height=height, title=_title(full),
                      margin=dict(l=100, r=20, t=TITLE_PX + 6, b=100))
    fig.update_xaxes(title="attribute", tickfont=dict(size=9), tickangle=-90)
    fig.update_yaxes(title="attribute", tickfont=dict(size=9), autorange="reversed")
    return fig


# -- maps ----------------------------------------------------------------------------------------
def _truncate(text: str, n: int = 32) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1].rstrip() + "…"


def _map_groups(words, categories, super_categories) -> list[tuple[str, list[int]]]:
    """Colour groups: super categories when given (about 10), else categories; sorted by size, largest first."""
    key = super_categories or categories or ["word"] * len(words)
    groups: dict[str, list[int]] = {}
    for j, k in enumerate(key):
        groups.setdefault(str(k), []).append(j)
    return sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))


def _map_traces(xy: np.ndarray, words, categories, super_categories, groups, only) -> list[go.Scatter]:
    traces = []
    for i, (group, idx) in enumerate(groups):
        fine = [(categories or [""] * len(words))[j] for j in idx]
        traces.append(go.Scatter(
            x=xy[idx, 0], y=xy[idx, 1], mode="markers", name=group, ids=[words[j] for j in idx], text=[words[j] for j in idx],
            customdata=fine, hovertemplate="<b>%{text}</b><br>%{customdata}" + (f" · {html.escape(group)}" if super_categories else "")
            + "<extra></extra>", visible=True if only is None or group in only else "legendonly",
            marker=dict(size=7, color=MAP_COLORS[i % len(MAP_COLORS)], symbol=i // len(MAP_COLORS), opacity=0.85,
                        line=dict(width=0.5, color="white"))))
    return traces


def _star(xy: np.ndarray, here, here_label: str) -> tuple[go.Scatter, list[dict]]:
    """The prompt's star and its label, offset away from the cloud's centre with an arrow so it hides no dots."""
    text = _truncate(here_label)
    if here is None:
        return go.Scatter(x=[None], y=[None], mode="markers", name=text, showlegend=False, hoverinfo="skip",
                          marker=dict(size=18, color="black", symbol="star")), []
    centre = np.median(xy, axis=0)
    d = np.array(here, float) - centre
    d = d / (np.linalg.norm(d) + 1e-9) if np.linalg.norm(d) > 1e-9 else np.array([1.0, 1.0]) / np.sqrt(2)
    lo, hi = xy.min(0), xy.max(0)
    rel = (np.array(here, float) - lo) / np.maximum(hi - lo, 1e-9)
    for i in range(2):  # near an edge the label points back inside, so it never leaves the plot
        if rel[i] > 0.8:
            d[i] = -abs(d[i]) - 0.3
        elif rel[i] < 0.2:
            d[i] = abs(d[i]) + 0.3
    d = d / np.linalg.norm(d)
    note = dict(x=here[0], y=here[1], xref="x", yref="y", text=_figure_text(text), showarrow=True, arrowhead=2, arrowwidth=1.5,
                ax=float(50 * d[0]), ay=float(-50 * d[1]), xanchor="left" if d[0] >= 0 else "right",
                yanchor="bottom" if d[1] >= 0 else "top", bgcolor="rgba(255,255,255,0.7)", bordercolor="#333", borderwidth=1,
                font=dict(size=12, color="black"))
    star = go.Scatter(x=[here[0]], y=[here[1]], mode="markers", name=text, hovertemplate=html.escape(text) + "<extra></extra>",
                      marker=dict(size=18, color="black", symbol="star", line=dict(width=1, color="white")))
    return star, [note]


def _map_layout(title: str, height: int, bottom: int, note: str | None = None, below: bool = True) -> dict:
    """Legend below the map, or under the title when the animation controls sit below; plotly makes room at any width."""
    top = TITLE_PX + (NOTE_PX if note else 0) + (0 if below else LEGEND_ROW_PX + 2) + 6
    axis = dict(showticklabels=False, showgrid=False, zeroline=False, title=None)
    legend = _legend_below() if below else _legend_under_title(height + top, note)
    return dict(template="plotly_white", font=dict(size=13), height=height + top, title=_title(title, note),
                margin=dict(l=16, r=16, t=top, b=bottom), legend=legend | dict(font=dict(size=12), itemsizing="constant"),
                xaxis=axis, yaxis=axis, hovermode="closest", dragmode="pan")


def embedding_map(coords: np.ndarray, words: list[str], categories: list[str] | None, title: str,
                  here: tuple[float, float] | None = None, here_label: str = "your prompt", *,
                  super_categories: list[str] | None = None, only: set[str] | None = None, note: str | None = None,
                  height: int = 440) -> go.Figure:
    """All dataset words on a 2-D map, coloured by super category (fine category on hover), the prompt as a star.

    Filtering: `only` (a set of group names) shows those groups and leaves the rest switched off in the legend,
    where a click brings them back (a double click isolates one): the legend is the filter.
    """
    xy = np.asarray(coords, float)
    groups = _map_groups(words, categories, super_categories)
    star, notes = _star(xy, here, here_label)
    fig = go.Figure(_map_traces(xy, words, categories, super_categories, groups, only) + ([star] if here is not None else []))
    fig.update_layout(**_map_layout(title, height, 16, note), annotations=notes)
    _note(fig, note, fig.layout.margin.t, height - 16, 16)
    return fig


def embedding_map_animation(coords: np.ndarray, words: list[str], categories: list[str] | None,
                            super_categories: list[str] | None, title: str, here: list | None = None,
                            here_label: str = "your prompt", step_label=None, *, only: set[str] | None = None,
                            note: str | None = None, height: int = 440) -> go.Figure:
    """One map per step as plotly frames, with Play/Pause and a step slider; axes fixed over all steps so the
    points travel (words keep their ids). here: per-step (x, y) of the prompt or None; step_label(k) -> text
    (default 'step k of S-1'), shown above the slider."""
    C = np.asarray(coords, float)
    S = C.shape[0]
    step_label = step_label or (lambda k: step_text(k, S))
    here = list(here) if here is not None else [None] * S
    groups = _map_groups(words, categories, super_categories)
    allxy = np.concatenate([C.reshape(-1, 2)] + [np.array([h], float) for h in here if h is not None])
    lo, hi = allxy.min(0), allxy.max(0)
    pad = (hi - lo) * 0.06 + 1e-6
    has_star = any(h is not None for h in here)
    bottom = 120  # Play/Pause on one row, the slider under it
    layout = _map_layout(title, height, bottom, note, below=False)
    fixed: list[dict] = []  # the note is the legend's heading

    def step_data(k):
        star, notes = _star(C[k], here[k], here_label)
        star.update(name=_truncate(here_label), showlegend=has_star)
        return _map_traces(C[k], words, categories, super_categories, groups, only) + [star], fixed + notes

    frames = []
    for k in range(S):
        data, notes = step_data(k)
        frames.append(go.Frame(name=str(k), data=data, traces=list(range(len(data))), layout=dict(annotations=notes)))
    data0, notes0 = step_data(0)
    fig = go.Figure(data=data0, frames=frames)
    move = dict(frame=dict(duration=800, redraw=False), transition=dict(duration=500, easing="cubic-in-out"))
    jump = dict(frame=dict(duration=0, redraw=False), mode="immediate", transition=dict(duration=300))
    fig.update_layout(**layout, annotations=notes0)
    fig.update_layout(
        xaxis_range=[lo[0] - pad[0], hi[0] + pad[0]], yaxis_range=[lo[1] - pad[1], hi[1] + pad[1]],
        updatemenus=[dict(type="buttons", direction="left", x=0, xanchor="left", y=0, yanchor="top", pad=dict(t=8),
                          showactive=False, font=dict(size=14), buttons=[
                              dict(label="▶ Play", method="animate", args=[None, dict(move, fromcurrent=True, mode="immediate")]),
                              dict(label="❚❚ Pause", method="animate",
                                   args=[[None], dict(frame=dict(duration=0, redraw=False), mode="immediate",
                                                      transition=dict(duration=0))])])],
        # tick labels only where they fit (few steps); the current step is always written above the slider's right end
        sliders=[dict(active=0, x=0.03, len=0.94, xanchor="left", y=0, yanchor="top", pad=dict(t=56, b=0),
                      font=dict(size=11, color="#444" if S <= 6 else "rgba(0,0,0,0)"), ticklen=4,
                      currentvalue=dict(visible=True, xanchor="right", font=dict(size=14, color="#222")),
                      steps=[dict(label=str(step_label(k)), method="animate", args=[[str(k)], jump]) for k in range(S)])])
    return fig


# -- the report ----------------------------------------------------------------------------------
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
}
ORDER = ["decoding", "groups", "disambiguation", "separation", "two_v_two", "heatmaps_human", "heatmaps_ref", "heatmaps_best"]


def _vs(report: dict, metric: str, a: str, b: str, chance_text: str, unit: str) -> tuple[str, dict]:
    """'CLIP all words is higher: mean r 0.12 vs 0.03 for UNet middle at its last step (chance 0).'"""
    va, vb = _result(report, a)[metric], _result(report, b)[metric]
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
        values[name] = _result(report, name)[metric]
        text = f"{label(name)}: {unit} {values[name]:.2f} ({chance_text})."
    if "baseline.wordform" in report["representations"] and metric in _result(report, "baseline.wordform"):
        v = _result(report, "baseline.wordform")[metric]
        values["baseline.wordform"] = v
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
    return text, values | {f"{best}@0": first, f"{best}@{len(res) - 1}": last}


def _upper(matrix) -> np.ndarray:
    M = np.asarray(matrix, float)
    return M[np.triu_indices(M.shape[0], k=1)]


def _heatmap_takeaway(report: dict, matrix, who: str) -> tuple[str, dict]:
    human, pred = _upper(report["human_corr"]), _upper(matrix)
    ok = np.isfinite(human) & np.isfinite(pred)
    r = float(np.corrcoef(human[ok], pred[ok])[0, 1]) if ok.sum() > 2 and pred[ok].std() > 0 else 0.0
    return f"{who}: its pattern matches the human one with r = {r:.2f} over attribute pairs (0 = unrelated).", {"pattern_r": r}


def _human_takeaway(report: dict) -> tuple[str, dict]:
    attrs, groups = report["attributes"], report["groups"]
    M = np.asarray(report["human_corr"], float)
    i, j = np.triu_indices(len(attrs), k=1)
    same = np.array([groups[attrs[a]] == groups[attrs[b]] for a, b in zip(i, j)])
    within, between = float(np.nanmean(M[i, j][same])), float(np.nanmean(M[i, j][~same]))
    verdict = "go together more" if within > between else "do not go together more"
    return (f"Attributes of one domain {verdict} than attributes of different domains: mean r {within:.2f} within "
            f"domains vs {between:.2f} between them (0 = unrelated)."), {"within": within, "between": between}


def _groups_takeaway(report: dict, name: str, step: int | None) -> tuple[str, dict]:
    res = report["representations"][name]["results"][step or 0]
    g = res["group_r"]
    top, bottom = max(g, key=g.get), min(g, key=g.get)
    where = "" if step is None else f" at {step_text(step, report['steps'])}"
    return (f"{label(name)}{where} decodes {top} best (r {g[top]:.2f}) and {bottom} worst (r {g[bottom]:.2f}); "
            "chance is 0."), {top: g[top], bottom: g[bottom]}


def report_items(report: dict, *, highlight: list[str] | None = None) -> list[dict]:
    """The report's figures in reading order, numbered: dicts with key, number, title, figure, caption and takeaway
    (one sentence whose numbers come from the report), plus `values`, the numbers the takeaway quotes."""
    reps = report["representations"]
    refs, best = reference_names(report), best_per_step(report)
    first = next(iter(reps.values()))["results"][0]
    attrs = report["attributes"]
    plan = {"decoding": lambda n: (decoding_curve(report, number=n, highlight=highlight),
                                   _curve_takeaway(report, "mean_r", "mean r", 0.0))}
    names = refs[:2] + ([best] if best else [])
    steps = [None] * len(refs[:2]) + ([len(reps[best]["results"]) - 1] if best else [])
    plan["groups"] = lambda n: (group_bars(report, names, steps, number=n), _groups_takeaway(report, names[-1], steps[-1]))
    if best and "disambiguation" in first:
        plan["disambiguation"] = lambda n: (disambiguation_curve(report, number=n, highlight=highlight),
                                            _trend_takeaway(report, "disambiguation", "attribute pairs told apart", 0.5))
    if "knn_accuracy" in first:
        chance = round(first.get("knn_chance", 0), 3)
        plan["separation"] = lambda n: (separation_curve(report, number=n, highlight=highlight),
                                        _curve_takeaway(report, "knn_accuracy", "neighbours right", chance))
    plan["two_v_two"] = lambda n: (two_v_two_curve(report, number=n, highlight=highlight),
                                   _curve_takeaway(report, "two_v_two", "2v2", 0.5))
    groups = report.get("groups")
    plan["heatmaps_human"] = lambda n: (corr_heatmap(report["human_corr"], attrs, "Human ratings: how attributes go together",
                                                     groups=groups, number=n), _human_takeaway(report))
    if refs:
        M = reps[refs[0]]["pred_corr"]["0"]
        plan["heatmaps_ref"] = lambda n: (corr_heatmap(M, attrs, f"Decoded from {short(refs[0])}", groups=groups, number=n),
                                          _heatmap_takeaway(report, M, f"Decoded from {label(refs[0])}"))
    if best:
        pc = reps[best]["pred_corr"]
        last = max(pc, key=int)
        where = step_text(int(last), report["steps"])
        plan["heatmaps_best"] = lambda n: (corr_heatmap(pc[last], attrs, f"Decoded from {short(best)}, {where}", groups=groups,
                                                        number=n),
                                           _heatmap_takeaway(report, pc[last], f"Decoded from {label(best)} at {where}"))
    items, first_map = [], None
    for key in [k for k in ORDER if k in plan]:
        number = len(items) + 1
        fig, (takeaway, values) = plan[key](number)
        title = fig.layout.title.text.split("<br>")[0]
        caption = CAPTIONS.get(key)
        if key.startswith("heatmaps"):  # shown one after the other: described once
            first_map = first_map or number
            caption = CAPTIONS["heatmaps"] if first_map == number else f"Read it like Figure {first_map}."
        items.append(dict(key=key, number=number, title=html.unescape(title), figure=fig, takeaway=takeaway, values=values,
                          caption=caption))
    return items


def report_figures(report: dict) -> list[tuple[str, go.Figure, str]]:
    """(key, figure, caption) for the report and the app's Report tab, in reading order (figures are numbered)."""
    return [(it["key"], it["figure"], f"{it['takeaway']} {it['caption']}") for it in report_items(report)]


def _fmt(value, spec: str = ".3f") -> str:
    return "" if value is None else format(value, spec)


def _null(res: dict, metric: str, chance: float) -> str:
    null = res.get(f"null_{metric}")
    return f"{null[0]:.2f} ± {null[1]:.2f}" if null else f"{chance:g}"


def summary_table_html(report: dict) -> str:
    """Per representation: human name and id, best step, mean r [CI], 2v2, p, disambiguation, each with its chance level."""
    from .analysis import summary_rows

    S = report.get("steps")
    rows = []
    for r in summary_rows(report):
        res = _result(report, r["name"], r["step"])
        ci = r["mean_r_ci"]
        step = "once per prompt" if r["step"] is None else step_text(r["step"], S)
        rows.append(
            f"<tr><td class='name'>{html.escape(label(r['name']))}<br><code>{html.escape(r['name'])}</code></td><td>{step}</td>"
            f"<td><b>{r['mean_r']:+.3f}</b><br><small>[{ci[0]:+.3f}, {ci[1]:+.3f}]</small></td>"
            f"<td>{_null(res, 'mean_r', 0.0)}</td><td>{_fmt(r['p_mean_r'])}</td>"
            f"<td>{r['two_v_two']:.3f}</td><td>{_null(res, 'two_v_two', 0.5)}</td>"
            f"<td>{r['disambiguation']:.3f}</td><td>{_null(res, 'disambiguation', 0.5)}</td></tr>")
    return ("<table><thead><tr><th>representation</th><th>best step</th><th>mean r<br><small>[95% CI]</small></th>"
            "<th>chance r</th><th>p</th><th>2v2</th><th>chance 2v2</th><th>attribute<br>disambiguation</th>"
            "<th>chance</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def steer_figure(attribute: str, target_change: dict, others_change: dict) -> go.Figure:
    """A steer's effect per representation: the target attribute's change against the others' mean |change|."""
    # what the denoiser reads and everything downstream of it (the text encoder's own outputs never move)
    names = [n for n in target_change if n == "clip.cond" or not n.startswith(("clip", "text"))]
    xs = [short(n) for n in names]
    fig = go.Figure([
        go.Bar(x=xs, y=[target_change[n] for n in names], name=f"{attribute} (the target)",
               marker_color=ROLE_COLORS[1], customdata=names, hovertemplate="%{customdata}: %{y:+.3f}<extra></extra>"),
        go.Bar(x=xs, y=[others_change[n] for n in names], name="the other attributes, mean |change|",
               marker_color=GREY, customdata=names, hovertemplate="%{customdata}: %{y:.3f}<extra></extra>"),
    ])
    fig.update_layout(**LAYOUT, barmode="group", height=380)
    fig.update_layout(legend=dict(orientation="h", x=0, y=1.12), margin=dict(l=60, r=20, t=40, b=90))
    fig.update_xaxes(title_text="where it is read (the last step for UNet blocks)", tickangle=-30)
    fig.update_yaxes(title_text="change in the reading (rating units)")
    return fig


def distance_figure(distance: dict) -> go.Figure:
    """Two prompts' distance (1 - cosine) step by step, one line per UNet block, CLIP's as a dashed line."""
    fig = go.Figure()
    per_step = [n for n, d in distance.items() if len(d) > 1 and n.startswith("unet.")]
    steps = len(distance[per_step[0]]) if per_step else 1
    for i, name in enumerate(per_step):
        fig.add_trace(go.Scatter(x=list(range(steps)), y=distance[name], mode="lines+markers", name=short(name),
                                 line=dict(color=PALETTE[i % len(PALETTE)]),
                                 hovertemplate=f"{name}, step %{{x}}: %{{y:.3f}}<extra></extra>"))
    if "clip.cond" in distance:
        fig.add_trace(go.Scatter(x=[0, max(steps - 1, 1)], y=[distance["clip.cond"][0]] * 2, mode="lines",
                                 name="CLIP (what the UNet reads)", line=dict(color="#222", dash="dash"),
                                 hovertemplate="clip.cond: %{y:.3f}<extra></extra>"))
    fig.update_layout(**LAYOUT, height=400)
    fig.update_layout(legend=dict(orientation="h", x=0, y=-0.3), margin=dict(l=60, r=20, t=20, b=110))
    fig.update_xaxes(title_text=STEP_AXIS, tick0=0, dtick=max(1, round(steps / 10)))
    fig.update_yaxes(title_text="distance A–B (1 − cosine)", rangemode="tozero")
    return fig


def lens_figure(layers: list[int], agreement: list[float]) -> go.Figure:
    """Per CLIP layer, r between what it hands the denoiser (decoded) and what the last layer does."""
    fig = go.Figure(go.Scatter(x=layers, y=agreement, mode="lines+markers",
                               line=dict(color=ROLE_COLORS[0]), hovertemplate="layer %{x}: r = %{y:.2f}<extra></extra>",
                               name="agreement with the last layer"))
    fig.update_layout(**LAYOUT)
    fig.update_layout(height=340, showlegend=False, margin=dict(l=60, r=20, t=20, b=60))
    fig.update_xaxes(title_text="CLIP layer (0 = word embeddings)", dtick=1)
    fig.update_yaxes(title_text="r with the last layer's reading", range=[-1.05, 1.05])
    return fig


def steer_eval_figure(doc: dict, *, number: int | None = None) -> go.Figure:
    """Steering specificity (sdviz steer-eval): per place steered, the target attribute's mean change against
    the strength, the other attributes' mean |change|, and the target's change under a random direction."""
    fig = go.Figure()
    xs = doc["strengths"]
    for i, where in enumerate(doc["wheres"]):
        colour = SERIES_COLORS[i % len(SERIES_COLORS)]
        name = "CLIP" if where == "clip" else short(where)
        rows = [doc["summary"][where][str(float(x))] for x in xs]
        for key, dash, text in (("target", "solid", "target attribute"), ("others", "dot", "others, mean |change|"),
                                ("random_target", "dash", "random direction")):
            fig.add_trace(go.Scatter(x=xs, y=[r[key] for r in rows], mode="lines+markers", line=dict(color=colour, dash=dash),
                                     name=f"{_figure_text(name)}: {text}",
                                     hovertemplate=f"{_figure_text(where)} · {text}<br>strength %{{x}}: %{{y:.3f}}<extra></extra>"))
    values = [v for w in doc["wheres"] for r in doc["summary"][w].values() for v in r.values()]
    low, high = min(values + [0.0]), max(values + [0.0])
    pad = 0.08 * ((high - low) or 1.0)
    fig.add_hline(y=0, line=dict(color="#888", width=1))
    title = f"{'Figure ' + str(number) + '. ' if number else ''}Steering: does only the target move?"
    fig.update_layout(**LAYOUT, title=_title(title, f"read from {label(doc['readout'])} at the last step, "
                                             f"{len(doc['words'])} held-out words"), height=460)
    fig.update_layout(legend=_legend_below(), margin=dict(l=60, r=20, t=80, b=120))
    fig.update_xaxes(title_text="strength (rating units)", tickvals=xs)
    fig.update_yaxes(title_text="change downstream", range=[low - pad, high + pad])
    return fig


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
    fig = steer_eval_figure(doc, number=number).to_html(full_html=False, include_plotlyjs=False,
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
        parts.append(it["figure"].to_html(full_html=False, include_plotlyjs="inline" if i == 0 else False,
                                          config={"responsive": True, "displaylogo": False}))
        parts.append(f"<p class='caption'><b>Figure {it['number']}.</b> {html.escape(it['caption'])}</p></section>")
    s = report["settings"]
    warning = ("<p class='warn'><b>Demo model with random weights:</b> these numbers show the machinery, not real semantics. "
               "Random networks still encode word form (length, shared sub-word tokens), so expect numbers near the "
               "<i>word length alone</i> row (<code>baseline.wordform</code>), not exactly zero; trained encoders sit far above it.</p>"
               ) if meta.get("model") == "tiny" else ""
    auto = ("<p class='warn'>Built with reduced settings for the app's automatic first build: fewer shuffles "
            "than a full build, so the CIs and p-values are rougher.</p>") if s.get("automatic") else ""
    steps = report["steps"]
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>sdviz report: {html.escape(str(report['model']))}</title>
<style>body{{font-family:system-ui,sans-serif;font-size:16px;line-height:1.5;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}}
.caption{{font-size:16px;color:#333;margin:.3em 0 2.8em}}.takeaway{{font-size:17px;font-weight:600;margin:1.6em 0 .2em}}
table{{border-collapse:collapse;font-size:15px;display:block;overflow-x:auto}}td,th{{border-bottom:1px solid #ddd;padding:6px 10px;text-align:right;vertical-align:top}}
td.name,th:first-child{{text-align:left}}td:not(.name){{white-space:nowrap}}code{{font-size:13px;color:#555}}.warn{{background:#fff3cd;padding:.6em .9em;border-radius:4px}}
.settings{{font-size:15px;color:#333}}</style></head>
<body><h1>sdviz report: {html.escape(str(report['model']))}</h1>{warning}{auto}
<p>{report['n_words']} words of {html.escape(report['dataset'])}, {len(report['attributes'])} human-rated attributes,
{steps} denoising steps (step 0 = pure noise, step {steps - 1} = the finished image). Chance levels are given next to every
number: r 0, 2v2 0.5, attribute disambiguation 0.5 (where the report holds them, the mean ± sd of the same number with the
ratings shuffled).</p>
<h2>Summary: each representation at its best step</h2>{summary_table_html(report)}
<p class='settings'><b>Settings.</b> Ridge probes, {s['folds']}-fold cross-validation over words (standardisation and
penalty fitted inside training folds), 95% intervals from the folds with refitting included (docs/methods.md), {s['permutations']} shuffles of
word&harr;rating pairs for p-values, seed {s.get('seed', 0)}, prompt template <code>{html.escape(str(s.get('template', '')))}</code>.
Category separation: {s.get('knn_k', 5)} nearest neighbours (cosine).</p>
<h2>Figures</h2>
{''.join(parts)}{steer_eval_html(steer_eval, len(items) + 1) if steer_eval else ''}</body></html>"""
