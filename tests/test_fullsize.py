"""The full-size tier (issue 16): every path of sdviz on the published SD 1.5 and SD 2.1 architectures.

The stand-ins `full-sd15` and `full-sd21` (random weights, sdviz.standins) are built once into the cache folder and
loaded through `load_pipeline`'s real path. To stay within about four minutes on two cores, each model is loaded
once and built once per module (8 words, 2 steps), every run is 256 px and 2 steps, and the tests reuse one plain
image. SDXL at full size (2.6 B parameters, ~10 GB in float32) does not fit CI's time and memory: here only its
config is checked, built on the meta device (no memory); it runs in `python -m sdviz.bench` (README, docs/models.md).
"""

import gc
import json
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from conftest import pipe_modules, sdviz_hooks

from sdviz import SdvizError, record
from sdviz.bundle import load_bundle
from sdviz.models import load_pipeline

pytestmark = pytest.mark.fullsize

SIZE, STEPS, GUIDANCE, SEED = 256, 2, 7.5, 3
PROMPT = "a photo of a violin"
# published parameter counts (UNet, VAE, text encoder(s)) in millions, as diffusers counts them
PUBLISHED = {"full-sd15": (859.5, 83.7, 123.1), "full-sd21": (865.9, 83.7, 340.4), "full-sdxl": (2567.5, 83.7, 123.1, 694.7)}


def _millions(module) -> float:
    return round(sum(p.numel() for p in module.parameters()) / 1e6, 1)


@dataclass
class Full:
    name: str
    pipe: object
    bundle: object  # the bundle folder
    words: object  # the ratings CSV it was built from
    seen: dict = field(default_factory=dict)  # images and records computed once, shared by the tests

    def plain(self):
        """The plain diffusers pipeline's image (no sdviz hook anywhere): what every captured run must reproduce."""
        if "plain" not in self.seen:
            assert sdviz_hooks(*pipe_modules(self.pipe)) == 0
            out = self.pipe(PROMPT, num_inference_steps=STEPS, guidance_scale=GUIDANCE, height=SIZE, width=SIZE,
                            generator=torch.Generator("cpu").manual_seed(SEED))
            self.seen["plain"] = np.asarray(out.images[0])
        return self.seen["plain"]


@pytest.fixture(scope="module", params=["full-sd15", "full-sd21"])
def full(request, binder_nouns, tmp_path_factory):
    """One loaded full-size pipeline and one 8-word build for all tests of a model; freed before the next model
    (a full-size pipeline is ~5.5 GB in float32)."""
    from sdviz.build import BuildConfig, build

    words = binder_nouns(8, "words8")
    pipe = load_pipeline(request.param, device="cpu")
    root = tmp_path_factory.mktemp(request.param)
    config = BuildConfig(model=request.param, ratings=str(words), steps=STEPS, folds=3, permutations=5, size=SIZE,
                         device="cpu", cache=str(root / "cache"), out=str(root / "bundle"), progress=False)
    full = Full(request.param, pipe, build(config, pipe=pipe).path, words)
    yield full
    full.pipe = pipe = None  # let the ~5.5 GB go before the next model loads
    full.seen.clear()
    gc.collect()


def test_the_stand_in_is_the_published_architecture_loaded_from_its_saved_fp16_safetensors(full):
    from sdviz.standins import standin_folder

    pipe, info = full.pipe, full.pipe.sdviz
    parts = [pipe.unet, pipe.vae, pipe.text_encoder]
    assert tuple(_millions(m) for m in parts) == PUBLISHED[full.name]
    assert info.model_id == full.name and info.random_weights and not info.is_tiny and "random weights" in info.warning
    assert info.family == {"full-sd15": "sd1", "full-sd21": "sd2"}[full.name] and pipe.unet.dtype == torch.float32
    folder = standin_folder(full.name)
    weights = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.suffix in (".safetensors", ".bin"))
    assert weights and all(w.endswith(".fp16.safetensors") for w in weights)  # fp16 only: loaded upcast, never a pickle
    # the checkpoint's own scheduler (SD 1.5: PNDM; SD 2.1: DDIM, v-prediction) and the one that runs (DDIM)
    own = {"full-sd15": "PNDMScheduler", "full-sd21": "DDIMScheduler"}[full.name]
    assert json.loads((folder / "model_index.json").read_text())["scheduler"][1] == own == info.checkpoint_scheduler
    assert type(pipe.scheduler).__name__ == "DDIMScheduler"
    assert pipe.scheduler.config.prediction_type == ("v_prediction" if full.name == "full-sd21" else "epsilon")
    # CLIP's real vocabulary; SD 2.x pads as OpenCLIP does
    tok = pipe.tokenizer
    assert len(tok) == 49408 and tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert (tok.pad_token, tok.pad_token_id) == (("!", 0) if full.name == "full-sd21" else ("<|endoftext|>", 49407))


