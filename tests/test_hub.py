"""Bundles through the Hugging Face Hub: only the network calls are replaced (by a local "remote" folder);
card writing, staging, error translation, the HF cache layout and bundle checks are the real code."""

import json
import shutil
import sys
from pathlib import Path

import huggingface_hub
import pytest
import yaml
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

from sdviz import __version__, hub, publish
from sdviz.bundle import check_bundle_matches, load_bundle
from sdviz.cli import main
from sdviz.errors import SdvizError

REAL_SNAPSHOT_DOWNLOAD = huggingface_hub.snapshot_download
BUNDLE_FILES = {"meta.json", "report.json", "probes.safetensors", "maps.safetensors", "report.html"}


def http_error(cls, status: int, url: str = "https://huggingface.co/api/models/x/y"):
    """A huggingface_hub HTTP error as the library raises it (built on its own HTTP client's Response)."""
    http = sys.modules[HfHubHTTPError.__mro__[1].__module__.split(".")[0]]  # httpx (hf 1.x) or its successor
    return cls(f"{status} Client Error for url {url}", response=http.Response(status, request=http.Request("GET", url)))


class Remote:
    """The Hub, as folders: root/<repo_type>/<owner>/<name>/<revision>/... Records every call."""

    def __init__(self, root: Path):
        self.root, self.calls, self.fail = root, [], {}

    def repo(self, repo_id, repo_type="model", revision=None) -> Path:
        return self.root / (repo_type or "model") / repo_id / (revision or "main")

    def _maybe_fail(self, name):
        if name in self.fail:
            raise self.fail[name]

    def create_repo(self, api, repo_id, *, repo_type=None, private=None, exist_ok=False, **_):
        self.calls.append(("create_repo", repo_id, repo_type, private, api.token))
        self._maybe_fail("create_repo")
        self.repo(repo_id, repo_type).mkdir(parents=True, exist_ok=True)
        return f"https://huggingface.co/{repo_id}"

    def create_branch(self, api, repo_id, *, branch, repo_type=None, exist_ok=False, **_):
        self.calls.append(("create_branch", repo_id, branch))
        if not self.repo(repo_id, repo_type, branch).exists():
            shutil.copytree(self.repo(repo_id, repo_type), self.repo(repo_id, repo_type, branch))

    def upload_folder(self, api, *, repo_id, folder_path, repo_type=None, revision=None, commit_message=None, **_):
        self.calls.append(("upload_folder", repo_id, revision, commit_message))
        self._maybe_fail("upload_folder")
        # Like the Hub: files with the same name are overwritten, others are left untouched.
        shutil.copytree(folder_path, self.repo(repo_id, repo_type, revision), dirs_exist_ok=True)
        return huggingface_hub.CommitInfo(commit_url=f"https://huggingface.co/{repo_id}/commit/0123abcd",
                                          commit_message=commit_message or "", commit_description="", oid="0123abcd")

    def snapshot_download(self, repo_id, *, repo_type=None, revision=None, cache_dir=None, **_):
        """Copy the remote revision into the real HF cache layout (refs/<rev> -> snapshots/<hash>/)."""
        self.calls.append(("snapshot_download", repo_id, revision))
        self._maybe_fail("snapshot_download")
        if not (self.root / (repo_type or "model") / repo_id).exists():
            raise http_error(RepositoryNotFoundError, 404)
        src = self.repo(repo_id, repo_type, revision)
        if not src.exists():
            raise http_error(RevisionNotFoundError, 404)
        storage = Path(cache_dir) / f"{repo_type or 'model'}s--{repo_id.replace('/', '--')}"
        commit = f"{abs(hash((repo_id, revision))):040x}"[:40]
        shutil.copytree(src, storage / "snapshots" / commit, dirs_exist_ok=True)
        (storage / "refs").mkdir(parents=True, exist_ok=True)
        (storage / "refs" / (revision or "main")).write_text(commit)
        return str(storage / "snapshots" / commit)


@pytest.fixture
def remote(tmp_path, monkeypatch):
    r = Remote(tmp_path / "remote")
    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # pushing is refused offline; the network itself is replaced below
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda api, *a, **k: r.create_repo(api, *a, **k))
    monkeypatch.setattr(huggingface_hub.HfApi, "create_branch", lambda api, *a, **k: r.create_branch(api, *a, **k))
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", lambda api, *a, **k: r.upload_folder(api, *a, **k))
    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda repo_id, **k: r.snapshot_download(repo_id, **(k | {"cache_dir": k.get("cache_dir") or cache})))
    r.cache = cache
    return r


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n", 2)[1])


