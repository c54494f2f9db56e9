"""Load a Stable Diffusion pipeline: a real checkpoint, or a built-in offline tiny stand-in.

`load_pipeline` returns the diffusers pipeline of the checkpoint's family (`families.py`: SD 1.x,
SD 2.x, SDXL) with an explicit scheduler, its progress bar off, and a `ModelInfo` at `pipe.sdviz`
saying what it is. The safety checker is off locally and on when running on a Hugging Face Space.
In float16 the checkpoint's fp16 files are read (the full ones, cast, where it has none); in float32 the
full ones (the fp16 ones, upcast, where it has only those); weights load only from safetensors.

The full-size stand-ins (`full-sd15`, `full-sd21`, `full-sdxl`: published architectures, random weights) are
built once into the cache folder by `standins.ensure_full_standin` and then loaded from there like any folder.
"""

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import DEFAULT_MODEL, DEFAULT_SCHEDULER, FULL_MODELS, SAFETY_CHECKER_ID, TINY_MODEL, TINY_MODELS
from .errors import SdvizError
from .families import SDXL, SUPPORTED, detect
from .hub import canonical_model_id, offline, offline_by_setting, on_space
from .io import safe_name
from .standins import ensure_full_standin

log = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parent.parent / "assets"
TINY_DIR = ASSETS / "tiny-sd"  # the tokenizer here serves every tiny stand-in
TINY_SEED = 0
TINY_WARNING = "Demo model with random weights: images and probes are not meaningful."
FULL_WARNING = ("Full-size stand-in with random weights (the published {arch} architecture): images and probes are "
                "not meaningful; it is there to run every path at real size.")
RANDOM_WEIGHT_MODELS = (*TINY_MODELS, *FULL_MODELS)  # the built-in stand-ins: labelled random weights everywhere


@dataclass
class ModelInfo:
    model_id: str  # what was asked for, resolved: a hub id, a local folder, or a stand-in's name ("tiny", "full-sd15", ...)
    is_tiny: bool  # one of the tiny stand-ins
    device: str
    dtype: str
    scheduler: str
    warning: str = ""  # shown by the CLI and as a banner in the app
    family: str = "sd1"  # key of the adapter in sdviz.families.FAMILIES
    random_weights: bool = False  # any built-in stand-in (tiny-* or full-*): labelled so wherever it shows
    checkpoint_scheduler: str = ""  # the checkpoint's own scheduler class, replaced by `scheduler` (labels.scheduler_note)

    @property
    def slug(self) -> str:
        """File-system-safe name used for probe bundles (probes/<slug>/)."""
        name = Path(self.model_id).name if os.path.isdir(self.model_id) else self.model_id
        return safe_name("".join(c if c.isalnum() or c in "-_." else "--" for c in name.replace("/", "--")), "model")


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
    """Return a ready diffusers pipeline for `model` (`StableDiffusionPipeline` or `StableDiffusionXLPipeline`).

    model: a Hugging Face id or local folder (real weights), "tiny", "tiny-sd2" or "tiny-sdxl"
    (built-in, offline, random weights), "full-sd15", "full-sd21" or "full-sdxl" (the published
    architectures with random weights, built once into the cache folder) or "auto" (the real default if it can be loaded from the
    cache or the hub, else tiny; on a Space, no fallback: an error).
    """
    model = (model or "auto").strip()
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    if scheduler not in _scheduler_classes():
        raise SdvizError(f"Unknown scheduler '{scheduler}'. Choose one of: {', '.join(_scheduler_classes())}.")

    if model in TINY_MODELS:
        pipe = build_tiny_pipeline(scheduler, model)
        # fp16 buys nothing at this size
        info = ModelInfo(model, True, device, "float32", scheduler, TINY_WARNING, family=TINY_MODELS[model][0], random_weights=True)
    elif model in FULL_MODELS:
        folder = ensure_full_standin(model)
        pipe, family, own = _load_real(str(folder), torch_dtype, scheduler)
        arch = {"full-sd15": "SD 1.5", "full-sd21": "SD 2.1", "full-sdxl": "SDXL base"}[model]
        info = ModelInfo(model, False, device, str(torch_dtype).removeprefix("torch."), scheduler,
                         FULL_WARNING.format(arch=arch), family=family.key, random_weights=True, checkpoint_scheduler=own)
    elif model == "auto":
        try:
            return load_pipeline(DEFAULT_MODEL, device, dtype, scheduler)
        except SdvizError as err:
            if on_space():  # a public Space must never quietly serve a random-weight model
                raise SdvizError(f"This Space could not load {DEFAULT_MODEL} and never falls back to the tiny model: {err}") from None
            log.warning("Could not load %s (%s). FALLING BACK TO THE BUILT-IN TINY MODEL. %s", DEFAULT_MODEL, err, TINY_WARNING)
            pipe = load_pipeline(TINY_MODEL, device, dtype, scheduler)
            pipe.sdviz.warning = f"{TINY_WARNING} ({DEFAULT_MODEL} could not be loaded: {err})"
            return pipe
    else:
        pipe, family, own = _load_real(model, torch_dtype, scheduler)
        # the canonical id: the same folder however it was written is one model for bundles, caches and recorded runs
        info = ModelInfo(canonical_model_id(model), False, device, str(torch_dtype).removeprefix("torch."), scheduler,
                         family=family.key, checkpoint_scheduler=own)

    pipe = pipe.to(device)  # dtype was set at load time (from_pretrained's dtype; tiny is float32)
    pipe.set_progress_bar_config(disable=True)
    pipe.sdviz = info
    return pipe


