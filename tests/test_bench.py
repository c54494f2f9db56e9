"""`python -m sdviz.bench gpu --device cpu --quick` and `bench scale` at their smallest, run as a user runs them (a
subprocess), so the prepared device check cannot rot. Only the JSON's shape and sane values are asserted: timings are
never tested (they belong to the benchmark's output)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("extract", "cross-validate", "metrics", "nulls", "fit", "maps", "save")


def run_bench(*args: str, out: Path) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "sdviz.bench", *args, "--out", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=3600)  # generous: a loaded shared machine is slow
    assert done.returncode == 0, done.stderr[-3000:]
    assert "projected paper-scale build" in done.stdout  # the tables are printed
    name = "gpu.json" if args[0] == "gpu" else "scale.json"
    return json.loads((out / name).read_text()), done


def check_common(data: dict, words: list[int]) -> None:
    assert data["errors"] == {}
    assert data["load_s"] > 0 and data["machine"]["device"] == "cpu"
    assert [b["words"] for b in data["builds"]] == words
    for b in data["builds"]:
        assert set(STAGES) <= set(b["timings"]) and all(b["timings"][s] >= 0 for s in STAGES)
        assert b["cache_bytes"] > 0 and b["bundle_bytes"] > 0
        assert b["denoiser_calls"] == -(-b["words"] // 16) * b["steps"]  # one call per batch of 16 words and step
        assert 0 < b["denoiser_s"] < b["total_s"]
        assert "unet.mid" in b["per_step"] and b["widths"]["unet.mid"] > 0
    assert data["capture"]["ratio_median"] > 0 and len(data["capture"]["plain_s"]) == data["capture"]["repeats"]
    e = data["extraction"]
    assert e["throughput_ratio"] > 0 and e["build_vs_plain"] > 0 and e["words"] in words
    assert 0 < data["share"]["measured"] < 1
    a = data["app"]
    assert a["bundle"] and a["plain_step_s"] > 0 and a["app_step_s"] > 0 and a["png_bytes"] > 0 and a["decode_ms"] > 0
    assert a["preview_px"] == data["size"]  # the previews the app encodes are full-size images
    assert data["memory"]["host_peak_bytes"] > 2**20
    p = data["projection"]
    assert p["paper"] == {"words": 434, "steps": 50, "permutations": 100, "folds": 10}
    assert set(p["here_s"]) == {"load", *STAGES} and all(v >= 0 for v in p["here_s"].values())
    assert p["here_total_s"] > p["here_s"]["extract"] > 0 and p["gpu_total_s"] > 0 and p["here"].endswith("CPU cores")
    assert p["gpu_source"].startswith("published")  # no GPU here: said so
    assert [r["width"] for r in data["growth"]["width_rows"]] == sorted(r["width"] for r in data["growth"]["width_rows"])


def test_gpu_check_runs_on_cpu_quick(tmp_path, binder_csv):
    data, done = run_bench("gpu", "--device", "cpu", "--quick", "--ratings", str(binder_csv), out=tmp_path)
    check_common(data, [6])
    assert data["model"] == "tiny" and data["builds"][0]["steps"] == 2
    unit = data["paper_unit"]
    assert unit["words"] > 400 and unit["permutations"] == 2 and unit["map_first_s"] > 0
    assert set(unit["per_pair_s"]) == {str(w) for w in set(data["builds"][0]["widths"].values())}
    assert "measured per representation x step" in data["projection"]["method"]["nulls"]
    assert "[" in done.stderr  # progress goes to stderr


def test_scale_on_tiny_smallest(tmp_path, binder_csv):
    data, _ = run_bench("scale", "--model", "tiny", "--size", "0", "--words", "4,6", "--steps", "1,2",
                        "--permutations", "2", "--widths", "8,16", "--app-steps", "3", "--repeats", "1",
                        "--no-paper-unit", "--ratings", str(binder_csv), out=tmp_path)
    check_common(data, [4, 4, 6])
    assert [(b["words"], b["steps"]) for b in data["builds"]] == [(4, 1), (4, 2), (6, 1)]
    g = data["growth"]["exponents"]
    assert all(isinstance(g[axis]["extract"], float) for axis in ("words", "steps"))
    assert isinstance(g["width"]["cross-validate"], float)
    assert data["projection"]["method"]["nulls"].startswith("fitted exponents")


def test_scale_refuses_bad_sizes(tmp_path):
    done = subprocess.run([sys.executable, "-m", "sdviz.bench", "scale", "--model", "tiny", "--words", "8,x",
                           "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].startswith("error: --words")
    assert not (tmp_path / "scale.json").exists()
