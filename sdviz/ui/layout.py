"""The page: Generate, Maps, Report, Steer, Compare and CLIP-layers tabs, and which event runs where.

Only the model is serialised: a live run waits in the app's line (ui/line.py, which tells the visitor their place),
Steer/Compare/CLIP layers also in one Gradio queue slot (concurrency_id "gpu"); an identical request replays at once
(ui/runcache.py). Every event that only reads the bundle or a finished run (scrubbing, maps, report, the start-up
poll) runs with concurrency_limit=None, so a class opening the page at once never waits behind a run or each other.
Nothing here imports torch: the page is served first, the model loads behind it (`state.AppState.start`).
`build_page(app)` lays out the page of one `ui.app.App` and wires its methods to the events; `PageHandlers`
are the page-wide ones (the start-up poll, /status, the time estimate).
"""

import html
from dataclasses import dataclass, fields

import gradio as gr

from ..config import MAX_SEED
from ..hub import on_space
from ..labels import label_with_id, scheduler_note
from . import explore
from . import generate as g
from . import maps as m
from . import report as r
from . import state as st
from .replay import recorded_label

GENERATE_AT_ONCE = 16  # Run / generate requests handled at once (waiting in line or replaying); more wait in Gradio's queue
REPLAYS_AT_ONCE = 16  # replays at once: CPU only, their page updates made once per run (ui/replay.py)
EXAMPLES = ["a photo of a dog", "a photo of an accordion", "a photo of a volcano", "a photo of a funeral"]
TINY_SENTENCE = "Demo model with random weights: the bars show the machinery, not real semantics."
TINY_DETAILS = (
    "The built-in tiny model lets the app run anywhere, offline, in seconds. Its weights are random, so the image is "
    "noise and the decoded properties mean nothing; random networks still carry the form of words (their length, shared "
    "pieces), so the numbers are not zero either. Start the app with a real checkpoint "
    "(`python app.py --model stable-diffusion-v1-5/stable-diffusion-v1-5`) for real results."
)
HOW_TO_READ_GENERATE = (
    "Stable Diffusion first reads your prompt with CLIP, a text encoder, then its UNet removes noise from an image in "
    "steps: step 0 is pure noise, the last step is the finished picture. A probe is a small formula trained to read one "
    "human-rated property (how visual, loud, pleasant… a thing is) from the model's numbers. The bars compare what the "
    "probes read from CLIP and from one UNet block with what people said about the word. Faint or jumpy bars mean the "
    "probe is unreliable (hover to see how well it did on words it never saw)."
)
CSS = """
#stop { max-width: 6.5em; min-width: 4.5em; }
#counter p { margin: 0.2em 0; }
#tiny-banner { padding: 0.3em 0.8em; border-left: 4px solid #e0a800; background: #fff8e1; }
#plotly-preload { position: absolute !important; left: -10px; width: 1px !important; height: 1px; overflow: hidden;
                  opacity: 0; pointer-events: none; }
/* galleries: as many columns as asked at any width (Gradio's are at least 100 px each, so on a phone the last ones
   were cut off), rows as tall as their squares, captions wrapped instead of cut with "…" */
#steer-images .grid-container, #compare-images .grid-container, #compare-strip .grid-container, #lens-images .grid-container {
  grid-template-columns: repeat(var(--grid-cols), minmax(0, 1fr)) !important;
  grid-template-rows: none !important; grid-auto-rows: auto !important; padding-top: 30px !important; }
#steer-images .grid-wrap, #compare-images .grid-wrap, #compare-strip .grid-wrap, #lens-images .grid-wrap {
  min-height: 0 !important; max-height: none !important; overflow-y: visible !important; }  /* no empty box below */
#steer-images .caption-label, #compare-images .caption-label, #compare-strip .caption-label, #lens-images .caption-label {
  white-space: normal; max-width: calc(100% - 8px); }
#report-intro th { word-break: normal; overflow-wrap: normal; hyphens: none; }  /* never "(chanc e 0.5)" */
@media (max-width: 640px) {  /* phones: plotly's toolbar would cover the figures' titles; the image a little shorter */
  .modebar-container { display: none !important; }
  #image { height: 260px !important; }
  #lens-images .grid-container { grid-template-columns: repeat(3, minmax(0, 1fr)) !important; }
}
"""


