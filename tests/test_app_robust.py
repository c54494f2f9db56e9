"""The app on damaged bundles and its start-up: it serves, generates without bars, and says one sentence."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _damage(path: Path, case: str) -> None:
    meta = json.loads((path / "meta.json").read_text())
    if case == "meta-empty":
        (path / "meta.json").write_text("{}")
    elif case == "meta-no-dims":
        meta.pop("dims")
        (path / "meta.json").write_text(json.dumps(meta))
    elif case == "report-empty":
        (path / "report.json").write_text("{}")
    elif case == "report-missing":
        (path / "report.json").unlink()
    elif case == "probes-garbage":
        (path / "probes.safetensors").write_bytes(b"\x00garbage" * 50)
    elif case == "maps-garbage":
        (path / "maps.safetensors").write_bytes(b"not a safetensors file")
    elif case == "other-model":
        meta["model"] = "<b>evil</b> [link](http://example.com)"
        (path / "meta.json").write_text(json.dumps(meta))


CASES = ["meta-empty", "meta-no-dims", "report-empty", "report-missing", "probes-garbage", "maps-garbage", "other-model"]


@pytest.mark.parametrize("case", CASES)
def test_a_damaged_bundle_leaves_the_app_serving_and_generating_without_bars(case, tiny_bundle, subset_csv, tmp_path):
    from sdviz import ui

    bundle = tmp_path / "tiny"
    shutil.copytree(tiny_bundle, bundle)
    _damage(bundle, case)
    demo = ui.create_app("tiny", "cpu", str(bundle), str(subset_csv))
    app = demo.sdviz
    assert demo is not None and app.phase == "waiting"  # nothing loaded before the page is served
    app.start()
    app.wait_ready()
    assert app.ready and app.bundle is None and not app.building
    assert app.bundle_note.endswith("so the app runs without bars.") and str(tmp_path) not in app.bundle_note
    updates = list(app.generate("a photo of a dog", 0, 3, 7.5, None, "domain means"))
    assert len(updates) == 3
    image, counter, takeaway, bars, closeness, hint, history, scrub, status = updates[-1]
    assert counter.startswith("**step 2 of 2**") and image is not None
    assert bars == {"__type__": "update", "visible": False} and closeness == bars
    assert hint["visible"] is True and "without bars" in hint["value"]
    assert len(history) == 3 and history[-1]["decoded"] == {}
    assert "without bars" in status and "<b>" not in status
    # the read-only tabs and the poll say the same sentence instead of failing
    assert app.render_maps(None, history)[3] == f"*{app.bundle_note}*"
    assert app.render_report()[0] == f"*{app.bundle_note}*"
    polled = app.poll(-1)
    assert polled[app.page.run]["interactive"] is True and app.bundle_note in polled[app.page.status]


def test_two_apps_in_one_process_share_nothing(tiny_bundle, subset_csv, tmp_path):
    from sdviz import ui

    damaged = tmp_path / "tiny"
    shutil.copytree(tiny_bundle, damaged)
    _damage(damaged, "probes-garbage")
    good = ui.create_app("tiny", "cpu", str(tiny_bundle), str(subset_csv)).sdviz
    bad = ui.create_app("tiny", "cpu", str(damaged), str(subset_csv)).sdviz
    for app in (good, bad):
        app.start()
        app.wait_ready()
    assert good.pipe is not bad.pipe and good.bundle is not None and bad.bundle is None
    good_run = list(good.generate("a photo of a dog", 0, 2, 7.5, None, "domain means"))[-1]
    bad_run = list(bad.generate("a photo of a dog", 0, 2, 7.5, None, "domain means"))[-1]
    assert set(good_run[6][-1]["decoded"]) >= {"clip.pooled", "unet.mid"} and bad_run[6][-1]["decoded"] == {}
    assert good.step_seconds is not None and bad.step_seconds is not None  # each measures its own runs
    assert good.render_report()[0].startswith("### Findings") and bad.render_report()[0] == f"*{bad.bundle_note}*"


def test_two_builds_at_once_each_see_their_own_progress_bars():
    import threading

    from tqdm import std, tqdm

    from sdviz.ui.state import watch_tqdm

    original, barrier, seen = std.tqdm.__dict__["__init__"], threading.Barrier(2), {}

    def build(name):
        with watch_tqdm([]) as bars:
            barrier.wait()  # both watch at once
            for _ in tqdm(range(3), desc=name, disable=False, file=open(os.devnull, "w")):
                pass
            barrier.wait()  # neither stops watching before the other's bar exists
        seen[name] = [b.desc for b in bars]

    threads = [threading.Thread(target=build, args=(name,)) for name in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {"a": ["a"], "b": ["b"]} and std.tqdm.__dict__["__init__"] is original  # tqdm as it was


def test_bundle_and_prompt_text_is_escaped_for_markdown_and_paths_are_relative():
    from sdviz.ui.state import ROOT as PROJECT
    from sdviz.ui.state import md, shown_path

    assert md("<b>x</b> [a](http://e) *y*") == "&lt;b&gt;x&lt;/b&gt; \\[a\\]\\(http://e\\) \\*y\\*"
    assert md("CLIP's & #1") == "CLIP's &amp; \\#1"  # quotes stay readable, entities stay whole
    assert shown_path(PROJECT / "probes" / "tiny") == "probes/tiny"
    assert shown_path("/srv/secret/place/tiny") == "tiny"


def test_importing_and_creating_the_app_loads_no_torch_or_diffusers():
    code = ("import sys; from sdviz import ui; ui.create_app('tiny', 'cpu', None, None); "
            "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_the_csv_is_written_only_when_asked_and_per_step_files_are_cleaned(tiny_bundle, subset_csv):
    import csv

    import gradio as gr

    from sdviz import ui

    demo = ui.create_app("tiny", "cpu", str(tiny_bundle), str(subset_csv))
    app = demo.sdviz
    assert demo.delete_cache == (600, 1800)  # Gradio removes per-step images older than 30 min
    app.start()
    app.wait_ready()
    with pytest.raises(gr.Error, match="Run a prompt first"):
        app.write_csv([])
    updates = list(app.generate("a photo of a dog", 0, 2, 7.5, None, "domain means"))
    history = updates[-1][6]
    assert app.downloads is None or not list(app.downloads.glob("*.csv"))  # nothing written by the run itself
    path = app.write_csv(history)["value"]
    rows = list(csv.reader(open(path)))
    assert rows[0][:5] == ["prompt", "seed", "step", "timestep", "representation"] and len(rows[0]) == 5 + 65
    assert {r[2] for r in rows[1:]} == {"0", "1"} and len(rows) == 1 + 2 * len(history[0]["decoded"])
    html_copy = app.report_file()["value"]
    assert open(html_copy).read() == (tiny_bundle / "report.html").read_text()