def test_captured_runs_steer_at_strength_zero_and_the_lens_last_layer_equal_the_plain_image_bit_for_bit(full):
    from sdviz import compare as cmp
    from sdviz import steering

    plain, bundle = full.plain(), load_bundle(full.bundle)
    result = steering.steer(full.pipe, bundle, PROMPT, attribute="Loud", strength=0.0, where="unet.mid",
                            num_steps=STEPS, seed=SEED, guidance=GUIDANCE, size=SIZE)
    assert np.array_equal(np.asarray(result.original.images[0]), plain)  # capture on = off
    assert np.array_equal(np.asarray(result.steered.images[0]), plain) and all(v == 0 for v in result.target_change.values())
    L = cmp.lens_layers(full.pipe)
    images = cmp.lens(full.pipe, PROMPT, seed=SEED, steps=STEPS, guidance=GUIDANCE, layers=[0, L], bundle=bundle, size=SIZE)
    assert np.array_equal(np.asarray(images[-1].image), plain) and not np.array_equal(np.asarray(images[0].image), plain)
    assert set(images[0].decoded["unet.mid"]) == set(bundle.attributes)
    assert sdviz_hooks(*pipe_modules(full.pipe)) == 0


def test_compare_measures_two_prompts_at_full_size(full):
    from sdviz import compare as cmp
    from sdviz.capture import COND

    res = cmp.compare(full.pipe, PROMPT, "a photo of a trumpet", seed=SEED, steps=STEPS, guidance=GUIDANCE,
                      bundle=load_bundle(full.bundle), size=SIZE)
    assert len(res.distance[COND]) == 1 and len(res.distance["unet.mid"]) == STEPS
    assert res.distance[COND][0] > 1e-4 and all(0 <= v <= 2 for d in res.distance.values() for v in d)
    assert res.trace.features["latents"].shape[-1] == 1024  # 4x32x32 latents projected to the model's width
    assert [p.size for p in res.trace.previews[0]] == [(SIZE, SIZE)] * STEPS
    assert set(res.decoded[0]["unet.mid"]) == set(load_bundle(full.bundle).attributes)


def test_build_gives_a_bundle_and_report_that_say_random_weights_and_which_scheduler_ran(full):
    from sdviz.capture import representation_dims
    from sdviz.publish import bundle_card

    bundle = load_bundle(full.bundle)
    meta = bundle.meta
    assert meta["model"] == full.name and meta["size"] == SIZE and meta["steps"] == STEPS and len(meta["words"]) == 8
    assert meta["dims"] == {n: d for n, d in representation_dims(full.pipe).items() if n in meta["dims"]}
    width = {"full-sd15": 768, "full-sd21": 1024}[full.name]
    assert meta["dims"]["clip.cond"] == width and meta["dims"]["unet.mid"] == 1280 and meta["dims"]["latents"] == 1024
    html = (full.bundle / "report.html").read_text()
    assert "random weights" in html and "plotly" in html.lower()
    own = full.pipe.sdviz.checkpoint_scheduler
    card = bundle_card(bundle, "me/probes")
    assert "seeded random weights" in card and f"- checkpoint_scheduler: `{own}`" in card
    if own != "DDIMScheduler":
        assert f"the checkpoint's own is {own}" in html and f"the checkpoint's own is {own}" in card
    report = json.loads((full.bundle / "report.json").read_text())
    assert np.isfinite(report["representations"]["unet.mid"]["results"][-1]["mean_r"])