def _read_checkpoint_json(model: str, filename: str) -> dict:
    """A JSON file of a local folder or a hub checkpoint (through the HF cache; offline, from the cache only)."""
    if os.path.isdir(model):
        return json.loads((Path(model) / filename).read_text())
    import huggingface_hub

    return json.loads(Path(huggingface_hub.hf_hub_download(model, filename, local_files_only=offline())).read_text())


def _load_error(model: str, err: Exception) -> SdvizError:
    if os.path.isdir(model):
        return SdvizError(
            f"Could not load the Stable Diffusion folder '{model}': {type(err).__name__}: {str(err)[:300]}. "
            "It must hold model_index.json and the unet/, vae/, text_encoder/, tokenizer/ and scheduler/ folders "
            "with safetensors weights (sdviz never loads pickled .bin/.ckpt weights) "
            "(re-download it with `hf download <id> --local-dir <folder>`), or use --model tiny."
        )
    return SdvizError(
        f"Could not load '{model}' from the Hugging Face cache or hub ({type(err).__name__}: {str(err)[:200]}). "
        + ("HF_HUB_OFFLINE is set, so only the local cache was searched. " if offline_by_setting() else
           "The Hugging Face Hub cannot be reached, so only the local cache was searched. " if offline() else "")
        + f"Check the model id (it needs safetensors weights), pre-download it with `hf download {model}`, "
        "or use --model tiny."
    )


def _load_real(model: str, torch_dtype: torch.dtype, scheduler: str):
    """(pipeline, family, the checkpoint's own scheduler class): the family is read from model_index.json before any
    weights are loaded; the scheduler is replaced by `scheduler` (DDIM by default, see labels.scheduler_note)."""
    from diffusers import AutoPipelineForText2Image

    local = os.path.isdir(model)
    if not local and (os.sep in model.strip("/").split("/", 1)[-1] or model.startswith((".", "/"))):
        raise SdvizError(f"'{model}' is neither a local folder nor a Hugging Face model id. Check the path, or use --model tiny.")
    try:
        index = _read_checkpoint_json(model, "model_index.json")
        text_config = _read_checkpoint_json(model, "text_encoder/config.json") if index.get("text_encoder") else {}
    except Exception as err:  # missing files, HTTP errors, offline cache misses, bad JSON
        raise _load_error(model, err) from None
    family = detect(index.get("_class_name", ""), text_config)  # refuses SD3, Flux and anything else
    kwargs = _safety_kwargs(family, index, torch_dtype)
    # Half precision loads the checkpoint's fp16 files where it has them (half the download, what a Space
    # preloads); a checkpoint without them loads its full-precision files, cast. Weights come only from
    # safetensors: a pickled checkpoint could run code.
    # Full precision loads the full files, or the fp16 ones upcast where a checkpoint ships only those (as the
    # full-size stand-ins do). A missing variant fails before any weights are read.
    variants = ["fp16", None] if torch_dtype == torch.float16 else [None, "fp16"]
    first_error = None
    for variant in variants:
        try:
            # AutoPipelineForText2Image maps the checkpoint's class to its text-to-image pipeline
            pipe = AutoPipelineForText2Image.from_pretrained(model, dtype=torch_dtype, variant=variant,
                                                             use_safetensors=True, local_files_only=offline(), **kwargs)
            break
        except Exception as err:  # diffusers raises OSError, ValueError, HTTP and safetensors errors here
            first_error = first_error or err
            if variant == variants[-1]:  # say why the preferred files failed, not the fallback's "no such file"
                raise _load_error(model, err if torch_dtype == torch.float16 else first_error) from None
    if type(pipe).__name__ not in family.pipeline_classes:
        raise SdvizError(f"sdviz supports {SUPPORTED} checkpoints; '{model}' loaded as a {type(pipe).__name__}, "
                         "so pick a text-to-image checkpoint of those families.")
    own = type(pipe.scheduler).__name__
    pipe.scheduler = _scheduler_classes()[scheduler].from_config(pipe.scheduler.config)
    return pipe, family, own


