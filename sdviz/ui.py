"""The Gradio app: Generate (live per-step decoding), Maps (UMAP of CLIP vs UNet spaces), Report.

`app.py` only calls `main()`. The pipeline is shared by every visitor: generation runs one at a
time (one queue slot, concurrency_id "gpu"), and capture itself holds a per-pipeline lock, so
two requests' activations can never mix.
"""

import argparse
import csv
import html
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
import numpy as np

from .config import MAX_PROMPT_CHARS, MAX_SEED
from .errors import SdvizError
from .io import bundle_dir

log = logging.getLogger(__name__)

APP_MAX_STEPS = 50  # tighter than the library's cap: a public Space serves many people
APP_MAX_GUIDANCE = 20.0
DEFAULT_STEPS = 20
EXAMPLES = ["a photo of a dog", "a photo of an accordion", "a photo of a volcano", "a photo of a funeral"]

try:  # Hugging Face ZeroGPU: borrow a GPU for each generation; a no-op elsewhere
    import spaces

    gpu = spaces.GPU
except ImportError:  # pragma: no cover - depends on the host

    def gpu(fn=None, **kwargs):
        return fn if fn is not None else (lambda f: f)


@dataclass
class AppState:
    """What every visitor shares: the model, its probe bundle (if any), the ratings (if any)."""

    model: str
    device: str | None
    bundle_path: Path | None
    ratings_path: str | None
    pipe: object = None
    bundle: object = None
    bundle_note: str = ""
    ratings: object = None
    clip_name: str | None = None
    unet_names: list = field(default_factory=list)

    def load(self) -> None:
        from .models import load_pipeline

        self.pipe = load_pipeline(self.model, device=self.device)
        self.reload_bundle()
        try:
            from .ratings import default_ratings_path, load_ratings

            if self.ratings_path or default_ratings_path():
                self.ratings = load_ratings(self.ratings_path)
        except SdvizError as err:
            log.warning("ratings not loaded: %s", err)

    def reload_bundle(self) -> None:
        from .plots import best_per_step, reference_names
        from .probes import check_bundle_matches, load_bundle

        path = self.bundle_path or bundle_dir(self.pipe.sdviz.slug)
        self.bundle, self.bundle_note = None, ""
        if not (Path(path) / "meta.json").exists():
            self.bundle_note = f"No probe bundle for this model yet (looked in {path})."
            return
        try:
            bundle = load_bundle(path)
            check_bundle_matches(bundle, self.pipe)
        except SdvizError as err:
            self.bundle_note = str(err)
            return
        self.bundle = bundle
        refs = reference_names(bundle.report)
        self.clip_name = refs[0] if refs else None
        best = best_per_step(bundle.report)
        self.unet_names = sorted([n for n in bundle.meta["per_step"] if n.startswith("unet.")],
                                 key=lambda n: (n != best, n))


APP: AppState | None = None


# -- generation -------------------------------------------------------------------------------
def _check_inputs(prompt, seed, steps, guidance) -> tuple[str, int, int, float]:
    if prompt is None or not str(prompt).strip():
        raise SdvizError("The prompt is empty. Type a prompt such as 'a photo of a dog'.")
    prompt = str(prompt)
    if len(prompt) > MAX_PROMPT_CHARS:
        raise SdvizError(f"The prompt is {len(prompt)} characters long; the limit is {MAX_PROMPT_CHARS}. Shorten it.")
    try:
        seed_f, steps_f, guidance_f = float(seed), float(steps), float(guidance)
    except (TypeError, ValueError):
        raise SdvizError("Seed, steps and guidance must be numbers.") from None
    if not seed_f.is_integer() or not 0 <= seed_f <= MAX_SEED:
        raise SdvizError(f"The seed must be a whole number from 0 to {MAX_SEED}; got {seed}.")
    if not steps_f.is_integer() or not 1 <= steps_f <= APP_MAX_STEPS:
        raise SdvizError(f"Steps must be a whole number from 1 to {APP_MAX_STEPS}; got {steps}.")
    if not np.isfinite(guidance_f) or not 0 <= guidance_f <= APP_MAX_GUIDANCE:
        raise SdvizError(f"Guidance must be a number from 0 to {APP_MAX_GUIDANCE}; got {guidance}.")
    return prompt, int(seed_f), int(steps_f), guidance_f


