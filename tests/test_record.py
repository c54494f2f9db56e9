"""Recorded runs: record on the tiny model, replay from disk, and get exactly what the live run gave."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from sdviz import SdvizError, record, stream
from sdviz.bundle import load_bundle
from sdviz.cli import main
from sdviz.record import find_run, load_recordings, record_runs

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ["a photo of a violin", "a photo of a hammer"]
STEPS, SEED, GUIDANCE = 3, 3, 7.5


@pytest.fixture(scope="module")
def recorded(tiny_pipe, tiny_bundle, tmp_path_factory):
    """2 prompts x 3 steps recorded with the bundle; the live StepRecords are kept as capture.stream yielded them."""
    live: dict[str, list] = {}
    real_stream = record.stream

    def teed(pipe, prompt, **kwargs):
        live[prompt] = []
        for rec in real_stream(pipe, prompt, **kwargs):
            live[prompt].append(rec)
            yield rec

    out = tmp_path_factory.mktemp("recordings") / "runs"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(record, "stream", teed)
        assert record_runs(tiny_pipe, PROMPTS, out, seed=SEED, steps=STEPS, guidance=GUIDANCE, bundle=tiny_bundle,
                           progress=False) == out
    return out, live, load_bundle(tiny_bundle)


def _decoded_json(bundle, records) -> list:
    """As the app decodes a step (ui.decode_step): every probe of the bundle, the live step mapped by step fraction."""
    steps = []
    for rec in records:
        feats = rec.clip | rec.features
        steps.append({name: bundle.predict(name, feats[name], rec.step, rec.steps).tolist() for name in bundle.probes})
    return json.loads(json.dumps(steps))  # through JSON text and back: exactly what a JSON file would hold


def _pixels(image):
    return np.asarray(image)


def test_replay_gives_the_live_records_bit_for_bit(recorded):
    out, live, _ = recorded
    runs = load_recordings(out)
    assert [r.prompt for r in runs] == PROMPTS
    for run in runs:
        assert (run.seed, run.steps, run.guidance, run.model, run.is_tiny, run.bundle_model) == (SEED, STEPS, GUIDANCE, "tiny", True, "tiny")
        replay, original = list(run.records()), live[run.prompt]
        assert len(replay) == len(original) == STEPS
        for a, b in zip(replay, original):
            assert (a.step, a.steps, a.timestep) == (b.step, b.steps, b.timestep) and type(a.timestep) is int
            assert list(a.features) == list(b.features) and list(a.clip) == list(b.clip)
            for name in b.features:
                assert a.features[name].dtype == torch.float32 and torch.equal(a.features[name], b.features[name]), name
            for name in b.clip:
                assert torch.equal(a.clip[name], b.clip[name]), name
            assert a.preview.mode == b.preview.mode and np.array_equal(_pixels(a.preview), _pixels(b.preview))
            assert (a.image is None) == (b.image is None)
        assert np.array_equal(_pixels(replay[-1].image), _pixels(original[-1].image))
        assert run.timesteps == [r.timestep for r in original] and run.timesteps[0] > run.timesteps[-1]
    # the features really differ between steps and between prompts: the comparison above is not vacuous
    a, b = (list(r.records()) for r in runs)
    assert not torch.equal(a[0].features["unet.mid"], a[-1].features["unet.mid"])
    assert not torch.equal(a[0].clip["clip.mean"], b[0].clip["clip.mean"])


def test_replay_decodes_to_the_same_json_as_the_live_run(recorded):
    out, live, bundle = recorded
    for run in load_recordings(out):
        expected = _decoded_json(bundle, live[run.prompt])
        assert _decoded_json(bundle, run.records()) == expected
        stored = run.decoded()  # decoded at recording time
        assert stored["bundle"]["model"] == "tiny" and stored["bundle"]["attributes"] == bundle.attributes
        assert stored["steps"] == expected
        values = np.array([step["unet.mid"] for step in stored["steps"]])
        assert values.shape == (STEPS, len(bundle.attributes)) and not np.allclose(values[0], values[-1])


def test_rerun_skips_finished_runs_and_records_only_what_is_missing(recorded, tiny_pipe, tmp_path, monkeypatch):
    out, _, bundle = recorded
    copy = shutil.copytree(out, tmp_path / "runs")
    before = {p.relative_to(copy): p.read_bytes() for p in copy.rglob("*") if p.is_file()}

    def no_model(*args, **kwargs):
        raise AssertionError("a finished run was run again")

    monkeypatch.setattr(record, "stream", no_model)
    record_runs(tiny_pipe, PROMPTS, copy, seed=SEED, steps=STEPS, guidance=GUIDANCE, bundle=bundle, progress=False)
    assert {p.relative_to(copy): p.read_bytes() for p in copy.rglob("*") if p.is_file()} == before

    # an interrupted run (no run.json yet) is recorded again; the finished one is not
    calls = []
    monkeypatch.setattr(record, "stream", lambda pipe, prompt, **kw: calls.append(prompt) or stream(pipe, prompt, **kw))
    victim = load_recordings(copy)[1]
    (victim.path / "run.json").unlink()
    record_runs(tiny_pipe, PROMPTS, copy, seed=SEED, steps=STEPS, guidance=GUIDANCE, bundle=bundle, progress=False)
    assert calls == [PROMPTS[1]]
    assert [r.prompt for r in load_recordings(copy)] == PROMPTS
    for name in ("features.safetensors", "image.png", "decoded.json"):
        assert (victim.path / name).read_bytes() == before[victim.path.relative_to(copy) / name], name


def test_rerun_with_other_probes_decodes_again_from_disk_without_the_model(recorded, tiny_pipe, tmp_path, monkeypatch):
    out, _, bundle = recorded
    copy = shutil.copytree(out, tmp_path / "runs")
    run = load_recordings(copy)[0]
    meta = json.loads((run.path / "run.json").read_text())
    meta["bundle"]["sha256"] = "0" * 64  # as if recorded with another build of the probes
    (run.path / "run.json").write_text(json.dumps(meta))
    (run.path / "decoded.json").write_text((run.path / "decoded.json").read_text().replace("[", "[ "))
    monkeypatch.setattr(record, "stream", lambda *a, **k: pytest.fail("the model ran"))
    record_runs(tiny_pipe, PROMPTS, copy, seed=SEED, steps=STEPS, guidance=GUIDANCE, bundle=bundle, progress=False)
    again = find_run(load_recordings(copy), PROMPTS[0])
    assert again.meta["bundle"]["sha256"] != "0" * 64
    assert again.decoded() == run.decoded() == find_run(load_recordings(out), PROMPTS[0]).decoded()


def _damage_cases():
    def bad_json(root, run):
        (run / "run.json").write_text('{"format": "sdviz-run", "version": 1, "prompt": ')

    def bad_index(root, run):
        (root / "index.json").write_text("[1, 2")

    def missing_features(root, run):
        (run / "features.safetensors").unlink()

    def wrong_shape(root, run):
        tensors = load_file(run / "features.safetensors")
        tensors["unet.mid"] = tensors["unet.mid"][:, :-1].contiguous()
        save_file(tensors, run / "features.safetensors")

    def wrong_dtype(root, run):
        tensors = load_file(run / "features.safetensors")
        tensors["latents"] = tensors["latents"].double()
        save_file(tensors, run / "features.safetensors")

    def missing_key(root, run):
        tensors = load_file(run / "features.safetensors")
        del tensors["clip.mean"]
        save_file(tensors, run / "features.safetensors")

    def truncated_features(root, run):
        data = (run / "features.safetensors").read_bytes()
        (run / "features.safetensors").write_bytes(data[: len(data) // 2])

    def missing_preview(root, run):
        (run / "previews" / "001.png").unlink()

    def not_a_png(root, run):
        (run / "image.png").write_bytes(b"GIF89a" + bytes(100))

    def wrong_image_size(root, run):
        meta = json.loads((run / "run.json").read_text())
        meta["image_size"] = [64, 64]
        (run / "run.json").write_text(json.dumps(meta))

    def wrong_steps(root, run):
        meta = json.loads((run / "run.json").read_text())
        meta["timesteps"] = meta["timesteps"][:-1]
        (run / "run.json").write_text(json.dumps(meta))

    def escaping_id(root, run):
        index = json.loads((root / "index.json").read_text())
        index["runs"][0]["id"] = "../outside"
        (root / "index.json").write_text(json.dumps(index))

    def damaged_decoded(root, run):
        doc = json.loads((run / "decoded.json").read_text())
        doc["steps"][0]["unet.mid"] = doc["steps"][0]["unet.mid"][:5]
        (run / "decoded.json").write_text(json.dumps(doc))

    def newer_version(root, run):
        index = json.loads((root / "index.json").read_text())
        index["version"] = 99
        (root / "index.json").write_text(json.dumps(index))

    return [bad_json, bad_index, missing_features, wrong_shape, wrong_dtype, missing_key, truncated_features,
            missing_preview, not_a_png, wrong_image_size, wrong_steps, escaping_id, damaged_decoded, newer_version]


@pytest.mark.parametrize("damage", _damage_cases(), ids=lambda f: f.__name__)
def test_a_damaged_recording_is_one_clear_error(recorded, tmp_path, damage):
    out, _, _ = recorded
    copy = shutil.copytree(out, tmp_path / "runs")
    damage(copy, copy / load_recordings(copy)[0].id)
    with pytest.raises(SdvizError) as err:
        load_recordings(copy)
    message = str(err.value)
    assert "\n" not in message and ("damaged" in message or "newer sdviz" in message), message


def test_a_preview_damaged_after_loading_fails_on_replay(recorded, tmp_path):
    out, _, _ = recorded
    copy = shutil.copytree(out, tmp_path / "runs")
    run = load_recordings(copy)[0]
    preview = run.path / "previews" / "002.png"
    preview.write_bytes(preview.read_bytes()[:60])  # the header is whole, the pixels are not
    with pytest.raises(SdvizError, match="002.png cannot be decoded"):
        list(run.records())


def test_folders_that_hold_no_recordings(tmp_path):
    assert load_recordings(tmp_path) == []  # empty: nothing recorded yet
    with pytest.raises(SdvizError, match="No recordings folder"):
        load_recordings(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(SdvizError, match="not a recordings folder"):
        load_recordings(tmp_path)
    with pytest.raises(SdvizError, match="is a file"):
        load_recordings(tmp_path / "notes.txt")


def test_a_hub_id_downloads_and_gives_the_same_runs(recorded, tmp_path, monkeypatch):
    out, _, _ = recorded
    asked = []

    def fake_download(spec, repo_type):  # stands in for hub.pull_folder(spec, repo_type="dataset")
        asked.append(spec)
        return shutil.copytree(out, tmp_path / "snapshot")

    monkeypatch.setattr(record, "pull_folder", fake_download)
    hub, local = load_recordings("someone/sdviz-runs@v1"), load_recordings(out)
    assert asked == ["someone/sdviz-runs@v1"]
    assert [(r.id, r.prompt, r.seed, r.timesteps) for r in hub] == [(r.id, r.prompt, r.seed, r.timesteps) for r in local]
    for a, b in zip(hub[1].records(), local[1].records()):
        assert all(torch.equal(a.features[n], b.features[n]) for n in b.features)
        assert np.array_equal(_pixels(a.preview), _pixels(b.preview))

    def offline(spec, repo_type):
        raise OSError("no network")

    monkeypatch.setattr(record, "pull_folder", offline)
    with pytest.raises(SdvizError, match="could not be downloaded"):
        load_recordings("someone/sdviz-runs")


def test_find_run_by_prompt_and_seed(recorded):
    runs = load_recordings(recorded[0])
    assert find_run(runs, PROMPTS[1]).prompt == PROMPTS[1]
    assert find_run(runs, f"  {PROMPTS[0]} ", seed=SEED) is runs[0]
    assert find_run(runs, PROMPTS[0], seed=SEED + 1) is None and find_run(runs, "a photo of a kettle") is None


def test_cli_records_and_its_errors_are_one_line(tiny_bundle, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# classroom examples\na photo of a violin\n\n  a photo of a violin  \n")
    out = tmp_path / "runs"
    args = ["record", "--prompts", str(prompts), "--model", "tiny", "--device", "cpu", "--bundle", str(tiny_bundle),
            "--steps", "2", "--seed", "1", "--out", str(out), "--quiet"]
    assert main(args) == 0
    assert str(out) in capsys.readouterr().out
    runs = load_recordings(out)
    assert [(r.prompt, r.seed, r.steps, r.bundle_model) for r in runs] == [("a photo of a violin", 1, 2, "tiny")]

    (tmp_path / "empty.txt").write_text("# nothing yet\n\n")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "thesis.tex").write_text("x")
    for bad in (["--prompts", str(tmp_path / "missing.txt")],
                ["--prompts", str(tmp_path / "empty.txt")],
                ["--prompts", str(prompts), "--model", "tiny", "--device", "cpu", "--steps", "0"],
                ["--prompts", str(prompts), "--model", "tiny", "--device", "cpu", "--bundle", str(tmp_path / "nobundle")],
                ["--prompts", str(prompts), "--model", "tiny", "--device", "cpu", "--out", str(tmp_path / "other")]):
        assert main(["record", *bad]) == 2, bad
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("error: ") and not any("Traceback" in line for line in err), err
    done = subprocess.run([sys.executable, "-m", "sdviz", "record", "--prompts", str(tmp_path / "missing.txt")],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and done.stderr.startswith("error: "), done.stderr
