"""Record what CLIP and the UNet compute at every denoising step, with stable names.

`Capture` is a small hooker in the spirit of DAAM/TransformerLens: entering it registers
read-only forward hooks, leaving it (normally, on error, or on cancel) removes every one.
`trace` runs a batch of prompts and returns all features; `stream` yields one `StepRecord` per
step while the pipeline runs in a worker thread, and stops within one step when closed.

Names (defined in docs/methods.md): clip.pooled, clip.mean, clip.layer{i} (once per prompt);
unet.down{i}, unet.mid, unet.up{i}, latents (per step k = 0..S-1, k = 0 is pure noise).
"""

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from . import __version__
from .config import (
    LATENT_MAX_DIM,
    LATENT_PROJECTED_DIM,
    LATENT_PROJECTION_SEED,
    MAX_GUIDANCE,
    MAX_PROMPT_CHARS,
    MAX_SEED,
    MAX_SIDE,
    MAX_STEPS,
    MIN_SIDE,
)
from .errors import SdvizError

# A linear latent -> RGB map for SD 1.x latents (the widely used "latent preview" factors):
# cheap enough for every step; the real VAE decode happens once, at the end.
LATENT_RGB = torch.tensor(
    [[0.298, 0.207, 0.208], [0.187, 0.286, 0.173], [-0.158, 0.189, 0.264], [-0.184, -0.271, -0.473]]
)


@dataclass
class Trace:
    prompts: list[str]
    features: dict[str, torch.Tensor]  # clip.*: [batch, dim]; per-step names: [batch, steps, dim]; float32 CPU
    timesteps: torch.Tensor  # [steps], the scheduler's t_k
    images: list | None  # PIL images, or None when decode=False
    meta: dict


@dataclass
class StepRecord:
    step: int  # k = 0..steps-1 in denoising order
    steps: int
    timestep: int
    features: dict[str, torch.Tensor]  # this step's per-step features, [dim] each
    clip: dict[str, torch.Tensor]  # the prompt's clip.* features, [dim] each (same at every step)
    preview: Image.Image  # linear latent -> RGB approximation
    image: Image.Image | None = None  # the VAE-decoded image, on the last record only


class Cancelled(Exception):
    """Raised inside the step loop to stop the pipeline when a stream is closed."""


def representation_names(pipe) -> list[str]:
    """Every name a full capture of `pipe` records, in a stable order."""
    n_text = pipe.text_encoder.config.num_hidden_layers
    clip = ["clip.pooled", "clip.mean"] + [f"clip.layer{i}" for i in range(n_text + 1)]
    unet = (
        [f"unet.down{i}" for i in range(len(pipe.unet.down_blocks))]
        + ["unet.mid"]
        + [f"unet.up{i}" for i in range(len(pipe.unet.up_blocks))]
    )
    return clip + unet + ["latents"]


def representation_dims(pipe) -> dict[str, int]:
    """Feature size of every name at the model's default resolution, read from the configs."""
    channels = list(pipe.unet.config.block_out_channels)
    latent = pipe.unet.config.in_channels * pipe.unet.config.sample_size**2
    dims = dict.fromkeys([n for n in representation_names(pipe) if n.startswith("clip.")], pipe.text_encoder.config.hidden_size)
    dims |= {f"unet.down{i}": c for i, c in enumerate(channels)} | {"unet.mid": channels[-1]}
    dims |= {f"unet.up{i}": c for i, c in enumerate(reversed(channels))}
    return dims | {"latents": latent if latent <= LATENT_MAX_DIM else LATENT_PROJECTED_DIM}


def is_per_step(name: str) -> bool:
    return not name.startswith("clip.")


def _first(output):
    """A block's main output: down blocks return (hidden, residuals), CLIP layers may return tuples."""
    return output[0] if isinstance(output, (tuple, list)) else output


_projections: dict = {}


