"""Probe bundles: the files a build writes (probes, maps, meta, report), their checks, and the one decoder.

A bundle folder holds probes.safetensors (ridge weights per representation x trained step), maps.safetensors
(UMAP maps), report.json (the numbers) and meta.json (written last: it marks the bundle complete). `load_bundle`
checks every file a user hands in; `check_bundle_matches` refuses a bundle built for another model.

`Bundle.decode(features, step, steps)` is the one decoder: a prompt's features -> decoded attributes, with a
live step k of an S'-step run served by the probe trained at the nearest step fraction (`Bundle.trained_step`,
the only caller of `nearest_trained_step`). The app, recorded runs, steering and compare all decode through it.
"""

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import SdvizError
from .families import COND, representation_dims
from .hub import same_model
from .io import atomic_write, new_folder
from .probes import Ridge


def nearest_trained_step(live_step: int, live_steps: int, trained_steps: int) -> int:
    """Map step k of a live S'-step run to the trained step with the nearest step fraction k/(S'-1)."""
    if trained_steps <= 1:
        return 0
    fraction = live_step / (live_steps - 1) if live_steps > 1 else 0.0
    return min(trained_steps - 1, max(0, math.floor(fraction * (trained_steps - 1) + 0.5)))


@dataclass
class Bundle:
    path: Path
    meta: dict
    report: dict
    probes: dict[str, Ridge]  # per-step names: [steps, ...]; clip.*: [1, ...]
    maps: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def attributes(self) -> list[str]:
        return self.meta["dataset"]["attributes"]

    def trained_step(self, name: str, live_step: int = 0, live_steps: int = 1) -> int:
        """Which trained step's probe of `name` serves live step k of a `live_steps`-step run: the nearest step
        fraction k/(S'-1); 0 for a per-prompt name (clip.*), which has one probe."""
        if name not in self.meta["per_step"]:
            return 0
        return nearest_trained_step(live_step, live_steps, int(self.meta["steps"]))

    def predict(self, name: str, x: torch.Tensor, live_step: int = 0, live_steps: int = 1) -> np.ndarray:
        """Decoded attributes [T] (in `attributes` order) of one feature vector of `name` at live step k."""
        probe, j = self.probes[name], self.trained_step(name, live_step, live_steps)
        single = Ridge(probe.weight[j], probe.bias[j], probe.mean[j], probe.std[j], probe.alpha[j])
        return single.predict(x.reshape(1, -1)).reshape(-1).numpy()

    def decode(self, features: dict[str, torch.Tensor], step: int = 0, steps: int = 1) -> dict[str, dict[str, float]]:
        """One prompt's features ({name: vector}, e.g. a StepRecord's clip | features) at live step `step` of a
        `steps`-step run -> {name: {attribute: value}} for every name the bundle has a probe for, in the order given."""
        return {name: dict(zip(self.attributes, map(float, self.predict(name, x, step, steps))))
                for name, x in features.items() if name in self.probes}


def clip_probe_name(bundle: Bundle) -> str:
    """The probe that reads the conditioning the denoiser receives: clip.cond (equal to clip.mean on SD 1/2)."""
    for name in (COND, "clip.mean"):
        if name in bundle.probes:
            return name
    raise SdvizError("This bundle has no clip.cond or clip.mean probe to steer with. Rebuild it with `python -m sdviz build`.")


PROBE_FIELDS = ("weight", "bias", "mean", "std", "alpha")
MAP_FIELDS = ("coords", "mean", "std", "axes", "points")
BUNDLE_VERSION = 1  # bump when meta.json/report.json change shape; load_bundle refuses other versions


