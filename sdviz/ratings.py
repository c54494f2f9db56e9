"""Human ratings datasets: Binder et al. (2016) and any norms table, behind one interface.

A norms table is a CSV/XLSX with a `word` column and numeric attribute columns; optional columns
`category`, `super_category` and `word_class` (noun/verb/adjective), and a groups JSON mapping
attribute -> group. An empty, `na` or `nan` cell means "not rated". Binder's table is recognised
by its columns and gets its 14 domains, word classes, categories and super categories.
How missing ratings enter the numbers: docs/methods.md.
"""

import hashlib
import json
import logging
import os
import re
import string
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
MISSING_CELLS = {"", "na", "nan", "n/a"}  # generic tables: "not rated" (compared lower-case)

# Limits on a norms table: a bigger file is almost certainly not a table of word ratings.
MAX_ROWS = 100_000
MAX_COLUMNS = 2_000
MAX_CELL_CHARS = 200
MAX_FILE_BYTES = 200 * 2**20

NOUN_TEMPLATE = "a photo of {a_word}"  # nouns: a depictable thing; the article follows the word
WORD_TEMPLATE = "{word}"  # verbs, adjectives, tables with no declared word class: the word alone
TEMPLATE_FIELDS = ("word", "a_word")


@dataclass
class Ratings:
    name: str
    source: str
    words: list[str]
    attributes: list[str]
    values: np.ndarray  # [words, attributes], float64
    groups: dict[str, str]  # attribute -> group (domain)
    categories: list[str] | None = None  # one per word, for separation analyses
    super_categories: list[str] | None = None  # one per word (Binder's "Super Category"), for colouring maps
    template: str = WORD_TEMPLATE  # default prompt template for these words

    @property
    def complete(self) -> np.ndarray:
        """[words] True where a word is rated on every attribute (values may hold NaN = not rated)."""
        return ~np.isnan(self.values).any(axis=1)

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


def drop_constant_attributes(ratings: Ratings) -> tuple[Ratings, list[str]]:
    """(ratings without the attribute columns that give every rated word the same value, their names). A constant
    column has nothing to decode: its r is 0 by definition (analysis.pearson), which would only dilute the means.
    Every column constant: one SdvizError."""
    from dataclasses import replace

    with np.errstate(all="ignore"):
        spread = np.nanmax(ratings.values, axis=0) - np.nanmin(ratings.values, axis=0)
    keep = [j for j in range(len(ratings.attributes)) if spread[j] > 0]
    dropped = [a for j, a in enumerate(ratings.attributes) if j not in keep]
    if not keep:
        raise SdvizError(f"{ratings.source}: every attribute column gives all words the same rating, so there is nothing "
                         "to decode; use a table whose ratings vary between words.")
    if not dropped:
        return ratings, []
    attributes = [ratings.attributes[j] for j in keep]
    return replace(ratings, attributes=attributes, values=ratings.values[:, keep],
                   groups={a: ratings.groups[a] for a in attributes}), dropped


def with_article(word: str) -> str:
    """'an apple', 'a dog', 'an hour', 'a unicorn': by the first letters, with the common exceptions
    of English spelling (silent h; 'u'/'eu'/'one' said with a consonant)."""
    w = word.strip().lower()
    vowel_sound = w[:1] in tuple("aeiou")
    if w.startswith(("hour", "honest", "honor", "honour", "heir")):
        vowel_sound = True
    elif w.startswith(("uni", "use", "usu", "uti", "ura", "ure", "euro", "eu", "one", "once", "ewe")):
        vowel_sound = False
    return ("an " if vowel_sound else "a ") + word.strip()