def _prompt_note(pipe, prompt: str) -> str:
    n = len(pipe.tokenizer(prompt).input_ids)
    limit = pipe.tokenizer.model_max_length
    if n > limit:
        return f"Your prompt is {n} tokens long; CLIP reads only the first {limit}, so the rest was ignored. "
    return ""


def decode_step(bundle, record, live_steps: int) -> dict:
    """Decoded attributes of one streamed step: {representation: [T]} for the CLIP reference and every UNet block."""
    out = {}
    for name, x in record.clip.items():
        if name in bundle.probes:
            out[name] = bundle.predict(name, x)
    for name, x in record.features.items():
        if name in bundle.probes:
            out[name] = bundle.predict(name, x, record.step, live_steps)
    return out


def _reliability(bundle, name: str, live_step: int = 0, live_steps: int = 1) -> np.ndarray:
    from .probes import nearest_trained_step

    rep = bundle.report["representations"][name]
    j = nearest_trained_step(live_step, live_steps, len(rep["results"])) if rep["per_step"] else 0
    return np.array(rep["results"][j]["r"])


def _r(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def render_step(history: list, k: int, block: str | None, view: str):
    """(preview image, counter markdown, bars figure, closeness figure) for step k of a finished or running run."""
    from .plots import attribute_bars, closeness_curve

    if not history:
        return None, "", None, None
    k = int(min(max(k, 0), len(history) - 1))
    h = history[k]
    counter = f"**Step {h['step'] + 1} / {h['steps']}** · timestep t = {h['timestep']}"
    bundle = APP.bundle
    if bundle is None or not h["decoded"]:
        return h["image"] or h["preview"], counter, None, None
    block = block if block in h["decoded"] else (APP.unet_names[0] if APP.unet_names else None)
    series, reliability = {}, {}
    if APP.clip_name in h["decoded"]:
        series[f"CLIP ({APP.clip_name})"] = np.array(h["decoded"][APP.clip_name])
        reliability[f"CLIP ({APP.clip_name})"] = _reliability(bundle, APP.clip_name)
    if block:
        label = f"UNet {block} at step {h['step']}"
        series[label] = np.array(h["decoded"][block])
        reliability[label] = _reliability(bundle, block, h["step"], h["steps"])
    if h.get("human") is not None:
        series["human"] = np.array(h["human"])
    word = f" · human ratings of '{html.escape(h['word'])}' overlaid" if h.get("word") else ""
    title = "Decoded attributes (hover: each probe's cross-validated r)" + word
    bars = attribute_bars(bundle.attributes, bundle.meta["dataset"]["groups"], series, reliability,
                          domain_means=(view == "domain means"), title=title)
    steps = [x["step"] for x in history[: k + 1]]
    to_clip = [_r(x["decoded"][block], x["decoded"][APP.clip_name]) for x in history[: k + 1]] if block and APP.clip_name else []
    to_human = [_r(x["decoded"][block], x["human"]) for x in history[: k + 1]] if block and h.get("human") is not None else None
    closeness = closeness_curve(steps, to_clip, to_human, h["steps"]) if to_clip else None
    return h["image"] or h["preview"], counter, bars, closeness


def _attributes_json(history: list) -> list:
    attrs = APP.bundle.attributes if APP.bundle else []
    return [{"step": h["step"], "timestep": h["timestep"], "steps": h["steps"],
             "decoded": {name: dict(zip(attrs, np.round(np.asarray(v, float), 4).tolist())) for name, v in h["decoded"].items()}}
            for h in history]


def _write_csv(history: list) -> str | None:
    if not history or APP.bundle is None:
        return None
    fd, path = tempfile.mkstemp(prefix="sdviz-decoded-", suffix=".csv")
    with os.fdopen(fd, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "timestep", "representation", *APP.bundle.attributes])
        for h in history:
            for name, values in h["decoded"].items():
                writer.writerow([h["step"], h["timestep"], name, *np.round(np.asarray(values, float), 5)])
    return path


