"""Probe bundles to and from the Hugging Face Hub, with their model cards (the transfer itself: `hub.py`).

A pulled bundle is checked exactly like a local one (`load_bundle`). The model card (README.md) is generated into
a staging copy at each push: the user's bundle folder is never modified, and any README.md already in it is
replaced on the Hub by the generated card.
"""

from pathlib import Path

import huggingface_hub as hf

from . import __version__
from .config import is_random_weight_model
from .errors import SdvizError
from .hub import is_hub_id, parse_hub_id, pull_folder, push_folder
from .labels import scheduler_note

CODE_LICENSE = "apache-2.0"
BINDER_CITATION = """@article{binder2016toward,
  title   = {Toward a brain-based componential semantic representation},
  author  = {Binder, Jeffrey R. and Conant, Lisa L. and Humphries, Colin J. and Fernandino, Leonardo and
             Simons, Stephen B. and Aguilar, Mario and Desai, Rutvik H.},
  journal = {Cognitive Neuropsychology},
  volume  = {33},
  number  = {3-4},
  pages   = {130--174},
  year    = {2016},
  doi     = {10.1080/02643294.2016.1147426}
}"""


def _is_hub_model(model) -> bool:
    return is_hub_id(model) and "@" not in model


def bundle_card(bundle, repo_id: str | None = None) -> str:
    """The model card of a probe bundle: YAML metadata (library, license, tags, base model, sdviz block), which
    model it probes, the dataset and its citation, the settings, and the summary table from report.json."""
    from .results import summary_rows

    meta, report = bundle.meta, bundle.report
    model = meta.get("model", "unknown")
    settings = dict(report.get("settings", {}))
    dataset = meta.get("dataset", {})
    data = hf.ModelCardData(
        library_name="sdviz", license=CODE_LICENSE, base_model=model if _is_hub_model(model) else None,
        tags=["sdviz", "probing", "interpretability", "stable-diffusion", "ridge-regression", "semantic-features"],
        sdviz={"version": meta.get("sdviz_version", __version__), "pushed_with": __version__, "model": model,
               "kind": meta.get("kind"), "dataset": dataset.get("name"), "dataset_source": dataset.get("source"),
               "citation": "Binder et al. (2016), Cognitive Neuropsychology 33(3-4), doi:10.1080/02643294.2016.1147426",
               "n_words": report.get("n_words"), "n_attributes": len(dataset.get("attributes", [])),
               "steps": meta.get("steps"), "representations": meta.get("representations")},
    )
    run = {k: meta.get(k) for k in ("kind", "steps", "scheduler", "checkpoint_scheduler", "guidance", "template", "seeds")}
    rows = []
    for row in summary_rows(report):
        ci = row.get("mean_r_ci") or [float("nan")] * 2
        p = row.get("p_mean_r")
        rows.append(f"| `{row['name']}` | {'—' if row['step'] is None else row['step']} | {row['mean_r']:+.3f} "
                    f"[{ci[0]:+.3f}, {ci[1]:+.3f}] | {row['two_v_two']:.3f} | {'—' if p is None else f'{p:.3f}'} |")
    where = repo_id or "OWNER/NAME"
    lines = [
        "---", data.to_yaml(), "---", "",
        f"# sdviz probe bundle: {model}", "",
        f"Ridge probes that decode human-rated semantic attributes from the representations of **{model}**, "
        f"built with sdviz {meta.get('sdviz_version', __version__)}.",
        *(["", f"**The built-in `{model}` model has seeded random weights: this bundle is for trying sdviz out; its numbers "
            "sit near the word-form baseline by design and say nothing about Stable Diffusion.**"] if is_random_weight_model(model) else []),
        "",
        "Use it in the sdviz app or CLI (downloaded once into the Hugging Face cache, then checked like a local bundle):",
        "", "```bash", f"SDVIZ_BUNDLE={where} python app.py --model {model}", f"python -m sdviz report {where}",
        f"python -m sdviz bundle pull {where}", "```", "",
        "## Dataset", "",
        f"{dataset.get('name', 'ratings')} ({dataset.get('source', '')}): {report.get('n_words', '?')} words, "
        f"{len(dataset.get('attributes', []))} attributes. Human ratings of Binder et al. (2016); the bundle holds the "
        "words and the probes fitted to their ratings — the ratings' own terms apply to them.", "",
        "```bibtex", BINDER_CITATION, "```", "",
        "## Settings", "",
        *(f"- {k}: `{v}`" for k, v in (run | settings).items() if v is not None and k != "alphas"),
        *(["", note] if (note := scheduler_note(meta.get("scheduler"), meta.get("checkpoint_scheduler"))) else []),
        "",
        "## Summary (cross-validated, from report.json)", "",
        "Per representation, its best denoising step (k = 0 is pure noise) by mean r. r: Pearson correlation of held-out "
        "predictions with the ratings, scored within folds, with a 95% interval from the folds (refitting included); 2v2: pairwise "
        "discrimination (chance 0.5); p: permutation p-value of mean r. `baseline.wordform` is a probe on word form alone. "
        "The best step is picked on these same numbers, so per-step rows are slightly optimistic; report.html has every step.",
        "", "| representation | best step | mean r [95% CI] | 2v2 | p |", "|---|---|---|---|---|", *rows, "",
        "## Files", "",
        "`probes.safetensors` (ridge weights per representation × step), `maps.safetensors` (UMAP maps), `meta.json`, "
        "`report.json` (every number) and `report.html` (the self-contained report). No pickle.", "",
    ]
    return "\n".join(lines)


def push_bundle(path, repo_id: str, *, revision: str | None = None, private: bool | None = None,
                token: str | None = None) -> str:
    """Check a local bundle, generate its model card and upload both; return the commit URL."""
    from .bundle import load_bundle

    bundle = load_bundle(path)  # refuse to publish a damaged or partial bundle
    repo, _ = parse_hub_id(repo_id)
    return push_folder(path, repo_id, bundle_card(bundle, repo), revision=revision, private=private, token=token,
                       commit_message=f"sdviz {__version__}: probe bundle for {bundle.meta.get('model')}")


def pull_bundle(spec: str, *, token: str | None = None, cache_dir=None) -> Path:
    """Download "OWNER/NAME[@revision]" (or reuse the cached copy) and check it exactly like a local bundle."""
    from .bundle import load_bundle

    path = pull_folder(spec, repo_type="model", token=token, cache_dir=cache_dir)
    load_bundle(path)
    return path


def resolve_bundle(spec, *, token: str | None = None, cache_dir=None) -> Path:
    """Where a bundle is accepted: an existing folder as is; else a Hub id (OWNER/NAME[@rev]) is pulled."""
    if isinstance(spec, Path) or not is_hub_id(spec):
        if Path(spec).is_dir():
            return Path(spec)
        raise SdvizError(f"No bundle folder at {spec}, and it is not a Hub id (OWNER/NAME[@revision]): build one with "
                         "`python -m sdviz build`, or pass a folder or a Hub id.")
    try:
        return pull_bundle(spec, token=token, cache_dir=cache_dir)
    except SdvizError as err:
        raise SdvizError(f"'{spec}' is not a folder here, so it was read as a Hub id: {err}") from None