def reduce_latents(latents: torch.Tensor) -> torch.Tensor:
    """Flatten [B, C, H, W] latents; above LATENT_MAX_DIM, apply a fixed seeded Gaussian projection.

    The projection matrix is drawn once per input size from a CPU generator seeded with
    LATENT_PROJECTION_SEED and scaled by 1/sqrt(out_dim), so it is the same on every machine
    and approximately preserves distances (Johnson-Lindenstrauss).
    """
    flat = latents.reshape(latents.shape[0], -1).float()
    dim = flat.shape[1]
    if dim <= LATENT_MAX_DIM:
        return flat
    key = (dim, str(flat.device))
    if key not in _projections:
        gen = torch.Generator().manual_seed(LATENT_PROJECTION_SEED)
        proj = torch.randn(dim, LATENT_PROJECTED_DIM, generator=gen) / LATENT_PROJECTED_DIM**0.5
        _projections[key] = proj.to(flat.device)
    return flat @ _projections[key]


def latent_preview(latents: torch.Tensor, scale: int = 8) -> Image.Image:
    """[C, H, W] latents -> a small RGB preview image, upscaled by `scale`."""
    lat = latents.detach().float().cpu()
    if lat.shape[0] == 4:
        rgb = torch.einsum("chw,cd->hwd", lat, LATENT_RGB)
    else:  # unknown latent layout: show the first three channels
        rgb = lat[:3].permute(1, 2, 0)
    rgb = ((rgb + 1) / 2).clamp(0, 1).mul(255).round().to(torch.uint8).numpy()
    img = Image.fromarray(np.ascontiguousarray(rgb))
    return img.resize((img.width * scale, img.height * scale), Image.Resampling.BILINEAR)


def _pipe_lock(pipe) -> threading.Lock:
    # One capture at a time per pipeline: hooks of two runs on one model would mix activations.
    return pipe.__dict__.setdefault("_sdviz_lock", threading.Lock())


