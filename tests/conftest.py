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
