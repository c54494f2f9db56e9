"""The one hook primitive (issue 19): `Capture` around a pipeline run by hand records what `trace` records, an edit by
name changes the run (an identity edit does not, bit for bit), every hook is gone on every exit path of steer, lens
and compare, `Bundle.decode` is the per-representation decoding, and one rule checks a run's settings."""

import threading

import numpy as np
import pytest
import torch
from conftest import all_hooks, pipe_modules, sdviz_hooks

from sdviz import compare as cmp
from sdviz import steering
from sdviz.bundle import load_bundle, nearest_trained_step
from sdviz.capture import COND, Capture, is_per_step, representation_dims, representation_names
from sdviz.errors import SdvizError
from sdviz.families import SDXL, family_of, hook_points
from sdviz.run import check_run_args, stream, trace

PROMPT = "a photo of a violin"


@pytest.fixture(scope="module")
def bundle(tiny_bundle):
    return load_bundle(tiny_bundle)


def _by_hand(pipe, seed, steps, guidance, callback=None, **capture):
    """The pipeline called as a user would, inside `with Capture(pipe)`: no callback unless given."""
    extra = {} if callback is None else {"callback_on_step_end": callback}
    with Capture(pipe, **capture) as cap:
        out = pipe([PROMPT], num_inference_steps=steps, guidance_scale=guidance,
                   generator=[torch.Generator("cpu").manual_seed(seed)], **extra)
    return cap, out.images[0]


def _lock_is_free(pipe) -> bool:
    """Another thread can take the pipeline's capture lock (and gives it back at once)."""
    from sdviz.capture import _pipe_lock

    lock, got = _pipe_lock(pipe), []

    def probe():
        if lock.acquire(timeout=5):
            lock.release()
            got.append(True)

    other = threading.Thread(target=probe)
    other.start()
    other.join()
    return bool(got)


def test_every_name_comes_from_one_table_with_its_module_and_hook_kind(pipe):
    points = {p.name: p for p in hook_points(pipe)}
    assert list(points) == representation_names(pipe) and {n: p.dim for n, p in points.items()} == representation_dims(pipe)
    text_model = getattr(pipe.text_encoder, "text_model", pipe.text_encoder)
    assert (points["clip.pooled"].kind, points["clip.pooled"].module) == ("pooled", pipe.text_encoder)
    assert (points["clip.layer0"].kind, points["clip.layer0"].module) == ("layer", text_model.embeddings)
    assert points["clip.layer1"].module is text_model.encoder.layers[0]
    assert (points[COND].kind, points[COND].module) == ("cond", pipe.unet)
    assert (points["unet.mid"].kind, points["unet.mid"].module) == ("block", pipe.unet.mid_block)
    assert points["unet.up0"].module is pipe.unet.up_blocks[0] and points["latents"].module is None
    assert [n for n, p in points.items() if p.per_step] == [n for n in points if is_per_step(n)]
    assert {p.kind for p in points.values() if p.editable} == {"layer", "cond", "block"}


@pytest.mark.parametrize("guidance", [1.0, 7.5])
def test_a_pipeline_run_by_hand_inside_capture_records_what_trace_records(pipe, guidance):
    ref = trace(pipe, [PROMPT], seeds=4, steps=3, guidance=guidance)
    cap, image = _by_hand(pipe, 4, 3, guidance)  # steps from the denoiser calls, CFG halves from the pipeline itself
    got = cap.features()
    assert list(got) == [n for n in ref.features if n != "latents"]  # latents need the step-end callback
    for name, x in got.items():
        assert torch.equal(x, ref.features[name]), name
    assert [int(t) for t in cap.timesteps] == ref.timesteps.tolist()
    assert np.array_equal(np.asarray(image), np.asarray(ref.images[0]))
    cap, _ = _by_hand(pipe, 4, 3, guidance, callback=lambda *a: {}, cache=["latents", "unet.mid"])
    assert list(cap.features()) == ["unet.mid"]  # a callback of the user's own: steps still counted by denoiser calls
    assert torch.equal(cap.features()["unet.mid"], ref.features["unet.mid"])
    assert sdviz_hooks(*pipe_modules(pipe)) == 0