def save_bundle(path: Path, probes: dict[str, Ridge], meta: dict, report: dict, maps: dict | None = None) -> Path:
    """Write probes.safetensors, maps.safetensors, meta.json and report.json; each file whole or not at all.
    meta.json gets "bundle_version" (BUNDLE_VERSION)."""
    path = Path(path)
    meta = {"bundle_version": BUNDLE_VERSION, **meta}
    tensors = {f"{name}.{f}": getattr(p, f).to(torch.float32).contiguous() for name, p in probes.items() for f in PROBE_FIELDS}
    with new_folder(path):
        # a rebuild first takes the old meta.json away: if writing fails half-way (a full disk), the folder is not
        # mistaken for a complete bundle mixing old and new files
        (path / "meta.json").unlink(missing_ok=True)
        atomic_write(path / "probes.safetensors", lambda tmp: save_file(tensors, tmp))
        if maps:
            atomic_write(path / "maps.safetensors", lambda tmp: save_file({k: v.contiguous() for k, v in maps.items()}, tmp))
        for name, doc in (("report.json", report), ("meta.json", meta)):  # meta last: it marks the bundle complete
            atomic_write(path / name, lambda tmp, doc=doc: Path(tmp).write_text(json.dumps(doc, indent=1, allow_nan=False)))
    return path