class Capture:
    """Context manager that hooks the text encoder and UNet of `pipe` and records their outputs.

    Pass `capture.on_step_end` as the pipeline's `callback_on_step_end`: it closes each step,
    records the latents, calls `on_step(step, timestep, features, latents)` if given, and raises
    `Cancelled` when `should_stop()` is true.
    """

    def __init__(self, pipe, *, guidance: bool, names=None, on_step=None, should_stop=None):
        self.pipe = pipe
        self.guidance = guidance
        all_names = representation_names(pipe)
        self.names = all_names if names is None else [n for n in all_names if n in set(names)]
        unknown = set(names or []) - set(all_names)
        if unknown:
            raise SdvizError(f"Unknown representation(s) {sorted(unknown)}. Available: {', '.join(all_names)}.")
        self.on_step = on_step
        self.should_stop = should_stop
        self.handles: list = []
        self.text_calls: list[dict] = []  # one dict per text-encoder call; the first is the prompt, then the negative
        self.steps: list[dict] = []  # one dict of features per finished step
        self.timesteps: list[int] = []
        self._step: dict = {}
        self._real_tokens = None

    # -- hooks ---------------------------------------------------------------
    def __enter__(self):
        try:
            self._register()
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(self, *exc):
        self._remove()
        return False

    def _remove(self):
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    def _hook(self, module, fn, pre=False):
        if pre:
            self.handles.append(module.register_forward_pre_hook(fn, with_kwargs=True))
        else:
            self.handles.append(module.register_forward_hook(fn))

    def _register(self):
        te, unet = self.pipe.text_encoder, self.pipe.unet
        wanted = set(self.names)
        if any(n.startswith("clip.") for n in wanted):
            self._hook(te, self._text_begin, pre=True)
            self._hook(te, self._text_end)
            text_model = getattr(te, "text_model", te)  # transformers < 5 wraps the model in .text_model
            layer_modules = [text_model.embeddings] + list(text_model.encoder.layers)
            for i, module in enumerate(layer_modules):
                if f"clip.layer{i}" in wanted:
                    self._hook(module, self._clip_layer_hook(f"clip.layer{i}"))
        blocks = (
            [(f"unet.down{i}", b) for i, b in enumerate(unet.down_blocks)]
            + [("unet.mid", unet.mid_block)]
            + [(f"unet.up{i}", b) for i, b in enumerate(unet.up_blocks)]
        )
        for name, block in blocks:
            if name in wanted:
                self._hook(block, self._unet_hook(name))

    def _text_begin(self, module, args, kwargs):
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        eos = self.pipe.tokenizer.eos_token_id
        # Real tokens: start-of-text through the first end-of-text token; the rest is padding.
        is_eos = (input_ids == eos).int()
        first_eos = torch.where(is_eos.any(1), is_eos.argmax(1), torch.full_like(is_eos[:, 0], input_ids.shape[1] - 1))
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        self._real_tokens = (positions[None, :] <= first_eos[:, None]).float()
        self.text_calls.append({})

    def _masked_mean(self, hidden: torch.Tensor) -> torch.Tensor:
        mask = self._real_tokens.to(hidden.device)[..., None]
        return ((hidden.float() * mask).sum(1) / mask.sum(1)).detach()

    def _clip_layer_hook(self, name):
        def hook(module, args, output):
            self.text_calls[-1][name] = self._masked_mean(_first(output))

        return hook

    def _text_end(self, module, args, output):
        call = self.text_calls[-1]
        if "clip.pooled" in self.names:
            call["clip.pooled"] = output.pooler_output.detach().float()
        if "clip.mean" in self.names:
            call["clip.mean"] = self._masked_mean(output.last_hidden_state)

    def _unet_hook(self, name):
        def hook(module, args, output):
            pooled = _first(output).detach().float().mean(dim=(2, 3))
            if self.guidance:  # the UNet batch is [unconditional, conditional]
                pooled = pooled.chunk(2)[1]
            self._step[name] = pooled

        return hook

    # -- step boundary -------------------------------------------------------
    def on_step_end(self, pipe, step: int, timestep, callback_kwargs: dict) -> dict:
        latents = callback_kwargs["latents"]
        if "latents" in self.names:
            self._step["latents"] = reduce_latents(latents.detach())
        features, self._step = self._step, {}
        self.steps.append(features)
        # kept as given: int() on a CUDA tensor would stall the GPU queue at every step of a trace()
        self.timesteps.append(timestep.detach() if torch.is_tensor(timestep) else timestep)
        if self.on_step is not None:
            self.on_step(step, int(timestep), features, latents)
        if self.should_stop is not None and self.should_stop():
            raise Cancelled()
        return {}

    def clip_features(self) -> dict[str, torch.Tensor]:
        return dict(self.text_calls[0]) if self.text_calls else {}

    def features(self) -> dict[str, torch.Tensor]:
        out = {k: v.cpu() for k, v in self.clip_features().items()}
        for name in self.names:
            if is_per_step(name) and self.steps and name in self.steps[0]:
                out[name] = torch.stack([s[name] for s in self.steps], dim=1).cpu()
        return {name: out[name] for name in self.names if name in out}


# -- validation ---------------------------------------------------------------
def check_run_args(pipe, prompts: list[str], steps: int, guidance: float, height, width, seeds: list[int]):
    if not prompts:
        raise SdvizError("No prompt given. Type a prompt such as 'a photo of a hammer'.")
    for p in prompts:
        if not isinstance(p, str) or not p.strip():
            raise SdvizError("The prompt is empty. Type a prompt such as 'a photo of a hammer'.")
        if len(p) > MAX_PROMPT_CHARS:
            raise SdvizError(f"The prompt is {len(p)} characters long; the limit is {MAX_PROMPT_CHARS}. Shorten it.")
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
        raise SdvizError(f"Steps must be a whole number from 1 to {MAX_STEPS}; got {steps!r}.")
    if isinstance(guidance, bool) or not isinstance(guidance, (int, float)) or not 0.0 <= guidance <= MAX_GUIDANCE:
        raise SdvizError(f"Guidance must be a number from 0 to {MAX_GUIDANCE}; got {guidance!r}.")
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= MAX_SEED:
            raise SdvizError(f"Seeds must be whole numbers from 0 to {MAX_SEED}; got {s!r}.")
    factor = pipe.vae_scale_factor
    for side, label in ((height, "Height"), (width, "Width")):
        if side is not None and (not isinstance(side, int) or not MIN_SIDE <= side <= MAX_SIDE or side % factor):
            raise SdvizError(f"{label} must be a multiple of {factor} from {MIN_SIDE} to {MAX_SIDE}; got {side!r}.")


