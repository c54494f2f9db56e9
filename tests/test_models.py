import json
import socket

import pytest
import torch

from sdviz import SdvizError, load_pipeline
from sdviz.models import ModelInfo


def test_tiny_model_is_built_offline_with_the_network_disabled(monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    pipe = load_pipeline("tiny", device="cpu")
    assert pipe.sdviz.is_tiny and "random weights" in pipe.sdviz.warning
    assert pipe.safety_checker is None
    assert type(pipe.scheduler).__name__ == "DDIMScheduler"
    assert pipe.unet.dtype == torch.float32
    # seeded weights: every machine gets the same model
    again = load_pipeline("tiny", device="cpu")
    for (name, a), (_, b) in zip(pipe.unet.state_dict().items(), again.unet.state_dict().items()):
        assert torch.equal(a, b), name


def test_auto_falls_back_to_tiny_with_a_visible_flag_when_the_real_model_is_absent(monkeypatch, caplog):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pipe = load_pipeline("auto", device="cpu")
    assert pipe.sdviz.is_tiny
    assert "random weights" in pipe.sdviz.warning and "could not be loaded" in pipe.sdviz.warning
    assert "FALLING BACK" in caplog.text


def test_unknown_model_id_is_an_actionable_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SdvizError, match="--model tiny") as err:
        load_pipeline("no-such-user/no-such-model", device="cpu")
    assert "hf download no-such-user/no-such-model" in str(err.value) and "huggingface-cli" not in str(err.value)


def test_missing_local_path_is_an_actionable_error():
    with pytest.raises(SdvizError, match="neither a local folder nor a Hugging Face model id"):
        load_pipeline("./models/does/not/exist", device="cpu")


def test_corrupted_local_folder_is_an_actionable_error(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"]}))
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "config.json").write_text("{not json")
    with pytest.raises(SdvizError, match="model_index.json") as err:
        load_pipeline(str(tmp_path), device="cpu")
    assert str(tmp_path) in str(err.value)


def test_cuda_requested_but_absent_is_an_actionable_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same on machines with a GPU
    with pytest.raises(SdvizError, match="CUDA is not available.*--device cpu"):
        load_pipeline("tiny", device="cuda")


def test_bad_scheduler_device_and_dtype_are_actionable_errors():
    with pytest.raises(SdvizError, match="Unknown scheduler"):
        load_pipeline("tiny", device="cpu", scheduler="pndm-ish")
    with pytest.raises(SdvizError, match="Unknown device"):
        load_pipeline("tiny", device="tpu")
    with pytest.raises(SdvizError, match="Unknown dtype"):
        load_pipeline("tiny", device="cpu", dtype="int8")


@pytest.mark.parametrize("scheduler", ["ddim", "euler", "dpm++"])
def test_every_scheduler_choice_takes_exactly_the_requested_steps(scheduler):
    from sdviz import trace

    pipe = load_pipeline("tiny", device="cpu", scheduler=scheduler)
    assert len(trace(pipe, "a photo of a dog", steps=3).timesteps) == 3


def test_model_slug_is_file_system_safe():
    assert ModelInfo("stable-diffusion-v1-5/stable-diffusion-v1-5", False, "cpu", "float16", "ddim").slug == (
        "stable-diffusion-v1-5--stable-diffusion-v1-5"
    )
    assert ModelInfo("tiny", True, "cpu", "float32", "ddim").slug == "tiny"