# -- bundle schema: what the app, the report and Bundle.predict read -------------------------------
# A bundle may come from the Hub, so it is untrusted input: every field any reader uses is checked here, with its type
# and shape, and load_bundle refuses the bundle with one sentence naming the first thing wrong. Readers may then index
# freely. (tests/test_hardening.py breaks every field in turn and asserts that nothing else is ever raised.)
def _is(kind):
    """A type check by name: JSON has no int/bool distinction in Python's eyes, so exclude bool by hand; a number
    must be finite (report.json is written with allow_nan=False, so NaN or Infinity means it was edited)."""
    def number(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    checks = {
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": number,
        "str": lambda v: isinstance(v, str), "bool": lambda v: isinstance(v, bool),
        "list": lambda v: isinstance(v, list), "dict": lambda v: isinstance(v, dict),
        "str|null": lambda v: v is None or isinstance(v, str), "list|null": lambda v: v is None or isinstance(v, list),
        "number|null": lambda v: v is None or number(v),
        "interval": lambda v: isinstance(v, list) and len(v) == 2 and all(map(number, v)) and v[0] <= v[1],
        "interval|null": lambda v: v is None or (isinstance(v, list) and len(v) == 2 and all(map(number, v))),
    }
    return checks[kind]


KIND_WORDS = {"int": "a whole number", "number": "a number", "str": "a string", "bool": "true/false",
              "list": "a list", "dict": "an object", "str|null": "a string or null", "list|null": "a list or null",
              "number|null": "a number or null", "interval": "a pair of numbers [low, high]",
              "interval|null": "a pair of numbers or null"}
META_KEYS = {"bundle_version": "int", "model": "str", "kind": "str", "steps": "int", "timesteps": "list", "template": "str",
             "representations": "list", "per_step": "list", "dims": "dict", "maps": "list", "words": "list",
             "categories": "list|null", "dataset": "dict"}
DATASET_KEYS = {"name": "str", "attributes": "list", "groups": "dict", "group_names": "list"}
REPORT_KEYS = {"model": "str", "dataset": "str", "n_words": "int", "attributes": "list", "groups": "dict",
               "group_names": "list", "steps": "int", "settings": "dict", "human_corr": "list", "representations": "dict"}
SETTINGS_KEYS = {"folds": "int", "permutations": "int"}
SETTINGS_OPTIONAL = {"seed": "int", "template": "str", "knn_k": "int", "automatic": "bool", "steps": "int"}
REPRESENTATION_KEYS = {"per_step": "bool", "results": "list", "pred_corr": "dict"}
RESULT_KEYS = {"mean_r": "number", "mean_r_ci": "interval", "r": "list", "two_v_two": "number", "group_r": "dict",
               "disambiguation": "number"}
RESULT_OPTIONAL = {"two_v_two_ci": "interval", "disambiguation_ci": "interval", "knn_accuracy": "number",
                   "knn_chance": "number", "silhouette": "number", "ci_factor": "number|null", "alpha_median": "number|null",
                   "null_mean_r": "interval|null", "null_two_v_two": "interval|null", "null_disambiguation": "interval|null",
                   "p_mean_r": "number|null", "p_two_v_two": "number|null", "p_disambiguation": "number|null",
                   "group_r_ci": "dict", "chance": "dict"}


class _Defect(Exception):
    """One thing wrong with a bundle, in words (turned into an SdvizError by load_bundle)."""


def _require(doc, keys: dict, where: str, optional: dict | None = None) -> None:
    if not isinstance(doc, dict):
        raise _Defect(f"{where} is not a JSON object")
    for key, kind in keys.items():
        if key not in doc:
            raise _Defect(f"{where} has no \"{key}\"")
        if not _is(kind)(doc[key]):
            raise _Defect(f"{where} \"{key}\" is not {KIND_WORDS[kind]}")
    for key, kind in (optional or {}).items():
        if key in doc and not _is(kind)(doc[key]):
            raise _Defect(f"{where} \"{key}\" is not {KIND_WORDS[kind]}")


def _all(values, kind: str, where: str) -> None:
    if not all(_is(kind)(v) for v in values):
        raise _Defect(f"{where} holds something that is not {KIND_WORDS[kind]}")


def _matrix(M, n: int, where: str) -> None:
    """An n x n matrix of finite numbers (the attribute correlations)."""
    if not isinstance(M, list) or len(M) != n or not all(isinstance(row, list) and len(row) == n for row in M):
        raise _Defect(f"{where} is not a {n} x {n} matrix (one row and column per attribute)")
    for row in M:
        _all(row, "number", where)


def validate_meta(meta) -> None:
    """Raise _Defect unless meta.json has every key, of the right type, that sdviz reads."""
    from .ratings import check_template

    if isinstance(meta, dict) and meta.get("bundle_version") != BUNDLE_VERSION:
        raise _Defect(f"it has bundle_version {meta.get('bundle_version')!r} and this sdviz reads version {BUNDLE_VERSION}")
    _require(meta, META_KEYS, "meta.json")
    _require(meta["dataset"], DATASET_KEYS, "meta.json \"dataset\"")
    _all(meta["dataset"]["attributes"], "str", "meta.json \"dataset\".\"attributes\"")
    _all(meta["dataset"]["group_names"], "str", "meta.json \"dataset\".\"group_names\"")
    _all(meta["dataset"]["groups"].values(), "str", "meta.json \"dataset\".\"groups\"")
    _all(meta["words"], "str", "meta.json \"words\"")
    _all(meta["dims"].values(), "int", "meta.json \"dims\"")
    if any(d < 1 for d in meta["dims"].values()):
        raise _Defect("meta.json \"dims\" holds a width below 1")
    _all(meta["timesteps"], "number", "meta.json \"timesteps\"")
    if meta["steps"] < 1:
        raise _Defect("meta.json \"steps\" is below 1")
    attributes = meta["dataset"]["attributes"]
    if not attributes or any(a not in meta["dataset"]["groups"] for a in attributes):
        raise _Defect("meta.json \"dataset\" has no attributes, or an attribute without a group")
    if len(set(attributes)) != len(attributes):
        raise _Defect("meta.json \"dataset\" names an attribute twice")
    for key in ("representations", "per_step", "maps"):
        _all(meta[key], "str", f"meta.json \"{key}\"")
        if key != "representations" and not set(meta[key]) <= set(meta["dims"]):
            raise _Defect(f"meta.json \"{key}\" names a representation missing from \"dims\"")
    for key in ("categories", "super_categories"):
        if meta.get(key) is not None and (not isinstance(meta[key], list) or len(meta[key]) != len(meta["words"])):
            raise _Defect(f"meta.json \"{key}\" is not one label per word")
        if meta.get(key) is not None:
            _all(meta[key], "str", f"meta.json \"{key}\"")
    try:  # the template is filled for every word (steer-eval): a format spec could ask for gigabytes
        check_template(meta["template"])
    except SdvizError as err:
        raise _Defect(f"meta.json \"template\": {err}") from None


def _validate_result(res, where: str, keys: set, attributes: list, groups: set) -> None:
    _require(res, RESULT_KEYS, where, RESULT_OPTIONAL)
    if set(res) != keys:  # every reader takes the first result's keys as the report's metrics
        raise _Defect(f"{where} does not hold the same numbers as the first result")
    if len(res["r"]) != len(attributes):
        raise _Defect(f"{where} has {len(res['r'])} values of r for {len(attributes)} attributes")
    _all(res["r"], "number", f"{where} \"r\"")
    for key, kind in (("group_r", "number"), ("group_r_ci", "interval")):
        if key in res:
            if set(res[key]) != groups:  # the domain bars read one value per domain of the report
                raise _Defect(f"{where} \"{key}\" does not hold one value per domain of the report")
            _all(res[key].values(), kind, f"{where} \"{key}\"")


def validate_report(report, meta) -> None:
    """Raise _Defect unless report.json has every key, of the right type and shape, that the report page, the plots,
    the model card and the app read."""
    _require(report, REPORT_KEYS, "report.json")
    attributes = meta["dataset"]["attributes"]
    if report["attributes"] != attributes:
        raise _Defect("report.json \"attributes\" differ from meta.json's")
    if any(a not in report["groups"] for a in attributes):
        raise _Defect("report.json \"groups\" has no domain for some attribute")
    _all(report["groups"].values(), "str", "report.json \"groups\"")
    _all(report["group_names"], "str", "report.json \"group_names\"")
    if report["steps"] < 1:
        raise _Defect("report.json \"steps\" is below 1")
    _require(report["settings"], SETTINGS_KEYS, "report.json \"settings\"", SETTINGS_OPTIONAL)
    _matrix(report["human_corr"], len(attributes), "report.json \"human_corr\"")
    if "timesteps" in report:
        if not isinstance(report["timesteps"], list):
            raise _Defect("report.json \"timesteps\" is not a list")
        _all(report["timesteps"], "number", "report.json \"timesteps\"")
    if not report["representations"]:
        raise _Defect("report.json \"representations\" is empty")
    groups = set(report["groups"].values())
    keys = None
    for name, rep in report["representations"].items():
        where = f"report.json representation \"{name}\""
        _require(rep, REPRESENTATION_KEYS, where)
        if not rep["results"]:
            raise _Defect(f"{where} has no results")
        if rep["per_step"] and len(rep["results"]) > report["steps"] or not rep["per_step"] and len(rep["results"]) != 1:
            raise _Defect(f"{where} has {len(rep['results'])} results: more than one per step")
        for k, res in enumerate(rep["results"]):
            keys = set(res) if keys is None and isinstance(res, dict) else keys
            _validate_result(res, f"{where} step {k}", keys, attributes, groups)
        if not rep["pred_corr"]:
            raise _Defect(f"{where} \"pred_corr\" is empty")
        for step, M in rep["pred_corr"].items():
            if not step.isdigit() or int(step) >= len(rep["results"]):
                raise _Defect(f"{where} \"pred_corr\" has a key {step!r} that is not one of its steps")
            _matrix(M, len(attributes), f"{where} \"pred_corr\" step {step}")
        if "0" not in rep["pred_corr"]:
            raise _Defect(f"{where} \"pred_corr\" has no step 0")
    validate_thesis(report, len(attributes))


def validate_steer_eval(doc) -> None:
    """Raise _Defect unless steer_eval.json (written by `sdviz steer-eval`, optional in a bundle) has what the report's
    steering section reads: places, strengths, words, the readout and a summary row of numbers per place and strength."""
    _require(doc, {"wheres": "list", "strengths": "list", "words": "list", "readout": "str", "summary": "dict"},
             "steer_eval.json")
    _all(doc["wheres"], "str", "steer_eval.json \"wheres\"")
    _all(doc["strengths"], "number", "steer_eval.json \"strengths\"")
    if not doc["wheres"] or not doc["strengths"]:
        raise _Defect("steer_eval.json has no places or no strengths")
    for where in doc["wheres"]:
        rows = doc["summary"].get(where)
        if not isinstance(rows, dict) or set(rows) != {str(float(x)) for x in doc["strengths"]}:
            raise _Defect(f"steer_eval.json \"summary\" has no row per strength for '{where}'")
        for row in rows.values():
            _require(row, {"target": "number", "others": "number", "random_target": "number"},
                     f"steer_eval.json \"summary\" of '{where}'")
            _all(row.values(), "number", f"steer_eval.json \"summary\" of '{where}'")


VERDICTS = ("holds", "does not hold", "cannot tell at this precision")
FINDING_IDS = ("clip_vs_unet", "domains", "steps")
PARTS = ("block", "joint", "unet_unique", "clip_unique", "shared", "residual")
FINDING_KEYS = {"id": "str", "title": "str", "sentence": "str", "value": "number", "ci": "list", "p": "number|null",
                "verdict": "str", "baseline": "str"}


def _pair(value, where: str, nullable: bool = False) -> None:
    if nullable and value is None:
        return
    if not (isinstance(value, list) and len(value) == 2 and all(_is("number")(v) for v in value)):
        raise _Defect(f"{where} is not a pair of numbers")


def _estimate(est, where: str) -> None:
    """{"value": number, "ci": [lo, hi], "null": [mean, sd] | null, "p": number | null}."""
    _require(est, {"value": "number", "ci": "list", "null": "list|null", "p": "number|null"}, where)
    _pair(est["ci"], f"{where} \"ci\"")
    _pair(est["null"], f"{where} \"null\"", nullable=True)


def _per_step(values, n_steps: int, where: str) -> None:
    if not isinstance(values, list) or len(values) != n_steps:
        raise _Defect(f"{where} is not one estimate per step ({n_steps})")
    for k, est in enumerate(values):
        _estimate(est, f"{where} step {k}")


def _steps_of(report, name: str, where: str) -> int:
    rep = report["representations"].get(name)
    if rep is None:
        raise _Defect(f"{where} names \"{name}\", which is not among the report's representations")
    return len(rep["results"])


def validate_thesis(report, n_attr: int) -> None:
    """The optional keys of issue 18 (partition, entanglement, findings; shapes in `results`), when present."""
    if "partition" in report:
        part = report["partition"]
        _require(part, {"clip": "str", "metric": "str", "method": "str", "clip_alone": "dict", "blocks": "dict"},
                 "report.json \"partition\"")
        _estimate(part["clip_alone"], "report.json \"partition\" \"clip_alone\"")
        for name, block in part["blocks"].items():
            where = f"report.json \"partition\" block \"{name}\""
            n_steps = _steps_of(report, name, where)
            _require(block, dict.fromkeys(PARTS, "list"), where)
            for key in PARTS:
                _per_step(block[key], n_steps, f"{where} \"{key}\"")
    if "entanglement" in report:
        ent = report["entanglement"]
        _require(ent, {"human_offdiag": "number", "reps": "dict"}, "report.json \"entanglement\"")
        for name, rep in ent["reps"].items():
            where = f"report.json \"entanglement\" representation \"{name}\""
            n_steps = _steps_of(report, name, where)
            _require(rep, {"per_step": "bool", "rsa": "list", "offdiag": "list", "matrices": "list"}, where)
            _per_step(rep["rsa"], n_steps, f"{where} \"rsa\"")
            _per_step(rep["offdiag"], n_steps, f"{where} \"offdiag\"")
            if not rep["matrices"] or len(rep["matrices"]) > n_steps:
                raise _Defect(f"{where} \"matrices\" is empty or longer than its steps")
            for matrix in rep["matrices"]:
                if not (isinstance(matrix, list) and len(matrix) == n_attr and all(
                        isinstance(row, list) and len(row) == n_attr and all(_is("number")(v) for v in row) for row in matrix)):
                    raise _Defect(f"{where} \"matrices\" holds something that is not {n_attr} x {n_attr} numbers")
    if "findings" in report:
        found = report["findings"]
        if not isinstance(found, list) or [f.get("id") if isinstance(f, dict) else None for f in found] != list(FINDING_IDS):
            raise _Defect(f"report.json \"findings\" is not the three findings {', '.join(FINDING_IDS)} in this order")
        for finding in found:
            where = f"report.json finding \"{finding['id']}\""
            _require(finding, FINDING_KEYS, where)
            _pair(finding["ci"], f"{where} \"ci\"")
            if finding["verdict"] not in VERDICTS:
                raise _Defect(f"{where} has the verdict {finding['verdict']!r}, not one of {', '.join(VERDICTS)}")


def load_bundle(path) -> Bundle:
    """Load a bundle, checking that its files are whole, have every field sdviz reads (with the
    right types) and agree with each other. Every defect is one SdvizError sentence."""
    path = Path(path)
    if not (path / "meta.json").exists():
        raise SdvizError(f"No probe bundle at {path} (meta.json is missing). Build one with `python -m sdviz build`.")
    rebuild = "rebuild it with `python -m sdviz build` (or fetch it again)"
    try:
        meta = json.loads((path / "meta.json").read_text())
        report = json.loads((path / "report.json").read_text())
    except RecursionError:  # JSON nested thousands deep: json's parser gives up before any check can run
        raise SdvizError(f"The probe bundle at {path} is damaged (its JSON is nested too deeply to read); {rebuild}.") from None
    except (OSError, ValueError) as err:
        raise SdvizError(f"The probe bundle at {path} is damaged ({err}); {rebuild}.") from None
    try:
        validate_meta(meta)
        validate_report(report, meta)
    except _Defect as defect:
        raise SdvizError(f"The probe bundle at {path} is damaged or from another sdviz version ({defect}); {rebuild}.") from None
    try:
        raw = load_file(path / "probes.safetensors")
        maps = load_file(path / "maps.safetensors") if (path / "maps.safetensors").exists() else {}
    except (OSError, SafetensorError, ValueError) as err:
        raise SdvizError(f"{path / 'probes.safetensors'} (or maps.safetensors) is damaged ({err}); {rebuild}.") from None
    probes = {}
    n_attr = len(meta["dataset"]["attributes"])
    for name, dim in meta["dims"].items():
        try:
            probe = Ridge(*(raw[f"{name}.{f}"] for f in PROBE_FIELDS))
        except KeyError:
            raise SdvizError(f"{path / 'probes.safetensors'} has no probe for '{name}' listed in meta.json; {rebuild}.") from None
        steps = meta["steps"] if name in meta["per_step"] else 1
        if tuple(probe.weight.shape) != (steps, dim, n_attr):
            raise SdvizError(f"{path / 'probes.safetensors'}: probe '{name}' has shape {tuple(probe.weight.shape)}, "
                             f"meta.json says ({steps}, {dim}, {n_attr}); {rebuild}.")
        probes[name] = probe
    for name in meta["maps"]:
        absent = [f for f in MAP_FIELDS if f"{name}.{f}" not in maps]
        coords = maps.get(f"{name}.coords")
        if absent or coords is None or coords.dim() != 3 or coords.shape[1] != len(meta["words"]):
            raise SdvizError(f"{path / 'maps.safetensors'} lacks the map of '{name}' listed in meta.json (or it does not "
                             f"have one point per word); {rebuild}.")
    return Bundle(path, meta, report, probes, maps)


def check_bundle_matches(bundle: Bundle, pipe) -> None:
    """Raise if the bundle was built for another model, or its dims differ from the running model's."""
    info = pipe.sdviz
    if not same_model(bundle.meta.get("model"), info.model_id):
        raise SdvizError(f"The probe bundle {bundle.path} was built for '{bundle.meta.get('model')}', but the running model is "
                         f"'{info.model_id}'. Build one for this model with `python -m sdviz build --model {info.model_id}`.")
    dims = representation_dims(pipe)
    wrong = {n: (d, dims.get(n)) for n, d in bundle.meta["dims"].items() if dims.get(n) != d}
    if wrong:
        detail = ", ".join(f"{n}: bundle {a} vs model {b}" for n, (a, b) in wrong.items())
        raise SdvizError(f"The probe bundle {bundle.path} does not fit the running model ({detail}). Rebuild it with `python -m sdviz build`.")
