"""Frozen value slices, in the style of diffusers' `expected_slice`: a few numbers of each family's tiny stand-in,
of its preview and image, and of a built report. Property tests (capture on = off, batch = single calls, ...)
still pass when everything drifts together; these fail on any silent numeric change in capture, previews, the
VAE path or the probes. When a change is meant to move them, update the values in the same commit and say why."""

import json

import numpy as np
import pytest

import sdviz

FROZEN = {  # "a photo of a dog", seed 0, 2 steps, guidance 7.5, DDIM; measured on CPU with torch 2.13
    "tiny": {
        "clip.mean": [1.3300042, 1.1811616, -0.6166480, -0.6087733, -0.2203293],
        "clip.cond": [1.3300042, 1.1811616, -0.6166480, -0.6087733, -0.2203293],
        "unet.mid": [0.1500129, -0.3261962, -0.1169758, -0.1300722, -0.2233979],
        "image": [[134, 120, 150], [102, 104, 120], [116, 130, 144]],
        "preview": [[125, 130, 136], [142, 147, 152], [159, 164, 168]],
    },
    "tiny-sd2": {
        "clip.mean": [-0.2748187, -0.2616667, -0.7490246, -0.4621444, -0.5165071],
        "clip.cond": [-0.2748187, -0.2616667, -0.7490246, -0.4621444, -0.5165071],
        "unet.mid": [0.0375182, -0.4499929, 0.2540378, -0.0216999, 0.1887852],
        "image": [[159, 148, 148], [157, 152, 151], [169, 167, 164]],
        "preview": [[128, 130, 132], [135, 137, 139], [143, 145, 146]],
    },
    "tiny-sdxl": {
        "clip.mean": [1.3300042, 1.1811616, -0.6166480, -0.6087733, -0.2203293],
        "clip.cond": [0.2895352, 0.6969948, 0.0634768, -0.4332713, -0.0982792],
        "unet.mid": [0.8300242, -0.4289706, -0.2696543, 0.2226261, -0.0376128],
        "image": [[136, 124, 171], [64, 84, 100], [90, 109, 117]],
        "preview": [[16, 15, 14], [47, 45, 43], [78, 75, 72]],
    },
}
FROZEN_REPORT = [0.0709288201, -0.0971862547, 0.2390438950, 0.5429378531, 0.6264423077]  # tiny_bundle (conftest): 60 Binder nouns, 3 steps, 5 folds, 10 permutations


def test_frozen_feature_image_and_preview_slices(pipe):
    expected = FROZEN[pipe.sdviz.model_id]
    tr = sdviz.trace(pipe, ["a photo of a dog"], steps=2, guidance=7.5, previews=True)
    for name in ("clip.mean", "clip.cond"):
        np.testing.assert_allclose(tr.features[name][0, :5].numpy(), expected[name], atol=1e-4, err_msg=name)
    np.testing.assert_allclose(tr.features["unet.mid"][0, -1, :5].numpy(), expected["unet.mid"], atol=1e-4)
    image = np.asarray(tr.images[0]).astype(int)[60:63, 60:63, 0]
    preview = np.asarray(tr.previews[0][-1]).astype(int)[20:23, 20:23, 1]
    assert np.abs(image - expected["image"]).max() <= 1  # uint8 rounding may differ by one on another CPU
    assert np.abs(preview - expected["preview"]).max() <= 1


def test_frozen_report_numbers(tiny_bundle):
    report = json.loads((tiny_bundle / "report.json").read_text())
    clip = report["representations"]["clip.mean"]["results"][0]
    mid = report["representations"]["unet.mid"]["results"][-1]
    got = [clip["mean_r"], *clip["mean_r_ci"], mid["two_v_two"], mid["disambiguation"]]
    assert got == pytest.approx(FROZEN_REPORT, abs=1e-6)

