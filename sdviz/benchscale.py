"""Benchmarks at real size: `python -m sdviz.bench scale` and the prepared device check `python -m sdviz.bench gpu`.

    python -m sdviz.bench scale [--model full-sd15] [--size 256] [--words 8,16,24] [--steps 2,3] [--out DIR]
    python -m sdviz.bench gpu --out DIR [--device cuda|cpu] [--quick]

`scale` builds bundles at a few sizes (words x steps) with the real `sdviz.build` and its stage times
(`BuildResult.timings`), measures the capture against the plain diffusers pipeline on the same prompts and seed,
the extraction against the plain batched pipeline, memory, sizes on disk and the app's per-step cost, fits how each
stage grows (log-log slopes over words, steps and feature width) and projects a paper-scale build
(434 nouns x 50 steps x 100 permutations) on this machine's CPU and on one GPU. `gpu` is one script with the
settings of a device check (SD 1.5 at 512 px in float16, 25 steps); `--device cpu --quick` runs it small, as the
test suite does. Both print tables, write JSON to --out after every section (a run cut short keeps what it
measured) and report progress on stderr. What is measured how: docs/performance.md. (Over 450 lines: a benchmark
script, never imported by the library; its sections share the timing, memory and projection helpers kept here.)
"""

import json
import math
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

PAPER = {"words": 434, "steps": 50, "permutations": 100, "folds": 10}
# When no GPU was measured: the one published number used for the GPU projection (said so in the output).
PUBLISHED_GPU = {
    "seconds_per_prompt_step": 1 / 31.19,
    "source": "fal-ai/stable-diffusion-benchmarks (github.com/fal-ai/stable-diffusion-benchmarks): SD 1.5, 512 px, "
              "50 steps, batch 1, float16, diffusers with torch 2.1 SDPA, one A100 80GB SXM: 31.19 it/s",
}
STAGES = ("load", "extract", "cross-validate", "metrics", "nulls", "fit", "maps", "save")
ANALYSIS = ("cross-validate", "metrics", "nulls", "fit")


