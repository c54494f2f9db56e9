"""One small adapter per model family: what sdviz must know about SD 1.x, SD 2.x and SDXL, and the one table of
hook points.

Each `Family` is data, not a framework: which pipeline class loads it, which modules are its
text encoders (and under which name prefix they are recorded), which layer the denoiser reads,
how a block's output is pooled, whether a step carries a CFG batch, the latent -> RGB preview
factors and the default image size. `Family.hook_points(pipe)` is the one table of every canonical
name (`clip.pooled` ... `latents`) with the module sdviz hooks, the hook's kind and the width of what
it records: `representation_names`, `representation_dims`, `Capture`, the bundle checks and steering
all read it, and nothing else lists names.

The names and what each records are documented for users in docs/families.md; reading and editing
them, kind by kind, in docs/capture.md.
"""

import re
from dataclasses import dataclass

from .config import LATENT_MAX_DIM, LATENT_PROJECTED_DIM
from .errors import SdvizError

# Linear latent -> RGB maps (4 latent channels x RGB), cheap enough for every step; the real VAE
# decode happens once, at the end. SD 1.x/2.x share one VAE latent space, SDXL has its own.
# Both from ComfyUI's comfy/latent_formats.py (SD15 and SDXL `latent_rgb_factors`).
SD_LATENT_RGB = ((0.298, 0.207, 0.208), (0.187, 0.286, 0.173), (-0.158, 0.189, 0.264), (-0.184, -0.271, -0.473))
SDXL_LATENT_RGB = ((0.3920, 0.4054, 0.4549), (-0.2634, -0.0196, 0.0653), (0.0568, 0.1687, -0.0755), (-0.3112, -0.2359, -0.2076))


@dataclass(frozen=True)
class TextEncoder:
    prefix: str  # name prefix of its representations: "clip" -> clip.pooled, clip.mean, clip.layer{i}
    module: str  # the pipeline attribute holding the model
    tokenizer: str  # the pipeline attribute holding its tokenizer
    pooled: str  # output field recorded as <prefix>.pooled: "pooler_output", or "text_embeds" (with projection)


COND = "clip.cond"  # the conditioning tensor the denoiser's cross-attention receives
# Hook kinds (docs/capture.md). Per prompt: "pooled" and "mean" (a text encoder's output), "layer" (its embeddings
# or one of its layers), "cond" (what the denoiser reads, at its pre-hook). Per step: "block" (a denoiser block's
# output) and "latents" (the scheduler's latents, read at the step end: no module).
PER_STEP_KINDS = ("block", "latents")
EDITABLE_KINDS = ("layer", "cond", "block")


@dataclass(frozen=True)
class HookPoint:
    """One canonical name: the module sdviz hooks for it, how, and the width of what it records."""

    name: str
    kind: str
    module: object  # the text encoder (pooled, mean), its embeddings or layer i-1 (layer i), the denoiser (cond), a block
    dim: int
    encoder: TextEncoder | None = None  # the text encoder a per-prompt point belongs to

    @property
    def per_step(self) -> bool:
        return self.kind in PER_STEP_KINDS

    @property
    def editable(self) -> bool:
        return self.kind in EDITABLE_KINDS