@gpu
def generate(prompt, seed, steps, guidance, block, view):
    """Stream one update per denoising step: image, counter, bars, closeness, JSON of decoded attributes."""
    from .capture import stream

    try:
        prompt, seed, steps, guidance = _check_inputs(prompt, seed, steps, guidance)
    except SdvizError as err:
        raise gr.Error(str(err)) from None
    pipe, bundle = APP.pipe, APP.bundle
    note = _prompt_note(pipe, prompt)
    word = APP.ratings.find_word_in(prompt) if APP.ratings is not None else None
    human = APP.ratings.lookup(word) if word else None
    if human is not None and bundle is not None:  # align with the bundle's attribute order
        index = {a: i for i, a in enumerate(APP.ratings.attributes)}
        human = [float(human[index[a]]) for a in bundle.attributes] if all(a in index for a in bundle.attributes) else None
    history: list = []
    status = note + ("" if bundle else APP.bundle_note + " " + _how_to_build())
    records = stream(pipe, prompt, seed=seed, steps=steps, guidance=guidance)
    try:
        for record in records:
            history.append({
                "step": record.step, "steps": record.steps, "timestep": record.timestep, "preview": record.preview,
                "image": record.image, "decoded": decode_step(bundle, record, steps) if bundle else {},
                "human": human, "word": word,
                "features": {k: v.numpy() for k, v in (record.features | record.clip).items()},
            })
            image, counter, bars, closeness = render_step(history, len(history) - 1, block, view)
            done = record.image is not None
            yield (image, counter, bars, closeness, _attributes_json(history), history,
                   gr.update(maximum=max(len(history) - 1, 1), value=len(history) - 1, interactive=done),
                   _write_csv(history) if done else None, status.strip())
    except SdvizError as err:
        raise gr.Error(str(err)) from None
    except Exception as err:  # CUDA out of memory and the like: say so, keep serving
        if "out of memory" in str(err).lower():
            raise gr.Error("The GPU ran out of memory. Try fewer steps, or a smaller model.") from None
        log.exception("generation failed")
        raise gr.Error(f"Generation failed: {type(err).__name__}: {str(err)[:200]}") from None
    finally:
        records.close()  # Stop: ends the pipeline within a step and removes every hook


def _how_to_build() -> str:
    if APP.ratings is not None:
        return "Press **Build probes** below to train them (a few minutes for the tiny model)."
    return ("To decode attributes, get the ratings with `python -m sdviz data fetch binder`, then run "
            f"`python -m sdviz build --model {APP.pipe.sdviz.model_id}`.")


def build_bundle(progress=gr.Progress(track_tqdm=True)):
    from .build import BuildConfig, build

    if APP.ratings is None:
        raise gr.Error(_how_to_build())
    try:
        build(BuildConfig(model=APP.pipe.sdviz.model_id, ratings=APP.ratings.source,
                          out=str(APP.bundle_path) if APP.bundle_path else None), pipe=APP.pipe)
    except SdvizError as err:
        raise gr.Error(f"Building the probes failed: {err}") from None
    APP.reload_bundle()
    return "Probes built. Reload the page to see the Maps and Report tabs."


# -- maps and report ----------------------------------------------------------------------------
def render_maps(block: str, step: int, history: list):
    from .maps import place
    from .plots import embedding_map, separation_curve

    bundle = APP.bundle
    if bundle is None or not bundle.maps:
        return None, None, None, "No maps yet: build a probe bundle first."
    words, cats = bundle.meta["words"], bundle.meta.get("categories")
    n_steps = bundle.maps[f"{block}.coords"].shape[0]
    step = int(min(max(step, 0), n_steps - 1))
    clip_name = next((n for n in ("clip.mean", "clip.pooled") if f"{n}.coords" in bundle.maps), None)
    here_clip = here_unet = None
    if history:
        feats = history[-1]["features"]
        import torch

        if clip_name in feats:
            here_clip = place(bundle.maps, clip_name, 0, torch.as_tensor(feats[clip_name]))
        live_step = min(range(len(history)), key=lambda i: abs(i / max(len(history) - 1, 1) - step / max(n_steps - 1, 1)))
        live = history[live_step]["features"]
        if block in live:
            here_unet = place(bundle.maps, block, step, torch.as_tensor(live[block]))
    clip_fig = embedding_map(bundle.maps[f"{clip_name}.coords"][0].numpy(), words, cats,
                             f"CLIP space ({clip_name}): fixed for every step", here_clip) if clip_name else None
    unet_fig = embedding_map(bundle.maps[f"{block}.coords"][step].numpy(), words, cats,
                             f"UNet space ({block}) at step {step} of {n_steps}", here_unet)
    sep = separation_curve(bundle.report) if "knn_accuracy" in next(iter(bundle.report["representations"].values()))["results"][0] else None
    caption = ("Each dot is a word of the dataset, coloured by category; hover to read it. The star is your last prompt. "
               "Slide through the steps: where UNet categories blur while CLIP keeps them apart, the diffusion has "
               "turned meaning into pixels.")
    return clip_fig, unet_fig, sep, caption


