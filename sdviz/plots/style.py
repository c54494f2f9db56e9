"""What every figure shares: colours, sizes, and the title, legend and label placement rules.

A figure is made with a title (one line at the top left, TITLE_PX reserved for it) or without one (`title=None`:
no title row at all, for a page that writes the title as text around the figure, where it wraps).
"""

import html

import numpy as np

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
MIN_TOP_PX = 8  # an untitled figure keeps this much above its plot area (markers on the top edge are not cut)


def figure_text(text) -> str:
    """Escape text for plotly (it renders a little HTML): <, > and & only; plotly shows &#x27; literally."""
    return html.escape(str(text), quote=False)


def rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    return f"rgba({int(h[0:2], 16)},{int(h[2:4], 16)},{int(h[4:6], 16)},{alpha})"


def darker(hex_color: str, f: float = 0.62) -> str:
    h = hex_color.lstrip("#")
    return "#" + "".join(f"{int(int(h[i:i + 2], 16) * f):02x}" for i in (0, 2, 4))


def title_layout(text: str | None) -> dict:
    """Title at the top left of the figure (one line: plotly mis-places multi-line titles); empty for None."""
    return dict(text=figure_text(text) if text else "", x=0.01, xanchor="left", xref="container", y=1, yanchor="top",
                yref="container", pad=dict(t=12), font=dict(size=16))


def title_px(title: str | None) -> int:
    """The height of the title row: TITLE_PX with a title, none without."""
    return TITLE_PX if title else 0


def top_margin(title: str | None, below_title: int) -> int:
    """The top margin: the title row (if any) and `below_title` px under it, at least MIN_TOP_PX."""
    return max(title_px(title) + below_title, MIN_TOP_PX)


def figure_height(height: int | None, title: str | None, titled: int) -> int:
    """`height` when given, else the default `titled` height, less the title row for an untitled figure."""
    return height or titled - TITLE_PX + title_px(title)


def legend_under_title(height: int, title: str | None, note: str | None = None) -> dict:
    """A horizontal legend right under the title, the note as its heading; plotly pushes the plot down when it wraps."""
    legend = dict(orientation="h", x=0, xanchor="left", yref="container", y=1 - title_px(title) / height, yanchor="top",
                  font=dict(size=12), bgcolor="rgba(255,255,255,0)")
    if note:
        legend["title"] = dict(text=figure_text(note), side="top", font=dict(size=13, color="#555"))
    return legend


def legend_below() -> dict:
    """A horizontal legend at the bottom of the figure; plotly grows the bottom margin to fit it at any width."""
    return dict(orientation="h", x=0, xanchor="left", yref="container", y=0, yanchor="bottom", font=dict(size=12),
                bgcolor="rgba(255,255,255,0)")


def stagger(values: list[float], px_per_unit: float, min_px: float = 16) -> list[float]:
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


def domain_runs(attributes: list[str], groups: dict[str, str]) -> list[tuple[str, int, int]]:
    """(domain, first index, last index) for consecutive attributes of one domain, in order."""
    runs: list[list] = []
    for i, a in enumerate(attributes):
        g = groups.get(a, "")
        if runs and runs[-1][0] == g:
            runs[-1][2] = i
        else:
            runs.append([g, i, i])
    return [tuple(r) for r in runs]
