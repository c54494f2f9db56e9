"""The Steer, Compare and CLIP-layers tabs: beyond reading (docs/steering.md, docs/compare.md).

Each runs the model, so its event shares the generation queue (concurrency id "gpu") and, on ZeroGPU, runs in a
`gpu`-decorated method that returns the finished runs (`*_on_gpu`, decorated per app in `App.__post_init__`);
figures are made outside it. The handlers are methods of `ui.app.App` (`ExploreHandlers`).
"""

import gradio as gr
import numpy as np

from ..errors import SdvizError
from ..families import COND
from ..labels import label, short, step_text
from . import generate as g
from .generate import errors_as_gr
from .state import md

HOW_TO_READ_STEER = (
    "A probe is a direction in the model's numbers that goes with one human-rated property. Steering pushes what the "
    "model reads along that direction and draws the same picture again, same seed. If the picture and the readings "
    "further down change in that property, and much less in the others, the model really uses what the probe reads."
)
HOW_TO_READ_COMPARE = (
    "Two prompts, the same starting noise. The curves show how far apart the two prompts are in each part of the "
    "model as the image forms: CLIP's reading stays fixed, the UNet blocks change step by step. Prompts that end up "
    "close in the UNet even though CLIP keeps them apart are being drawn alike."
)
HOW_TO_READ_LENS = (
    "CLIP reads a prompt in layers, each refining the last. Here the image is drawn from what each layer would hand "
    "the UNet, same seed. The curve shows how close each layer's reading of the properties is to the final one: "
    "where it rises is where along CLIP the meaning appears."
)
# defaults name rated words of Binder et al. (2016), so the human ratings show beside the readings
STEER_PROMPT = "a photo of a trumpet"
COMPARE_PROMPTS = ("a photo of a fiddle", "a photo of a trumpet")
LENS_PROMPT = "a photo of a trumpet"
STRIP_STEPS = 5  # the Compare tab's step-by-step strip: this many steps of each prompt
LENS_LAYERS_SHOWN = 13  # SD 1.5 has 12 layers + embeddings: all shown; deeper encoders are sampled evenly


# ZeroGPU's reservations for the `*_on_gpu` methods (same arguments): two runs for Steer and Compare, one per layer
def steer_seconds(prompt, attribute, strength, where, steps, seed) -> int:
    return int(g.GPU_SECONDS_FIXED + 2 * g.GPU_SECONDS_PER_STEP * int(steps))


def compare_seconds(prompt_a, prompt_b, seed, steps) -> int:
    return int(g.GPU_SECONDS_FIXED + 2 * g.GPU_SECONDS_PER_STEP * int(steps))


def lens_seconds(prompt, seed, steps) -> int:
    return int(g.GPU_SECONDS_FIXED + LENS_LAYERS_SHOWN * g.GPU_SECONDS_PER_STEP * int(steps))


