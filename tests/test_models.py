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
    assert "huggingface-cli download" in str(err.value)


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
