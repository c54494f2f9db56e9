"""Issue 17 (hardening), the CLI / data / report items: every bad input found by an adversarial try is refused with
one `error:` line (exit status 2, no traceback), before any work where it can be, and leaves nothing half-written.

The CLI cases run in a subprocess (`_cli`); a failure that only a broken disk can cause is simulated there by
`patch`, a few lines of Python run before `sdviz.cli.main` (e.g. safetensors' writer raising as on a full disk).
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from bundle_damage import STEER_EVAL_DAMAGE

from sdviz.errors import SdvizError

ROOT = Path(__file__).resolve().parent.parent
FULL_DISK = ('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })')


def _cli(*args, patch: str = "", cwd=ROOT, timeout=600) -> subprocess.CompletedProcess:
    code = f"import sys\n{patch}\nfrom sdviz.cli import main\nsys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env=env)


def _one_error(done: subprocess.CompletedProcess, message: str | None = None) -> str:
    """Assert exit status 2, exactly one `error:` line and no traceback; return that line."""
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr[-3000:]
    if message:
        assert re.search(message, errors[0]), errors[0]
    return errors[0]


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


# -- 3. names from tables and bundles never become path components unsanitised -------------------------------
def test_safe_name_keeps_one_harmless_path_component():
    from sdviz.io import safe_name

    for hostile in ("../../../tmp/x", "..", ".", "/etc/passwd", "a\\b", "x\x00y", "", "~root", "a" * 1000):
        name = safe_name(hostile)
        assert name and "/" not in name and "\\" not in name and "\x00" not in name and not name.startswith((".", "~"))
        assert len(name) <= 120 and Path(name).name == name
    assert safe_name("Loud") == "Loud" and safe_name("steer-Loud-clip.cond-+2") == "steer-Loud-clip.cond-+2"


def test_slugs_of_model_folders_named_dot_dot_stay_inside_the_data_folder(tmp_path):
    from sdviz.models import ModelInfo

    for model_id in ("..", ".", "../x", "a/../../b"):
        slug = ModelInfo(model_id, False, "cpu", "float32", "ddim").slug
        assert "/" not in slug and not slug.startswith(".") and slug
    assert ModelInfo("CompVis/stable-diffusion-v1-4", False, "cpu", "float32", "ddim").slug == "CompVis--stable-diffusion-v1-4"


def _rename_attribute(bundle: Path, old: str, new: str) -> None:
    meta = json.loads((bundle / "meta.json").read_text())
    report = json.loads((bundle / "report.json").read_text())
    for doc in (meta["dataset"], report):
        doc["attributes"] = [new if a == old else a for a in doc["attributes"]]
        doc["groups"] = {(new if a == old else a): g for a, g in doc["groups"].items()}
    (bundle / "meta.json").write_text(json.dumps(meta))
    (bundle / "report.json").write_text(json.dumps(report))


def test_steer_default_out_from_a_hostile_attribute_name_stays_in_the_working_folder(tiny_bundle, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    _rename_attribute(bundle, "Loud", "../../../escape/x")
    work = tmp_path / "work" / "inner"
    work.mkdir(parents=True)
    done = _cli("steer", "--bundle", bundle, "--prompt", "a dog", "--attribute", "../../../escape/x", "--strength", "1",
                "--steps", "2", "--device", "cpu", cwd=work)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not (tmp_path / "escape").exists() and not (tmp_path / "work" / "escape").exists()
    (out,) = list(work.iterdir())
    assert out.is_dir() and "escape" in out.name and sorted(p.name for p in out.iterdir()) == [
        "original.png", "steer.json", "steered.png"]


# -- 4. templates: only plain {word} / {a_word} ------------------------------------------------------------------
@pytest.mark.parametrize("template", ["{word:>2000000000}", "{word:>99999999999999999999}", "{a_word:10}", "{word!r}",
                                      "{word!s:>5}", "{word.upper}", "{word[0]}", "{a_word.__class__}", "{}", "{0}"])
def test_templates_with_a_format_spec_conversion_attribute_or_index_are_refused(template):
    from sdviz.ratings import check_template

    with pytest.raises(SdvizError, match=r"only plain \{word\} or \{a_word\}|uses \{") as err:
        check_template(template)
    assert "\n" not in str(err.value)


def test_plain_templates_still_fill_in():
    from sdviz.ratings import check_template, fill_template

    assert check_template("a photo of {a_word}, {{braces}}") and fill_template("{word} and {a_word}", "owl") == "owl and an owl"


def test_a_huge_format_spec_at_the_command_line_is_one_error_line(subset_csv, tmp_path):
    for template in ("{word:>2000000000}", "{word:>99999999999999999999}"):
        done = _cli("build", "--model", "tiny", "--ratings", subset_csv, "--template", template, "--out", tmp_path / "o",
                    "--cache", tmp_path / "c", timeout=120)
        _one_error(done, r"only plain \{word\} or \{a_word\}")
    assert not (tmp_path / "o").exists() and not (tmp_path / "c").exists()


# -- 5. a full disk: one clear message, nothing half-written ------------------------------------------------------
SAFETENSORS_FULL = ("from safetensors import SafetensorError\n"
                    f"def boom(*a, **k): raise SafetensorError({FULL_DISK!r})\n")
OSERROR_FULL = "import errno\ndef boom(*a, **k): raise OSError(errno.ENOSPC, 'No space left on device')\n"


def test_a_full_disk_while_saving_a_bundle_is_one_line_and_leaves_no_bundle_folder(words24_csv, tmp_path):
    done = _cli("build", "--model", "tiny", "--device", "cpu", "--ratings", words24_csv, "--steps", "2", "--folds", "3",
                "--permutations", "0", "--no-maps", "--quiet", "--out", tmp_path / "o", "--cache", tmp_path / "c",
                patch=SAFETENSORS_FULL + "import sdviz.bundle\nsdviz.bundle.save_file = boom")
    _one_error(done, r"(?i)disk.*full|no space")
    assert not (tmp_path / "o").exists()


def test_a_full_disk_while_extracting_is_one_line_and_leaves_no_temporary_file(words24_csv, tmp_path):
    for patch in (SAFETENSORS_FULL, OSERROR_FULL):
        cache = tmp_path / f"c{len(patch)}"
        done = _cli("extract", "--model", "tiny", "--device", "cpu", "--ratings", words24_csv, "--steps", "2", "--quiet",
                    "--cache", cache, patch=patch + "import sdviz.extract\nsdviz.extract.save_file = boom")
        _one_error(done, r"(?i)disk.*full|no space")
        assert [f for f in _files(cache) if f != "manifest.json"] == []  # the manifest lets a rerun resume


def test_a_full_disk_while_recording_leaves_no_empty_run_folder(tmp_path):
    (tmp_path / "prompts.txt").write_text("a dog\n")
    out = tmp_path / "recordings"
    done = _cli("record", "--prompts", tmp_path / "prompts.txt", "--model", "tiny", "--device", "cpu", "--steps", "2",
                "--quiet", "--out", out, patch=SAFETENSORS_FULL + "import sdviz.record\nsdviz.record.save_file = boom")
    _one_error(done, r"(?i)disk.*full|no space")
    assert _files(out) == []


def test_a_full_disk_while_steering_leaves_no_png_without_steer_json(tiny_bundle, tmp_path):
    patch = OSERROR_FULL + ("import PIL.Image\nsave = PIL.Image.Image.save\ncalls = []\n"
                            "def second_fails(self, *a, **k):\n    calls.append(1)\n"
                            "    return boom() if len(calls) == 2 else save(self, *a, **k)\n"
                            "PIL.Image.Image.save = second_fails")
    done = _cli("steer", "--bundle", tiny_bundle, "--prompt", "a dog", "--attribute", "Loud", "--strength", "1", "--steps",
                "2", "--device", "cpu", "--out", tmp_path / "s", patch=patch)
    _one_error(done, r"(?i)disk.*full|no space")
    assert _files(tmp_path / "s") == []


# -- 6. damaged bundles: every field that is read is checked --------------------------------------------------
def _paths(doc, path=()):
    """Every place in a JSON document worth breaking: each key of each object, the first item of each list; of the
    representations only a per-step one and a once-per-prompt one (the others are alike), no alpha grid."""
    yield path
    if isinstance(doc, dict):
        keys = list(doc)
        if path and path[-1] == "representations":
            keys = [next(k for k in keys if doc[k]["per_step"]), next(k for k in keys if not doc[k]["per_step"])]
        if path and path[-1] in ("groups", "group_r", "group_r_ci", "dims", "chance", "pred_corr"):
            keys = keys[:2]  # one entry per attribute, domain or name: the first two stand for the rest
        for key in keys:
            if key != "alphas":
                yield from _paths(doc[key], (*path, key))
    elif isinstance(doc, list) and doc:
        yield from _paths(doc[0], (*path, 0))


def _broken(doc, path, value):
    """A deep copy of doc with the value at path replaced (value DELETE: the key removed)."""
    doc = json.loads(json.dumps(doc))
    *head, last = path
    parent = doc
    for p in head:
        parent = parent[p]
    if value is DELETE:
        del parent[last]
    else:
        parent[last] = value
    return doc


DELETE = object()


def test_every_field_of_a_bundle_broken_in_turn_is_refused_or_harmless(tiny_bundle, monkeypatch):
    """For each field of meta.json and report.json: delete it, or give it a value of another type. The checks must
    refuse it with a _Defect, or, where they accept it, the report must still be made without any exception."""
    import plotly.graph_objects as go

    from sdviz.bundle import _Defect, validate_meta, validate_report
    from sdviz.report import report_html

    meta = json.loads((tiny_bundle / "meta.json").read_text())
    report = json.loads((tiny_bundle / "report.json").read_text())
    # three representations stand for all (one per step, CLIP, the word-form floor): the same reading code, less time
    keep = ("unet.mid", "clip.mean", "baseline.wordform")
    report["representations"] = {n: r for n, r in report["representations"].items() if n in keep}
    for key, part in (("partition", "blocks"), ("entanglement", "reps")):  # the thesis keys name representations too
        if key in report:
            report[key][part] = {n: v for n, v in report[key][part].items() if n in keep}
    validate_meta(meta)
    validate_report(report, meta)
    # figures are still built (where a bad field would break them); only plotly's HTML serialisation is skipped
    monkeypatch.setattr(go.Figure, "to_html", lambda self, *a, **k: "<div></div>")
    accepted, refused = [], 0
    for which in ("meta", "report"):
        doc = meta if which == "meta" else report
        for path in list(_paths(doc))[1:]:
            current = _broken(doc, path, DELETE) if isinstance(path[-1], str) else None
            for value in (DELETE, "x", 7, None, [], float("inf")):
                if value is DELETE and not isinstance(path[-1], str):
                    continue
                if value is not DELETE and type(value) is type(_get(doc, path)) and value != []:
                    continue
                broken = current if value is DELETE else _broken(doc, path, value)
                m, r = (broken, report) if which == "meta" else (meta, broken)
                try:
                    validate_meta(m)
                    validate_report(r, m)
                except _Defect:
                    refused += 1
                    continue
                accepted.append((which, path, value))
                if which == "meta" and path[0] != "model":
                    continue  # the report reads only "model" of meta.json (the rest: Bundle, the app, the model card)
                try:
                    report_html(r, m)
                except Exception as err:  # noqa: BLE001 - the point: nothing but a _Defect may ever come out
                    raise AssertionError(f"{which}.json {path} = {value!r} passed the checks but broke the report: "
                                         f"{type(err).__name__}: {err}") from None
    assert refused > 150 and len(accepted) < refused  # the checks do the work; what passes is optional and harmless


def _get(doc, path):
    for p in path:
        doc = doc[p]
    return doc


# -- 7. steering's numbers are checked up front; `steps` is a count everywhere ----------------------------------
@pytest.mark.parametrize("args, message", [
    (["steer", "--prompt", "a dog", "--attribute", "Loud", "--strength", "1e30"], r"--strength must lie between -1000"),
    (["steer", "--prompt", "a dog", "--attribute", "Loud", "--strength", "nan"], r"--strength must be a finite number"),
    (["steer", "--prompt", "a dog", "--attribute", "Loud", "--strength", "1", "--steps", "0"],
     r"--steps is the number of denoising steps, a whole number from 1 to 100; got 0"),
    (["steer", "--prompt", "a dog", "--attribute", "Loud", "--strength", "1", "--steps", "4", "--steer-steps", "7"],
     r"--steer-steps must lie in 0..3"),
    (["steer-eval", "--strengths", "nan"], r"--strengths must be a finite number.*got nan"),
    (["steer-eval", "--strengths", "1,inf"], r"--strengths must be a finite number.*got inf"),
    (["steer-eval", "--strengths", "1e30"], r"--strengths must lie between"),
    (["steer-eval", "--steps", "0"], r"--steps is the number of denoising steps"),
])
def test_bad_steering_numbers_are_refused_before_any_work(args, message, tmp_path):
    # the bundle does not exist: a check that ran after loading it (or the model) would report that instead
    done = _cli(*args, "--bundle", tmp_path / "no-bundle", cwd=tmp_path, timeout=120)
    _one_error(done, message)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no PNG, no steer.json, no folder


def test_steps_is_the_number_of_denoising_steps_in_python_too(tiny_pipe, tiny_bundle):
    import sdviz
    from sdviz.bundle import load_bundle

    bundle = load_bundle(tiny_bundle)
    result = sdviz.steer(tiny_pipe, bundle, "a dog", attribute="Loud", strength=1.0, where="unet.mid", steps=4, at_steps=[2])
    assert len(result.original.timesteps) == 4 and result.steps_steered == [2]
    with pytest.warns(DeprecationWarning, match="at_steps"):  # the old meaning, for one release
        old = sdviz.steer(tiny_pipe, bundle, "a dog", attribute="Loud", strength=1.0, where="unet.mid", steps=[2], num_steps=4)
    assert old.steps_steered == [2] and len(old.original.timesteps) == 4
    assert np.array_equal(np.asarray(old.steered.images[0]), np.asarray(result.steered.images[0]))
    for bad, match in ((0, "number of denoising steps"), (2.5, "number of denoising steps")):
        with pytest.raises(SdvizError, match=match):
            sdviz.steer(tiny_pipe, bundle, "a dog", attribute="Loud", strength=1.0, steps=bad)
    with pytest.raises(SdvizError, match="between -1000 and 1000"):
        sdviz.steer(tiny_pipe, bundle, "a dog", attribute="Loud", strength=1e30, steps=2)


# -- 10. tables other than Binder's: no numpy warnings; degenerate ones refused or warned about ------------------
def _generic_table(binder_csv, path: Path, n_words: int, constant: bool = False) -> Path:
    """A norms table that is not Binder's: word + six attribute columns (no domains), optionally a constant column."""
    import pandas as pd

    df = pd.read_csv(binder_csv, na_values=["na"])
    df = df[df.iloc[:, 2] == 1].head(n_words)
    table = pd.DataFrame({"word": df["Word"], **{a: df[a] for a in ("Vision", "Loud", "Pleasant", "Fast", "Pain", "Taste")}})
    if constant:
        table["Always"] = 3.0
    table.to_csv(path, index=False)
    return path


