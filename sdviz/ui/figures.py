"""The report's figures as the Report tab shows them: untitled (the tab writes each title as text around its figure,
where it wraps at any width). Pure functions; nothing here reads the app's state."""


def page_figures(report: dict) -> list:
    """The report's figures for the Report tab, computed once per bundle: (key, figure, caption, heading)."""
    from ..report import report_items

    return [(it["key"], it["figure"], f"{it['takeaway']} {it['caption']}", it["heading"])
            for it in report_items(report, for_app=True)]