def check_template(template: str) -> str:
    """Raise unless `template` fills in the word: {word} (as is) or {a_word} (with 'a'/'an'), nothing else."""
    example = f"e.g. '{NOUN_TEMPLATE}' or '{WORD_TEMPLATE}'"
    if not isinstance(template, str):
        raise SdvizError(f"The template must be text such as '{NOUN_TEMPLATE}'; got {type(template).__name__}.")
    try:
        parts = [(f, spec, conversion) for _, f, spec, conversion in string.Formatter().parse(template) if f is not None]
    except ValueError as err:
        raise SdvizError(f"The template {template!r} is not valid ({err}); write the word as {{word}} or {{a_word}}, {example}.") from None
    # a format spec ({word:>2000000000} pads to gigabytes), a conversion, an attribute or an index: none is a plain field
    fancy = [f"{{{f}{'!' + c if c else ''}{':' + spec if spec else ''}}}" for f, spec, c in parts
             if spec or c or (f and f not in TEMPLATE_FIELDS and re.search(r"[.\[]", f))]
    if fancy:
        raise SdvizError(f"The template {template!r} uses {', '.join(fancy)}; only plain {{word}} or {{a_word}} can be "
                         f"filled in, with no format spec, conversion, attribute or index ({example}).")
    fields = [f for f, _, _ in parts]
    unknown = [f"{{{f}}}" for f in fields if f not in TEMPLATE_FIELDS]
    if unknown:
        raise SdvizError(f"The template {template!r} uses {', '.join(unknown)}; only {{word}} and {{a_word}} can be "
                         f"filled in ({example}).")
    if not fields:
        raise SdvizError(f"The template {template!r} has no {{word}} or {{a_word}} placeholder ({example}).")
    return template


def fill_template(template: str, word: str) -> str:
    """The prompt for `word`: {word} is the word, {a_word} the word with its article."""
    return template.format(word=word, a_word=with_article(word))


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
    if path.is_dir():
        raise SdvizError(f"Ratings file {path} is a folder; pass the CSV/XLSX file itself with --ratings PATH.")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise SdvizError(f"Ratings file {path} is larger than {MAX_FILE_BYTES // 2**20} MB; a norms table is a CSV/XLSX "
                         "of words x attributes, so pass a smaller table.")
    try:
        if path.suffix.lower() in (".xlsx", ".xls"):
            df = pd.read_excel(path, dtype=object, keep_default_na=False, nrows=MAX_ROWS + 1)
        else:
            df = pd.read_csv(path, dtype=str, keep_default_na=False, nrows=MAX_ROWS + 1)
    except Exception as err:
        raise SdvizError(f"Could not read ratings file {path}: {err}. It must be a CSV or XLSX table.") from None
    if len(df) > MAX_ROWS or len(df.columns) > MAX_COLUMNS:
        raise SdvizError(f"{path}: the table has {'more than ' + str(MAX_ROWS) if len(df) > MAX_ROWS else len(df)} rows and "
                         f"{len(df.columns)} columns; sdviz takes at most {MAX_ROWS} words and {MAX_COLUMNS} columns.")
    for column in df.columns:
        long = [i for i, cell in enumerate(df[column].tolist()) if len(str(cell)) > MAX_CELL_CHARS]
        if len(str(column)) > MAX_CELL_CHARS or long:
            where = f"row {long[0] + 2}, " if long else "the header of "
            raise SdvizError(f"{path}: {where}column '{str(column)[:40]}' holds more than {MAX_CELL_CHARS} characters; "
                             "cells of a norms table are words and numbers.")
    return df


def _numeric_column(df, column: str, path: Path, allow_na: bool, rows: list[int] | None = None,
                    missing: set[str] | frozenset = frozenset({NA_MARKER})) -> np.ndarray:
    """Floats of one column; a cell in `missing` (with allow_na) is NaN. `rows`: file row of each cell."""
    out = np.empty(len(df))
    rows = list(range(len(df))) if rows is None else rows
    for i, cell in enumerate(df[column].tolist()):
        text = str(cell).strip()
        if allow_na and text.lower() in missing:
            out[i] = np.nan
            continue
        try:
            value = float(text)
        except ValueError:
            value = None
        if value is None or not np.isfinite(value):
            what = "is empty" if text == "" else f"holds {text[:40]!r}, not a number"
            raise SdvizError(f"{path}: row {rows[i] + 2}, column '{column}' {what}. Fix the cell or drop the row.")
        out[i] = value
    return out


