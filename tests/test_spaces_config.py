"""The Space config (README front matter) and requirements.txt against ZeroGPU's rules.

Facts from the Hugging Face docs (hub-docs `docs/hub/spaces-zerogpu.md` and `spaces-config-reference.md`, 2026):
ZeroGPU runs Gradio Spaces only, on Python 3.10.13 or 3.12.12, with PyTorch 2.8.0, 2.9.1, 2.10.0 or 2.11.0
("almost all versions from 2.8.0 to latest"); `preload_from_hub` items are "repo" or "repo file1,file2[ commit]",
downloaded into the default HF cache at build time. The hardware flavour of ZeroGPU is `zero-a10g`
(huggingface_hub's SpaceHardware.ZERO_A10G). Update ZEROGPU_* when those docs change.
"""

import re
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from sdviz.config import DEFAULT_MODEL

ROOT = Path(__file__).resolve().parent.parent
ZEROGPU_PYTHON = {"3.10", "3.10.13", "3.12", "3.12.12"}
ZEROGPU_TORCH = ("2.8.0", "2.9.1", "2.10.0", "2.11.0")
ZEROGPU_HARDWARE = "zero-a10g"
# What StableDiffusionPipeline.from_pretrained(id, variant="fp16", use_safetensors=True) reads from an SD 1.x repo,
# with the safety checker on (it is on whenever SPACE_ID is set).
FP16_COMPONENTS = {
    "text_encoder": "text_encoder/model.fp16.safetensors",
    "unet": "unet/diffusion_pytorch_model.fp16.safetensors",
    "vae": "vae/diffusion_pytorch_model.fp16.safetensors",
    "safety_checker": "safety_checker/model.fp16.safetensors",
}
OTHER_FILES = {"model_index.json", "scheduler/scheduler_config.json", "tokenizer/merges.txt", "tokenizer/vocab.json",
               "tokenizer/tokenizer_config.json", "tokenizer/special_tokens_map.json",
               "feature_extractor/preprocessor_config.json"}


@pytest.fixture(scope="module")
def front_matter() -> dict:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n"), "README.md must open with the Space's YAML front matter"
    return yaml.safe_load(text.split("---\n", 2)[1])


@pytest.fixture(scope="module")
def requirements() -> dict[str, Requirement]:
    lines = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    reqs = [Requirement(line) for line in lines if line]
    return {r.name.lower().replace("_", "-"): r for r in reqs}


def ci_torch_pin() -> Version:
    """The torch version the README's test command (what CI runs) installs before requirements.txt."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    command = readme.split("<!-- test-command -->", 1)[1].split("<!-- /test-command -->", 1)[0]
    return Version(re.search(r"torch==([0-9][0-9.]*)", command)[1])


def test_a_gradio_space_on_zerogpu(front_matter):
    assert front_matter["sdk"] == "gradio"  # ZeroGPU runs Gradio Spaces only
    assert front_matter["suggested_hardware"] == ZEROGPU_HARDWARE
    assert str(front_matter["python_version"]) in ZEROGPU_PYTHON
    assert isinstance(front_matter["python_version"], str), "quote python_version: YAML reads 3.10 as the number 3.1"
    assert (ROOT / front_matter["app_file"]).is_file()
    assert front_matter["license"] == "apache-2.0"


def test_gradio_6_pinned_and_consistent_with_sdk_version(front_matter, requirements):
    spec = requirements["gradio"].specifier
    assert spec == SpecifierSet(">=6,<7")
    sdk = Version(str(front_matter["sdk_version"]))
    assert sdk.major == 6 and sdk in spec  # the Space installs gradio==sdk_version: it must satisfy requirements.txt


def test_torch_spec_admits_zerogpu_and_ci_without_another_download(requirements):
    spec = requirements["torch"].specifier
    admitted = [v for v in ZEROGPU_TORCH if Version(v) in spec]
    assert admitted, f"torch{spec} admits none of ZeroGPU's versions {ZEROGPU_TORCH}: the Space would not build"
    assert not any(Version(v) in spec for v in ("2.3.1", "2.5.1", "2.7.1")), "admits torch versions ZeroGPU dropped"
    # CI installs torch==X first; requirements.txt must accept it, or pip would fetch another (multi-GB) torch.
    assert ci_torch_pin() in spec
    assert not requirements["torch"].url and not requirements["torch"].extras


def test_models_and_preloaded_fp16_files(front_matter):
    models = front_matter["models"]
    assert DEFAULT_MODEL in models
    preload = {}
    for item in front_matter["preload_from_hub"]:
        repo, *rest = item.split()
        preload[repo] = rest[0].split(",") if rest else None  # None: the whole repository (fine for a small bundle)
    for model in models:  # each checkpoint: only the files from_pretrained(variant="fp16") reads
        files = preload.get(model)
        assert files, f"preload_from_hub lists no files of {model}: its whole repo (all precisions, tens of GB) would be fetched"
        assert len(files) == len(set(files))
        assert set(files) == OTHER_FILES | set(FP16_COMPONENTS.values()) | {f"{c}/config.json" for c in FP16_COMPONENTS}
        weights = [f for f in files if f.endswith((".safetensors", ".bin", ".ckpt", ".pt", ".msgpack", ".onnx"))]
        assert all(f.endswith(".fp16.safetensors") for f in weights), f"only fp16 safetensors weights: {weights}"


def test_spaces_doc_is_linked_and_names_what_the_host_sets():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "(docs/spaces.md)" in readme
    doc = (ROOT / "docs" / "spaces.md").read_text(encoding="utf-8")
    for needle in ("python -m sdviz build", "python -m sdviz bundle push", "SDVIZ_BUNDLE", "SDVIZ_MODEL", "ZeroGPU",
                   "cpu-basic", 'variant="fp16"', "preload_from_hub"):
        assert needle in doc, needle
