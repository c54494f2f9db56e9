"""Figures as the page shows them: plots' figures, adjusted for the app once (titles out of the figures, into
the text around them, where they wrap at any width). Pure functions on plotly figures; nothing here reads the
app's state."""

import html
import re


def without_title(fig):
    """Take out the figure's title (plots' figures keep room for one at the top) and that room: the page writes
    titles as text around the figure, where they wrap; inside a figure a long title is cut off on a phone.
    Returns the title, unescaped."""
    from ..plots import TITLE_PX

    title = html.unescape(fig.layout.title.text or "")
    if fig.layout.margin.t is not None and fig.layout.margin.t >= TITLE_PX:  # plots' figures: a title row on top
        under_title = fig.layout.legend.yref == "container" and fig.layout.legend.yanchor == "top"
        legend = {"y": 1} if under_title else {}  # a legend under the title moves up with it
        fig.update_layout(height=(fig.layout.height or 450) - TITLE_PX, margin_t=max(fig.layout.margin.t - TITLE_PX, 8),
                          legend=legend)
    fig.update_layout(title_text="")
    return title


def page_figures(report: dict) -> list:
    """The report's figures for the Report tab, computed once per bundle: (key, figure, caption, title). Titles go
    into the captions (they wrap there)."""
    from ..plots import report_items

    out = []
    for it in report_items(report):
        fig, key = it["figure"], it["key"]
        without_title(fig)
        caption = f"{it['takeaway']} {it['caption']}"
        if key == "groups":  # 14 domain names: level where they fit, turned where they do not (390 px)
            fig.layout.xaxis.tickangle = None  # unset: plotly picks the angle
        out.append((key, fig, caption, re.sub(r"^Figure \d+\.\s*", "", it["title"])))
    return out