# -- families -------------------------------------------------------------------------------------
@pytest.mark.parametrize("model, family, pipeline, prediction", [
    ("tiny-sd2", "sd2", "StableDiffusionPipeline", "v_prediction"),
    ("tiny-sdxl", "sdxl", "StableDiffusionXLPipeline", "epsilon"),
])
def test_family_stand_ins_are_built_offline_seeded_and_shaped_like_their_family(model, family, pipeline, prediction):
    from sdviz.families import family_of

    pipe = load_pipeline(model, device="cpu")
    assert type(pipe).__name__ == pipeline and pipe.sdviz.family == family and family_of(pipe).key == family
    assert pipe.sdviz.is_tiny and pipe.sdviz.slug == model and "random weights" in pipe.sdviz.warning
    assert pipe.scheduler.config.prediction_type == prediction
    assert pipe.text_encoder.config.hidden_act == ("gelu" if family == "sd2" else "quick_gelu")
    if family == "sdxl":
        assert type(pipe.text_encoder_2).__name__ == "CLIPTextModelWithProjection"
        assert pipe.text_encoder_2.config.hidden_act == "gelu"
        assert pipe.unet.config.addition_embed_type == "text_time"
        assert pipe.unet.config.cross_attention_dim == pipe.text_encoder.config.hidden_size + pipe.text_encoder_2.config.hidden_size
    # every transformer block has a head dim >= 16 (CPU attention is several times slower below that)
    for block in pipe.unet.modules():
        if type(block).__name__ == "Attention":
            assert block.inner_dim // block.heads >= 16
    again = load_pipeline(model, device="cpu")
    for (name, a), (_, b) in zip(pipe.unet.state_dict().items(), again.unet.state_dict().items()):
        assert torch.equal(a, b), name


@pytest.fixture(scope="module")
def saved_checkpoints(tmp_path_factory):
    """tiny-sd2 and tiny-sdxl written as ordinary diffusers folders (model_index.json and subfolders)."""
    from sdviz.models import build_tiny_pipeline

    root = tmp_path_factory.mktemp("checkpoints")
    for name in ("tiny", "tiny-sd2", "tiny-sdxl"):
        build_tiny_pipeline(name=name).save_pretrained(root / name)
    return root


@pytest.mark.parametrize("name, family, pipeline", [
    ("tiny", "sd1", "StableDiffusionPipeline"),
    ("tiny-sd2", "sd2", "StableDiffusionPipeline"),
    ("tiny-sdxl", "sdxl", "StableDiffusionXLPipeline"),
])
def test_load_pipeline_picks_the_family_and_pipeline_class_from_the_checkpoint(saved_checkpoints, name, family, pipeline):
    pipe = load_pipeline(str(saved_checkpoints / name), device="cpu")
    assert type(pipe).__name__ == pipeline and pipe.sdviz.family == family and not pipe.sdviz.is_tiny
    assert type(pipe.scheduler).__name__ == "DDIMScheduler"
    ours = load_pipeline(name, device="cpu")
    for (key, a), (_, b) in zip(pipe.unet.state_dict().items(), ours.unet.state_dict().items()):
        assert torch.equal(a, b), key


@pytest.mark.parametrize("class_name", ["StableDiffusion3Pipeline", "FluxPipeline", "PixArtAlphaPipeline"])
def test_unsupported_families_are_refused_in_one_sentence_naming_the_supported_ones(tmp_path, class_name):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": class_name, "transformer": ["diffusers", "X"]}))
    with pytest.raises(SdvizError) as err:
        load_pipeline(str(tmp_path), device="cpu")
    message = str(err.value)
    assert "supports Stable Diffusion 1.x, 2.x and XL" in message and class_name in message
    assert message.count(". ") == 0 and message.endswith(".")  # one sentence


# -- on a Hugging Face Space (SPACE_ID set) ---------------------------------------------------------
def test_auto_fails_loudly_on_a_space_instead_of_falling_back_to_tiny(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("SPACE_ID", "someone/sdviz")
    with pytest.raises(SdvizError, match="never falls back to the tiny model"):
        load_pipeline("auto", device="cpu")
    monkeypatch.delenv("SPACE_ID")
    assert load_pipeline("auto", device="cpu").sdviz.is_tiny  # elsewhere the fallback stays


def _tiny_safety_checker():
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1, "num_attention_heads": 2},
        vision_config={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        projection_dim=32,
    )
    extractor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return StableDiffusionSafetyChecker(config).eval(), extractor


