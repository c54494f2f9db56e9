"""The Hugging Face Hub, low in the rooms: folders to and from the Hub, and the one place for three questions
asked across sdviz: is this a Hub id (`is_hub_id`), are we offline (`offline`), are we on a Space (`on_space`), which
checkpoint does this model text name (`canonical_model_id`, `same_model`).

Everything goes through `huggingface_hub`: `HfApi.create_repo` / `upload_folder` to push, `snapshot_download` to
pull (into the usual HF cache, so a second pull and offline use need no network), tokens from the usual places
(`HF_TOKEN`, `hf auth login`). Every failure a user can cause (no token, offline, unknown repo, refused token, no
network) becomes one `SdvizError` that says what to do. What is pushed (probe bundles with their model cards,
recorded runs) lives higher up: `publish.py`, `record.py`.
"""

import os
import re
import shutil
import socket
import tempfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import huggingface_hub as hf
from huggingface_hub.constants import ENV_VARS_TRUE_VALUES
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from . import __version__
from .config import is_random_weight_model
from .errors import SdvizError

# OWNER/NAME with an optional @revision (a branch, tag or commit); the Hub's own character set for names.
HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*)(?:@(?P<rev>[^\s@]+))?$")
CARD = "README.md"
def parse_hub_id(spec: str) -> tuple[str, str | None]:
    """"OWNER/NAME[@revision]" -> (repo_id, revision or None); anything else -> SdvizError."""
    match = HUB_ID.match(str(spec).strip())
    if not match:
        raise SdvizError(f"'{spec}' is not a Hugging Face repository id: write it as OWNER/NAME or OWNER/NAME@revision.")
    return match["repo"], match["rev"]


def is_hub_id(spec) -> bool:
    """Whether `spec`, where a folder or a Hub repository is accepted, names the repository: it reads
    OWNER/NAME[@revision] and nothing of that name exists here (a local folder always wins)."""
    return (isinstance(spec, str) and HUB_ID.match(spec.strip()) is not None
            and not Path(spec.strip()).expanduser().exists())


def canonical_model_id(model) -> str:
    """One name per checkpoint: a local folder's resolved absolute path (`folder`, `folder/`, `./folder`, `~/folder`
    and its absolute path are one model), anything else (a Hub id, a stand-in's name such as "tiny") as written, trimmed.
    What bundles, feature caches and recorded runs store as their model, and what they are matched by."""
    text = str(model or "").strip()
    if is_random_weight_model(text):
        return text  # load_pipeline reads a stand-in's name before any folder of that name
    folder = Path(text).expanduser()
    return str(folder.resolve()) if text and folder.is_dir() else text


def same_model(recorded, running) -> bool:
    """Whether a model text recorded earlier (a bundle's, a cache's, a run's, perhaps written before the canonical id,
    e.g. "folder/") names the running model: their canonical ids agree (a relative folder is read from here)."""
    return canonical_model_id(recorded) == canonical_model_id(running)


def offline_by_setting() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) as huggingface_hub reads it, read now: a test or a user may set
    it after huggingface_hub was imported."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in ENV_VARS_TRUE_VALUES


_UNREACHABLE: list[str] = []  # the Hub hosts whose name did not resolve in this process (asked once each)
RESOLVE_TIMEOUT_S = 2.0


def offline() -> bool:
    """Whether to leave the Hub alone: HF_HUB_OFFLINE is set, or the Hub's host name did not resolve (one lookup per
    process, at most RESOLVE_TIMEOUT_S). Without this, a machine with no network waits through huggingface_hub's
    retries (about 35 s for the default model) before falling back; with it, callers load from the cache only."""
    if offline_by_setting():
        return True
    host = urlparse(hf.constants.ENDPOINT).hostname or "huggingface.co"
    if host in _UNREACHABLE:
        return True
    if host not in _RESOLVED:
        pool = ThreadPoolExecutor(max_workers=1)
        lookup = pool.submit(socket.getaddrinfo, host, 443)
        pool.shutdown(wait=False)  # a resolver that hangs is not waited for
        try:
            lookup.result(timeout=RESOLVE_TIMEOUT_S)
            _RESOLVED.append(host)
        except Exception:  # noqa: BLE001 - gaierror, timeout: either way the Hub cannot be reached now
            _UNREACHABLE.append(host)
            return True
    return False


_RESOLVED: list[str] = []


def on_space() -> bool:
    """True when running on a Hugging Face Space (it sets SPACE_ID): public, so safe defaults are stricter."""
    return bool(os.environ.get("SPACE_ID"))


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
        if offline_by_setting():
            fetch = (f"run `python -m sdviz bundle pull {where}` once with network access, or pass a local bundle "
                     "folder instead." if repo_type == "model" else
                     "use it once with network access (it is cached then), or pass a local folder instead.")
            raise SdvizError(f"HF_HUB_OFFLINE is set and {where} is not in the Hugging Face cache: unset HF_HUB_OFFLINE "
                             f"and {fetch}") from None
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
    if offline_by_setting():
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
