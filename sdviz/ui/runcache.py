"""The live-run cache: every finished live run is kept as a recorded run (record.save_run), so the next identical
request replays it at once, without the model and without waiting in line (ui/line.py).

Keyed by (model, probe bundle, prompt, seed, steps, guidance): the same key gives the same images and the same
decoded values, bit for bit (run.stream is seeded; previews are lossless PNGs; features float32 safetensors).
Bounded: the least recently used runs are dropped beyond MAX_RUNS runs or MAX_BYTES on disk. The runs live in a
temporary folder of this app, removed when the process exits.
"""

import atexit
import shutil
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

MAX_RUNS = 64  # runs kept (a 20-step run of SD 1.5 at 512 px: about 8 MB; of the tiny model: about 0.2 MB)
MAX_BYTES = 512 * 2**20  # bytes kept on disk, all runs together


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


class RunCache:
    """`get(key)` -> RecordedRun or None (and marks it recently used); `put(key, pipe, records, ...)` keeps a run."""

    def __init__(self, max_runs: int = MAX_RUNS, max_bytes: int = MAX_BYTES):
        self.max_runs, self.max_bytes = max_runs, max_bytes
        self._runs: OrderedDict = OrderedDict()  # key -> (RecordedRun, bytes), least recently used first
        self._lock = threading.Lock()
        self._folder: Path | None = None
        self._count = 0

    def __len__(self) -> int:
        return len(self._runs)

    @property
    def bytes(self) -> int:
        return sum(size for _, size in self._runs.values())

    def get(self, key):
        with self._lock:
            if key not in self._runs:
                return None
            self._runs.move_to_end(key)
            return self._runs[key][0]

    def clear(self) -> None:
        """Forget every kept run and remove their folder (the server is closing)."""
        with self._lock:
            folder, self._folder = self._folder, None
            self._runs.clear()
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)

    def put(self, key, pipe, records: list, *, prompt: str, seed: int, steps: int, guidance: float):
        """Keep a finished run (all its StepRecords); returns its RecordedRun. A run larger than the whole budget
        is not kept."""
        from ..record import save_run

        with self._lock:
            if self._folder is None:
                self._folder = Path(tempfile.mkdtemp(prefix="sdviz-live-runs-"))
                atexit.register(shutil.rmtree, self._folder, ignore_errors=True)
            self._count += 1
            folder = self._folder / str(self._count)  # one folder per entry: evicting one never touches another
        run = save_run(pipe, records, folder, prompt=prompt, seed=seed, steps=steps, guidance=guidance)
        size = _size(folder)
        with self._lock:
            old = self._runs.pop(key, None)
            dropped = [old[0]] if old else []
            self._runs[key] = (run, size)
            while self._runs and (len(self._runs) > self.max_runs or self.bytes > self.max_bytes):
                dropped.append(self._runs.popitem(last=False)[1][0])
        for gone in dropped:
            shutil.rmtree(gone.path.parent, ignore_errors=True)
        return run if key in self._runs else None