def say(message: str) -> None:
    """Progress, on stderr (the tables go to stdout)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _sync(device: str) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def peak_memory(device: str) -> dict:
    """The process's peak resident memory so far (Linux reports ru_maxrss in KiB), and torch's peak on CUDA."""
    import torch

    out = {"host_peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    if str(device).startswith("cuda"):
        out["device_peak_bytes"] = int(torch.cuda.max_memory_allocated())
    return out


def folder_bytes(path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


@contextmanager
def at_size(pipe, size: int | None):
    """Make `size` pixels the pipeline's default side for the `with` body, so that what runs without height/width
    (the build's extraction, trace, stream) runs at that size; restored on exit. None: the model's own."""
    if not size:
        yield
        return
    old = pipe.unet.config.sample_size
    old_default = getattr(pipe, "default_sample_size", None)  # SDXL reads this copy, taken at init
    pipe.unet.register_to_config(sample_size=size // pipe.vae_scale_factor)
    if old_default is not None:
        pipe.default_sample_size = size // pipe.vae_scale_factor
    try:
        yield
    finally:
        pipe.unet.register_to_config(sample_size=old)
        if old_default is not None:
            pipe.default_sample_size = old_default


@contextmanager
def denoiser_clock(pipe):
    """Sum the wall time of the denoiser's own calls inside the `with` body into clock['seconds'] (and count
    them). Two hooks on the denoiser module, removed on every exit; on CUDA each call is synchronised."""
    device = str(pipe.device)
    clock, started = {"seconds": 0.0, "calls": 0}, []

    def before(module, args):
        _sync(device)
        started.append(time.perf_counter())

    def after(module, args, output):
        _sync(device)
        clock["seconds"] += time.perf_counter() - started.pop()
        clock["calls"] += 1

    handles = [pipe.unet.register_forward_pre_hook(before), pipe.unet.register_forward_hook(after)]
    try:
        yield clock
    finally:
        for handle in handles:
            handle.remove()


def word_subset(ratings: str | None, n: int, folder: Path) -> tuple[Path, list[str]]:
    """The first n Binder nouns as a ratings file in `folder` (a temporary work folder, removed at the end: the
    ratings are never copied anywhere else)."""
    import pandas as pd

    from .errors import SdvizError
    from .ratings import default_ratings_path, load_ratings

    path = Path(ratings) if ratings else default_ratings_path()
    table = load_ratings(path)
    if n > len(table.words):
        raise SdvizError(f"--words {n} is more than the {len(table.words)} words of {path}; ask for fewer.")
    words = table.words[:n]
    df = pd.read_csv(path) if path.suffix.lower() == ".csv" else pd.read_excel(path)
    out = folder / f"{path.stem}-{n}.csv"
    df[df["Word"].isin(words)].to_csv(out, index=False)
    return out, words


def plain_latents(pipe, prompts: list[str], steps: int, guidance: float, batch: int, seed: int = 0):
    """The plain diffusers pipeline on `prompts` in batches, as the extraction runs them (every prompt the same
    seed, latents out, no VAE decode)."""
    import torch

    with torch.inference_mode():
        for i in range(0, len(prompts), batch):
            part = prompts[i : i + batch]
            pipe(part, num_inference_steps=steps, guidance_scale=guidance, output_type="latent",
                 generator=[torch.Generator("cpu").manual_seed(seed) for _ in part])


def timed(fn, device: str) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def capture_vs_plain(pipe, prompts: list[str], steps: int, guidance: float, repeats: int) -> dict:
    """The same prompts and seed through the plain pipeline and through `trace` (every representation captured),
    latents out in both (no VAE decode: the ratio is over the part the capture touches); interleaved, alternating
    which goes first, after one warm-up each."""
    import torch

    from .run import trace

    device = str(pipe.device)
    seeds = list(range(len(prompts)))

    def plain():
        pipe(prompts, num_inference_steps=steps, guidance_scale=guidance, output_type="latent",
             generator=[torch.Generator("cpu").manual_seed(s) for s in seeds])

    def captured():
        trace(pipe, prompts, seeds=seeds, steps=steps, guidance=guidance, decode=False)

    with torch.inference_mode():
        plain(), captured()
        times = {"plain": [], "capture": []}
        for i in range(repeats):
            order = [("plain", plain), ("capture", captured)]
            for name, fn in order if i % 2 == 0 else order[::-1]:
                times[name].append(timed(fn, device))
    ratios = [c / p for c, p in zip(times["capture"], times["plain"])]
    return {"prompts": len(prompts), "steps": steps, "repeats": repeats, "plain_s": times["plain"],
            "capture_s": times["capture"], "ratio_median": statistics.median(ratios),
            "ratio_min": min(ratios), "ratio_max": max(ratios)}


def timed_build(pipe, ratings_csv: Path, words: int, steps: int, *, permutations: int, folds: int, guidance: float,
                work: Path, batch_size: int | None = None) -> dict:
    """One `sdviz.build` on a fresh cache: its stage times, the denoiser's own time inside it, sizes on disk."""
    from .build import BuildConfig, build

    cache, out = work / f"cache-{words}w-{steps}s", work / f"bundle-{words}w-{steps}s"
    config = BuildConfig(model=pipe.sdviz.model_id, ratings=str(ratings_csv), steps=steps, guidance=guidance,
                         permutations=permutations, folds=folds, device=pipe.sdviz.device, batch_size=batch_size,
                         cache=str(cache), out=str(out), progress=False)
    with denoiser_clock(pipe) as clock:
        result = build(config, pipe=pipe)
    widths = {name: int(rep["dim"]) for name, rep in result.report["representations"].items()}
    per_step = [n for n, rep in result.report["representations"].items() if rep["per_step"]]
    return {"words": words, "steps": steps, "permutations": permutations, "folds": folds,
            "timings": {k: v for k, v in result.timings.items() if k != "load"}, "total_s": result.timings["total"],
            "denoiser_s": clock["seconds"], "denoiser_calls": clock["calls"],
            "cache_bytes": folder_bytes(cache), "bundle_bytes": folder_bytes(out), "bundle": str(out),
            "widths": widths, "per_step": per_step, "batch_size": batch_size}


