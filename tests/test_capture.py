import numpy as np
import pytest
import torch
from conftest import pipe_modules, sdviz_hooks

from sdviz import SdvizError, stream, trace
from sdviz.capture import is_per_step, representation_dims, representation_names

PROMPTS = ["a photo of a hammer", "a photo of a dog", "a photo of a violin"]
UNET = ["unet.down0", "unet.down1", "unet.down2", "unet.mid", "unet.up0", "unet.up1", "unet.up2", "latents"]
UNET_DIMS = {"unet.down0": 32, "unet.down1": 64, "unet.down2": 64, "unet.mid": 64, "unet.up0": 64, "unet.up1": 64,
             "unet.up2": 32, "latents": 4 * 16 * 16}


def _clip(prefix, layers):
    return [f"{prefix}.pooled", f"{prefix}.mean"] + [f"{prefix}.layer{i}" for i in range(layers + 1)]


# The names and widths docs/families.md documents, on each family's tiny stand-in.
DOCUMENTED = {
    "tiny": (_clip("clip", 4) + ["clip.cond"] + UNET, dict.fromkeys(_clip("clip", 4) + ["clip.cond"], 64)),
    "tiny-sd2": (_clip("clip", 5) + ["clip.cond"] + UNET, dict.fromkeys(_clip("clip", 5) + ["clip.cond"], 64)),
    "tiny-sdxl": (
        _clip("clip", 4) + _clip("clip2", 5) + ["clip.cond"] + UNET,
        dict.fromkeys(_clip("clip", 4), 64) | dict.fromkeys(_clip("clip2", 5), 96) | {"clip.cond": 64 + 96},
    ),
}


def test_every_representation_has_its_documented_shape(pipe):
    model = pipe.sdviz.model_id
    tr = trace(pipe, PROMPTS[:2], steps=4, guidance=7.5)
    names = representation_names(pipe)
    assert names == DOCUMENTED[model][0]
    assert list(tr.features) == names
    dims = DOCUMENTED[model][1] | UNET_DIMS
    assert representation_dims(pipe) == dims
    for name, x in tr.features.items():
        assert x.dtype == torch.float32 and x.device.type == "cpu"
        assert torch.isfinite(x).all(), name
        if not is_per_step(name):
            assert x.shape == (2, dims[name]), name
        else:
            assert x.shape == (2, 4, dims[name]), name
    assert tr.timesteps.tolist() == [751, 501, 251, 1]
    assert [im.size for im in tr.images] == [(128, 128)] * 2
    assert tr.meta["steps"] == 4 and tr.meta["seeds"] == [0, 0] and tr.meta["model"] == model
    assert tr.meta["family"] == {"tiny": "sd1", "tiny-sd2": "sd2", "tiny-sdxl": "sdxl"}[model]
    # different prompts give different CLIP features; the same noise seed gives the same step-0 latents
    assert not torch.allclose(tr.features["clip.pooled"][0], tr.features["clip.pooled"][1])


def _encode(pipe, encoder="text_encoder", tokenizer="tokenizer"):
    tok = getattr(pipe, tokenizer)(PROMPTS[0], padding="max_length", max_length=77, return_tensors="pt")
    with torch.no_grad():
        return getattr(pipe, encoder)(tok.input_ids, output_hidden_states=True)


def test_clip_pooled_is_the_text_models_pooled_output_and_mean_skips_padding(pipe):
    tr = trace(pipe, PROMPTS[0], steps=1, guidance=1.0)
    out = _encode(pipe)
    torch.testing.assert_close(tr.features["clip.pooled"][0], out.pooler_output[0])
    n_real = len(pipe.tokenizer(PROMPTS[0]).input_ids)  # start + words + end, no padding
    torch.testing.assert_close(tr.features["clip.mean"][0], out.last_hidden_state[0, :n_real].mean(0))
    if hasattr(pipe, "text_encoder_2"):  # SDXL: the second encoder's projected pooled output and its mean
        out2 = _encode(pipe, "text_encoder_2", "tokenizer_2")
        assert pipe.tokenizer_2.pad_token == "!"  # OpenCLIP-style padding: the real-token mask must not rely on it
        torch.testing.assert_close(tr.features["clip2.pooled"][0], out2.text_embeds[0])
        torch.testing.assert_close(tr.features["clip2.mean"][0], out2.last_hidden_state[0, :n_real].mean(0))
        torch.testing.assert_close(tr.features["clip2.layer3"][0], out2.hidden_states[3][0, :n_real].mean(0))


