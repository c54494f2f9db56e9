"""Recorded runs: store complete streamed runs once (on a GPU, with a real model), replay them anywhere.

A recordings folder holds one sub-folder per run and an `index.json` listing them:

    index.json                  {"format": "sdviz-recordings", "version": 1, "runs": [{id, prompt, seed, ...}, ...]}
    <run-id>/features.safetensors   float32: per-step names [steps, dim], clip.* names [dim]
    <run-id>/previews/000.png ...   the per-step latent previews (lossless, so replay is pixel-exact)
    <run-id>/image.png              the final VAE-decoded image
    <run-id>/decoded.json           decoded attributes per step (only when recorded with a probe bundle)
    <run-id>/run.json               the run's settings, timesteps and file list; written last: it marks the run complete

`RecordedRun.records()` yields the same `StepRecord`s `run.stream` yielded while recording, read
from disk with no model. Everything read is checked (a recording is user-supplied data): formats,
versions, keys, shapes, image files; anything wrong raises one `SdvizError` sentence. Never pickle.
See docs/recorded-runs.md. (Over 450 lines: the format's writer and its reader, which checks every field a user
can hand in, live together, so a change to the format is one change in one file.)
"""

import hashlib
import json
import logging
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
from PIL import Image
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from . import __version__
from .bundle import Bundle, check_bundle_matches, load_bundle
from .config import MAX_SIDE
from .errors import SdvizError
from .families import NAME_PATTERN, is_per_step
from .hub import is_hub_id, pull_folder
from .io import ROOT, atomic_write, new_folder, write_error
from .run import StepRecord, check_run_args, stream

FORMAT, RUN_FORMAT, VERSION = "sdviz-recordings", "sdviz-run", 1
INDEX_FIELDS = ("id", "prompt", "seed", "steps", "guidance", "model", "is_tiny", "bundle_model", "sdviz_version", "created")
_RUN_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,80}")
_PNG = b"\x89PNG\r\n\x1a\n"
log = logging.getLogger(__name__)
MAX_FEATURE_DIM = 1 << 20  # far above any real block width; guards against absurd shapes in a user file


def default_dir(slug: str) -> Path:
    """Where `python -m sdviz record` writes by default: recordings/<model-slug> in the checkout."""
    return ROOT / "recordings" / slug


