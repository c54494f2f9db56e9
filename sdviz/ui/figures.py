"""The report's figures as the Report tab shows them: untitled (the tab writes each title as text around its figure,
where it wraps at any width). Pure functions; nothing here reads the app's state."""


def page_figures(report: dict) -> list:
    """The report's figures for the Report tab, computed once per bundle: (key, figure, caption, heading), each
    figure already serialised (`sent`)."""
    from ..report import report_items

    return [(it["key"], sent(it["figure"]), f"{it['takeaway']} {it['caption']}", it["heading"])
            for it in report_items(report, for_app=True)]


def sent(figure):
    """A plotly figure serialised once, as gr.Plot sends it (its PlotData, which gr.Plot takes as a value).

    plotly's to_json is the costly part of showing a figure: a figure every visitor sees alike (the report, the maps
    before a run) is serialised here once and the same JSON goes to everyone. None stays None."""
    if figure is None:
        return None
    from gradio.components.plot import PlotData

    return PlotData(type="plotly", plot=figure.to_json())
