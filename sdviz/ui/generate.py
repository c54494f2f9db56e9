"""The live run: input checks, the GPU function, and the per-step loop that turns records into the page.

The loop (`stream_ui`, `stream_api`) consumes ANY iterator of `run.StepRecord`: a live run from
`gpu_steps` or a recorded run replayed from disk (ui/replay.py) go through exactly the same code. Only `gpu_steps`
touches the model (and, on ZeroGPU, the GPU); decoding, history, figures and CSV happen outside it.
The handlers are methods of `ui.app.App` (`GenerateHandlers`); what needs no app stays a plain function.
"""

import csv
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import numpy as np

from ..errors import SdvizError
from ..hub import on_space
from ..labels import label, label_with_id, step_text
from .state import md

log = logging.getLogger(__name__)

APP_MAX_STEPS = 50  # tighter than the library's cap: a public Space serves many people
APP_MAX_GUIDANCE = 20.0
DEFAULT_STEPS = 20
REFRESH_S = 0.5  # figures refresh at most this often while a run streams (image and counter every step)
GPU_SECONDS_PER_STEP = 1.5  # ZeroGPU's reservation: generous for SD 1.5 at 512 px on a shared A10G/H200 slice
GPU_SECONDS_FIXED = 15.0

if on_space():  # Hugging Face ZeroGPU: borrow a GPU for each generation (decorators must exist at start-up)
    try:
        import spaces

        gpu = spaces.GPU
    except ImportError:  # pragma: no cover - a CPU Space without the package
        gpu = None
else:
    gpu = None
if gpu is None:

    def gpu(fn=None, **kwargs):
        return fn if fn is not None else (lambda f: f)


# -- inputs ---------------------------------------------------------------------------------------
def check_inputs(prompt, seed, steps, guidance) -> tuple[str, int, int, float]:
    """The library's one rule for a run (`run.check_run_args`), with the app's tighter caps."""
    from ..run import check_run_args

    args = check_run_args(prompt, seed, steps, guidance, max_steps=APP_MAX_STEPS, max_guidance=APP_MAX_GUIDANCE)
    return args.prompt, args.seed, args.steps, args.guidance


def validate(prompt, seed, steps, guidance, *rest):
    """Gradio's `validator=`: runs before the queue, marks the offending input with one sentence."""
    try:
        check_inputs(prompt, seed, steps, guidance)
    except SdvizError as err:
        message = str(err)
        field = 0 if "prompt" in message.lower() else 1 if "seed" in message.lower() else 2 if "steps" in message.lower() else 3
        return [gr.validate(i != field, message if i == field else "") for i in range(4 + len(rest))]
    return [gr.validate(True, "") for _ in range(4 + len(rest))]


# -- the GPU part: only the model, yielding small records --------------------------------------------
def gpu_seconds(prompt, seed, steps, guidance) -> int:
    """ZeroGPU's reservation for one generation (`GenerateHandlers.gpu_steps`)."""
    return int(GPU_SECONDS_FIXED + GPU_SECONDS_PER_STEP * int(steps))


# -- one run ------------------------------------------------------------------------------------------
@dataclass
class RunContext:
    """What a run needs besides its records: the prompt's dataset word, its human ratings, notes."""

    prompt: str
    word: str | None
    human: list | None  # in the bundle's attribute order
    notes: list[str]
    clip_decoded: dict | None = None  # CLIP's decoding is the same at every step: computed once per run

    @classmethod
    def for_prompt(cls, app, prompt: str) -> "RunContext":
        """`app`: the App (its pipe, ratings and bundle)."""
        notes = []
        if app.pipe is not None:
            n, limit = len(app.pipe.tokenizer(prompt).input_ids), app.pipe.tokenizer.model_max_length
            if n > limit:
                notes.append(f"Your prompt is {n} tokens long; CLIP reads only the first {limit}, so the rest was ignored.")
        word = app.ratings.find_word_in(prompt) if app.ratings is not None else None
        human = None
        if word and app.bundle is not None:
            values, index = app.ratings.lookup(word), {a: i for i, a in enumerate(app.ratings.attributes)}
            if all(a in index for a in app.bundle.attributes):
                human = [float(values[index[a]]) for a in app.bundle.attributes]
        if app.ratings is not None and app.bundle is not None and human is None:
            guess = next((t for t in reversed(re.findall(r"[^\W\d_]+", prompt)) if len(t) > 2), prompt[:30])
            notes.append(f"No human ratings for '{md(guess)}': the overlay of human ratings shows for the "
                         f"{len(app.ratings.words)} rated words of the dataset (for example '{md(app.ratings.words[0])}').")
        return cls(prompt, word, human, notes)


