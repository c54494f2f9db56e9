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