@dataclass(frozen=True)
class Family:
    key: str  # "sd1", "sd2", "sdxl": stored in ModelInfo.family
    title: str  # how a person names it
    pipeline_classes: tuple[str, ...]  # diffusers classes (model_index.json `_class_name`) that load it
    text_encoders: tuple[TextEncoder, ...]
    # What the denoiser's cross-attention reads (documentation; `clip.cond` records the tensor itself):
    cond_layer: str
    extra_conditioning: tuple[str, ...] = ()  # added_cond_kwargs the denoiser receives besides the text states
    denoiser: str = "unet"  # pipeline attribute; also the name prefix of its blocks (unet.down0, ...)
    # Axes a block output is averaged over: UNet [B, C, H, W] -> (2, 3). A transformer denoiser
    # (SD3/Flux, [B, seq, dim]) would say (1,) and list its blocks in `hook_points` below.
    pool_dims: tuple[int, ...] = (2, 3)
    latent_rgb: tuple = SD_LATENT_RGB
    default_size: int = 512  # of the real checkpoints; a loaded pipe says its own in `default_size(pipe)`

    def hook_points(self, pipe) -> list[HookPoint]:
        """Every canonical name of `pipe`, in a stable order, with its module, hook kind and width (from the configs,
        at the model's default resolution): each text encoder's pooled, mean and layer{i}; clip.cond; the denoiser's
        blocks (down, mid, up); latents."""
        points = []
        for spec, model, _ in self.encoders(pipe):
            width = model.config.hidden_size
            pooled = model.config.projection_dim if spec.pooled == "text_embeds" else width  # the projected pooled output
            text_model = getattr(model, "text_model", model)  # CLIPTextModelWithProjection wraps a CLIPTextModel
            layers = [text_model.embeddings, *text_model.encoder.layers]  # layer 0 = token + position embeddings
            points += [HookPoint(f"{spec.prefix}.pooled", "pooled", model, pooled, spec),
                       HookPoint(f"{spec.prefix}.mean", "mean", model, width, spec)]
            points += [HookPoint(f"{spec.prefix}.layer{i}", "layer", m, width, spec) for i, m in enumerate(layers)]
        denoiser = getattr(pipe, self.denoiser)
        points.append(HookPoint(COND, "cond", denoiser, int(denoiser.config.cross_attention_dim)))
        channels = list(denoiser.config.block_out_channels)
        blocks = ([(f"down{i}", b, c) for i, (b, c) in enumerate(zip(denoiser.down_blocks, channels))]
                  + [("mid", denoiser.mid_block, channels[-1])]
                  + [(f"up{i}", b, c) for i, (b, c) in enumerate(zip(denoiser.up_blocks, reversed(channels)))])
        points += [HookPoint(f"{self.denoiser}.{name}", "block", block, width) for name, block, width in blocks]
        latent = denoiser.config.in_channels * denoiser.config.sample_size**2
        return points + [HookPoint("latents", "latents", None, latent if latent <= LATENT_MAX_DIM else LATENT_PROJECTED_DIM)]

    def pool(self, output):
        """A block's output -> [B, width]: the mean over space (UNet) or over the sequence (transformer)."""
        hidden = output[0] if isinstance(output, (tuple, list)) else output  # down blocks return (hidden, residuals)
        return hidden.detach().float().mean(dim=self.pool_dims)

    def encoders(self, pipe) -> list[tuple[TextEncoder, object, object]]:
        """(spec, model, tokenizer) of each text encoder present in `pipe`."""
        return [(t, getattr(pipe, t.module), getattr(pipe, t.tokenizer)) for t in self.text_encoders
                if getattr(pipe, t.module, None) is not None]

    def has_cfg_batch(self, pipe, guidance: float) -> bool:
        """True when each denoiser call holds [unconditional, conditional] halves.

        As the diffusers pipelines decide it: guidance above 1, unless the denoiser takes the
        guidance scale as an embedding (`time_cond_proj_dim`: LCM, Turbo-style distilled models).
        """
        return guidance > 1.0 and getattr(pipe, self.denoiser).config.get("time_cond_proj_dim") is None


_CLIP = TextEncoder("clip", "text_encoder", "tokenizer", "pooler_output")

