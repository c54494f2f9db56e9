"""Load a Stable Diffusion pipeline: a real checkpoint, or the built-in offline `tiny` model.

`load_pipeline` always returns a diffusers `StableDiffusionPipeline` with an explicit scheduler,
no safety checker, its progress bar off, and a `ModelInfo` at `pipe.sdviz` saying what it is.
"""

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import DEFAULT_MODEL, DEFAULT_SCHEDULER, TINY_MODEL
from .errors import SdvizError

log = logging.getLogger(__name__)

TINY_DIR = Path(__file__).resolve().parent.parent / "assets" / "tiny-sd"
TINY_SEED = 0
TINY_WARNING = "Demo model with random weights: images and probes are not meaningful."


@dataclass
class ModelInfo:
    model_id: str  # what was asked for, resolved: a hub id, a local folder, or "tiny"
    is_tiny: bool
    device: str
    dtype: str
    scheduler: str
    warning: str = ""  # shown by the CLI and as a banner in the app

    @property
    def slug(self) -> str:
        """File-system-safe name used for probe bundles (probes/<slug>/)."""
        name = Path(self.model_id).name if os.path.isdir(self.model_id) else self.model_id
        return "".join(c if c.isalnum() or c in "-_." else "--" for c in name.replace("/", "--"))


def _scheduler_classes():
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler

    # Each takes exactly `steps` denoising steps (PNDM, the SD 1.5 default, repeats one).
    return {"ddim": DDIMScheduler, "euler": EulerDiscreteScheduler, "dpm++": DPMSolverMultistepScheduler}


def resolve_device(device: str | None) -> str:
    if device in (None, "auto"):
        if torch.cuda.is_available():
            return "cuda"
        if torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SdvizError(f"Device '{device}' was requested but CUDA is not available here. Use --device cpu (or leave it out).")
    if device == "mps" and not torch.backends.mps.is_available():
        raise SdvizError("Device 'mps' was requested but Apple MPS is not available here. Use --device cpu.")
    if device.split(":")[0] not in ("cpu", "cuda", "mps"):
        raise SdvizError(f"Unknown device '{device}'. Use cpu, cuda, cuda:N or mps.")
    return device


def resolve_dtype(dtype, device: str) -> torch.dtype:
    if dtype is None:
        return torch.float16 if device.startswith("cuda") else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {"float16": torch.float16, "fp16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32, "fp32": torch.float32}
    if dtype not in table:
        raise SdvizError(f"Unknown dtype '{dtype}'. Use float32, float16 or bfloat16.")
    return table[dtype]


def load_pipeline(model: str = "auto", device: str | None = None, dtype=None, scheduler: str = DEFAULT_SCHEDULER):
    """Return a ready `StableDiffusionPipeline` for `model`.

    model: a Hugging Face id or local folder (real weights), "tiny" (built-in, offline, random
    weights) or "auto" (the real default if it can be loaded from the cache or the hub, else tiny).
    """
    model = (model or "auto").strip()
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    if scheduler not in _scheduler_classes():
        raise SdvizError(f"Unknown scheduler '{scheduler}'. Choose one of: {', '.join(_scheduler_classes())}.")

    if model == TINY_MODEL:
        pipe = build_tiny_pipeline(scheduler)
        info = ModelInfo(TINY_MODEL, True, device, "float32", scheduler, TINY_WARNING)  # fp16 buys nothing at this size
    elif model == "auto":
        try:
            return load_pipeline(DEFAULT_MODEL, device, dtype, scheduler)
        except SdvizError as err:
            log.warning("Could not load %s (%s). FALLING BACK TO THE BUILT-IN TINY MODEL. %s", DEFAULT_MODEL, err, TINY_WARNING)
            pipe = load_pipeline(TINY_MODEL, device, dtype, scheduler)
            pipe.sdviz.warning = f"{TINY_WARNING} ({DEFAULT_MODEL} could not be loaded: {err})"
            return pipe
    else:
        pipe = _load_real(model, torch_dtype, scheduler)
        info = ModelInfo(model, False, device, str(torch_dtype).removeprefix("torch."), scheduler)

    pipe = pipe.to(device)  # dtype was set at load time (from_pretrained's dtype; tiny is float32)
    pipe.set_progress_bar_config(disable=True)
    pipe.sdviz = info
    return pipe


def _load_real(model: str, torch_dtype: torch.dtype, scheduler: str):
    from diffusers import StableDiffusionPipeline

    local = os.path.isdir(model)
    if not local and (os.sep in model.strip("/").split("/", 1)[-1] or model.startswith((".", "/"))):
        raise SdvizError(f"'{model}' is neither a local folder nor a Hugging Face model id. Check the path, or use --model tiny.")
    try:
        pipe = StableDiffusionPipeline.from_pretrained(
            model, dtype=torch_dtype, safety_checker=None, requires_safety_checker=False, use_safetensors=None
        )
    except Exception as err:  # diffusers raises OSError, ValueError, HTTP and safetensors errors here
        if local:
            raise SdvizError(
                f"Could not load the Stable Diffusion folder '{model}': {type(err).__name__}: {str(err)[:300]}. "
                "It must hold model_index.json and the unet/, vae/, text_encoder/, tokenizer/ and scheduler/ folders "
                "(re-download it with `huggingface-cli download <id> --local-dir <folder>`), or use --model tiny."
            ) from None
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        raise SdvizError(
            f"Could not load '{model}' from the Hugging Face cache or hub ({type(err).__name__}: {str(err)[:200]}). "
            + ("HF_HUB_OFFLINE is set, so only the local cache was searched. " if offline else "")
            + f"Check the model id, pre-download it with `huggingface-cli download {model}`, or use --model tiny."
        ) from None
    pipe.scheduler = _scheduler_classes()[scheduler].from_config(pipe.scheduler.config)
    return pipe


def build_tiny_pipeline(scheduler: str = DEFAULT_SCHEDULER):
    """Assemble the tiny SD pipeline from the configs and tokenizer in assets/tiny-sd (no network).

    Each component is initialised right after `torch.manual_seed(TINY_SEED + k)`, so every
    machine builds bit-identical weights.
    """
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    try:
        cfg = {name: json.loads((TINY_DIR / f"{name}.json").read_text()) for name in ("unet", "vae", "text_encoder", "scheduler")}
        tokenizer = CLIPTokenizer.from_pretrained(TINY_DIR / "tokenizer")
    except (OSError, ValueError) as err:
        raise SdvizError(f"The built-in tiny model's files in {TINY_DIR} are missing or damaged ({err}). Reinstall sdviz.") from None

    text_cfg = CLIPTextConfig(
        **cfg["text_encoder"], vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(TINY_SEED)
    text_encoder = CLIPTextModel(text_cfg).eval()
    torch.manual_seed(TINY_SEED + 1)
    unet = UNet2DConditionModel(**cfg["unet"]).eval()
    torch.manual_seed(TINY_SEED + 2)
    vae = AutoencoderKL(**cfg["vae"]).eval()
    sched = _scheduler_classes()[scheduler].from_config(cfg["scheduler"])
    return StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=sched,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
