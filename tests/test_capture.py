import numpy as np
import pytest
import torch
from conftest import all_hooks

from sdviz import SdvizError, stream, trace
from sdviz.capture import representation_names

PROMPTS = ["a photo of a hammer", "a photo of a dog", "a photo of a violin"]


def test_every_representation_has_its_documented_shape(tiny_pipe):
    tr = trace(tiny_pipe, PROMPTS[:2], steps=4, guidance=7.5)
    names = representation_names(tiny_pipe)
    assert names == [
        "clip.pooled", "clip.mean", "clip.layer0", "clip.layer1", "clip.layer2", "clip.layer3", "clip.layer4",
        "unet.down0", "unet.down1", "unet.down2", "unet.mid", "unet.up0", "unet.up1", "unet.up2", "latents",
    ]
    assert list(tr.features) == names
    dims = {"unet.down0": 32, "unet.down1": 64, "unet.down2": 64, "unet.mid": 64, "unet.up0": 64, "unet.up1": 64,
            "unet.up2": 32, "latents": 4 * 16 * 16}
    for name, x in tr.features.items():
        assert x.dtype == torch.float32 and x.device.type == "cpu"
        assert torch.isfinite(x).all(), name
        if name.startswith("clip."):
            assert x.shape == (2, 64), name
        else:
            assert x.shape == (2, 4, dims[name]), name
    assert tr.timesteps.tolist() == [751, 501, 251, 1]
    assert [im.size for im in tr.images] == [(128, 128)] * 2
    assert tr.meta["steps"] == 4 and tr.meta["seeds"] == [0, 0] and tr.meta["model"] == "tiny"
    # different prompts give different CLIP features; the same noise seed gives the same step-0 latents
    assert not torch.allclose(tr.features["clip.pooled"][0], tr.features["clip.pooled"][1])


def test_clip_pooled_is_the_text_models_pooled_output_and_mean_skips_padding(tiny_pipe):
    tr = trace(tiny_pipe, PROMPTS[0], steps=1, guidance=1.0)
    tok = tiny_pipe.tokenizer(PROMPTS[0], padding="max_length", max_length=77, return_tensors="pt")
    with torch.no_grad():
        out = tiny_pipe.text_encoder(tok.input_ids)
    torch.testing.assert_close(tr.features["clip.pooled"][0], out.pooler_output[0])
    n_real = len(tiny_pipe.tokenizer(PROMPTS[0]).input_ids)  # start + words + end, no padding
    torch.testing.assert_close(tr.features["clip.mean"][0], out.last_hidden_state[0, :n_real].mean(0))


def test_same_prompt_and_seed_give_identical_features_and_image(tiny_pipe):
    a = trace(tiny_pipe, PROMPTS[0], seeds=3, steps=3)
    b = trace(tiny_pipe, PROMPTS[0], seeds=3, steps=3)
    for name in a.features:
        assert torch.equal(a.features[name], b.features[name]), name
    assert np.array_equal(np.asarray(a.images[0]), np.asarray(b.images[0]))
    c = trace(tiny_pipe, PROMPTS[0], seeds=4, steps=3)
    assert not torch.equal(a.features["latents"], c.features["latents"])


def test_image_with_capture_equals_image_without_bit_for_bit(tiny_pipe):
    tr = trace(tiny_pipe, PROMPTS[:2], seeds=[5, 6], steps=3, guidance=7.5)
    plain = tiny_pipe(
        PROMPTS[:2], num_inference_steps=3, guidance_scale=7.5,
        generator=[torch.Generator("cpu").manual_seed(s) for s in (5, 6)],
    ).images
    for ours, theirs in zip(tr.images, plain):
        assert np.array_equal(np.asarray(ours), np.asarray(theirs))


def test_batch_gives_the_same_features_as_single_calls(tiny_pipe):
    batch = trace(tiny_pipe, PROMPTS, seeds=[1, 2, 3], steps=3)
    for i, (prompt, seed) in enumerate(zip(PROMPTS, [1, 2, 3])):
        single = trace(tiny_pipe, prompt, seeds=seed, steps=3)
        for name, x in single.features.items():
            torch.testing.assert_close(batch.features[name][i], x[0], rtol=1e-4, atol=1e-4, msg=name)