def test_latents_come_with_the_step_end_callback(tiny_pipe):
    ref = trace(tiny_pipe, [PROMPT], seeds=4, steps=3, guidance=7.5, layers=["latents", "unet.mid"])
    cap = Capture(tiny_pipe, cache=["latents", "unet.mid"])
    with cap:
        tiny_pipe([PROMPT], num_inference_steps=3, guidance_scale=7.5, generator=[torch.Generator("cpu").manual_seed(4)],
                  output_type="latent", callback_on_step_end=cap.on_step_end)
    for name in ("latents", "unet.mid"):
        assert torch.equal(cap.features()[name], ref.features[name]), name


def test_an_edit_by_name_changes_the_run_and_an_identity_edit_keeps_it_bit_for_bit(tiny_pipe):
    plain = trace(tiny_pipe, [PROMPT], seeds=1, steps=3)
    seen = {"unet.mid": [], COND: [], "clip.layer2": []}

    def watch(name, fn=lambda x, k: x):
        def edit(x, k):
            seen[name].append((k, tuple(x.shape), x.dtype))
            return fn(x, k)
        return edit

    same = trace(tiny_pipe, [PROMPT], seeds=1, steps=3, edits={n: watch(n) for n in seen})
    assert np.array_equal(np.asarray(same.images[0]), np.asarray(plain.images[0]))
    assert all(torch.equal(same.features[n], x) for n, x in plain.features.items())
    # the documented tensors: a block's conditional half, clip.cond's masked mean in float64, a layer's token states
    assert seen["unet.mid"] == [(k, (1, 64, 4, 4), torch.float32) for k in range(3)]
    assert seen[COND] == [(k, (1, 64), torch.float64) for k in range(3)]
    assert seen["clip.layer2"] == [(None, (1, 77, 64), torch.float32)]  # the prompt's call only, not the negative's
    # an edit that returns equal values (a new tensor) keeps the image too
    again = trace(tiny_pipe, [PROMPT], seeds=1, steps=3, edits={COND: lambda x, k: x * 1, "unet.up1": lambda x, k: x.clone()})
    assert np.array_equal(np.asarray(again.images[0]), np.asarray(plain.images[0]))
    zeroed = trace(tiny_pipe, [PROMPT], seeds=1, steps=3, edits={"unet.mid": lambda x, k: torch.zeros_like(x)})
    assert torch.equal(zeroed.features["unet.mid"], torch.zeros_like(plain.features["unet.mid"]))  # read after the edit
    assert torch.equal(zeroed.features["unet.down2"][:, 0], plain.features["unet.down2"][:, 0])  # upstream: untouched
    assert not np.array_equal(np.asarray(zeroed.images[0]), np.asarray(plain.images[0]))
    assert sdviz_hooks(*pipe_modules(tiny_pipe)) == 0


def test_a_text_layer_edit_reaches_what_the_pipeline_reads(pipe):
    """A shift of a text encoder layer moves that layer's masked mean by exactly the shift; on SDXL the pipeline reads
    the penultimate layer through transformers' own hooks, which run after sdviz's and see the edit."""
    dims = representation_dims(pipe)
    layers = [n for n in dims if n.startswith("clip.layer")]
    name = layers[-2] if family_of(pipe) is SDXL else layers[-1]
    v = torch.linspace(-1, 1, dims[name])
    base = trace(pipe, [PROMPT], steps=1, decode=False)
    moved = trace(pipe, [PROMPT], steps=1, decode=False, edits={name: steering.shift(v)})
    assert torch.allclose(moved.features[name][0] - base.features[name][0], v, atol=1e-5)
    assert not torch.allclose(moved.features[COND], base.features[COND])
    if family_of(pipe) is SDXL:  # the first 64 of clip.cond's 160 are the first encoder's penultimate layer
        assert torch.allclose(moved.features[COND][0, :64] - base.features[COND][0, :64], v, atol=1e-5)
    assert sdviz_hooks(*pipe_modules(pipe)) == 0


