"""Benchmarks, measured side by side in one process and printed as ratios (never run as tests).

    python -m sdviz.bench capture [--model tiny] [--steps 20] [--batch 4] [--repeats 15]
    python -m sdviz.bench probes  [--words 434] [--dim 1280] [--steps 10]
    python -m sdviz.bench app       [--model tiny] [--bundle PATH] [--steps 20] [--repeats 3]
    python -m sdviz.bench classroom [--model tiny] [--bundle PATH] [--clients 30]
    python -m sdviz.bench build     [--model tiny] [--ratings CSV] [--v01-maps]
    python -m sdviz.bench coverage  [--ratings CSV] [--seeds 400]
    python -m sdviz.bench scale     [--model full-sd15] [--size 256] [--words 8,16,24] [--steps 2,3] [--out DIR]
    python -m sdviz.bench gpu       --out DIR [--device cuda|cpu] [--quick]

(Over 450 lines: benchmark scripts, never imported by the library; each subcommand is one function beside the
shared helpers that start an app and time it. The real-size ones live in benchscale.)
"""

import argparse
import os
import statistics
import sys
import threading
import time
from contextlib import contextmanager


def _summary(values: list[float]) -> str:
    values = sorted(values)
    q1, q3 = values[len(values) // 4], values[(3 * len(values)) // 4]
    return f"median {statistics.median(values):.3f} (IQR {q1:.3f}-{q3:.3f}, n={len(values)})"


@contextmanager
def _peak_memory(device: str):
    """Yield a dict whose 'peak' becomes the run's peak memory in bytes above its start.

    CUDA: torch's allocator peak. CPU: the process RSS sampled every millisecond.
    """
    import torch

    result = {"peak": 0}
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        yield result
        torch.cuda.synchronize()
        result["peak"] = torch.cuda.max_memory_allocated() - base
        return
    import psutil

    proc, stop = psutil.Process(), threading.Event()
    base = proc.memory_info().rss
    peak = [base]

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield result
    finally:
        stop.set()
        sampler.join()
        result["peak"] = max(peak[0] - base, 1)


def bench_capture(args) -> None:
    import torch

    from .models import load_pipeline
    from .run import trace

    pipe = load_pipeline(args.model, device=args.device)
    device = pipe.sdviz.device
    prompts = [f"a photo of a {w}" for w in ("hammer", "dog", "violin", "tree", "car", "cup", "bird", "house")][: args.batch]
    seeds = list(range(len(prompts)))
    kwargs = dict(num_inference_steps=args.steps, guidance_scale=args.guidance)

    def plain():
        return pipe(prompts, generator=[torch.Generator("cpu").manual_seed(s) for s in seeds], **kwargs).images

    def captured():
        return trace(pipe, prompts, seeds=seeds, steps=args.steps, guidance=args.guidance).images

    def timed(fn):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        with _peak_memory(device) as mem:
            start = time.perf_counter()
            fn()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - start
        return elapsed, mem["peak"]

    print(f"model={pipe.sdviz.model_id} device={device} dtype={pipe.sdviz.dtype} batch={len(prompts)} "
          f"steps={args.steps} guidance={args.guidance} repeats={args.repeats} torch threads={torch.get_num_threads()}")
    with torch.inference_mode():
        for _ in range(args.warmup):
            plain(), captured()
        times, mems = {"plain": [], "capture": []}, {"plain": [], "capture": []}
        for i in range(args.repeats):  # interleaved, alternating which goes first
            order = [("plain", plain), ("capture", captured)]
            for name, fn in order if i % 2 == 0 else order[::-1]:
                t, m = timed(fn)
                times[name].append(t)
                mems[name].append(m)
    ratios = [c / p for c, p in zip(times["capture"], times["plain"])]
    print(f"plain diffusers  time/s: {_summary(times['plain'])}")
    print(f"sdviz trace()    time/s: {_summary(times['capture'])}")
    print(f"time ratio capture/plain (paired): {_summary(ratios)}")
    print(f"time ratio of medians: {statistics.median(times['capture']) / statistics.median(times['plain']):.3f}")
    mem_ratio = statistics.median(mems["capture"]) / statistics.median(mems["plain"])
    print(f"peak memory ratio capture/plain: {mem_ratio:.3f} "
          f"(plain {statistics.median(mems['plain']) / 2**20:.1f} MiB, capture {statistics.median(mems['capture']) / 2**20:.1f} MiB)")


def bench_probes(args) -> None:
    """Fit one representation's probes for every step: sdviz (one batched SVD, GCV per target) vs
    scikit-learn RidgeCV (alpha_per_target, efficient LOO) vs himalaya RidgeCV, on the same data."""
    import numpy as np
    import torch
    from sklearn.linear_model import RidgeCV
    from sklearn.preprocessing import StandardScaler

    from .probes import ALPHAS, fit_ridge

    rng = np.random.default_rng(0)
    X = rng.normal(size=(args.steps, args.words, args.dim))
    Y = X[0] @ rng.normal(size=(args.dim, args.targets)) * 0.3 + rng.normal(size=(args.words, args.targets))
    alphas = ALPHAS.numpy()
    torch.set_num_threads(torch.get_num_threads())

    def ours():
        fit_ridge(torch.as_tensor(X), torch.as_tensor(Y))

    def sklearn():
        for s in range(args.steps):
            RidgeCV(alphas=alphas, alpha_per_target=True).fit(StandardScaler().fit_transform(X[s]), Y)

    runners = {"sdviz": ours, "sklearn RidgeCV": sklearn}
    try:
        from himalaya.backend import set_backend
        from himalaya.ridge import RidgeCV as HimalayaRidgeCV

        set_backend("numpy", on_error="warn")

        def himalaya():
            for s in range(args.steps):
                HimalayaRidgeCV(alphas=alphas, cv=5).fit(StandardScaler().fit_transform(X[s]), Y)

        runners["himalaya RidgeCV (5-fold)"] = himalaya
    except ImportError:
        print("himalaya is not installed (pip install himalaya): skipped")
    print(f"{args.steps} steps x {args.words} words x {args.dim} dims -> {args.targets} attributes, {len(alphas)} alphas, "
          f"repeats={args.repeats}")
    times = {name: [] for name in runners}
    for _ in range(args.repeats):
        for name, fn in runners.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["sdviz"])
    for name, values in times.items():
        print(f"{name:<26} time/s: {_summary(values)}  ratio to sdviz: {statistics.median(values) / base:.1f}x")