def app_step_cost(pipe, bundle_path: Path | None, steps: int, guidance: float, repeats: int) -> dict:
    """Per step: the plain pipeline's step vs the app's (the library `stream`, each record's features decoded by the
    bundle, its preview encoded as PNG), at the pipeline's current default size. Per-step times are the gaps
    between consecutive steps inside a run (the first step and the final VAE decode are left out of both)."""
    import io

    import torch

    from .bundle import load_bundle
    from .run import stream

    device = str(pipe.device)
    bundle = load_bundle(bundle_path) if bundle_path else None
    prompt = "a photo of a dog"
    plain, app, decode_ms, png_ms, png_bytes, side = [], [], [], [], [], 0
    for i in range(repeats + 1):  # the first run warms up
        stamps = []

        def stamp(p, step, timestep, kwargs, stamps=stamps):
            _sync(device)
            stamps.append(time.perf_counter())
            return {}

        with torch.inference_mode():
            pipe(prompt, num_inference_steps=steps, guidance_scale=guidance, output_type="latent",
                 generator=torch.Generator("cpu").manual_seed(i), callback_on_step_end=stamp)
        gaps_plain = [b - a for a, b in zip(stamps, stamps[1:])]
        arrived = []
        for record in stream(pipe, prompt, seed=i, steps=steps, guidance=guidance):
            if record.image is not None:  # the last record waits for the VAE decode: not a step's cost
                break
            begin = time.perf_counter()
            if bundle is not None:
                bundle.decode(record.clip | record.features, record.step, record.steps)
            middle = time.perf_counter()
            buffer = io.BytesIO()
            record.preview.save(buffer, format="PNG")
            end = time.perf_counter()
            arrived.append(end)
            if i:
                decode_ms.append((middle - begin) * 1000)
                png_ms.append((end - middle) * 1000)
                png_bytes.append(buffer.tell())
            side = record.preview.width
        if i:
            plain += gaps_plain
            app += [b - a for a, b in zip(arrived, arrived[1:])]
    out = {"steps": steps, "repeats": repeats, "preview_px": side, "bundle": bundle is not None,
           "decode_ms": statistics.median(decode_ms) if decode_ms else None,
           "png_ms": statistics.median(png_ms) if png_ms else None,
           "png_bytes": int(statistics.median(png_bytes)) if png_bytes else None,
           "plain_step_s": statistics.median(plain) if plain else None,
           "app_step_s": statistics.median(app) if app else None}
    if plain and app:
        out["overhead_ms"] = (out["app_step_s"] - out["plain_step_s"]) * 1000
        out["ratio"] = out["app_step_s"] / out["plain_step_s"]
    return out


def slope(xs, ys) -> float | None:
    """Least-squares slope of log(y) on log(x): the exponent a in y ~ x^a (None with fewer than two sizes)."""
    pts = [(math.log(x), math.log(max(y, 1e-6))) for x, y in zip(xs, ys)]
    if len({x for x, _ in pts}) < 2:
        return None
    mx, my = statistics.fmean(x for x, _ in pts), statistics.fmean(y for _, y in pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)


def width_growth(ratings_csv: Path, widths: list[int], steps: int, permutations: int, folds: int, seed: int = 0) -> list[dict]:
    """The analysis stages and the maps on seeded random features of each width (same words, steps, permutations):
    how they grow with feature width, which the model fixes and a build cannot vary."""
    import warnings

    import torch

    from . import analysis, maps, probes
    from .ratings import load_ratings

    ratings = load_ratings(ratings_csv)
    Y = ratings.values[ratings.complete]
    cats = None if ratings.categories is None else [c for c, ok in zip(ratings.categories, ratings.complete) if ok]
    rows = []
    for d in widths:
        X = torch.randn(len(Y), steps, d, generator=torch.Generator().manual_seed(seed))
        t: dict = {}
        with warnings.catch_warnings():  # random features: constant predictions in a fold are expected
            warnings.simplefilter("ignore", RuntimeWarning)
            analysis.analyse({"x": X}, Y, ratings.attributes, ratings.groups, cats, folds=folds, seed=seed,
                             n_permutations=permutations, progress=False, timings=t)
        begin = time.perf_counter()
        probes.fit_ridge(X.transpose(0, 1), torch.as_tensor(Y))
        t["fit"] = time.perf_counter() - begin
        begin = time.perf_counter()
        maps.build_maps({"x": X}, ["x"], seed=seed, progress=False)
        t["maps"] = time.perf_counter() - begin
        rows.append({"width": d, "timings": t})
    return rows


