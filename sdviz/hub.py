"""Probe bundles (and recorded runs) to and from the Hugging Face Hub, with their model cards.

Everything goes through `huggingface_hub`: `HfApi.create_repo` / `upload_folder` to push,
`snapshot_download` to pull (into the usual HF cache, so a second pull and offline use need no
network), tokens from the usual places (`HF_TOKEN`, `hf auth login`). A pulled bundle is checked
exactly like a local one (`bundle.load_bundle`). Every failure a user can cause (no token, offline,
unknown repo, refused token, no network) becomes one `SdvizError` that says what to do.

The model card (README.md) is generated into a staging copy at each push: the user's bundle folder
is never modified, and any README.md already in it is replaced on the Hub by the generated card.
"""

import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import huggingface_hub as hf
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from . import __version__
from .errors import SdvizError

# OWNER/NAME with an optional @revision (a branch, tag or commit); the Hub's own character set for names.
HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*)(?:@(?P<rev>[^\s@]+))?$")
CARD = "README.md"
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


def parse_hub_id(spec: str) -> tuple[str, str | None]:
    """"OWNER/NAME[@revision]" -> (repo_id, revision or None); anything else -> SdvizError."""
    match = HUB_ID.match(str(spec).strip())
    if not match:
        raise SdvizError(f"'{spec}' is not a Hugging Face repository id: write it as OWNER/NAME or OWNER/NAME@revision.")
    return match["repo"], match["rev"]


def looks_like_hub_id(spec) -> bool:
    return isinstance(spec, str) and HUB_ID.match(spec.strip()) is not None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() not in ("", "0", "false", "no", "off")


def _is_network_error(err: BaseException) -> bool:
    # huggingface_hub speaks httpx (1.x) or requests (0.x); their connection errors share no base class with OSError.
    root = type(err).__module__.split(".")[0]
    return isinstance(err, (ConnectionError, TimeoutError)) or root in ("httpx", "httpx2", "requests", "urllib3")


@contextmanager
def _hub_errors(action: str, repo_id: str, revision: str | None = None, repo_type: str = "model"):
    """Turn huggingface_hub's exceptions into one SdvizError each (no traceback reaches the user)."""
    where = f"{repo_id}" + (f"@{revision}" if revision else "")
    try:
        yield
    except SdvizError:
        raise
    except RevisionNotFoundError:
        raise SdvizError(f"The Hub repository {repo_id} has no revision '{revision}': check the name after '@' "
                         "(a branch, tag or commit), or leave it out for the latest.") from None
    except GatedRepoError:
        raise SdvizError(f"{repo_id} is gated on the Hub: accept its terms at https://huggingface.co/{repo_id} "
                         "while logged in, then retry.") from None
    except RepositoryNotFoundError:
        raise SdvizError(f"No {repo_type} repository {where} on the Hugging Face Hub (or it is private and your token "
                         "cannot see it): check the id, or log in with `hf auth login` / set HF_TOKEN.") from None
    except LocalEntryNotFoundError as err:  # snapshot_download: not reachable and not in the cache
        if _offline():
            raise SdvizError(f"HF_HUB_OFFLINE is set and {where} is not in the Hugging Face cache: unset HF_HUB_OFFLINE "
                             f"and run `python -m sdviz bundle pull {where}` once with network access, "
                             "or pass a local bundle folder instead.") from None
        raise SdvizError(f"Could not {action} {where}: the Hub could not be reached and no complete copy is in the "
                         f"Hugging Face cache ({str(err).splitlines()[0][:160]}). Check your connection and retry.") from None
    except HfHubHTTPError as err:
        status = getattr(getattr(err, "response", None), "status_code", None)
        if status == 401:
            raise SdvizError(f"The Hugging Face Hub refused your token (401) while trying to {action} {where}: "
                             "log in again with `hf auth login` or set a valid HF_TOKEN.") from None
        if status == 403:
            raise SdvizError(f"Your Hugging Face token may not {action} {where} (403): use a token with write access "
                             "to that user or organisation (https://huggingface.co/settings/tokens).") from None
        raise SdvizError(f"The Hugging Face Hub answered HTTP {status} while trying to {action} {where} "
                         f"({str(err).splitlines()[0][:160]}). Retry later.") from None
    except Exception as err:
        if _is_network_error(err):
            raise SdvizError(f"Could not reach the Hugging Face Hub to {action} {where} ({type(err).__name__}): "
                             "check your network connection (and HF_ENDPOINT if you set it), then retry.") from None
        raise


