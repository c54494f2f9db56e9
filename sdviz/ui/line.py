"""One model, many visitors: the line for the model, and what a visitor waiting in it is told.

Only one run uses the model at a time (its hooks are the model's, and a GPU runs one batch well). Gradio's own
queue would keep a waiting visitor's handler from starting at all, so the page could say nothing, and an identical
request (replayed from the live-run cache, ui/replay.py) would wait behind every run for nothing. So the
generation events start at once, and a live run then waits here, first come first served, telling the visitor
their place and an estimate (`waiting_text`); Steer, Compare and CLIP layers take their turn here too
(`ModelLine.holding`, applied in `App.__post_init__`).
"""

import functools
import itertools
import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class Waiting:
    """Yielded by a live run while it waits in line (instead of a `run.StepRecord`)."""

    place: int  # 1 = next
    steps_ahead: int  # denoising steps of the runs ahead (the one running counted whole)


def wait_seconds(steps_ahead: int, step_seconds: float | None) -> float | None:
    """Seconds until a waiting run starts: the measured per-step time × the steps of every run ahead
    (steps × people ahead when all ask for the same steps). None before any step was measured."""
    if not step_seconds or steps_ahead <= 0:
        return None
    return step_seconds * steps_ahead


def waiting_text(wait: Waiting, step_seconds: float | None) -> str:
    """The status line of a visitor waiting for the model."""
    ahead = wait.place - 1
    people = "1 run is" if ahead == 1 else f"{ahead} runs are"
    seconds = wait_seconds(wait.steps_ahead, step_seconds)
    when = (f" Yours starts in about {seconds:.0f} s ({wait.steps_ahead} steps ahead × {step_seconds:.2f} s per step, "
            "as measured here)." if seconds is not None else " The estimate appears once this app has timed a run.")
    return f"⏳ **Waiting for the model: you are number {wait.place} in line** ({people} ahead of yours).{when}"


def waiting_counter(wait: Waiting, step_seconds: float | None) -> str:
    """The same, short, under the image (where a visitor who just pressed Run looks, on a phone as on a desktop)."""
    seconds = wait_seconds(wait.steps_ahead, step_seconds)
    return f"⏳ **number {wait.place} in line** for the model" + (f" · about {seconds:.0f} s" if seconds is not None else "")


class ModelLine:
    """First come, first served: `join` takes a ticket, `ahead` says who is before it, `wait` blocks until it
    moves, `leave` gives the turn to the next (always call it, in a finally)."""

    def __init__(self):
        self._tickets = itertools.count()
        self._waiting: dict[int, int] = {}  # ticket -> its steps, in arrival order (dicts keep insertion order)
        self._changed = threading.Condition()

    def join(self, steps: int) -> int:
        with self._changed:
            ticket = next(self._tickets)
            self._waiting[ticket] = int(steps)
            return ticket

    def ahead(self, ticket: int) -> Waiting:
        with self._changed:
            before = [s for t, s in self._waiting.items() if t < ticket]
            return Waiting(place=len(before) + 1, steps_ahead=sum(before))

    def wait(self, ticket: int, timeout: float) -> bool:
        """Block until `ticket` is first or `timeout` passes; True when it is first."""
        with self._changed:
            return self._changed.wait_for(lambda: next(iter(self._waiting), None) == ticket, timeout)

    def leave(self, ticket: int) -> None:
        with self._changed:
            self._waiting.pop(ticket, None)
            self._changed.notify_all()

    def __len__(self) -> int:
        return len(self._waiting)

    def holding(self, fn, steps_of):
        """`fn` run in its turn (blocking while it waits); `steps_of(*args)`: the steps it counts in the line."""

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            ticket = self.join(steps_of(*args))
            try:
                while not self.wait(ticket, timeout=60):
                    pass
                return fn(*args, **kwargs)
            finally:
                self.leave(ticket)

        return wrapper