def paper_unit_costs(ratings: str | None, widths: list[int], *, permutations: int = PAPER["permutations"], seed: int = 0) -> dict:
    """Measured at paper scale (all Binder nouns, 100 permutations, 10 folds) on seeded random features of each
    width: the seconds per representation x step of cross-validation, metrics, nulls and the fit (two steps timed,
    halved; the once-per-build preparation of the targets timed on its own), and one map's first and later steps."""
    import warnings

    import torch

    from . import analysis, maps, probes
    from .ratings import load_ratings

    table = load_ratings(ratings)
    Y = table.values[table.complete]
    cats = None if table.categories is None else [c for c, ok in zip(table.categories, table.complete) if ok]
    begin = time.perf_counter()
    probes.prepare_targets(Y, folds=PAPER["folds"], seed=seed, n_permutations=permutations)
    prepare = time.perf_counter() - begin
    per_width = {}
    for d in widths:
        say(f"paper-scale unit costs: {len(Y)} words x width {d} x {permutations} permutations")
        X = torch.randn(len(Y), 2, d, generator=torch.Generator().manual_seed(seed))
        t: dict = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            analysis.analyse({"x": X}, Y, table.attributes, table.groups, cats, folds=PAPER["folds"], seed=seed,
                             n_permutations=permutations, progress=False, timings=t)
        t["cross-validate"] = max(t["cross-validate"] - prepare, 0.0)
        begin = time.perf_counter()
        probes.fit_ridge(X.transpose(0, 1), torch.as_tensor(Y))
        t["fit"] = time.perf_counter() - begin
        per_width[d] = {k: v / 2 for k, v in t.items()}
    d = max(widths)
    X = torch.randn(len(Y), 2, d, generator=torch.Generator().manual_seed(seed))
    begin = time.perf_counter()
    maps.build_maps({"x": X[:, :1]}, ["x"], seed=seed, progress=False)
    first = time.perf_counter() - begin
    begin = time.perf_counter()
    maps.build_maps({"x": X}, ["x"], seed=seed, progress=False)
    later = max(time.perf_counter() - begin - first, 0.0)
    return {"words": len(Y), "permutations": permutations, "prepare_s": prepare, "per_pair_s": per_width, "map_first_s": first, "map_later_s": later}


def project(builds: list[dict], exponents: dict, unit: dict | None, load_s: float, plain_denoiser_per_prompt_step: float,
            gpu_per_prompt_step: float, gpu_source: str) -> dict:
    """Paper-scale time per stage, on this machine (its CPU, or its GPU on CUDA) and on one GPU.

    extract: the largest build's seconds per prompt x step, times 434 x 50. cross-validate, metrics, nulls, fit:
    measured per representation x step at paper scale (`paper_unit_costs`) times the build's representations x 50
    steps (by width); without that measurement, by the fitted exponents. maps: one map's first step plus 49 later
    steps, per mapped representation. save: by the fitted exponents. load: as measured. On the GPU only the
    extraction changes (the build's analysis runs on the CPU either way)."""
    from .build import MAP_PREFIXES

    ref = max(builds, key=lambda b: (b["words"] * b["steps"], b["words"]))
    W, S = PAPER["words"], PAPER["steps"]
    by_exponent = {}
    for stage in STAGES[1:]:
        a_w = max(exponents["words"].get(stage) or 0.0, 0.0)
        a_s = max(exponents["steps"].get(stage) or 0.0, 0.0)
        folds = PAPER["folds"] / ref["folds"] if stage == "cross-validate" else 1.0
        perms = (1 + PAPER["permutations"]) / (1 + ref["permutations"]) if stage in ("cross-validate", "nulls") else 1.0
        by_exponent[stage] = ref["timings"].get(stage, 0.0) * (W / ref["words"]) ** a_w * (S / ref["steps"]) ** a_s * folds * perms
    cpu = {"load": load_s, "extract": ref["timings"]["extract"] / (ref["words"] * ref["steps"]) * W * S}
    method = {"load": "measured", "extract": "measured per prompt x step (largest build) x 434 x 50"}
    per_step = set(ref["per_step"])
    widths = ref["widths"]
    if unit:
        pairs = {name: (S if name in per_step else 1) for name in widths}
        nearest = lambda d: min(unit["per_pair_s"], key=lambda u: abs(int(u) - d))  # noqa: E731
        for stage in ANALYSIS:
            cpu[stage] = sum(n * unit["per_pair_s"][nearest(widths[name])][stage] for name, n in pairs.items())
            method[stage] = (f"measured per representation x step ({unit['words']} words, {unit['permutations']} "
                             "permutations, 10 folds) x representations x 50 steps")
        cpu["cross-validate"] += unit["prepare_s"]
        mapped = [n for n in widths if n.startswith(MAP_PREFIXES)]
        cpu["maps"] = sum(unit["map_first_s"] + (S - 1) * unit["map_later_s"] if n in per_step else unit["map_first_s"]
                          for n in mapped)
        method["maps"] = f"measured first + 49 later map steps ({unit['words']} words) x mapped representations"
    for stage in STAGES[1:]:
        if stage not in cpu:
            cpu[stage], method[stage] = by_exponent[stage], "fitted exponents from the largest build"
    gpu = dict(cpu) | {"extract": gpu_per_prompt_step * W * S}
    denoiser = plain_denoiser_per_prompt_step * W * S
    return {"paper": PAPER, "reference_build": {"words": ref["words"], "steps": ref["steps"]},
            "here_s": cpu, "gpu_s": gpu, "by_exponents_s": by_exponent, "method": method,
            "here_total_s": sum(cpu.values()), "gpu_total_s": sum(gpu.values()), "gpu_source": gpu_source,
            "here_denoiser_s": denoiser, "here_non_denoiser_share": 1 - denoiser / sum(cpu.values())}


