"""Ways a probe bundle on disk can be damaged, for tests of everything that reads one.

DAMAGE: (name, mutate(path), expected message regex). `mutate` edits a copy of a good bundle in
place; `sdviz.bundle.load_bundle` must then raise SdvizError matching the regex, the CLI must exit 2
with one line, and the app must keep serving (it reuses this list).
"""

import json
import re
from pathlib import Path


def _edit(name: str, change):
    """mutate(path): load path/name as JSON, change(doc) -> new doc, write it back."""

    def mutate(path: Path) -> None:
        doc = json.loads((Path(path) / name).read_text())
        (Path(path) / name).write_text(json.dumps(change(doc)))

    return mutate


def _without(key: str):
    return lambda doc: {k: v for k, v in doc.items() if k != key}


def _write(name: str, data: bytes):
    return lambda path: (Path(path) / name).write_bytes(data)


def _set(key: str, value):
    return lambda doc: {**doc, key: value}


def _first_result(change):
    def edit(report):
        first = next(iter(report["representations"].values()))
        first["results"][0] = change(first["results"][0])
        return report

    return edit


def _dataset_attributes_wrong(meta):
    meta["dataset"]["attributes"] = "Vision"
    return meta


def _thesis(key: str, change):
    """Change report.json's optional issue-18 key `key` (partition, entanglement, findings) in place."""
    def edit(report):
        report[key] = change(report[key])
        return report

    return edit


def _first_block(change):
    def edit(partition):
        block = next(iter(partition["blocks"].values()))
        change(block)
        return partition

    return edit


DAMAGE = [
    ("meta.json is {}", _write("meta.json", b"{}"), r"bundle_version None.*rebuild it"),
    ("meta.json is a list", _write("meta.json", b"[1, 2]"), r"bundle_version None|not a JSON object"),
    ("meta.json without dims", _edit("meta.json", _without("dims")), r"meta.json has no \"dims\""),
    ("meta.json without dataset", _edit("meta.json", _without("dataset")), r"meta.json has no \"dataset\""),
    ("meta.json dims is a list", _edit("meta.json", _set("dims", [64])), r"meta.json \"dims\" is not an object"),
    ("meta.json steps is text", _edit("meta.json", _set("steps", "3")), r"meta.json \"steps\" is not a whole number"),
    ("meta.json attributes is text", _edit("meta.json", _dataset_attributes_wrong), r"\"attributes\" is not a list"),
    ("meta.json words are numbers", _edit("meta.json", _set("words", [1, 2])), r"\"words\" holds something that is not a string"),
    ("meta.json wrong bundle_version", _edit("meta.json", _set("bundle_version", 99)), r"bundle_version 99 .* reads version 1"),
    ("meta.json without bundle_version", _edit("meta.json", _without("bundle_version")), r"bundle_version None"),
    ("meta.json is not JSON", _write("meta.json", b"{half"), r"damaged \(.*\); rebuild it"),
    ("report.json is {}", _write("report.json", b"{}"), r"report.json has no \"model\""),
    ("report.json without representations", _edit("report.json", _without("representations")),
     r"report.json has no \"representations\""),
    ("report.json representations is a list", _edit("report.json", _set("representations", [])),
     r"report.json \"representations\" is not an object"),
    ("report.json mean_r is text", _edit("report.json", _first_result(_set("mean_r", "high"))), r"\"mean_r\" is not a number"),
    ("report.json result without r", _edit("report.json", _first_result(_without("r"))), r"has no \"r\""),
    ("partition step list too short", _edit("report.json", _thesis("partition", _first_block(lambda b: b["unet_unique"].pop()))),
     r"\"unet_unique\" is not one estimate per step"),
    ("partition estimate without ci", _edit("report.json", _thesis("partition", lambda p: {**p, "clip_alone": {"value": 0.1}})),
     r"\"clip_alone\" has no \"ci\""),
    ("entanglement matrix of the wrong size", _edit("report.json", _thesis("entanglement", lambda e: {
        **e, "reps": {n: {**r, "matrices": [[[0.5]]]} for n, r in e["reps"].items()}})), r"\"matrices\" holds something that is not"),
    ("findings in another order", _edit("report.json", _thesis("findings", lambda f: f[::-1])), r"not the three findings"),
    ("finding with an unknown verdict", _edit("report.json", _thesis("findings", lambda f: [{**f[0], "verdict": "proven"}, *f[1:]])),
     r"verdict 'proven', not one of"),
    ("report.json missing", lambda path: (Path(path) / "report.json").unlink(), r"damaged \(.*report.json.*\); rebuild it"),
    ("probes.safetensors garbage", _write("probes.safetensors", b"\x00" * 64), r"probes.safetensors.*damaged"),
    ("probes.safetensors missing", lambda path: (Path(path) / "probes.safetensors").unlink(), r"probes.safetensors.*damaged"),
    ("maps.safetensors garbage", _write("maps.safetensors", b"garbage" * 10), r"maps.safetensors\) is damaged"),
    ("maps.safetensors missing", lambda path: (Path(path) / "maps.safetensors").unlink(), r"maps.safetensors lacks the map"),
]