def bundle_for(model: str, tiny_bundle: Path, tmp_path: Path) -> Path:
    """A copy of the tiny bundle that says it was built for `model`."""
    out = tmp_path / "other"
    shutil.copytree(tiny_bundle, out)
    meta = json.loads((out / "meta.json").read_text())
    meta["model"] = model
    (out / "meta.json").write_text(json.dumps(meta))
    return out


def test_push_then_pull_round_trips_byte_identically(remote, tiny_bundle):
    before = files(tiny_bundle)
    url = publish.push_bundle(tiny_bundle, "someone/sdviz-tiny")
    assert url == "https://huggingface.co/someone/sdviz-tiny/commit/0123abcd"
    assert files(tiny_bundle) == before  # the user's folder is untouched: no README.md left behind
    assert [c[0] for c in remote.calls] == ["create_repo", "upload_folder"]
    assert remote.calls[0][4] == "hf_test_token"  # the token from the environment reached HfApi

    local = publish.pull_bundle("someone/sdviz-tiny")
    assert local.parent.parent.parent == remote.cache  # the HF cache layout: models--owner--name/snapshots/<hash>
    pulled = files(local)
    card = pulled.pop("README.md").decode()
    assert set(before) >= BUNDLE_FILES
    assert pulled == before  # every file except the generated card, byte for byte

    meta = front_matter(card)
    assert meta["library_name"] == "sdviz" and meta["license"] == "apache-2.0" and "sdviz" in meta["tags"]
    assert "base_model" not in meta  # "tiny" is not a Hub model
    info = meta["sdviz"]
    bundle = load_bundle(tiny_bundle)
    assert info["model"] == "tiny" and info["version"] == __version__ and info["pushed_with"] == __version__
    assert info["dataset"] == bundle.meta["dataset"]["name"] and "Binder" in info["citation"]
    assert info["n_words"] == 60 and info["n_attributes"] == 65
    assert huggingface_hub.ModelCard(card).data.library_name == "sdviz"  # the Hub's own parser agrees
    # The summary table carries report.json's numbers.
    from sdviz.results import summary_rows

    row = next(r for r in summary_rows(bundle.report) if r["name"] == "clip.pooled")
    assert f"| `clip.pooled` | — | {row['mean_r']:+.3f} [" in card
    assert "doi     = {10.1080/02643294.2016.1147426}" in card and "folds: `5`" in card


def test_a_pulled_bundle_for_another_model_is_refused(remote, tiny_bundle, tmp_path, tiny_pipe):
    other = bundle_for("stable-diffusion-v1-5/stable-diffusion-v1-5", tiny_bundle, tmp_path)
    publish.push_bundle(other, "someone/sd15-probes", private=True)
    assert remote.calls[0][3] is True
    local = publish.pull_bundle("someone/sd15-probes")
    assert front_matter((local / "README.md").read_text())["base_model"] == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    with pytest.raises(SdvizError, match=r"built for 'stable-diffusion-v1-5/stable-diffusion-v1-5', but the running model is 'tiny'"):
        check_bundle_matches(load_bundle(local), tiny_pipe)
    publish.push_bundle(tiny_bundle, "someone/tiny-probes")
    check_bundle_matches(load_bundle(publish.pull_bundle("someone/tiny-probes")), tiny_pipe)  # the right one is accepted


def test_revisions_are_branches(remote, tiny_bundle):
    publish.push_bundle(tiny_bundle, "someone/p")
    publish.push_bundle(tiny_bundle, "someone/p", revision="v2")
    assert ("create_branch", "someone/p", "v2") in remote.calls
    assert (publish.pull_bundle("someone/p@v2") / "meta.json").read_bytes() == (tiny_bundle / "meta.json").read_bytes()
    with pytest.raises(SdvizError, match="has no revision 'v3'"):
        publish.pull_bundle("someone/p@v3")
    with pytest.raises(SdvizError, match="Two revisions given"):
        publish.push_bundle(tiny_bundle, "someone/p@v2", revision="v3")


def test_a_damaged_bundle_is_neither_pushed_nor_accepted_after_pull(remote, tiny_bundle, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_bundle, broken)
    (broken / "report.json").write_text("{not json")
    with pytest.raises(SdvizError, match="damaged"):
        publish.push_bundle(broken, "someone/broken")
    assert remote.calls == []  # refused before any network call
    # Someone else's upload is damaged on the Hub: pulling checks it like a local bundle.
    hub.push_folder(broken, "someone/broken", "---\nlibrary_name: sdviz\n---\n")
    with pytest.raises(SdvizError, match="damaged"):
        publish.pull_bundle("someone/broken")