def test_edits_refuse_what_cannot_be_edited_and_leave_no_hooks(tiny_pipe):
    with pytest.raises(SdvizError, match="Cannot steer at 'clip.mean': edits apply to clip.cond"):
        Capture(tiny_pipe, edits={"clip.mean": lambda x, k: x})
    with pytest.raises(SdvizError, match="must return a tensor shaped like its input"):
        trace(tiny_pipe, [PROMPT], steps=2, edits={"unet.mid": lambda x, k: x[:, :3]})
    with pytest.raises(SdvizError, match="must be a function"):
        Capture(tiny_pipe, edits={"unet.mid": 3})
    assert sdviz_hooks(*pipe_modules(tiny_pipe)) == 0


def test_where_clip_is_a_deprecated_alias_of_clip_cond(tiny_pipe, bundle):
    with pytest.warns(DeprecationWarning, match="where='clip' is deprecated"):
        old = steering.steer(tiny_pipe, bundle, PROMPT, attribute="Loud", strength=2.0, where="clip", steps=2)
    new = steering.steer(tiny_pipe, bundle, PROMPT, attribute="Loud", strength=2.0, where=COND, steps=2)
    assert old.where == new.where == COND
    assert np.array_equal(np.asarray(old.steered.images[0]), np.asarray(new.steered.images[0]))
    assert old.target_change == new.target_change and old.decoded_steered == new.decoded_steered


def _decoded_by_hand(bundle, name, x, k, S):
    """The old per-site decoding, written out: the probe at the nearest trained step, applied to x."""
    probe = bundle.probes[name]
    j = nearest_trained_step(k, S, probe.weight.shape[0]) if is_per_step(name) else 0
    values = ((x.double() - probe.mean[j].double()) / probe.std[j].double()) @ probe.weight[j].double() + probe.bias[j].double()
    return values.numpy()


def test_bundle_decode_is_the_per_representation_decoding_at_the_trained_step(tiny_pipe, bundle):
    from sdviz import record
    from sdviz.ui import generate

    trained = bundle.meta["steps"]
    records = list(stream(tiny_pipe, PROMPT, seed=2, steps=5))  # 5 live steps, the bundle was trained with 3
    for rec in records:
        features = rec.clip | rec.features
        decoded = bundle.decode(features, rec.step, rec.steps)
        assert list(decoded) == [n for n in features if n in bundle.probes] and "unet.mid" in decoded and COND in decoded
        for name, values in decoded.items():
            assert list(values) == bundle.attributes
            np.testing.assert_allclose(list(values.values()), _decoded_by_hand(bundle, name, features[name], rec.step, 5),
                                       rtol=1e-4, atol=1e-4, err_msg=name)
        assert record.decode(bundle, rec) == {n: list(v.values()) for n, v in decoded.items()}
        app = generate.decode_step(bundle, rec, rec.steps)
        assert {n: list(v) for n, v in app.items()} == {n: list(v.values()) for n, v in decoded.items()}
        assert bundle.trained_step("unet.mid", rec.step, 5) == nearest_trained_step(rec.step, 5, trained)
        assert bundle.trained_step(COND, rec.step, 5) == 0
    # steering and compare decode each prompt at the last step through it too
    result = cmp.compare(tiny_pipe, PROMPT, "a photo of a trumpet", steps=2, bundle=bundle)
    assert result.decoded[1] == bundle.decode(result.trace.at_step(1), 1, 2)


def _fail_in_step_loop(pipe, monkeypatch):
    real, calls = pipe.scheduler.step, []

    def step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom in the step loop")
        return real(*args, **kwargs)

    monkeypatch.setattr(pipe.scheduler, "step", step)


