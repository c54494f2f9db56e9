"""Record what the text encoders and the denoiser compute at every denoising step, with stable names.

`Capture` is a small hooker in the spirit of DAAM/TransformerLens: entering it registers
read-only forward hooks, leaving it (normally, on error, or on cancel) removes every one.
`trace` runs a batch of prompts and returns all features; `stream` yields one `StepRecord` per
step while the pipeline runs in a worker thread, and stops within one step when closed.

Names (docs/methods.md, docs/families.md): clip.pooled, clip.mean, clip.layer{i}, SDXL's clip2.* and clip.cond (once
per prompt); unet.down{i}, unet.mid, unet.up{i}, latents (per step k = 0..S-1, k = 0 is pure noise).
Everything family-specific (which encoders, which blocks, CFG batch, preview colours) comes from
the pipeline's adapter in `families.py`.
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
from .families import SD_LATENT_RGB, default_size, family_of

# The SD 1.x/2.x linear latent -> RGB preview map; each family's own is in families.py.
LATENT_RGB = torch.tensor(SD_LATENT_RGB)
TEXT_PREFIXES = ("clip.", "clip2.")  # per-prompt names; everything else is recorded per step
COND = "clip.cond"  # the conditioning tensor the denoiser's cross-attention receives


@dataclass
class Trace:
    prompts: list[str]
    features: dict[str, torch.Tensor]  # clip.*: [batch, dim]; per-step names: [batch, steps, dim]; float32 CPU
    timesteps: torch.Tensor  # [steps], the scheduler's t_k
    images: list | None  # PIL images, or None when decode=False
    meta: dict
    previews: list | None = None  # with previews=True: [prompt][step] linear latent -> RGB previews (PIL)


@dataclass
class StepRecord:
    step: int  # k = 0..steps-1 in denoising order
    steps: int
    timestep: int
    features: dict[str, torch.Tensor]  # this step's per-step features, [dim] each
    clip: dict[str, torch.Tensor]  # the prompt's clip.*/clip2.* features, [dim] each (same at every step)
    preview: Image.Image  # linear latent -> RGB approximation
    image: Image.Image | None = None  # the VAE-decoded image, on the last record only


@dataclass
class Shift:
    """Steering: add `vector` to what the denoiser reads, on the conditional half of a CFG batch only.

    where="clip": to every real token of the prompt's conditioning (the tensor the denoiser's cross-attention
    receives), so its masked mean, `clip.cond`, moves by exactly `vector`. where=a block name ("unet.mid"): to
    that block's output at every position, so its pooled feature moves by exactly `vector`; a down block's skip
    connections keep the unshifted copy. vector: [dim], or [batch, dim] for one per prompt. steps: the
    denoising steps k it applies at (None: all).
    """

    where: str
    vector: torch.Tensor
    steps: frozenset | None = None

    def applies(self, step: int) -> bool:
        return self.steps is None or step in self.steps

    def rows(self, batch: int) -> torch.Tensor:
        v = self.vector.float()
        return v.expand(batch, -1) if v.dim() == 1 else v


class Cancelled(Exception):
    """Raised inside the step loop to stop the pipeline when a stream is closed."""


def _encoder_names(prefix: str, model) -> list[str]:
    return [f"{prefix}.pooled", f"{prefix}.mean"] + [f"{prefix}.layer{i}" for i in range(model.config.num_hidden_layers + 1)]


def representation_names(pipe) -> list[str]:
    """Every name a full capture of `pipe` records, in a stable order."""
    family = family_of(pipe)
    text = [n for spec, model, _ in family.encoders(pipe) for n in _encoder_names(spec.prefix, model)]
    return text + [COND] + [name for name, _ in family.blocks(pipe)] + ["latents"]


def representation_dims(pipe) -> dict[str, int]:
    """Feature size of every name at the model's default resolution, read from the configs."""
    family = family_of(pipe)
    dims = {}
    for spec, model, _ in family.encoders(pipe):
        dims |= dict.fromkeys(_encoder_names(spec.prefix, model), model.config.hidden_size)
        if spec.pooled == "text_embeds":  # the projected pooled output
            dims[f"{spec.prefix}.pooled"] = model.config.projection_dim
    dims[COND] = family.cond_dim(pipe)
    dims |= family.block_dims(pipe)
    latent = pipe.unet.config.in_channels * pipe.unet.config.sample_size**2
    return dims | {"latents": latent if latent <= LATENT_MAX_DIM else LATENT_PROJECTED_DIM}


