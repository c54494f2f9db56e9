"""The App: one object per `create_app`, holding everything one running app shares and does.

Its state (model, bundle, ratings, recorded runs, the automatic build) is `state.AppState`; its methods are
the page's event handlers, one mixin per part of the page, each in that part's module:

    PageHandlers      layout.py    the start-up poll, /status, the time estimate
    GenerateHandlers  generate.py  Run, the API's /generate, scrubbing, the CSV
    ReplayHandlers    replay.py    the recorded examples and /replay
    MapsHandlers      maps.py      the Maps tab
    ReportHandlers    report.py    the Report tab and its download
    ExploreHandlers   explore.py   the Steer, Compare and CLIP-layers tabs

The mixins hold no state of their own: `self` is the App. Nothing is module-global, so two apps in one process
share nothing. `create_app` returns the Blocks, with the App as `demo.sdviz` (as a pipeline carries `pipe.sdviz`).
"""

from dataclasses import dataclass

import gradio as gr

from ..config import MAX_SIDE, MIN_SIDE
from ..errors import SdvizError
from .explore import LENS_LAYERS_SHOWN, ExploreHandlers, compare_seconds, lens_seconds, steer_seconds
from .generate import GenerateHandlers, gpu, gpu_seconds
from .layout import PageHandlers, build_page
from .maps import MapsHandlers
from .replay import ReplayHandlers
from .report import ReportHandlers
from .state import AppState


@dataclass(eq=False, repr=False)
class App(AppState, PageHandlers, GenerateHandlers, ReplayHandlers, MapsHandlers, ReportHandlers, ExploreHandlers):
    def __post_init__(self):
        # The methods that run the model borrow a GPU on ZeroGPU (spaces.GPU; elsewhere `gpu` changes nothing).
        # ZeroGPU runs them in a forked worker and pickles only their arguments: bound to this app, the model comes
        # with the fork, never through the pickle. Decorated here, before launch, as ZeroGPU requires.
        # Generation waits for its turn in the app's line itself (GenerateHandlers._live_or_replayed, which shows the
        # place); Steer, Compare and CLIP layers take theirs here, counted by their denoising steps.
        self.gpu_steps = gpu(duration=gpu_seconds)(self.gpu_steps)
        self.steer_on_gpu = self.line.holding(gpu(duration=steer_seconds)(self.steer_on_gpu), lambda *a: 2 * int(a[4]))
        self.compare_on_gpu = self.line.holding(gpu(duration=compare_seconds)(self.compare_on_gpu), lambda *a: 2 * int(a[3]))
        self.lens_on_gpu = self.line.holding(gpu(duration=lens_seconds)(self.lens_on_gpu),
                                             lambda *a: LENS_LAYERS_SHOWN * int(a[2]))


def create_app(model: str = "auto", device: str | None = None, bundle: str | None = None, ratings: str | None = None,
               build_cache: str | None = None, recordings: str | None = None, size: int | None = None) -> gr.Blocks:
    """The Blocks app, its App as `demo.sdviz`. Nothing is loaded here: `launch` starts the model loading (and the
    recorded runs: a folder or Hub dataset id, default env SDVIZ_RECORDINGS, then recordings/<model-slug>) after
    the page is served. `size`: the side in pixels of every image the app makes (default: the model's own; a full-size
    model on a CPU answers four times sooner at 256 than at 512)."""
    if size is not None and not (MIN_SIDE <= size <= MAX_SIDE and size % 8 == 0):
        raise SdvizError(f"--size {size} is not an image side sdviz can run: use a multiple of 8 from {MIN_SIDE} to {MAX_SIDE}.")
    app = App(model, device, bundle, ratings, build_cache, recordings, size=size)
    demo = build_page(app)
    demo.sdviz = app
    return demo