def _start_app(args, port: int, extra: list[str] = ()):
    """`python app.py` as a user starts it (with `extra` arguments); returns (process, seconds from process start to the first served page)."""
    import subprocess
    import urllib.request
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
    cmd = [sys.executable, str(root / "app.py"), "--model", args.model] + (["--bundle", args.bundle] if args.bundle else []) + list(extra)
    start = time.perf_counter()
    server = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return server, start, time.perf_counter() - start
        except OSError:
            if server.poll() is not None:
                raise RuntimeError("the app exited during start-up") from None
            time.sleep(0.05)


def _wait_ready(client, start: float, timeout: float = 900) -> tuple[float, dict]:
    """Seconds from process start until the model is loaded (and any automatic build has finished)."""
    deadline = time.perf_counter() + timeout
    loaded = None
    while time.perf_counter() < deadline:
        status = client.predict(api_name="/status")
        if status["phase"] == "failed":
            raise RuntimeError(f"the model did not load: {status}")
        if status["phase"] == "ready" and loaded is None:
            loaded = time.perf_counter() - start
        if status["phase"] == "ready" and not status["building"]:
            return loaded, status
        time.sleep(0.1)
    raise RuntimeError("the app was not ready in time")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bench_app(args) -> None:
    """Start `python app.py` as a user would, then time: process start -> page served -> model ready, the first
    streamed step after a request, and the per-step cost of the app over the bare library stream() on the same prompt."""
    from gradio_client import Client

    port = _free_port()
    server, start, served = _start_app(args, port)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=False)  # as a page: image URLs stream, files fetched aside
        ready, status = _wait_ready(client, start)
        firsts, per_step_app = [], []
        for i in range(args.repeats):
            t0 = time.perf_counter()
            job = client.submit("a photo of a dog", i, args.steps, 7.5, api_name="/generate")
            stamps = []
            for _ in job:
                stamps.append(time.perf_counter())
            firsts.append(stamps[0] - t0)
            per_step_app.append((stamps[-1] - stamps[0]) / max(len(stamps) - 1, 1))
    finally:
        server.terminate()
        server.wait(timeout=30)

    from .models import load_pipeline
    from .run import stream

    pipe = load_pipeline(args.model, device="cpu" if args.model == "tiny" else None)
    per_step_lib = []
    for i in range(args.repeats):
        stamps = [time.perf_counter() for _ in stream(pipe, "a photo of a dog", seed=i, steps=args.steps)]
        per_step_lib.append((stamps[-1] - stamps[0]) / max(len(stamps) - 1, 1))
    print(f"model={args.model} steps={args.steps} repeats={args.repeats} bundle={'yes' if status['bundle'] else 'no'}")
    print(f"process start -> page served: {served:.2f} s (goal <= 10 s)")
    print(f"process start -> model ready: {ready:.2f} s")
    print(f"first streamed step after a request: {_summary(firsts)} s")
    print(f"per step, app (decode + transport; the client takes image URLs, as a page does): {_summary(per_step_app)} s")
    print(f"per step, library stream() alone:   {_summary(per_step_lib)} s")
    overhead = statistics.median(per_step_app) - statistics.median(per_step_lib)
    print(f"per-step overhead of the app: {overhead * 1000:.0f} ms (goal <= 20 ms; ratio "
          f"{statistics.median(per_step_app) / statistics.median(per_step_lib):.2f})")