def decode_step(bundle, record, live_steps: int, clip_decoded: dict | None = None) -> dict:
    """Decoded attributes of one streamed step (`Bundle.decode`): {representation: [T]} for every CLIP and per-step
    probe (CLIP's part taken from `clip_decoded` when given: it does not change across steps)."""
    features = record.features if clip_decoded is not None else record.clip | record.features
    decoded = bundle.decode(features, record.step, live_steps)
    return (clip_decoded or {}) | {name: np.array(list(v.values()), dtype=np.float32) for name, v in decoded.items()}


def make_entry(bundle, record, ctx: RunContext) -> dict:
    decoded = {}
    if bundle is not None:
        decoded = decode_step(bundle, record, record.steps, ctx.clip_decoded)
        if ctx.clip_decoded is None:
            ctx.clip_decoded = {name: decoded[name] for name in record.clip if name in decoded}
    return {"step": record.step, "steps": record.steps, "timestep": record.timestep, "preview": record.preview,
            "image": record.image, "decoded": decoded,
            "human": ctx.human, "word": ctx.word, "prompt": ctx.prompt,
            "features": {k: v.numpy() for k, v in (record.features | record.clip).items()}}




def _reliability(bundle, name: str, live_step: int = 0, live_steps: int = 1) -> np.ndarray:
    """The probe's r (report.json) at the trained step that decodes live step k."""
    rep = bundle.report["representations"][name]
    return np.array(rep["results"][bundle.trained_step(name, live_step, live_steps)]["r"])


HIDDEN = gr.update(visible=False)


def errors_as_gr(fn):
    """Errors a user can cause, or the GPU running out of memory, become one sentence; the app keeps serving."""

    def wrapper(*args, **kwargs):
        try:
            yield from fn(*args, **kwargs)
        except gr.Error:
            raise
        except SdvizError as err:
            raise gr.Error(str(err)) from None
        except Exception as err:  # noqa: BLE001
            if "out of memory" in str(err).lower():
                raise gr.Error("The GPU ran out of memory. Try fewer steps, or a smaller model.") from None
            log.exception("generation failed")
            raise gr.Error("Generation failed; the server log says why. Try again, or another prompt.") from None

    wrapper.__name__, wrapper.__doc__ = fn.__name__, fn.__doc__
    return wrapper


