"""The figures that test the paper's thesis (issue 18): what a UNet block holds beyond CLIP, step by step (variance
partitioning and the residual probe), and whether the decoded attributes go together like the humans' ratings
(RSA and mean |off-diagonal| per step; the attribute x attribute matrix animated over the steps).

Data in, figure out: each takes the report's `partition` or `entanglement` dict (docs/methods.md defines every
number; `results.partition` / `results.entanglement` read them). Every interval and null band is clipped to the
range its quantity can take (`RANGES`), so no band suggests an impossible value.
"""

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..labels import label_with_id, short
from .style import (
    GREY,
    HUMAN_COLOR,
    ROLE_COLORS,
    STEP_AXIS,
    domain_runs,
    figure_height,
    figure_text,
    legend_below,
    rgba,
    title_layout,
    top_margin,
)

# The range each plotted quantity can take: a score (mean r, Spearman) lies in [-1, 1]; a difference of two scores
# (the unique and shared parts) in [-2, 2]; a mean |correlation| in [0, 1].
RANGES = {"score": (-1.0, 1.0), "difference": (-2.0, 2.0), "offdiag": (0.0, 1.0)}
PART_RANGE = {"block": "score", "joint": "score", "residual": "score", "unet_unique": "difference",
              "clip_unique": "difference", "shared": "difference"}
NULL_SDS = 2  # null bands: the shuffled-ratings null's mean ± 2 sd (about 95% of shuffles)
LONG_TITLE = 48  # characters: a longer title (the report's headings here run to 54) is set at 14 px to fit 390 px


def _title(title: str | None) -> dict:
    """The one-line title of style.title_layout, a size smaller when long, so it fits a phone's width on one line."""
    layout = title_layout(title)
    if title and len(title) > LONG_TITLE:
        layout["font"] = dict(size=14)
    return layout


def _clip(values, kind: str) -> list[float]:
    lo, hi = RANGES[kind]
    return [min(max(float(v), lo), hi) for v in values]


def _band(fig, x, lo, hi, colour, alpha, name=None, row=None, legendgroup=None):
    """A filled band between lo and hi along x (no hover: the line's hover gives the numbers)."""
    kw = {} if row is None else dict(row=row, col=1)
    fig.add_trace(go.Scatter(x=list(x) + list(x)[::-1], y=list(hi) + list(lo)[::-1], fill="toself", mode="lines",
                             fillcolor=rgba(colour, alpha), line=dict(width=0), hoverinfo="skip",
                             name=name or "", showlegend=name is not None, legendgroup=legendgroup), **kw)


def _null_band(estimates: list[dict], kind: str) -> tuple[list[float], list[float]] | None:
    if not estimates or any(e.get("null") is None for e in estimates):
        return None
    lo = _clip([e["null"][0] - NULL_SDS * e["null"][1] for e in estimates], kind)
    hi = _clip([e["null"][0] + NULL_SDS * e["null"][1] for e in estimates], kind)
    return lo, hi


def _hover(what: str, e: dict) -> str:
    p = "" if e.get("p") is None else f", p = {e['p']:.3f}"
    return f"{figure_text(what)}<br>step %{{x}}: {e['value']:+.3f} [{e['ci'][0]:+.3f}, {e['ci'][1]:+.3f}]{p}"


def _y_range(values: list[float], kind: str) -> list[float]:
    """The data's span, padded, never wider than the quantity's range by more than the padding."""
    lo, hi = min(values), max(values)
    pad = max(hi - lo, 0.05) * 0.08
    r_lo, r_hi = RANGES[kind]
    return [max(lo, r_lo) - pad, min(hi, r_hi) + pad]