SD1 = Family(
    key="sd1", title="Stable Diffusion 1.x", pipeline_classes=("StableDiffusionPipeline",), text_encoders=(_CLIP,),
    cond_layer="text_encoder last_hidden_state (final layer norm applied)", default_size=512,
)
SD2 = Family(
    key="sd2", title="Stable Diffusion 2.x", pipeline_classes=("StableDiffusionPipeline",), text_encoders=(_CLIP,),
    # diffusers' StableDiffusionPipeline reads last_hidden_state for SD 2.x too: the converted OpenCLIP-H
    # encoder already ends at the penultimate OpenCLIP layer (23 of 24 layers kept), then the final norm.
    cond_layer="text_encoder last_hidden_state (OpenCLIP-H truncated to 23 layers, final layer norm applied)",
    default_size=768,
)
SDXL = Family(
    key="sdxl", title="Stable Diffusion XL",
    pipeline_classes=("StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline"),
    text_encoders=(_CLIP, TextEncoder("clip2", "text_encoder_2", "tokenizer_2", "text_embeds")),
    cond_layer="hidden_states[-2] (penultimate layer, no final norm) of text_encoder and text_encoder_2, concatenated",
    extra_conditioning=("text_embeds: text_encoder_2's projected pooled output", "time_ids: original size, crop, target size"),
    latent_rgb=SDXL_LATENT_RGB, default_size=1024,
)
FAMILIES = {f.key: f for f in (SD1, SD2, SDXL)}
SUPPORTED = "Stable Diffusion 1.x, 2.x and XL"


def detect(class_name: str, text_config: dict | None = None) -> Family:
    """The family of a checkpoint from model_index.json's `_class_name` and its text encoder's config.

    SD 1.x and 2.x share a pipeline class; SD 2.x is told apart by its OpenCLIP text encoder
    (`hidden_act` "gelu"; CLIP ViT-L of SD 1.x uses "quick_gelu").
    """
    if class_name in SDXL.pipeline_classes:
        return SDXL
    if class_name in SD1.pipeline_classes:
        return SD2 if (text_config or {}).get("hidden_act") == "gelu" else SD1
    raise SdvizError(f"sdviz supports {SUPPORTED} checkpoints; this one is a {class_name or 'unknown pipeline'}, "
                     "so pick a checkpoint of those families (or try them offline with --model tiny, tiny-sd2 or tiny-sdxl).")


def family_of(pipe) -> Family:
    """The adapter of a loaded pipeline: from `pipe.sdviz.family` when set, else from its modules."""
    info = getattr(pipe, "sdviz", None)
    if info is not None and getattr(info, "family", "") in FAMILIES:
        return FAMILIES[info.family]
    text_config = pipe.text_encoder.config.to_dict() if getattr(pipe, "text_encoder", None) is not None else {}
    return detect(type(pipe).__name__, text_config)


def default_size(pipe) -> int:
    """The pipeline's default image side in pixels (what diffusers uses when height/width are None)."""
    return int(pipe.unet.config.sample_size * pipe.vae_scale_factor)


# -- names ------------------------------------------------------------------------------------------------------
def hook_points(pipe) -> list[HookPoint]:
    """The hook table of a loaded pipeline (`Family.hook_points`)."""
    return family_of(pipe).hook_points(pipe)


def representation_names(pipe) -> list[str]:
    """Every name a full capture of `pipe` records, in a stable order."""
    return [p.name for p in hook_points(pipe)]


def representation_dims(pipe) -> dict[str, int]:
    """Feature size of every name at the model's default resolution, read from the configs."""
    return {p.name: p.dim for p in hook_points(pipe)}


TEXT_PREFIXES = tuple(sorted({f"{t.prefix}." for f in FAMILIES.values() for t in f.text_encoders}))  # ("clip.", "clip2.")


def is_per_step(name: str) -> bool:
    """True for names recorded at every denoising step; False for the text encoders' (and clip.cond), once per prompt."""
    return not name.startswith(TEXT_PREFIXES)


# Any name some family's table can hold, for checking names in files without a model (recorded runs).
NAME_PATTERN = re.compile(
    rf"({'|'.join(p[:-1] for p in TEXT_PREFIXES)})\.(pooled|mean|layer\d{{1,3}})|{re.escape(COND)}"
    rf"|({'|'.join(sorted({f.denoiser for f in FAMILIES.values()}))})\.(down\d{{1,2}}|mid|up\d{{1,2}})|latents")