def _rep(name: str, change):
    def edit(report):
        report["representations"][name] = change(report["representations"][name])
        return report

    return edit


def _results(change):
    """Change every result of every representation (so the keys stay alike across results)."""
    def edit(report):
        for rep in report["representations"].values():
            rep["results"] = [change(res) for res in rep["results"]]
        return report

    return edit


def _infinite_mean_r(path: Path) -> None:
    """Python's json reads (and writes) Infinity and NaN, which are not JSON: a hand-edited report may hold them."""
    text = (Path(path) / "report.json").read_text()
    (Path(path) / "report.json").write_text(re.sub(r'"mean_r": [-0-9.e]+', '"mean_r": Infinity', text, count=1))


DEEP = b"[" * 200_000 + b"]" * 200_000  # valid JSON that Python's parser cannot read (RecursionError)

# issue 17: damage an attacker's Hub bundle can carry, each caught by the checks (never a traceback)
DAMAGE += [
    ("report.json nested 200000 deep", _write("report.json", DEEP), r"nested too deeply"),
    ("meta.json nested 200000 deep", _write("meta.json", DEEP), r"nested too deeply"),
    ("report.json groups missing", _edit("report.json", _without("groups")), r"report.json has no \"groups\""),
    ("report.json human_corr not square", _edit("report.json", _set("human_corr", [[1.0]])), r"\"human_corr\" is not a \d+ x \d+"),
    ("report.json attributes differ", _edit("report.json", _set("attributes", ["Vision"])), r"\"attributes\" differ"),
    ("report.json settings without folds", _edit("report.json", lambda r: {**r, "settings": {}}),
     r"\"settings\" has no \"folds\""),
    ("report.json settings template is a number", _edit("report.json", lambda r: {**r, "settings": {**r["settings"], "template": 3}}),
     r"\"template\" is not a string"),
    ("report.json mean_r_ci of three", _edit("report.json", _first_result(_set("mean_r_ci", [0, 1, 2]))),
     r"\"mean_r_ci\" is not a pair of numbers"),
    ("report.json group_r empty", _edit("report.json", _results(_set("group_r", {}))), r"\"group_r\" does not hold one value per domain"),
    ("report.json group_r values are text", _edit("report.json", _results(lambda r: {**r, "group_r": {g: "x" for g in r["group_r"]}})),
     r"\"group_r\" holds something that is not a number"),
    ("report.json null is one number", _edit("report.json", _results(_set("null_mean_r", 0.1))), r"\"null_mean_r\" is not a pair"),
    ("report.json p is text", _edit("report.json", _results(_set("p_mean_r", "small"))), r"\"p_mean_r\" is not a number"),
    ("report.json knn_accuracy only in one result", _edit("report.json", _first_result(_without("knn_accuracy"))),
     r"not hold the same numbers"),
    ("report.json mean_r is Infinity", _infinite_mean_r, r"\"mean_r\" is not a number"),
    ("report.json pred_corr keys not steps", _edit("report.json", _rep("unet.mid", lambda r: {**r, "pred_corr": {"x": []}})),
     r"\"pred_corr\" has a key 'x'"),
    ("report.json pred_corr not square", _edit("report.json", _rep("unet.mid", lambda r: {**r, "pred_corr": {"0": [[1]]}})),
     r"\"pred_corr\" step 0 is not a"),
    ("report.json per-prompt with two results", _edit("report.json", _rep("clip.mean", lambda r: {**r, "results": r["results"] * 2})),
     r"more than one per step"),
    ("meta.json template with a format spec", _edit("meta.json", _set("template", "{word:>2000000000}")),
     r"\"template\".*only plain \{word\}"),
    ("meta.json categories are numbers", _edit("meta.json", lambda m: {**m, "categories": list(range(len(m["words"])))}),
     r"\"categories\" holds something that is not a string"),
    ("meta.json dims of zero", _edit("meta.json", lambda m: {**m, "dims": {n: 0 for n in m["dims"]}}), r"width below 1"),
]

# steer_eval.json is optional: a damaged one is left out of the report with one warning, never a traceback
STEER_EVAL_DAMAGE = [
    ("not JSON", b"{half"), ("nested", DEEP), ("a list", b"[1]"), ("no summary", b'{"wheres": ["clip.cond"], "strengths": [1]}'),
    ("summary rows missing", b'{"wheres": ["clip.cond"], "strengths": [1], "words": [], "readout": "unet.up2", "summary": {}}'),
    ("row of text", b'{"wheres": ["clip.cond"], "strengths": [1], "words": [], "readout": "unet.up2", '
                    b'"summary": {"clip.cond": {"1.0": {"target": "x", "others": 0, "random_target": 0}}}}'),
]
