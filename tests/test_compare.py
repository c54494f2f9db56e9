"""Two prompts side by side and the CLIP-layer lens (issue: beyond reading): exact at the edges, no hooks left."""

import numpy as np
import pytest
import torch
from conftest import all_hooks, pipe_modules, sdviz_hooks

from sdviz import compare as cmp
from sdviz.bundle import load_bundle
from sdviz.capture import COND
from sdviz.errors import SdvizError
from sdviz.run import trace


@pytest.fixture(scope="module")
def bundle(tiny_bundle):
    return load_bundle(tiny_bundle)


def test_compare_measures_each_space_step_by_step_and_a_prompt_is_at_distance_zero_from_itself(tiny_pipe, bundle):
    same = cmp.compare(tiny_pipe, "a photo of a violin", "a photo of a violin", steps=3, bundle=bundle)
    assert all(max(abs(v) for v in d) < 1e-6 for d in same.distance.values())
    res = cmp.compare(tiny_pipe, "a photo of a violin", "a photo of a trumpet", steps=3, bundle=bundle)
    assert len(res.distance[COND]) == 1 and len(res.distance["unet.mid"]) == 3
    assert res.distance[COND][0] > 1e-4 and all(0 <= v <= 2 for d in res.distance.values() for v in d)
    # each side equals its own run (same seed): the batch does not mix them
    alone = trace(tiny_pipe, ["a photo of a trumpet"], steps=3)
    assert torch.allclose(res.trace.features["unet.mid"][1], alone.features["unet.mid"][0], atol=1e-5)
    assert set(res.decoded[0]) == set(res.decoded[1]) and "unet.mid" in res.decoded[0]
    assert [len(p) for p in res.trace.previews] == [3, 3] and res.trace.previews[0][0].size == (128, 128)
    assert sdviz_hooks(*pipe_modules(tiny_pipe)) == 0


def test_the_lens_last_layer_is_the_normal_image_bit_for_bit_and_earlier_layers_differ(tiny_pipe, bundle):
    L = cmp.lens_layers(tiny_pipe)
    hooks_before = all_hooks(*pipe_modules(tiny_pipe))  # of any kind: reading a CLIP layer leaves none behind either
    images = cmp.lens(tiny_pipe, "a photo of a violin", steps=3, bundle=bundle)
    assert all_hooks(*pipe_modules(tiny_pipe)) == hooks_before
    assert [im.layer for im in images] == list(range(L + 1))
    normal = trace(tiny_pipe, ["a photo of a violin"], steps=3)
    assert np.array_equal(np.asarray(images[-1].image), np.asarray(normal.images[0]))
    assert not np.array_equal(np.asarray(images[0].image), np.asarray(normal.images[0]))
    # the lens conditioning is what the denoiser read: clip.cond differs by layer, the text encoder's own output does not
    assert not torch.allclose(images[0].features[COND], images[-1].features[COND])
    assert torch.equal(images[0].features["clip.mean"], images[-1].features["clip.mean"])
    agreement = cmp.lens_agreement(images, bundle)
    assert agreement[-1] == pytest.approx(1.0) and len(agreement) == L + 1
    assert sdviz_hooks(*pipe_modules(tiny_pipe)) == 0


def test_lens_refuses_what_it_cannot_show(tiny_pipe):
    with pytest.raises(SdvizError, match=r"CLIP layers must lie in 0\.\."):
        cmp.lens(tiny_pipe, "a dog", steps=2, layers=[99])
    from sdviz.models import load_pipeline

    with pytest.raises(SdvizError, match="supports Stable Diffusion 1.x and 2.x"):
        cmp.lens(load_pipeline("tiny-sdxl", device="cpu"), "a dog", steps=2)


def test_hooks_are_removed_when_a_compare_fails(tiny_pipe, monkeypatch):
    original = tiny_pipe.unet.forward
    calls = {"n": 0}

    def fail(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("boom")
        return original(*args, **kwargs)

    monkeypatch.setattr(tiny_pipe.unet, "forward", fail)
    with pytest.raises(RuntimeError):
        cmp.compare(tiny_pipe, "a dog", "a cat", steps=3)
    assert sdviz_hooks(*pipe_modules(tiny_pipe)) == 0
