"""The app on the SD 2.x and SDXL stand-ins: launched like tests/test_app.py, one short generation
through gradio_client decodes with the family's bundle exactly what the library decodes."""

import numpy as np
import pytest
from conftest import pipe_modules, sdviz_hooks


@pytest.fixture(scope="module", params=["tiny-sd2", "tiny-sdxl"])
def family_app(request, words24_csv, family_bundle, launch_app):
    """(model, bundle path, client, app) of an app serving that family's stand-in with its own 24-word bundle."""
    from gradio_client import Client

    from sdviz.models import load_pipeline

    model = request.param
    bundle = family_bundle(load_pipeline(model, device="cpu"))
    with launch_app(model, "cpu", str(bundle), str(words24_csv)) as served:
        yield model, bundle, Client(served.url, verbose=False), served.app


def test_the_app_streams_and_decodes_each_familys_representations_like_the_library(family_app):
    from sdviz import stream
    from sdviz.bundle import load_bundle

    model, bundle_path, client, app = family_app
    job = client.submit("a photo of a violin", 5, 2, 3.0, api_name="/generate")
    updates = list(job)
    image, counter, decoded, status = job.outputs()[-1]
    assert len(updates) == 2 and counter.startswith("**step 1 of 1**") and image
    assert [d["step"] for d in decoded] == [0, 1]
    last = decoded[-1]["decoded"]
    assert {"clip.pooled", "clip.mean", "clip.cond", "unet.mid", "latents"} <= set(last)
    assert ("clip2.pooled" in last) == (model == "tiny-sdxl")
    assert len(last["unet.mid"]) == 65
    # exactly what the library decodes from its own stream of the same run
    pipe = app.pipe
    assert pipe.sdviz.model_id == model
    bundle = load_bundle(bundle_path)
    records = list(stream(pipe, "a photo of a violin", seed=5, steps=2, guidance=3.0))
    for rec, row in zip(records, decoded):
        for name in ("unet.up1", "clip.cond") + (("clip2.pooled",) if model == "tiny-sdxl" else ()):
            x = rec.features[name] if name in rec.features else rec.clip[name]
            ours = bundle.predict(name, x, rec.step, 2)
            np.testing.assert_allclose([row["decoded"][name][a] for a in bundle.attributes], ours, atol=1e-3)
    assert sdviz_hooks(*pipe_modules(pipe)) == 0
