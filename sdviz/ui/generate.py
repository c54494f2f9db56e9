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
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import gradio as gr
import numpy as np

from ..errors import SdvizError
from ..hub import on_space
from ..labels import label, label_with_id, step_text
from .line import waiting_counter, waiting_text
from .state import md, plain

log = logging.getLogger(__name__)

APP_MAX_STEPS = 50  # tighter than the library's cap: a public Space serves many people
APP_MAX_GUIDANCE = 20.0
DEFAULT_STEPS = 20
REFRESH_S = 0.5  # figures refresh at most this often while a run streams (image and counter every step)
WAIT_UPDATE_S = 1.0  # a visitor waiting in line for the model sees their place refreshed this often
REPLAYED = ("⚡ **replayed**: this exact run (same prompt, seed, steps and guidance) was made here a moment ago, so it is "
            "shown again from memory, without the model and without waiting.")
GPU_SECONDS_PER_STEP = 1.5  # ZeroGPU's reservation: generous for SD 1.5 at 512 px on a shared A10G/H200 slice
GPU_SECONDS_FIXED = 15.0
MIN_FREE_BYTES = 64 * 2**20  # below this free in Gradio's temp folder a run's images cannot be written: say so first

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
def prompt_box(**kwargs) -> gr.Textbox:
    """A Textbox for a prompt that takes text only. Gradio's Textbox hands `str(payload)` on, so an API call with a
    JSON object ({"a": 1}) would run as the prompt "{'a': 1}"; this one refuses it before any handler, in one sentence.
    (The check sits on the instance: a Textbox subclass would make Gradio write a .pyi stub beside this file.)"""
    box = gr.Textbox(**kwargs)
    text_only = box.preprocess

    def preprocess(payload):
        if payload is not None and not isinstance(payload, str):
            raise gr.Error("The prompt must be text, such as 'a photo of a dog'.")
        return text_only(payload)

    box.preprocess = preprocess
    return box


def check_disk() -> None:
    """Refuse a run when Gradio's temp folder has no room for its images: otherwise Gradio fails while writing them
    and the page shows its own internals and the server's paths."""
    from gradio.utils import get_upload_folder

    try:
        free = shutil.disk_usage(get_upload_folder() if os.path.isdir(get_upload_folder()) else tempfile.gettempdir()).free
    except OSError:
        return
    if free < MIN_FREE_BYTES:
        raise SdvizError("The server's disk is full, so it cannot send images right now; please try again later.")


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
        return [gr.validate(i != field, plain(message) if i == field else "") for i in range(4 + len(rest))]
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
    seed: int | None = None  # the run's seed, for the CSV

    @classmethod
    def for_prompt(cls, app, prompt: str, seed: int | None = None) -> "RunContext":
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
        return cls(prompt, word, human, notes, seed=seed)


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
            "human": ctx.human, "word": ctx.word, "prompt": ctx.prompt, "seed": ctx.seed,
            "features": {k: v.numpy() for k, v in (record.features | record.clip).items()}}




def _reliability(bundle, name: str, live_step: int = 0, live_steps: int = 1) -> np.ndarray:
    """The probe's r (report.json) at the trained step that decodes live step k."""
    rep = bundle.report["representations"][name]
    return np.array(rep["results"][bundle.trained_step(name, live_step, live_steps)]["r"])


HIDDEN = gr.update(visible=False)


def _keeping(records: Iterable, kept: list) -> Iterator:
    """The records, each also appended to `kept` (the live-run cache keeps the whole run)."""
    for record in records:
        kept.append(record)
        yield record