def _classroom_bundle(args) -> str:
    """--bundle, else a bundle the app's automatic build would make (tiny model, the Binder ratings, its reduced
    settings), built once into the sdviz cache and reused by later runs of the benchmark."""
    if args.bundle:
        return args.bundle
    from pathlib import Path

    from .build import BuildConfig, build
    from .errors import SdvizError
    from .io import cache_dir
    from .ratings import default_ratings_path
    from .ui.state import AUTO_BUILD

    out = cache_dir() / "bench" / f"classroom-{args.model}"
    if (out / "meta.json").is_file():
        return str(out)
    ratings = args.ratings or default_ratings_path()
    if ratings is None:
        raise SdvizError("The classroom benchmark needs a probe bundle: pass --bundle PATH, or --ratings CSV "
                         "(or run `python -m sdviz data fetch binder`) to build one first.")
    print(f"building a probe bundle for {args.model} into {out} (once; the app's automatic settings)", flush=True)
    build(BuildConfig(model=args.model, ratings=str(ratings), out=str(out), cache=str(out.parent / "cache"),
                      device="cpu" if args.model == "tiny" else None, progress=False, **AUTO_BUILD))
    return str(Path(out))


def _classroom_recording(args, bundle: str, folder) -> str:
    """One recorded run of the app's first example (the replay the class clicks), written into `folder`."""
    from .models import load_pipeline
    from .record import record_runs

    pipe = load_pipeline(args.model, device="cpu" if args.model == "tiny" else None)
    return str(record_runs(pipe, ["a photo of a dog"], folder, seed=0, steps=args.steps, bundle=bundle, progress=False))


class _PageClient:
    """What one browser page asks the server, in plain HTTP: Gradio's own protocol (the page's config, then each
    event: POST queue/join, then the server-sent events of queue/data until process_completed; an event off the
    queue: POST run/predict). One HTTP connection pool per client, as one page has; one session per event, since
    a session's server-sent events go to whichever of its streams reads first."""

    def __init__(self, url: str, config: dict, timeout: float):
        import uuid

        import httpx

        self.url, self.config = url, config
        self.http = httpx.Client(timeout=timeout)
        self.new_session = lambda: uuid.uuid4().hex[:11]

    def close(self):
        self.http.close()

    def get_config(self) -> int:
        response = self.http.get(self.url + "config")
        response.raise_for_status()
        return len(response.content)

    def event(self, dep: dict, data: list) -> int:
        """Run one event of the page (`dep`: its entry in the config's dependencies); the bytes of its answer."""
        import json

        session = self.new_session()
        body = {"data": data, "fn_index": dep["id"], "session_hash": session, "event_data": None,
                "trigger_id": dep["targets"][0][0]}
        api = self.url + self.config.get("api_prefix", "/gradio_api").strip("/") + "/"
        if not dep.get("queue", True):
            response = self.http.post(api + "run/predict", json=body)
            response.raise_for_status()
            return len(response.content)
        response = self.http.post(api + "queue/join", json=body)
        response.raise_for_status()
        event_id = response.json()["event_id"]
        with self.http.stream("GET", api + "queue/data", params={"session_hash": session}) as stream:
            for line in stream.iter_lines():
                # the answer can be megabytes of figures: only its small messages are parsed
                if not line.startswith("data:") or '"process_completed"' not in line[:200] or event_id not in line[:400]:
                    continue
                message = json.loads(line[5:]) if len(line) < 4096 else None
                if message is not None and not message.get("success"):
                    raise RuntimeError(f"event {dep.get('api_name')} failed: {message.get('output')}")
                return len(line)
        raise RuntimeError(f"event {dep.get('api_name')}: the stream ended before it completed")


