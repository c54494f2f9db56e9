import os

# Tests never touch the network: set before huggingface_hub is imported anywhere.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BINDER_CSV = ROOT.parent / "shared" / "data" / "binder2016_wordset1_ratings.csv"


@pytest.fixture(scope="session")
def tiny_pipe():
    from sdviz.models import load_pipeline

    return load_pipeline("tiny", device="cpu")


@pytest.fixture(scope="session")
def binder_csv():
    assert BINDER_CSV.exists(), f"the Binder ratings are expected at {BINDER_CSV} (../shared/data)"
    return BINDER_CSV


def all_hooks(*modules) -> int:
    """Number of forward (pre-)hooks left anywhere inside `modules`."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for root in modules for m in root.modules())


@pytest.fixture(scope="session")
def subset_csv(tmp_path_factory, binder_csv):
    """The first 60 Binder nouns, written at test time to a temporary file (never into the repo)."""
    lines = binder_csv.read_text().splitlines()
    header, rows = lines[0], [line for line in lines[1:] if line.split(",")[2] == "1"][:60]
    path = tmp_path_factory.mktemp("ratings") / "subset.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, subset_csv):
    """A probe bundle for the tiny model built by the real CLI on 60 words (small settings, for speed)."""
    from sdviz.cli import main

    out = tmp_path_factory.mktemp("bundle") / "tiny"
    cache = out.parent / "cache"
    args = ["build", "--model", "tiny", "--device", "cpu", "--ratings", str(subset_csv), "--steps", "3", "--folds", "5",
            "--permutations", "10", "--cache", str(cache), "--out", str(out), "--quiet"]
    assert main(args) == 0
    return out


FAMILY_MODELS = ["tiny", "tiny-sd2", "tiny-sdxl"]  # one built-in stand-in per family (SD 1.x, SD 2.x, SDXL)


@pytest.fixture(scope="session", params=FAMILY_MODELS)
def pipe(request):
    """Each family's tiny stand-in in turn (session scope: built once each)."""
    if request.param == "tiny":
        return request.getfixturevalue("tiny_pipe")
    from sdviz.models import load_pipeline

    return load_pipeline(request.param, device="cpu")


def pipe_modules(pipe) -> list:
    """Every module of `pipe` that capture may hook: the denoiser and each text encoder."""
    return [m for m in (pipe.unet, pipe.text_encoder, getattr(pipe, "text_encoder_2", None)) if m is not None]


def sdviz_hooks(*modules) -> int:
    """Number of sdviz's own forward (pre-)hooks left inside `modules`.

    transformers 5 leaves its own output-recording hooks on CLIP layers after a call with
    output_hidden_states=True (as SDXL's pipeline makes), so `all_hooks` would count those too.
    """
    return sum(
        getattr(fn, "__module__", "").startswith("sdviz")
        for root in modules for m in root.modules()
        for fn in [*m._forward_hooks.values(), *m._forward_pre_hooks.values()]
    )


@pytest.fixture(scope="session")
def words24_csv(tmp_path_factory, binder_csv):
    """The first 24 Binder nouns, written at test time to a temporary file (never into the repo)."""
    lines = binder_csv.read_text().splitlines()
    header, rows = lines[0], [line for line in lines[1:] if line.split(",")[2] == "1"][:24]
    path = tmp_path_factory.mktemp("ratings24") / "words24.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


@pytest.fixture(scope="session")
def family_bundle(tmp_path_factory, words24_csv):
    """family_bundle(pipe) -> path of a 24-word probe bundle for that pipe's model, built once per model
    by `sdviz.build.build` with tiny settings (2 steps, 3 folds, 5 permutations)."""
    from sdviz.build import BuildConfig, build

    built: dict = {}

    def get(pipe):
        model = pipe.sdviz.model_id
        if model not in built:
            root = tmp_path_factory.mktemp(f"bundle-{model}")
            config = BuildConfig(model=model, ratings=str(words24_csv), steps=2, folds=3, permutations=5,
                                 device="cpu", cache=str(root / "cache"), out=str(root / "bundle"), progress=False)
            built[model] = build(config, pipe=pipe).path
        return built[model]

    return get