def _blank_figure():
    import plotly.graph_objects as go

    return go.Figure(layout=dict(width=10, height=10, margin=dict(l=0, r=0, t=0, b=0)))


def _banner_text(info) -> str:
    """The tiny model's sentence; for any other model its own warning (a full-size stand-in's random weights, a fallback)."""
    return f"⚠️ **{TINY_SENTENCE if info.is_tiny else info.warning}**"


@dataclass
class Page:
    """The components the start-up poll updates (`App.page`): `PageHandlers.poll` returns {component: update} for
    those that changed."""

    banner: gr.Markdown
    details: gr.Accordion
    status: gr.Markdown
    run: gr.Button
    block: gr.Dropdown
    hint: gr.Markdown
    map_block: gr.Dropdown
    recorded: gr.Dataset
    map_caption: gr.Markdown
    report: list  # the Report tab's intro, each slot's caption and figure, then the panel's four (ReportHandlers.render_report)
    build_box: gr.HTML
    seen: gr.State  # the version of the app this page last showed
    timer: gr.Timer

    def components(self) -> list:
        """Every component above, the report's flattened: the poll's outputs."""
        out = []
        for f in fields(self):
            value = getattr(self, f.name)
            out += value if isinstance(value, list) else [value]
        return out


class PageHandlers:
    """The page-wide handlers: a part of `ui.app.App` (self is the app; its state is `state.AppState`)."""

    def poll(self, seen: int):
        """What changed since this page last asked: model loaded, bundle ready or built, build progress."""
        try:
            return self._poll(seen)
        except Exception:  # noqa: BLE001 - a start-up poll must never put an error in front of a visitor
            st.log.exception("poll failed")
            return gr.skip()  # every output left as it is

    def _poll(self, seen: int) -> dict:
        page = self.page
        settled = self.phase in ("ready", "failed") and not self.building
        timer = gr.Timer(active=not settled)
        off = gr.update(visible=False) if seen != self.version or settled else gr.skip()  # no build: hidden once
        progress = self._progress_html() if self.building else off
        if seen == self.version:
            return {page.build_box: progress, page.timer: timer}  # components left out are left as they are
        tiny = self.pipe is not None and (self.pipe.sdviz.is_tiny or self.pipe.sdviz.warning)
        banner = gr.update(value=_banner_text(self.pipe.sdviz) if tiny else "", visible=bool(tiny))
        details = gr.update(visible=bool(tiny and self.pipe.sdviz.is_tiny))  # the details speak of the tiny model
        if self.phase == "failed":
            status, run = f"**The model could not be loaded.** {self.failure_text()}", gr.update(value="Model not loaded", interactive=False)
        elif self.phase != "ready":
            status, run = "⏳ **Loading the model…** Run turns on when it is ready.", gr.update(value="Loading model…", interactive=False)
        else:
            info = self.pipe.sdviz  # which scheduler runs, and the checkpoint's own where sdviz replaced it
            status, run = scheduler_note(type(self.pipe.scheduler).__name__, info.checkpoint_scheduler), gr.update(value="Run", interactive=True)
        if self.build_error:
            status += " The automatic build failed: " + ("the server log says why." if on_space() else st.md(self.build_error))
        elif self.ready and self.bundle is None and not self.building:
            status += " " + self.bundle_note
        choices = [(label_with_id(n), n) for n in self.unet_names]
        block = gr.update(choices=choices, value=self.unet_names[0] if self.unet_names else None, interactive=bool(choices))
        names = self.map_names()
        map_block = gr.update(choices=self.map_choices(), value=names[0] if names else None)
        samples = self.recorded_samples()
        recorded = gr.Dataset(samples=samples or [[""]], visible=bool(samples), label=(
            f"Recorded runs, click one ({recorded_label(self.recordings[0])})" if samples else None))
        hint = gr.update(value=self.placeholder())
        maps_hint = gr.update(value="" if names else f"*{self.bundle_note or 'The maps appear when the probe bundle is ready.'}*")
        return {page.banner: banner, page.details: details, page.status: status.strip(), page.run: run, page.block: block,
                page.hint: hint, page.map_block: map_block, page.recorded: recorded, page.map_caption: maps_hint,
                **dict(zip(page.report, self.render_report(), strict=True)),
                page.build_box: progress, page.seen: self.version, page.timer: timer}

    def failure_text(self) -> str:
        """Why the model is not there, for this page's visitors: on a Space they cannot act on a developer's command
        (the log keeps it for the Space's host); elsewhere the one sentence that says what to do."""
        if on_space():
            return "This Space cannot draw images right now; please come back later."
        return st.md(self.error)

    def _progress_html(self):
        what, fraction = self.build_progress()
        a = st.AUTO_BUILD
        return gr.update(visible=True, value=(
            f"<div><b>Building the probes for this model</b> (automatic, reduced settings: {a['steps']} steps, "
            f"{a['permutations']} shuffles; a few minutes at most). Now: {html.escape(what)}."
            f"<br><progress value='{fraction:.3f}' max='1' style='width:100%'></progress><br>"
            "Bars, Maps and Report appear here when it is done; no need to reload. You can already run prompts.</div>"))

    def status_api(self) -> dict:
        """For scripts and `python -m sdviz.bench`: where start-up stands."""
        return {"phase": self.phase, "bundle": self.bundle is not None, "building": self.building,
                "note": self.bundle_note, "step_seconds": self.step_seconds}

    def estimate(self, steps) -> str:
        if not self.step_seconds:
            return ""
        total = self.step_seconds * float(steps or 1)
        return f"About {total:.1f} s for {int(steps or 1)} steps here (measured on your runs), plus any queue."


