"""The hooker: read and edit what the text encoders and the denoiser compute, by canonical name.

`Capture(pipe, cache=names, edits={name: fn(tensor, step) -> tensor})` is one primitive for reading and writing, in
the spirit of TransformerLens' `run_with_hooks` and DAAM's hooker. Entering it registers one forward hook per hook
point it needs (the table is `Family.hook_points`); leaving it, normally, on error or on cancel, removes every one.
The same hook applies a name's edit and then records it, so a cached name reads the edited tensor.

    with Capture(pipe) as cap:
        image = pipe("a photo of a dog", num_inference_steps=20).images[0]
    cap.features()  # clip.*: [batch, dim] once per prompt; unet.*: [batch, steps, dim], k = 0 (pure noise) .. S-1

How it follows a run without being told about it (docs/capture.md):
- Steps: one denoiser call is one step; k counts the calls (diffusers' SD and SDXL pipelines call the denoiser
  once per step with both CFG halves in one batch). Passing `callback_on_step_end=cap.on_step_end` (as
  `run.trace` and `run.stream` do) also records `latents`, which no module outputs.
- CFG halves: what the pipeline itself decided for this call (`pipe.do_classifier_free_guidance`), else a
  denoiser batch twice the prompt batch; only the conditional half is recorded and edited.
- The prompt: the first call of each text encoder inside the `with` block (the negative prompt's comes after).
  One pipeline call per `with` block.

Names and their widths come from families.py; running a pipeline (trace, stream, previews) is `sdviz.run`.
"""

import threading
from collections.abc import Callable

import torch

from .config import LATENT_MAX_DIM, LATENT_PROJECTED_DIM, LATENT_PROJECTION_SEED
from .errors import SdvizError
from .families import COND, family_of, is_per_step, representation_dims, representation_names

__all__ = ["COND", "Capture", "Edit", "is_per_step", "reduce_latents", "representation_dims", "representation_names"]

Edit = Callable[[torch.Tensor, "int | None"], torch.Tensor]  # (tensor, step k or None) -> tensor of the same shape


def _first(output):
    """A module's main output: CLIP layers and the UNet's down blocks may return tuples."""
    return output[0] if isinstance(output, (tuple, list)) else output


def _with_first(output, hidden):
    return (hidden, *output[1:]) if isinstance(output, (tuple, list)) else hidden


