"""The Report tab: the Findings first, then the bundle's numbers as numbered, captioned figures, computed once per
bundle (`AppState.reload_bundle`) and served to every visitor without waiting for the model, and at its end a panel
to explore one representation: what it adds beyond CLIP step by step, and its attribute x attribute matrix animated
over the steps beside the human one. The handlers are methods of `ui.app.App` (`ReportHandlers`)."""

import html

import gradio as gr

from ..labels import label, label_with_id, short, step_text
from .state import md

REPORT_SLOTS = 10  # gr.Plot components reserved for the report's figures
THESIS_SLOTS = 6  # the panel: choice, note, partition figure, matrices' note, matrix animation, human matrix (render_report's last six)
BADGE = ("<span class='verdict' style='background:{colour};color:#fff;font-weight:700;padding:0.05em 0.6em;"
         "border-radius:1em;white-space:nowrap'>{text}</span>")  # the same badge as report.html's, inline for Markdown
BADGE_COLOURS = {"holds": "#1e7b34", "does not hold": "#b3261e"}  # anything else (cannot tell): grey
HOW_TO_READ = (
    "The Findings at the top test the paper's three claims on this bundle's own numbers, each with a verdict: holds, "
    "does not hold, or cannot tell at this precision (the interval is too wide), and what chance and word form alone "
    "give beside it. A probe is a small formula that tries to read one human rating (how loud, how pleasant… a thing is) from the "
    "model's numbers. We test it only on words it never saw, so a high score means the model really carries that "
    "information. Each line is one part of the model across the denoising steps (step 0 is pure noise). Dashed lines "
    "are CLIP, which reads the prompt once; dotted lines show chance. Higher is better."
)


def _summary_table(report: dict) -> str:
    """Each representation at its best step; on a random-weight model every number says what word form alone gives."""
    from ..results import random_weights, summary_rows, wordform_value

    wf = {m: wordform_value(report, m) for m in ("mean_r", "two_v_two")} if random_weights(report) else {}
    beside = {m: "" if v is None else f" · word form alone {v:+.2f}" for m, v in wf.items()}
    lines = ["| part of the model (best step) | mean r [95% CI] (chance 0) | 2-vs-2 (chance 0.5) |", "|---|---|---|"]
    for r in summary_rows(report):
        ci = r.get("mean_r_ci") or [float("nan")] * 2
        step = "" if r["step"] is None else f", step {r['step']}"
        lines.append(f"| {md(label_with_id(r['name']) + step)} | {r['mean_r']:+.2f} [{ci[0]:+.2f}, {ci[1]:+.2f}]"
                     f"{beside.get('mean_r', '')} | {r['two_v_two']:.2f}{beside.get('two_v_two', '')} |")
    return "\n".join(lines)


def findings_markdown(report: dict) -> str:
    """The Findings, first on the tab: each as its verdict, title, sentence and what chance and word form alone give
    (bundle text escaped); for a bundle built before them, one line saying to rebuild."""
    from ..report import HEADINGS, RANDOM_FINDINGS, REBUILD, VERDICTS
    from ..results import findings, random_weights

    found = findings(report)
    if not found:
        return f"### {HEADINGS['findings']}\n*{REBUILD}*"  # our own words: the command shown as code
    parts = [f"### {HEADINGS['findings']}", "The paper's three findings, each tested on this bundle's own numbers."]
    if random_weights(report):
        parts.append(f"⚠️ **{RANDOM_FINDINGS}**")
    for f in found:
        verdict = str(f["verdict"])
        badge = BADGE.format(colour=BADGE_COLOURS.get(verdict, "#666"), text=html.escape(VERDICTS.get(verdict, verdict)))
        parts.append(f"{badge} **{md(f['title'])}**  \n"
                     f"{md(f['sentence'])}  \n*Chance and word form alone:* {md(f['baseline'])}")
    return "\n\n".join(parts)


