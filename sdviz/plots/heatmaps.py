"""Attribute x attribute correlation maps (human ratings, or what a probe decodes), Binder's domains marked."""

import plotly.graph_objects as go

from .style import domain_runs, figure_height, title_layout, top_margin


def corr_heatmap(matrix, attributes: list[str], title: str | None = None, *, groups: dict[str, str] | None = None,
                 height: int | None = None) -> go.Figure:
    """Attribute x attribute correlation; thin lines separate Binder's domains when `groups` is given. Height: 640 px
    with a title."""
    fig = go.Figure(go.Heatmap(z=matrix, x=attributes, y=attributes, zmin=-1, zmax=1, colorscale="RdBu_r",
                               colorbar=dict(title="r", thickness=12),
                               hovertemplate="%{y} × %{x}: r = %{z:.2f}<extra></extra>"))
    for _, a, _end in domain_runs(attributes, groups or {})[1:] if groups else []:
        for kind in ("x", "y"):
            other = "y" if kind == "x" else "x"
            fig.add_shape(type="line", line=dict(color="#222", width=0.8), **{f"{kind}ref": kind, f"{other}ref": "paper",
                          f"{kind}0": a - 0.5, f"{kind}1": a - 0.5, f"{other}0": 0, f"{other}1": 1})
    fig.update_layout(template="plotly_white", font=dict(size=13), height=figure_height(height, title, 640),
                      title=title_layout(title), margin=dict(l=100, r=20, t=top_margin(title, 6), b=100))
    fig.update_xaxes(title="attribute", tickfont=dict(size=9), tickangle=-90)
    fig.update_yaxes(title="attribute", tickfont=dict(size=9), autorange="reversed")
    return fig
