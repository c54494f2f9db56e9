"""The Report tab: the bundle's numbers as numbered, captioned figures, computed once per bundle
(`AppState.reload_bundle`) and served to every visitor without waiting for the model. The handlers are
methods of `ui.app.App` (`ReportHandlers`)."""

import gradio as gr

from ..labels import label_with_id
from .state import md

REPORT_SLOTS = 8  # gr.Plot components reserved for the report's figures
HOW_TO_READ = (
    "A probe is a small formula that tries to read one human rating (how loud, how pleasant… a thing is) from the "
    "model's numbers. We test it only on words it never saw, so a high score means the model really carries that "
    "information. Each line is one part of the model across the denoising steps (step 0 is pure noise). Dashed lines "
    "are CLIP, which reads the prompt once; dotted lines show chance. Higher is better."
)


def _summary_table(report: dict) -> str:
    from ..results import summary_rows

    lines = ["| part of the model (best step) | mean r [95% CI] (chance 0) | 2-vs-2 (chance 0.5) |", "|---|---|---|"]
    for r in summary_rows(report):
        ci = r.get("mean_r_ci") or [float("nan")] * 2
        step = "" if r["step"] is None else f", step {r['step']}"
        lines.append(f"| {md(label_with_id(r['name']) + step)} | {r['mean_r']:+.2f} [{ci[0]:+.2f}, {ci[1]:+.2f}] | "
                     f"{r['two_v_two']:.2f} |")
    return "\n".join(lines)


class ReportHandlers:
    """The Report tab's handlers: a part of `ui.app.App` (self is the app; its state is `state.AppState`)."""

    def intro(self) -> str:
        rep = self.bundle.report
        s = rep.get("settings", {})
        automatic = (f" Built automatically with reduced settings ({rep['steps']} steps, {s.get('permutations', '?')} shuffles): a quick first look; "
                     "`python -m sdviz build` gives the full numbers.") if s.get("automatic") else ""
        return (f"**{rep['n_words']} words × {len(rep['attributes'])} human-rated properties**, {rep['steps']} denoising steps, "
                f"model {md(rep.get('model', '?'))}. A probe learns to read each property from the model's activations and is "
                f"tested only on words it never saw ({s.get('folds', '?')}-fold cross-validation, {s.get('permutations', '?')} "
                f"shuffles of words and ratings as the chance level).{automatic}\n\n{_summary_table(rep)}\n\n"
                "The button below gives the whole report as one self-contained web page.")

    def render_report(self) -> list:
        """[intro markdown, then (caption, plot) for each slot]."""
        if self.bundle is None or not self.report_figures:
            if self.building:
                note = "The probes are being built; the report appears here when they are ready."
            elif self.ready:
                note = self.bundle_note or "No probe bundle."
            else:
                note = "The report appears here once the model and its probe bundle are loaded."
            return [f"*{note}*"] + [gr.update(visible=False), gr.update(visible=False)] * REPORT_SLOTS
        out = [self.intro()]
        for i in range(REPORT_SLOTS):
            if i < len(self.report_figures):
                _, fig, caption, title = self.report_figures[i]
                end = "" if title.endswith(("?", ".", "!")) else "."
                heading = f"Figure {i + 1}. {md(title)}{end}" if title else f"Figure {i + 1}."
                out += [gr.update(value=f"**{heading}** {md(caption)}", visible=True), gr.update(value=fig, visible=True)]
            else:
                out += [gr.update(visible=False), gr.update(visible=False)]
        return out

    def report_file(self):
        """The bundle's self-contained report.html for the visitor to download: one file in the app's download folder,
        replaced whole (atomic rename) on every click, so any number of clicks leaves one file, removed at close."""
        import shutil
        from pathlib import Path

        from ..io import atomic_write

        source = Path(self.bundle.path) / "report.html" if self.bundle else None
        if source is None or not source.exists():
            raise gr.Error("This probe bundle has no report.html; `python -m sdviz report` writes one.")
        target = self.download_folder() / "sdviz-report.html"
        atomic_write(target, lambda tmp: shutil.copyfile(source, tmp))
        return gr.update(value=str(target), visible=True)