def _token_for_upload(token: str | None) -> str:
    if _offline():
        raise SdvizError("HF_HUB_OFFLINE is set, so nothing can be pushed: unset it (or set HF_HUB_OFFLINE=0) and retry.")
    token = token or hf.get_token()
    if not token:
        raise SdvizError("No Hugging Face token found: log in with `hf auth login` (a token with write access) "
                         "or set HF_TOKEN, then retry.")
    return token


def _upload_files(path: Path) -> list[Path]:
    """Files of a folder that travel: everything but hidden files (temporaries of atomic_write) and the model card."""
    return sorted(p for p in path.rglob("*") if p.is_file() and p.relative_to(path) != Path(CARD)
                  and not any(part.startswith(".") for part in p.relative_to(path).parts))


def push_folder(path, repo_id: str, card_text: str, *, repo_type: str = "model", revision: str | None = None,
                private: bool | None = None, token: str | None = None, commit_message: str | None = None) -> str:
    """Upload a folder to a Hub repository in one commit, with `card_text` as its README.md; return the commit URL.

    The repository is created if needed (`private` only applies then); `revision` names a branch, created from
    main if it does not exist. The folder itself is not modified: its files and the card are staged in a
    temporary copy, which is what `upload_folder` sends.
    """
    path = Path(path)
    if not path.is_dir():
        raise SdvizError(f"No folder at {path} to push.")
    repo_id, rev_in_id = parse_hub_id(repo_id)
    if rev_in_id and revision and rev_in_id != revision:
        raise SdvizError(f"Two revisions given ({rev_in_id} in the id, {revision} as --revision): give one.")
    revision = revision or rev_in_id
    token = _token_for_upload(token)
    api = hf.HfApi(token=token, library_name="sdviz", library_version=__version__)
    with tempfile.TemporaryDirectory(prefix="sdviz-push-") as tmp:
        stage = Path(tmp)
        for f in _upload_files(path):
            (stage / f.relative_to(path)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, stage / f.relative_to(path))
        (stage / CARD).write_text(card_text, encoding="utf-8")
        with _hub_errors("push to", repo_id, revision, repo_type):
            api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
            if revision and revision != "main":
                api.create_branch(repo_id, branch=revision, repo_type=repo_type, exist_ok=True)
            info = api.upload_folder(repo_id=repo_id, folder_path=stage, repo_type=repo_type, revision=revision,
                                     commit_message=commit_message or f"sdviz {__version__}: upload {path.name}")
    return str(getattr(info, "commit_url", None) or info)


def pull_folder(spec: str, *, repo_type: str = "model", token: str | None = None, cache_dir=None) -> Path:
    """"OWNER/NAME[@revision]" -> the local snapshot folder in the HF cache (downloaded if needed).

    With HF_HUB_OFFLINE=1 (or no network) a copy already in the cache is used; without one the
    SdvizError says what to do.
    """
    repo_id, revision = parse_hub_id(spec)
    with _hub_errors("download", repo_id, revision, repo_type):
        local = hf.snapshot_download(repo_id, repo_type=repo_type, revision=revision, token=token, cache_dir=cache_dir,
                                     library_name="sdviz", library_version=__version__)
    return Path(local)


# --- probe bundles -------------------------------------------------------------------------------------------------

def _is_hub_model(model) -> bool:
    return looks_like_hub_id(model) and "@" not in model and not os.path.isdir(model)


def bundle_card(bundle, repo_id: str | None = None) -> str:
    """The model card of a probe bundle: YAML metadata (library, license, tags, base model, sdviz block), which
    model it probes, the dataset and its citation, the settings, and the summary table from report.json."""
    from .analysis import summary_rows

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
    run = {k: meta.get(k) for k in ("kind", "steps", "scheduler", "guidance", "template", "seeds")}
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
        *(["", "**The built-in `tiny` model has seeded random weights: this bundle is for trying sdviz out; its numbers "
            "sit near the word-form baseline by design and say nothing about Stable Diffusion.**"] if model == "tiny" else []),
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
    if isinstance(spec, Path) or not looks_like_hub_id(str(spec)):
        if Path(spec).is_dir():
            return Path(spec)
        raise SdvizError(f"No bundle folder at {spec}, and it is not a Hub id (OWNER/NAME[@revision]): build one with "
                         "`python -m sdviz build`, or pass a folder or a Hub id.")
    if Path(spec).is_dir():
        return Path(spec)
    try:
        return pull_bundle(spec, token=token, cache_dir=cache_dir)
    except SdvizError as err:
        raise SdvizError(f"'{spec}' is not a folder here, so it was read as a Hub id: {err}") from None
