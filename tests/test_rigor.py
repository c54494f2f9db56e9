"""Robustness: damaged bundles, user input at the CLI, temporary files, default folders, any norms table."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from bundle_damage import DAMAGE

from sdviz import SdvizError
from sdviz.bundle import load_bundle
from sdviz.cli import main

ROOT = Path(__file__).resolve().parent.parent


def _run(args, capsys) -> tuple[int, str]:
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("name, mutate, message", DAMAGE, ids=[d[0] for d in DAMAGE])
def test_every_damaged_bundle_is_one_sentence_from_load_bundle_and_the_cli(name, mutate, message, tiny_bundle, tmp_path, capsys):
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, copy)
    load_bundle(copy)  # the copy is good before the damage
    mutate(copy)
    with pytest.raises(SdvizError, match=message) as err:
        load_bundle(copy)
    assert "\n" not in str(err.value) and "python -m sdviz build" in str(err.value)
    code, stderr = _run(["report", copy], capsys)
    assert code == 2 and stderr.startswith("error: ") and stderr.count("\n") == 1 and "Traceback" not in stderr, stderr


def test_damaged_bundles_at_the_real_command_line_print_one_line(tiny_bundle, tmp_path):
    for name, mutate, _ in (DAMAGE[0], DAMAGE[2], DAMAGE[11]):
        copy = tmp_path / name.replace(" ", "-")
        shutil.copytree(tiny_bundle, copy)
        mutate(copy)
        done = subprocess.run([sys.executable, "-m", "sdviz", "report", str(copy)], capture_output=True, text=True, cwd=ROOT,
                              timeout=300)
        assert done.returncode == 2 and "Traceback" not in done.stderr and done.stderr.count("\n") == 1, done.stderr


def test_bundles_carry_their_version_and_super_categories(tiny_bundle):
    meta = json.loads((tiny_bundle / "meta.json").read_text())
    assert meta["bundle_version"] == 1
    assert len(meta["super_categories"]) == 60 and set(meta["super_categories"]) <= {
        "abstract entity", "artifact", "event", "living object", "mental entity", "natural object"}


@pytest.mark.parametrize("extra, message", [
    (["--template", "a photo of a {word} {x}"], r"uses \{x\}; only \{word\} and \{a_word\}"),
    (["--template", "a photo"], r"has no \{word\} or \{a_word\} placeholder"),
    (["--template", "a {word"], "is not valid"),
    (["--batch-size", "0"], "--batch-size must be a whole number from 1"),
    (["--batch-size", "-4"], "--batch-size must be a whole number from 1"),
    (["--steps", "0"], "--steps must be a whole number from 1 to 100"),
    (["--folds", "1"], "--folds must be a whole number 2 or more"),
    (["--folds", "61"], r"Only 60 words are rated on every attribute, fewer than --folds 61"),
    (["--permutations", "-1"], "--permutations must be a whole number 0 or more"),
    (["--selection", "verbs", "--attributes", "Nope,Vision"], r"no attribute column\(s\) 'Nope'"),
])
def test_bad_build_arguments_are_one_line_before_any_model_work(extra, message, subset_csv, tmp_path, capsys):
    # the model does not exist: an argument check that ran after model loading would report that instead
    code, stderr = _run(["build", "--model", "no-such/model", "--ratings", subset_csv, "--out", tmp_path / "o",
                         "--cache", tmp_path / "c", *extra], capsys)
    assert code == 2 and stderr.count("\n") == 1 and "Traceback" not in stderr, stderr
    assert re.search(message, stderr), stderr
    assert not (tmp_path / "c").exists() and not (tmp_path / "o").exists()


def test_bad_paths_are_one_line(subset_csv, tmp_path, capsys):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    cases = [
        (["build", "--model", "tiny", "--ratings", tmp_path], "is a folder"),
        (["build", "--model", "tiny", "--ratings", subset_csv, "--out", a_file], "--out .* is a file"),
        (["extract", "--model", "tiny", "--ratings", subset_csv, "--cache", a_file], "--cache .* is a file"),
        (["build", "--model", "tiny", "--ratings", subset_csv, "--groups", tmp_path / "no.json"], "Groups file .* does not exist"),
        (["report", a_file], "No bundle folder at .*file.txt"),
        (["extract", "--model", "tiny", "--ratings", subset_csv, "--selection", "all", "--groups", a_file,
          "--template", "{word}", "--cache", tmp_path / "c", "--steps", "0"], "--steps"),
    ]
    for args, message in cases:
        code, stderr = _run(args, capsys)
        assert code == 2 and stderr.count("\n") == 1 and re.search(message, stderr), (args, stderr)


def test_a_resumed_extraction_removes_stale_temporary_shards(tmp_path):
    import torch

    from sdviz.extract import extract_features

    def encode(words):
        return {"clip.mean": torch.tensor([[float(len(w)), 1.0] for w in words])}, []

    words = ["ant", "bee", "cat", "dog", "eel"]
    settings = {"model": "fake", "kind": "text", "steps": 0}
    extract_features(encode, words, tmp_path, settings=settings, batch_size=2, progress=False)
    stale = [tmp_path / ".shard-00001.safetensors-abc123.tmp", tmp_path / ".shard-00002.safetensors-x.tmp"]
    for path in stale:
        path.write_bytes(b"")  # what a kill -9 inside atomic_write leaves
    (tmp_path / "shard-00001.safetensors").unlink()
    (tmp_path / "notes.tmp").write_text("not ours")
    again = extract_features(encode, words, tmp_path, settings=settings, batch_size=2, progress=False)
    assert not any(p.exists() for p in stale) and (tmp_path / "notes.tmp").exists()
    assert again.features["clip.mean"][:, 0].tolist() == [3.0, 3.0, 3.0, 3.0, 3.0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json", "notes.tmp", "shard-00000.safetensors",
                                                          "shard-00001.safetensors", "shard-00002.safetensors"]


def test_default_folders_are_user_folders_never_the_package(tmp_path, monkeypatch):
    from sdviz import io

    monkeypatch.delenv("SDVIZ_CACHE", raising=False)
    monkeypatch.delenv("SDVIZ_HOME", raising=False)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert io.feature_cache_dir("tiny") == tmp_path / "home" / ".cache" / "sdviz" / "features" / "tiny"
    assert io.bundle_dir("tiny") == tmp_path / "home" / ".local" / "share" / "sdviz" / "probes" / "tiny"
    monkeypatch.setenv("SDVIZ_CACHE", str(tmp_path / "c"))
    monkeypatch.setenv("SDVIZ_HOME", str(tmp_path / "h"))
    assert io.feature_cache_dir("m") == tmp_path / "c" / "features" / "m" and io.bundle_dir("m") == tmp_path / "h" / "probes" / "m"
    for path in (io.feature_cache_dir("m"), io.bundle_dir("m")):
        assert io.ROOT not in path.parents and Path(io.__file__).parent not in path.parents


def test_find_bundle_looks_in_the_current_folder_then_the_checkout_then_the_user_folder(tmp_path, monkeypatch):
    from sdviz import io

    slug = "find-bundle-test-slug"
    monkeypatch.setenv("SDVIZ_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    assert io.find_bundle(slug) is None
    user = io.bundle_dir(slug)
    user.mkdir(parents=True)
    (user / "meta.json").write_text("{}")
    assert io.find_bundle(slug) == user
    here = tmp_path / "probes" / slug
    here.mkdir(parents=True)
    assert io.find_bundle(slug) == user  # a folder without meta.json is not a bundle
    (here / "meta.json").write_text("{}")
    assert io.find_bundle(slug) == here


def _norms_table(tmp_path: Path) -> tuple[Path, Path]:
    """40 words x 7 attributes, ratings partly predictable from word length, 4 missing cells (36 complete words), own groups."""
    rng = np.random.default_rng(11)
    words = [f"{stem}{'x' * (i % 7)}" for i, stem in enumerate(
        "ant bee cow dove elk fox gnu hen ibis jay kite lark mole newt owl pig quail ram seal toad".split() * 2)]
    words = [w if i < 20 else w + "s" for i, w in enumerate(words)]
    length = np.array([len(w) for w in words], float)
    values = rng.normal(size=(40, 7))
    values[:, 0] += 2 * (length - length.mean()) / length.std()  # attribute "big" follows word length
    cells = [[f"{v:.3f}" for v in row] for row in values]
    for i, j in ((0, 2), (5, 2), (9, 4), (30, 6)):
        cells[i][j] = "" if j != 4 else "na"
    names = ["big", "loud", "fast", "warm", "soft", "old", "rare"]
    table = tmp_path / "animals.csv"
    table.write_text("word,category,super_category," + ",".join(names) + "\n" + "".join(
        f"{w},{'bird' if i % 2 else 'mammal'},animal," + ",".join(row) + "\n" for i, (w, row) in enumerate(zip(words, cells))))
    groups = tmp_path / "groups.json"
    groups.write_text(json.dumps({"body": ["big", "fast", "warm", "soft"], "sound": ["loud"], "time": ["old", "rare"]}))
    return table, groups


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # one attribute alone has no attribute pairs to disambiguate
def test_a_differently_shaped_norms_table_builds_end_to_end(tmp_path, tiny_pipe):
    from sdviz.build import BuildConfig, build

    table, groups = _norms_table(tmp_path)
    config = BuildConfig(model="tiny", device="cpu", ratings=str(table), groups=str(groups), steps=2, folds=4, permutations=5,
                         maps=False, progress=False, cache=str(tmp_path / "cache"), out=str(tmp_path / "out"))
    result = build(config, pipe=tiny_pipe)
    report, meta = result.report, load_bundle(result.path).meta
    assert report["attributes"] == ["big", "loud", "fast", "warm", "soft", "old", "rare"] and report["group_names"] == ["body", "sound", "time"]
    assert report["n_words"] == 36 and meta["words"][:2] == ["ant", "beex"] and len(meta["words"]) == 40
    assert meta["template"] == "{word}" and meta["super_categories"] == ["animal"] * 40 and meta["bundle_version"] == 1
    missing = report["missing"]
    assert missing["complete_words"] == 36 and missing["total_words"] == 40
    assert missing["attributes"] == {"fast": {"n_words": 38, "unrated_words": ["ant", "foxxxxxx"]},
                                     "soft": {"n_words": 39, "unrated_words": ["jayxx"]},
                                     "rare": {"n_words": 39, "unrated_words": ["kitexxs"]}}
    form = report["representations"]["baseline.wordform"]["results"][0]
    assert form["r"][0] > 0.6  # "big" follows word length: the word-form probe finds it
    assert abs(form["mean_r"]) < form["r"][0] and len(form["r"]) == 7 and np.isfinite(form["r"]).all()
    assert {"null_mean_r", "p_mean_r", "knn_accuracy"} <= set(form)
    mid = report["representations"]["unet.mid"]["results"]
    assert len(mid) == 2 and all(np.isfinite(res["r"]).all() and -1 <= res["mean_r"] <= 1 for res in mid)
    probe = load_bundle(result.path).probes["unet.mid"]
    assert probe.weight.shape == (2, 64, 7)
    # an attribute's own r comes from all words rated for it: rescoring "fast" alone on its 38 words agrees
    from sdviz import analysis
    from sdviz.build import wordform_features
    from sdviz.ratings import load_ratings

    r = load_ratings(table, groups_json=groups)
    rated = ~np.isnan(r.values[:, 2])
    own = analysis.analyse({"w": wordform_features(r.words)[rated]}, r.values[rated][:, [2]], ["fast"], {"fast": "body"},
                           None, folds=4, seed=0, n_permutations=0, progress=False)
    assert form["r"][2] == pytest.approx(own["w"]["results"][0]["r"][0], abs=1e-12)


def test_too_few_complete_words_for_the_folds_is_refused_before_extraction(tmp_path):
    from sdviz.build import BuildConfig, build

    table, groups = _norms_table(tmp_path)
    with pytest.raises(SdvizError, match="Only 36 words are rated on every attribute, fewer than --folds 37"):
        build(BuildConfig(model="no-such/model", ratings=str(table), groups=str(groups), folds=37, cache=str(tmp_path / "c")))
    assert not (tmp_path / "c").exists()
    with pytest.raises(SdvizError, match="--selection picks a word class"):
        build(BuildConfig(model="no-such/model", ratings=str(table), selection="nouns"))
