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

import pytest

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
