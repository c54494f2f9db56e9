"""The Maps tab: every dataset word in CLIP's space and in a UNet block's space, with the last prompt's star.

Read-only: it never touches the model, so it runs beside generation (concurrency_limit=None). The
background maps are the bundle's precomputed UMAP coordinates; only the star is placed per request.
The handlers are methods of `ui.app.App` (`MapsHandlers`).
"""

import gradio as gr

from ..labels import label, label_with_id, step_text
from .state import md

HOW_TO_READ = (
    "Each dot is one word of the dataset (dog, axe, volcano…), coloured by its category. Words the model treats as "
    "similar sit close together. The CLIP map is CLIP's reading of the words, the same at every step. The UNet map is "
    "one UNet block over the denoising steps: press Play (or drag its slider) and watch whether the categories stay apart "
    "or blur. The star is your last prompt."
)
MAP_HEIGHT = 560  # px, each map (the two sit side by side on a wide screen)


def _here_per_step(bundle, block: str, n_steps: int, history: list) -> list | None:
    """The prompt's star on every trained step of the map: each trained step takes the live step at the same
    fraction of its run (as the bars' probes do), placed with maps.place."""
    if not history:
        return None
    import torch

    from ..maps import place

    here = []
    for step in range(n_steps):
        live = min(range(len(history)), key=lambda i: abs(i / max(len(history) - 1, 1) - step / max(n_steps - 1, 1)))
        x = history[live]["features"].get(block)
        here.append(place(bundle.maps, block, step, torch.as_tensor(x)) if x is not None else None)
    return here


class MapsHandlers:
    """The Maps tab's handlers: a part of `ui.app.App` (self is the app; its state is `state.AppState`)."""

    def map_names(self) -> list[str]:
        bundle = self.bundle
        if bundle is None or not bundle.maps:
            return []
        return [n for n in bundle.meta.get("maps", []) if n.startswith("unet.") and f"{n}.coords" in bundle.maps]

    def map_choices(self) -> list[tuple[str, str]]:
        return [(label_with_id(n), n) for n in self.map_names()]

    def render_maps(self, block: str, history: list):
        """The page's Maps event, on the visitor's block and last run: (clip map, unet map with every step as an
        animation frame, separation curve, caption/placeholder). Before a run the figures are the same for every
        visitor: made and serialised once per bundle and block (`AppState.once`), then sent to everyone alike."""
        names = self.map_names()
        if not names:
            note = self.bundle_note or "The maps appear when the probe bundle is ready."
            hidden = gr.update(visible=False)
            return hidden, hidden, hidden, f"*{note}*"
        block = block if block in names else names[0]
        if history:
            clip_fig, unet_fig, sep, caption = self._maps(block, history)
        else:
            clip_fig, unet_fig, sep, caption = self.once(("maps", block), lambda: self._maps(block, [], serialise=True))
        show = lambda fig: gr.update(value=fig, visible=True) if fig is not None else gr.update(visible=False)  # noqa: E731
        return show(clip_fig), show(unet_fig), show(sep), caption

    def _maps(self, block: str, history: list, serialise: bool = False) -> tuple:
        from ..plots import embedding_map, embedding_map_animation, separation_curve
        from ..report import HEADINGS
        from ..results import default_highlight
        from .figures import sent

        bundle = self.bundle
        words, cats, supers = bundle.meta["words"], bundle.meta.get("categories"), bundle.meta.get("super_categories")
        coords = bundle.maps[f"{block}.coords"].numpy()
        n_steps = int(coords.shape[0])
        clip_name = next((n for n in ("clip.mean", "clip.pooled") if f"{n}.coords" in bundle.maps), None)
        here_clip = None
        prompt = "your prompt"
        if history:
            text = history[-1].get("prompt") or "your prompt"
            prompt = f"'{text[:40]}…'" if len(text) > 40 else f"'{text}'"  # plots escapes figure text itself
            if clip_name in history[-1]["features"]:
                import torch

                from ..maps import place

                here_clip = place(bundle.maps, clip_name, 0, torch.as_tensor(history[-1]["features"][clip_name]))
        # the CLIP map's legend under its title, as the UNet map's: side by side, the two maps line up
        clip_fig = (embedding_map(bundle.maps[f"{clip_name}.coords"][0].numpy(), words, cats, label(clip_name), here_clip,
                                  prompt, super_categories=supers, legend="top", height=MAP_HEIGHT) if clip_name else None)
        unet_fig = embedding_map_animation(coords, words, cats, supers, f"{label(block)}, step by step",
                                           _here_per_step(bundle, block, n_steps, history), prompt,
                                           lambda k: step_text(k, n_steps), height=MAP_HEIGHT)
        # the curve colours the block the visitor chose (not the report's best one), beside CLIP and the word-form floor
        highlight = [n for n in default_highlight(bundle.report) if not n.startswith("unet.")] + [block]
        try:
            sep = separation_curve(bundle.report, title=HEADINGS["separation"], highlight=highlight)
        except (KeyError, IndexError, StopIteration):
            sep = None
        # no "left"/"right": the two maps sit side by side on a wide screen and one above the other on a phone
        caption = (f"**Words in CLIP's space (the CLIP map) and in the {md(label(block))} over the {n_steps} denoising steps "
                   "the probes were trained on (the UNet map: press ▶ Play under it).** If the colours blur in the UNet map "
                   "while they stay apart in the CLIP map, the diffusion has turned meaning into pixels. The star is "
                   f"{md(prompt) if history else 'your prompt, after a run'}.")
        if serialise:
            clip_fig, unet_fig, sep = sent(clip_fig), sent(unet_fig), sent(sep)
        return clip_fig, unet_fig, sep, caption


# Gradio's Plot hands plotly only data and layout (Plotly.react), so an animation's frames are added here, in the
# page, from the figure's own JSON: Play then moves the points. Old frames (another block) are removed first.
def add_frames_js(elem_id: str) -> str:
    """The page's JavaScript that gives the plot with this elem_id its figure's animation frames."""
    return """(value) => {
    const fig = value && value.plot ? JSON.parse(value.plot) : null;
    if (!fig || !fig.frames || !fig.frames.length) return [];
    const attach = (tries) => {
        const div = document.querySelector('#ELEM .js-plotly-plot');
        if (!div || !div._fullLayout || !window.Plotly) { if (tries > 0) setTimeout(() => attach(tries - 1), 100); return; }
        const old = ((div._transitionData || {})._frames || []).map((_, i) => i);
        Promise.resolve(old.length ? window.Plotly.deleteFrames(div, old) : null)
            .then(() => window.Plotly.addFrames(div, fig.frames));
    };
    attach(100);
    return [];
}""".replace("ELEM", elem_id)


ADD_FRAMES_JS = add_frames_js("unet-map")
