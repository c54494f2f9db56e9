"""Steering (issue: beyond reading): a probe direction moves exactly what it should, hooks never outlive a call,
strength 0 is the original image, and the specificity measure gives the known answer on a linear toy."""

import json

import numpy as np
import pytest
import torch
from conftest import pipe_modules, sdviz_hooks

from sdviz import steering
from sdviz.bundle import load_bundle
from sdviz.errors import SdvizError
from sdviz.extract import load_features
from sdviz.ratings import fill_template, load_ratings
from sdviz.run import trace


@pytest.fixture(scope="module")
def bundle(tiny_bundle):
    return load_bundle(tiny_bundle)


def test_strength_zero_reproduces_the_original_image_bit_for_bit(tiny_pipe, bundle):
    for where in ("clip.cond", "unet.mid", "unet.down1"):
        result = steering.steer(tiny_pipe, bundle, "a photo of a violin", attribute="Loud", strength=0.0, where=where,
                                steps=3)
        assert np.array_equal(np.asarray(result.original.images[0]), np.asarray(result.steered.images[0]))
        assert all(v == 0 for v in result.target_change.values())
    assert sdviz_hooks(*pipe_modules(tiny_pipe)) == 0


def test_clip_steering_moves_the_conditioning_probe_by_exactly_the_strength(tiny_pipe, bundle):
    result = steering.steer(tiny_pipe, bundle, "a photo of a violin", attribute="Loud", strength=2.5, steps=3)
    cond = steering.clip_probe_name(bundle)
    assert result.target_change[cond] == pytest.approx(2.5, abs=1e-4)
    assert result.others_change[cond] > 0  # other probes read the same vector: they move, by whatever overlaps
    # the text encoder's own output is not touched: only what the denoiser reads is shifted
    assert result.target_change["clip.mean"] == pytest.approx(0.0, abs=1e-6)
    assert not np.array_equal(np.asarray(result.original.images[0]), np.asarray(result.steered.images[0]))
    d = result.steered.features[cond] - result.original.features[cond]
    direction = steering.steer_direction(bundle, cond, "Loud")
    assert torch.allclose(d[0], 2.5 * direction, atol=1e-5)


def test_block_steering_moves_that_block_by_the_strength_only_at_the_chosen_steps(tiny_pipe, bundle):
    result = steering.steer(tiny_pipe, bundle, "a photo of a violin", attribute="Pleasant", strength=-3.0,
                            where="unet.mid", at_steps=[1], steps=3)
    before, after = result.original.features["unet.mid"][0], result.steered.features["unet.mid"][0]
    assert torch.equal(before[0], after[0])  # step 0: not steered, and nothing upstream changed yet
    direction = steering.steer_direction(bundle, "unet.mid", "Pleasant", live_step=1, live_steps=3)
    assert torch.allclose(after[1] - before[1], -3.0 * direction, atol=1e-4)
    assert not torch.equal(before[2], after[2])  # step 2 reads the steered latents
    assert result.steps_steered == [1]