def load_ratings(path=None, *, selection: str | None = None, groups_json=None, attributes: str | None = None) -> Ratings:
    """Load a ratings table.

    Binder's table gets domains, word classes and categories; `selection` picks a word class
    (nouns (default), verbs, adjectives, all), and attributes left unrated ('na') for some selected
    word are dropped. Any other table: `selection` does not apply; a missing cell stays NaN in
    `values` (that word is left out for that attribute only). `attributes`: comma-separated names,
    or one regular expression matched against whole names, choosing the attribute columns.
    """
    path = Path(path) if path else default_ratings_path()
    if path is None:
        raise SdvizError("No ratings file given. Run `python -m sdviz data fetch binder`, or pass --ratings PATH "
                         "(or set SDVIZ_RATINGS) to a CSV/XLSX with a word column and numeric attribute columns.")
    df = _read_table(path)
    columns = [str(c).strip() for c in df.columns]
    df.columns = columns
    is_binder = {"Word", "WC"} <= set(columns) and set(BINDER_ATTRIBUTES) <= set(columns)
    if is_binder:
        return _load_binder(df, path, selection or "nouns", attributes)
    if selection is not None:
        raise SdvizError(f"--selection picks a word class of Binder's table; {path} is another norms table, so leave "
                         "--selection out (choose columns with --attributes, rows by editing the table).")
    return _load_generic(df, path, groups_json, attributes)


def choose_attributes(available: list[str], spec: str | None, path) -> list[str]:
    """The attributes `spec` names: None -> all; 'a,b,c' -> those names; otherwise a regular
    expression that must match a whole name ('Vis.*|Color')."""
    if spec is None or not spec.strip():
        return list(available)
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if all(n in available for n in names):
        return [a for a in available if a in names]
    if "," in spec:
        unknown = [n for n in names if n not in available]
        raise SdvizError(f"{path}: no attribute column(s) {', '.join(map(repr, unknown[:5]))}; --attributes takes "
                         f"names among {', '.join(available[:8])}{', ...' if len(available) > 8 else ''} or a regular expression.")
    try:
        pattern = re.compile(spec.strip())
    except re.error as err:
        raise SdvizError(f"--attributes {spec!r} is neither an attribute name of {path} nor a valid regular expression ({err}).") from None
    chosen = [a for a in available if pattern.fullmatch(a)]
    if not chosen:
        raise SdvizError(f"--attributes {spec!r} matches no attribute column of {path}; names there include "
                         f"{', '.join(available[:8])}.")
    return chosen


def _check_words(words: list[str], rows: list[int], path: Path, column: str) -> None:
    """Every word present and distinct (case-insensitive): a duplicate could land in a training and a test fold."""
    seen: dict[str, int] = {}
    for w, row in zip(words, rows):
        if not w:
            raise SdvizError(f"{path}: row {row + 2}, column '{column}' is empty.")
        if w.lower() in seen:
            raise SdvizError(f"{path}: row {row + 2}, column '{column}': duplicate word '{w}' (first at row {seen[w.lower()] + 2}). "
                             "Keep one row per word.")
        seen[w.lower()] = row