def test_generic_folders_travel_as_datasets_too(remote, tmp_path):
    """Recorded runs use the same helpers with repo_type="dataset"; temporaries of atomic_write stay home."""
    runs = tmp_path / "runs"
    (runs / "run-0").mkdir(parents=True)
    (runs / "index.json").write_text('{"runs": ["run-0"]}')
    (runs / "run-0" / "features.safetensors").write_bytes(bytes(range(256)))
    (runs / ".index.json-abc.tmp").write_text("half-written")
    (runs / "README.md").write_text("my own notes")  # replaced by the card in the upload, kept at home
    url = hub.push_folder(runs, "someone/runs", "---\nlibrary_name: sdviz\n---\n# Recorded runs\n", repo_type="dataset")
    assert url.endswith("/commit/0123abcd") and remote.calls[0][2] == "dataset"
    local = hub.pull_folder("someone/runs", repo_type="dataset")
    assert local.parent.parent.name == "datasets--someone--runs"
    got = files(local)
    assert got.pop("README.md").startswith(b"---\nlibrary_name: sdviz")
    assert got == {"index.json": b'{"runs": ["run-0"]}', "run-0/features.safetensors": bytes(range(256))}
    assert (runs / "README.md").read_text() == "my own notes" and (runs / ".index.json-abc.tmp").exists()
    with pytest.raises(SdvizError, match="No model repository someone/runs"):  # a dataset is not a model repo
        hub.pull_folder("someone/runs")
    with pytest.raises(SdvizError, match="No folder at"):
        hub.push_folder(tmp_path / "missing", "someone/runs", "card")


def test_one_rule_for_hub_ids_offline_and_spaces(tmp_path, monkeypatch):
    assert hub.is_hub_id("someone/tiny") and hub.is_hub_id("someone/tiny@v1") and hub.is_hub_id(" someone/tiny ")
    for local in ("./someone/tiny", "/someone/tiny", "~/tiny", "a/b/c", "tiny", "", None):
        assert not hub.is_hub_id(local), local
    monkeypatch.chdir(tmp_path)
    (tmp_path / "someone" / "tiny").mkdir(parents=True)
    assert not hub.is_hub_id("someone/tiny")  # a folder here always wins
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    for value, offline in [("1", True), ("ON", True), ("true", True), ("0", False), ("", False), ("no", False)]:
        monkeypatch.setenv("HF_HUB_OFFLINE", value)
        assert hub.offline_by_setting() is offline, value  # the setting; hub.offline() also asks the network once
    monkeypatch.setenv("SPACE_ID", "someone/sdviz")
    assert hub.on_space()
    monkeypatch.delenv("SPACE_ID")
    assert not hub.on_space()


def test_resolve_bundle(remote, tiny_bundle, tmp_path, monkeypatch):
    assert publish.resolve_bundle(tiny_bundle) == tiny_bundle  # a folder is used as is, no download
    assert publish.resolve_bundle(str(tiny_bundle)) == tiny_bundle
    monkeypatch.chdir(tiny_bundle.parent.parent)  # a relative folder that also looks like OWNER/NAME is still a folder
    rel = f"{tiny_bundle.parent.name}/{tiny_bundle.name}"
    assert publish.resolve_bundle(rel) == Path(rel)
    assert remote.calls == []
    publish.push_bundle(tiny_bundle, "someone/tiny")
    assert publish.resolve_bundle("someone/tiny") == publish.pull_bundle("someone/tiny")
    for bad in (tmp_path / "missing", "./missing", "not an id", "a/b/c"):
        with pytest.raises(SdvizError, match="No bundle folder at .*not a Hub id"):
            publish.resolve_bundle(bad)
    with pytest.raises(SdvizError, match="'nobody/nothing' is not a folder here, so it was read as a Hub id: No model repository"):
        publish.resolve_bundle("nobody/nothing")


