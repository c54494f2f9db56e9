"""Recorded runs in the app: the Generate tab's recorded examples and the /replay API.

A replay streams a run from disk (record.RecordedRun.records) through the very loops a live run uses
(`GenerateHandlers.stream_ui`, `stream_api`): no model, no GPU. Its events run on the CPU beside generation,
a few at once, never in the GPU queue (concurrency id "replay"). The handlers are methods of `ui.app.App`.
"""

import time
from collections.abc import Iterable, Iterator

import gradio as gr

from ..errors import SdvizError
from .generate import RunContext, errors_as_gr
from .state import md

REPLAY_STEP_S = 0.08  # a replay is paced a little so the image visibly forms; the API replays at full speed


def recorded_label(run) -> str:
    return f"recorded with {run.model} — replays instantly"


def _recorded_status(run, status):
    if isinstance(status, dict):  # gr.skip()
        return status
    note = f"▶️ **recorded run** ({md(recorded_label(run))}; seed {run.seed}, {run.steps} steps)."
    return f"{note} {status}".strip()


def _paced(records: Iterable, seconds: float) -> Iterator:
    for i, record in enumerate(records):
        if i:
            time.sleep(seconds)
        yield record


class ReplayHandlers:
    """The recorded runs' handlers: a part of `ui.app.App` (self is the app; its state is `state.AppState`)."""

    def recorded_samples(self) -> list[list[str]]:
        """The Generate tab's recorded examples: one row per run, its prompt (and settings when prompts repeat)."""
        runs = self.recordings
        prompts = [r.prompt for r in runs]
        return [[r.prompt if prompts.count(r.prompt) == 1 else f"{r.prompt} (seed {r.seed}, {r.steps} steps)"] for r in runs]

    def _recorded(self, index):
        try:
            return self.recordings[int(index)]
        except (TypeError, ValueError, IndexError):
            raise SdvizError("That recorded run is no longer available; reload the page.") from None

    @errors_as_gr
    def replay(self, index, block, view):
        """A click on a recorded example: fill prompt, seed and steps, and stream the run from disk through the
        same loop as a live run (no Run press, no model, no GPU)."""
        self.wait_ready()
        run = self._recorded(index)
        ctx = RunContext.for_prompt(self, run.prompt, run.seed)
        skip = gr.skip()
        for i, out in enumerate(self.stream_ui(_paced(run.records(), REPLAY_STEP_S), ctx, block, view, live=False)):
            *page, status = out
            filled = (run.prompt, run.seed, run.steps) if i == 0 else (skip, skip, skip)
            yield (*page, _recorded_status(run, status), *filled)

    @errors_as_gr
    def replay_api(self, prompt, seed):
        """The scripted replay (api_name="replay"): the recorded run of this prompt and seed, streamed exactly like
        /generate (same outputs, same decoded JSON)."""
        from ..record import find_run
        from ..run import check_run_args

        if seed is not None:  # the one rule for a seed (a NaN passes Gradio's range check: NaN compares false)
            args = check_run_args(prompt, seed, 1, 0.0)
            prompt, seed = args.prompt, args.seed
        self.wait_ready()
        run = find_run(self.recordings, str(prompt or ""), seed)
        if run is None:
            raise SdvizError(f"No recorded run for this prompt and seed; the recorded ones are: "
                             f"{'; '.join(r.prompt for r in self.recordings) or 'none'}.")
        ctx = RunContext.for_prompt(self, run.prompt, run.seed)
        for image, counter, decoded, status in self.stream_api(run.records(), ctx):
            yield image, counter, decoded, _recorded_status(run, status)