def test_the_safety_checker_is_on_for_real_models_on_a_space_and_off_elsewhere(tmp_path, monkeypatch):
    from sdviz.models import build_tiny_pipeline

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    checked = build_tiny_pipeline()
    checker, extractor = _tiny_safety_checker()
    checked.register_modules(safety_checker=checker, feature_extractor=extractor)
    checked.register_to_config(requires_safety_checker=True)
    checked.save_pretrained(tmp_path / "with-checker")
    build_tiny_pipeline().save_pretrained(tmp_path / "without-checker")
    build_tiny_pipeline(name="tiny-sdxl").save_pretrained(tmp_path / "sdxl")

    assert load_pipeline(str(tmp_path / "with-checker"), device="cpu").safety_checker is None  # local use: off
    monkeypatch.setenv("SPACE_ID", "someone/sdviz")
    pipe = load_pipeline(str(tmp_path / "with-checker"), device="cpu")  # the checkpoint's own checker
    assert type(pipe.safety_checker).__name__ == "StableDiffusionSafetyChecker" and pipe.feature_extractor is not None
    # without one, the standalone SD checker is required: offline it cannot come, and that is an error, not a silent skip
    with pytest.raises(SdvizError, match="safety checker must be on.*preload_from_hub"):
        load_pipeline(str(tmp_path / "without-checker"), device="cpu")
    with pytest.raises(SdvizError, match="no safety checker for SDXL"):
        load_pipeline(str(tmp_path / "sdxl"), device="cpu")
    assert load_pipeline("tiny", device="cpu").sdviz.is_tiny  # asking for tiny by name still works on a Space


def test_half_precision_loads_the_fp16_variant_falls_back_to_full_files_and_never_loads_pickles(tmp_path, monkeypatch):
    """What a Space preloads (preload_from_hub with the fp16 files) is what load_pipeline asks for in float16."""
    import torch

    from sdviz.models import build_tiny_pipeline

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tiny = build_tiny_pipeline()
    tiny.to(torch.float16).save_pretrained(tmp_path / "fp16-only", variant="fp16")
    assert list((tmp_path / "fp16-only" / "unet").glob("*.fp16.safetensors"))
    tiny.to(torch.float32)
    tiny.save_pretrained(tmp_path / "full")
    tiny.save_pretrained(tmp_path / "pickled", safe_serialization=False)

    pipe = load_pipeline(str(tmp_path / "fp16-only"), device="cpu", dtype="float16")
    assert pipe.unet.dtype == torch.float16 and pipe.sdviz.dtype == "float16"
    pipe = load_pipeline(str(tmp_path / "full"), device="cpu", dtype="float16")  # no fp16 files: the full ones, cast
    assert pipe.unet.dtype == torch.float16
    assert load_pipeline(str(tmp_path / "full"), device="cpu").unet.dtype == torch.float32
    upcast = load_pipeline(str(tmp_path / "fp16-only"), device="cpu")  # only fp16 files (the full-size stand-ins): upcast
    assert upcast.unet.dtype == torch.float32 and upcast.sdviz.dtype == "float32"
    for (key, a), (_, b) in zip(upcast.unet.state_dict().items(), tiny.unet.state_dict().items()):
        assert torch.equal(a, b.half().float()), key
    with pytest.raises(SdvizError, match="safetensors"):
        load_pipeline(str(tmp_path / "pickled"), device="cpu")