def _page_requests(config: dict) -> dict:
    """What a page fetches at once, by kind: its config, the Report (filled by the page-load event), the Maps tab's
    event, a click on the recorded example (a replay). {kind: fn(client) -> bytes}."""
    deps = config["dependencies"]

    def dep(test) -> dict:
        found = [d for d in deps if test(d)]
        if not found:
            raise RuntimeError("the app has no such event; the benchmark no longer matches the page")
        return found[0]

    load = dep(lambda d: any(t[1] == "load" for t in d["targets"]))
    maps = dep(lambda d: str(d.get("api_name", "")).startswith("render_maps") and d["targets"][0][1] == "select")
    replay = dep(lambda d: d.get("api_name") == "replay_example")
    return {
        "config": lambda c: c.get_config(),
        "report": lambda c: c.event(load, [None] * len(load["inputs"])),
        "maps": lambda c: c.event(maps, [None] * len(maps["inputs"])),
        "replay": lambda c: c.event(replay, [0, None, "domain means"]),
    }


def _percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(int(round(q * (len(values) - 1))), len(values) - 1)]


def _run_clients(url: str, config: dict, n: int, timeout: float) -> tuple[dict, list[str]]:
    """n clients at once, each fetching every kind at once (all released together by a barrier):
    ({kind: [seconds per client]}, [errors])."""
    kinds = _page_requests(config)
    clients = [_PageClient(url, config, timeout) for _ in range(n)]
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    errors: list[str] = []
    barrier = threading.Barrier(n * len(kinds))
    lock = threading.Lock()

    def one(client, kind, fn):
        barrier.wait()
        start = time.perf_counter()
        try:
            fn(client)
            elapsed = time.perf_counter() - start
            with lock:
                times[kind].append(elapsed)
        except Exception as err:  # noqa: BLE001 - counted and printed, never dropped
            with lock:
                errors.append(f"{kind}: {type(err).__name__}: {err}"[:300])

    threads = [threading.Thread(target=one, args=(c, k, fn)) for c in clients for k, fn in kinds.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for c in clients:
        c.close()
    return times, errors


def bench_classroom(args) -> None:
    """A class arriving at once, measured at the server (a loopback browser per visitor would measure chromium
    renderers sharing the cores, not the server): start `python app.py` with a bundle and one recorded run; then
    one client alone, then --clients clients at once, each fetching what a page fetches at once (the config, the
    page-load event that fills the Report tab, the Maps tab's event, a click on the recorded example). Prints per
    kind: one client alone (median of --repeats), the N at once (median, p90, the last) and last / alone."""
    import tempfile
    from pathlib import Path

    import httpx

    bundle = _classroom_bundle(args)
    recordings = _classroom_recording(args, bundle, Path(tempfile.mkdtemp(prefix="sdviz-bench-rec-")) / "runs")
    port = _free_port()
    args.bundle = bundle
    server, start, served = _start_app(args, port, extra=["--recordings", recordings])
    url = f"http://127.0.0.1:{port}/"
    try:
        from gradio_client import Client

        _, status = _wait_ready(Client(url, verbose=False), start)
        if not status["bundle"]:
            raise RuntimeError(f"the app has no bundle ({status['note']})")
        config = httpx.get(url + "config", timeout=args.timeout).json()
        _run_clients(url, config, 1, args.timeout)  # warm-up: first figures, first files
        alone: dict[str, list[float]] = {}
        for _ in range(args.repeats):
            times, errors = _run_clients(url, config, 1, args.timeout)
            if errors:
                raise RuntimeError(f"one client alone failed: {errors[0]}")
            for kind, values in times.items():
                alone.setdefault(kind, []).extend(values)
        import psutil

        served_by, me = psutil.Process(server.pid), psutil.Process()
        cpu0, own0, wall0 = sum(served_by.cpu_times()[:2]), sum(me.cpu_times()[:2]), time.perf_counter()
        together, errors = _run_clients(url, config, args.clients, args.timeout)
        cpu = (sum(served_by.cpu_times()[:2]) - cpu0, sum(me.cpu_times()[:2]) - own0, time.perf_counter() - wall0)
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"model={args.model} clients={args.clients} repeats alone={args.repeats} cpus={os.cpu_count()} "
          f"page served {served:.2f} s after process start")
    print(f"{'request':<8} {'alone median':>12} {'N: median':>10} {'p90':>8} {'last':>8} {'last/alone':>10}")
    worst = 0.0
    for kind, values in alone.items():
        one = statistics.median(values)
        got = together[kind]
        if not got:
            print(f"{kind:<8} {one:12.3f} {'-':>10} {'-':>8} {'-':>8} {'-':>10}  (every request failed)")
            continue
        ratio = max(got) / one
        worst = max(worst, ratio)
        print(f"{kind:<8} {one:12.3f} {statistics.median(got):10.3f} {_percentile(got, 0.9):8.3f} {max(got):8.3f} "
              f"{ratio:9.1f}x" + (f"  ({len(got)} of {args.clients} answered)" if len(got) < args.clients else ""))
    for err in errors[:5]:
        print(f"failed: {err}")
    print(f"worst last/alone: {worst:.1f}x (goal <= 3x); seconds; {len(errors)} failed request(s)")
    print(f"the {args.clients} at once: {cpu[2]:.1f} s wall; CPU used by the server {cpu[0]:.1f} s "
          f"({cpu[0] / args.clients:.2f} s a client), by the clients {cpu[1]:.1f} s; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (other processes share them)")