def build_page(app) -> gr.Blocks:
    """The page of `app` (a ui.app.App): its components, and its methods wired to their events."""
    none = dict(concurrency_limit=None, api_visibility="private")
    # read-only, quick and never streaming: off the queue entirely (one plain HTTP request, no queue bookkeeping,
    # no server-sent events), which is what a class opening the page at once fetches
    direct = dict(queue=False, api_visibility="private")
    with gr.Blocks(title="sdviz: where Stable Diffusion's semantics come from", delete_cache=(600, 1800)) as demo:
        gr.Markdown("# sdviz · where Stable Diffusion's human-like semantics come from\n"
                    "Type a prompt and watch the image form. The bars show what the model seems to know about the object "
                    "(how visual, loud, pleasant… it is), read from its text encoder and from every denoising step.")
        banner = gr.Markdown(visible=False, elem_id="tiny-banner")
        with gr.Accordion("Why, and what to do instead", open=False, visible=False) as details:
            gr.Markdown(TINY_DETAILS)
        status = gr.Markdown("⏳ **Loading the model…** Run turns on when it is ready.", elem_id="status")
        build_box = gr.HTML(visible=False, elem_id="build-progress")
        # Gradio fetches its 4.6 MB plotly module only when a page first shows a figure, which made the first bars
        # come ~1.5 s after a click; this invisible tiny figure fetches it while the visitor is still reading the page
        gr.Plot(_blank_figure(), show_label=False, container=False, elem_id="plotly-preload")
        history, seen = gr.State([]), gr.State(-1)
        # six tabs do not fit a phone's width: they wrap onto a second row, never into an unlabelled "⋯" menu
        with gr.Tabs(overflow_behavior="wrap", elem_id="tabs"):
            with gr.Tab("Generate", elem_id="generate-tab"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=2, min_width=320):
                        prompt = g.prompt_box(label="Prompt", value=EXAMPLES[0], max_lines=3, elem_id="prompt")
                        # recorded runs (filled by the poll once loaded): a click replays one, no Run press needed
                        recorded = gr.Dataset(components=["textbox"], samples=[[""]], type="index", visible=False,
                                              elem_id="recorded", label="Recorded examples")
                        try_examples = gr.Examples([[e] for e in EXAMPLES], inputs=[prompt], label="Try")
                        with gr.Accordion("Settings: seed, steps, guidance", open=False, elem_id="settings"):
                            seed = gr.Number(label="Seed (same seed, same image)", value=0, minimum=0, maximum=MAX_SEED)
                            steps = gr.Slider(1, g.APP_MAX_STEPS, value=g.DEFAULT_STEPS, step=1, label="Steps", elem_id="steps")
                            guidance = gr.Slider(0, g.APP_MAX_GUIDANCE, value=7.5, step=0.5, label="Guidance scale (how strictly to follow the prompt)")
                        # Run last in the column: on a phone the image and the bars follow right under it
                        with gr.Row(equal_height=True):
                            run = gr.Button("Loading model…", variant="primary", elem_id="run", interactive=False, scale=4)
                            stop = gr.Button("Stop", variant="secondary", size="sm", elem_id="stop", scale=1, min_width=60)
                        eta = gr.Markdown(elem_id="estimate")
                    with gr.Column(scale=3, min_width=320):
                        image = gr.Image(label="The image, step by step", type="pil",
                                         elem_id="image", height=320)
                        counter = gr.Markdown(elem_id="counter")
                        scrub = gr.Slider(0, max(g.DEFAULT_STEPS - 1, 1), value=0, step=1, interactive=False, elem_id="scrub",
                                          label="Scrub through the steps after a run (step 0 = pure noise)")
                takeaway = gr.Markdown(elem_id="takeaway")
                hint = gr.Markdown(app.placeholder(), elem_id="bars-hint")
                bars = gr.Plot(show_label=False, elem_id="bars", visible=False)
                with gr.Row():
                    block = gr.Dropdown([], label="UNet block to read", interactive=False, elem_id="block", min_width=260)
                    view = gr.Radio(["domain means", "all attributes"], value="domain means", label="Bars show", min_width=260)
                closeness = gr.Plot(show_label=False, elem_id="closeness", visible=False)
                with gr.Accordion("How to read this", open=False):
                    gr.Markdown(HOW_TO_READ_GENERATE)
                with gr.Row():
                    csv_btn = gr.Button("Download the numbers of every step (CSV)", size="sm", variant="secondary")
                    csv_file = gr.File(label="CSV", visible=False)
            with gr.Tab("Maps", elem_id="maps-tab") as maps_tab:
                with gr.Accordion("How to read this", open=False):
                    gr.Markdown(m.HOW_TO_READ)
                map_block = gr.Dropdown([], label="UNet block", elem_id="map-block")
                map_caption = gr.Markdown("*The maps appear when the probe bundle is ready.*", elem_id="map-caption")
                with gr.Row():
                    clip_map = gr.Plot(show_label=False, elem_id="clip-map", visible=False)
                    unet_map = gr.Plot(show_label=False, elem_id="unet-map", visible=False)
                sep_plot = gr.Plot(show_label=False, elem_id="separation", visible=False)
            with gr.Tab("Report", elem_id="report-tab"):
                report_intro = gr.Markdown("*The report appears here once the model and its probe bundle are loaded.*",
                                           elem_id="report-intro")
                with gr.Accordion("How to read this", open=False):
                    gr.Markdown(r.HOW_TO_READ)
                with gr.Row():
                    report_btn = gr.Button("Download the full report (one web page)", size="sm", variant="secondary")
                    report_download = gr.File(label="Report", visible=False)
                report_parts = []
                for i in range(r.REPORT_SLOTS):
                    report_parts += [gr.Markdown(visible=False, elem_id=f"report-caption-{i}"),
                                     gr.Plot(show_label=False, visible=False, elem_id=f"report-fig-{i}")]
                # the panel: one representation, what it adds beyond CLIP and its attribute matrix over the steps
                thesis_note = gr.Markdown(visible=False, elem_id="thesis-note")
                thesis_choice = gr.Dropdown([], label="Part of the UNet", visible=False, elem_id="thesis-choice", min_width=260)
                thesis_partition = gr.Plot(show_label=False, visible=False, elem_id="thesis-partition")
                thesis_matrix_note = gr.Markdown(visible=False, elem_id="thesis-matrix-note")
                with gr.Row():  # side by side on a wide screen, one above the other on a phone
                    thesis_matrix = gr.Plot(show_label=False, visible=False, elem_id="thesis-matrix", min_width=320)
                    thesis_human = gr.Plot(show_label=False, visible=False, elem_id="thesis-human", min_width=320)
                thesis_parts = [thesis_choice, thesis_note, thesis_partition, thesis_matrix_note, thesis_matrix, thesis_human]
            explore.add_tabs(app, dict(concurrency_id="gpu", concurrency_limit=1), none)  # Steer, Compare, CLIP layers

        timer = gr.Timer(0.5)
        app.page = Page(banner, details, status, run, block, hint, map_block, recorded, map_caption,
                        [report_intro, *report_parts, *thesis_parts], build_box, seen, timer)
        timer.tick(app.poll, seen, app.page.components(), show_progress="hidden", **direct)
        demo.load(app.poll, seen, app.page.components(), show_progress="hidden", **direct)

        inputs = [prompt, seed, steps, guidance, block, view]
        outputs = [image, counter, takeaway, bars, closeness, hint, history, scrub, status]
        # a live run waits for the model in the app's own line (ui/line.py), where it can say its place; an identical
        # request replays at once from the live-run cache: so these events start at once, up to GENERATE_AT_ONCE
        live = dict(concurrency_id="generate", concurrency_limit=GENERATE_AT_ONCE)
        gpu = dict(**live, api_visibility="private", validator=g.validate)
        run_event = run.click(app.generate, inputs, outputs, api_name="generate_ui", **gpu)
        submit_event = prompt.submit(app.generate, inputs, outputs, api_name="generate_submit", **gpu)
        stop.click(None, None, None, cancels=[run_event, submit_event])
        api_btn = gr.Button(visible=False)
        api_btn.click(app.generate_api, [prompt, seed, steps, guidance], [image, counter, gr.JSON(visible=False), status],
                      api_name="generate", **live)
        # No validator= on the API event: Gradio 6.31 answers a preprocessing error inside a validator with a bare
        # HTTP 400 (the message is lost); here Gradio's own range checks and check_inputs name the bad value.
        status_btn = gr.Button(visible=False)
        status_btn.click(app.status_api, None, gr.JSON(visible=False), api_name="status", concurrency_limit=None)
        steps.change(app.estimate, steps, eta, queue=False, api_visibility="private")
        for event in (run_event, submit_event):
            event.then(app.estimate, steps, eta, queue=False, api_visibility="private")

        # a Try example only fills the prompt: the last run's results go with the old prompt
        try_examples.load_input_event.then(app.clear_run, None, outputs[:8], show_progress="hidden", **none)
        view_out = [image, counter, takeaway, bars, closeness, hint]
        for trigger in (scrub.release, block.change, view.change):
            trigger(app.render_step, [history, scrub, block, view], view_out, show_progress="hidden", **none)
        csv_btn.click(app.write_csv, history, csv_file, **none)
        report_btn.click(app.report_file, None, report_download, **none)

        map_inputs, map_out = [map_block, history], [clip_map, unet_map, sep_plot, map_caption]
        for trigger in (map_block.change, maps_tab.select):
            trigger(app.render_maps, map_inputs, map_out, **direct)
        unet_map.change(None, unet_map, None, js=m.ADD_FRAMES_JS, queue=False)  # Gradio's Plot drops plotly frames
        thesis_choice.input(app.render_thesis, thesis_choice, thesis_parts, **none)
        thesis_matrix.change(None, thesis_matrix, None, js=m.add_frames_js("thesis-matrix"), queue=False)

        # a recorded example replays on the CPU beside generation, a few at once, never in the GPU queue
        replay_event = recorded.click(app.replay, [recorded, block, view], outputs + [prompt, seed, steps],
                                      api_name="replay_example", concurrency_id="replay", concurrency_limit=REPLAYS_AT_ONCE,
                                      api_visibility="private")  # named: else it takes "replay" from the API event
        stop.click(None, None, None, cancels=[replay_event])
        api_replay = gr.Button(visible=False)
        api_replay.click(app.replay_api, [prompt, seed], [image, counter, gr.JSON(visible=False), status],
                         api_name="replay", concurrency_id="replay", concurrency_limit=REPLAYS_AT_ONCE)
        block.change(lambda b: gr.update(value=b) if b in app.map_names() else gr.skip(), block, map_block, **none)
    return demo
