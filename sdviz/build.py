"""The build pipeline: ratings -> features -> probes and every number -> maps -> bundle -> report.

`cli.py` only parses arguments into a `BuildConfig` and calls `build`; the app's automatic
first-run build calls the same function (`BuildConfig.automatic`). Each stage's wall time is kept in
`BuildResult.timings` (`io.stage`; printed by the CLI, compared by `python -m sdviz.bench build`).
"""

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import __version__
from .config import DEFAULT_SCHEDULER, MAX_SIDE, MAX_STEPS, MIN_SIDE
from .errors import SdvizError
from .io import bundle_dir, feature_cache_dir, safe_name, stage

DEFAULT_BUILD_STEPS = 10
MAP_PREFIXES = ("clip.pooled", "clip.mean", "unet.", "text.embedding")  # representations that get UMAP maps


@dataclass
class BuildConfig:
    model: str = "auto"  # HF id, local folder, "tiny" or "auto"
    encoder: str | None = None  # instead of model: a sentence-transformers model ("minilm", folder or id)
    random_init: bool = False  # with encoder: same architecture, seeded random weights
    ratings: str | None = None  # None: $SDVIZ_RATINGS, else the fetched Binder file
    selection: str | None = None  # Binder only: nouns (None), verbs, adjectives, all
    groups: str | None = None
    attributes: str | None = None  # comma-separated names or one regular expression; None: all
    template: str | None = None  # None: the dataset's own (Binder nouns "a photo of {a_word}", else "{word}")
    steps: int = DEFAULT_BUILD_STEPS
    guidance: float = 7.5
    seeds: tuple[int, ...] = (0,)
    scheduler: str = DEFAULT_SCHEDULER
    size: int | None = None  # image side in pixels of the extraction runs; None: the model's own (512 for SD 1.5)
    device: str | None = None
    batch_size: int | None = None  # None: chosen for the device (extract.auto_batch_size)
    cache: str | None = None  # feature cache folder
    out: str | None = None  # bundle folder
    folds: int = 10
    seed: int = 0
    permutations: int = 100
    maps: bool = True
    progress: bool = True
    automatic: bool = False  # the app's automatic first build (reduced settings): the report says so


@dataclass
class BuildResult:
    path: Path
    report: dict
    timings: dict[str, float] = field(default_factory=dict)


def check_config(config: BuildConfig) -> None:
    """Refuse settings that cannot work before any data or model is loaded (one sentence each)."""
    from .ratings import check_template

    whole = {"steps": (1, MAX_STEPS), "batch_size": (1, 4096), "folds": (2, None), "permutations": (0, None)}
    for name, (lo, hi) in whole.items():
        value = getattr(config, name)
        if name == "batch_size" and value is None:  # chosen for the device
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < lo or (hi is not None and value > hi):
            flag = "--" + name.replace("_", "-")
            bound = f"from {lo} to {hi}" if hi is not None else f"{lo} or more"
            raise SdvizError(f"{flag} must be a whole number {bound}; got {value!r}.")
    if config.size is not None and (isinstance(config.size, bool) or not isinstance(config.size, int)
                                    or not MIN_SIDE <= config.size <= MAX_SIDE or config.size % 8):
        raise SdvizError(f"--size must be a multiple of 8 from {MIN_SIDE} to {MAX_SIDE}; got {config.size!r}.")
    if not (0 <= config.guidance < float("inf")):
        raise SdvizError(f"--guidance must be a finite number of 0 or more; got {config.guidance!r}.")
    if config.template is not None:
        check_template(config.template)
    for flag, folder in (("--cache", config.cache), ("--out", config.out)):
        if folder and Path(folder).exists() and not Path(folder).is_dir():
            raise SdvizError(f"{flag} {folder} is a file; pass a folder (it is created if missing).")
    if config.groups and not Path(config.groups).is_file():
        raise SdvizError(f"Groups file {config.groups} does not exist; pass a JSON file with --groups PATH.")


def check_folds(ratings, folds: int) -> None:
    """Refuse (before any model work) when the words rated on every attribute, or those rated on
    one attribute, are too few for `folds` outer folds."""
    complete = int(ratings.complete.sum())
    if complete < folds:
        raise SdvizError(f"Only {complete} words are rated on every attribute, fewer than --folds {folds}; use fewer folds, "
                         "or leave the attributes with most missing cells out with --attributes.")
    if complete < 2 * folds:  # r is scored within each fold (docs/methods.md): a fold of one word scores nothing
        raise SdvizError(f"Only {complete} words are rated on every attribute: {folds}-fold cross-validation needs at least "
                         f"{2 * folds} (two held-out words per fold); use --folds {max(2, complete // 2)} or a larger table."
                         if complete >= 4 else
                         f"Only {complete} words are rated on every attribute; cross-validation needs at least 4 (two "
                         "held-out words in each of 2 folds): use a larger table.")
    rated = (~np.isnan(ratings.values)).sum(0)
    short = [(a, int(k)) for a, k in zip(ratings.attributes, rated) if k < folds]
    if short:
        a, k = short[0]
        raise SdvizError(f"Attribute '{a}' is rated for only {k} words, fewer than --folds {folds}; leave it out with "
                         "--attributes or use fewer folds.")


