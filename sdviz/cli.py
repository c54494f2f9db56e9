"""Command line: python -m sdviz build / extract / report / data fetch.

Errors a user can cause are printed as one line (no traceback) with exit status 2.
"""

import argparse
import logging
import sys
import time
from pathlib import Path

from . import __version__
from .config import DEFAULT_SCHEDULER, DEFAULT_TEMPLATE
from .errors import SdvizError

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BUILD_STEPS = 10
MAP_PREFIXES = ("clip.pooled", "clip.mean", "unet.", "text.embedding")  # representations that get UMAP maps


def _add_source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="auto", help="HF id or folder of a Stable Diffusion checkpoint, 'tiny', or 'auto' (default)")
    p.add_argument("--encoder", default=None,
                   help="instead of --model: a sentence-transformers model (folder, hub id, or 'minilm') as a language-only reference")
    p.add_argument("--random-init", action="store_true", help="with --encoder: the same architecture with seeded random weights")
    p.add_argument("--ratings", default=None, help="ratings CSV/XLSX (default: $SDVIZ_RATINGS, else the file `data fetch binder` saved)")
    p.add_argument("--selection", default="nouns", help="Binder word class: nouns (default), verbs, adjectives, all")
    p.add_argument("--groups", default=None, help="for other norms tables: JSON mapping attribute -> group")
    p.add_argument("--template", default=DEFAULT_TEMPLATE)
    p.add_argument("--steps", type=int, default=DEFAULT_BUILD_STEPS)
    p.add_argument("--guidance", type=float, default=7.5)
    p.add_argument("--seeds", default="0", help="comma-separated noise seeds; features are averaged over them")
    p.add_argument("--scheduler", default=DEFAULT_SCHEDULER)
    p.add_argument("--device", default=None)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--cache", default=None, help="feature cache folder (default: cache/<model-slug>)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise SdvizError(f"--seeds must be comma-separated whole numbers, e.g. 0,1,2; got {text!r}.") from None
    if not seeds:
        raise SdvizError("--seeds needs at least one seed.")
    return seeds


def _source(args):
    """(encode, settings, slug, pipe or None) for the model or reference encoder asked for."""
    from .extract import diffusion_encoder, text_encoder

    if args.encoder:
        encode, settings = text_encoder(args.encoder, template=args.template, random_init=args.random_init,
                                        device=args.device or "cpu")
        slug = "text--" + "".join(c if c.isalnum() or c in "-_." else "-" for c in Path(args.encoder).name)
        return encode, settings, slug + ("--random-init" if args.random_init else ""), None
    from .models import load_pipeline

    pipe = load_pipeline(args.model, device=args.device, scheduler=args.scheduler)
    if pipe.sdviz.warning:
        logging.getLogger("sdviz").warning(pipe.sdviz.warning)
    encode, settings = diffusion_encoder(pipe, template=args.template, seeds=_parse_seeds(args.seeds),
                                         steps=args.steps, guidance=args.guidance)
    return encode, settings, pipe.sdviz.slug, pipe


def cmd_extract(args):
    from .extract import extract_features
    from .ratings import load_ratings

    ratings = load_ratings(args.ratings, selection=args.selection, groups_json=args.groups)
    encode, settings, slug, _ = _source(args)
    cache = Path(args.cache or ROOT / "cache" / slug)
    result = extract_features(encode, ratings.words, cache, settings=settings, batch_size=args.batch_size, progress=not args.quiet)
    print(f"features of {len(result.words)} words in {cache} ({', '.join(result.features)})")
    return result, ratings, settings, slug


