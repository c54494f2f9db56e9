"""Running the pipeline under a `Capture`: `trace`, `stream`, the one check of a run's settings, and run metadata.

`trace` runs a batch of prompts and returns every feature at once (`Trace`); `stream` yields one `StepRecord`
per step while the pipeline runs in a worker thread, and stops within one step when closed. Both pass the
pipeline a step-end callback: it closes the capture's step (recording `latents`), makes the previews and,
for a stream, cancels. `check_run_args` is the one rule for a run's prompt, seed, steps, guidance and size,
used by the library, the recorded runs and the app alike.

Names (docs/families.md): per prompt clip.pooled, clip.mean, clip.layer{i}, SDXL's clip2.*, clip.cond; per step
k = 0..S-1 (k = 0 is pure noise) unet.down{i}, unet.mid, unet.up{i}, latents.
"""

import math
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image

from . import __version__
from .capture import Capture
from .config import MAX_GUIDANCE, MAX_PROMPT_CHARS, MAX_SEED, MAX_SIDE, MAX_STEPS, MIN_SIDE
from .errors import SdvizError
from .families import SD_LATENT_RGB, default_size, family_of, is_per_step

# The SD 1.x/2.x linear latent -> RGB preview map; each family's own is in families.py.
LATENT_RGB = torch.tensor(SD_LATENT_RGB)


@dataclass
class Trace:
    prompts: list[str]
    features: dict[str, torch.Tensor]  # clip.*: [batch, dim]; per-step names: [batch, steps, dim]; float32 CPU
    timesteps: torch.Tensor  # [steps], the scheduler's t_k
    images: list | None  # PIL images, or None when decode=False
    meta: dict
    previews: list | None = None  # with previews=True: [prompt][step] linear latent -> RGB previews (PIL)

    def at_step(self, row: int = 0, step: int = -1) -> dict[str, torch.Tensor]:
        """One prompt's features at step k (default: the last): per-step names at that step, per-prompt names whole."""
        return {name: x[row, step] if is_per_step(name) else x[row] for name, x in self.features.items()}


@dataclass
class StepRecord:
    step: int  # k = 0..steps-1 in denoising order
    steps: int
    timestep: int
    features: dict[str, torch.Tensor]  # this step's per-step features, [dim] each
    clip: dict[str, torch.Tensor]  # the prompt's clip.*/clip2.* features, [dim] each (same at every step)
    preview: Image.Image  # linear latent -> RGB approximation
    image: Image.Image | None = None  # the VAE-decoded image, on the last record only


class Cancelled(Exception):
    """Raised inside the step loop to stop the pipeline when a stream is closed."""


# -- the one check of a run's settings -------------------------------------------------------------------------
class RunArgs(NamedTuple):
    prompt: str | list[str]
    seed: int | list[int]
    steps: int
    guidance: float
    height: int | None
    width: int | None


def _number(value) -> float | None:
    """A finite number from a caller or a form: 20, 20.0 and "20" all give 20.0; True, None and other text give None."""
    if value is None or isinstance(value, bool):
        return None
    try:
        x = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _whole(value, low: int, high: int) -> int | None:
    x = _number(value)
    return int(x) if x is not None and x.is_integer() and low <= x <= high else None


def check_run_args(prompt, seed, steps, guidance, height=None, width=None, *, scale: int = 8,
                   max_steps: int = MAX_STEPS, max_guidance: float = MAX_GUIDANCE) -> RunArgs:
    """The one rule for a run's settings: returns them normalised, or raises one SdvizError sentence saying what to do.

    prompt: a string or a list of strings; seed: a whole number or a list of them. Numbers may come as a browser
    form sends them ("20", 20.0): steps, seeds and sizes come back as int, guidance as float; prompt and seed keep
    their shape (one or a list). height/width (None: the model's default) must be multiples of `scale` (the
    pipeline's `vae_scale_factor`). The app passes its own, tighter `max_steps` and `max_guidance`.
    """
    prompts = [prompt] if prompt is None or isinstance(prompt, str) else list(prompt)
    if not prompts:
        raise SdvizError("No prompt given. Type a prompt such as 'a photo of a dog'.")
    for p in prompts:
        if not isinstance(p, str) or not p.strip():
            raise SdvizError("The prompt is empty. Type a prompt such as 'a photo of a dog'.")
        if len(p) > MAX_PROMPT_CHARS:
            raise SdvizError(f"The prompt is {len(p)} characters long; the limit is {MAX_PROMPT_CHARS}. Shorten it.")
    one_seed = not isinstance(seed, (list, tuple))
    seeds = [_whole(s, 0, MAX_SEED) for s in ([seed] if one_seed else seed)]
    for given, s in zip([seed] if one_seed else seed, seeds):
        if s is None:
            raise SdvizError(f"The seed must be a whole number from 0 to {MAX_SEED}; got {given!r}." if one_seed else
                             f"Seeds must be whole numbers from 0 to {MAX_SEED}; got {given!r}.")
    steps_n = _whole(steps, 1, max_steps)
    if steps_n is None:
        raise SdvizError(f"Steps must be a whole number from 1 to {max_steps}; got {steps!r}.")
    guidance_x = _number(guidance)
    if guidance_x is None or not 0.0 <= guidance_x <= max_guidance:
        raise SdvizError(f"Guidance must be a number from 0 to {max_guidance}; got {guidance!r}.")
    sides = []
    for side, label in ((height, "Height"), (width, "Width")):
        n = None if side is None else _whole(side, MIN_SIDE, MAX_SIDE)
        if side is not None and (n is None or n % scale):
            raise SdvizError(f"{label} must be a multiple of {scale} from {MIN_SIDE} to {MAX_SIDE}; got {side!r}.")
        sides.append(n)
    return RunArgs(prompts[0] if isinstance(prompt, str) else prompts, seeds[0] if one_seed else seeds, steps_n,
                   guidance_x, *sides)


