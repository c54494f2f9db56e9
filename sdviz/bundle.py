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
from .io import atomic_write
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
    path.mkdir(parents=True, exist_ok=True)
    meta = {"bundle_version": BUNDLE_VERSION, **meta}
    tensors = {f"{name}.{f}": getattr(p, f).to(torch.float32).contiguous() for name, p in probes.items() for f in PROBE_FIELDS}
    atomic_write(path / "probes.safetensors", lambda tmp: save_file(tensors, tmp))
    if maps:
        atomic_write(path / "maps.safetensors", lambda tmp: save_file({k: v.contiguous() for k, v in maps.items()}, tmp))
    for name, doc in (("report.json", report), ("meta.json", meta)):  # meta last: it marks the bundle complete
        atomic_write(path / name, lambda tmp, doc=doc: Path(tmp).write_text(json.dumps(doc, indent=1, allow_nan=False)))
    return path


# -- bundle schema: what the app, the report and Bundle.predict read -------------------------------
def _is(kind):
    """A type check by name: JSON has no int/bool distinction in Python's eyes, so exclude bool by hand."""
    checks = {
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "str": lambda v: isinstance(v, str), "bool": lambda v: isinstance(v, bool),
        "list": lambda v: isinstance(v, list), "dict": lambda v: isinstance(v, dict),
        "str|null": lambda v: v is None or isinstance(v, str), "list|null": lambda v: v is None or isinstance(v, list),
        "number|null": lambda v: v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)),
    }
    return checks[kind]


KIND_WORDS = {"int": "a whole number", "number": "a number", "str": "a string", "bool": "true/false", "list": "a list",
              "dict": "an object", "str|null": "a string or null", "list|null": "a list or null", "number|null": "a number or null"}
META_KEYS = {"bundle_version": "int", "model": "str", "kind": "str", "steps": "int", "timesteps": "list", "template": "str",
             "representations": "list", "per_step": "list", "dims": "dict", "maps": "list", "words": "list",
             "categories": "list|null", "dataset": "dict"}
DATASET_KEYS = {"name": "str", "attributes": "list", "groups": "dict", "group_names": "list"}
REPORT_KEYS = {"model": "str", "dataset": "str", "n_words": "int", "attributes": "list", "group_names": "list", "steps": "int",
               "settings": "dict", "human_corr": "list", "representations": "dict"}
REPRESENTATION_KEYS = {"per_step": "bool", "results": "list", "pred_corr": "dict"}
RESULT_KEYS = {"mean_r": "number", "mean_r_ci": "list", "r": "list", "two_v_two": "number", "group_r": "dict",
               "disambiguation": "number"}


class _Defect(Exception):
    """One thing wrong with a bundle, in words (turned into an SdvizError by load_bundle)."""


def _require(doc, keys: dict, where: str) -> None:
    if not isinstance(doc, dict):
        raise _Defect(f"{where} is not a JSON object")
    for key, kind in keys.items():
        if key not in doc:
            raise _Defect(f"{where} has no \"{key}\"")
        if not _is(kind)(doc[key]):
            raise _Defect(f"{where} \"{key}\" is not {KIND_WORDS[kind]}")


def _all(values, kind: str, where: str) -> None:
    if not all(_is(kind)(v) for v in values):
        raise _Defect(f"{where} holds something that is not {KIND_WORDS[kind]}")


def validate_meta(meta) -> None:
    """Raise _Defect unless meta.json has every key, of the right type, that sdviz reads."""
    if isinstance(meta, dict) and meta.get("bundle_version") != BUNDLE_VERSION:
        raise _Defect(f"it has bundle_version {meta.get('bundle_version')!r} and this sdviz reads version {BUNDLE_VERSION}")
    _require(meta, META_KEYS, "meta.json")
    _require(meta["dataset"], DATASET_KEYS, "meta.json \"dataset\"")
    _all(meta["dataset"]["attributes"], "str", "meta.json \"dataset\".\"attributes\"")
    _all(meta["words"], "str", "meta.json \"words\"")
    _all(meta["dims"].values(), "int", "meta.json \"dims\"")
    _all(meta["timesteps"], "number", "meta.json \"timesteps\"")
    if meta["steps"] < 1:
        raise _Defect("meta.json \"steps\" is below 1")
    attributes = meta["dataset"]["attributes"]
    if not attributes or any(a not in meta["dataset"]["groups"] for a in attributes):
        raise _Defect("meta.json \"dataset\" has no attributes, or an attribute without a group")
    for key in ("representations", "per_step", "maps"):
        _all(meta[key], "str", f"meta.json \"{key}\"")
        if key != "representations" and not set(meta[key]) <= set(meta["dims"]):
            raise _Defect(f"meta.json \"{key}\" names a representation missing from \"dims\"")
    for key in ("categories", "super_categories"):
        if meta.get(key) is not None and (not isinstance(meta[key], list) or len(meta[key]) != len(meta["words"])):
            raise _Defect(f"meta.json \"{key}\" is not one label per word")


def validate_report(report, meta) -> None:
    """Raise _Defect unless report.json has every key, of the right type, that the report page and the app read."""
    _require(report, REPORT_KEYS, "report.json")
    n_attr = len(meta["dataset"]["attributes"])
    for name, rep in report["representations"].items():
        where = f"report.json representation \"{name}\""
        _require(rep, REPRESENTATION_KEYS, where)
        if not rep["results"]:
            raise _Defect(f"{where} has no results")
        for k, res in enumerate(rep["results"]):
            _require(res, RESULT_KEYS, f"{where} step {k}")
            if len(res["r"]) != n_attr:
                raise _Defect(f"{where} step {k} has {len(res['r'])} values of r for {n_attr} attributes")
            _all(res["r"], "number", f"{where} step {k} \"r\"")


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
