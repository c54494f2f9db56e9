"""Bar charts: decoded attributes on the rating scale, decoding by attribute domain, and a steer's effect."""

import numpy as np
import plotly.graph_objects as go

from ..labels import at_step, label_with_id, short
from ..results import default_highlight
from .style import (
    DOMAIN_COLORS,
    FADE_BELOW,
    FADED,
    GREY,
    HUMAN_COLOR,
    LAYOUT,
    LEGEND_ROW_PX,
    NOTE_PX,
    ROLE_COLORS,
    SCALE,
    SERIES_COLORS,
    darker,
    domain_runs,
    figure_height,
    figure_text,
    legend_below,
    legend_under_title,
    rgba,
    title_layout,
    title_px,
    top_margin,
)


def group_bars(report: dict, names: list[str], steps: list[int | None], *, title: str | None = None,
               tick_angle: float | None = -35, height: int | None = None) -> go.Figure:
    """Mean r per attribute domain with 95% CIs (from the folds, refitting included), one bar series per
    (representation, step). tick_angle None: plotly turns the domain names only where they do not fit."""
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
                             hovertemplate=f"{figure_text(label_with_id(name))}<br>%{{x}}: r = %{{y:.3f}}<extra></extra>",
                             error_y=dict(type="data", array=err_hi, arrayminus=err_lo, visible=True, thickness=1.2)))
    fig.add_hline(y=0, line=dict(dash="dot", color="#777"))
    fig.update_layout(template="plotly_white", font=dict(size=13), height=figure_height(height, title, 460), barmode="group",
                      title=title_layout(title), margin=dict(l=64, r=20, t=top_margin(title, 6), b=100), legend=legend_below(),
                      xaxis=dict(title="attribute domain (Binder et al. 2016)", tickangle=tick_angle),
                      yaxis_title="mean r, 95% CI (chance 0, dotted)")
    return fig


def attribute_bars(attributes: list[str], groups: dict[str, str], series: dict[str, np.ndarray], reliability: dict[str, np.ndarray] | None = None,
                   domain_means: bool = False, title: str | None = None, *, orientation: str = "v", note: str | None = None,
                   fade_below: float = FADE_BELOW, height: int | None = None) -> go.Figure:
    """Decoded attributes on the 0-6 rating scale; series: label -> values per attribute ('human' = human ratings).

    Attributes keep their full names and sit on coloured bands, one per domain, named above (orientation "v")
    or at the right (orientation "h", for phones: one row per attribute). Bars of probes whose cross-validated r
    (`reliability`, same labels as `series`) is below `fade_below` are faded. Values outside 0-6 are clipped
    at the scale's edge and marked with a triangle (hover gives the value). `note` heads the legend,
    under the title.
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
    runs = domain_runs(names, domain_of)
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
                 f"{figure_text(shown_name)}: %{{customdata[0]:.2f}}" + ("" if rel is None else "<br>probe r = %{customdata[1]:.2f}")
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
    top = title_px(title) + (NOTE_PX if note else 0) + LEGEND_ROW_PX + 8
    if horizontal:
        bottom = 56
        height = height or int(top + LEGEND_ROW_PX * (n_legend - 1) + bottom + row_px * n)
    else:
        bottom = 90 if domain_means else 112
        height = figure_height(height, title, 560)
    for k, (g, a, b) in enumerate(runs):
        c = domain_colour[g]
        band = dict(type="rect", layer="below", line=dict(width=0), fillcolor=rgba(c, 0.16 if k % 2 == 0 else 0.24))
        if horizontal:
            fig.add_shape(**band, xref="paper", x0=0, x1=1, yref="y", y0=a - 0.5, y1=b + 0.5)
        else:
            fig.add_shape(**band, yref="paper", y0=0, y1=1, xref="x", x0=a - 0.5, x1=b + 0.5)
        if domain_means:
            continue
        if horizontal:
            fig.add_annotation(x=1, xref="paper", xanchor="left", xshift=4, y=(a + b) / 2, yref="y", text=figure_text(g),
                               showarrow=False, font=dict(size=11, color=darker(c)), hovertext=g)
        else:  # inside the band above the scale, two staggered rows: one-attribute neighbours never print over each other
            fig.add_annotation(x=(a + b) / 2, xref="x", y=SCALE[1] + 1.15 + 0.55 * (k % 2), yref="y", yanchor="middle",
                               text=figure_text(g), showarrow=False, font=dict(size=11, color=darker(c)), hovertext=g)
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
                      title=title_layout(title), margin=margin, legend=legend_under_title(height, title, note), **layout_axes)
    return fig


def steer_figure(attribute: str, target_change: dict, others_change: dict) -> go.Figure:
    """A steer's effect per representation: the target attribute's change against the others' mean |change|.
    Bars on their side, one row per place it is read (downstream last): names never collide, at 390 px as at 1400."""
    # what the denoiser reads and everything downstream of it (the text encoder's own outputs never move)
    names = [n for n in target_change if n == "clip.cond" or not n.startswith(("clip", "text"))]
    ys = [short(n) for n in names]
    fig = go.Figure([
        go.Bar(y=ys, x=[target_change[n] for n in names], name=f"{attribute} (the target)", orientation="h",
               marker_color=ROLE_COLORS[1], customdata=names, hovertemplate="%{customdata}: %{x:+.3f}<extra></extra>"),
        go.Bar(y=ys, x=[others_change[n] for n in names], name="the others, mean |change|", orientation="h",
               marker_color=GREY, customdata=names, hovertemplate="%{customdata}: %{x:.3f}<extra></extra>"),
    ])
    fig.update_layout(**LAYOUT, barmode="group", height=max(300, 90 + 34 * len(names)))
    fig.update_layout(legend=dict(orientation="h", x=0, y=1.02, yanchor="bottom"), margin=dict(l=10, r=20, t=50, b=50))
    fig.update_yaxes(autorange="reversed", automargin=True)  # first place at the top; room for the longest name
    fig.update_xaxes(title_text="change (rating units)")  # short: a phone gives it 300 px; the legend says the rest
    return fig