def _safety_kwargs(family, index: dict, torch_dtype) -> dict:
    """from_pretrained arguments for the safety checker: off locally; on a Space, always on.

    On a Space an SD 1.x/2.x checkpoint's own checker is used when it has one (SD 1.5 does);
    otherwise the standalone checker SD 1.x ships (SAFETY_CHECKER_ID) is loaded. SDXL pipelines
    have no checker slot in diffusers, so a Space refuses them rather than serve unchecked images.
    """
    if not on_space():
        return {"safety_checker": None, "requires_safety_checker": False} if family is not SDXL else {}
    if family is SDXL:
        raise SdvizError("On a Hugging Face Space sdviz serves only models whose images it can safety-check, and diffusers "
                         "has no safety checker for SDXL: use a Stable Diffusion 1.x or 2.x checkpoint on the Space.")
    if (index.get("safety_checker") or [None])[0] is not None:
        return {}  # the checkpoint's own checker and feature extractor load as listed in model_index.json
    try:
        from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
        from transformers import CLIPImageProcessor

        checker = StableDiffusionSafetyChecker.from_pretrained(SAFETY_CHECKER_ID, dtype=torch_dtype)
        extractor = CLIPImageProcessor.from_pretrained(SAFETY_CHECKER_ID)
    except Exception as err:
        raise SdvizError(f"On a Space the safety checker must be on, and {SAFETY_CHECKER_ID} could not be loaded "
                         f"({type(err).__name__}: {' '.join(str(err).split())[:200]}): add it to the Space's preload_from_hub.") from None
    return {"safety_checker": checker, "feature_extractor": extractor, "requires_safety_checker": True}


def build_tiny_pipeline(scheduler: str = DEFAULT_SCHEDULER, name: str = TINY_MODEL):
    """Assemble a tiny stand-in (`tiny`, `tiny-sd2`, `tiny-sdxl`) from its configs in assets/ (no network).

    Each component is initialised right after `torch.manual_seed(TINY_SEED + k)`, so every
    machine builds bit-identical weights. All share the tokenizer in assets/tiny-sd; SD 2.x and
    SDXL's second tokenizer pad with "!" like their OpenCLIP tokenizers.
    """
    from diffusers import AutoencoderKL, StableDiffusionPipeline, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    family, folder = TINY_MODELS[name]
    root = ASSETS / folder
    parts = ("unet", "vae", "text_encoder", "scheduler") + (("text_encoder_2",) if family == "sdxl" else ())
    try:
        cfg = {part: json.loads((root / f"{part}.json").read_text()) for part in parts}
        tokenizer = CLIPTokenizer.from_pretrained(TINY_DIR / "tokenizer")
        open_clip_tokenizer = CLIPTokenizer.from_pretrained(TINY_DIR / "tokenizer", pad_token="!")
    except (OSError, ValueError) as err:
        raise SdvizError(f"The built-in tiny model's files in {root} are missing or damaged ({err}). Reinstall sdviz.") from None

    def text_config(part, tok):
        return CLIPTextConfig(**cfg[part], vocab_size=len(tok), bos_token_id=tok.bos_token_id,
                              eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)

    if family == "sd2":
        tokenizer = open_clip_tokenizer
    torch.manual_seed(TINY_SEED)
    text_encoder = CLIPTextModel(text_config("text_encoder", tokenizer)).eval()
    torch.manual_seed(TINY_SEED + 1)
    unet = UNet2DConditionModel(**cfg["unet"]).eval()
    torch.manual_seed(TINY_SEED + 2)
    vae = AutoencoderKL(**cfg["vae"]).eval()
    sched = _scheduler_classes()[scheduler].from_config(cfg["scheduler"])
    if family == "sdxl":
        torch.manual_seed(TINY_SEED + 3)
        text_encoder_2 = CLIPTextModelWithProjection(text_config("text_encoder_2", open_clip_tokenizer)).eval()
        return StableDiffusionXLPipeline(
            vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
            tokenizer_2=open_clip_tokenizer, unet=unet, scheduler=sched, force_zeros_for_empty_prompt=True,
            add_watermarker=False,
        )
    return StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=sched,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