def _seeds(seeds, n: int) -> list:
    if not isinstance(seeds, (list, tuple, range, np.ndarray)):  # one seed for every prompt
        return [seeds] * n
    seeds = list(seeds)
    if len(seeds) != n:
        raise SdvizError(f"Give one seed, or one seed per prompt: {n} prompts but {len(seeds)} seeds.")
    return seeds


# -- previews and the step-end callback ----------------------------------------------------------------------------
def latent_preview(latents: torch.Tensor, scale: int = 8, factors=None) -> Image.Image:
    """[C, H, W] latents -> a small RGB preview image, upscaled by `scale`.

    factors: the family's 4x3 latent -> RGB map (`Family.latent_rgb`); SD 1.x's when None.
    """
    lat = latents.detach().float().cpu()
    if lat.shape[0] == 4:
        rgb = torch.einsum("chw,cd->hwd", lat, LATENT_RGB if factors is None else torch.tensor(factors))
    else:  # unknown latent layout: show the first three channels
        rgb = lat[:3].permute(1, 2, 0)
    rgb = ((rgb + 1) / 2).clamp(0, 1).mul(255).round().to(torch.uint8).numpy()
    img = Image.fromarray(np.ascontiguousarray(rgb))
    return img.resize((img.width * scale, img.height * scale), Image.Resampling.BILINEAR)


def _step_end(capture: Capture, after=None):
    """The pipeline's `callback_on_step_end`: closes the capture's step (recording its latents), then
    `after(step, timestep, latents)` (previews; a stream's record and its cancellation)."""

    def callback(pipe, step, timestep, callback_kwargs):
        capture.on_step_end(pipe, step, timestep, callback_kwargs)
        if after is not None:
            after(step, timestep, callback_kwargs["latents"])
        return {}

    return callback


def _run_kwargs(prompts, seeds, steps, guidance, height, width, negative_prompt, decode, callback):
    return dict(
        prompt=prompts,
        negative_prompt=None if negative_prompt is None else [negative_prompt] * len(prompts),
        num_inference_steps=steps,
        guidance_scale=guidance,
        height=height,
        width=width,
        # CPU generators: the same seed gives the same noise on every device.
        generator=[torch.Generator("cpu").manual_seed(s) for s in seeds],
        output_type="pil" if decode else "latent",
        callback_on_step_end=callback,
        callback_on_step_end_tensor_inputs=["latents"],
    )


def run_meta(pipe, *, steps, guidance, seeds, height, width, template=None, negative_prompt=None) -> dict:
    info = getattr(pipe, "sdviz", None)
    return {
        "model": info.model_id if info else getattr(pipe, "name_or_path", "unknown"),
        "is_tiny": bool(info and info.is_tiny),
        "scheduler": type(pipe.scheduler).__name__,
        "checkpoint_scheduler": getattr(info, "checkpoint_scheduler", "") or None,
        "steps": steps,
        "guidance": guidance,
        "seeds": list(seeds),
        "family": family_of(pipe).key,
        "height": height or default_size(pipe),
        "width": width or default_size(pipe),
        "template": template,
        "negative_prompt": negative_prompt,
        "sdviz_version": __version__,
    }