@pytest.mark.parametrize("guidance", [1.0, 7.5])
def test_clip_cond_is_the_masked_mean_of_the_layer_the_family_says_the_denoiser_reads(pipe, guidance):
    tr = trace(pipe, PROMPTS[0], steps=1, guidance=guidance)
    n_real = len(pipe.tokenizer(PROMPTS[0]).input_ids)
    if hasattr(pipe, "text_encoder_2"):  # SDXL: penultimate hidden states of both encoders, concatenated
        states = torch.cat([_encode(pipe).hidden_states[-2], _encode(pipe, "text_encoder_2", "tokenizer_2").hidden_states[-2]], -1)
    else:  # SD 1.x and 2.x: the last hidden state, after the final layer norm
        states = _encode(pipe).last_hidden_state
        torch.testing.assert_close(tr.features["clip.cond"], tr.features["clip.mean"])
    torch.testing.assert_close(tr.features["clip.cond"][0], states[0, :n_real].mean(0))


def test_same_prompt_and_seed_give_identical_features_and_image(pipe):
    a = trace(pipe, PROMPTS[0], seeds=3, steps=3)
    b = trace(pipe, PROMPTS[0], seeds=3, steps=3)
    for name in a.features:
        assert torch.equal(a.features[name], b.features[name]), name
    assert np.array_equal(np.asarray(a.images[0]), np.asarray(b.images[0]))
    c = trace(pipe, PROMPTS[0], seeds=4, steps=3)
    assert not torch.equal(a.features["latents"], c.features["latents"])


def test_image_with_capture_equals_image_without_bit_for_bit(pipe):
    tr = trace(pipe, PROMPTS[:2], seeds=[5, 6], steps=3, guidance=7.5)
    plain = pipe(
        PROMPTS[:2], num_inference_steps=3, guidance_scale=7.5,
        generator=[torch.Generator("cpu").manual_seed(s) for s in (5, 6)],
    ).images
    for ours, theirs in zip(tr.images, plain):
        assert np.array_equal(np.asarray(ours), np.asarray(theirs))


def test_batch_gives_the_same_features_as_single_calls(pipe):
    batch = trace(pipe, PROMPTS, seeds=[1, 2, 3], steps=3)
    for i, (prompt, seed) in enumerate(zip(PROMPTS, [1, 2, 3])):
        single = trace(pipe, prompt, seeds=seed, steps=3)
        for name, x in single.features.items():
            torch.testing.assert_close(batch.features[name][i], x[0], rtol=1e-4, atol=1e-4, msg=name)


def test_layers_restricts_capture_and_unknown_names_are_an_error(pipe):
    tr = trace(pipe, PROMPTS[0], steps=2, layers=["clip.mean", "unet.mid"])
    assert list(tr.features) == ["clip.mean", "unet.mid"]
    with pytest.raises(SdvizError, match="Unknown representation"):
        trace(pipe, PROMPTS[0], steps=2, layers=["unet.middle"])
    assert sdviz_hooks(*pipe_modules(pipe)) == 0
    from sdviz.capture import Capture

    with Capture(pipe, guidance=True):  # the counter sees ours: one hook per name but latents (pooled/mean: pre+post)
        assert sdviz_hooks(*pipe_modules(pipe)) == len(representation_names(pipe)) - 1
    assert sdviz_hooks(*pipe_modules(pipe)) == 0


def test_hooks_are_removed_after_an_exception_inside_the_step_loop(pipe, monkeypatch):
    real_step = pipe.scheduler.step
    calls = []

    def failing_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom in step 2")
        return real_step(*args, **kwargs)

    monkeypatch.setattr(pipe.scheduler, "step", failing_step)
    with pytest.raises(RuntimeError, match="boom"):
        trace(pipe, PROMPTS[0], steps=5)
    assert sdviz_hooks(*pipe_modules(pipe)) == 0
    monkeypatch.undo()
    assert len(trace(pipe, PROMPTS[0], steps=2).timesteps) == 2  # and the next run works


def test_stream_yields_every_step_in_order_with_the_traces_features(pipe):
    records = list(stream(pipe, PROMPTS[0], seed=7, steps=5, guidance=7.5))
    assert [r.step for r in records] == [0, 1, 2, 3, 4]
    assert all(r.steps == 5 for r in records)
    assert [r.image is None for r in records] == [True] * 4 + [False]
    assert records[-1].image.size == (128, 128) and records[0].preview.size == (128, 128)
    ref = trace(pipe, PROMPTS[0], seeds=7, steps=5, guidance=7.5)
    assert [r.timestep for r in records] == ref.timesteps.tolist()
    for r in records:
        for name, x in r.features.items():
            torch.testing.assert_close(x, ref.features[name][0, r.step], msg=name)
        torch.testing.assert_close(r.clip["clip.pooled"], ref.features["clip.pooled"][0])
    assert np.array_equal(np.asarray(records[-1].image), np.asarray(ref.images[0]))
    assert sdviz_hooks(*pipe_modules(pipe)) == 0