def _masked_mean(hidden: torch.Tensor, mask: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """Mean over the tokens `mask` marks (axis 1) of [batch, tokens, dim] states."""
    mask = mask.to(hidden.device, dtype)[..., None]
    return ((hidden.to(dtype) * mask).sum(1) / mask.sum(1)).detach()


_projections: dict = {}


def reduce_latents(latents: torch.Tensor, width: int | None = None) -> torch.Tensor:
    """Flatten [B, C, H, W] latents; project them to `width` (the model's `latents` width in the hook table) when
    they have another size, or, without a width, above LATENT_MAX_DIM to LATENT_PROJECTED_DIM.

    The table's width comes from the model's own image size (SD 1.5: 4x64x64 = 16,384 values -> 1,024; tiny: 1,024,
    kept whole), so a run at another size (SD 1.5 at 256 px: 4,096 values) still gives the width its probes and
    bundles expect, instead of a feature of another width. The projection matrix is drawn once per input size from a
    CPU generator seeded with LATENT_PROJECTION_SEED and scaled by 1/sqrt(out_dim), so it is the same on every
    machine and approximately preserves distances (Johnson-Lindenstrauss); at the model's own size nothing changed.
    """
    flat = latents.reshape(latents.shape[0], -1).float()
    dim = flat.shape[1]
    if width is None:
        width = dim if dim <= LATENT_MAX_DIM else LATENT_PROJECTED_DIM
    if dim == width:
        return flat
    key = (dim, width, str(flat.device))
    if key not in _projections:
        gen = torch.Generator().manual_seed(LATENT_PROJECTION_SEED)
        proj = torch.randn(dim, width, generator=gen) / width**0.5
        _projections[key] = proj.to(flat.device)
    return flat @ _projections[key]


def _pipe_lock(pipe) -> threading.RLock:
    # One capture at a time per pipeline: hooks of two runs on one model would mix activations.
    return pipe.__dict__.setdefault("_sdviz_lock", threading.RLock())


class Capture:
    """Hooks `pipe`'s text encoders and denoiser inside a `with` block: records `cache`, applies `edits`.

    cache: the names to record (None: every name of `representation_names(pipe)`; [] records nothing).
    edits: {name: fn(tensor, step) -> tensor} on a text encoder layer, `clip.cond` or a denoiser block; what fn
    receives and must return, kind by kind (step k = 0 .. S-1 is the denoiser call it runs in):
    - `clip.layer{i}` (`clip2.layer{i}`): that layer's hidden states [batch, tokens, width] in the prompt's own call
      of the text encoder (not the negative prompt's), once per run, with step None.
    - `clip.cond`: the mean over the prompt's real tokens of the conditioning the denoiser reads, conditional half,
      [batch, width] in float64 (float32 on Apple MPS), at every step k. Return the vector it should be: the
      difference is added to every real token (padding and the unconditional half are left as they are), so
      `clip.cond` then reads exactly what fn returned, and a shift by v moves it by exactly v.
    - a block (`unet.mid`, ...): its output [batch, channels, height, width], conditional half, at step k; return
      its replacement (a down block's skip connections keep the unedited copy). Returning the tensor unchanged
      (the same object) edits nothing, bit for bit.
    guidance: whether each denoiser call holds [unconditional, conditional] halves; None reads it from the
    pipeline at its first denoiser call (`do_classifier_free_guidance`, else a batch twice the prompt's).
    """

    def __init__(self, pipe, cache=None, edits: dict[str, Edit] | None = None, *, guidance: bool | None = None):
        self.pipe = pipe
        self.family = family_of(pipe)
        self.points = {p.name: p for p in self.family.hook_points(pipe)}
        cache = [cache] if isinstance(cache, str) else cache
        unknown = set(cache or []) - set(self.points)
        if unknown:
            raise SdvizError(f"Unknown representation(s) {sorted(unknown)}. Available: {', '.join(self.points)}.")
        self.names = list(self.points) if cache is None else [n for n in self.points if n in set(cache)]
        self.edits = dict(edits or {})
        for name, fn in self.edits.items():
            if name not in self.points or not self.points[name].editable:
                raise SdvizError(f"Cannot steer at '{name}': edits apply to {self._editable()}.")
            if not callable(fn):
                raise SdvizError(f"The edit on '{name}' must be a function (tensor, step) -> tensor; got {type(fn).__name__}.")
        self.guidance = guidance
        self._handles: list = []
        self._lock = None
        self._reset()

    def _editable(self) -> str:
        layers = {}
        for p in self.points.values():
            if p.kind == "layer":
                layers.setdefault(p.encoder.prefix, []).append(p.name)
        blocks = [p.name for p in self.points.values() if p.kind == "block"]
        spans = [f"{names[0]} … {names[-1]}" for names in layers.values()]
        return f"{COND}, the text encoder layers ({', '.join(spans)}) and the denoiser's blocks ({', '.join(blocks)})"

    def _reset(self):
        # per text encoder prefix, one dict per call: the first is the prompt, then the negative prompt
        self.text_calls: dict[str, list[dict]] = {}
        self._masks: dict[str, list[torch.Tensor]] = {}  # real-token mask of each of those calls
        self._cond: dict = {}  # clip.cond, read at the denoiser's first call
        self.steps: list[dict] = []  # one dict of features per finished step
        self.timesteps: list = []  # t_k of each step, as the pipeline passed it to the denoiser
        self._current: dict | None = None  # the step whose denoiser call ran last, until it is closed
        self._cfg: bool | None = None

    # -- entering and leaving ----------------------------------------------------------------------------
    def __enter__(self):
        lock = _pipe_lock(self.pipe)
        lock.acquire()
        self._reset()
        try:
            self._register()
        except BaseException:
            self._remove()
            lock.release()
            raise
        self._lock = lock
        return self

    def __exit__(self, *exc):
        self._remove()
        if self._lock is not None:
            self._lock, lock = None, self._lock
            lock.release()
        return False

    def _remove(self):
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, module, fn, pre=False):
        # prepend: ours run before any other hook on the module, so those (transformers' hidden-state recorders
        # included) see what an edit returned
        if pre:
            self._handles.append(module.register_forward_pre_hook(fn, with_kwargs=True, prepend=True))
        else:
            self._handles.append(module.register_forward_hook(fn, prepend=True))

    def _register(self):
        wanted = set(self.names) | set(self.edits)
        for i, (spec, model, tokenizer) in enumerate(self.family.encoders(self.pipe)):
            points = [p for p in self.points.values() if p.encoder == spec and p.name in wanted]
            if not points and not (i == 0 and COND in wanted):  # clip.cond averages over the first encoder's real tokens
                continue
            self.text_calls[spec.prefix], self._masks[spec.prefix] = [], []
            self._hook(model, self._text_begin(spec.prefix, tokenizer.eos_token_id), pre=True)
            if any(p.kind in ("pooled", "mean") for p in points):
                self._hook(model, self._text_end(spec))
            for p in points:
                if p.kind == "layer":
                    self._hook(p.module, self._text_layer(p))
        self._hook(self.points[COND].module, self._denoiser_call, pre=True)  # opens each step; reads and edits clip.cond
        for p in self.points.values():
            if p.kind == "block" and p.name in wanted:
                self._hook(p.module, self._block(p))

    # -- the hooks -------------------------------------------------------------------------------------------
    def _apply(self, name: str, edit: Edit, x: torch.Tensor, step) -> torch.Tensor:
        out = edit(x, step)
        if out is x:
            return x
        if not torch.is_tensor(out) or out.shape != x.shape:
            got = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
            raise SdvizError(f"The edit on '{name}' must return a tensor shaped like its input {tuple(x.shape)}; got {got}.")
        return out.to(device=x.device, dtype=x.dtype)

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

    def _text_end(self, spec):
        pooled, mean = f"{spec.prefix}.pooled", f"{spec.prefix}.mean"

        def hook(module, args, output):
            call = self.text_calls[spec.prefix][-1]
            if pooled in self.names:
                call[pooled] = getattr(output, spec.pooled).detach().float()
            if mean in self.names:
                call[mean] = _masked_mean(output.last_hidden_state, self._masks[spec.prefix][-1])

        return hook

    def _text_layer(self, point):
        prefix, name, edit, record = point.encoder.prefix, point.name, self.edits.get(point.name), point.name in self.names

        def hook(module, args, output):
            hidden = edited = _first(output)
            if edit is not None and len(self.text_calls[prefix]) == 1:  # the prompt's own call, not the negative prompt's
                edited = self._apply(name, edit, hidden, None)
            if record:
                self.text_calls[prefix][-1][name] = _masked_mean(edited, self._masks[prefix][-1])
            return None if edited is hidden else _with_first(output, edited)

        return hook

    def _prompt_mask(self, rows: int) -> torch.Tensor | None:
        """The prompt's real-token mask (first text encoder, first call), one row per denoiser row
        (num_images_per_prompt repeats each prompt's rows)."""
        calls = next(iter(self._masks.values()), None)
        if not calls:
            return None
        mask = calls[0]
        return mask if mask.shape[0] == rows else mask.repeat_interleave(rows // mask.shape[0], 0)

    def _is_cfg(self, states: torch.Tensor) -> bool:
        if self._cfg is None and self.guidance is not None:
            self._cfg = bool(self.guidance)
        if self._cfg is None:
            decided = getattr(self.pipe, "do_classifier_free_guidance", None)  # diffusers' own choice for this call
            calls = next(iter(self._masks.values()), [])  # else: twice the prompt's batch
            twice = bool(calls) and states is not None and states.shape[0] == 2 * calls[0].shape[0]
            self._cfg = decided if isinstance(decided, bool) else twice
        return self._cfg

    def _denoiser_call(self, module, args, kwargs):
        timestep = args[1] if len(args) > 1 else kwargs.get("timestep")
        if self._current is not None:  # no step-end callback closed the last step: one denoiser call is one step
            self.steps.append(self._current)
        self._current = {}
        # kept as given: int() on a CUDA tensor would stall the GPU queue at every step of a trace()
        self.timesteps.append(timestep.detach() if torch.is_tensor(timestep) else timestep)
        key = "encoder_hidden_states"
        states = kwargs[key] if key in kwargs else args[2] if len(args) > 2 else None
        cfg = self._is_cfg(states)
        if states is None:  # a denoiser without text conditioning: nothing to read or edit here
            return None
        edited = states if COND not in self.edits else self._edit_cond(states, cfg)
        if COND in self.names and COND not in self._cond:  # the conditioning is the same at every step: read it once
            cond = edited.chunk(2)[1] if cfg else edited  # the denoiser batch is [unconditional, conditional]
            mask = self._prompt_mask(cond.shape[0])
            if mask is not None:
                self._cond[COND] = _masked_mean(cond, mask)
        if edited is states:
            return None
        if key in kwargs:
            return args, {**kwargs, key: edited}
        return (*args[:2], edited, *args[3:]), kwargs

    def _edit_cond(self, states: torch.Tensor, cfg: bool) -> torch.Tensor:
        uncond, cond = states.chunk(2) if cfg else (None, states)
        mask = self._prompt_mask(cond.shape[0])
        if mask is None:
            raise SdvizError(f"An edit on {COND} needs the prompt's real tokens: let the pipeline encode the prompt inside "
                             "the capture (do not pass prompt_embeds).")
        # float64: (mean + v) - mean then gives back v exactly in the conditioning's float32
        exact = torch.float32 if states.device.type == "mps" else torch.float64  # MPS has no float64
        mean = _masked_mean(cond, mask, exact)
        new = self._apply(COND, self.edits[COND], mean, len(self.steps))
        if new is mean:
            return states
        delta = (new - mean).float()
        shifted = cond + (mask.to(cond.device)[..., None] * delta[:, None, :]).to(cond.dtype)
        return shifted if uncond is None else torch.cat([uncond, shifted])

    def _block(self, point):
        name, edit, record = point.name, self.edits.get(point.name), point.name in self.names

        def hook(module, args, output):
            hidden = edited = _first(output)
            if edit is not None:
                if self._cfg:  # the denoiser batch is [unconditional, conditional]: edit the conditional half
                    uncond, cond = hidden.chunk(2)
                    new = self._apply(name, edit, cond, len(self.steps))
                    edited = hidden if new is cond else torch.cat([uncond, new])
                else:
                    edited = self._apply(name, edit, hidden, len(self.steps))
            if record:
                pooled = self.family.pool(edited)
                self._current[name] = pooled.chunk(2)[1] if self._cfg else pooled
            return None if edited is hidden else _with_first(output, edited)

        return hook

    # -- the step end, and what was recorded -------------------------------------------------------------------
    def on_step_end(self, pipe, step: int, timestep, callback_kwargs: dict) -> dict:
        """Pass as the pipeline's `callback_on_step_end`: closes step k and records its `latents`."""
        features = self._current if self._current is not None else {}
        if "latents" in self.names:
            features["latents"] = reduce_latents(callback_kwargs["latents"].detach(), self.points["latents"].dim)
        self.steps.append(features)
        self._current = None
        return {}

    def clip_features(self) -> dict[str, torch.Tensor]:
        """The prompt's per-prompt features: the first call of each text encoder, and clip.cond."""
        out = {}
        for calls in self.text_calls.values():
            out |= calls[0] if calls else {}
        out |= self._cond
        return {name: out[name] for name in self.names if name in out}

    def features(self) -> dict[str, torch.Tensor]:
        """Everything recorded, on the CPU: per-prompt names [batch, dim]; per-step names [batch, steps, dim]."""
        out = {k: v.cpu() for k, v in self.clip_features().items()}
        steps = self.steps + ([self._current] if self._current is not None else [])  # a run without the callback
        for name in self.names:
            if is_per_step(name) and steps and name in steps[0]:
                out[name] = torch.stack([s[name] for s in steps], dim=1).cpu()
        return {name: out[name] for name in self.names if name in out}
