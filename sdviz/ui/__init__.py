"""The Gradio app, one job per module: `state` (shared model, bundle, start-up and automatic build),
`generate` (the live run), `replay` (recorded runs), `maps`, `report` (read-only tabs), `figures` (plots' figures as
the page shows them), `layout` (the Blocks), `server` (launch).
`app.py` only calls `main()`."""

from .layout import create_app
from .server import launch, main

__all__ = ["create_app", "launch", "main", "APP"]


def __getattr__(name):
    if name == "APP":  # the shared state of the app created last (tests read APP.pipe)
        from . import state

        return state.STATE
    raise AttributeError(f"module 'sdviz.ui' has no attribute {name!r}")