def cmd_build(args):
    import numpy as np
    import torch

    from . import analysis, maps, probes

    started = time.time()
    cache, ratings, settings, slug = cmd_extract(args)
    Y = ratings.values
    # A floor every encoder gets for free: word form alone (length in characters and words).
    form = torch.tensor([[len(w), len(w.split()), 1 / len(w)] for w in cache.words], dtype=torch.float64)
    reps = analysis.analyse(cache.features | {analysis.WORDFORM: form}, Y, ratings.attributes, ratings.groups, ratings.categories,
                            folds=args.folds, seed=args.seed, n_permutations=args.permutations,
                            bootstraps=args.bootstraps, progress=not args.quiet)
    fitted = {}
    for name, X in cache.features.items():
        Xs = X.transpose(0, 1) if X.dim() == 3 else X[None]
        fitted[name] = probes.fit_ridge(Xs, torch.as_tensor(Y))
    map_names = [n for n in cache.features if n.startswith(MAP_PREFIXES)] if not args.no_maps else []
    map_tensors = maps.build_maps(cache.features, map_names, seed=args.seed, progress=not args.quiet) if map_names else {}
    per_step = [n for n, X in cache.features.items() if X.dim() == 3]
    dims = {n: int(X.shape[-1]) for n, X in cache.features.items()}
    meta = {
        "model": settings["model"], "kind": settings["kind"], "sdviz_version": __version__,
        "steps": max(settings["steps"], 1), "timesteps": cache.timesteps, "scheduler": settings.get("scheduler"),
        "guidance": settings.get("guidance"), "template": settings["template"], "seeds": settings.get("seeds"),
        "representations": list(cache.features), "per_step": per_step, "dims": dims, "maps": map_names,
        "words": cache.words, "categories": ratings.categories,
        "dataset": {"name": ratings.name, "source": Path(ratings.source).name, "attributes": ratings.attributes,
                    "groups": ratings.groups, "group_names": ratings.group_names},
    }
    report = {
        "model": settings["model"], "dataset": ratings.name, "n_words": len(cache.words), "attributes": ratings.attributes,
        "groups": ratings.groups, "group_names": ratings.group_names, "steps": meta["steps"], "timesteps": cache.timesteps,
        "settings": {"folds": args.folds, "seed": args.seed, "permutations": args.permutations, "bootstraps": args.bootstraps,
                     "alphas": [float(a) for a in probes.ALPHAS], "knn_k": analysis.KNN_K, "template": settings["template"]},
        "human_corr": np.round(np.corrcoef(Y.T), 4).tolist(),
        "representations": reps,
    }
    out = Path(args.out or ROOT / "probes" / slug)
    probes.save_bundle(out, fitted, meta, report, map_tensors)
    html = write_report(out)
    print(f"bundle written to {out} ({time.time() - started:.0f} s); report: {html}")
    for row in analysis.summary_rows(report):
        step = "" if row["step"] is None else f" (best step {row['step']})"
        print(f"  {row['name']:<14} mean r {row['mean_r']:+.3f} [{row['mean_r_ci'][0]:+.3f}, {row['mean_r_ci'][1]:+.3f}]"
              f"  2v2 {row['two_v_two']:.3f}  p {row.get('p_mean_r') or float('nan'):.3f}{step}")
    return out


def write_report(bundle_path: Path, out: Path | None = None) -> Path:
    from .extract import atomic_write
    from .plots import report_html
    from .probes import load_bundle

    bundle = load_bundle(bundle_path)
    out = Path(out or Path(bundle_path) / "report.html")
    page = report_html(bundle.report, bundle.meta)
    atomic_write(out, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))
    return out


def cmd_report(args):
    print(f"report written to {write_report(Path(args.bundle), Path(args.out) if args.out else None)}")


def cmd_data(args):
    from .ratings import fetch_binder

    if args.action != "fetch" or args.dataset != "binder":
        raise SdvizError("Usage: python -m sdviz data fetch binder [--dest PATH]")
    path = fetch_binder(Path(args.dest) if args.dest else None)
    print(f"Binder et al. (2016) ratings verified and saved to {path}\nUse it with --ratings {path} (or it is found automatically).")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sdviz", description="Probe Stable Diffusion for human semantic attributes.")
    p.add_argument("--version", action="version", version=f"sdviz {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("extract", help="capture features of every dataset word into a resumable cache")
    _add_source_args(ex)
    ex.set_defaults(run=cmd_extract)
    bd = sub.add_parser("build", help="extract -> fit -> evaluate -> maps -> probe bundle -> HTML report")
    _add_source_args(bd)
    bd.add_argument("--out", default=None, help="bundle folder (default: probes/<model-slug>)")
    bd.add_argument("--folds", type=int, default=10)
    bd.add_argument("--seed", type=int, default=0)
    bd.add_argument("--permutations", type=int, default=100, help="permutation-null size (0: no null)")
    bd.add_argument("--bootstraps", type=int, default=1000)
    bd.add_argument("--no-maps", action="store_true", help="skip the UMAP maps")
    bd.set_defaults(run=cmd_build)
    rp = sub.add_parser("report", help="write a bundle's self-contained HTML report")
    rp.add_argument("bundle")
    rp.add_argument("--out", default=None)
    rp.set_defaults(run=cmd_report)
    dt = sub.add_parser("data", help="fetch a ratings dataset: data fetch binder")
    dt.add_argument("action", choices=["fetch"])
    dt.add_argument("dataset", choices=["binder"])
    dt.add_argument("--dest", default=None)
    dt.set_defaults(run=cmd_data)
    return p


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parser().parse_args(argv)
    try:
        args.run(args)
    except SdvizError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished work is kept; rerun the same command to resume.", file=sys.stderr)
        return 130
    return 0
