"""A small probe bundle per family (tiny, tiny-sd2, tiny-sdxl) through `sdviz.build.build`: it loads, its
widths are the running model's, it decodes a live step, and another family's pipe refuses it."""

import numpy as np
import pytest
from conftest import FAMILY_MODELS

from sdviz import SdvizError, stream
from sdviz.bundle import check_bundle_matches, load_bundle
from sdviz.capture import representation_dims, representation_names

OTHER_PIPES: dict = {}  # the other families' pipes, loaded once


def test_a_bundle_built_for_each_family_loads_with_the_models_widths_and_decodes_a_live_step(pipe, family_bundle):
    bundle = load_bundle(family_bundle(pipe))
    meta = bundle.meta
    assert meta["model"] == pipe.sdviz.model_id and len(meta["words"]) == 24 and meta["steps"] == 2
    assert sorted(meta["representations"]) == sorted(representation_names(pipe))  # the cache stores them sorted
    dims = representation_dims(pipe)
    assert meta["dims"] == {n: dims[n] for n in meta["representations"]}
    for name in meta["representations"]:
        steps = 2 if name in meta["per_step"] else 1
        assert tuple(bundle.probes[name].weight.shape) == (steps, dims[name], 65), name
    assert ("clip2.mean" in meta["representations"]) == hasattr(pipe, "text_encoder_2")
    assert "clip.cond" in meta["representations"]
    check_bundle_matches(bundle, pipe)
    # the stored probes decode what stream() records live, per-prompt and per-step names alike
    last = list(stream(pipe, "a photo of a dog", seed=0, steps=2))[-1]
    for name, x in (last.clip | last.features).items():
        pred = bundle.predict(name, x, last.step, last.steps)
        assert pred.shape == (65,) and np.isfinite(pred).all(), name
    # and the build recorded the numbers for every representation of this family
    rep = bundle.report["representations"]
    assert set(rep) == set(meta["representations"]) | {"baseline.wordform"}
    assert len(rep["unet.mid"]["results"]) == 2 and all(np.isfinite(r["mean_r"]) for r in rep["clip.cond"]["results"])


@pytest.mark.parametrize("other", FAMILY_MODELS)
def test_a_bundle_built_for_one_family_is_refused_by_another_familys_pipe(pipe, other, family_bundle):
    from sdviz.models import load_pipeline

    bundle = load_bundle(family_bundle(pipe))
    if other == pipe.sdviz.model_id:
        check_bundle_matches(bundle, pipe)  # its own family accepts it
        return
    if other not in OTHER_PIPES:
        OTHER_PIPES[other] = load_pipeline(other, device="cpu")
    with pytest.raises(SdvizError, match=f"built for '{pipe.sdviz.model_id}', but the running model is '{other}'.*--model {other}"):
        check_bundle_matches(bundle, OTHER_PIPES[other])