def test_offline_uses_the_hf_cache_and_says_what_to_do_without_it(remote, tiny_bundle, tmp_path, monkeypatch):
    publish.push_bundle(tiny_bundle, "someone/tiny")
    online = publish.pull_bundle("someone/tiny")  # downloaded into the cache
    # Offline, with the real snapshot_download: the cached copy is found without the network ...
    monkeypatch.setattr(huggingface_hub, "snapshot_download", REAL_SNAPSHOT_DOWNLOAD)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert publish.pull_bundle("someone/tiny", cache_dir=remote.cache) == online
    # ... and a repository that is not cached is one clear error.
    with pytest.raises(SdvizError) as err:
        publish.pull_bundle("someone/never-pulled", cache_dir=remote.cache)
    assert str(err.value).startswith("HF_HUB_OFFLINE is set and someone/never-pulled is not in the Hugging Face cache")
    assert "bundle pull someone/never-pulled" in str(err.value)
    with pytest.raises(SdvizError, match="HF_HUB_OFFLINE is set, so nothing can be pushed"):
        publish.push_bundle(tiny_bundle, "someone/tiny")


@pytest.mark.parametrize(("where", "error", "message"), [
    ("snapshot_download", lambda: http_error(RepositoryNotFoundError, 404), "No model repository someone/x on the Hugging Face Hub"),
    ("snapshot_download", lambda: http_error(HfHubHTTPError, 401), r"refused your token \(401\)"),
    ("snapshot_download", lambda: http_error(HfHubHTTPError, 503), "answered HTTP 503"),
    ("snapshot_download", lambda: huggingface_hub.errors.LocalEntryNotFoundError("Got: ConnectError"), "the Hub could not be reached"),
    ("create_repo", lambda: http_error(HfHubHTTPError, 401), r"refused your token \(401\)"),
    ("create_repo", lambda: http_error(HfHubHTTPError, 403), r"may not push to someone/x \(403\)"),
    ("upload_folder", lambda: http_error(RepositoryNotFoundError, 404), "No model repository someone/x"),
    ("create_repo", lambda: sys.modules[HfHubHTTPError.__mro__[1].__module__.split(".")[0]].ConnectError("no route"),
     "Could not reach the Hugging Face Hub to push to someone/x"),
])
def test_hub_failures_are_one_clear_error(remote, tiny_bundle, where, error, message):
    remote.fail[where] = error()
    with pytest.raises(SdvizError, match=message) as err:
        if where == "snapshot_download":
            publish.pull_bundle("someone/x")
        else:
            publish.push_bundle(tiny_bundle, "someone/x")
    assert err.value.__cause__ is None and err.value.__suppress_context__  # no chained traceback for the CLI


def test_push_without_a_token_says_how_to_log_in(remote, tiny_bundle, tmp_path, monkeypatch):
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    with pytest.raises(SdvizError, match="No Hugging Face token found: log in with `hf auth login`"):
        publish.push_bundle(tiny_bundle, "someone/x")
    assert remote.calls == []
    publish.push_bundle(tiny_bundle, "someone/x", token="hf_explicit")  # an explicit token needs no login
    assert remote.calls[0][4] == "hf_explicit"


def test_cli_bundle_push_pull_and_report_from_the_hub(remote, tiny_bundle, tmp_path, monkeypatch, capsys):
    assert main(["bundle", "push", str(tiny_bundle), "someone/tiny", "--private"]) == 0
    out = capsys.readouterr().out
    assert "https://huggingface.co/someone/tiny/commit/0123abcd" in out and "SDVIZ_BUNDLE=someone/tiny" in out
    assert remote.calls[0][3] is True
    assert main(["bundle", "pull", "someone/tiny"]) == 0
    local = Path(capsys.readouterr().out.strip())
    assert files(local)["meta.json"] == (tiny_bundle / "meta.json").read_bytes()
    monkeypatch.chdir(tmp_path)
    assert main(["report", "someone/tiny"]) == 0  # a Hub id: the report is written here, never into the HF cache
    assert (tmp_path / "report-someone--tiny.html").read_text().startswith("<!DOCTYPE html>") or \
        "<html" in (tmp_path / "report-someone--tiny.html").read_text()[:500]
    assert files(local)["report.html"] == (tiny_bundle / "report.html").read_bytes()
    assert main(["report", "someone/tiny", "--out", str(tmp_path / "r.html")]) == 0 and (tmp_path / "r.html").exists()


@pytest.mark.parametrize("argv", [
    ["bundle", "pull", "nobody/nothing"],
    ["bundle", "pull", "not-an-id"],
    ["bundle", "push", "no/such/folder", "someone/x"],
    ["report", "nobody/nothing"],
])
def test_cli_errors_are_one_line_exit_2(remote, argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
