"""The Maps tab: every dataset word in CLIP's space and in a UNet block's space, with the last prompt's star.

Read-only: it never touches the model, so it runs beside generation (concurrency_limit=None). The
background maps are the bundle's precomputed UMAP coordinates; only the star is placed per request.
"""

import gradio as gr

from ..labels import label, label_with_id, step_text
from . import state as st

HOW_TO_READ = (
    "Each dot is one word of the dataset (dog, hammer, volcano…), coloured by its category. Words the model treats as "
    "similar sit close together. The left map is CLIP's reading of the words, the same at every step. The right map is "
    "one UNet block at one denoising step: slide through the steps and watch whether the categories stay apart or blur. "
    "The star is your last prompt."
)


def map_names() -> list[str]:
    bundle = st.STATE.bundle if st.STATE else None
    if bundle is None or not bundle.maps:
        return []
    return [n for n in bundle.meta.get("maps", []) if n.startswith("unet.") and f"{n}.coords" in bundle.maps]


def map_choices() -> list[tuple[str, str]]:
    return [(label_with_id(n), n) for n in map_names()]


def map_step_count() -> int:
    bundle = st.STATE.bundle
    names = map_names()
    return int(bundle.maps[f"{names[0]}.coords"].shape[0]) if names else 1


def render_maps(block: str, step, history: list):
    """(clip map, unet map, separation curve, caption/placeholder) for the block and step asked for."""
    from ..maps import place
    from ..plots import embedding_map, separation_curve

    bundle = st.STATE.bundle if st.STATE else None
    names = map_names()
    if not names:
        note = st.STATE.bundle_note if st.STATE and st.STATE.bundle_note else "The maps appear when the probe bundle is ready."
        hidden = gr.update(visible=False)
        return hidden, hidden, hidden, f"*{note}*"
    block = block if block in names else names[0]
    words, cats = bundle.meta["words"], bundle.meta.get("categories")
    n_steps = int(bundle.maps[f"{block}.coords"].shape[0])
    step = int(min(max(int(step or 0), 0), n_steps - 1))
    clip_name = next((n for n in ("clip.mean", "clip.pooled") if f"{n}.coords" in bundle.maps), None)
    here_clip = here_unet = None
    prompt = "your prompt"
    if history:
        import html

        import torch

        text = history[-1].get("prompt") or "your prompt"
        prompt = html.escape(f"'{text[:40]}…'" if len(text) > 40 else f"'{text}'")
        if clip_name in history[-1]["features"]:
            here_clip = place(bundle.maps, clip_name, 0, torch.as_tensor(history[-1]["features"][clip_name]))
        live = min(range(len(history)), key=lambda i: abs(i / max(len(history) - 1, 1) - step / max(n_steps - 1, 1)))
        if block in history[live]["features"]:
            here_unet = place(bundle.maps, block, step, torch.as_tensor(history[live]["features"][block]))
    clip_fig = (embedding_map(bundle.maps[f"{clip_name}.coords"][0].numpy(), words, cats,
                              f"{label(clip_name)}: the same at every step", here_clip, prompt) if clip_name else None)
    unet_fig = embedding_map(bundle.maps[f"{block}.coords"][step].numpy(), words, cats,
                             f"{label(block)} at {step_text(step, n_steps)}", here_unet, prompt)
    try:
        sep = separation_curve(bundle.report)
    except (KeyError, IndexError, StopIteration):
        sep = None
    caption = (f"**Words in CLIP's space (left) and in the {st.md(label(block))} at {step_text(step, n_steps)} (right).** "
               "If the colours blur on the right while they stay apart on the left, the diffusion has turned meaning into pixels.")
    for fig, title in ((clip_fig, label(clip_name) if clip_name else ""), (unet_fig, f"{label(block)}, {step_text(step, n_steps)}")):
        if fig is not None:  # short titles and the legend below: readable from 390 px up
            fig.update_layout(title=title, legend=dict(orientation="h", x=0, y=-0.2, yanchor="top", font=dict(size=10)),
                              height=560, margin=dict(l=40, r=10, t=40, b=10))
    show = lambda fig: gr.update(value=fig, visible=True) if fig is not None else gr.update(visible=False)  # noqa: E731
    return show(clip_fig), show(unet_fig), show(sep), caption