# -- running -------------------------------------------------------------------------------------------------
@torch.inference_mode()
def trace(
    pipe,
    prompts,
    *,
    seeds=0,
    steps: int = 20,
    guidance: float = 7.5,
    height: int | None = None,
    width: int | None = None,
    layers=None,
    negative_prompt: str | None = None,
    decode: bool = True,
    template: str | None = None,
    edits=None,
    clip_layer: int | None = None,
    previews: bool = False,
) -> Trace:
    """Run the pipeline on a batch of prompts and return every requested representation.

    A batch gives the same features as one call per prompt (up to float tolerance): each prompt gets its own
    seeded generator. `layers` restricts capture to those names. `edits` ({name: fn(tensor, step) -> tensor},
    `Capture`'s) change the run, e.g. a steering shift (sdviz.steer); they live and die with the capture's hooks.
    `clip_layer` i conditions the denoiser on CLIP layer i instead of the last (sdviz.compare.lens). `previews`
    keeps each step's latent preview of every prompt (`Trace.previews`).
    """
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    prompts, seeds, steps, guidance, height, width = check_run_args(
        prompts, _seeds(seeds, len(prompts)), steps, guidance, height, width, scale=pipe.vae_scale_factor)
    family = family_of(pipe)
    kept = [[] for _ in prompts] if previews else None

    def keep_previews(step, timestep, latents):
        for row, frames in enumerate(kept):
            frames.append(latent_preview(latents[row], pipe.vae_scale_factor, family.latent_rgb))

    edits, seen = dict(edits or {}), {}
    if clip_layer is not None:  # the lens reads layer i's token states through the capture: an edit that keeps them
        name = f"clip.layer{clip_layer}"
        edits[name] = lambda h, k, then=edits.get(name): seen.setdefault("states", h if then is None else then(h, k))
    with Capture(pipe, cache=layers, edits=edits, guidance=family.has_cfg_batch(pipe, guidance)) as capture:
        kwargs = _run_kwargs(prompts, seeds, steps, guidance, height, width, negative_prompt, decode,
                             _step_end(capture, keep_previews if previews else None))
        if clip_layer is not None:  # encoded here, inside the capture: its hooks see the prompt's call first, as usual
            kwargs["prompt_embeds"] = layer_conditioning(pipe, kwargs.pop("prompt"), seen)
        out = pipe(**kwargs)
    meta = run_meta(pipe, steps=steps, guidance=guidance, seeds=seeds, height=height, width=width,
                    template=template, negative_prompt=negative_prompt)
    return Trace(
        prompts=prompts,
        features=capture.features(),
        timesteps=torch.tensor([int(t) for t in capture.timesteps]),
        images=list(out.images) if decode else None,
        meta=meta,
        previews=kept,
    )


def layer_conditioning(pipe, prompts: list[str], seen: dict) -> torch.Tensor:
    """The conditioning SD 1.x/2.x's pipeline would build, taken from CLIP layer i (0 = token + position embeddings)
    with the encoder's final layer norm applied, as the denoiser expects; the last layer gives exactly the pipeline's
    own. Runs the text encoder once, inside a `Capture` whose edit on `clip.layer{i}` keeps that layer's states in
    `seen["states"]`. (diffusers' `clip_skip` does this too, but reads `text_model`, which transformers 5 removed;
    output_hidden_states=True would leave transformers' recording hooks on the shared encoder.)"""
    tok, encoder = pipe.tokenizer, pipe.text_encoder
    text_model = getattr(encoder, "text_model", encoder)
    tokens = tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt")
    mask = tokens.attention_mask.to(encoder.device) if getattr(encoder.config, "use_attention_mask", False) else None
    encoder(tokens.input_ids.to(encoder.device), attention_mask=mask)
    return text_model.final_layer_norm(seen["states"]).to(dtype=encoder.dtype)


def stream(
    pipe,
    prompt: str,
    *,
    seed: int = 0,
    steps: int = 20,
    guidance: float = 7.5,
    height: int | None = None,
    width: int | None = None,
    layers=None,
    negative_prompt: str | None = None,
    edits=None,
) -> Iterator[StepRecord]:
    """Yield one `StepRecord` per denoising step while the pipeline runs.

    The last record carries the VAE-decoded image. Closing the iterator (or breaking out of a
    for-loop over it) stops the pipeline at the end of the current step and removes all hooks
    before `close()` returns. `edits` as for `trace`.
    """
    if prompt is not None and not isinstance(prompt, str):
        raise SdvizError("stream() runs one prompt: give it a string (trace() runs a batch).")
    prompt, seed, steps, guidance, height, width = check_run_args(prompt, seed, steps, guidance, height, width,
                                                                  scale=pipe.vae_scale_factor)
    events: queue.Queue = queue.Queue()
    stop = threading.Event()
    family = family_of(pipe)
    capture = Capture(pipe, cache=layers, edits=edits, guidance=family.has_cfg_batch(pipe, guidance))

    def send(step, timestep, latents):
        record = StepRecord(
            step=step, steps=steps, timestep=int(timestep),
            features={k: v[0].cpu() for k, v in capture.steps[-1].items()},
            clip={k: v[0].cpu() for k, v in capture.clip_features().items()},
            preview=latent_preview(latents[0], pipe.vae_scale_factor, family.latent_rgb),
        )
        events.put(("step", record))
        if stop.is_set():
            raise Cancelled()

    def work():
        try:
            with torch.inference_mode(), capture:
                out = pipe(**_run_kwargs([prompt], [seed], steps, guidance, height, width, negative_prompt, True,
                                         _step_end(capture, send)))
            events.put(("done", out.images[0]))
        except Cancelled:
            events.put(("cancelled", None))
        except BaseException as err:  # handed to the consumer's thread, raised there
            events.put(("error", err))

    worker = threading.Thread(target=work, name="sdviz-stream", daemon=True)
    worker.start()
    held = None  # each record is held back one step, so the last one can carry the final image
    try:
        while True:
            kind, payload = events.get()
            if kind == "step":
                if held is not None:
                    yield held
                held = payload
            elif kind == "done":
                held.image = payload
                yield held
                return
            elif kind == "error":
                raise payload
            else:
                return
    finally:
        stop.set()
        worker.join()
