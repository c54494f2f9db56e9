"""Recorded runs in the app: the Generate tab's recorded examples and the /replay API.

A replay streams a run from disk (record.RecordedRun.records) through the very loops a live run uses
(`GenerateHandlers.stream_ui`, `stream_api`): no model, no GPU. Its events run on the CPU beside generation,
a few at once, never in the GPU queue (concurrency id "replay"). The handlers are methods of `ui.app.App`.
"""

import time
from collections.abc import Iterable, Iterator

from ..errors import SdvizError
from .generate import REFRESH_S, RunContext, errors_as_gr
from .state import md

REPLAY_STEP_S = 0.08  # a replay is paced a little so the image visibly forms; the API replays at full speed
REPLAY_PAGES_KEPT = 16  # replays' page updates kept in memory (per run, block and view), least recently used dropped


def recorded_label(run) -> str:
    return f"recorded with {run.model} — replays instantly"


def _recorded_note(run) -> str:
    return f"▶️ **recorded run** ({md(recorded_label(run))}; seed {run.seed}, {run.steps} steps)."


def _recorded_status(run, status):
    if isinstance(status, dict):  # gr.skip()
        return status
    return f"{_recorded_note(run)} {status}".strip()


def _fresh(update):
    """A copy of a kept page update: Gradio writes into the update dicts it is given."""
    return dict(update) if isinstance(update, dict) else update


def _plain(pages: Iterable[tuple]) -> Iterator[tuple]:
    """The same frames with as few `gr.update`s as possible. Gradio builds a new component for every update it is
    sent (gr.skip() included), on its event loop: 20 frames × 9 outputs of that per visitor stalled every other
    request. After the first frame, an output whose visibility does not change gets its plain value (the one it
    shows, for a gr.skip()); Gradio then sends only what differs from the frame before."""
    shown: dict[int, object] = {}
    visible: dict[int, bool] = {}
    for i, page in enumerate(pages):
        frame = []
        for j, u in enumerate(page):
            if not isinstance(u, dict) or u.get("__type__") != "update":
                frame.append(u)
                shown[j] = u
                continue
            props = set(u) - {"__type__"}
            same = u.get("visible", visible.get(j)) == visible.get(j)
            if i and not props and j in shown:
                frame.append(shown[j])  # a skip: what it shows already
            elif i and props <= {"value", "visible"} and "value" in u and same and j in visible:
                frame.append(u["value"])
            else:
                frame.append(u)
            if "visible" in u:
                visible[j] = u["visible"]
            if "value" in u:
                shown[j] = u["value"]
        yield tuple(frame)


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

    def _replay_frames(self, run, ctx: RunContext, block, view, note: str) -> Iterator[tuple]:
        """The page updates of a replay of `run`: figures every few steps (as a paced replay refreshes them),
        serialised, with as few updates as possible (`_plain`)."""
        from .figures import sent

        every = max(1, round(REFRESH_S / REPLAY_STEP_S))

        def frames():
            for out in self.stream_ui(run.records(), ctx, block, view, live=False, refresh_every=every):
                *page, status = out
                page = [{**u, "value": sent(u["value"])} if isinstance(u, dict) and hasattr(u.get("value"), "to_json")
                        else u for u in page]
                yield (*page, status if isinstance(status, dict) else f"{note} {status}".strip())

        return _plain(frames())

    def replay_page(self, run, ctx: RunContext, block, view, note: str) -> Iterator[tuple]:
        """A replay on the page, paced (REPLAY_STEP_S a step) so the image visibly forms. Its frames are the same
        for every visitor: the first to ask makes them while streaming them, the others (at the same moment or
        later) get the kept frames (the REPLAY_PAGES_KEPT most recently used runs × blocks × views), so a class
        replaying one run at once costs about one replay."""
        entry = self.shared_entry(("replay", str(run.path), block, view), keep=REPLAY_PAGES_KEPT)
        if "value" not in entry and entry["lock"].acquire(blocking=False):  # the first: make and stream at once
            try:
                made = []
                for i, frame in enumerate(self._replay_frames(run, ctx, block, view, note)):
                    made.append(frame)
                    if i:
                        time.sleep(REPLAY_STEP_S)
                    yield tuple(_fresh(u) for u in frame)
                entry["value"] = made  # only a whole replay is kept
            finally:
                entry["lock"].release()
            return
        with entry["lock"]:  # another visitor is making them: wait for the whole replay
            frames = entry.get("value")
        for i, frame in enumerate(frames if frames is not None else self._replay_frames(run, ctx, block, view, note)):
            if i:
                time.sleep(REPLAY_STEP_S)
            yield tuple(_fresh(u) for u in frame)

    @errors_as_gr
    def replay(self, index, block, view):
        """A click on a recorded example: fill prompt, seed and steps, and stream the run from disk through the
        same loop as a live run (no Run press, no model, no GPU)."""
        self.wait_ready()
        run = self._recorded(index)
        ctx = RunContext.for_prompt(self, run.prompt, run.seed)
        for out in self.replay_page(run, ctx, block, view, _recorded_note(run)):
            yield (*out, run.prompt, run.seed, run.steps)  # plain values: unchanged, Gradio sends them once

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
