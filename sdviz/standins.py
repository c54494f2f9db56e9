"""The full-size stand-ins: SD 1.5, SD 2.1 and SDXL base architectures with seeded random weights, built offline.

`full-sd15`, `full-sd21` and `full-sdxl` are the published architectures (configs hand-written in
assets/<name>/ from the published model repositories) with random weights, so every path of sdviz can run at
the size users run it without a download. Each is built once, the way the tiny stand-ins are (each component
right after `torch.manual_seed(FULL_SEED + k)`), saved with `save_pretrained` (safetensors, the fp16 variant
only: half the disk) into <cache>/standins/<name>, and then loaded like any local checkpoint by
`models.load_pipeline(folder)`, so `from_pretrained`, family detection, variants and safetensors-only loading
all run at real size.

The tokenizer is CLIP's real BPE vocabulary (49,408 tokens), built from `bpe_simple_vocab_16e6.txt.gz`, the
file the package open-clip-torch ships; the package is read as files, never imported (its dependencies are not
needed). SD 1.x and SDXL's first tokenizer pad with <|endoftext|>; SD 2.x's and SDXL's second pad with "!" (id 0),
as OpenCLIP does.
"""

import gzip
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch

from .config import FULL_MODELS
from .errors import SdvizError
from .io import cache_dir

log = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parent.parent / "assets"
FULL_SEED = 0
FULL_VERSION = 1  # bump when a config or the build changes: the cached folder's name carries it
OPEN_CLIP = "open-clip-torch==3.3.0"
BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
N_MERGES = 49152 - 256 - 2  # CLIP keeps the first 48,894 merges: 512 byte tokens + merges + 2 specials = 49,408
SPECIALS = ("<|startoftext|>", "<|endoftext|>")
NEED_OPEN_CLIP = (f"The full-size stand-ins use CLIP's real vocabulary, which the package open-clip-torch ships: "
                  f"install it with `pip install --no-deps {OPEN_CLIP}` (--no-deps: only its vocabulary file is read).")


def bpe_file() -> Path:
    """Path of open-clip-torch's CLIP BPE file, found without importing the package (its imports need timm etc.)."""
    spec = importlib.util.find_spec("open_clip")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        if (Path(folder) / BPE_FILE).is_file():
            return Path(folder) / BPE_FILE
    raise SdvizError(NEED_OPEN_CLIP)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character table (the order CLIP's vocabulary starts with)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


def write_clip_vocab(folder: Path) -> None:
    """Write CLIP's vocab.json, merges.txt and tokenizer_config.json into `folder`, laid out as CLIP's own tokenizer builds them."""
    with gzip.open(bpe_file(), "rt", encoding="utf-8") as f:
        merges = f.read().split("\n")[1 : N_MERGES + 1]  # line 0 is a header
    byte_chars = list(bytes_to_unicode().values())
    tokens = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m.split(" ")) for m in merges] + list(SPECIALS)
    vocab = {token: i for i, token in enumerate(tokens)}
    if len(vocab) != 49408:
        raise SdvizError(f"{bpe_file()} does not hold CLIP's vocabulary ({len(vocab)} tokens, not 49,408): reinstall {OPEN_CLIP}.")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def clip_tokenizer(pad_token: str = "<|endoftext|>"):
    """CLIP's real tokenizer (49,408 tokens, 77 positions); pad_token "!" gives OpenCLIP's padding (SD 2.x, SDXL's second)."""
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        write_clip_vocab(Path(tmp))
        return CLIPTokenizer.from_pretrained(tmp, pad_token=pad_token)


def standin_folder(name: str) -> Path:
    return cache_dir() / "standins" / f"{name}-v{FULL_VERSION}"


def ensure_full_standin(name: str) -> Path:
    """The folder of the full-size stand-in `name`, built (about a minute, ~2 GB for SD 1.5) the first time."""
    folder = standin_folder(name)
    if (folder / "model_index.json").is_file():
        return folder
    bpe_file()  # the one clear sentence about open-clip-torch before any work
    folder.parent.mkdir(parents=True, exist_ok=True)
    log.warning("Building the full-size stand-in %s (random weights) into %s, once.", name, folder)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    try:
        build_full_pipeline(name).save_pretrained(tmp, safe_serialization=True, variant="fp16")
        try:
            os.rename(tmp, folder)  # whole or absent; another process that finished first wins
        except OSError:
            if not (folder / "model_index.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def read_configs(name: str) -> dict:
    family, asset = FULL_MODELS[name]
    root = ASSETS / asset
    try:
        return {p.stem: json.loads(p.read_text()) for p in sorted(root.glob("*.json"))}
    except (OSError, ValueError) as err:
        raise SdvizError(f"The full-size stand-in's configs in {root} are damaged ({err}). Reinstall sdviz.") from None


def build_full_pipeline(name: str, device: str = "cpu"):
    """Assemble the full-size stand-in `name` with seeded random weights in float16 (device "meta": no memory, no weights).

    Weights are drawn in float16 directly (default dtype) so that SDXL's 2.6 B-parameter UNet never needs
    its 10 GB float32 copy; every machine draws the same weights.
    """
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        EulerDiscreteScheduler,
        PNDMScheduler,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    family, _ = FULL_MODELS[name]
    cfg = read_configs(name)
    index = cfg["model_index"]
    tokenizer = clip_tokenizer("!" if family == "sd2" else "<|endoftext|>")
    schedulers = {"PNDMScheduler": PNDMScheduler, "DDIMScheduler": DDIMScheduler, "EulerDiscreteScheduler": EulerDiscreteScheduler}
    scheduler = schedulers[index["scheduler"][1]].from_config(cfg["scheduler"])

    def seeded(k, make):
        torch.manual_seed(FULL_SEED + k)
        return make().eval()

    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float16)
    try:
        with torch.device(device):
            text_encoder = seeded(0, lambda: CLIPTextModel(CLIPTextConfig(**cfg["text_encoder"])))
            unet = seeded(1, lambda: UNet2DConditionModel(**cfg["unet"]))
            vae = seeded(2, lambda: AutoencoderKL(**cfg["vae"]))
            if family == "sdxl":
                text_encoder_2 = seeded(3, lambda: CLIPTextModelWithProjection(CLIPTextConfig(**cfg["text_encoder_2"])))
    finally:
        torch.set_default_dtype(default)
    if family == "sdxl":
        return StableDiffusionXLPipeline(
            vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
            tokenizer_2=clip_tokenizer("!"), unet=unet, scheduler=scheduler,
            force_zeros_for_empty_prompt=index["force_zeros_for_empty_prompt"], add_watermarker=False,
        )
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