def bench_build(args) -> None:
    """The whole `build` on a fresh cache with its stage breakdown, then side-by-side baselines in the same
    process: the plain diffusers pipeline on the same prompts/steps/batch (extraction), a straightforward
    scikit-learn loop (StandardScaler + RidgeCV(alpha_per_target=True) per fold) on one representation with
    the same real + permuted targets (probes), and the maps' trustworthiness (sklearn) against v0.1's settings."""
    import tempfile
    from pathlib import Path

    import numpy as np
    import torch
    from sklearn.linear_model import RidgeCV
    from sklearn.manifold import trustworthiness
    from sklearn.preprocessing import StandardScaler

    from .build import BuildConfig, build
    from .bundle import load_bundle
    from .extract import load_features
    from .models import load_pipeline
    from .probes import ALPHAS, cross_validate, prepare_targets
    from .ratings import fill_template, load_ratings

    work = Path(tempfile.mkdtemp(prefix="sdviz-bench-build-"))
    start = time.perf_counter()
    pipe = load_pipeline(args.model, device=args.device)
    load_s = time.perf_counter() - start
    config = BuildConfig(model=args.model, ratings=args.ratings, device=args.device, cache=str(work / "cache"),
                         out=str(work / "bundle"), progress=False)
    result = build(config, pipe=pipe)
    t = result.timings | {"load": load_s}
    total = t["total"] + load_s
    print(f"model={args.model} device={pipe.sdviz.device} words={result.report['n_words']} steps={config.steps} "
          f"permutations={config.permutations} folds={config.folds} torch threads={torch.get_num_threads()}")
    print("stage            seconds")
    for name in ("load", "extract", "cross-validate", "metrics", "nulls", "fit", "maps", "save"):
        print(f"  {name:<15}{t.get(name, 0.0):7.1f}")
    print(f"  {'total':<15}{total:7.1f}")

    cache = load_features(work / "cache")
    manifest = cache.manifest
    ratings = load_ratings(args.ratings)
    prompts = [fill_template(manifest["template"], w) for w in cache.words]
    batch = manifest["batch_size"]
    with torch.inference_mode():
        begin = time.perf_counter()
        for i in range(0, len(prompts), batch):
            part = prompts[i : i + batch]
            pipe(part, num_inference_steps=config.steps, guidance_scale=config.guidance, output_type="latent",
                 generator=[torch.Generator("cpu").manual_seed(0) for _ in part])
        plain = time.perf_counter() - begin
    print(f"extraction vs plain diffusers (same {len(prompts)} prompts, batch {batch}, {config.steps} steps): "
          f"{t['extract']:.1f} s vs {plain:.1f} s, ratio {t['extract'] / plain:.2f}")

    name = args.probe_repr
    X = cache.features[name].transpose(0, 1).double()[: args.probe_steps]
    Y = ratings.values
    targets = prepare_targets(Y, folds=config.folds, seed=config.seed, n_permutations=config.permutations)
    begin = time.perf_counter()
    cross_validate(X, Y, targets=targets)
    ours = time.perf_counter() - begin
    stacked = targets.stacked.numpy()
    begin = time.perf_counter()
    for step in range(X.shape[0]):
        for test, train in zip(targets.folds, targets.train):
            scaler = StandardScaler().fit(X[step, train].numpy())
            model = RidgeCV(alphas=ALPHAS.numpy(), alpha_per_target=True).fit(scaler.transform(X[step, train].numpy()), stacked[train])
            model.predict(scaler.transform(X[step, test].numpy()))
    sk = time.perf_counter() - begin
    print(f"probes for {name} ({X.shape[0]} steps x {config.folds} folds x {stacked.shape[1]} targets incl. "
          f"{config.permutations} permutations): sdviz {ours:.2f} s, scikit-learn loop {sk:.2f} s, ratio {sk / ours:.1f}x")

    bundle = load_bundle(result.path)
    names = bundle.meta["maps"]
    trust = [trustworthiness(bundle.maps[f"{n}.points"][s].numpy(), bundle.maps[f"{n}.coords"][s].numpy(), n_neighbors=15)
             for n in names for s in range(bundle.maps[f"{n}.coords"].shape[0])]
    print(f"maps: {len(trust)} in {t['maps']:.1f} s, trustworthiness (k=15) mean {np.mean(trust):.3f}, min {np.min(trust):.3f}")
    if args.v01_maps:
        from . import maps

        old = (maps.FIRST_EPOCHS, maps.LATER_EPOCHS)
        maps.FIRST_EPOCHS = maps.LATER_EPOCHS = 200
        begin = time.perf_counter()
        ref = maps.build_maps(cache.features, names, seed=config.seed, progress=False)
        maps.FIRST_EPOCHS, maps.LATER_EPOCHS = old
        trust = [trustworthiness(ref[f"{n}.points"][s].numpy(), ref[f"{n}.coords"][s].numpy(), n_neighbors=15)
                 for n in names for s in range(ref[f"{n}.coords"].shape[0])]
        print(f"maps with v0.1's 200 epochs at every step: {time.perf_counter() - begin:.1f} s, "
              f"trustworthiness mean {np.mean(trust):.3f}, min {np.min(trust):.3f}")


