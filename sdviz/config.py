"""Defaults and hard caps shared by the library, the CLI and the app."""

DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
TINY_MODEL = "tiny"
DEFAULT_TEMPLATE = "a photo of {a_word}"  # {a_word}: the word with "a"/"an" (sdviz.ratings.fill_template)
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
