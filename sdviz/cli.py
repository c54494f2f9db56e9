"""Command line: python -m sdviz build / extract / report / bundle push|pull / record / steer / steer-eval / data fetch.

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
    p.add_argument("--model", default="auto", help="HF id or folder of a Stable Diffusion checkpoint, a stand-in with random weights ('tiny', 'tiny-sd2', 'tiny-sdxl', 'full-sd15', 'full-sd21', 'full-sdxl'), or 'auto' (default)")
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
    p.add_argument("--size", type=int, default=None, help="image side in pixels of the extraction runs (default: the model's own)")
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
    from .build import build
    from .results import summary_rows

    result = build(_config(args))
    print(f"bundle written to {result.path} ({result.timings['total']:.0f} s); report: {result.path / 'report.html'}")
    for row in summary_rows(result.report):
        step = "" if row["step"] is None else f" (best step {row['step']})"
        print(f"  {row['name']:<14} mean r {row['mean_r']:+.3f} [{row['mean_r_ci'][0]:+.3f}, {row['mean_r_ci'][1]:+.3f}]"
              f"  2v2 {row['two_v_two']:.3f}  p {row.get('p_mean_r') or float('nan'):.3f}{step}")
    return result.path


def cmd_report(args):
    from .hub import parse_hub_id
    from .io import safe_name
    from .publish import resolve_bundle
    from .report import write_report

    path = resolve_bundle(args.bundle)  # a folder, or a Hub id (downloaded into the HF cache and checked)
    out = Path(args.out) if args.out else None
    if out is None and not Path(args.bundle).is_dir():  # never write into the HF cache: beside the user instead
        out = Path.cwd() / f"report-{safe_name(parse_hub_id(args.bundle)[0].replace('/', '--'))}.html"
    print(f"report written to {write_report(path, out)}")


def cmd_bundle(args):
    from .publish import pull_bundle, push_bundle

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
    path = record_runs(pipe, prompts, out, seed=args.seed, steps=args.steps, guidance=args.guidance, size=args.size,
                       bundle=args.bundle, progress=not args.quiet)
    print(f"{len(prompts)} run(s) recorded in {path}; replay them with sdviz.record.load_recordings('{path}')")
    return path


def _add_steer_args(p: argparse.ArgumentParser) -> None:
    """What steer and steer-eval share: the bundle, its model and the run's settings."""
    p.add_argument("--bundle", required=True, help="probe bundle folder, or Hub id OWNER/NAME[@revision]")
    p.add_argument("--model", default=None, help="default: the model the bundle was built for")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--guidance", type=float, default=7.5)
    p.add_argument("--device", default=None)