def render_report():
    from .plots import report_figures

    if APP.bundle is None:
        return [gr.update(value=None, visible=False)] * len(REPORT_KEYS) + [APP.bundle_note + " " + _how_to_build()]
    figures = {k: (f, c) for k, f, c in report_figures(APP.bundle.report)}
    updates = [gr.update(value=figures[k][0], visible=True, label=figures[k][1]) if k in figures else gr.update(visible=False)
               for k in REPORT_KEYS]
    return updates + [_report_intro()]


REPORT_KEYS = ["decoding", "groups", "disambiguation", "separation", "two_v_two", "heatmaps_human", "heatmaps_ref", "heatmaps_best"]


def _report_intro() -> str:
    rep = APP.bundle.report
    s = rep["settings"]
    return (f"**{rep['n_words']} words × {len(rep['attributes'])} human-rated attributes**, {rep['steps']} denoising steps. "
            f"A small linear 'probe' learns to read each attribute from the model's activations; we test it only on words it never saw "
            f"({s['folds']}-fold cross-validation, {s['permutations']} shuffles of words and ratings as a chance baseline). "
            "The caption of each figure says how to read it.")


# -- layout -------------------------------------------------------------------------------------
def create_app(model: str = "auto", device: str | None = None, bundle: str | None = None, ratings: str | None = None) -> gr.Blocks:
    global APP
    APP = AppState(model, device, Path(bundle) if bundle else None, ratings)
    APP.load()
    info = APP.pipe.sdviz
    with gr.Blocks(title="sdviz: where Stable Diffusion's semantics come from") as demo:
        gr.Markdown("# sdviz · where Stable Diffusion's human-like semantics come from\n"
                    "Type a prompt and watch the image form. The bars read human-rated attributes of the object "
                    "(how visual, loud, pleasant, manipulable… it is) out of CLIP's text encoding and out of the UNet at every step.")
        if info.warning:
            gr.Markdown(f"> ⚠️ **{html.escape(info.warning)}**", elem_id="tiny-banner")
        history = gr.State([])
        with gr.Tab("Generate"):
            with gr.Row():
                with gr.Column(scale=1):
                    prompt = gr.Textbox(label="Prompt", value=EXAMPLES[0], max_lines=3, elem_id="prompt")
                    with gr.Row():
                        seed = gr.Number(label="Seed", value=0, minimum=0, maximum=MAX_SEED)
                        steps = gr.Slider(1, APP_MAX_STEPS, value=DEFAULT_STEPS, step=1, label="Steps")
                    guidance = gr.Slider(0, APP_MAX_GUIDANCE, value=7.5, step=0.5, label="Guidance scale")
                    with gr.Row():
                        run = gr.Button("Run", variant="primary", elem_id="run")
                        stop = gr.Button("Stop", variant="stop", elem_id="stop")
                    block = gr.Dropdown(APP.unet_names, value=APP.unet_names[0] if APP.unet_names else None,
                                        label="UNet block to decode", interactive=bool(APP.unet_names))
                    view = gr.Radio(["all attributes", "domain means"], value="domain means", label="Bars show")
                    gr.Examples([[e] for e in EXAMPLES], inputs=[prompt])
                with gr.Column(scale=1):
                    image = gr.Image(label="Image (preview while running, VAE decode at the end)", type="pil", elem_id="image",
                                     height=320)
                    counter = gr.Markdown(elem_id="counter")
                    scrub = gr.Slider(0, 1, value=0, step=1, label="Scrub back through the steps (after a run)", interactive=False)
                    status = gr.Markdown(APP.bundle_note, elem_id="status")
            bars = gr.Plot(label="Decoded attributes", elem_id="bars")
            closeness = gr.Plot(label="UNet vs CLIP decoding", elem_id="closeness")
            with gr.Row():
                decoded_json = gr.JSON(label="Decoded attributes per step (JSON)", visible=False)
                csv_file = gr.File(label="Decoded attributes for every step (CSV)")
            if APP.bundle is None:
                build_btn = gr.Button("Build probes for this model", interactive=APP.ratings is not None)
                build_btn.click(build_bundle, None, status, concurrency_id="gpu", concurrency_limit=1, api_visibility="private")
        with gr.Tab("Maps", elem_id="maps-tab") as maps_tab:
            map_names = [n for n in APP.bundle.meta["maps"] if n.startswith("unet.")] if APP.bundle else []
            with gr.Row():
                map_block = gr.Dropdown(map_names, value=map_names[0] if map_names else None, label="UNet block")
                n_map_steps = APP.bundle.meta["steps"] if APP.bundle else 1
                map_step = gr.Slider(0, max(n_map_steps - 1, 1), value=max(n_map_steps - 1, 0), step=1, label="Denoising step")
            map_caption = gr.Markdown()
            with gr.Row():
                clip_map = gr.Plot(label="CLIP", elem_id="clip-map")
                unet_map = gr.Plot(label="UNet", elem_id="unet-map")
            sep_plot = gr.Plot(label="Category separation across steps")
        with gr.Tab("Report", elem_id="report-tab"):
            report_intro = gr.Markdown()
            report_plots = [gr.Plot(visible=False) for _ in REPORT_KEYS]

        outputs = [image, counter, bars, closeness, decoded_json, history, scrub, csv_file, status]
        event = run.click(generate, [prompt, seed, steps, guidance, block, view], outputs, api_name="generate_ui",
                          concurrency_id="gpu", concurrency_limit=1, api_visibility="private")
        stop.click(None, None, None, cancels=[event])
        prompt.submit(generate, [prompt, seed, steps, guidance, block, view], outputs, api_name="generate_submit",
                      concurrency_id="gpu", concurrency_limit=1, api_visibility="private")
        api_btn = gr.Button(visible=False)
        api_btn.click(generate_api, [prompt, seed, steps, guidance], [image, counter, decoded_json, status],
                      api_name="generate", concurrency_id="gpu", concurrency_limit=1)
        for trigger in (scrub.release, block.change, view.change):
            trigger(render_step, [history, scrub, block, view], [image, counter, bars, closeness], api_visibility="private")
        map_inputs = [map_block, map_step, history]
        for trigger in (map_block.change, map_step.release, demo.load, maps_tab.select):  # select: place the latest prompt
            trigger(render_maps, map_inputs, [clip_map, unet_map, sep_plot, map_caption], api_visibility="private")
        demo.load(render_report, None, report_plots + [report_intro], api_visibility="private")
    return demo


