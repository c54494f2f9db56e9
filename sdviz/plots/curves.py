"""Line charts: a report's numbers across denoising steps, and the Generate, Compare, CLIP-layers and steer-eval curves."""

import plotly.graph_objects as go

from ..labels import label_with_id, short
from ..results import WORDFORM, default_highlight, knn_chance, names, reference_names
from .style import (
    GREY,
    HUMAN_COLOR,
    LAYOUT,
    LEGEND_ROW_PX,
    PALETTE,
    ROLE_COLORS,
    SERIES_COLORS,
    STEP_AXIS,
    figure_height,
    figure_text,
    legend_below,
    rgba,
    stagger,
    title_layout,
    title_px,
    top_margin,
)


def two_places(x: float) -> str:
    """0.069 -> '0.07', 0.5 -> '0.5', 0 -> '0': a chance level at the precision of the values printed beside it."""
    return f"{x:.2f}".rstrip("0").rstrip(".") or "0"


def at_chance(value: float, chance: float | None) -> str:
    """' (at chance)' where a value and the chance level print as the same two decimals: "0.06" beside "chance 0.061"
    read as below chance, a difference smaller than either number shows."""
    return " (at chance)" if chance is not None and f"{value:.2f}" == f"{chance:.2f}" else ""


def metric_curve(report: dict, metric: str, ylabel: str, chance: float | None = None, ci: str | None = None, *,
                 title: str | None = None, highlight: list[str] | None = None, height: int | None = None) -> go.Figure:
    """One line per per-step representation across denoising steps, once-per-prompt ones as flat reference lines.

    The `highlight` names (default: `results.default_highlight`) are coloured, with CI bands where `ci` is given; the
    rest are grey and share one legend entry (click it to hide them). Values and the chance level are labelled in the
    right margin, staggered so labels never overlap. Height: 460 px with a title.
    """
    reps = report["representations"]
    highlight = [n for n in (default_highlight(report) if highlight is None else highlight) if n in reps]
    per_step = [n for n in names(report, True) if metric in reps[n]["results"][0]]
    refs = [n for n in reference_names(report) + [WORDFORM] if n in reps and metric in reps[n]["results"][0]]
    refs += [n for n in highlight if n not in refs and not reps[n]["per_step"] and metric in reps[n]["results"][0]]
    steps = max((len(reps[n]["results"]) for n in per_step), default=1)
    xs = list(range(steps))
    x_pad = 0.3 + 0.03 * (steps - 1)  # room right of the last step for the flat lines' CI bars, side by side
    x_ref = [-x_pad / 2, steps - 1 + x_pad / 2]
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
        hover = f"{figure_text(label_with_id(name))}<br>" + ("step %{x}: " if is_step else "") + "%{y:.3f}<extra></extra>"
        if name in highlight:
            c = colour[name]
            if ci and ci in res[0] and is_step:  # a band along the line
                lo, hi = [r[ci][0] for r in res], [r[ci][1] for r in res]
                values += lo + hi
                fig.add_trace(go.Scatter(x=x + x[::-1], y=hi + lo[::-1], fill="toself", fillcolor=rgba(c, 0.16), mode="lines",
                                         line=dict(width=0), hoverinfo="skip", showlegend=False, legendgroup=name))
            elif ci and ci in res[0]:  # a flat line's CI: one error bar at its right end, not a band over everything
                lo, hi = res[0][ci]
                values += [lo, hi]
                ref_ci += 1
                fig.add_trace(go.Scatter(x=[steps - 1 + x_pad * (0.2 + 0.25 * ref_ci)], y=[y[0]], mode="markers", marker=dict(color=c, size=5), showlegend=False,
                                         legendgroup=name, hovertemplate=f"95% CI [{lo:.3f}, {hi:.3f}]<extra></extra>",
                                         error_y=dict(type="data", symmetric=False, array=[hi - y[0]], arrayminus=[y[0] - lo],
                                                      color=c, thickness=2, width=6)))
            fig.add_trace(go.Scatter(x=x, y=y, name=short(name), legendgroup=name, hovertemplate=hover,
                                     mode="lines+markers" if is_step else "lines",
                                     line=dict(color=c, width=3, dash=None if is_step else "dash")))
            margin_labels.append((y[-1], f"{short(name)} {y[-1]:.2f}{at_chance(y[-1], chance)}", c))
        else:
            fig.add_trace(go.Scatter(x=x, y=y, hovertemplate=hover, mode="lines", line=dict(color=GREY, width=1.3,
                                     dash=None if is_step else "dash"), **grey_entry()))
    if chance is not None:
        fig.add_trace(go.Scatter(x=x_ref, y=[chance] * 2, mode="lines", line=dict(color="#777", dash="dot", width=1.5),
                                 hovertemplate=f"chance level {chance:g}<extra></extra>", showlegend=False))
        margin_labels.append((chance, f"chance {two_places(chance)}", "#555"))  # the values' precision
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    y_pad = max(hi - lo, 0.05) * 0.08
    y_range = [lo - y_pad, hi + y_pad]
    n_legend = len(highlight) + grey_legend
    height = figure_height(height, title, 460)
    top, bottom = top_margin(title, 6), 60
    plot_px = height - top - bottom - LEGEND_ROW_PX * n_legend  # the legend below may take a row per entry on a phone
    placed = stagger([v for v, _, _ in margin_labels], plot_px / (y_range[1] - y_range[0]))
    right = 14 + 7.5 * max((len(t) for _, t, _ in margin_labels), default=0)
    for (_, text, c), y in zip(margin_labels, placed):
        fig.add_annotation(x=1, xref="paper", xanchor="left", xshift=6, y=y, yref="y", text=figure_text(text), showarrow=False,
                           font=dict(size=12, color=c), align="left")
    fig.update_layout(template="plotly_white", font=dict(size=13), height=height, title=title_layout(title),
                      margin=dict(l=64, r=int(right), t=top, b=bottom), legend=legend_below(),
                      # right of the last step: the flat lines' CI bars, the last at x_pad * (0.2 + 0.25 * ref_ci)
                      xaxis=dict(title=STEP_AXIS, range=[-x_pad, steps - 1 + x_pad * max(1.1, 0.35 + 0.25 * ref_ci)],
                                 dtick=max(1, steps // 10)),
                      yaxis=dict(title=ylabel, range=y_range), hovermode="closest")
    return fig


def decoding_curve(report: dict, **kwargs) -> go.Figure:
    return metric_curve(report, "mean_r", "mean r (held-out words)", chance=0.0, ci="mean_r_ci", **kwargs)


def two_v_two_curve(report: dict, **kwargs) -> go.Figure:
    return metric_curve(report, "two_v_two", "2-vs-2 accuracy (word pairs)", chance=0.5, ci="two_v_two_ci", **kwargs)


def disambiguation_curve(report: dict, **kwargs) -> go.Figure:
    return metric_curve(report, "disambiguation", "attribute pairs told apart", chance=0.5, ci="disambiguation_ci", **kwargs)


def separation_curve(report: dict, **kwargs) -> go.Figure:
    return metric_curve(report, "knn_accuracy", "category guessed right", chance=knn_chance(report), **kwargs)


def closeness_curve(steps: list[int], to_clip: list[float], to_human: list[float] | None, total_steps: int, *,
                    current: int | None = None, title: str | None = None) -> go.Figure:
    """How alike the UNet's and CLIP's decoded attribute profiles are (r over attributes) at each step of a run,
    and the UNet's and the human ratings'; a dotted line marks the `current` step."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=steps, y=to_clip, mode="lines+markers", name="UNet's profile vs CLIP's",
                             line=dict(color=ROLE_COLORS[0], width=3)))
    if to_human:
        fig.add_trace(go.Scatter(x=steps, y=to_human, mode="lines+markers", name="UNet's profile vs human ratings",
                                 line=dict(color=HUMAN_COLOR, width=3)))
    fig.add_hline(y=0, line=dict(dash="dot", color="#777"), annotation_text="0 = unrelated", annotation_position="bottom right")
    if current is not None:
        fig.add_vline(x=current, line=dict(color="#888", dash="dot"))
    height, top, bottom = figure_height(None, title, 340), top_margin(title, 6), 60
    # the title where plotly's template puts it, as the Generate tab has always shown it
    fig.update_layout(template="plotly_white", font=dict(size=13), height=height, title=dict(text=figure_text(title or "")),
                      margin=dict(l=64, r=20, t=top, b=bottom), legend=legend_below() | dict(y=-0.3),
                      xaxis_title=STEP_AXIS, yaxis_title="r (1 = same profile)",
                      xaxis_range=[-0.5, max(total_steps - 0.5, 0.5)], yaxis_range=[-1.05, 1.05])
    fig.update_xaxes(tick0=0, dtick=max(1, round(total_steps / 10)))  # whole steps only: there is no step 0.5
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


def steer_eval_figure(doc: dict, *, title: str | None = None) -> go.Figure:
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
                                     name=f"{figure_text(name)}: {text}",
                                     hovertemplate=f"{figure_text(where)} · {text}<br>strength %{{x}}: %{{y:.3f}}<extra></extra>"))
    values = [v for w in doc["wheres"] for r in doc["summary"][w].values() for v in r.values()]
    low, high = min(values + [0.0]), max(values + [0.0])
    pad = 0.08 * ((high - low) or 1.0)
    fig.add_hline(y=0, line=dict(color="#888", width=1))
    fig.update_layout(**LAYOUT, title=title_layout(title), height=460)
    fig.update_layout(legend=legend_below(), margin=dict(l=60, r=20, t=title_px(title) + 36, b=120))
    fig.update_xaxes(title_text="strength (rating units)", tickvals=xs)
    fig.update_yaxes(title_text="change downstream", range=[low - pad, high + pad])
    return fig