def test_closing_a_stream_stops_the_pipeline_promptly_and_cleans_up(pipe):
    unet_calls = []
    counter = pipe.unet.register_forward_hook(lambda *a: unet_calls.append(1))
    try:
        it = stream(pipe, PROMPTS[0], steps=60)
        first = [next(it), next(it)]
        it.close()
    finally:
        counter.remove()
    assert [r.step for r in first] == [0, 1]
    assert len(unet_calls) <= 4, f"the pipeline ran {len(unet_calls)} of 60 steps after close"
    assert sdviz_hooks(*pipe_modules(pipe)) == 0
    assert len(list(stream(pipe, PROMPTS[0], steps=3))) == 3  # the next run is complete


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
def test_bad_run_arguments_are_sdviz_errors_that_say_what_to_do(pipe, kwargs, message):
    args = {"prompts": "a photo of a dog", "steps": 2} | kwargs
    with pytest.raises(SdvizError, match=message):
        trace(pipe, args.pop("prompts"), **args)


def test_per_prompt_features_are_the_prompts_own_whatever_the_negative_prompt(pipe):
    # the negative prompt runs through the same text encoders after the prompt: it must not leak in
    plain = trace(pipe, PROMPTS[1], steps=1, guidance=7.5, decode=False)
    negative = trace(pipe, PROMPTS[1], steps=1, guidance=7.5, negative_prompt="a blurry photo", decode=False)
    for name, x in plain.features.items():
        if not is_per_step(name):
            torch.testing.assert_close(negative.features[name], x, msg=name)
    # while the step itself does change: the guided update mixes in the negative prompt's half
    assert not torch.equal(negative.features["latents"], plain.features["latents"])


def test_cfg_batch_follows_the_pipelines_rule_including_guidance_embedding_models():
    from types import SimpleNamespace

    from sdviz.families import FAMILIES

    for family in FAMILIES.values():
        plain = SimpleNamespace(unet=SimpleNamespace(config={"time_cond_proj_dim": None}))
        distilled = SimpleNamespace(unet=SimpleNamespace(config={"time_cond_proj_dim": 256}))  # LCM / Turbo-style
        assert family.has_cfg_batch(plain, 7.5) and not family.has_cfg_batch(plain, 1.0)
        assert not family.has_cfg_batch(distilled, 7.5)


def test_stream_previews_use_the_familys_latent_colours(pipe):
    from sdviz.families import SDXL_LATENT_RGB, family_of
    from sdviz.run import latent_preview

    family = family_of(pipe)
    assert (family.latent_rgb is SDXL_LATENT_RGB) == hasattr(pipe, "text_encoder_2")
    latents = {}
    records = list(stream(pipe, PROMPTS[0], seed=2, steps=2, guidance=7.5))
    pipe(PROMPTS[0], num_inference_steps=2, guidance_scale=7.5, generator=torch.Generator("cpu").manual_seed(2), output_type="latent",
         callback_on_step_end=lambda p, i, t, kw: latents.update({i: kw["latents"]}) or {})
    expected = latent_preview(latents[1][0], pipe.vae_scale_factor, family.latent_rgb)
    assert np.array_equal(np.asarray(records[-1].preview), np.asarray(expected))


def test_latents_keep_the_models_width_at_any_image_size_and_the_native_projection_is_unchanged(tiny_pipe):
    """Issue 16: SD 1.5's own latents (4x64x64 = 16,384 values) are projected to 1,024 by the seed-0 Gaussian matrix
    as before; a run at another size (256 px: 4,096 values) is projected to the same width instead of giving a
    feature the bundle and the app do not expect. The tiny model at 256 px likewise keeps its width (1,024)."""
    from sdviz.capture import reduce_latents

    x = torch.randn(2, 4, 64, 64, generator=torch.Generator().manual_seed(1))
    proj = torch.randn(16384, 1024, generator=torch.Generator().manual_seed(0)) / 1024**0.5
    assert torch.equal(reduce_latents(x), x.reshape(2, -1) @ proj)  # without a width: the documented rule
    assert torch.equal(reduce_latents(x, 1024), reduce_latents(x))
    small = torch.randn(2, 4, 32, 32, generator=torch.Generator().manual_seed(2))
    assert torch.equal(reduce_latents(small), small.reshape(2, -1))  # 4,096 values: kept whole without a width
    projected = reduce_latents(small, 1024)
    assert projected.shape == (2, 1024) and torch.equal(projected, reduce_latents(small.clone(), 1024))  # seeded
    # distances survive the projection roughly (Johnson-Lindenstrauss): within 15 % for this pair
    ratio = (projected[0] - projected[1]).norm() / (small[0] - small[1]).norm()
    assert 0.85 < float(ratio) < 1.15

    big = trace(tiny_pipe, PROMPTS[0], steps=2, height=256, width=256, decode=False)
    assert big.features["latents"].shape == (1, 2, representation_dims(tiny_pipe)["latents"]) == (1, 2, 1024)