class ReportHandlers:
    """The Report tab's handlers: a part of `ui.app.App` (self is the app; its state is `state.AppState`)."""

    def intro(self) -> str:
        rep = self.bundle.report
        s = rep.get("settings", {})
        automatic = (f" Built automatically with reduced settings ({rep['steps']} steps, {s.get('permutations', '?')} shuffles): a quick first look; "
                     "`python -m sdviz build` gives the full numbers.") if s.get("automatic") else ""
        return (f"{findings_markdown(rep)}\n\n---\n\n**{rep['n_words']} words × {len(rep['attributes'])} human-rated properties**, {rep['steps']} denoising steps, "
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
            return [f"*{note}*"] + [gr.update(visible=False), gr.update(visible=False)] * REPORT_SLOTS + self.render_thesis(None)
        out = [self.intro()]
        for i in range(REPORT_SLOTS):
            if i < len(self.report_figures):
                _, fig, caption, title = self.report_figures[i]
                end = "" if title.endswith(("?", ".", "!")) else "."
                heading = f"Figure {i + 1}. {md(title)}{end}" if title else f"Figure {i + 1}."
                out += [gr.update(value=f"**{heading}** {md(caption)}", visible=True), gr.update(value=fig, visible=True)]
            else:
                out += [gr.update(visible=False), gr.update(visible=False)]
        return out + self.render_thesis(None)

    def thesis_names(self) -> list[str]:
        """The representations the panel offers: every per-step one with a partition or entanglement entry."""
        from ..results import entanglement, partition

        if self.bundle is None:
            return []
        report = self.bundle.report
        part, ent = partition(report) or {"blocks": {}}, entanglement(report) or {"reps": {}}
        names = list(part["blocks"]) + [n for n, r in ent["reps"].items() if r["per_step"] and n not in part["blocks"]]
        best = self.unet_names[0] if self.unet_names else None  # the best block first, as on the Generate tab
        return sorted(names, key=lambda n: (n != best, n))

    def render_thesis(self, name: str | None) -> list:
        """The panel for one representation: [choice, note, what it adds beyond CLIP, its matrix over the steps].
        The same for every visitor: made and serialised once per bundle and representation (`AppState.once`)."""
        if self.bundle is None:
            return self._thesis_panel(name)
        return self.once(("thesis", name), lambda: self._thesis_panel(name, serialise=True), keep=16)

    def _thesis_panel(self, name: str | None, serialise: bool = False) -> list:
        from ..plots import matrix_animation, partition_curve
        from .figures import sent

        show = sent if serialise else (lambda fig: fig)
        from ..report import HEADINGS, REBUILD
        from ..results import entanglement, partition

        hidden = gr.update(visible=False)
        names = self.thesis_names()
        if not names:
            note = f"*{REBUILD}*" if self.bundle is not None else ""
            return [gr.update(choices=[], value=None, visible=False), gr.update(value=note, visible=bool(note)), hidden, hidden,
                    hidden, hidden]
        name = name if name in names else names[0]
        report = self.bundle.report
        part, ent = partition(report), entanglement(report)
        lines = ["### Explore one part of the UNet\nChoose a block: what it adds beyond CLIP at each step (read it like "
                 f"the figure “{HEADINGS['partition']}” above), and how its decoded attributes go together at each step "
                 "beside the human ratings."]
        partition_fig = hidden
        if part and name in part["blocks"]:
            partition_fig = gr.update(value=show(partition_curve(part, name, title=f"What {short(name)} adds beyond CLIP")),
                                      visible=True)
        else:
            lines.append(f"*{md(label(name))} has no partition in this bundle.*")
        matrix_fig = human_fig = matrix_note = hidden
        rep = (ent or {"reps": {}})["reps"].get(name)
        if rep and rep.get("matrices"):
            mats, total, groups = rep["matrices"], len(rep["rsa"]), report.get("groups")
            matrix_fig = gr.update(visible=True, value=show(matrix_animation(
                mats, report["attributes"], lambda k: step_text(k, total), groups=groups, name=short(name),
                steps=rep.get("matrix_steps"))))  # evenly spaced steps in a long run
            human_fig = gr.update(visible=True, value=show(matrix_animation([report["human_corr"]], report["attributes"],
                                                                            groups=groups, name="human ratings")))
            matrix_note = gr.update(visible=True, value=(
                f"**{HEADINGS['entanglement']}** Left (above on a phone): how the attributes decoded from {md(label(name))} "
                "go together at each step (red = rise together, blue = opposite; press ▶ Play or drag the slider); right: "
                "the same for the human ratings. Lines separate the domains; hover for the attributes."))
        choice = gr.update(choices=[(label_with_id(n), n) for n in names], value=name, visible=True, interactive=True)
        return [choice, gr.update(value="\n\n".join(lines), visible=True), partition_fig, matrix_note, matrix_fig, human_fig]

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