def partition_curve(partition: dict, block: str, *, title: str | None = None, others: bool = True,
                    height: int | None = None) -> go.Figure:
    """What the UNet block `block` adds beyond CLIP at each step: its unique part (joint − CLIP) with its 95% interval
    and the shuffled-ratings null band; as companions CLIP's unique part (joint − block) and the shared part, and, as
    a second view of the same question, the residual probe (CLIP regressed out of the block within folds). others:
    the other blocks' unique parts as thin grey lines. Height: 540 px with a title."""
    parts = partition["blocks"][block]
    unique = parts["unet_unique"]
    xs = list(range(len(unique)))
    fig = go.Figure()
    values: list[float] = [0.0]
    if others:
        first = True
        for name, other in partition["blocks"].items():
            if name == block:
                continue
            y = _clip([e["value"] for e in other["unet_unique"]], "difference")
            values += y
            fig.add_trace(go.Scatter(x=xs[: len(y)], y=y, mode="lines", line=dict(color=GREY, width=1.3),
                                     name="other blocks", legendgroup="others", showlegend=first,
                                     hovertemplate=f"{figure_text(label_with_id(name))}<br>step %{{x}}: %{{y:+.3f}}<extra></extra>"))
            first = False
    colour = ROLE_COLORS[1]
    null = _null_band(unique, "difference")
    if null:
        values += null[0] + null[1]
        _band(fig, xs, *null, "#777777", 0.18, name=f"shuffled ratings (± {NULL_SDS} sd)")
    lo = _clip([e["ci"][0] for e in unique], "difference")
    hi = _clip([e["ci"][1] for e in unique], "difference")
    values += lo + hi
    _band(fig, xs, lo, hi, colour, 0.22, legendgroup="unique")
    y = _clip([e["value"] for e in unique], "difference")
    values += y
    fig.add_trace(go.Scatter(x=xs, y=y, mode="lines+markers", line=dict(color=colour, width=3), legendgroup="unique",
                             name=f"{short(block)} adds beyond CLIP",
                             hovertemplate=[_hover("what the block adds beyond CLIP", e) + "<extra></extra>" for e in unique]))
    companions = [("residual", "residual probe (CLIP removed)", ROLE_COLORS[0], "dot"),
                  ("clip_unique", "CLIP adds beyond the block", ROLE_COLORS[2], "dash"),
                  ("shared", "shared", ROLE_COLORS[3], "dashdot")]
    for key, what, c, dash in companions:
        if key not in parts:
            continue
        y = _clip([e["value"] for e in parts[key]], PART_RANGE[key])
        values += y
        fig.add_trace(go.Scatter(x=xs[: len(y)], y=y, mode="lines+markers", line=dict(color=c, width=2, dash=dash),
                                 marker=dict(size=5), name=what,
                                 hovertemplate=[_hover(what, e) + "<extra></extra>" for e in parts[key]]))
    fig.add_hline(y=0, line=dict(color="#777", dash="dot", width=1.5))
    height = figure_height(height, title, 540)  # the legend below takes a row per entry on a phone
    fig.update_layout(template="plotly_white", font=dict(size=13), height=height, title=_title(title),
                      margin=dict(l=64, r=20, t=top_margin(title, 6), b=60), legend=legend_below(), hovermode="closest")
    fig.update_xaxes(title=STEP_AXIS, range=[-0.3, len(xs) - 0.7], dtick=max(1, len(xs) // 10))
    fig.update_yaxes(title=f"difference in mean {partition.get('metric', 'r')}",  # short: the plot is short on a phone
                     range=_y_range(values, "difference"))
    return fig


def entanglement_curve(entanglement: dict, names: list[str], *, title: str | None = None,
                       height: int | None = None) -> go.Figure:
    """Two panels over the steps for the representations `names` (the first is drawn with its interval and null
    band): above, how well the decoded attributes' correlation pattern matches the humans' (RSA, Spearman of the
    upper triangles); below, how strongly the decoded attributes go together (mean |off-diagonal|) against the
    humans' own level. Once-per-prompt representations are flat dashed lines. Height: 620 px with a title."""
    reps = entanglement["reps"]
    names = [n for n in names if n in reps]
    steps = max((len(reps[n]["rsa"]) for n in names if reps[n]["per_step"]), default=1)
    xs = list(range(steps))
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.1)
    spans = {1: [0.0], 2: [entanglement["human_offdiag"]]}
    kinds = {1: "score", 2: "offdiag"}
    for i, name in enumerate(names):
        rep, c = reps[name], ROLE_COLORS[i % len(ROLE_COLORS)]
        for row, key in ((1, "rsa"), (2, "offdiag")):
            est = rep[key]
            x = xs[: len(est)] if rep["per_step"] else [0, steps - 1]
            y = _clip([e["value"] for e in est], kinds[row])
            y = y if rep["per_step"] else y[:1] * 2
            if i == 0 and rep["per_step"]:
                null = _null_band(est, kinds[row])
                if null:
                    spans[row] += null[0] + null[1]
                    _band(fig, x, *null, "#777777", 0.18, row=row, legendgroup="null",
                          name=f"shuffled ratings (± {NULL_SDS} sd)" if row == 1 else None)
                lo, hi = _clip([e["ci"][0] for e in est], kinds[row]), _clip([e["ci"][1] for e in est], kinds[row])
                spans[row] += lo + hi
                _band(fig, x, lo, hi, c, 0.2, row=row, legendgroup=name)
            spans[row] += y
            what = "match with the human pattern" if row == 1 else "mean |correlation| between attributes"
            hover = [_hover(f"{label_with_id(name)}: {what}", e) + "<extra></extra>" for e in est]
            fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers" if rep["per_step"] else "lines",
                                     line=dict(color=c, width=3 if i == 0 else 2, dash=None if rep["per_step"] else "dash"),
                                     name=short(name), legendgroup=name, showlegend=row == 1,
                                     hovertemplate=hover if rep["per_step"] else hover[:1] * 2), row=row, col=1)
    human = entanglement["human_offdiag"]
    fig.add_trace(go.Scatter(x=[0, steps - 1], y=[human] * 2, mode="lines", line=dict(color=HUMAN_COLOR, width=2, dash="dot"),
                             name="human ratings", hovertemplate=f"human ratings: {human:.3f}<extra></extra>"), row=2, col=1)
    fig.add_hline(y=0, line=dict(color="#777", dash="dot", width=1), row=1, col=1)
    height = figure_height(height, title, 620)
    fig.update_layout(template="plotly_white", font=dict(size=13), height=height, title=_title(title),
                      margin=dict(l=64, r=20, t=top_margin(title, 6), b=60), legend=legend_below(), hovermode="closest")
    fig.update_xaxes(range=[-0.3, steps - 0.7], dtick=max(1, steps // 10))
    fig.update_xaxes(title=STEP_AXIS, row=2, col=1)
    fig.update_yaxes(title="match with humans (RSA)", range=_y_range(spans[1], "score"), row=1, col=1)
    fig.update_yaxes(title="mean |r| between attributes", range=_y_range(spans[2], "offdiag"), row=2, col=1)
    return fig


def matrix_animation(matrices: list, attributes: list[str], step_label=None, *, groups: dict[str, str] | None = None,
                     name: str = "decoded", steps: list[int] | None = None, height: int | None = None) -> go.Figure:
    """An attribute x attribute correlation matrix, one animation frame per step (Play and a step slider), its title
    naming the step shown. steps: the step of each matrix (default 0, 1, …; a long run's report keeps evenly spaced
    ones); step_label(step) names it. One matrix (the human ratings, or a once-per-prompt representation) has no
    slider. The page sets the human matrix beside it as a figure of its own, so the two sit side by side on a wide
    screen and one above the other on a phone. Domains mark the axes. Height: 460 px (+100 with a slider)."""
    steps = list(range(len(matrices))) if steps is None else list(steps)
    animated = len(matrices) > 1
    caption = (lambda k: f"{name}, {step_label(steps[k])}") if animated else (lambda k: name)  # noqa: E731
    fig = go.Figure(go.Heatmap(z=matrices[0], x=attributes, y=attributes, zmin=-1, zmax=1, colorscale="RdBu_r",
                               colorbar=dict(title="r", thickness=8, len=0.7, tickfont=dict(size=10), xpad=4),
                               hovertemplate="%{y} × %{x}: r = %{z:.2f}<extra></extra>"))
    runs = domain_runs(attributes, groups or {}) if groups else []
    # a label per domain of two or more attributes (the one-attribute domains would print over their neighbours)
    named = [(g, a, b) for g, a, b in runs if b > a]
    ticks = dict(tickvals=[attributes[(a + b) // 2] for _, a, b in named], ticktext=[figure_text(g) for g, _, _ in named],
                 tickfont=dict(size=9), showgrid=False) if runs else dict(showticklabels=False, showgrid=False)
    fig.update_xaxes(**ticks, tickangle=-90, constrain="domain")
    fig.update_yaxes(**ticks, autorange="reversed", scaleanchor="x", constrain="domain")
    edge = len(attributes) - 0.5
    for _, a, _end in runs[1:]:  # domain boundaries, in data units so they stay inside the square
        for x0, x1, y0, y1 in ((a - 0.5, a - 0.5, -0.5, edge), (-0.5, edge, a - 0.5, a - 0.5)):
            fig.add_shape(type="line", line=dict(color="#222", width=0.6), x0=x0, x1=x1, y0=y0, y1=y1)
    # Play and the slider on rows of their own under the matrix: side by side they collide on a phone
    fig.update_layout(template="plotly_white", font=dict(size=13), height=height or 460 + (100 if animated else 0),
                      title=_title(caption(0)), margin=dict(l=70, r=10, t=top_margin(caption(0), 6), b=80 + (100 if animated else 0)))
    if animated:
        fig.frames = [go.Frame(name=str(k), data=[go.Heatmap(z=M)], traces=[0], layout=dict(title=_title(caption(k))))
                      for k, M in enumerate(matrices)]
        play = dict(frame=dict(duration=700, redraw=True), transition=dict(duration=0), fromcurrent=True, mode="immediate")
        fig.update_layout(
            updatemenus=[dict(type="buttons", direction="left", x=0, xanchor="left", y=0, yanchor="top", pad=dict(t=62),
                              buttons=[dict(label="▶ Play", method="animate", args=[None, play]),
                                       dict(label="❚❚", method="animate",
                                            args=[[None], dict(frame=dict(duration=0, redraw=False), mode="immediate")])])],
            sliders=[dict(active=0, x=0, len=1, y=0, yanchor="top", pad=dict(t=105),
                          currentvalue=dict(visible=False),
                          steps=[dict(label=str(steps[k]), method="animate",
                                      args=[[str(k)], dict(frame=dict(duration=0, redraw=True), mode="immediate")])
                                 for k in range(len(matrices))])])
    return fig
