"""One small adapter per model family: what sdviz must know about SD 1.x, SD 2.x and SDXL.

Each `Family` is data, not a framework: which pipeline class loads it, which modules are its
text encoders (and under which name prefix they are recorded), which layer the denoiser reads,
the denoiser's blocks and how a block's output is pooled, whether a step carries a CFG batch,
the latent -> RGB preview factors and the default image size. `Capture`, `representation_names`,
`stream`, `trace`, the build and the app all go through `family_of(pipe)`.

The names and what each records are documented for users in docs/families.md.
"""

from dataclasses import dataclass

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
    # (SD3/Flux, [B, seq, dim]) would say (1,) and list its blocks in `blocks` below.
    pool_dims: tuple[int, ...] = (2, 3)
    latent_rgb: tuple = SD_LATENT_RGB
    default_size: int = 512  # of the real checkpoints; a loaded pipe says its own in `default_size(pipe)`

    def blocks(self, pipe) -> list[tuple[str, object]]:
        """(name, module) of every denoiser block sdviz records, in a stable order."""
        unet = getattr(pipe, self.denoiser)
        return (
            [(f"{self.denoiser}.down{i}", b) for i, b in enumerate(unet.down_blocks)]
            + [(f"{self.denoiser}.mid", unet.mid_block)]
            + [(f"{self.denoiser}.up{i}", b) for i, b in enumerate(unet.up_blocks)]
        )

    def block_dims(self, pipe) -> dict[str, int]:
        """Width of each pooled block output, read from the denoiser's config."""
        channels = list(getattr(pipe, self.denoiser).config.block_out_channels)
        dims = {f"{self.denoiser}.down{i}": c for i, c in enumerate(channels)} | {f"{self.denoiser}.mid": channels[-1]}
        return dims | {f"{self.denoiser}.up{i}": c for i, c in enumerate(reversed(channels))}

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

    def cond_dim(self, pipe) -> int:
        """Width of the conditioning tensor the denoiser's cross-attention receives."""
        return int(getattr(pipe, self.denoiser).config.cross_attention_dim)


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
