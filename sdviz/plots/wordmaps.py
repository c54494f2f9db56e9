"""Maps of every dataset word (UMAP coordinates from `sdviz.maps`), coloured by category, with the prompt as a star;
one map, or one per denoising step as an animation whose points travel."""

import html

import numpy as np
import plotly.graph_objects as go

from ..labels import step_text
from .style import (
    LEGEND_ROW_PX,
    MAP_COLORS,
    figure_height,
    figure_text,
    legend_below,
    legend_under_title,
    title_layout,
    top_margin,
)


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
    # sideways the label always goes toward the wider side: a label is wider than a phone's map leaves beside an
    # off-centre star; up and down, near an edge it points back inside
    d[0] = abs(d[0]) + 0.3 if rel[0] < 0.5 else -abs(d[0]) - 0.3
    if rel[1] > 0.8:
        d[1] = -abs(d[1]) - 0.3
    elif rel[1] < 0.2:
        d[1] = abs(d[1]) + 0.3
    d = d / np.linalg.norm(d)
    note = dict(x=here[0], y=here[1], xref="x", yref="y", text=figure_text(text), showarrow=True, arrowhead=2, arrowwidth=1.5,
                ax=float(44 * d[0]), ay=float(-50 * d[1]), xanchor="left" if d[0] >= 0 else "right",
                yanchor="bottom" if d[1] >= 0 else "top", bgcolor="rgba(255,255,255,0.7)", bordercolor="#333", borderwidth=1,
                font=dict(size=12, color="black"))
    star = go.Scatter(x=[here[0]], y=[here[1]], mode="markers", name=text, hovertemplate=html.escape(text) + "<extra></extra>",
                      marker=dict(size=18, color="black", symbol="star", line=dict(width=1, color="white")))
    return star, [note]


def _map_layout(title: str | None, height: int, bottom: int, below: bool = True) -> dict:
    """Legend below the map, or under the title when the animation controls sit below; plotly makes room at any width."""
    top = top_margin(title, (0 if below else LEGEND_ROW_PX + 2) + 6)
    axis = dict(showticklabels=False, showgrid=False, zeroline=False, title=None)
    legend = legend_below() if below else legend_under_title(height, title)
    return dict(template="plotly_white", font=dict(size=13), height=height, title=title_layout(title),
                margin=dict(l=16, r=16, t=top, b=bottom), legend=legend | dict(font=dict(size=12), itemsizing="constant"),
                xaxis=axis, yaxis=axis, hovermode="closest", dragmode="pan")


def embedding_map(coords: np.ndarray, words: list[str], categories: list[str] | None, title: str | None = None,
                  here: tuple[float, float] | None = None, here_label: str = "your prompt", *,
                  super_categories: list[str] | None = None, only: set[str] | None = None, legend: str = "below",
                  height: int | None = None) -> go.Figure:
    """All dataset words on a 2-D map, coloured by super category (fine category on hover), the prompt as a star.

    Filtering: `only` (a set of group names) shows those groups and leaves the rest switched off in the legend,
    where a click brings them back (a double click isolates one): the legend is the filter. legend="top": under
    the title, as `embedding_map_animation` has it (a map shown beside one lines up with it). Height: 490 px with a title.
    """
    xy = np.asarray(coords, float)
    groups = _map_groups(words, categories, super_categories)
    star, notes = _star(xy, here, here_label)
    fig = go.Figure(_map_traces(xy, words, categories, super_categories, groups, only) + ([star] if here is not None else []))
    fig.update_layout(**_map_layout(title, figure_height(height, title, 490), 16, below=legend == "below"), annotations=notes)
    return fig


def embedding_map_animation(coords: np.ndarray, words: list[str], categories: list[str] | None,
                            super_categories: list[str] | None, title: str | None = None, here: list | None = None,
                            here_label: str = "your prompt", step_label=None, *, only: set[str] | None = None,
                            height: int | None = None) -> go.Figure:
    """One map per step as plotly frames, with Play/Pause and a step slider; axes fixed over all steps so the
    points travel (words keep their ids). here: per-step (x, y) of the prompt or None; step_label(k) -> text
    (default 'step k of S-1'), shown above the slider. Height: 516 px with a title."""
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
    layout = _map_layout(title, figure_height(height, title, 516), bottom, below=False)

    def step_data(k):
        star, notes = _star(C[k], here[k], here_label)
        star.update(name=_truncate(here_label), showlegend=has_star)
        return _map_traces(C[k], words, categories, super_categories, groups, only) + [star], notes

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
