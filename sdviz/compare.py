"""Two prompts side by side, and what each CLIP layer would draw (docs/compare.md).

`compare` runs two prompts with the same seed in one batch and measures, for every representation, how far
apart they are: once for CLIP (what the denoiser reads), per denoising step for each UNet block. `lens`
generates one prompt with the conditioning taken from each CLIP layer in turn (that layer's hidden state with
the encoder's final layer norm applied, as the denoiser expects: `run.layer_conditioning`), same seed, and
decodes what each layer hands the UNet. Both run through `run.trace` (one `Capture` per run) and decode with
`Bundle.decode`.
"""

from dataclasses import dataclass

import torch

from .analysis import pearson
from .bundle import Bundle, check_bundle_matches, clip_probe_name
from .capture import COND, is_per_step
from .errors import SdvizError
from .families import SDXL, family_of
from .run import Trace, trace


@dataclass
class CompareResult:
    prompts: tuple[str, str]
    trace: Trace  # both prompts, same seed: row 0 is prompt a, row 1 prompt b; images decoded, previews per step
    distance: dict[str, list[float]]  # representation -> cosine distance a vs b (CLIP names: one value; per step: [S])
    decoded: tuple[dict, dict] | None  # (a, b): representation -> attribute -> value at the last step; None without bundle


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """1 - cos(a, b) over the last axis: 0 = same direction, 1 = unrelated, 2 = opposite."""
    a, b = a.double(), b.double()
    den = a.norm(dim=-1) * b.norm(dim=-1)
    return torch.where(den > 0, 1 - (a * b).sum(-1) / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(den))


def compare(pipe, prompt_a: str, prompt_b: str, *, seed: int = 0, steps: int = 20, guidance: float = 7.5,
            bundle: Bundle | None = None, size: int | None = None) -> CompareResult:
    """Run both prompts with the same seed; their distance in every representation, step by step. `size`: the image
    side in pixels (None: the model's own)."""
    if bundle is not None:
        check_bundle_matches(bundle, pipe)
    tr = trace(pipe, [prompt_a, prompt_b], seeds=seed, steps=steps, guidance=guidance, previews=True, height=size, width=size)
    distance = {}
    for name, x in tr.features.items():
        d = cosine_distance(x[0], x[1])
        distance[name] = [float(v) for v in (d if is_per_step(name) else d.reshape(1))]
    S = len(tr.timesteps)
    decoded = tuple(bundle.decode(tr.at_step(row), S - 1, S) for row in (0, 1)) if bundle is not None else None
    return CompareResult((prompt_a, prompt_b), tr, distance, decoded)


@dataclass
class LensImage:
    layer: int  # CLIP layer i: 0 = token + position embeddings, L = the last (what the pipeline uses)
    image: object  # PIL image
    decoded: dict | None  # representation -> attribute -> value; clip.cond = what this layer hands the denoiser
    features: dict[str, torch.Tensor]


def lens_layers(pipe) -> int:
    """L, the number of CLIP layers: `lens` shows layers 0..L."""
    if family_of(pipe) is SDXL:
        raise SdvizError("The CLIP-layer lens supports Stable Diffusion 1.x and 2.x (one text encoder); SDXL reads two "
                         "encoders' penultimate layers, which this view does not split yet.")
    return int(pipe.text_encoder.config.num_hidden_layers)


def lens(pipe, prompt: str, *, seed: int = 0, steps: int = 20, guidance: float = 7.5, layers=None,
         bundle: Bundle | None = None, size: int | None = None) -> list[LensImage]:
    """Generate `prompt` conditioned on each CLIP layer in `layers` (default: all, 0..L), same seed.

    The last layer reproduces the normal image bit for bit. With a bundle, each image's decoded attributes come
    with it: `clip.cond` (the clip.cond / clip.mean probe applied to what that layer hands the denoiser) and the
    UNet blocks at the last step. `size`: the image side in pixels (None: the model's own).
    """
    L = lens_layers(pipe)
    chosen = list(range(L + 1)) if layers is None else sorted({int(i) for i in layers})
    if not chosen or chosen[0] < 0 or chosen[-1] > L:
        raise SdvizError(f"CLIP layers must lie in 0..{L} (0 = the token embeddings, {L} = the last layer); got {layers!r}.")
    if bundle is not None:
        check_bundle_matches(bundle, pipe)
    out = []
    for i in chosen:
        tr = trace(pipe, [prompt], seeds=seed, steps=steps, guidance=guidance, clip_layer=i, height=size, width=size)
        decoded = None
        if bundle is not None:
            decoded = bundle.decode(tr.at_step(0), len(tr.timesteps) - 1, len(tr.timesteps))
            probe = clip_probe_name(bundle)
            # what this layer hands the denoiser, read by the probe of what the denoiser normally reads
            decoded[COND] = bundle.decode({probe: tr.features[COND][0]})[probe]
        out.append(LensImage(i, tr.images[0], decoded, {k: v[0] for k, v in tr.features.items()}))
    return out


def lens_agreement(images: list[LensImage], bundle: Bundle) -> list[float]:
    """Per layer, Pearson r between what that layer hands the denoiser (decoded) and what the last layer does."""
    last = [images[-1].decoded[COND][a] for a in bundle.attributes]
    return [pearson([im.decoded[COND][a] for a in bundle.attributes], last) for im in images]
