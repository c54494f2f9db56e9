import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sdviz import SdvizError
from sdviz.bundle import check_bundle_matches, load_bundle
from sdviz.extract import diffusion_encoder, extract_features, load_features
from sdviz.ratings import load_ratings

ROOT = Path(__file__).resolve().parent.parent


def test_bundle_round_trip_holds_every_probe_map_and_number(tiny_bundle, tiny_pipe):
    bundle = load_bundle(tiny_bundle)
    meta, report = bundle.meta, bundle.report
    assert meta["model"] == "tiny" and meta["steps"] == 3 and len(meta["timesteps"]) == 3
    assert len(meta["words"]) == 60 and len(bundle.attributes) == 65
    assert set(meta["per_step"]) == {"unet.down0", "unet.down1", "unet.down2", "unet.mid", "unet.up0", "unet.up1", "unet.up2", "latents"}
    assert bundle.probes["unet.mid"].weight.shape == (3, 64, 65) and bundle.probes["clip.pooled"].weight.shape == (1, 64, 65)
    assert bundle.maps["unet.mid.coords"].shape == (3, 60, 2) and bundle.maps["clip.mean.coords"].shape == (1, 60, 2)
    check_bundle_matches(bundle, tiny_pipe)
    # the stored probe reproduces a fit on the cached features
    cache = load_features(tiny_bundle.parent / "cache")
    pred = bundle.predict("unet.mid", cache.features["unet.mid"][0, 2], live_step=2, live_steps=3)
    assert pred.shape == (65,) and np.isfinite(pred).all()
    rep = report["representations"]
    assert set(rep) == set(meta["representations"]) | {"baseline.wordform"}
    res = rep["unet.mid"]["results"][2]
    for key in ("mean_r", "mean_r_ci", "two_v_two", "p_mean_r", "p_two_v_two", "disambiguation", "knn_accuracy", "silhouette", "group_r"):
        assert key in res, key
    assert len(res["group_r"]) == 14 and len(rep["unet.mid"]["results"]) == 3
    # random weights on 60 words: nothing is decoded reliably (CIs are wide and include the word-form floor)
    assert all(abs(r["mean_r"]) < 0.35 for name in rep for r in rep[name]["results"])
    html = (tiny_bundle / "report.html").read_text()
    assert "plotly" in html.lower() and "denoising step k" in html and "random weights" in html
    assert not any(tiny_bundle.glob(".*")), "no temporary files are left in the bundle"


def test_bundle_mismatches_and_damage_are_clear_errors(tiny_bundle, tmp_path, tiny_pipe):
    import shutil

    copy = tmp_path / "b"
    shutil.copytree(tiny_bundle, copy)
    meta = json.loads((copy / "meta.json").read_text())
    meta["model"] = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    (copy / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(SdvizError, match="built for 'stable-diffusion-v1-5.*running model is 'tiny'"):
        check_bundle_matches(load_bundle(copy), tiny_pipe)
    meta["model"], meta["dims"]["unet.mid"] = "tiny", 128
    (copy / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(SdvizError, match=r"probes.safetensors: probe 'unet.mid' has shape \(3, 64, 65\)"):
        load_bundle(copy)
    shutil.copy(tiny_bundle / "meta.json", copy / "meta.json")
    (copy / "probes.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(SdvizError, match="probes.safetensors.*damaged"):
        load_bundle(copy)
    (copy / "report.json").write_text("{half")
    with pytest.raises(SdvizError, match="damaged"):
        load_bundle(copy)
    with pytest.raises(SdvizError, match="No probe bundle"):
        load_bundle(tmp_path / "nothing")


def test_extract_resumes_and_redoes_only_missing_or_damaged_shards(tiny_pipe, subset_csv, tmp_path):
    words = load_ratings(subset_csv).words[:12]
    encode, settings = diffusion_encoder(tiny_pipe, steps=2)
    first = extract_features(encode, words, tmp_path, settings=settings, batch_size=4, progress=False)
    shards = sorted(tmp_path.glob("shard-*.safetensors"))
    assert len(shards) == 3 and all(v.shape[0] == 12 for v in first.features.values())
    assert first.features["unet.mid"].shape == (12, 2, 64)
    kept = shards[0].stat().st_mtime_ns
    shards[1].unlink()
    shards[2].write_bytes(b"torn write")
    calls = []
    second = extract_features(lambda w: (calls.append(w), encode(w))[1], words, tmp_path, settings=settings, batch_size=4, progress=False)
    assert calls == [words[4:8], words[8:12]] and shards[0].stat().st_mtime_ns == kept
    for name in first.features:
        assert torch.equal(first.features[name], second.features[name])
    other, other_settings = diffusion_encoder(tiny_pipe, steps=3)
    with pytest.raises(SdvizError, match="other settings.*steps"):
        extract_features(other, words, tmp_path, settings=other_settings, batch_size=4, progress=False)
    shards[0].unlink()
    with pytest.raises(SdvizError, match="incomplete.*resume"):
        load_features(tmp_path)


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "sdviz", *args], capture_output=True, text=True, cwd=ROOT, timeout=600,
                          env={**os.environ, **(env or {})})


def test_cli_errors_are_one_line_without_traceback(tmp_path):
    for args in (["build", "--model", "tiny", "--ratings", str(tmp_path / "missing.csv")],
                 ["extract", "--model", "no-such/model", "--ratings", str(tmp_path / "missing.csv")],
                 ["report", str(tmp_path)],
                 ["build", "--model", "tiny", "--seeds", "a,b", "--ratings", str(tmp_path / "x.csv")]):
        done = _cli(*args)
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr and "error:" in done.stderr, done.stderr


def test_accelerate_with_two_processes_writes_the_same_cache_as_one(subset_csv, tmp_path):
    common = ["extract", "--model", "tiny", "--device", "cpu", "--ratings", str(subset_csv), "--steps", "2",
              "--batch-size", "4", "--quiet"]
    # one BLAS thread everywhere: float sums then add up in the same order in every process
    single = _cli(*common, "--cache", str(tmp_path / "one"), env={"OMP_NUM_THREADS": "1"})
    assert single.returncode == 0, single.stderr
    launched = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "sdviz", *common, "--cache", str(tmp_path / "two")],
        capture_output=True, text=True, cwd=ROOT, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert launched.returncode == 0, launched.stderr[-3000:]
    one = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert one == sorted(p.name for p in (tmp_path / "two").iterdir()) and len(one) == 16  # 15 shards + manifest
    for name in one:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
