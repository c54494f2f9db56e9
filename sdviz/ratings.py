"""Human ratings datasets: Binder et al. (2016) and any norms table, behind one interface.

A norms table is a CSV/XLSX with a word column and numeric attribute columns (optionally a
`category` column, and a groups JSON mapping attribute -> group). Binder's table is recognised
by its columns and gets its 14 domains, word classes and categories.
"""

import hashlib
import json
import logging
import os
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import SdvizError
from .io import cache_dir

log = logging.getLogger(__name__)

BINDER_URL = (
    "https://raw.githubusercontent.com/wywgreat/CognitiveAlignment/04237c8a90fbadce252b1816f5647022ea91160d/"
    "data/%5BBBSR%5DWordSet1_Ratings.xlsx"
)
BINDER_SHA256 = "f8f2f4ab20a1f8cd75301a24a54ed4ba2d9dc71f724430b6670ec07150b2c9af"
BINDER_FILE = "binder2016_wordset1_ratings.xlsx"

BINDER_DOMAINS: dict[str, list[str]] = {
    "Vision": ["Vision", "Bright", "Dark", "Color", "Pattern", "Large", "Small", "Motion", "Biomotion", "Fast", "Slow",
               "Shape", "Complexity", "Face", "Body"],
    "Somatic": ["Touch", "Temperature", "Texture", "Weight", "Pain"],
    "Audition": ["Audition", "Loud", "Low", "High", "Sound", "Music", "Speech"],
    "Gustation": ["Taste"],
    "Olfaction": ["Smell"],
    "Motor": ["Head", "UpperLimb", "LowerLimb", "Practice"],
    "Spatial": ["Landmark", "Path", "Scene", "Near", "Toward", "Away", "Number"],
    "Temporal": ["Time", "Duration", "Long", "Short"],
    "Causal": ["Caused", "Consequential"],
    "Social": ["Social", "Human", "Communication", "Self"],
    "Cognition": ["Cognition"],
    "Emotion": ["Benefit", "Harm", "Pleasant", "Unpleasant", "Happy", "Sad", "Angry", "Disgusted", "Fearful", "Surprised"],
    "Drive": ["Drive", "Needs"],
    "Attention": ["Attention", "Arousal"],
}
BINDER_ATTRIBUTES = [a for attrs in BINDER_DOMAINS.values() for a in attrs]
WORD_CLASSES = {"nouns": 1, "verbs": 2, "adjectives": 3}
NA_MARKER = "na"  # Binder's marker for "not rated" (verbs/adjectives on a few attributes)


@dataclass
class Ratings:
    name: str
    source: str
    words: list[str]
    attributes: list[str]
    values: np.ndarray  # [words, attributes], float64
    groups: dict[str, str]  # attribute -> group (domain)
    categories: list[str] | None = None  # one per word, for separation analyses

    @property
    def group_names(self) -> list[str]:
        return list(dict.fromkeys(self.groups[a] for a in self.attributes))

    def lookup(self, word: str) -> np.ndarray | None:
        """Ratings of `word` (case-insensitive), or None."""
        index = {w.lower(): i for i, w in enumerate(self.words)}
        i = index.get(word.strip().lower())
        return None if i is None else self.values[i]

    def find_word_in(self, prompt: str) -> str | None:
        """The dataset word a prompt names ("a photo of a hammer" -> "hammer"): the longest match."""
        tokens = [t.strip(".,!?;:'\"()").lower() for t in prompt.split()]
        text = " " + " ".join(tokens) + " "
        hits = [w for w in self.words if f" {w.lower()} " in text]
        return max(hits, key=len) if hits else None


def default_ratings_path() -> Path | None:
    """SDVIZ_RATINGS, else the file `python -m sdviz data fetch binder` saved, else None."""
    env = os.environ.get("SDVIZ_RATINGS")
    if env:
        return Path(env)
    fetched = cache_dir() / BINDER_FILE
    return fetched if fetched.exists() else None


def _read_table(path: Path):
    import pandas as pd

    if not path.exists():
        raise SdvizError(f"Ratings file {path} does not exist. Pass --ratings PATH, set SDVIZ_RATINGS, "
                         "or run `python -m sdviz data fetch binder`.")
    try:
        if path.suffix.lower() in (".xlsx", ".xls"):
            return pd.read_excel(path, dtype=object, keep_default_na=False)
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as err:
        raise SdvizError(f"Could not read ratings file {path}: {err}. It must be a CSV or XLSX table.") from None


def _numeric_column(df, column: str, path: Path, allow_na: bool) -> np.ndarray:
    out = np.empty(len(df))
    for i, cell in enumerate(df[column].tolist()):
        text = str(cell).strip()
        if allow_na and text == NA_MARKER:
            out[i] = np.nan
            continue
        try:
            value = float(text)
        except ValueError:
            value = None
        if value is None or not np.isfinite(value):
            what = "is empty" if text == "" else f"holds {text[:40]!r}, not a number"
            raise SdvizError(f"{path}: row {i + 2}, column '{column}' {what}. Fix the cell or drop the row.")
        out[i] = value
    return out


