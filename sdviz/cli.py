"""Command line: python -m sdviz build / extract / report / bundle push|pull / record / data fetch.

Errors a user can cause are printed as one line (no traceback) with exit status 2.
"""

import argparse
import logging
import sys
from pathlib import Path

from . import __version__
from .build import DEFAULT_BUILD_STEPS
from .config import DEFAULT_SCHEDULER
from .errors import SdvizError


def _add_source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="auto", help="HF id or folder of a Stable Diffusion checkpoint, 'tiny', or 'auto' (default)")
    p.add_argument("--encoder", default=None,
                   help="instead of --model: a sentence-transformers model (folder, hub id, or 'minilm') as a language-only reference")
    p.add_argument("--random-init", action="store_true", help="with --encoder: the same architecture with seeded random weights")
    p.add_argument("--ratings", default=None, help="ratings CSV/XLSX (default: $SDVIZ_RATINGS, else the file `data fetch binder` saved)")
    p.add_argument("--selection", default=None,
                   help="Binder's table only: word class nouns (default), verbs, adjectives or all")
    p.add_argument("--groups", default=None, help="for other norms tables: JSON mapping attribute -> group")
    p.add_argument("--attributes", default=None,
                   help="attribute columns to use: comma-separated names, or one regular expression matching whole names")
    p.add_argument("--template", default=None,
                   help="prompt template with {word} or {a_word} ('a'/'an' + word); default: 'a photo of {a_word}' "
                        "for nouns, '{word}' otherwise")
    p.add_argument("--steps", type=int, default=DEFAULT_BUILD_STEPS)
    p.add_argument("--guidance", type=float, default=7.5)
    p.add_argument("--seeds", default="0", help="comma-separated noise seeds; features are averaged over them")
    p.add_argument("--scheduler", default=DEFAULT_SCHEDULER)
    p.add_argument("--device", default=None)
    p.add_argument("--batch-size", type=int, default=None, help="words per batch (default: chosen for the device)")
    p.add_argument("--cache", default=None, help="feature cache folder (default: $SDVIZ_CACHE or ~/.cache/sdviz, then features/<model-slug>)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _config(args):
    from .build import BuildConfig, parse_seeds

    fields = BuildConfig.__dataclass_fields__
    values = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    values["seeds"] = parse_seeds(args.seeds)
    values["progress"] = not args.quiet
    values["maps"] = not getattr(args, "no_maps", False)
    return BuildConfig(**values)


def cmd_extract(args):
    from .build import extract

    cache, *_ = extract(_config(args))
    print(f"features of {len(cache.words)} words ({', '.join(cache.features)})")


def cmd_build(args):
    from .analysis import summary_rows
    from .build import build

    result = build(_config(args))
    print(f"bundle written to {result.path} ({result.timings['total']:.0f} s); report: {result.path / 'report.html'}")
    for row in summary_rows(result.report):
        step = "" if row["step"] is None else f" (best step {row['step']})"
        print(f"  {row['name']:<14} mean r {row['mean_r']:+.3f} [{row['mean_r_ci'][0]:+.3f}, {row['mean_r_ci'][1]:+.3f}]"
              f"  2v2 {row['two_v_two']:.3f}  p {row.get('p_mean_r') or float('nan'):.3f}{step}")
    return result.path


def cmd_report(args):
    from .build import write_report
    from .hub import parse_hub_id, resolve_bundle

    path = resolve_bundle(args.bundle)  # a folder, or a Hub id (downloaded into the HF cache and checked)
    out = Path(args.out) if args.out else None
    if out is None and not Path(args.bundle).is_dir():  # never write into the HF cache: beside the user instead
        out = Path.cwd() / f"report-{parse_hub_id(args.bundle)[0].replace('/', '--')}.html"
    print(f"report written to {write_report(path, out)}")


def cmd_bundle(args):
    from .hub import pull_bundle, push_bundle

    if args.action == "push":
        url = push_bundle(Path(args.path), args.repo_id, revision=args.revision, private=True if args.private else None)
        print(f"pushed {args.path} to {url}\nuse it with SDVIZ_BUNDLE={args.repo_id} (or `--bundle {args.repo_id}`, "
              f"`python -m sdviz report {args.repo_id}`)")
    else:
        print(pull_bundle(args.spec))


def cmd_data(args):
    from .ratings import fetch_binder

    if args.action != "fetch" or args.dataset != "binder":
        raise SdvizError("Usage: python -m sdviz data fetch binder [--dest PATH]")
    path = fetch_binder(Path(args.dest) if args.dest else None)
    print(f"Binder et al. (2016) ratings verified and saved to {path}\nUse it with --ratings {path} (or it is found automatically).")


def cmd_record(args):
    from .models import load_pipeline
    from .record import default_dir, read_prompts, record_runs

    prompts = read_prompts(args.prompts)
    pipe = load_pipeline(args.model, args.device)
    if pipe.sdviz.warning:
        print(f"note: {pipe.sdviz.warning}", file=sys.stderr)
    out = Path(args.out) if args.out else default_dir(pipe.sdviz.slug)
    path = record_runs(pipe, prompts, out, seed=args.seed, steps=args.steps, guidance=args.guidance,
                       bundle=args.bundle, progress=not args.quiet)
    print(f"{len(prompts)} run(s) recorded in {path}; replay them with sdviz.record.load_recordings('{path}')")
    return path


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sdviz", description="Probe Stable Diffusion for human semantic attributes.")
    p.add_argument("--version", action="version", version=f"sdviz {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("extract", help="capture features of every dataset word into a resumable cache")
    _add_source_args(ex)
    ex.set_defaults(run=cmd_extract)
    bd = sub.add_parser("build", help="extract -> fit -> evaluate -> maps -> probe bundle -> HTML report")
    _add_source_args(bd)
    bd.add_argument("--out", default=None, help="bundle folder (default: $SDVIZ_HOME or ~/.local/share/sdviz, then probes/<model-slug>)")
    bd.add_argument("--folds", type=int, default=10)
    bd.add_argument("--seed", type=int, default=0)
    bd.add_argument("--permutations", type=int, default=100, help="permutation-null size (0: no null)")
    bd.add_argument("--no-maps", action="store_true", help="skip the UMAP maps")
    bd.set_defaults(run=cmd_build)
    rp = sub.add_parser("report", help="write a bundle's self-contained HTML report")
    rp.add_argument("bundle", help="bundle folder, or Hub id OWNER/NAME[@revision]")
    rp.add_argument("--out", default=None)
    rp.set_defaults(run=cmd_report)
    bu = sub.add_parser("bundle", help="share probe bundles on the Hugging Face Hub: bundle push / bundle pull")
    bsub = bu.add_subparsers(dest="action", required=True)
    bp = bsub.add_parser("push", help="check a bundle, write its model card and upload it: bundle push FOLDER OWNER/NAME")
    bp.add_argument("path", help="bundle folder, e.g. probes/<model-slug>")
    bp.add_argument("repo_id", help="Hub model repository OWNER/NAME (created if needed)")
    bp.add_argument("--private", action="store_true", help="create the repository private")
    bp.add_argument("--revision", default=None, help="branch to push to (created if needed; default main)")
    bl = bsub.add_parser("pull", help="download a bundle into the HF cache, check it, print its folder")
    bl.add_argument("spec", help="OWNER/NAME or OWNER/NAME@revision")
    bu.set_defaults(run=cmd_bundle)
    rc = sub.add_parser("record", help="record complete runs (previews, features, decoded attributes, image) to replay without a GPU")
    rc.add_argument("--prompts", required=True, help="text file: one prompt per line, '#' starts a comment")
    rc.add_argument("--model", default="auto", help="HF id or folder of a Stable Diffusion checkpoint, 'tiny', or 'auto' (default)")
    rc.add_argument("--bundle", default=None, help="probe bundle folder for this model: also store the decoded attributes")
    rc.add_argument("--seed", type=int, default=0)
    rc.add_argument("--steps", type=int, default=20)
    rc.add_argument("--guidance", type=float, default=7.5)
    rc.add_argument("--device", default=None)
    rc.add_argument("--out", default=None, help="recordings folder (default: recordings/<model-slug>); rerun to resume")
    rc.add_argument("--quiet", action="store_true", help="no progress bar")
    rc.set_defaults(run=cmd_record)
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
    except OSError as err:  # a path the user gave cannot be read or written (permissions, full disk, a file for a folder)
        print(f"error: {err.strerror or err}{f': {err.filename}' if err.filename else ''}; check the paths you passed.",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished work is kept; rerun the same command to resume.", file=sys.stderr)
        return 130
    return 0