def test_layers_restricts_capture_and_unknown_names_are_an_error(tiny_pipe):
    tr = trace(tiny_pipe, PROMPTS[0], steps=2, layers=["clip.mean", "unet.mid"])
    assert list(tr.features) == ["clip.mean", "unet.mid"]
    with pytest.raises(SdvizError, match="Unknown representation"):
        trace(tiny_pipe, PROMPTS[0], steps=2, layers=["unet.middle"])
    assert all_hooks(tiny_pipe.unet, tiny_pipe.text_encoder) == 0


def test_hooks_are_removed_after_an_exception_inside_the_step_loop(tiny_pipe, monkeypatch):
    real_step = tiny_pipe.scheduler.step
    calls = []

    def failing_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom in step 2")
        return real_step(*args, **kwargs)

    monkeypatch.setattr(tiny_pipe.scheduler, "step", failing_step)
    with pytest.raises(RuntimeError, match="boom"):
        trace(tiny_pipe, PROMPTS[0], steps=5)
    assert all_hooks(tiny_pipe.unet, tiny_pipe.text_encoder) == 0
    monkeypatch.undo()
    assert len(trace(tiny_pipe, PROMPTS[0], steps=2).timesteps) == 2  # and the next run works


def test_stream_yields_every_step_in_order_with_the_traces_features(tiny_pipe):
    records = list(stream(tiny_pipe, PROMPTS[0], seed=7, steps=5, guidance=7.5))
    assert [r.step for r in records] == [0, 1, 2, 3, 4]
    assert all(r.steps == 5 for r in records)
    assert [r.image is None for r in records] == [True] * 4 + [False]
    assert records[-1].image.size == (128, 128) and records[0].preview.size == (128, 128)
    ref = trace(tiny_pipe, PROMPTS[0], seeds=7, steps=5, guidance=7.5)
    assert [r.timestep for r in records] == ref.timesteps.tolist()
    for r in records:
        for name, x in r.features.items():
            torch.testing.assert_close(x, ref.features[name][0, r.step], msg=name)
        torch.testing.assert_close(r.clip["clip.pooled"], ref.features["clip.pooled"][0])
    assert np.array_equal(np.asarray(records[-1].image), np.asarray(ref.images[0]))
    assert all_hooks(tiny_pipe.unet, tiny_pipe.text_encoder) == 0


def test_closing_a_stream_stops_the_pipeline_promptly_and_cleans_up(tiny_pipe):
    unet_calls = []
    counter = tiny_pipe.unet.register_forward_hook(lambda *a: unet_calls.append(1))
    try:
        it = stream(tiny_pipe, PROMPTS[0], steps=60)
        first = [next(it), next(it)]
        it.close()
    finally:
        counter.remove()
    assert [r.step for r in first] == [0, 1]
    assert len(unet_calls) <= 4, f"the pipeline ran {len(unet_calls)} of 60 steps after close"
    assert all_hooks(tiny_pipe.unet, tiny_pipe.text_encoder) == 0
    assert len(list(stream(tiny_pipe, PROMPTS[0], steps=3))) == 3  # the next run is complete


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"prompts": "   "}, "empty"),
        ({"prompts": []}, "No prompt"),
        ({"prompts": "x" * 5000}, "characters long"),
        ({"steps": 0}, "Steps must be"),
        ({"steps": 1000}, "Steps must be"),
        ({"steps": 2.5}, "Steps must be"),
        ({"guidance": -1.0}, "Guidance must be"),
        ({"seeds": -3}, "Seeds must be"),
        ({"seeds": [1, 2]}, "one seed per prompt"),
        ({"height": 100}, "multiple of 8"),
    ],
)
def test_bad_run_arguments_are_sdviz_errors_that_say_what_to_do(tiny_pipe, kwargs, message):
    args = {"prompts": "a photo of a dog", "steps": 2} | kwargs
    with pytest.raises(SdvizError, match=message):
        trace(tiny_pipe, args.pop("prompts"), **args)