def test_hooks_are_removed_after_steering_also_when_the_run_fails(tiny_pipe, bundle, monkeypatch):
    calls = {"n": 0}
    original = tiny_pipe.unet.forward

    def fail_on_second_call(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("boom")
        return original(*args, **kwargs)

    monkeypatch.setattr(tiny_pipe.unet, "forward", fail_on_second_call)
    with pytest.raises(RuntimeError, match="boom"):
        steering.steer(tiny_pipe, bundle, "a photo of a violin", attribute="Loud", strength=1.0, where="unet.mid", steps=3)
    assert sdviz_hooks(*pipe_modules(tiny_pipe)) == 0


def test_user_mistakes_are_one_sentence_errors(tiny_pipe, bundle):
    with pytest.raises(SdvizError, match="Unknown attribute 'Loudness'"):
        steering.steer(tiny_pipe, bundle, "a dog", attribute="Loudness", strength=1.0, steps=2)
    with pytest.raises(SdvizError, match="Cannot steer at 'unet.nowhere'"):
        steering.steer(tiny_pipe, bundle, "a dog", attribute="Loud", strength=1.0, where="unet.nowhere", steps=2)
    with pytest.raises(SdvizError, match="Steps to steer must lie in 0..1"):
        steering.steer(tiny_pipe, bundle, "a dog", attribute="Loud", strength=1.0, at_steps=[5], steps=2)
    with pytest.raises(SdvizError, match="strength must be a finite number"):
        steering.steer(tiny_pipe, bundle, "a dog", attribute="Loud", strength=float("nan"), steps=2)
    with pytest.raises(SdvizError, match="Cannot steer at"):
        trace(tiny_pipe, ["a dog"], steps=2, edits={"vae": steering.shift(torch.zeros(4))})
    assert sdviz_hooks(*pipe_modules(tiny_pipe)) == 0


def test_specificity_gives_the_planted_answer_on_a_linear_toy():
    """A linear 'model': features x, ratings = x @ B with orthogonal attribute directions, a downstream readout
    that is a fixed rotation of x. Steering attribute a along its fitted probe direction by s must move a by s
    downstream and leave the others (orthogonal) in place; a random direction of the same norm moves a by ~0."""
    rng = np.random.default_rng(0)
    n, dim, T = 400, 12, 4
    B = np.linalg.qr(rng.normal(size=(dim, dim)))[0][:, :T] * 3  # orthogonal columns
    X = rng.normal(size=(n, dim))
    Y = X @ B + 0.01 * rng.normal(size=(n, T))
    R = np.linalg.qr(rng.normal(size=(dim, dim)))[0]  # downstream: a rotation
    directions = steering._directions(torch.as_tensor(X), Y).double().numpy()  # [T, dim]
    readout = steering.fit_ridge(torch.as_tensor(X @ R), torch.as_tensor(Y))

    def read(x):
        return readout.predict(torch.as_tensor(x @ R)).numpy()

    words = X[:20]
    for s in (1.0, 2.0, 4.0):
        steered = np.stack([read(words + s * directions[a]) for a in range(T)], 1)  # [W, A, T]
        target, others = steering.specificity(read(words), steered)
        assert target == pytest.approx(np.full(T, s), rel=2e-3)
        assert others == pytest.approx(np.zeros(T), abs=2e-3 * s)
        noise = rng.normal(size=(T, dim))
        noise *= (np.linalg.norm(s * directions, axis=1) / np.linalg.norm(noise, axis=1))[:, None]
        rand_target, _ = steering.specificity(read(words), np.stack([read(words + noise[a]) for a in range(T)], 1))
        assert np.abs(rand_target).mean() < 0.7 * s  # a random direction of the same norm rarely hits the attribute
    # and a planted leak into one other attribute is measured as such
    leaky = np.stack([read(words + directions[a] + (0.5 * directions[(a + 1) % T])) for a in range(T)], 1)
    target, others = steering.specificity(read(words), leaky)
    assert target == pytest.approx(np.ones(T), rel=2e-3)
    assert others == pytest.approx(np.full(T, 0.5 / (T - 1)), rel=1e-2)


def test_steer_eval_runs_end_to_end_on_tiny_with_held_out_directions(tiny_pipe, bundle, tiny_bundle, subset_csv):
    cache = load_features(tiny_bundle.parent / "cache")
    ratings = load_ratings(subset_csv)
    prompts = [fill_template(bundle.meta["template"], w) for w in cache.words]
    out = steering.steer_eval(tiny_pipe, bundle, cache.features, cache.words, ratings.values, prompts=prompts,
                              n_words=2, strengths=(1.0, 2.0), wheres=("clip.cond", "unet.mid"), steps=2, folds=2,
                              progress=False)
    assert out["readout"] == "unet.up2" and len(out["words"]) == 2 and out["folds"] == 2
    T = len(bundle.attributes)
    for where in ("clip.cond", "unet.mid"):
        for s in ("1.0", "2.0"):
            assert len(out["results"][where][s]["target"]) == T
            assert set(out["summary"][where][s]) == {"target", "others", "random_target", "random_others"}
            assert all(np.isfinite(v) for v in out["summary"][where][s].values())
    json.dumps(out, allow_nan=False)
    assert sdviz_hooks(*pipe_modules(tiny_pipe)) == 0
    with pytest.raises(SdvizError, match="readout"):
        steering.steer_eval(tiny_pipe, bundle, cache.features, cache.words, ratings.values, prompts=prompts, n_words=2,
                            wheres=("unet.up2",), steps=2, progress=False)


def test_cli_steer_writes_both_images_and_the_changes(tiny_bundle, tmp_path, capsys):
    from sdviz.cli import main

    out = tmp_path / "steer"
    assert main(["steer", "--bundle", str(tiny_bundle), "--model", "tiny", "--prompt", "a photo of a violin", "--attribute",
                 "Loud", "--strength", "2", "--steps", "3", "--out", str(out)]) == 0
    doc = json.loads((out / "steer.json").read_text())
    assert (out / "original.png").is_file() and (out / "steered.png").is_file()
    assert doc["target_change"]["clip.cond"] == pytest.approx(2.0, abs=1e-4)
    assert main(["steer", "--bundle", str(tiny_bundle), "--model", "tiny", "--prompt", "a dog", "--attribute", "Nope",
                 "--strength", "1", "--steps", "2", "--out", str(tmp_path / "x")]) == 2
    assert "Unknown attribute 'Nope'" in capsys.readouterr().err


def test_cli_steer_eval_adds_its_section_to_the_report(tiny_bundle, subset_csv, tmp_path):
    import shutil

    from sdviz.cli import main

    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    assert main(["steer-eval", "--bundle", str(bundle), "--model", "tiny", "--ratings", str(subset_csv), "--cache",
                 str(tiny_bundle.parent / "cache"), "--words", "2", "--strengths", "1,2", "--steps", "2", "--folds", "2",
                 "--quiet"]) == 0
    doc = json.loads((bundle / "steer_eval.json").read_text())
    assert doc["strengths"] == [1.0, 2.0] and doc["wheres"] == ["clip.cond", "unet.mid"]
    page = (bundle / "report.html").read_text()
    assert "<h2>Steering</h2>" in page and "random direction" in page
    load_bundle(bundle)  # the extra file does not disturb the bundle's checks


def test_the_package_exposes_steer_as_a_function(tiny_pipe, bundle):
    import sdviz

    assert sdviz.steer is steering.steer


def test_the_shift_moves_clip_cond_and_a_block_by_exactly_the_vector_in_every_family(pipe):
    from sdviz.capture import COND, representation_dims

    dims = representation_dims(pipe)
    v_cond = torch.linspace(-1, 1, dims[COND])
    v_mid = torch.linspace(1, -1, dims["unet.mid"])
    base = trace(pipe, ["a photo of a violin"], steps=2, decode=False)
    clip = trace(pipe, ["a photo of a violin"], steps=2, decode=False, edits={COND: steering.shift(v_cond)})
    assert torch.allclose(clip.features[COND][0] - base.features[COND][0], v_cond, atol=1e-5)
    mid = trace(pipe, ["a photo of a violin"], steps=2, decode=False, edits={"unet.mid": steering.shift({0: v_mid})})
    assert torch.allclose(mid.features["unet.mid"][0, 0] - base.features["unet.mid"][0, 0], v_mid, atol=1e-5)
    assert torch.equal(mid.features[COND], base.features[COND])
    assert sdviz_hooks(*pipe_modules(pipe)) == 0