def source(config: BuildConfig, pipe=None):
    """(encode, settings, slug, pipe or None) for the model or reference encoder asked for."""
    import logging

    from .extract import diffusion_encoder, text_encoder

    template = config.template or template_for(config)
    if config.encoder:
        encode, settings = text_encoder(config.encoder, template=template, random_init=config.random_init,
                                        device=config.device or "cpu")
        slug = "text--" + safe_name("".join(c if c.isalnum() or c in "-_." else "-" for c in Path(config.encoder).name))
        return encode, settings, slug + ("--random-init" if config.random_init else ""), None
    if pipe is None:
        from .models import load_pipeline

        pipe = load_pipeline(config.model, device=config.device, scheduler=config.scheduler)
        if pipe.sdviz.warning:
            logging.getLogger("sdviz").warning(pipe.sdviz.warning)
    encode, settings = diffusion_encoder(pipe, template=template, seeds=list(config.seeds),
                                         steps=config.steps, guidance=config.guidance, size=config.size)
    return encode, settings, pipe.sdviz.slug, pipe


def load_config_ratings(config: BuildConfig):
    """The ratings a build uses: the table, less any constant attribute column (left out with one warning)."""
    import logging

    from .ratings import drop_constant_attributes, load_ratings

    ratings = load_ratings(config.ratings, selection=config.selection, groups_json=config.groups, attributes=config.attributes)
    ratings, dropped = drop_constant_attributes(ratings)
    if dropped:
        logging.getLogger("sdviz").warning(
            "Left out %d attribute column(s) that give every word the same rating, so there is nothing to decode: %s.",
            len(dropped), ", ".join(dropped[:10]) + (" ..." if len(dropped) > 10 else ""))
    return ratings


def template_for(config: BuildConfig) -> str:
    """The dataset's own template when --template is not given (see docs/methods.md)."""
    return load_config_ratings(config).template


def extract(config: BuildConfig, pipe=None, timings: dict | None = None, ratings=None):
    """Features of every rated word, cached: (FeatureCache, Ratings, settings, slug)."""
    from dataclasses import replace

    from .extract import extract_features

    timings = {} if timings is None else timings
    from .extract import auto_batch_size

    check_config(config)
    ratings = ratings or load_config_ratings(config)
    config = replace(config, template=config.template or ratings.template)
    with stage(timings, "load"):
        encode, settings, slug, pipe = source(config, pipe)
    cache = Path(config.cache) if config.cache else feature_cache_dir(slug)
    batch_size = config.batch_size or auto_batch_size(pipe.sdviz.device if pipe is not None else config.device or "cpu")
    with stage(timings, "extract"):
        features = extract_features(encode, ratings.words, cache, settings=settings, batch_size=batch_size,
                                    progress=config.progress)
    return features, ratings, settings, slug


def wordform_features(words: list[str]):
    """A floor every encoder gets for free: word form alone (length in characters and words)."""
    import torch

    return torch.tensor([[len(w), len(w.split()), 1 / len(w)] for w in words], dtype=torch.float64)