def test_stream_record_replay_and_the_apps_generate_decode_the_same_numbers(full, tmp_path, launch_app, monkeypatch):
    """stream (through record) reproduces the plain image; replay gives the live records bit for bit; the app's
    /generate, launched with this model, decodes exactly what the library decodes from the same run."""
    from gradio_client import Client

    import sdviz.models
    from sdviz.record import load_recordings, record_runs

    live = []
    real_stream = record.stream

    def teed(pipe, prompt, **kwargs):
        for rec in real_stream(pipe, prompt, **kwargs):
            live.append(rec)
            yield rec

    monkeypatch.setattr(record, "stream", teed)
    out = record_runs(full.pipe, [PROMPT], tmp_path / "runs", seed=SEED, steps=STEPS, guidance=GUIDANCE,
                      bundle=full.bundle, progress=False, size=SIZE)
    assert [r.step for r in live] == list(range(STEPS)) and np.array_equal(np.asarray(live[-1].image), full.plain())
    assert live[0].preview.size == (SIZE, SIZE)
    (run,) = load_recordings(out)
    assert run.model == full.name and not run.is_tiny
    for a, b in zip(run.records(), live, strict=True):
        for name in b.features:
            assert torch.equal(a.features[name], b.features[name]), name
    assert np.array_equal(np.asarray(list(run.records())[-1].image), full.plain())

    bundle = load_bundle(full.bundle)
    # the app loads its model with load_pipeline: handed the module's already loaded pipeline (no second 5.5 GB copy)
    monkeypatch.setattr(sdviz.models, "load_pipeline", lambda model, **kwargs: full.pipe if model == full.name else None)
    with launch_app(full.name, "cpu", str(full.bundle), str(full.words), size=SIZE) as served:
        client = Client(served.url, verbose=False)
        job = client.submit(PROMPT, SEED, STEPS, GUIDANCE, api_name="/generate")
        updates = list(job)
        image, counter, decoded, status = job.outputs()[-1]
        assert served.app.pipe is full.pipe and served.app.size == SIZE
        served.app.pipe = None  # the module's pipeline is freed with the module, whatever Gradio keeps of the app
    assert len(updates) == STEPS and counter.startswith(f"**step {STEPS - 1} of {STEPS - 1}**") and image
    for rec, row in zip(live, decoded, strict=True):
        feats = rec.clip | rec.features
        for name in ("clip.cond", "unet.mid", "latents"):
            ours = bundle.predict(name, feats[name], rec.step, STEPS)
            np.testing.assert_allclose([row["decoded"][name][a] for a in bundle.attributes], ours, atol=1e-3)
    assert sdviz_hooks(*pipe_modules(full.pipe)) == 0


def test_the_prompt_cut_note_counts_clips_real_tokens(full):
    """77 positions of CLIP's real vocabulary: the app's note counts the tokens the real model would."""
    from types import SimpleNamespace

    from sdviz.ui.generate import RunContext

    prompt = "a photo of a cat " * 20  # 5 tokens a time: 100 + start and end = 102
    ctx = RunContext.for_prompt(SimpleNamespace(pipe=full.pipe, ratings=None, bundle=None), prompt)
    assert ctx.notes == ["Your prompt is 102 tokens long; CLIP reads only the first 77, so the rest was ignored."]
    ids = full.pipe.tokenizer(prompt, padding="max_length", max_length=77, truncation=True).input_ids
    assert len(ids) == 77 and ids[0] == 49406 and ids[-1] == 49407
    assert RunContext.for_prompt(SimpleNamespace(pipe=full.pipe, ratings=None, bundle=None), PROMPT).notes == []


# -- SDXL: config only (bench-only at full size), and the tokenizer without any model -------------------------------
def test_the_sdxl_stand_in_config_builds_lazily_on_the_meta_device_with_its_published_sizes():
    from sdviz.standins import build_full_pipeline

    pipe = build_full_pipeline("full-sdxl", device="meta")  # no weights drawn, no memory: the architecture only
    parts = [pipe.unet, pipe.vae, pipe.text_encoder, pipe.text_encoder_2]
    assert tuple(_millions(m) for m in parts) == PUBLISHED["full-sdxl"]
    assert pipe.unet.device.type == "meta" and type(pipe.scheduler).__name__ == "EulerDiscreteScheduler"
    assert (pipe.tokenizer.pad_token, pipe.tokenizer_2.pad_token, pipe.tokenizer_2.pad_token_id) == ("<|endoftext|>", "!", 0)
    assert pipe.unet.config.cross_attention_dim == 2048 and pipe.unet.config.sample_size == 128


def test_clips_real_tokenizer_matches_the_published_ids_and_says_how_to_get_it_when_missing(monkeypatch):
    import importlib.util

    from sdviz import standins

    tok = standins.clip_tokenizer()
    assert len(tok) == 49408 and (tok.bos_token_id, tok.eos_token_id, tok.model_max_length) == (49406, 49407, 77)
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tok("Hello, World!").input_ids == [49406, 3306, 267, 1002, 256, 49407]
    assert standins.clip_tokenizer("!")("a cat", padding="max_length", max_length=6).input_ids == [49406, 320, 2368, 49407, 0, 0]

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(SdvizError, match=r"^The full-size stand-ins use CLIP's real vocabulary.*pip install --no-deps open-clip-torch==3\.3\.0"):
        standins.clip_tokenizer()
    monkeypatch.setattr(standins, "standin_folder", lambda name: standins.Path("/nonexistent/never-built"))
    with pytest.raises(SdvizError, match="open-clip-torch"):
        load_pipeline("full-sd15", device="cpu")  # refused before any work, in one sentence