def _seeds(seeds, n: int) -> list[int]:
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        return [seeds] * n
    seeds = list(seeds)
    if len(seeds) != n:
        raise SdvizError(f"Give one seed, or one seed per prompt: {n} prompts but {len(seeds)} seeds.")
    return seeds


def _run_kwargs(pipe, prompts, seeds, steps, guidance, height, width, negative_prompt, decode, capture):
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
        callback_on_step_end=capture.on_step_end,
        callback_on_step_end_tensor_inputs=["latents"],
    )


def run_meta(pipe, *, steps, guidance, seeds, height, width, template=None, negative_prompt=None) -> dict:
    info = getattr(pipe, "sdviz", None)
    return {
        "model": info.model_id if info else getattr(pipe, "name_or_path", "unknown"),
        "is_tiny": bool(info and info.is_tiny),
        "scheduler": type(pipe.scheduler).__name__,
        "steps": steps,
        "guidance": guidance,
        "seeds": list(seeds),
        "height": height or pipe.unet.config.sample_size * pipe.vae_scale_factor,
        "width": width or pipe.unet.config.sample_size * pipe.vae_scale_factor,
        "template": template,
        "negative_prompt": negative_prompt,
        "sdviz_version": __version__,
    }


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
) -> Trace:
    """Run the pipeline on a batch of prompts and return every requested representation.

    A batch gives the same features as one call per prompt (up to float tolerance): each
    prompt gets its own seeded generator. `layers` restricts capture to those names.
    """
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    seeds = _seeds(seeds, len(prompts))
    check_run_args(pipe, prompts, steps, guidance, height, width, seeds)
    with _pipe_lock(pipe), Capture(pipe, guidance=guidance > 1.0, names=layers) as capture:
        out = pipe(**_run_kwargs(pipe, prompts, seeds, steps, guidance, height, width, negative_prompt, decode, capture))
    meta = run_meta(pipe, steps=steps, guidance=guidance, seeds=seeds, height=height, width=width,
                    template=template, negative_prompt=negative_prompt)
    return Trace(
        prompts=prompts,
        features=capture.features(),
        timesteps=torch.tensor([int(t) for t in capture.timesteps]),
        images=list(out.images) if decode else None,
        meta=meta,
    )


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
) -> Iterator[StepRecord]:
    """Yield one `StepRecord` per denoising step while the pipeline runs.

    The last record carries the VAE-decoded image. Closing the iterator (or breaking out of a
    for-loop over it) stops the pipeline at the end of the current step and removes all hooks
    before `close()` returns.
    """
    check_run_args(pipe, [prompt], steps, guidance, height, width, [seed])
    events: queue.Queue = queue.Queue()
    stop = threading.Event()
    scale = pipe.vae_scale_factor

    def on_step(step, timestep, features, latents):
        record = StepRecord(
            step=step, steps=steps, timestep=timestep,
            features={k: v[0].cpu() for k, v in features.items()},
            clip={k: v[0].cpu() for k, v in capture.clip_features().items()},
            preview=latent_preview(latents[0], scale),
        )
        events.put(("step", record))

    def work():
        try:
            with torch.inference_mode(), _pipe_lock(pipe), capture:
                out = pipe(**_run_kwargs(pipe, [prompt], [seed], steps, guidance, height, width, negative_prompt, True, capture))
            events.put(("done", out.images[0]))
        except Cancelled:
            events.put(("cancelled", None))
        except BaseException as err:  # handed to the consumer's thread, raised there
            events.put(("error", err))

    capture = Capture(pipe, guidance=guidance > 1.0, names=layers, on_step=on_step, should_stop=stop.is_set)
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