class ExploreHandlers:
    """The Steer, Compare and CLIP-layers tabs' handlers: a part of `ui.app.App` (self is the app; its state is
    `state.AppState`)."""

    def _ready_bundle(self):
        self.wait_ready()  # as a Run pressed early does: the request waits for the model, then goes on
        if self.bundle is None:
            raise SdvizError(self.bundle_note or "No probe bundle for this model yet: steering and decoding need probes.")
        g.check_disk()
        return self.bundle

    def steer_choices(self):
        """(attribute dropdown, where dropdown) filled when the Steer tab opens: the bundle may arrive after the page."""
        if self.bundle is None:
            return gr.update(choices=[], value=None), gr.update(choices=[], value=None)
        attrs = self.bundle.attributes
        places = [("What the UNet reads from CLIP (clip.cond)", COND)] + [(label(n), n) for n in self.unet_names]
        default = "Loud" if "Loud" in attrs else attrs[0]
        return gr.update(choices=attrs, value=default), gr.update(choices=places, value=COND)

    # -- Steer ---------------------------------------------------------------------------------------------
    def steer_on_gpu(self, prompt, attribute, strength, where, steps, seed):
        from ..steering import steer

        return steer(self.pipe, self.bundle, prompt, attribute=attribute, strength=float(strength), where=where,
                     steps=steps, seed=seed, size=self.size)

    @errors_as_gr
    def run_steer(self, prompt, attribute, strength, where, steps, seed):
        """The Steer tab: original and steered image, and how far each representation's reading moved."""
        self._ready_bundle()
        prompt, seed, steps, _ = g.check_inputs(prompt, seed, steps, 7.5)
        if not attribute or not where:
            raise SdvizError("Choose an attribute and where to steer (open the tab again once the probes are ready).")
        from ..plots import steer_figure

        result = self.steer_on_gpu(prompt, attribute, float(strength), where, steps, seed)
        blocks = [n for n in self.bundle.meta["representations"] if n.startswith("unet.")]
        last = blocks[-1] if blocks else None  # the denoiser's last block: downstream of every place one can steer
        place = label(where)
        down = (f" Downstream, {md(label(last))} at the last step reads {md(attribute)} {result.target_change[last]:+.2f} "
                f"and the others {result.others_change[last]:.2f} on average.") if last in result.target_change else ""
        summary = (f"**{md(attribute)} pushed by {float(strength):+g} in {md(place)}** (same seed, "
                   f"{step_text(steps - 1, steps)}).{down}")
        gallery = [(result.original.images[0], "original"), (result.steered.images[0], f"steered: {attribute} {float(strength):+g}")]
        yield gallery, summary, gr.update(value=steer_figure(result.attribute, result.target_change, result.others_change), visible=True)

    # -- Compare -------------------------------------------------------------------------------------------
    def compare_on_gpu(self, prompt_a, prompt_b, seed, steps):
        from ..compare import compare

        return compare(self.pipe, prompt_a, prompt_b, seed=seed, steps=steps, bundle=self.bundle, size=self.size)

    def compare_bars(self, result):
        from ..plots import attribute_bars

        bundle = self.bundle
        series = {}
        for side, prompt in zip((0, 1), result.prompts):
            tag = "A" if side == 0 else "B"
            for name in [self.clip_name] + self.unet_names[:1]:  # CLIP and the best-decoding block
                if name and name in result.decoded[side]:
                    where = "CLIP" if name.startswith("clip") else f"{short(name)}, last step"
                    series[f"{tag} '{prompt[:24]}' · {where}"] = np.array([result.decoded[side][name][a] for a in bundle.attributes])
        return attribute_bars(bundle.attributes, bundle.meta["dataset"]["groups"], series, domain_means=True, orientation="h")

    def compare_map(self, result):
        """Where both prompts land on the bundle's CLIP map."""
        import plotly.graph_objects as go

        from ..maps import place
        from ..plots import embedding_map

        bundle = self.bundle
        name = next((n for n in ("clip.mean", "clip.pooled") if f"{n}.coords" in bundle.maps), None)
        if name is None or name not in result.trace.features:
            return None
        here = [place(bundle.maps, name, 0, result.trace.features[name][i]) for i in (0, 1)]
        words, cats, supers = bundle.meta["words"], bundle.meta.get("categories"), bundle.meta.get("super_categories")
        fig = embedding_map(bundle.maps[f"{name}.coords"][0].numpy(), words, cats, "Both prompts on CLIP's map",
                            here[0], f"A: '{result.prompts[0][:30]}'", super_categories=supers)
        fig.add_trace(go.Scatter(x=[here[1][0]], y=[here[1][1]], mode="markers+text", text=["B"], textposition="top center",
                                 name=f"B: '{result.prompts[1][:30]}'", marker=dict(symbol="diamond", size=16, color="#c0392b",
                                                                                    line=dict(color="white", width=1))))
        return fig

    def compare_summary(self, result) -> str:
        """The Compare tab's sentence. Two scales, each named: the CLIP map's (z-scored like the map, next to the typical
        distance of two dataset words, so "far apart" on the map and the number agree) and the raw one the curves show."""
        from ..maps import map_distances

        unet = [n for n in self.unet_names if n in result.distance]
        if not unet or "clip.cond" not in result.distance:
            return ""
        last = unet[-1]
        d_raw, d_last = result.distance["clip.cond"][0], result.distance[last][-1]
        raw = (f"Raw, as the curves below measure it, CLIP's output has them {d_raw:.3f} apart and the {md(label(last))} "
               f"{d_last:.3f} at the last step: every prompt shares most of these numbers, so raw distances are small.")
        name = next((n for n in ("clip.mean", "clip.pooled") if f"{n}.coords" in self.bundle.maps), None)
        if name is None or name not in result.trace.features:
            return f"**CLIP keeps the two prompts {d_raw:.3f} apart (raw).** {raw} (distance = 1 − cosine: 0 = the same.)"
        d_map, typical = map_distances(self.bundle.maps, name, 0, *(result.trace.features[name][i] for i in (0, 1)))
        return (f"**CLIP keeps the two prompts {d_map:.2f} apart on the CLIP map's scale**, where two dataset words are "
                f"typically {typical:.2f} apart (each number of {md(label(name))} z-scored over the dataset's words, as for "
                f"the map; distance = 1 − cosine, 0 = the same). {raw}")

    @errors_as_gr
    def run_compare(self, prompt_a, prompt_b, seed, steps):
        """Two prompts, same seed: both images, their distance in every space step by step, bars and map."""
        self._ready_bundle()
        prompt_a, seed, steps, _ = g.check_inputs(prompt_a, seed, steps, 7.5)
        prompt_b, *_ = g.check_inputs(prompt_b, seed, steps, 7.5)
        from ..plots import distance_figure

        result = self.compare_on_gpu(prompt_a, prompt_b, seed, steps)
        gallery = [(result.trace.images[0], f"A: {prompt_a}"), (result.trace.images[1], f"B: {prompt_b}")]
        picks = sorted({round(i * (steps - 1) / (STRIP_STEPS - 1)) for i in range(STRIP_STEPS)}) if steps > 1 else [0]
        # short captions (a phone gives each picture 60 px); the label says what the numbers are
        strip = [(result.trace.previews[row][k], f"{tag} · {k}") for row, tag in ((0, "A"), (1, "B")) for k in picks]
        strip_label = f"Steps 0 (noise) to {steps - 1}: A on top, B below"
        summary = self.compare_summary(result)
        distances = {n: [round(v, 6) for v in d] for n, d in result.distance.items()}
        cmap = self.compare_map(result)
        yield (gallery, gr.update(value=strip, columns=len(picks), label=strip_label, visible=True), summary,
               gr.update(value=distance_figure(result.distance), visible=True),
               gr.update(value=self.compare_bars(result), visible=True),
               gr.update(value=cmap, visible=cmap is not None), distances)

    # -- CLIP layers -----------------------------------------------------------------------------------------
    def lens_on_gpu(self, prompt, seed, steps):
        from ..compare import lens, lens_layers

        L = lens_layers(self.pipe)
        layers = sorted({round(i * L / (LENS_LAYERS_SHOWN - 1)) for i in range(LENS_LAYERS_SHOWN)}) if L + 1 > LENS_LAYERS_SHOWN else None
        return lens(self.pipe, prompt, seed=seed, steps=steps, layers=layers, bundle=self.bundle, size=self.size)

    @errors_as_gr
    def run_lens(self, prompt, seed, steps):
        """One prompt drawn from each CLIP layer, same seed, with how close each layer's reading is to the last's."""
        from ..compare import lens_agreement
        from ..plots import lens_figure

        bundle = self._ready_bundle()
        prompt, seed, steps, _ = g.check_inputs(prompt, seed, steps, 7.5)
        images = self.lens_on_gpu(prompt, seed, steps)
        agreement = lens_agreement(images, bundle)
        gallery = [(im.image, f"layer {im.layer} · r {r:+.2f}") for im, r in zip(images, agreement)]
        first = next((im.layer for im, r in zip(images, agreement) if r >= 0.9), images[-1].layer)
        summary = (f"**The properties CLIP hands the UNet reach r ≥ 0.9 with the final reading from layer {first} on** "
                   f"(of {images[-1].layer}).")
        yield gallery, summary, gr.update(value=lens_figure([im.layer for im in images], agreement), visible=True)