def is_per_step(name: str) -> bool:
    return not name.startswith(TEXT_PREFIXES)


def _first(output):
    """A module's main output: CLIP layers may return tuples."""
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


def _pipe_lock(pipe) -> threading.Lock:
    # One capture at a time per pipeline: hooks of two runs on one model would mix activations.
    return pipe.__dict__.setdefault("_sdviz_lock", threading.Lock())


class Capture:
    """Context manager that hooks the text encoders and the denoiser of `pipe` and records their outputs.

    guidance: True when each denoiser call holds [unconditional, conditional] halves
    (`family_of(pipe).has_cfg_batch(pipe, guidance_scale)`); only the conditional half is kept.
    Pass `capture.on_step_end` as the pipeline's `callback_on_step_end`: it closes each step,
    records the latents, calls `on_step(step, timestep, features, latents)` if given, and raises
    `Cancelled` when `should_stop()` is true.
    """

    def __init__(self, pipe, *, guidance: bool, names=None, on_step=None, should_stop=None, shifts=None):
        self.pipe = pipe
        self.family = family_of(pipe)
        self.guidance = guidance
        all_names = representation_names(pipe)
        self.names = all_names if names is None else [n for n in all_names if n in set(names)]
        unknown = set(names or []) - set(all_names)
        if unknown:
            raise SdvizError(f"Unknown representation(s) {sorted(unknown)}. Available: {', '.join(all_names)}.")
        self.on_step = on_step
        self.should_stop = should_stop
        self.shifts: list[Shift] = list(shifts or [])
        places = {"clip"} | {name for name, _ in self.family.blocks(pipe)}
        for shift in self.shifts:
            if shift.where not in places:
                raise SdvizError(f"Cannot steer at '{shift.where}'. Choose clip or one of: {', '.join(sorted(places - {'clip'}))}.")
        self.handles: list = []
        # per text encoder prefix, one dict per call: the first is the prompt, then the negative prompt
        self.text_calls: dict[str, list[dict]] = {}
        self._masks: dict[str, list[torch.Tensor]] = {}  # real-token mask of each of those calls
        self._cond: dict = {}  # clip.cond, read from the denoiser's first call
        self.steps: list[dict] = []  # one dict of features per finished step
        self.timesteps: list[int] = []
        self._step: dict = {}

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
        wanted = set(self.names)
        steer_clip = any(s.where == "clip" for s in self.shifts)
        for i, (spec, model, tokenizer) in enumerate(self.family.encoders(self.pipe)):
            mine = {n for n in wanted if n.startswith(spec.prefix + ".")}
            if not mine and not (i == 0 and (COND in wanted or steer_clip)):  # both need the first encoder's token mask
                continue
            self.text_calls[spec.prefix], self._masks[spec.prefix] = [], []
            self._hook(model, self._text_begin(spec.prefix, tokenizer.eos_token_id), pre=True)
            self._hook(model, self._text_end(spec))
            text_model = getattr(model, "text_model", model)  # CLIPTextModelWithProjection wraps a CLIPTextModel
            for k, module in enumerate([text_model.embeddings] + list(text_model.encoder.layers)):
                if f"{spec.prefix}.layer{k}" in wanted:
                    self._hook(module, self._layer_hook(spec.prefix, f"{spec.prefix}.layer{k}"))
        blocks = self.family.blocks(self.pipe)
        denoiser = getattr(self.pipe, self.family.denoiser)
        if steer_clip:  # registered first: clip.cond and every block then read the steered conditioning
            self._hook(denoiser, self._shift_cond, pre=True)
        if COND in wanted:
            self._hook(denoiser, self._cond_hook, pre=True)
        for name, block in blocks:
            if any(s.where == name for s in self.shifts):
                self._hook(block, self._shift_block(name))
            if name in wanted:
                self._hook(block, self._block_hook(name))

    def _text_begin(self, prefix, eos):
        def hook(module, args, kwargs):
            input_ids = kwargs.get("input_ids", args[0] if args else None)
            # Real tokens: start-of-text through the first end-of-text token; the rest is padding.
            is_eos = (input_ids == eos).int()
            first_eos = torch.where(is_eos.any(1), is_eos.argmax(1), torch.full_like(is_eos[:, 0], input_ids.shape[1] - 1))
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)
            self._masks[prefix].append((positions[None, :] <= first_eos[:, None]).float())
            self.text_calls[prefix].append({})

        return hook

    @staticmethod
    def _masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        mask = mask.to(hidden.device)[..., None]
        return ((hidden.float() * mask).sum(1) / mask.sum(1)).detach()

    def _layer_hook(self, prefix, name):
        def hook(module, args, output):
            self.text_calls[prefix][-1][name] = self._masked_mean(_first(output), self._masks[prefix][-1])

        return hook

    def _text_end(self, spec):
        pooled, mean = f"{spec.prefix}.pooled", f"{spec.prefix}.mean"

        def hook(module, args, output):
            call = self.text_calls[spec.prefix][-1]
            if pooled in self.names:
                call[pooled] = getattr(output, spec.pooled).detach().float()
            if mean in self.names:
                call[mean] = self._masked_mean(output.last_hidden_state, self._masks[spec.prefix][-1])

        return hook

    def _cond_hook(self, module, args, kwargs):
        if COND in self._cond:  # the conditioning is the same at every step: read it once
            return
        states = kwargs.get("encoder_hidden_states", args[2] if len(args) > 2 else None)
        if self.guidance:  # the denoiser batch is [unconditional, conditional]
            states = states.chunk(2)[1]
        first = next(iter(self._masks))
        self._cond[COND] = self._masked_mean(states, self._masks[first][0])  # the prompt's real tokens

    def _active(self, where: str) -> list[Shift]:
        step = len(self.steps)  # the denoiser call of step k runs before step k is closed
        return [s for s in self.shifts if s.where == where and s.applies(step)]

    def _on_conditional_half(self, delta: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(delta), delta]) if self.guidance else delta

    def _shift_cond(self, module, args, kwargs):
        active = self._active("clip")
        if not active:
            return None
        key = "encoder_hidden_states"
        states = kwargs[key] if key in kwargs else args[2]
        mask = self._masks[next(iter(self._masks))][0].to(states.device)[..., None]  # the prompt's real tokens
        total = sum(s.rows(mask.shape[0]).to(states.device) for s in active)  # [batch, dim]
        shifted = states + self._on_conditional_half(mask * total[:, None, :]).to(states.dtype)
        if key in kwargs:
            return args, {**kwargs, key: shifted}
        return (*args[:2], shifted, *args[3:]), kwargs

    def _shift_block(self, name):
        def hook(module, args, output):
            active = self._active(name)
            if not active:
                return None
            hidden = output[0] if isinstance(output, (tuple, list)) else output
            batch = hidden.shape[0] // 2 if self.guidance else hidden.shape[0]
            total = sum(s.rows(batch).to(hidden.device) for s in active)  # [batch, channels]
            delta = self._on_conditional_half(total).reshape(hidden.shape[0], -1, *[1] * (hidden.dim() - 2))
            hidden = hidden + delta.to(hidden.dtype)
            return (hidden, *output[1:]) if isinstance(output, (tuple, list)) else hidden

        return hook

    def _block_hook(self, name):
        def hook(module, args, output):
            pooled = self.family.pool(output)
            if self.guidance:  # the denoiser batch is [unconditional, conditional]
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
        """The prompt's per-prompt features: the first call of each text encoder, and clip.cond."""
        out = {}
        for calls in self.text_calls.values():
            out |= calls[0] if calls else {}
        out |= self._cond
        return {name: out[name] for name in self.names if name in out}

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
        "family": family_of(pipe).key,
        "height": height or default_size(pipe),
        "width": width or default_size(pipe),
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
    shifts=None,
    clip_layer: int | None = None,
    previews: bool = False,
) -> Trace:
    """Run the pipeline on a batch of prompts and return every requested representation.

    A batch gives the same features as one call per prompt (up to float tolerance): each
    prompt gets its own seeded generator. `layers` restricts capture to those names. `shifts` (a list of
    `Shift`) steer the run (sdviz.steer); their hooks live and die with the capture's. `clip_layer` i
    conditions the denoiser on CLIP layer i instead of the last (sdviz.compare.lens). `previews` keeps each
    step's latent preview of every prompt (`Trace.previews`).
    """
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    seeds = _seeds(seeds, len(prompts))
    check_run_args(pipe, prompts, steps, guidance, height, width, seeds)
    family = family_of(pipe)
    cfg_batch = family.has_cfg_batch(pipe, guidance)
    kept = [[] for _ in prompts] if previews else None

    def keep_previews(step, timestep, features, latents):
        for row, frames in enumerate(kept):
            frames.append(latent_preview(latents[row], pipe.vae_scale_factor, family.latent_rgb))

    with _pipe_lock(pipe), Capture(pipe, guidance=cfg_batch, names=layers, shifts=shifts,
                                   on_step=keep_previews if previews else None) as capture:
        kwargs = _run_kwargs(pipe, prompts, seeds, steps, guidance, height, width, negative_prompt, decode, capture)
        if clip_layer is not None:  # encoded here, inside the capture: its hooks see the prompt's call first, as usual
            kwargs["prompt_embeds"] = layer_conditioning(pipe, kwargs.pop("prompt"), clip_layer)
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


