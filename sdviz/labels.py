"""Plain-language names for representations, shown everywhere a person reads them.

The identifier (`unet.mid`) stays in small print or hover; the label says what it is.
"""

import re

_FIXED = {
    "clip.pooled": "CLIP text encoder, summary token",
    "clip.mean": "CLIP text encoder, all words",
    "clip.cond": "what the UNet reads from CLIP",
    "latents": "the noisy image itself (latents)",
    "text.embedding": "language model (MiniLM), sentence embedding",
    "baseline.wordform": "word length alone (baseline)",
    "unet.mid": "UNet middle block",
}
_PATTERNS = [
    (r"clip\.layer(\d+)", lambda m: "CLIP word embeddings" if m[1] == "0" else f"CLIP text encoder, layer {m[1]}"),
    (r"clip2\.layer(\d+)", lambda m: f"second CLIP text encoder, layer {m[1]}"),
    (r"clip2\.(pooled|mean)", lambda m: f"second CLIP text encoder, {'summary token' if m[1] == 'pooled' else 'all words'}"),
    (r"text\.layer(\d+)", lambda m: f"language model (MiniLM), layer {m[1]}"),
    (r"unet\.down(\d+)", lambda m: f"UNet down block {int(m[1]) + 1}"),
    (r"unet\.up(\d+)", lambda m: f"UNet up block {int(m[1]) + 1}"),
]


def label(name: str) -> str:
    """'unet.down0' -> 'UNet down block 1'; unknown names are returned as they are."""
    if name in _FIXED:
        return _FIXED[name]
    for pattern, make in _PATTERNS:
        match = re.fullmatch(pattern, name)
        if match:
            return make(match)
    return name


def label_with_id(name: str) -> str:
    """'UNet middle block (unet.mid)': the human label with the identifier for those who look it up."""
    text = label(name)
    return text if text == name else f"{text} ({name})"


def step_text(k: int, steps: int) -> str:
    """One step convention everywhere (docs/methods.md): k = 0 is pure noise, the last step is S-1."""
    return f"step {k} of {steps - 1}"


_SHORT_FIXED = {
    "clip.pooled": "CLIP summary token",
    "clip.mean": "CLIP all words",
    "clip.cond": "CLIP to UNet",
    "latents": "latents",
    "text.embedding": "MiniLM",
    "baseline.wordform": "word length",
    "unet.mid": "UNet middle",
}


def short(name: str) -> str:
    """A few words for tight spots (line ends, margins): 'clip.mean' -> 'CLIP all words', 'unet.up1' -> 'UNet up 2'."""
    if name in _SHORT_FIXED:
        return _SHORT_FIXED[name]
    for pattern, make in ((r"clip\.layer(\d+)", lambda m: "CLIP embeddings" if m[1] == "0" else f"CLIP layer {m[1]}"),
                          (r"text\.layer(\d+)", lambda m: f"MiniLM layer {m[1]}"),
                          (r"unet\.(down|up)(\d+)", lambda m: f"UNet {m[1]} {int(m[2]) + 1}")):
        match = re.fullmatch(pattern, name)
        if match:
            return make(match)
    return label(name)


def at_step(name: str, k: int | None = None, steps: int | None = None) -> str:
    """'UNet middle block, step 4 of 19' (a legend entry); once-per-prompt representations have no step."""
    return label(name) if k is None or steps is None else f"{label(name)}, {step_text(k, steps)}"


def scheduler_note(ran, own) -> str:
    """One sentence on the scheduler: the one that ran and, where it differs, the checkpoint's own (docs/models.md).

    sdviz runs DDIM by default (`--scheduler`): every choice it offers takes exactly the requested steps, so step k is
    the k-th denoiser call; PNDM, SD 1.5's own, repeats one. Probes trained with one scheduler are read at its steps."""
    if not ran:
        return ""
    if not own or own == ran:
        return f"Scheduler: {ran}."
    return f"Scheduler: {ran}, sdviz's default (step k is the k-th denoiser call); the checkpoint's own is {own}."