def _hms(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def write_json(out: Path, name: str, data: dict) -> Path:
    from .io import atomic_write

    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / name, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=1, default=str)))
    return out / name


def print_report(data: dict) -> None:
    """The tables, readable: stages per build, growth exponents, the paper-scale projection and the goals."""
    m = data["machine"]
    print(f"\nmodel={data['model']} size={data['size']}px device={m['device']} dtype={m['dtype']} torch threads={m['threads']} "
          f"cpus={m['cpus']} permutations={data['permutations']} (random weights: timings only, numbers meaningless)")
    builds = data["builds"]
    if builds:
        print("\nstage seconds per build (words x steps)")
        head = "".join(f"{b['words']:>5}x{b['steps']:<4}" for b in builds)
        print(f"  {'stage':<15}{head}")
        for stage in STAGES:
            row = [data["load_s"] if stage == "load" else b["timings"].get(stage, 0.0) for b in builds]
            print(f"  {stage:<15}" + "".join(f"{v:>10.1f}" for v in row))
        print(f"  {'total':<15}" + "".join(f"{b['total_s'] + data['load_s']:>10.1f}" for b in builds))
        print(f"  {'denoiser own':<15}" + "".join(f"{b['denoiser_s']:>10.1f}" for b in builds))
        print(f"  {'cache MiB':<15}" + "".join(f"{b['cache_bytes'] / 2**20:>10.2f}" for b in builds))
        print(f"  {'bundle MiB':<15}" + "".join(f"{b['bundle_bytes'] / 2**20:>10.2f}" for b in builds))
    g = data.get("growth")
    if g:
        print("\ngrowth: fitted exponent a in time ~ size^a (log-log least squares)")
        print(f"  {'stage':<15}{'words ' + g['words_sizes']:>22}{'steps ' + g['steps_sizes']:>18}{'width ' + g['width_sizes']:>24}")
        for stage in STAGES[1:]:
            cells = [g["exponents"][axis].get(stage) for axis in ("words", "steps", "width")]
            print(f"  {stage:<15}" + "".join(f"{'-' if c is None else f'{c:.2f}':>{w}}" for c, w in zip(cells, (22, 18, 24))))
    c = data.get("capture")
    if c:
        print(f"\ncapture/plain ({c['prompts']} prompt(s), {c['steps']} steps, median of {c['repeats']} paired): "
              f"{c['ratio_median']:.3f} (range {c['ratio_min']:.3f}-{c['ratio_max']:.3f}; goal <= 1.03)")
    e = data.get("extraction")
    if e:
        print(f"extraction vs plain batched diffusers ({e['words']} prompts, batch {e['batch_size']}, {e['steps']} steps): "
              f"{e['extract_s']:.1f} s vs {e['plain_s']:.1f} s; throughput {e['throughput_ratio']:.2f}x plain (GPU goal >= 0.9); "
              f"whole build {e['build_vs_plain']:.2f}x plain (GPU goal at 25 steps, 100 permutations: <= 1.2)")
    a = data.get("app")
    if a and a.get("app_step_s"):
        print(f"app per step ({a['preview_px']} px previews): plain {a['plain_step_s'] * 1000:.0f} ms, app "
              f"{a['app_step_s'] * 1000:.0f} ms (overhead {a['overhead_ms']:.0f} ms, ratio {a['ratio']:.3f}); "
              f"decode {a['decode_ms'] or 0:.1f} ms, PNG {a['png_ms']:.1f} ms ({a['png_bytes'] / 1024:.0f} KiB)")
    s = data.get("share")
    if s:
        paper = f"; projected at paper scale: {s['paper']:.1%}" if "paper" in s else ""
        print(f"non-denoiser share of the largest build: {s['measured']:.1%} measured at {s['words']} words x {s['steps']} "
              f"steps (goal <= 10%){paper}")
    for name, error in data["errors"].items():
        print(f"FAILED {name}: {error}")
    mem = data.get("memory", {})
    print(f"peak host memory: {mem.get('host_peak_bytes', 0) / 2**30:.2f} GiB"
          + (f", device {mem['device_peak_bytes'] / 2**30:.2f} GiB" if "device_peak_bytes" in mem else ""))
    p = data.get("projection")
    if p:
        print(f"\nprojected paper-scale build ({p['paper']['words']} nouns x {p['paper']['steps']} steps x "
              f"{p['paper']['permutations']} permutations, {data['size']} px)")
        print(f"  here: {p['here']}; on one GPU only the extraction changes (the analysis runs on the CPU either way)")
        print(f"  {'stage':<15}{'here':>12}{'one GPU':>12}  how")
        for stage in STAGES:
            print(f"  {stage:<15}{_hms(p['here_s'][stage]):>12}{_hms(p['gpu_s'][stage]):>12}  {p['method'][stage]}")
        print(f"  {'total':<15}{_hms(p['here_total_s']):>12}{_hms(p['gpu_total_s']):>12}")
        print(f"  GPU extraction from: {p['gpu_source']}")