@gpu
def generate_api(prompt, seed, steps, guidance):
    """The scripted API (gradio_client, api_name="generate"): one update per step with the image,
    the step counter, all decoded attributes so far as JSON, and a status line."""
    for image, counter, _bars, _close, decoded, _hist, _scrub, _csv, status in generate(
            prompt, seed, steps, guidance, None, "domain means"):
        yield image, counter, decoded, status


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python app.py", description="The sdviz Gradio app.")
    parser.add_argument("--model", default=os.environ.get("SDVIZ_MODEL", "auto"))
    parser.add_argument("--device", default=os.environ.get("SDVIZ_DEVICE"))
    parser.add_argument("--bundle", default=os.environ.get("SDVIZ_BUNDLE"), help="probe bundle folder (default: probes/<model-slug>)")
    parser.add_argument("--ratings", default=os.environ.get("SDVIZ_RATINGS"))
    parser.add_argument("--share", action="store_true", help="ask Gradio for a public share link (off by default)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        demo = create_app(args.model, args.device, args.bundle, args.ratings)
    except SdvizError as err:
        raise SystemExit(f"error: {err}") from None
    launch(demo, share=args.share)


def launch(demo: gr.Blocks, *, share: bool = False, **kwargs):
    """Queue (one generation at a time) and serve: 127.0.0.1 unless GRADIO_SERVER_NAME says otherwise,
    no share link unless asked, and readable messages for rejected inputs (show_error)."""
    kwargs.setdefault("server_name", os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    kwargs.setdefault("server_port", int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    return demo.queue(default_concurrency_limit=1, max_size=64).launch(share=share, show_error=True, **kwargs)