def _float_list(text: str, what: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        values = []
    if not values:
        raise SdvizError(f"{what} must be comma-separated numbers such as 1,2,4; got '{text}'.")
    return values


def _check_steps(steps: int) -> None:
    from .config import MAX_STEPS

    if not 1 <= steps <= MAX_STEPS:
        raise SdvizError(f"--steps is the number of denoising steps, a whole number from 1 to {MAX_STEPS}; got {steps}.")


def _steer_setup(args):
    from .bundle import check_bundle_matches, load_bundle
    from .models import load_pipeline
    from .publish import resolve_bundle

    bundle_path = resolve_bundle(args.bundle)
    bundle = load_bundle(bundle_path)
    pipe = load_pipeline(args.model or bundle.meta["model"], args.device)
    if pipe.sdviz.warning:
        print(f"note: {pipe.sdviz.warning}", file=sys.stderr)
    check_bundle_matches(bundle, pipe)
    return pipe, bundle, bundle_path


def cmd_steer(args):
    import json

    from .io import atomic_write, new_folder, safe_name
    from .steering import check_strength, steer

    # every argument is checked before the model loads: a bad one costs nothing and leaves nothing behind
    strength = check_strength(args.strength, "--strength")
    _check_steps(args.steps)
    at_steps = None if args.steer_steps is None else [int(k) for k in _float_list(args.steer_steps, "--steer-steps")]
    if at_steps is not None and not all(0 <= k < args.steps for k in at_steps):
        raise SdvizError(f"--steer-steps must lie in 0..{args.steps - 1} (step 0 is pure noise) for --steps {args.steps}; "
                         f"got {args.steer_steps}.")
    pipe, bundle, _ = _steer_setup(args)
    result = steer(pipe, bundle, args.prompt, attribute=args.attribute, strength=strength, where=args.where,
                   at_steps=at_steps, seed=args.seed, steps=args.steps, guidance=args.guidance)
    # the attribute comes from a ratings table or a bundle: one harmless path component, never a path of its own
    out = Path(args.out or safe_name(f"steer-{args.attribute}-{args.where}-{args.strength:+g}"))
    doc = {"prompt": result.prompt, "attribute": result.attribute, "strength": result.strength, "where": result.where,
           "steps_steered": result.steps_steered, "seed": args.seed, "steps": args.steps, "guidance": args.guidance,
           "model": bundle.meta["model"], "target_change": result.target_change, "others_change": result.others_change,
           "decoded_original": result.decoded_original, "decoded_steered": result.decoded_steered}
    text = json.dumps(doc, indent=1, allow_nan=False)  # before any file: a value JSON cannot hold stops here
    written = []
    with new_folder(out):
        try:
            for name, tr in (("original", result.original), ("steered", result.steered)):
                atomic_write(out / f"{name}.png", lambda tmp, im=tr.images[0]: im.save(tmp, format="PNG"))
                written.append(out / f"{name}.png")
            atomic_write(out / "steer.json", lambda tmp: Path(tmp).write_text(text))
        except BaseException:  # never two PNGs without their steer.json
            for path in written:
                path.unlink(missing_ok=True)
            raise
    print(f"original.png, steered.png and steer.json written to {out}")
    for name in result.target_change:
        print(f"  {name:<14} {args.attribute} {result.target_change[name]:+.3f}   others (mean |change|) "
              f"{result.others_change[name]:.3f}")
    return out


def cmd_steer_eval(args):
    import json

    import numpy as np

    from .build import BuildConfig, load_config_ratings
    from .extract import load_features
    from .io import atomic_write, feature_cache_dir
    from .ratings import fill_template
    from .steering import check_strength, steer_eval

    strengths = [check_strength(x, "Each of --strengths") for x in _float_list(args.strengths, "--strengths")]
    _check_steps(args.steps)
    pipe, bundle, bundle_path = _steer_setup(args)
    cache = load_features(Path(args.cache) if args.cache else feature_cache_dir(pipe.sdviz.slug))
    ratings = load_config_ratings(BuildConfig(model=bundle.meta["model"], ratings=args.ratings))
    if list(ratings.attributes) != list(bundle.attributes):
        raise SdvizError("These ratings do not have the bundle's attributes: pass the --ratings the bundle was built from.")
    row = {w: i for i, w in enumerate(ratings.words)}
    keep = [i for i, w in enumerate(cache.words) if w in row and not np.isnan(ratings.values[row[w]]).any()]
    if len(keep) < 10:
        raise SdvizError("The feature cache and the ratings share fewer than 10 fully rated words: pass the --cache and "
                         "--ratings of the build that made this bundle.")
    words = [cache.words[i] for i in keep]
    features = {n: X[keep] for n, X in cache.features.items()}
    Y = np.stack([ratings.values[row[w]] for w in words])
    prompts = [fill_template(bundle.meta["template"], w) for w in words]
    out = steer_eval(pipe, bundle, features, words, Y, prompts=prompts, n_words=args.words,
                     strengths=strengths, wheres=[w.strip() for w in args.where.split(",")],
                     readout=args.readout, steps=args.steps, guidance=args.guidance, seed=args.seed, folds=args.folds,
                     progress=not args.quiet)
    local = Path(args.bundle).is_dir()
    path = Path(args.out) if args.out else (bundle_path / "steer_eval.json" if local else Path.cwd() / "steer_eval.json")
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(out, indent=1, allow_nan=False)))
    print(f"steering specificity written to {path}")
    for where, by_strength in out["summary"].items():
        for strength, row_ in by_strength.items():
            print(f"  {where:<10} strength {float(strength):+g}: target {row_['target']:+.3f}, others {row_['others']:.3f}, "
                  f"random direction {row_['random_target']:+.3f}")
    if local and not args.out:
        from .report import write_report

        print(f"report updated: {write_report(bundle_path)}")
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
    rc.add_argument("--model", default="auto", help="HF id or folder of a Stable Diffusion checkpoint, a stand-in with random weights ('tiny', 'tiny-sd2', 'tiny-sdxl', 'full-sd15', 'full-sd21', 'full-sdxl'), or 'auto' (default)")
    rc.add_argument("--bundle", default=None, help="probe bundle folder for this model: also store the decoded attributes")
    rc.add_argument("--seed", type=int, default=0)
    rc.add_argument("--steps", type=int, default=20)
    rc.add_argument("--guidance", type=float, default=7.5)
    rc.add_argument("--size", type=int, default=None, help="image side in pixels (default: the model's own)")
    rc.add_argument("--device", default=None)
    rc.add_argument("--out", default=None, help="recordings folder (default: recordings/<model-slug>); rerun to resume")
    rc.add_argument("--quiet", action="store_true", help="no progress bar")
    rc.set_defaults(run=cmd_record)
    st = sub.add_parser("steer", help="generate a prompt twice, the second time shifted along an attribute's probe direction")
    _add_steer_args(st)
    st.add_argument("--prompt", required=True)
    st.add_argument("--attribute", required=True, help="an attribute of the bundle, e.g. Loud, Pleasant, UpperLimb")
    st.add_argument("--strength", type=float, required=True, help="how far the probe's reading moves, in rating units")
    st.add_argument("--where", default="clip.cond", help="clip.cond (the conditioning the denoiser reads) or a block, e.g. unet.mid")
    st.add_argument("--steer-steps", default=None, help="comma-separated steps k to steer a block at (default: all)")
    st.add_argument("--steps", type=int, default=20)
    st.add_argument("--out", default=None, help="folder for original.png, steered.png, steer.json")
    st.set_defaults(run=cmd_steer)
    se = sub.add_parser("steer-eval", help="steering specificity over the dataset's words (held-out directions, random control)")
    _add_steer_args(se)
    se.add_argument("--ratings", default=None, help="the ratings the bundle was built from (default as in build)")
    se.add_argument("--cache", default=None, help="the build's feature cache (default: the model's default cache)")
    se.add_argument("--words", type=int, default=6, help="how many of the dataset's words to steer")
    se.add_argument("--strengths", default="1,2,4")
    se.add_argument("--where", default="clip.cond,unet.mid", help="comma-separated places to steer at")
    se.add_argument("--readout", default=None, help="representation read at the last step (default: the last UNet block)")
    se.add_argument("--steps", type=int, default=6)
    se.add_argument("--folds", type=int, default=3)
    se.add_argument("--out", default=None, help="JSON path (default: steer_eval.json in the bundle folder, and the report is updated)")
    se.add_argument("--quiet", action="store_true")
    se.set_defaults(run=cmd_steer_eval)
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
