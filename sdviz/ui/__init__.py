"""The Gradio app, one job per module: `app` (the App object: `create_app`), `state` (what its visitors share:
model, bundle, start-up and automatic build), `layout` (the Blocks and its events), the handlers of each part
(`generate` the live run, `replay` recorded runs, `maps`, `report`, `explore` Steer/Compare/CLIP layers),
`figures` (plots' figures as the page shows them), `server` (launch). `app.py` only calls `main()`."""

from .app import App, create_app
from .server import launch, main

__all__ = ["App", "create_app", "launch", "main"]