# -- the tabs ----------------------------------------------------------------------------------------------
def add_tabs(app, gpu: dict, none: dict) -> None:
    """The three tabs of `app`, inside the page's gr.Blocks; `gpu` / `none`: the generation queue's and the free
    events' settings."""
    with gr.Tab("Steer", elem_id="steer-tab") as steer_tab:
        with gr.Accordion("How to read this", open=False):
            gr.Markdown(HOW_TO_READ_STEER)
        with gr.Row(equal_height=False):
            with gr.Column(scale=2, min_width=300):
                s_prompt = g.prompt_box(label="Prompt", value=STEER_PROMPT, max_lines=2, elem_id="steer-prompt")
                s_attr = gr.Dropdown([], label="Property to push", elem_id="steer-attribute", allow_custom_value=True)
                s_strength = gr.Slider(-4, 4, value=2, step=0.5, label="Strength (rating points on the 0–6 scale)")
                s_where = gr.Dropdown([], label="Where to push", elem_id="steer-where", allow_custom_value=True)
                with gr.Accordion("Seed and steps", open=False):
                    s_seed = gr.Number(label="Seed", value=0, minimum=0)
                    s_steps = gr.Slider(1, g.APP_MAX_STEPS, value=g.DEFAULT_STEPS, step=1, label="Steps")
                s_run = gr.Button("Steer", variant="primary", elem_id="steer-run")
            with gr.Column(scale=3, min_width=300):
                s_images = gr.Gallery(label="Original and steered (same seed)", columns=2, height="auto", elem_id="steer-images",
                                      object_fit="contain")
        s_summary = gr.Markdown("*Pick a property and press Steer: the same picture is drawn twice, once pushed.*",
                                elem_id="steer-summary")
        s_fig = gr.Plot(show_label=False, visible=False, elem_id="steer-figure")
    with gr.Tab("Compare", elem_id="compare-tab"):
        with gr.Accordion("How to read this", open=False):
            gr.Markdown(HOW_TO_READ_COMPARE)
        with gr.Row(equal_height=False):
            with gr.Column(scale=2, min_width=300):
                c_a = g.prompt_box(label="Prompt A", value=COMPARE_PROMPTS[0], max_lines=2, elem_id="compare-a")
                c_b = g.prompt_box(label="Prompt B", value=COMPARE_PROMPTS[1], max_lines=2, elem_id="compare-b")
                with gr.Accordion("Seed and steps", open=False):
                    c_seed = gr.Number(label="Seed (both prompts)", value=0, minimum=0)
                    c_steps = gr.Slider(1, g.APP_MAX_STEPS, value=g.DEFAULT_STEPS, step=1, label="Steps")
                c_run = gr.Button("Compare", variant="primary", elem_id="compare-run")
            with gr.Column(scale=3, min_width=300):
                c_images = gr.Gallery(label="A and B (same seed)", columns=2, height="auto", elem_id="compare-images",
                                      object_fit="contain")
        c_strip = gr.Gallery(label="Steps: A on top, B below", visible=False, height="auto",
                             elem_id="compare-strip", object_fit="contain")
        c_summary = gr.Markdown("*Type two prompts and press Compare.*", elem_id="compare-summary")
        c_dist = gr.Plot(show_label=False, visible=False, elem_id="compare-distance")
        c_bars = gr.Plot(show_label=False, visible=False, elem_id="compare-bars")
        c_map = gr.Plot(show_label=False, visible=False, elem_id="compare-map")
        c_json = gr.JSON(visible=False)
    with gr.Tab("CLIP layers", elem_id="lens-tab"):
        with gr.Accordion("How to read this", open=False):
            gr.Markdown(HOW_TO_READ_LENS)
        with gr.Row(equal_height=False):
            l_prompt = g.prompt_box(label="Prompt", value=LENS_PROMPT, max_lines=2, elem_id="lens-prompt", scale=3)
            l_seed = gr.Number(label="Seed", value=0, minimum=0, scale=1, min_width=100)
            l_steps = gr.Slider(1, g.APP_MAX_STEPS, value=10, step=1, label="Steps", scale=2)
        l_run = gr.Button("Draw from every CLIP layer", variant="primary", elem_id="lens-run")
        l_summary = gr.Markdown("*Press the button: one image per CLIP layer, same seed (this runs the model once per "
                                "layer).*", elem_id="lens-summary")
        l_images = gr.Gallery(label="What each CLIP layer would draw", columns=4, height="auto", elem_id="lens-images",
                              object_fit="contain")
        l_fig = gr.Plot(show_label=False, visible=False, elem_id="lens-figure")

    steer_tab.select(app.steer_choices, None, [s_attr, s_where], **none)
    s_run.click(app.run_steer, [s_prompt, s_attr, s_strength, s_where, s_steps, s_seed], [s_images, s_summary, s_fig],
                api_name="steer", **gpu)
    c_run.click(app.run_compare, [c_a, c_b, c_seed, c_steps], [c_images, c_strip, c_summary, c_dist, c_bars, c_map, c_json],
                api_name="compare", **gpu)
    l_run.click(app.run_lens, [l_prompt, l_seed, l_steps], [l_images, l_summary, l_fig], api_name="lens", **gpu)