def test_a_build_from_a_non_binder_table_prints_no_numpy_warning_and_drops_a_constant_column(binder_csv, tmp_path, caplog):
    import warnings

    from sdviz.build import BuildConfig, build

    table = _generic_table(binder_csv, tmp_path / "norms.csv", 20, constant=True)
    config = BuildConfig(model="tiny", device="cpu", ratings=str(table), steps=2, folds=3, permutations=3, maps=False,
                         progress=False, cache=str(tmp_path / "c"), out=str(tmp_path / "o"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # "Mean of empty slice" and its kin
        result = build(config)
    assert result.report["attributes"] == ["Vision", "Loud", "Pleasant", "Fast", "Pain", "Taste"]
    (line,) = [r.getMessage() for r in caplog.records if "same rating" in r.getMessage()]
    assert "Always" in line and line.count(".") == 1
    assert "no domains to compare" in (tmp_path / "o" / "report.html").read_text()


@pytest.mark.parametrize("n_words, constant_only, message", [
    (2, False, r"Only 2 words are rated on every attribute, fewer than --folds 3"),
    (5, False, r"3-fold cross-validation needs at least 6 \(two held-out words per fold\); use --folds 2"),
    (3, False, r"cross-validation needs at least 4|fewer than --folds"),
    (12, True, r"every attribute column gives all words the same rating"),
])
def test_degenerate_tables_are_refused_in_one_sentence_before_any_model_work(n_words, constant_only, message, binder_csv,
                                                                             tmp_path):
    table = _generic_table(binder_csv, tmp_path / "norms.csv", n_words)
    if constant_only:
        table.write_text("word,A,B\n" + "".join(f"w{i},1,2\n" for i in range(n_words)))
    done = _cli("build", "--model", "no-such/model", "--ratings", table, "--folds", "3", "--out", tmp_path / "o",
                "--cache", tmp_path / "c", timeout=120)
    _one_error(done, message)
    assert not (tmp_path / "o").exists() and not (tmp_path / "c").exists()


# -- 11. report.html is byte-reproducible ---------------------------------------------------------------------
def test_report_html_is_byte_identical_between_two_writes(tiny_bundle, tmp_path):
    from sdviz.report import write_report

    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    steer_eval = {"wheres": ["clip.cond"], "strengths": [1.0], "words": ["dog", "cat"], "readout": "unet.up2",
                  "summary": {"clip.cond": {"1.0": {"target": 0.5, "others": 0.1, "random_target": 0.0, "random_others": 0.1}}}}
    (bundle / "steer_eval.json").write_text(json.dumps(steer_eval))
    first, second = write_report(bundle, tmp_path / "a.html"), write_report(bundle, tmp_path / "b.html")
    assert first.read_bytes() == second.read_bytes()
    page = first.read_text()
    assert "id=\"figure-decoding\"" in page and "id=\"figure-steer_eval\"" in page
    assert not re.search(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", page)  # no uuid anywhere


@pytest.mark.parametrize("name, data", STEER_EVAL_DAMAGE, ids=[d[0] for d in STEER_EVAL_DAMAGE])
def test_a_damaged_steer_eval_json_is_left_out_with_one_warning(name, data, tiny_bundle, tmp_path, caplog):
    from sdviz.report import write_report

    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    (bundle / "steer_eval.json").write_bytes(data)
    page = write_report(bundle, tmp_path / "r.html").read_text()
    assert "<h2>Steering</h2>" not in page and "figure-decoding" in page
    (line,) = [r.getMessage() for r in caplog.records if "steer_eval.json" in r.getMessage()]
    assert "is damaged" in line and "\n" not in line


# -- 14. messages suggest `hf download` ---------------------------------------------------------------------------
def test_no_message_or_page_suggests_the_removed_huggingface_cli():
    texts = [*ROOT.joinpath("sdviz").rglob("*.py"), *ROOT.joinpath("docs").glob("*.md"), ROOT / "README.md", ROOT / "app.py"]
    assert [str(p) for p in texts if "huggingface-cli" in p.read_text()] == []


# -- 15. offline: the default model falls back to tiny at once ----------------------------------------------------
def test_one_failed_resolve_makes_sdviz_offline_and_the_default_model_asks_only_the_cache(monkeypatch):
    import socket

    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    from sdviz import hub
    from sdviz.models import load_pipeline

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "_UNREACHABLE", [])
    monkeypatch.setattr(hub, "_RESOLVED", [])
    lookups, downloads = [], []

    def no_network(host, port, *args, **kwargs):
        lookups.append(host)
        raise socket.gaierror(-3, "Temporary failure in name resolution")

    def download(repo_id, filename, **kwargs):
        downloads.append(kwargs.get("local_files_only"))
        raise LocalEntryNotFoundError("not in the cache")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    pipe = load_pipeline("auto", device="cpu")
    assert pipe.sdviz.is_tiny and "cannot be reached" in pipe.sdviz.warning
    assert downloads == [True]  # one look into the cache, no request that could be retried
    assert hub.offline() and len(lookups) == 1  # asked once per process
    monkeypatch.setattr(hub, "_UNREACHABLE", [])
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: [("ok",)])
    assert not hub.offline()  # the setting says online and the name resolves
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.offline()


# -- 20. every trace of every figure lies inside its axis ranges ------------------------------------------------
def _outside(fig) -> list[str]:
    """Points (error bars included) of traces outside their axis' fixed range; an axis without a range autoranges."""
    problems = []
    layout = fig.layout
    for trace in fig.data:
        if trace.type not in ("scatter", "bar"):
            continue
        for axis, values, error in (("x", trace.x, trace.error_x), ("y", trace.y, trace.error_y)):
            ref = getattr(trace, f"{axis}axis", None) or axis
            box = getattr(layout, ref.replace("x", "xaxis").replace("y", "yaxis"))
            if box is None or box.range is None or box.autorange not in (None, False) or values is None:
                continue
            if any(isinstance(v, str) for v in values):  # a category axis
                continue
            lo, hi = sorted(box.range)
            points = [float(v) for v in values if v is not None]
            if error is not None and error.visible is not False and error.array is not None:
                up = list(error.array)
                down = list(error.arrayminus) if error.arrayminus is not None else up
                points += [float(v) + float(u) for v, u in zip(values, up) if v is not None and u is not None]
                points += [float(v) - float(d) for v, d in zip(values, down) if v is not None and d is not None]
            if trace.type == "bar" and axis == ("y" if trace.orientation != "h" else "x") and trace.base is None:
                points.append(0.0)  # a bar starts at 0
            bad = [v for v in points if not lo - 1e-9 <= v <= hi + 1e-9]
            if bad:
                problems.append(f"{trace.name or trace.hovertemplate or trace.type} {axis}: {bad[:3]} outside [{lo:.4g}, {hi:.4g}]")
    return problems


def test_every_trace_of_the_report_and_app_figures_lies_inside_its_axis_ranges(tiny_bundle):
    from sdviz import plots
    from sdviz.report import report_items

    report = json.loads((tiny_bundle / "report.json").read_text())
    figures = {f"report {it['key']}": it["figure"] for it in report_items(report)}
    figures |= {f"app {it['key']}": it["figure"] for it in report_items(report, for_app=True)}
    names = list(report["representations"])
    once = [n for n in names if not report["representations"][n]["per_step"]]
    figures["decoding, every line highlighted"] = plots.decoding_curve(report, highlight=names)  # four CI bars at the right
    figures["two_v_two, every reference highlighted"] = plots.two_v_two_curve(report, highlight=once)
    doc = {"wheres": ["clip.cond", "unet.mid"], "strengths": [1.0, 2.0], "words": ["dog"], "readout": "unet.up2",
           "summary": {w: {str(s): {"target": s * f, "others": 0.2, "random_target": -0.1, "random_others": 0.2}
                           for s in (1.0, 2.0)} for w, f in (("clip.cond", 0.9), ("unet.mid", -0.4))}}
    figures["steer_eval"] = plots.steer_eval_figure(doc)
    figures["closeness"] = plots.closeness_curve([0, 1, 2], [1.0, -1.0, 0.3], [0.2, 0.5, -0.99], 3, current=1)
    figures["lens"] = plots.lens_figure([0, 1, 2], [1.0, -1.0, 0.5])
    problems = {name: p for name, fig in figures.items() if (p := _outside(fig))}
    assert problems == {}
    # the flat lines' CI bars sit right of the last step, inside the plot (S = 10 drew them at 9.2565 of 9.009)
    bars = [t for t in figures["decoding, every line highlighted"].data if t.error_y is not None and t.error_y.array]
    assert len(bars) >= 4


# -- 17. intervals stay inside the metric's range; each number names its test -----------------------------------
def test_fold_intervals_are_clipped_to_the_metric_range():
    from sdviz.analysis import fold_interval

    wide = np.array([0.2, 1.0, 0.9, 0.1, 1.0])  # a fraction's fold scores: the t-interval reaches above 1
    assert fold_interval(0.95, wide, 1.0, bounds=(0.0, 1.0))[1] == 1.0
    assert fold_interval(0.05, wide, 1.0, bounds=(0.0, 1.0))[0] == 0.0
    from scipy import stats

    half = stats.t.ppf(0.975, 4) * wide.std(ddof=1)
    assert fold_interval(-0.95, wide, 1.0) == [-1.0, pytest.approx(-0.95 + half)]  # r: [-1, 1] by default


def test_the_built_report_has_no_interval_outside_its_range_and_names_each_test(tiny_bundle):
    from sdviz.report import summary_table_html

    report = json.loads((tiny_bundle / "report.json").read_text())
    for rep in report["representations"].values():
        for res in rep["results"]:
            assert -1 <= res["mean_r_ci"][0] <= res["mean_r_ci"][1] <= 1
            assert 0 <= res["disambiguation_ci"][0] <= res["disambiguation_ci"][1] <= 1
            assert all(-1 <= lo <= hi <= 1 for lo, hi in res["group_r_ci"].values())
    table = summary_table_html(report)
    assert "95% CI, folds" in table and "shuffled ratings" in table and "Two tests, two questions" in table
    assert "two tests" in (ROOT / "docs" / "methods.md").read_text().lower()