def _fail_while_registering(pipe, monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("boom while registering")

    monkeypatch.setattr(pipe.unet.mid_block, "register_forward_hook", refuse)  # after the text encoders' hooks


RUNS = {
    "steer clip.cond": lambda pipe, b: steering.steer(pipe, b, PROMPT, attribute="Loud", strength=1.0, steps=2),
    "steer unet.mid": lambda pipe, b: steering.steer(pipe, b, PROMPT, attribute="Loud", strength=1.0, where="unet.mid",
                                                     steps=2),
    "compare": lambda pipe, b: cmp.compare(pipe, PROMPT, "a photo of a dog", steps=2, bundle=b),
    "lens": lambda pipe, b: cmp.lens(pipe, PROMPT, steps=2, layers=[0, 2], bundle=b),
}


@pytest.mark.parametrize("exit_path", ["normal", "exception in the step loop", "error while registering"])
@pytest.mark.parametrize("run", list(RUNS))
def test_no_hook_is_left_on_any_exit_path_of_steer_lens_and_compare(tiny_pipe, bundle, monkeypatch, run, exit_path):
    before = all_hooks(*pipe_modules(tiny_pipe))
    if exit_path == "normal":
        RUNS[run](tiny_pipe, bundle)
    else:
        (_fail_in_step_loop if exit_path == "exception in the step loop" else _fail_while_registering)(tiny_pipe, monkeypatch)
        with pytest.raises(RuntimeError, match="boom"):
            RUNS[run](tiny_pipe, bundle)
        monkeypatch.undo()
    assert sdviz_hooks(*pipe_modules(tiny_pipe)) == 0
    assert all_hooks(*pipe_modules(tiny_pipe)) == before  # of any kind
    assert _lock_is_free(tiny_pipe)


def test_no_hook_is_left_when_a_stream_with_edits_is_closed_or_fails(tiny_pipe, monkeypatch):
    it = stream(tiny_pipe, PROMPT, steps=30, edits={"unet.mid": steering.shift(torch.ones(64))})
    assert [next(it).step, next(it).step] == [0, 1]
    it.close()
    assert sdviz_hooks(*pipe_modules(tiny_pipe)) == 0 and _lock_is_free(tiny_pipe)
    _fail_while_registering(tiny_pipe, monkeypatch)
    with pytest.raises(RuntimeError, match="boom while registering"):
        list(stream(tiny_pipe, PROMPT, steps=2))
    monkeypatch.undo()
    assert sdviz_hooks(*pipe_modules(tiny_pipe)) == 0 and _lock_is_free(tiny_pipe)


def test_one_rule_checks_a_runs_settings_from_the_library_the_app_and_a_recording():
    # a browser form's values come back normalised; a library call's too
    assert check_run_args("a dog", "3", "20", "7.5") == ("a dog", 3, 20, 7.5, None, None)
    assert check_run_args(["a", "b"], [1, 2.0], 4, 7, 512, None) == (["a", "b"], [1, 2], 4, 7.0, 512, None)
    for args, message in [(("a dog", 1.5, 3, 7.5), "The seed must be a whole number"),
                          (("a dog", [1, -1], 3, 7.5), "Seeds must be whole numbers"),
                          (("a dog", 0, True, 7.5), "Steps must be"), (("a dog", 0, "abc", 7.5), "Steps must be"),
                          (("a dog", 0, 3, float("nan")), "Guidance must be"), (("  ", 0, 3, 7.5), "prompt is empty")]:
        with pytest.raises(SdvizError, match=message):
            check_run_args(*args)
    with pytest.raises(SdvizError, match="from 1 to 50"):  # the app's own cap
        check_run_args("a dog", 0, 60, 7.5, max_steps=50)
    with pytest.raises(SdvizError, match="Height must be a multiple of 8"):
        check_run_args("a dog", 0, 3, 7.5, 100)
    from sdviz.ui.generate import check_inputs

    assert check_inputs("a dog", "3", "20", "7.5") == ("a dog", 3, 20, 7.5)