def test_one_folder_written_four_ways_is_one_model_for_bundles_caches_and_old_bundles(saved_checkpoints, tiny_bundle,
                                                                                      tmp_path, monkeypatch):
    """Issue 16: `folder`, `folder/`, `./folder` and the absolute path are one checkpoint (its resolved path); a bundle
    recorded with any of them (an old bundle's exact text included) serves the others; another folder is still refused."""
    import json
    import shutil

    from sdviz.bundle import check_bundle_matches, load_bundle
    from sdviz.extract import _check_manifest
    from sdviz.hub import canonical_model_id, same_model

    monkeypatch.chdir(saved_checkpoints)
    absolute = str(saved_checkpoints / "tiny")
    spellings = ["tiny/", "./tiny", "./tiny/", absolute, absolute + "/", f"{saved_checkpoints}/../{saved_checkpoints.name}/tiny"]
    assert {canonical_model_id(s) for s in spellings} == {absolute}
    assert canonical_model_id(" stable-diffusion-v1-5/stable-diffusion-v1-5 ") == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert canonical_model_id("tiny-sd2") == "tiny-sd2"  # a stand-in's name wins over a folder of that name, as in load_pipeline
    assert not same_model("tiny-sd2/", absolute)

    pipe = load_pipeline("./tiny/", device="cpu")
    assert pipe.sdviz.model_id == absolute and pipe.sdviz.slug == "tiny"
    for recorded in ["tiny/", "./tiny", absolute + "/"]:  # what older sdviz wrote: the exact --model text
        copy = tmp_path / f"bundle-{len(recorded)}"
        shutil.copytree(tiny_bundle, copy)
        meta = json.loads((copy / "meta.json").read_text())
        meta["model"] = recorded
        (copy / "meta.json").write_text(json.dumps(meta))
        check_bundle_matches(load_bundle(copy), pipe)  # accepted: the same checkpoint
    meta["model"] = str(saved_checkpoints / "tiny-sd2")
    (copy / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(SdvizError, match="built for"):
        check_bundle_matches(load_bundle(copy), pipe)

    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "manifest.json").write_text(json.dumps({"model": "tiny/", "steps": 3}))
    _check_manifest(cache, {"model": absolute, "steps": 3})  # the same features: reused, not refused
    with pytest.raises(SdvizError, match="other settings \\(model\\)"):
        _check_manifest(cache, {"model": str(saved_checkpoints / "tiny-sd2"), "steps": 3})


def test_the_scheduler_that_ran_and_the_checkpoints_own_are_said_in_the_run_report_card_and_app(tmp_path, tiny_bundle):
    """Issue 16: load_pipeline runs DDIM (sdviz's measured default) instead of the checkpoint's own scheduler and says so:
    ModelInfo, every run's metadata, the bundle's meta (through the report and model card) and the app's status line."""
    from diffusers import PNDMScheduler

    from sdviz.bundle import load_bundle
    from sdviz.labels import scheduler_note
    from sdviz.models import build_tiny_pipeline
    from sdviz.publish import bundle_card
    from sdviz.report import report_html
    from sdviz.run import run_meta

    tiny = build_tiny_pipeline()
    tiny.scheduler = PNDMScheduler.from_config(tiny.scheduler.config)  # what SD 1.5's model_index.json names
    tiny.save_pretrained(tmp_path / "pndm")
    pipe = load_pipeline(str(tmp_path / "pndm"), device="cpu")
    assert type(pipe.scheduler).__name__ == "DDIMScheduler" and pipe.sdviz.checkpoint_scheduler == "PNDMScheduler"
    meta = run_meta(pipe, steps=2, guidance=7.5, seeds=[0], height=None, width=None)
    assert (meta["scheduler"], meta["checkpoint_scheduler"]) == ("DDIMScheduler", "PNDMScheduler")
    assert load_pipeline(str(tmp_path / "pndm"), device="cpu", scheduler="euler").sdviz.checkpoint_scheduler == "PNDMScheduler"

    note = scheduler_note("DDIMScheduler", "PNDMScheduler")
    assert note == ("Scheduler: DDIMScheduler, sdviz's default (step k is the k-th denoiser call); "
                    "the checkpoint's own is PNDMScheduler.")
    assert scheduler_note("DDIMScheduler", "DDIMScheduler") == scheduler_note("DDIMScheduler", "") == "Scheduler: DDIMScheduler."
    bundle = load_bundle(tiny_bundle)
    bundle.meta["checkpoint_scheduler"] = "PNDMScheduler"
    assert note in report_html(bundle.report, bundle.meta) and note in bundle_card(bundle, "me/probes")
    assert "- checkpoint_scheduler: `PNDMScheduler`" in bundle_card(bundle, "me/probes")