def _load_binder(df, path: Path, selection: str, attribute_spec: str | None) -> Ratings:
    if selection not in (*WORD_CLASSES, "all"):
        raise SdvizError(f"Unknown selection '{selection}'. Use one of: {', '.join([*WORD_CLASSES, 'all'])}.")
    chosen = choose_attributes(BINDER_ATTRIBUTES, attribute_spec, path)
    word_class = _numeric_column(df, "WC", path, allow_na=False).astype(int)
    keep = np.ones(len(df), bool) if selection == "all" else word_class == WORD_CLASSES[selection]
    if not keep.any():
        raise SdvizError(f"{path}: the selection '{selection}' has no words.")
    rows = np.flatnonzero(keep).tolist()
    df = df[keep].reset_index(drop=True)
    words = [str(w).strip() for w in df["Word"]]
    if selection == "all":  # "used" is rated twice, as a verb and as an adjective: two words, told apart by class
        class_name = {v: k[:-1] for k, v in WORD_CLASSES.items()}
        classes = {}
        for w, c in zip(words, word_class[keep]):
            classes.setdefault(w.lower(), set()).add(c)
        words = [f"{w} ({class_name[c]})" if len(classes[w.lower()]) > 1 else w for w, c in zip(words, word_class[keep])]
    _check_words(words, rows, path, "Word")
    values = np.stack([_numeric_column(df, a, path, allow_na=True, rows=rows) for a in chosen], axis=1)
    rated = ~np.isnan(values).any(axis=0)
    if not rated.any():
        raise SdvizError(f"{path}: none of the chosen attributes is rated for every word of '{selection}'.")
    if not rated.all():
        dropped = [a for a, ok in zip(chosen, rated) if not ok]
        log.warning("Dropping attributes not rated for every selected word: %s", ", ".join(dropped))
    attributes = [a for a, ok in zip(chosen, rated) if ok]
    groups = {a: d for d, attrs in BINDER_DOMAINS.items() for a in attrs if a in attributes}
    categories = [str(c).strip() for c in df["Category"]] if "Category" in df.columns else None
    supers = [str(c).strip() for c in df["Super Category"]] if "Super Category" in df.columns else None
    template = NOUN_TEMPLATE if selection == "nouns" else WORD_TEMPLATE
    return Ratings(f"binder2016-{selection}", str(path), words, attributes, values[:, rated], groups, categories,
                   supers, template)


OPTIONAL_COLUMNS = {"category": "category", "super_category": "super_category", "super category": "super_category",
                    "word_class": "word_class"}  # lower-case header -> role; never attributes


def _load_generic(df, path: Path, groups_json, attribute_spec: str | None) -> Ratings:
    lower = {c.lower(): c for c in df.columns}
    word_col = lower.get("word")
    if word_col is None:
        raise SdvizError(f"{path}: no 'word' column. A norms table needs a column named 'word' and numeric attribute columns.")
    roles = {role: lower[name] for name, role in OPTIONAL_COLUMNS.items() if name in lower}
    available = [c for c in df.columns if c != word_col and c not in roles.values()]
    if not available:
        raise SdvizError(f"{path}: no attribute columns besides '{word_col}'.")
    if df.empty:
        raise SdvizError(f"{path}: the table has no rows.")
    attributes = choose_attributes(available, attribute_spec, path)
    words = [str(w).strip() for w in df[word_col]]
    _check_words(words, list(range(len(words))), path, word_col)
    values = np.stack([_numeric_column(df, a, path, allow_na=True, missing=MISSING_CELLS) for a in attributes], axis=1)
    unrated = [a for a, col in zip(attributes, values.T) if np.isnan(col).all()]
    if unrated:
        raise SdvizError(f"{path}: attribute column(s) {', '.join(map(repr, unrated[:5]))} have no ratings; "
                         "fill them or leave them out with --attributes.")
    groups = {a: "all" for a in attributes}
    if groups_json:
        groups = _read_groups(Path(groups_json), attributes)
    column = {role: [str(c).strip() for c in df[col]] for role, col in roles.items()}
    classes = {c.lower().rstrip("s") for c in column.get("word_class", [])}
    template = NOUN_TEMPLATE if classes == {"noun"} else WORD_TEMPLATE
    return Ratings(Path(path).stem, str(path), words, attributes, values, groups, column.get("category"),
                   column.get("super_category"), template)


def _read_groups(path: Path, attributes: list[str]) -> dict[str, str]:
    """Groups JSON: {"group": ["attr", ...], ...} or {"attr": "group", ...}."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise SdvizError(f"Could not read groups file {path}: {err}.") from None
    if not isinstance(raw, dict):
        raise SdvizError(f"{path}: a groups file is a JSON object, {{\"group\": [\"attr\", ...]}} or {{\"attr\": \"group\"}}.")
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