def build(config: BuildConfig, pipe=None) -> BuildResult:
    """Extract -> cross-validate and score every representation x step -> fit -> maps -> bundle -> report.

    Missing ratings (docs/methods.md): the whole-profile numbers come from the words rated on every
    attribute (complete cases); an attribute with missing cells is scored again on all the words
    rated for it, and that r replaces its complete-case r. Probes are fitted on the complete cases.
    """
    import torch

    from . import analysis, maps, probes, thesis
    from .bundle import save_bundle
    from .report import write_report

    timings: dict[str, float] = {}
    started = time.perf_counter()
    check_config(config)
    ratings = load_config_ratings(config)
    check_folds(ratings, config.folds)  # before any model work
    cache, ratings, settings, slug = extract(config, pipe, timings, ratings)
    features = cache.features | {analysis.WORDFORM: wordform_features(cache.words)}
    complete = ratings.complete
    rows = torch.as_tensor(np.flatnonzero(complete))
    Y = ratings.values[complete]
    categories = None if ratings.categories is None else [c for c, ok in zip(ratings.categories, complete) if ok]
    common = dict(folds=config.folds, seed=config.seed, n_permutations=config.permutations)
    reps = analysis.analyse({n: X[rows] for n, X in features.items()}, Y, ratings.attributes, ratings.groups, categories,
                            progress=config.progress, timings=timings, **common)
    missing = missing_ratings(ratings)
    for j, a in enumerate(ratings.attributes):
        if a not in missing["attributes"]:
            continue
        rated = torch.as_tensor(np.flatnonzero(~np.isnan(ratings.values[:, j])))
        with warnings.catch_warnings():  # one attribute: no attribute pairs, so its disambiguation is empty (unused)
            warnings.simplefilter("ignore", RuntimeWarning)
            own = analysis.analyse({n: X[rated] for n, X in features.items()}, ratings.values[rated.numpy()][:, [j]], [a],
                                   {a: ratings.groups[a]}, None, progress=False, **common)
        for name, rep in reps.items():
            for k, res in enumerate(rep["results"]):
                res["r"][j] = own[name]["results"][k]["r"][0]
    with stage(timings, "fit"):
        fitted = {}
        for name, X in cache.features.items():
            Xs = X[rows].transpose(0, 1) if X.dim() == 3 else X[rows][None]
            fitted[name] = probes.fit_ridge(Xs, torch.as_tensor(Y))
    map_names = [n for n in cache.features if n.startswith(MAP_PREFIXES)] if config.maps else []
    with stage(timings, "maps"):
        map_tensors = maps.build_maps(cache.features, map_names, seed=config.seed, progress=config.progress) if map_names else {}
    per_step = [n for n, X in cache.features.items() if X.dim() == 3]
    dims = {n: int(X.shape[-1]) for n, X in cache.features.items()}
    meta = {
        "model": settings["model"], "kind": settings["kind"], "sdviz_version": __version__,
        "steps": max(settings["steps"], 1), "timesteps": cache.timesteps, "scheduler": settings.get("scheduler"),
        "checkpoint_scheduler": settings.get("checkpoint_scheduler"), "size": settings.get("size"),
        "guidance": settings.get("guidance"), "template": settings["template"], "seeds": settings.get("seeds"),
        "representations": list(cache.features), "per_step": per_step, "dims": dims, "maps": map_names,
        "words": cache.words, "categories": ratings.categories, "super_categories": ratings.super_categories,
        "dataset": {"name": ratings.name, "source": Path(ratings.source).name, "attributes": ratings.attributes,
                    "groups": ratings.groups, "group_names": ratings.group_names},
    }
    report = {
        "model": settings["model"], "dataset": ratings.name, "n_words": int(complete.sum()), "attributes": ratings.attributes,
        "groups": ratings.groups, "group_names": ratings.group_names, "steps": meta["steps"], "timesteps": cache.timesteps,
        "settings": {"folds": config.folds, "seed": config.seed, "permutations": config.permutations,
                     "intervals": "folds (Nadeau-Bengio t, fold correlation measured on the nulls)", "alphas": [float(a) for a in probes.ALPHAS], "knn_k": analysis.KNN_K,
                     "template": settings["template"]},
        "human_corr": np.round(np.nan_to_num(np.corrcoef(Y.T)), 4).tolist(),
        "missing": missing,
        "representations": reps,
    }
    # what the UNet adds beyond CLIP, entanglement, and the findings as verdicts (issue 18): on the complete cases,
    # with the same folds and permutations as every other number
    report |= thesis.analyse_thesis({n: X[rows] for n, X in features.items()}, Y, report, timings=timings, **common)
    if config.automatic:  # reduced settings: report.html and the app's Report tab say so
        report["settings"] |= {"automatic": True, "steps": config.steps}
    out = Path(config.out) if config.out else bundle_dir(slug)
    with stage(timings, "save"):
        save_bundle(out, fitted, meta, report, map_tensors)
        write_report(out)
    timings["total"] = time.perf_counter() - started
    return BuildResult(out, report, timings)


def missing_ratings(ratings) -> dict:
    """What the report says about missing cells: how many words are complete cases, and per
    attribute with missing cells the number of words it was scored on and the words left out."""
    unrated = np.isnan(ratings.values)
    return {
        "complete_words": int((~unrated.any(1)).sum()), "total_words": len(ratings.words),
        "attributes": {a: {"n_words": int((~unrated[:, j]).sum()),
                           "unrated_words": [w for w, u in zip(ratings.words, unrated[:, j]) if u]}
                       for j, a in enumerate(ratings.attributes) if unrated[:, j].any()},
    }


def parse_seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise SdvizError(f"--seeds must be comma-separated whole numbers, e.g. 0,1,2; got {text!r}.") from None
    if not seeds:
        raise SdvizError("--seeds needs at least one seed.")
    return seeds