def bench_coverage(args) -> None:
    """How often the 95% intervals of mean r, and of disambiguation, cover chance on pure-noise features
    (Binder's ratings, 16 noise dimensions, a new noise seed each time, 10 folds, the build's permutations).
    A calibrated interval covers chance in about 95% of seeds (binomial spread: about +-1.1% at 400 seeds)."""
    import numpy as np
    import torch

    from .analysis import evaluate
    from .probes import cross_validate, prepare_targets
    from .ratings import load_ratings

    ratings = load_ratings(args.ratings)
    Y = ratings.values
    targets = prepare_targets(Y, folds=10, seed=0, n_permutations=args.permutations)
    covered = {"mean_r": [], "disambiguation": []}
    for seed in range(args.seeds):
        noise = np.random.default_rng([seed, 7]).normal(size=(len(Y), args.dim))
        cv = cross_validate(torch.as_tensor(noise), Y, targets=targets)
        P, Yc = cv.centred(Y)
        nP, nY = cv.centred_null(Y) if args.permutations else (None, None)
        s = evaluate(P, Yc, ratings.attributes, ratings.groups, folds=cv.folds, null_P=nP, null_Y=nY)
        covered["mean_r"].append(s["mean_r_ci"][0] <= 0 <= s["mean_r_ci"][1])
        covered["disambiguation"].append(s["disambiguation_ci"][0] <= 0.5 <= s["disambiguation_ci"][1])
    print(f"{args.seeds} noise seeds x {len(Y)} words x {len(ratings.attributes)} attributes, {args.dim} dims, "
          f"{args.permutations} permutations")
    for name, hits in covered.items():
        print(f"95% interval of {name} covers chance in {np.mean(hits):.1%} of seeds ({sum(hits)}/{len(hits)})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sdviz.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    cap = sub.add_parser("capture", help="trace() vs the plain diffusers pipeline")
    cap.add_argument("--model", default=os.environ.get("SDVIZ_MODEL", "tiny"))
    cap.add_argument("--device", default=None)
    cap.add_argument("--steps", type=int, default=20)
    cap.add_argument("--guidance", type=float, default=7.5)
    cap.add_argument("--batch", type=int, default=4)
    cap.add_argument("--repeats", type=int, default=15)
    cap.add_argument("--warmup", type=int, default=2)
    pr = sub.add_parser("probes", help="the ridge solver vs scikit-learn RidgeCV and himalaya")
    pr.add_argument("--words", type=int, default=434)
    pr.add_argument("--dim", type=int, default=1280)
    pr.add_argument("--targets", type=int, default=65)
    pr.add_argument("--steps", type=int, default=10)
    pr.add_argument("--repeats", type=int, default=3)
    ap = sub.add_parser("app", help="app start-up, first streamed step, per-step overhead")
    ap.add_argument("--model", default=os.environ.get("SDVIZ_MODEL", "tiny"))
    ap.add_argument("--bundle", default=os.environ.get("SDVIZ_BUNDLE"))
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    bd = sub.add_parser("build", help="the whole build: stage breakdown and side-by-side baselines")
    bd.add_argument("--model", default=os.environ.get("SDVIZ_MODEL", "tiny"))
    bd.add_argument("--device", default=None)
    bd.add_argument("--ratings", default=os.environ.get("SDVIZ_RATINGS"))
    bd.add_argument("--probe-repr", default="unet.mid", help="representation for the scikit-learn comparison")
    bd.add_argument("--probe-steps", type=int, default=2, help="its first steps compared (scikit-learn is slow)")
    bd.add_argument("--v01-maps", action="store_true", help="also build the maps with v0.1's epochs for comparison")
    cv = sub.add_parser("coverage", help="how often the 95% intervals cover chance on pure-noise features")
    cv.add_argument("--ratings", default=os.environ.get("SDVIZ_RATINGS"))
    cv.add_argument("--seeds", type=int, default=400)
    cv.add_argument("--dim", type=int, default=16)
    cv.add_argument("--permutations", type=int, default=100)
    cl = sub.add_parser("classroom", help="N HTTP clients fetch what a page fetches, at once (server side)")
    cl.add_argument("--model", default=os.environ.get("SDVIZ_MODEL", "tiny"))
    cl.add_argument("--bundle", default=os.environ.get("SDVIZ_BUNDLE"), help="default: one built once into the sdviz cache")
    cl.add_argument("--ratings", default=os.environ.get("SDVIZ_RATINGS"), help="for that build")
    cl.add_argument("--clients", "-n", type=int, default=30)
    cl.add_argument("--repeats", type=int, default=5, help="times one client alone is measured")
    cl.add_argument("--steps", type=int, default=20, help="steps of the recorded run the clients replay")
    cl.add_argument("--timeout", type=float, default=240)
    from .benchscale import add_commands

    scale_commands = add_commands(sub)  # scale, gpu (benchscale.py)
    args = parser.parse_args(argv)
    from .errors import SdvizError

    try:
        {"capture": bench_capture, "probes": bench_probes, "app": bench_app, "classroom": bench_classroom,
         "build": bench_build, "coverage": bench_coverage, **scale_commands}[args.what](args)
    except SdvizError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