def errors_as_gr(fn):
    """Errors a user can cause, or the GPU running out of memory, become one sentence; the app keeps serving.
    Every message is escaped (`state.plain`): it may hold a prompt, a typed attribute or a bundle's text."""

    def wrapper(*args, **kwargs):
        try:
            yield from fn(*args, **kwargs)
        except gr.Error:
            raise
        except SdvizError as err:
            raise gr.Error(plain(err)) from None
        except Exception as err:  # noqa: BLE001
            if "out of memory" in str(err).lower():
                raise gr.Error("The GPU ran out of memory. Try fewer steps, or a smaller model.") from None
            log.exception("generation failed")
            raise gr.Error("Generation failed; the server log says why. Try again, or another prompt.") from None

    wrapper.__name__, wrapper.__doc__ = fn.__name__, fn.__doc__
    return wrapper


def _random_weights_note(report: dict, clip_name: str) -> str:
    """Beside the agreement numbers of a random-weight model: what chance and word form alone give, so that nobody
    takes them for a finding (empty for a trained model)."""
    from ..results import random_weights, result, wordform_value

    if not random_weights(report):
        return ""
    wf = wordform_value(report, "mean_r")
    form = "" if wf is None else (f"; word form alone decodes the ratings with mean r {wf:+.2f} over the dataset's words, "
                                  f"{md(label(clip_name))} {result(report, clip_name)['mean_r']:+.2f}")
    return (f"  \n*Random weights: chance gives r 0{form}. Both read the form of the word, not its meaning: this agreement "
            "is not a finding.*")


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
        if self.phase == "failed":  # never "when Run turns blue": it will not
            return "*The model could not be loaded, so nothing can be drawn here (the status above says why).*"
        if not self.ready:
            return "*The model is loading. When Run turns blue, press it: the image forms here step by step.*"
        if self.building:
            return "*The probes for this model are being built (progress above). The bars appear here when they are ready.*"
        if self.bundle is None:
            return f"*{self.bundle_note or 'No probe bundle.'} The image still forms step by step; bars need probes.*"
        return ("*After you press Run, bars appear here: for each human-rated property (how visual, loud, pleasant… the "
                "thing is) what CLIP and the UNet seem to know, next to what people said.*")

    def clear_run(self):
        """(image, counter, takeaway, bars, closeness, hint, history, scrub) emptied: a click on a Try example
        changes the prompt, so the last run's results must not stay on screen under it."""
        return (None, "", "", HIDDEN, HIDDEN, gr.update(value=self.placeholder(), visible=True), [],
                gr.update(value=0, interactive=False))

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
            takeaway += _random_weights_note(bundle.report, self.clip_name)
        return image, counter, takeaway, gr.update(value=bars, visible=True), closeness, HIDDEN

    # -- streaming to the page and to the API -----------------------------------------------------------
    def _start(self, prompt, seed, steps, guidance):
        prompt, seed, steps, guidance = check_inputs(prompt, seed, steps, guidance)
        self.wait_ready()
        check_disk()
        return prompt, seed, steps, guidance, RunContext.for_prompt(self, prompt, seed)

    def _status(self, ctx: RunContext) -> str:
        parts = list(ctx.notes)
        if self.bundle is None and self.bundle_note:
            parts.append(self.bundle_note)
        return " ".join(parts)

    def stream_ui(self, records: Iterable, ctx: RunContext, block, view, *, live: bool = True,
                  refresh_every: int | None = None) -> Iterator[tuple]:
        """Page updates for any iterator of StepRecords: image and counter every step, figures at most every
        REFRESH_S (or every `refresh_every` steps), the history and the scrubber once at the end (gr.skip() for what
        did not change). live=False (a recorded run): its step times say nothing about this machine, so the
        estimate ignores them."""
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
            due = (len(history) - 1) % refresh_every == 0 if refresh_every else now - last_fig >= REFRESH_S
            if done or first or due:
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

    # -- a live run, or the replay of an identical one ------------------------------------------------------
    def run_key(self, prompt, seed, steps, guidance) -> tuple:
        """What makes two runs identical (the live-run cache's key): model, probe bundle, prompt, seed, steps, guidance."""
        return (self.pipe.sdviz.model_id, self.bundle_key, prompt, int(seed), int(steps), float(guidance))

    def _live_or_replayed(self, prompt, seed, steps, guidance, show, waiting, replayed) -> Iterator:
        """The page updates of one request: the replay of an identical finished run (`replayed(run)`) at once,
        else a live run in the model's turn: `waiting(Waiting)` while in line, then `show(records)`. A live run
        that finished whole is kept in the live-run cache."""
        key = self.run_key(prompt, seed, steps, guidance)
        run = self.live_runs.get(key)
        if run is not None:
            yield from replayed(run)
            return
        ticket, kept = self.line.join(steps), []
        try:
            while not self.line.wait(ticket, timeout=WAIT_UPDATE_S):
                yield waiting(self.line.ahead(ticket))
            run = self.live_runs.get(key)  # an identical run may have finished while this one waited
            if run is None:
                records = self.gpu_steps(prompt, seed, steps, guidance)
                try:
                    yield from show(_keeping(records, kept))
                finally:
                    records.close()  # Stop: ends the pipeline within a step and removes every hook
        finally:
            self.line.leave(ticket)
        if run is not None:
            yield from replayed(run)
        elif len(kept) == steps and kept[-1].image is not None:
            try:
                self.live_runs.put(key, self.pipe, kept, prompt=prompt, seed=seed, steps=steps, guidance=guidance)
            except SdvizError as err:  # a full disk: the run was shown; only its replay is lost
                log.warning("live run not kept: %s", err)

    @errors_as_gr
    def generate(self, prompt, seed, steps, guidance, block, view):
        """The Run button and Enter in the prompt: one page update per denoising step (a replay when this exact
        run was made before)."""
        prompt, seed, steps, guidance, ctx = self._start(prompt, seed, steps, guidance)
        skip = gr.skip()
        yield from self._live_or_replayed(
            prompt, seed, steps, guidance, show=lambda records: self.stream_ui(records, ctx, block, view),
            waiting=lambda w: (skip, waiting_counter(w, self.step_seconds), *(skip,) * 6, waiting_text(w, self.step_seconds)),
            replayed=lambda run: self.replay_page(run, ctx, block, view, REPLAYED))

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
        of every step as JSON and a status line (which starts with "⚡ replayed" when this exact run was made before
        and is replayed from memory)."""
        prompt, seed, steps, guidance, ctx = self._start(prompt, seed, steps, guidance)
        skip = gr.skip()

        def replayed(run):
            for image, counter, decoded, status in self.stream_api(run.records(), ctx):
                yield image, counter, decoded, status if isinstance(status, dict) else f"{REPLAYED} {status}".strip()

        yield from self._live_or_replayed(
            prompt, seed, steps, guidance, show=lambda records: self.stream_api(records, ctx),
            waiting=lambda w: (skip, skip, skip, waiting_text(w, self.step_seconds)), replayed=replayed)

    # -- CSV, written only when asked for ----------------------------------------------------------------
    def write_csv(self, history: list):
        """The decoded attributes of every step of the last run, as CSV (written when the visitor asks)."""
        if not history or self.bundle is None:
            raise gr.Error("Run a prompt first: the CSV holds the decoded attributes of every step of your run.")
        folder = self.download_folder()
        for old in folder.glob("*.csv"):  # one visitor's file lives until the next request; Gradio keeps its own copy
            if time.time() - old.stat().st_mtime > 60:
                old.unlink(missing_ok=True)
        fd, path = tempfile.mkstemp(dir=folder, prefix="sdviz-decoded-", suffix=".csv")
        with os.fdopen(fd, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["prompt", "seed", "step", "timestep", "representation", *self.bundle.attributes])
            for h in history:
                for name, values in h["decoded"].items():
                    writer.writerow([h["prompt"], h.get("seed", ""), h["step"], h["timestep"], name,
                                     *np.round(np.asarray(values, float), 5)])
        return gr.update(value=path, visible=True)