class GenerateHandlers:
    """The Generate tab's handlers: a part of `ui.app.App` (self is the app; its state is `state.AppState`)."""

    def gpu_steps(self, prompt, seed, steps, guidance) -> Iterator:
        """Yield one `StepRecord` (features + preview; the image on the last) per denoising step. On ZeroGPU
        it runs in a worker with a GPU (`App.__post_init__` decorates it, `gpu_seconds` reserves the time)."""
        from ..run import stream

        yield from stream(self.pipe, prompt, seed=seed, steps=steps, guidance=guidance, height=self.size, width=self.size)

    def _trained_step(self, k: int, steps: int) -> str:
        bundle = self.bundle
        if bundle is None or not self.unet_names:
            return ""
        trained = int(bundle.meta["steps"])
        return f" · UNet probe trained at {step_text(bundle.trained_step(self.unet_names[0], k, steps), trained)}"

    def counter_text(self, h: dict, seconds_left: float | None = None) -> str:
        left = f" · about {seconds_left:.0f} s left" if seconds_left and seconds_left >= 1 else ""
        return f"**{step_text(h['step'], h['steps'])}** · timestep t = {h['timestep']}{self._trained_step(h['step'], h['steps'])}{left}"

    def placeholder(self) -> str:
        if not self.ready:
            return "*The model is loading. When Run turns blue, press it: the image forms here step by step.*"
        if self.building:
            return "*The probes for this model are being built (progress above). The bars appear here when they are ready.*"
        if self.bundle is None:
            return f"*{self.bundle_note or 'No probe bundle.'} The image still forms step by step; bars need probes.*"
        return ("*After you press Run, bars appear here: for each human-rated property (how visual, loud, pleasant… the "
                "thing is) what CLIP and the UNet seem to know, next to what people said.*")

    def render_step(self, history: list, k, block: str | None, view: str):
        """(image, counter, takeaway, bars, closeness, hint) for step k of a finished or running run."""
        from ..analysis import pearson
        from ..plots import attribute_bars, closeness_curve

        if not history:
            return None, "", "", HIDDEN, HIDDEN, gr.update(value=self.placeholder(), visible=True)
        k = int(min(max(int(k or 0), 0), len(history) - 1))
        h = history[k]
        image, counter = h["image"] or h["preview"], self.counter_text(h)
        bundle = self.bundle
        if bundle is None or not h["decoded"]:
            return image, counter, "", HIDDEN, HIDDEN, gr.update(value=self.placeholder(), visible=True)
        block = block if block in h["decoded"] else (self.unet_names[0] if self.unet_names else None)
        series, reliability = {}, {}
        clip_label = label_with_id(self.clip_name) if self.clip_name else None
        if self.clip_name in h["decoded"]:
            series[clip_label] = np.array(h["decoded"][self.clip_name])
            reliability[clip_label] = _reliability(bundle, self.clip_name)
        if block:
            unet_label = f"{label_with_id(block)} at {step_text(h['step'], h['steps'])}"
            series[unet_label] = np.array(h["decoded"][block])
            reliability[unet_label] = _reliability(bundle, block, h["step"], h["steps"])
        if h.get("human") is not None:
            series[f"human ratings of '{h['word']}'"] = np.array(h["human"])
        # on their side: full attribute names as rows never collide, at 390 px as at 1400 px
        bars = attribute_bars(bundle.attributes, bundle.meta["dataset"]["groups"], series, reliability,
                              domain_means=(view == "domain means"), orientation="h")  # untitled: the takeaway says what it shows
        takeaway = ""
        closeness = HIDDEN
        if block and self.clip_name:
            steps = [x["step"] for x in history]
            to_clip = [pearson(x["decoded"][block], x["decoded"][self.clip_name]) for x in history]
            to_human = [pearson(x["decoded"][block], x["human"]) for x in history] if h.get("human") is not None else None
            fig = closeness_curve(steps, to_clip, to_human, h["steps"], current=h["step"], title="UNet vs CLIP, step by step")
            closeness = gr.update(value=fig, visible=True)
            human = f", with the human ratings r = {to_human[k]:+.2f}" if to_human else ""
            takeaway = (f"**At {step_text(h['step'], h['steps'])}, the {md(label(block))} agrees with CLIP's reading at "
                        f"r = {to_clip[k]:+.2f}**{human} (1 = the same profile, 0 = unrelated).")
        return image, counter, takeaway, gr.update(value=bars, visible=True), closeness, HIDDEN

    # -- streaming to the page and to the API -----------------------------------------------------------
    def _start(self, prompt, seed, steps, guidance):
        prompt, seed, steps, guidance = check_inputs(prompt, seed, steps, guidance)
        self.wait_ready()
        return prompt, seed, steps, guidance, RunContext.for_prompt(self, prompt)

    def _status(self, ctx: RunContext) -> str:
        parts = list(ctx.notes)
        if self.bundle is None and self.bundle_note:
            parts.append(self.bundle_note)
        return " ".join(parts)

    def stream_ui(self, records: Iterable, ctx: RunContext, block, view, *, live: bool = True) -> Iterator[tuple]:
        """Page updates for any iterator of StepRecords: image and counter every step, figures at most every
        REFRESH_S, the history and the scrubber once at the end (gr.skip() for what did not change).
        live=False (a recorded run): its step times say nothing about this machine, so the estimate ignores them."""
        skip = gr.skip()
        history: list = []
        last_fig, last_step = 0.0, time.perf_counter()
        for record in records:
            now = time.perf_counter()
            if history and live:
                self.note_step_time(now - last_step)
            last_step = now
            history.append(make_entry(self.bundle, record, ctx))
            h, done, first = history[-1], record.image is not None, len(history) == 1
            left = (h["steps"] - 1 - h["step"]) * self.step_seconds if self.step_seconds and live else None
            if done or first or now - last_fig >= REFRESH_S:
                image, counter, takeaway, bars, closeness, hint = self.render_step(history, len(history) - 1, block, view)
                last_fig = time.perf_counter()
            else:
                image, counter, takeaway, bars, closeness, hint = h["preview"], None, skip, skip, skip, skip
            counter = self.counter_text(h, None if done else left)
            if done:
                scrub = gr.update(minimum=0, maximum=max(h["steps"] - 1, 1), value=h["step"], interactive=True)
            elif first:
                scrub = gr.update(minimum=0, maximum=max(h["steps"] - 1, 1), value=0, interactive=False)
            else:
                scrub = skip
            status = self._status(ctx) if first or done else skip
            yield image, counter, takeaway, bars, closeness, hint, (history if done else skip), scrub, status

    @errors_as_gr
    def generate(self, prompt, seed, steps, guidance, block, view):
        """The Run button and Enter in the prompt: one page update per denoising step."""
        prompt, seed, steps, guidance, ctx = self._start(prompt, seed, steps, guidance)
        records = self.gpu_steps(prompt, seed, steps, guidance)
        try:
            yield from self.stream_ui(records, ctx, block, view)
        finally:
            records.close()  # Stop: ends the pipeline within a step and removes every hook

    def decoded_json(self, history: list) -> list:
        attrs = self.bundle.attributes if self.bundle else []
        return [{"step": h["step"], "timestep": h["timestep"], "steps": h["steps"],
                 "decoded": {name: dict(zip(attrs, np.round(np.asarray(v, float), 4).tolist())) for name, v in h["decoded"].items()}}
                for h in history]

    def stream_api(self, records: Iterable, ctx: RunContext) -> Iterator[tuple]:
        skip = gr.skip()
        history: list = []
        for record in records:
            history.append(make_entry(self.bundle, record, ctx))
            h, done = history[-1], record.image is not None
            yield (h["image"] or h["preview"], self.counter_text(h), self.decoded_json(history) if done else skip,
                   self._status(ctx) if done or len(history) == 1 else skip)

    @errors_as_gr
    def generate_api(self, prompt, seed, steps, guidance):
        """The scripted API (gradio_client, api_name="generate"): one update per step with the image and the
        step counter ("step k of S-1", k = 0 is pure noise); the last update also carries the decoded attributes
        of every step as JSON and a status line."""
        prompt, seed, steps, guidance, ctx = self._start(prompt, seed, steps, guidance)
        records = self.gpu_steps(prompt, seed, steps, guidance)
        try:
            yield from self.stream_api(records, ctx)
        finally:
            records.close()

    # -- CSV, written only when asked for ----------------------------------------------------------------
    def write_csv(self, history: list):
        """The decoded attributes of every step of the last run, as CSV (written when the visitor asks)."""
        if not history or self.bundle is None:
            raise gr.Error("Run a prompt first: the CSV holds the decoded attributes of every step of your run.")
        if self.csv_dir is None:
            self.csv_dir = Path(tempfile.mkdtemp(prefix="sdviz-csv-"))
        for old in self.csv_dir.glob("*.csv"):  # one visitor's file lives until the next request; Gradio keeps its own copy
            if time.time() - old.stat().st_mtime > 60:
                old.unlink(missing_ok=True)
        fd, path = tempfile.mkstemp(dir=self.csv_dir, prefix="sdviz-decoded-", suffix=".csv")
        with os.fdopen(fd, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["step", "timestep", "representation", *self.bundle.attributes])
            for h in history:
                for name, values in h["decoded"].items():
                    writer.writerow([h["step"], h["timestep"], name, *np.round(np.asarray(values, float), 5)])
        return gr.update(value=path, visible=True)
