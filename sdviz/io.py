"""Files on disk: atomic writes, where sdviz keeps its caches and bundles, and the build's stage timer."""

import os
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the source checkout (assets/, probes/ live here)


def atomic_write(target: Path, write: Callable[[str], None]) -> None:
    """Call write(tmp) on a temporary file beside `target`, then rename it into place: the file is
    whole or absent, never half-written (an interrupted run leaves at most a hidden temporary file, removed here)."""
    target = Path(target)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}-", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def cache_dir() -> Path:
    """Downloads and feature caches: $SDVIZ_CACHE, else ~/.cache/sdviz."""
    return Path(os.environ.get("SDVIZ_CACHE") or Path.home() / ".cache" / "sdviz")


def data_dir() -> Path:
    """Probe bundles sdviz builds: $SDVIZ_HOME, else $XDG_DATA_HOME/sdviz, else ~/.local/share/sdviz.
    Never the package folder: after a plain `pip install` that is site-packages."""
    if os.environ.get("SDVIZ_HOME"):
        return Path(os.environ["SDVIZ_HOME"])
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "sdviz"


def feature_cache_dir(slug: str) -> Path:
    """Default --cache: <cache_dir>/features/<slug>."""
    return cache_dir() / "features" / slug


def bundle_dir(slug: str) -> Path:
    """Default --out: <data_dir>/probes/<slug>."""
    return data_dir() / "probes" / slug


def find_bundle(slug: str) -> Path | None:
    """The first probe bundle for `slug` among ./probes/<slug> (the current folder, e.g. a Space
    repository), ROOT/probes/<slug> (a source checkout) and bundle_dir(slug); None if none has one."""
    for candidate in (Path.cwd() / "probes" / slug, ROOT / "probes" / slug, bundle_dir(slug)):
        if (candidate / "meta.json").is_file():
            return candidate
    return None


@contextmanager
def stage(timings: dict, name: str):
    """Add the wall time of the `with` body to timings[name] (the build's per-stage times, `BuildResult.timings`)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - start