# -- recording ----------------------------------------------------------------------------------
def run_id(prompt: str, seed: int, steps: int, guidance: float, model: str, scheduler: str, size: int | None = None) -> str:
    """Readable and unique per settings: the prompt's words, then a hash of everything that changes the run
    (an image side other than the model's own included; without one, the ids earlier versions gave)."""
    words = "-".join(re.findall(r"[a-z0-9]+", prompt.lower()))[:40].strip("-") or "run"
    key = json.dumps([prompt, seed, steps, float(guidance), model, scheduler] + ([size] if size else []))
    return f"{words}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def read_prompts(path: str | Path) -> list[str]:
    """Prompts from a text file: one per line; blank lines and lines starting with '#' are skipped."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise SdvizError(f"Could not read the prompts file {path} ({err}). Give a UTF-8 text file with one prompt per line.") from None
    prompts = list(dict.fromkeys(line.strip() for line in lines if line.strip() and not line.strip().startswith("#")))
    if not prompts:
        raise SdvizError(f"The prompts file {path} holds no prompts. Write one prompt per line ('#' starts a comment).")
    return prompts


def _bundle_info(bundle) -> dict:
    # The probe file's hash names the exact probes: a rebuilt bundle at the same path is a different bundle.
    digest = hashlib.sha256((Path(bundle.path) / "probes.safetensors").read_bytes()).hexdigest()
    return {"model": bundle.meta.get("model"), "name": Path(bundle.path).name, "sha256": digest,
            "steps": bundle.meta.get("steps"), "attributes": list(bundle.attributes)}


def decode(bundle, record: StepRecord) -> dict[str, list[float]]:
    """Decoded attributes of one record, as the app decodes a live step: every probe the bundle has."""
    decoded = bundle.decode(record.clip | record.features, record.step, record.steps)
    return {name: list(values.values()) for name, values in decoded.items()}


def _model(pipe) -> tuple[str, bool]:
    """(model id, is_tiny) of a pipeline from load_pipeline, or of a plain diffusers pipeline."""
    info = getattr(pipe, "sdviz", None)
    return (info.model_id, bool(info.is_tiny)) if info else (getattr(pipe, "name_or_path", None) or "unknown", False)


def _write_json(path: Path, doc) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(doc, indent=1, allow_nan=False), encoding="utf-8"))


def _write_png(path: Path, image: Image.Image) -> None:
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))


def _write_decoded(folder: Path, bundle, info: dict, records) -> dict:
    doc = {"version": VERSION, "bundle": info, "steps": [decode(bundle, r) for r in records]}
    _write_json(folder / "decoded.json", doc)
    return info


def _record_one(pipe, folder: Path, prompt: str, *, seed, steps, guidance, bundle, bundle_info, bar, size=None) -> dict:
    """Run one prompt through run.stream and write its files; run.json last. A run that fails part-way (a full disk,
    an interruption) leaves no folder behind: it is recorded again from the start on the next call."""
    try:
        return _stream_run(pipe, folder, prompt, seed=seed, steps=steps, guidance=guidance, bundle=bundle,
                           bundle_info=bundle_info, bar=bar, size=size)
    except BaseException:
        if not (folder / "run.json").exists():
            shutil.rmtree(folder, ignore_errors=True)
        raise


def _stream_run(pipe, folder: Path, prompt: str, *, seed, steps, guidance, bundle, bundle_info, bar, size=None) -> dict:
    try:
        (folder / "previews").mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise write_error(folder, err) from None
    records = []
    for record in stream(pipe, prompt, seed=seed, steps=steps, guidance=guidance, height=size, width=size):
        _write_png(folder / "previews" / f"{record.step:03d}.png", record.preview)
        records.append(record)
        if bar is not None:
            bar.update(1)
    return _write_run(pipe, folder, records, prompt, seed=seed, steps=steps, guidance=guidance, bundle=bundle,
                      bundle_info=bundle_info, previews_written=True)


def _write_run(pipe, folder: Path, records: list, prompt: str, *, seed, steps, guidance, bundle, bundle_info,
               previews_written: bool = False) -> dict:
    """The files of one finished run from its streamed records; run.json last."""
    if len(records) != steps or records[-1].image is None:
        raise SdvizError(f"The run of '{prompt}' stopped after {len(records)} of {steps} steps; rerun the command to resume.")
    if not previews_written:
        (folder / "previews").mkdir(parents=True, exist_ok=True)
        for record in records:
            _write_png(folder / "previews" / f"{record.step:03d}.png", record.preview)
    clip_names, step_names = list(records[0].clip), list(records[0].features)
    tensors = {n: records[0].clip[n].float().contiguous().clone() for n in clip_names}
    tensors |= {n: torch.stack([r.features[n].float() for r in records]).contiguous() for n in step_names}
    atomic_write(folder / "features.safetensors", lambda tmp: save_file(tensors, tmp))
    _write_png(folder / "image.png", records[-1].image)
    bundle_meta = _write_decoded(folder, bundle, bundle_info, records) if bundle is not None else None
    model, is_tiny = _model(pipe)
    meta = {
        "format": RUN_FORMAT, "version": VERSION, "id": folder.name, "prompt": prompt, "seed": seed, "steps": steps,
        "guidance": float(guidance), "model": model, "is_tiny": is_tiny,
        "scheduler": type(pipe.scheduler).__name__, "timesteps": [int(r.timestep) for r in records],
        "clip": {n: int(tensors[n].shape[-1]) for n in clip_names},
        "per_step": {n: int(tensors[n].shape[-1]) for n in step_names},
        "preview_size": list(records[0].preview.size), "image_size": list(records[-1].image.size),
        "bundle": bundle_meta, "bundle_model": bundle_meta["model"] if bundle_meta else None,
        "sdviz_version": __version__, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    _write_json(folder / "run.json", meta)
    return meta


def save_run(pipe, records: list, root: str | Path, *, prompt: str, seed: int, steps: int, guidance: float) -> "RecordedRun":
    """Keep a run already made (its streamed records, e.g. the app's live run) as a recorded run in root/<run id>,
    without running the model again; returns it, checked as any recorded run is. No probe bundle is stored: the
    app decodes a replay with the bundle it runs."""
    rid = run_id(prompt, seed, steps, guidance, _model(pipe)[0], type(pipe.scheduler).__name__)
    folder = Path(root) / rid
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _write_run(pipe, folder, list(records), prompt, seed=seed, steps=steps, guidance=guidance, bundle=None,
                   bundle_info=None)
    except (OSError, SafetensorError) as err:  # a full disk: no half-written run is ever loaded (run.json is last)
        raise SdvizError(f"Could not keep the run in {root} ({err}).") from None
    return _load_run(Path(root), rid)


def record_runs(pipe, prompts: list[str], out: str | Path, *, seed: int = 0, steps: int = 20, guidance: float = 7.5,
                bundle=None, progress: bool = True, size: int | None = None) -> Path:
    """Record one complete run per prompt into the folder `out` and list them in out/index.json.

    Each file is written atomically and run.json last, so an interrupted call leaves only whole files;
    rerunning resumes: finished runs are skipped (re-decoded from disk, without the model, when the
    bundle changed). `bundle` is a probe bundle (or its folder) for `pipe`'s model, or None. `size`: the image
    side in pixels (default: the model's own).
    """
    prompts = list(dict.fromkeys(p.strip() if isinstance(p, str) else p for p in prompts))  # once each, in order
    prompts, seed, steps, guidance, size, _ = check_run_args(prompts, seed, steps, guidance, size, size,
                                                             scale=pipe.vae_scale_factor)
    if bundle is not None and not isinstance(bundle, Bundle):
        bundle = load_bundle(bundle)
    if bundle is not None:
        check_bundle_matches(bundle, pipe)
    bundle_info = _bundle_info(bundle) if bundle is not None else None
    out = Path(out)
    with new_folder(out):  # a first run that fails (a full disk) leaves no empty recordings folder
        return _record_into(pipe, prompts, out, seed, steps, guidance, bundle, bundle_info, progress, size)


def _record_into(pipe, prompts, out: Path, seed, steps, guidance, bundle, bundle_info, progress, size=None) -> Path:
    done = _finished_runs(out)
    todo = []
    for prompt in prompts:
        rid = run_id(prompt, seed, steps, guidance, _model(pipe)[0], type(pipe.scheduler).__name__, size)
        if rid not in done:
            todo.append((prompt, rid))
        elif bundle is not None and (done[rid].meta.get("bundle") or {}).get("sha256") != bundle_info["sha256"]:
            run = done[rid]  # finished, but decoded with other probes (or none): decode again from disk, no model needed
            meta = dict(run.meta, bundle=_write_decoded(out / rid, bundle, bundle_info, list(run.records())))
            meta["bundle_model"] = meta["bundle"]["model"]
            _write_json(out / rid / "run.json", meta)
            run.meta = meta
    metas = {rid: run.meta for rid, run in done.items()}
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo) * steps, desc=f"recording {len(todo)} run(s)", unit="step")
    try:
        for prompt, rid in todo:
            metas[rid] = _record_one(pipe, out / rid, prompt, seed=seed, steps=steps, guidance=guidance, bundle=bundle,
                                     bundle_info=bundle_info, bar=bar, size=size)
            _write_index(out, metas)  # after every run: an interrupted call keeps what it finished
    finally:
        if bar is not None:
            bar.close()
    _write_index(out, metas)
    return out


def _finished_runs(out: Path) -> dict[str, "RecordedRun"]:
    """Runs already complete in `out` (index order first, then any finished after the last index write).
    A run that fails its checks is left out, so it is recorded again."""
    index = out / "index.json"
    if index.exists():
        doc = _read_json(index)
        _check_version(doc, index, FORMAT)  # never overwrite a newer sdviz's recordings
        listed = [e.get("id") for e in doc.get("runs", []) if isinstance(e, dict)] if isinstance(doc.get("runs"), list) else []
    else:
        others = [p.name for p in out.iterdir() if not p.name.startswith(".") and not (p.is_dir() and _RUN_ID.fullmatch(p.name))]
        if others:
            raise SdvizError(f"{out} is not empty and not a recordings folder (it holds {others[0]!r}). "
                             "Record into a new or empty folder.")
        listed = []
    found = sorted(p.name for p in out.iterdir() if p.is_dir() and _RUN_ID.fullmatch(p.name) and (p / "run.json").exists())
    done = {}
    for rid in dict.fromkeys([r for r in listed if isinstance(r, str)] + found):
        try:
            done[rid] = _load_run(out, rid)
        except SdvizError as err:
            log.warning("left out of the index (recorded again when its prompt is given): %s", err)
    return done


def _write_index(out: Path, metas: dict) -> None:
    runs = [{k: meta.get(k) for k in INDEX_FIELDS} for meta in metas.values()]
    _write_json(out / "index.json", {"format": FORMAT, "version": VERSION, "runs": runs})


# -- loading and replay ---------------------------------------------------------------------------
@dataclass
class RecordedRun:
    """One recorded run on disk. `records()` replays it step by step; no model is needed."""

    id: str
    prompt: str
    seed: int
    steps: int
    guidance: float
    model: str
    is_tiny: bool
    path: Path
    timesteps: list[int] = field(default_factory=list)
    bundle_model: str | None = None  # the model of the probe bundle that decoded it (None: not decoded)
    created: str = ""
    sdviz_version: str = ""
    meta: dict = field(default_factory=dict, repr=False)  # the whole of run.json, checked

    def records(self) -> Iterator[StepRecord]:
        """The run's StepRecords in step order, as run.stream yielded them; the last carries the final image."""
        features = _read_features(self)
        clip = {n: features[n] for n in self.meta["clip"]}
        for k in range(self.steps):
            yield StepRecord(
                step=k, steps=self.steps, timestep=self.timesteps[k],
                features={n: features[n][k].clone() for n in self.meta["per_step"]},
                clip={n: t.clone() for n, t in clip.items()},
                preview=_read_png(self.path, f"previews/{k:03d}.png", self.meta["preview_size"]),
                image=_read_png(self.path, "image.png", self.meta["image_size"]) if k == self.steps - 1 else None,
            )

    def decoded(self) -> dict | None:
        """The decoded attributes stored at recording time, or None: {"bundle": {model, name, sha256,
        steps, attributes}, "steps": [{representation: [value per attribute]} per step]}."""
        if self.meta.get("bundle") is None:
            return None
        return _read_decoded(self)


def _damaged(path: Path, what: str) -> SdvizError:
    return SdvizError(f"The recording at {path} is damaged ({what}). Record it again with `python -m sdviz record`.")


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _damaged(path.parent, f"{path.name} is missing") from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise _damaged(path.parent, f"{path.name} is not valid JSON: {err}") from None


def _check_version(doc, path: Path, fmt: str) -> None:
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        raise _damaged(path.parent, f"{path.name} is not an sdviz {fmt} file")
    version = doc.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise _damaged(path.parent, f"{path.name} has no valid version")
    if version > VERSION:
        raise SdvizError(f"The recording at {path.parent} was made by a newer sdviz (format version {version}); "
                         "upgrade sdviz (pip install -U sdviz) to replay it.")


def _is_int(x, lo: int, hi: int) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and lo <= x <= hi


def _check_size(size) -> bool:
    return isinstance(size, list) and len(size) == 2 and all(_is_int(s, 1, MAX_SIDE) for s in size)


def _check_run_meta(meta, folder: Path) -> None:
    """Types and ranges of every run.json field the replay uses (prompt, seed, steps, guidance: the rule a run is
    checked by, `run.check_run_args`, on the JSON types a recording writes)."""
    def bad(what):
        return _damaged(folder, f"run.json: {what}")

    try:
        check_run_args(meta.get("prompt"), meta.get("seed"), meta.get("steps"), meta.get("guidance"))
    except SdvizError as err:
        raise bad(str(err).rstrip(".")) from None
    checks = {  # JSON types, where the rule also reads a form's text ("3", "7.5")
        "seed": isinstance(meta["seed"], int), "steps": isinstance(meta["steps"], int),
        "guidance": isinstance(meta["guidance"], (int, float)),
        "model": isinstance(meta.get("model"), str) and bool(meta["model"]),
        "is_tiny": isinstance(meta.get("is_tiny"), bool),
        "preview_size": _check_size(meta.get("preview_size")),
        "image_size": _check_size(meta.get("image_size")),
        "created": isinstance(meta.get("created"), str),
        "sdviz_version": isinstance(meta.get("sdviz_version"), str),
        "bundle_model": meta.get("bundle_model") is None or isinstance(meta["bundle_model"], str),
        "bundle": meta.get("bundle") is None or isinstance(meta["bundle"], dict),
    }
    wrong = [k for k, ok in checks.items() if not ok]
    if wrong:
        raise bad(f"missing or invalid {', '.join(wrong)}")
    if meta.get("id") != folder.name:
        raise bad(f"its id {meta.get('id')!r} does not match the folder name {folder.name!r}")
    ts = meta.get("timesteps")
    if not isinstance(ts, list) or len(ts) != meta["steps"] or not all(_is_int(t, 0, 10**6) for t in ts):
        raise bad(f"timesteps must be {meta['steps']} whole numbers")
    for group, per_step in (("clip", False), ("per_step", True)):
        names = meta.get(group)
        if not isinstance(names, dict) or not all(isinstance(n, str) and NAME_PATTERN.fullmatch(n) and is_per_step(n) == per_step
                                                  and _is_int(d, 1, MAX_FEATURE_DIM) for n, d in names.items()):
            raise bad(f"'{group}' must map representation names to feature sizes")
    if not meta["per_step"]:
        raise bad("it lists no per-step features")


def _read_features(run: RecordedRun) -> dict[str, torch.Tensor]:
    """features.safetensors, checked against run.json: exactly the listed names, float32, the listed shapes."""
    path = run.path / "features.safetensors"
    expected = {n: (d,) for n, d in run.meta["clip"].items()} | {n: (run.steps, d) for n, d in run.meta["per_step"].items()}
    try:
        with safe_open(path, framework="pt") as f:
            keys = set(f.keys())
            if keys != set(expected):
                missing, extra = sorted(set(expected) - keys), sorted(keys - set(expected))
                raise _damaged(run.path, f"features.safetensors lacks {missing} and has unlisted {extra}" if extra
                               else f"features.safetensors lacks {missing}" if missing else "")
            out = {}
            for name, shape in expected.items():
                part = f.get_slice(name)
                if part.get_dtype() != "F32" or tuple(part.get_shape()) != shape:
                    raise _damaged(run.path, f"feature '{name}' is {part.get_dtype()} {tuple(part.get_shape())}, "
                                             f"run.json says F32 {shape}")
                out[name] = f.get_tensor(name)
    except FileNotFoundError:
        raise _damaged(run.path, "features.safetensors is missing") from None
    except (OSError, SafetensorError, ValueError, RuntimeError) as err:
        raise _damaged(run.path, f"features.safetensors cannot be read: {err}") from None
    return out


def _check_png(folder: Path, name: str, size) -> None:
    """Cheap check at load time: the file is there, is a PNG, and has the size run.json says (header only)."""
    path = folder / name
    try:
        with path.open("rb") as f:
            head = f.read(24)
    except FileNotFoundError:
        raise _damaged(folder, f"{name} is missing") from None
    except OSError as err:
        raise _damaged(folder, f"{name} cannot be read: {err}") from None
    # PNG: signature, then the IHDR chunk with width and height as big-endian 32-bit numbers
    if len(head) < 24 or head[:8] != _PNG or head[12:16] != b"IHDR":
        raise _damaged(folder, f"{name} is not a PNG image")
    if [int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")] != list(size):
        raise _damaged(folder, f"{name} is not {size[0]}x{size[1]} pixels as run.json says")


def _read_png(folder: Path, name: str, size) -> Image.Image:
    _check_png(folder, name, size)
    path = folder / name
    try:
        with Image.open(path, formats=["PNG"]) as img:
            img.load()
            if img.mode != "RGB":
                raise _damaged(folder, f"{name} is {img.mode}, not RGB")
            return img.copy()  # a plain in-memory image; the file is closed
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise _damaged(folder, f"{name} cannot be decoded: {err}") from None


def _read_decoded(run: RecordedRun) -> dict:
    path = run.path / "decoded.json"
    doc = _read_json(path)
    if not isinstance(doc, dict) or not _is_int(doc.get("version"), 1, VERSION) or not isinstance(doc.get("bundle"), dict):
        raise _damaged(run.path, "decoded.json has no valid version or bundle")
    attrs = doc["bundle"].get("attributes")
    steps = doc.get("steps")
    if not isinstance(attrs, list) or not all(isinstance(a, str) for a in attrs):
        raise _damaged(run.path, "decoded.json lists no attributes")
    names = set(run.meta["clip"]) | set(run.meta["per_step"])
    ok = isinstance(steps, list) and len(steps) == run.steps and all(
        isinstance(s, dict) and set(s) <= names and all(
            isinstance(v, list) and len(v) == len(attrs) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
            for v in s.values())
        for s in steps)
    if not ok:
        raise _damaged(run.path, f"decoded.json must hold {run.steps} steps of {len(attrs)} values per representation")
    return doc


def _load_run(root: Path, rid) -> RecordedRun:
    if not isinstance(rid, str) or not _RUN_ID.fullmatch(rid):  # also keeps every path inside `root`
        raise _damaged(root, f"index.json names an invalid run id {rid!r}")
    folder = root / rid
    if not folder.is_dir():
        raise _damaged(root, f"the run folder {rid} is missing")
    meta = _read_json(folder / "run.json")
    _check_version(meta, folder / "run.json", RUN_FORMAT)
    _check_run_meta(meta, folder)
    run = RecordedRun(id=rid, prompt=meta["prompt"], seed=meta["seed"], steps=meta["steps"], guidance=float(meta["guidance"]),
                      model=meta["model"], is_tiny=meta["is_tiny"], path=folder, timesteps=list(meta["timesteps"]),
                      bundle_model=meta["bundle_model"], created=meta["created"], sdviz_version=meta["sdviz_version"],
                      meta=meta)
    _read_features(run)
    for k in range(run.steps):
        _check_png(folder, f"previews/{k:03d}.png", meta["preview_size"])
    _check_png(folder, "image.png", meta["image_size"])
    run.decoded()
    return run


def _load_folder(root: Path) -> list[RecordedRun]:
    index = root / "index.json"
    if not index.exists():
        if any(p for p in root.iterdir() if not p.name.startswith(".")):
            raise SdvizError(f"{root} is not a recordings folder (it has no index.json). "
                             "Record runs into it with `python -m sdviz record --prompts FILE --out FOLDER`.")
        return []  # an empty folder: nothing recorded yet
    doc = _read_json(index)
    _check_version(doc, index, FORMAT)
    entries = doc.get("runs")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise _damaged(root, "index.json has no list of runs")
    runs = []
    for entry in entries:
        run = _load_run(root, entry.get("id"))
        differ = [k for k in ("prompt", "seed", "steps", "model") if entry.get(k) != run.meta.get(k)]
        if differ:
            raise _damaged(root, f"index.json and {run.id}/run.json disagree on {', '.join(differ)}")
        runs.append(run)
    if len({r.id for r in runs}) != len(runs):
        raise _damaged(root, "index.json lists a run twice")
    return runs


def load_recordings(spec: str | Path) -> list[RecordedRun]:
    """All runs of a recordings folder, or of a Hub dataset repo 'OWNER/NAME[@rev]'; an empty folder gives []."""
    path = Path(spec)
    if not path.exists():
        text = str(spec).strip()
        if isinstance(spec, Path) or not is_hub_id(text):
            raise SdvizError(f"No recordings folder at {spec}. Give a folder written by `python -m sdviz record`, "
                             "or a Hugging Face dataset id such as OWNER/NAME.")
        try:
            path = pull_folder(text, repo_type="dataset")  # cached by huggingface_hub; offline, the cache alone
        except SdvizError as err:  # pull_folder's sentence says what to do (offline, not found, no access)
            raise SdvizError(f"No local folder '{text}', and the Hub dataset '{text}' could not be downloaded: {err}") from None
        except OSError as err:  # the disk, or a network error huggingface_hub did not name
            raise SdvizError(f"No local folder '{text}', and the Hub dataset '{text}' could not be downloaded "
                             f"({type(err).__name__}: {str(err)[:200]}). Check the id and your network, or give a "
                             "local folder.") from None
    if not path.is_dir():
        raise SdvizError(f"{path} is a file, not a recordings folder. Give the folder `python -m sdviz record` wrote.")
    return _load_folder(path)


def find_run(runs: list[RecordedRun], prompt: str, seed: int | None = None) -> RecordedRun | None:
    """The first run recorded for this prompt (spaces around it ignored), and this seed when one is given."""
    prompt = prompt.strip() if isinstance(prompt, str) else prompt
    for run in runs:
        if run.prompt == prompt and (seed is None or run.seed == seed):
            return run
    return None