def machine(pipe) -> dict:
    import torch

    info = {"device": pipe.sdviz.device, "dtype": pipe.sdviz.dtype, "threads": torch.get_num_threads(),
            "cpus": os.cpu_count(), "load_average": os.getloadavg()[0]}
    if str(pipe.device).startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
    return info


@contextmanager
def section(data: dict, name: str):
    """One independent measurement: an error is said on stderr and kept in data['errors'][name], and the script
    goes on to the next (a device check that fails half-way still brings back the rest)."""
    try:
        yield
    except Exception as err:  # noqa: BLE001 - recorded in the JSON and shown, never hidden
        data["errors"][name] = f"{type(err).__name__}: {err}"
        say(f"{name} failed: {data['errors'][name]}")


def measure(args, *, words_sizes: list[int], steps_sizes: list[int], out_name: str) -> dict:
    """Everything `scale` and `gpu` share: load, the builds over words and steps, extraction vs plain batched,
    capture/plain, the app's step, width growth, paper unit costs, the projection. The JSON is written after every
    section; a section that fails is recorded in data['errors'] and the next one runs."""
    import torch

    from . import maps
    from .extract import auto_batch_size
    from .models import load_pipeline
    from .ratings import fill_template, load_ratings

    out = Path(args.out)
    work = Path(tempfile.mkdtemp(prefix="sdviz-bench-scale-"))
    data: dict = {"command": " ".join(sys.argv), "model": args.model, "size": args.size, "permutations": args.permutations,
                  "builds": [], "errors": {}}
    save = lambda: write_json(out, out_name, data)  # noqa: E731
    try:
        say(f"loading {args.model} on {args.device or 'auto'}")
        begin = time.perf_counter()
        pipe = load_pipeline(args.model, device=args.device, dtype=getattr(args, "dtype", None))
        data["load_s"] = time.perf_counter() - begin
        data["machine"] = machine(pipe)
        data["size"] = args.size or int(pipe.unet.config.sample_size * pipe.vae_scale_factor)
        device = str(pipe.device)
        folds = max(2, min(PAPER["folds"], min(words_sizes) // 2))  # build needs two held-out words per fold
        csvs = {n: word_subset(args.ratings, n, work) for n in sorted(set(words_sizes))}
        grid = sorted({(w, min(steps_sizes)) for w in words_sizes} | {(min(words_sizes), s) for s in steps_sizes})
        save()
        with at_size(pipe, data["size"]):
            say("warming up UMAP's compiler (not timed in any stage)")
            maps.build_maps({"x": torch.randn(20, 1, 8, generator=torch.Generator().manual_seed(0))}, ["x"], progress=False)
            for w, s in grid:
                say(f"build: {w} words x {s} steps x {args.permutations} permutations")
                with section(data, f"build {w}x{s}"):
                    data["builds"].append(timed_build(pipe, csvs[w][0], w, s, permutations=args.permutations,
                                                      folds=folds, guidance=args.guidance, work=work, batch_size=args.batch))
                save()
            ref = max(data["builds"], key=lambda b: (b["words"] * b["steps"], b["words"]), default=None)
            words = csvs[ref["words"] if ref else max(words_sizes)]
            prompts = [fill_template(load_ratings(words[0]).template, w) for w in words[1]]  # the build's own prompts
            if ref:
                batch = args.batch or auto_batch_size(device)
                say(f"plain batched diffusers on the same {len(prompts)} prompts")
                with section(data, "extraction"), denoiser_clock(pipe) as clock:
                    plain_s = timed(lambda: plain_latents(pipe, prompts, ref["steps"], args.guidance, batch), device)
                    data["extraction"] = {"words": len(prompts), "steps": ref["steps"], "batch_size": batch,
                                          "extract_s": ref["timings"]["extract"], "plain_s": plain_s,
                                          "throughput_ratio": plain_s / ref["timings"]["extract"],
                                          "build_vs_plain": ref["total_s"] / plain_s, "plain_denoiser_s": clock["seconds"]}
                    total = ref["total_s"] + data["load_s"]
                    data["share"] = {"words": ref["words"], "steps": ref["steps"], "measured": 1 - clock["seconds"] / total,
                                     "denoiser_in_build_s": ref["denoiser_s"], "plain_denoiser_s": clock["seconds"],
                                     "total_s": total}
                save()
        widths = [int(w) for w in args.widths.split(",") if w.strip()]
        say(f"width growth on random features: widths {widths}")
        wrows = []
        with section(data, "width growth"):
            wrows = width_growth(words[0], widths, min(steps_sizes), args.permutations, folds)
        words_axis = [b for b in data["builds"] if b["steps"] == min(steps_sizes)]
        steps_axis = [b for b in data["builds"] if b["words"] == min(words_sizes)]
        exponents = {
            "words": {st: slope([b["words"] for b in words_axis], [b["timings"].get(st, 0.0) for b in words_axis]) for st in STAGES[1:]},
            "steps": {st: slope([b["steps"] for b in steps_axis], [b["timings"].get(st, 0.0) for b in steps_axis]) for st in STAGES[1:]},
            "width": {st: slope([r["width"] for r in wrows], [r["timings"].get(st, 0.0) for r in wrows]) for st in STAGES[1:]
                      if st not in ("extract", "save")},
        }
        data["growth"] = {"exponents": exponents, "width_rows": wrows,
                          "words_sizes": ",".join(str(b["words"]) for b in words_axis),
                          "steps_sizes": ",".join(str(b["steps"]) for b in steps_axis),
                          "width_sizes": ",".join(map(str, widths))}
        save()
        unit = None
        if ref and not args.no_paper_unit:
            with section(data, "paper_unit"):
                unit = paper_unit_costs(args.ratings, sorted(set(ref["widths"].values())), permutations=args.unit_permutations)
                data["paper_unit"] = unit
            save()
        if ref and "extraction" in data:
            with section(data, "projection"):
                gpu_step, gpu_source = gpu_step_time(args, data, ref, device)
                plain_step = data["extraction"]["plain_denoiser_s"] / (ref["words"] * ref["steps"])
                data["projection"] = project(data["builds"], exponents, unit, data["load_s"], plain_step, gpu_step, gpu_source)
                data["projection"]["here"] = data["machine"].get("gpu") or f"{data['machine']['cpus']} CPU cores"
                data["share"]["paper"] = data["projection"]["here_non_denoiser_share"]
            save()
        with at_size(pipe, data["size"]):  # last: the projection above is what a cut-short run should keep
            say(f"capture vs plain: {args.capture_prompts} prompt(s), {max(steps_sizes)} steps, {args.repeats} repeats")
            with section(data, "capture"):
                data["capture"] = capture_vs_plain(pipe, prompts[: args.capture_prompts], max(steps_sizes), args.guidance,
                                                   args.repeats)
            save()
            say(f"the app's per-step cost: {args.app_steps} steps, {args.repeats} repeats")
            with section(data, "app"):
                data["app"] = app_step_cost(pipe, Path(ref["bundle"]) if ref else None, args.app_steps, args.guidance,
                                            args.repeats)
            save()
        data["memory"] = peak_memory(device)
        save()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_report(data)
    print(f"\nJSON: {out / out_name}")
    return data


def gpu_step_time(args, data: dict, ref: dict, device: str) -> tuple[float, str]:
    """Seconds per prompt x step of extraction on one GPU, and where the number comes from: measured here (CUDA),
    measured by `bench gpu` (--gpu-json), else the published figure."""
    if device.startswith("cuda"):
        return (ref["timings"]["extract"] / (ref["words"] * ref["steps"]),
                f"measured here on {data['machine'].get('gpu')} at {data['size']} px (batch of the build)")
    if args.gpu_json:
        measured = json.loads(Path(args.gpu_json).read_text())
        b = max(measured["builds"], key=lambda b: b["words"] * b["steps"])
        return (b["timings"]["extract"] / (b["words"] * b["steps"]),
                f"measured by `bench gpu` ({args.gpu_json}: {measured['machine'].get('gpu')}, {measured['size']} px)")
    return PUBLISHED_GPU["seconds_per_prompt_step"], "published: " + PUBLISHED_GPU["source"]


def _sizes(text: str, flag: str) -> list[int]:
    from .errors import SdvizError

    try:
        sizes = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise SdvizError(f"{flag} takes comma-separated whole numbers, e.g. 8,16,24; got {text!r}.") from None
    if not sizes or sizes[0] < 1:
        raise SdvizError(f"{flag} takes whole numbers of 1 or more; got {text!r}.")
    return sizes


def run_scale(args) -> None:
    words, steps = _sizes(args.words, "--words"), _sizes(args.steps, "--steps")
    if min(words) < 2:
        from .errors import SdvizError

        raise SdvizError("--words needs at least 2 words per build (cross-validation holds some out).")
    measure(args, words_sizes=words, steps_sizes=steps, out_name="scale.json")


def run_gpu(args) -> None:
    """The device check: SD 1.5 (the stand-in offline) in float16 at 512 px, 25 steps, a measured subset of the
    Binder nouns with 100 permutations, projected to all of them. --quick: the tiny model, 2 steps, 6 words."""
    if args.quick:
        args.model = args.model or "tiny"
        words, steps = [6], [2]
        args.widths, args.app_steps, args.repeats, args.capture_prompts = "8,16", 3, 1, 1
        args.permutations = min(args.permutations, 2)
        args.unit_permutations = min(args.unit_permutations, 2)
    else:
        args.model = args.model or "full-sd15"
        args.size = args.size or 512
        words, steps = [24, 48], [25]
    args.dtype = "float16" if str(args.device).startswith("cuda") else None
    measure(args, words_sizes=words, steps_sizes=steps, out_name="gpu.json")


def add_commands(sub) -> dict:
    """Register `scale` and `gpu` on bench's subparsers; returns {name: function}."""
    common = dict(ratings=os.environ.get("SDVIZ_RATINGS"))
    sc = sub.add_parser("scale", help="stage times, growth exponents and a paper-scale projection at full size")
    sc.add_argument("--model", default=os.environ.get("SDVIZ_MODEL", "full-sd15"))
    sc.add_argument("--device", default=None)
    sc.add_argument("--size", type=int, default=256, help="image side in pixels (0: the model's own)")
    sc.add_argument("--words", default="8,16,24", help="words per build (the first Binder nouns)")
    sc.add_argument("--steps", default="2,3", help="denoising steps per build")
    sc.add_argument("--permutations", type=int, default=100)
    sc.add_argument("--widths", default="320,640,1280", help="feature widths for the width-growth rows")
    sc.add_argument("--app-steps", type=int, default=5)
    sc.add_argument("--capture-prompts", type=int, default=1)
    sc.add_argument("--repeats", type=int, default=3)
    gp = sub.add_parser("gpu", help="the prepared device check (SD 1.5 fp16 at 512 px); --device cpu --quick for CI")
    gp.add_argument("--model", default=None, help="default full-sd15 (with --quick: tiny)")
    gp.add_argument("--device", default="cuda")
    gp.add_argument("--size", type=int, default=None, help="default 512 (with --quick: the model's own)")
    gp.add_argument("--quick", action="store_true", help="tiny sizes, for the test suite on CPU")
    gp.add_argument("--permutations", type=int, default=100)
    gp.add_argument("--widths", default="320,1280")
    gp.add_argument("--app-steps", type=int, default=10)
    gp.add_argument("--capture-prompts", type=int, default=4)
    gp.add_argument("--repeats", type=int, default=3)
    for p in (sc, gp):
        p.add_argument("--out", default="bench-out", help="folder for the JSON")
        p.add_argument("--ratings", default=common["ratings"], help="Binder's CSV (default $SDVIZ_RATINGS, else fetched)")
        p.add_argument("--guidance", type=float, default=7.5)
        p.add_argument("--batch", type=int, default=None, help="extraction batch (default: the build's, for the device)")
        p.add_argument("--no-paper-unit", action="store_true", help="skip the paper-scale unit measurement (minutes)")
        p.add_argument("--unit-permutations", type=int, default=PAPER["permutations"],
                       help="permutations in the paper-scale unit measurement (default: the paper's 100)")
        p.add_argument("--gpu-json", default=None, help="a gpu.json whose measured step time the GPU projection uses")
    return {"scale": run_scale, "gpu": run_gpu}
