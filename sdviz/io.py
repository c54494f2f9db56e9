"""Files on disk: atomic writes, where sdviz keeps its caches and bundles, and the build's stage timer."""

import errno
import hashlib
import os
import re
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from .errors import SdvizError

ROOT = Path(__file__).resolve().parent.parent  # the source checkout (assets/, probes/ live here)


def atomic_write(target: Path, write: Callable[[str], None]) -> None:
    """Call write(tmp) on a temporary file beside `target`, then rename it into place: the file is
    whole or absent, never half-written (an interrupted run leaves at most a hidden temporary file, removed here).
    A full disk, or any other failure of the writer (an OSError, or safetensors' SafetensorError, which is not an
    OSError), becomes one SdvizError that says what to do."""
    from safetensors import SafetensorError

    target = Path(target)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}-", suffix=".tmp")
        os.close(fd)
        write(tmp)
        os.replace(tmp, target)
    except (OSError, SafetensorError) as err:
        raise write_error(target, err) from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)


def write_error(target: Path, err: BaseException) -> SdvizError:
    """One sentence for a file that could not be written: a full disk says so; anything else names the error."""
    text = str(err)
    if getattr(err, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "StorageFull" in text or "No space left" in text:
        return SdvizError(f"The disk is full: could not write {target}. Free some space (or choose a folder on another "
                          "disk) and rerun the same command; finished work is kept.")
    detail = getattr(err, "strerror", None) or " ".join(text.split())[:200] or type(err).__name__
    return SdvizError(f"Could not write {target} ({detail}); check that the folder is writable and has free space, "
                      "then rerun the same command.")


@contextmanager
def new_folder(folder: Path):
    """Create `folder` (and missing parents) for what the `with` body writes; if the body fails, remove the folders
    this call created that are left empty, so a failed command leaves no empty folders behind."""
    folder = Path(folder)
    created = [p for p in (folder, *folder.parents) if not p.exists()]  # innermost first
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise write_error(folder, err) from None
    try:
        yield folder
    except BaseException:
        for p in created:
            try:
                p.rmdir()  # only if empty: finished work (e.g. complete shards) stays for a rerun to resume
            except OSError:
                break
        raise


def safe_name(text: str, fallback: str = "unnamed") -> str:
    """`text` as one harmless path component: only letters, digits and `-_.+` (anything else becomes '-'), no
    leading '.', at most 120 characters (a long name keeps a hash of the whole). Every name that comes from a ratings
    table, a bundle or a user (an attribute, a model id) passes through here before it becomes part of a path."""
    name = re.sub(r"[^A-Za-z0-9._+-]+", "-", str(text)).lstrip(".-")
    if len(name) > 120:
        name = f"{name[:100]}-{hashlib.sha256(str(text).encode()).hexdigest()[:12]}"
    return name or fallback


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