def load_ratings(path=None, *, selection: str = "nouns", groups_json=None) -> Ratings:
    """Load a ratings table. Binder's gets domains and word classes; `selection` picks a word class
    (nouns, verbs, adjectives, all). Attributes left unrated ('na') in the selection are dropped."""
    path = Path(path) if path else default_ratings_path()
    if path is None:
        raise SdvizError("No ratings file given. Run `python -m sdviz data fetch binder`, or pass --ratings PATH "
                         "(or set SDVIZ_RATINGS) to a CSV/XLSX with a word column and numeric attribute columns.")
    df = _read_table(path)
    columns = [str(c).strip() for c in df.columns]
    df.columns = columns
    is_binder = {"Word", "WC"} <= set(columns) and set(BINDER_ATTRIBUTES) <= set(columns)
    if is_binder:
        return _load_binder(df, path, selection)
    return _load_generic(df, path, groups_json)


def _load_binder(df, path: Path, selection: str) -> Ratings:
    if selection not in (*WORD_CLASSES, "all"):
        raise SdvizError(f"Unknown selection '{selection}'. Use one of: {', '.join([*WORD_CLASSES, 'all'])}.")
    word_class = _numeric_column(df, "WC", path, allow_na=False).astype(int)
    keep = np.ones(len(df), bool) if selection == "all" else word_class == WORD_CLASSES[selection]
    if not keep.any():
        raise SdvizError(f"{path}: the selection '{selection}' has no words.")
    df = df[keep].reset_index(drop=True)
    words = [str(w).strip() for w in df["Word"]]
    if selection == "all":  # "used" is rated twice, as a verb and as an adjective
        class_name = {v: k[:-1] for k, v in WORD_CLASSES.items()}
        counts = {w: words.count(w) for w in words}
        words = [f"{w} ({class_name[c]})" if counts[w] > 1 else w for w, c in zip(words, word_class[keep])]
    values = np.stack([_numeric_column(df, a, path, allow_na=True) for a in BINDER_ATTRIBUTES], axis=1)
    rated = ~np.isnan(values).any(axis=0)
    if not rated.all():
        dropped = [a for a, ok in zip(BINDER_ATTRIBUTES, rated) if not ok]
        log.warning("Dropping attributes not rated for every selected word: %s", ", ".join(dropped))
    attributes = [a for a, ok in zip(BINDER_ATTRIBUTES, rated) if ok]
    groups = {a: d for d, attrs in BINDER_DOMAINS.items() for a in attrs if a in attributes}
    categories = [str(c).strip() for c in df["Category"]] if "Category" in df.columns else None
    return Ratings(f"binder2016-{selection}", str(path), words, attributes, values[:, rated], groups, categories)


def _load_generic(df, path: Path, groups_json) -> Ratings:
    lower = {c.lower(): c for c in df.columns}
    word_col = lower.get("word")
    if word_col is None:
        raise SdvizError(f"{path}: no 'word' column. A norms table needs a column named 'word' and numeric attribute columns.")
    category_col = lower.get("category")
    attributes = [c for c in df.columns if c not in (word_col, category_col)]
    if not attributes:
        raise SdvizError(f"{path}: no attribute columns besides '{word_col}'.")
    if df.empty:
        raise SdvizError(f"{path}: the table has no rows.")
    words = [str(w).strip() for w in df[word_col]]
    seen: dict[str, int] = {}
    for i, w in enumerate(words):
        if not w:
            raise SdvizError(f"{path}: row {i + 2}, column '{word_col}' is empty.")
        if w.lower() in seen:
            raise SdvizError(f"{path}: row {i + 2}, column '{word_col}': duplicate word '{w}' (first at row {seen[w.lower()] + 2}).")
        seen[w.lower()] = i
    values = np.stack([_numeric_column(df, a, path, allow_na=False) for a in attributes], axis=1)
    groups = {a: "all" for a in attributes}
    if groups_json:
        groups = _read_groups(Path(groups_json), attributes)
    categories = [str(c).strip() for c in df[category_col]] if category_col else None
    return Ratings(Path(path).stem, str(path), words, attributes, values, groups, categories)


def _read_groups(path: Path, attributes: list[str]) -> dict[str, str]:
    """Groups JSON: {"group": ["attr", ...], ...} or {"attr": "group", ...}."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise SdvizError(f"Could not read groups file {path}: {err}.") from None
    if all(isinstance(v, list) for v in raw.values()):
        raw = {a: g for g, attrs in raw.items() for a in attrs}
    missing = [a for a in attributes if a not in raw]
    if missing:
        raise SdvizError(f"{path}: no group for attribute(s) {missing[:5]}. Every attribute needs a group.")
    return {a: str(raw[a]) for a in attributes}


def fetch_binder(dest: Path | None = None, *, url: str = BINDER_URL, sha256: str = BINDER_SHA256) -> Path:
    """Download Binder's original XLSX from the pinned mirror, verify its sha256, then move it into
    place. A failed download or a checksum mismatch leaves nothing behind."""
    dest = Path(dest) if dest else cache_dir() / BINDER_FILE
    if dest.exists() and _sha256(dest.read_bytes()) == sha256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            data = response.read()
    except Exception as err:
        raise SdvizError(f"Could not download the Binder ratings from {url}: {err}. Check your connection, "
                         f"or download the file by hand and pass it with --ratings PATH.") from None
    digest = _sha256(data)
    if digest != sha256:
        raise SdvizError(f"The downloaded file's sha256 is {digest}, expected {sha256}: the mirror changed or the "
                         "download was damaged. Nothing was saved; try again, or pass a copy you trust with --ratings PATH.")
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".download-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, dest)
    return dest


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
