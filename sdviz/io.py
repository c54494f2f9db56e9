"""Files on disk: atomic writes, and where sdviz keeps its caches and bundles."""

import os
import tempfile
from collections.abc import Callable
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
    return Path(os.environ.get("SDVIZ_CACHE", Path.home() / ".cache" / "sdviz"))


def feature_cache_dir(slug: str) -> Path:
    return ROOT / "cache" / slug


def bundle_dir(slug: str) -> Path:
    return ROOT / "probes" / slug