def layer_conditioning(pipe, prompts: list[str], layer: int) -> torch.Tensor:
    """The conditioning SD 1.x/2.x's pipeline would build, taken from CLIP layer `layer` (0 = token + position
    embeddings) with the encoder's final layer norm applied, as the denoiser expects; the last layer gives exactly
    the pipeline's own. (diffusers' `clip_skip` does this too, but reads `text_model`, which transformers 5 removed;
    and output_hidden_states=True would leave transformers' recording hooks on the shared encoder: a hook of our
    own, removed at once, reads the layer instead.)"""
    tok, encoder = pipe.tokenizer, pipe.text_encoder
    text_model = getattr(encoder, "text_model", encoder)
    source = text_model.embeddings if layer == 0 else text_model.encoder.layers[layer - 1]
    ids = tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt").input_ids
    mask = None
    if getattr(encoder.config, "use_attention_mask", False):
        mask = tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True,
                   return_tensors="pt").attention_mask.to(encoder.device)
    seen = {}
    handle = source.register_forward_hook(lambda module, args, output: seen.setdefault("hidden", _first(output)))
    try:
        encoder(ids.to(encoder.device), attention_mask=mask)
    finally:
        handle.remove()
    return text_model.final_layer_norm(seen["hidden"]).to(dtype=encoder.dtype)


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
    family = family_of(pipe)

    def on_step(step, timestep, features, latents):
        record = StepRecord(
            step=step, steps=steps, timestep=timestep,
            features={k: v[0].cpu() for k, v in features.items()},
            clip={k: v[0].cpu() for k, v in capture.clip_features().items()},
            preview=latent_preview(latents[0], scale, family.latent_rgb),
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

    capture = Capture(pipe, guidance=family.has_cfg_batch(pipe, guidance), names=layers, on_step=on_step, should_stop=stop.is_set)
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
