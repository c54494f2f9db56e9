import os

# Tests never touch the network: set before huggingface_hub is imported anywhere.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import shutil  # noqa: E402
import socket  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BINDER_CSV = ROOT.parent / "shared" / "data" / "binder2016_wordset1_ratings.csv"
OUTPUT = ROOT / "test-output"  # screenshots of the browser tests (gitignored)
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


@pytest.fixture(scope="session")
def tiny_pipe():
    from sdviz.models import load_pipeline

    return load_pipeline("tiny", device="cpu")


@pytest.fixture(scope="session")
def binder_csv():
    assert BINDER_CSV.exists(), f"the Binder ratings are expected at {BINDER_CSV} (../shared/data)"
    return BINDER_CSV


def all_hooks(*modules) -> int:
    """Number of forward (pre-)hooks left anywhere inside `modules`."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for root in modules for m in root.modules())


@pytest.fixture(scope="session")
def binder_nouns(tmp_path_factory, binder_csv):
    """binder_nouns(n, name) -> the first n Binder nouns as <name>.csv (the file name is the dataset's name in a
    bundle), written once at test time to a temporary folder (never into the repo)."""
    written: dict = {}

    def get(n: int, name: str) -> Path:
        if (n, name) not in written:
            lines = binder_csv.read_text().splitlines()
            header, rows = lines[0], [line for line in lines[1:] if line.split(",")[2] == "1"][:n]
            path = tmp_path_factory.mktemp(f"ratings{n}") / f"{name}.csv"
            path.write_text("\n".join([header, *rows]) + "\n")
            written[n, name] = path
        return written[n, name]

    return get


@pytest.fixture(scope="session")
def subset_csv(binder_nouns):
    """The first 60 Binder nouns."""
    return binder_nouns(60, "subset")


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, subset_csv):
    """A probe bundle for the tiny model built by the real CLI on 60 words (small settings, for speed)."""
    from sdviz.cli import main

    out = tmp_path_factory.mktemp("bundle") / "tiny"
    cache = out.parent / "cache"
    args = ["build", "--model", "tiny", "--device", "cpu", "--ratings", str(subset_csv), "--steps", "3", "--folds", "5",
            "--permutations", "10", "--cache", str(cache), "--out", str(out), "--quiet"]
    assert main(args) == 0
    return out


FAMILY_MODELS = ["tiny", "tiny-sd2", "tiny-sdxl"]  # one built-in stand-in per family (SD 1.x, SD 2.x, SDXL)


@pytest.fixture(scope="session", params=FAMILY_MODELS)
def pipe(request):
    """Each family's tiny stand-in in turn (session scope: built once each)."""
    if request.param == "tiny":
        return request.getfixturevalue("tiny_pipe")
    from sdviz.models import load_pipeline

    return load_pipeline(request.param, device="cpu")


def pipe_modules(pipe) -> list:
    """Every module of `pipe` that capture may hook: the denoiser and each text encoder."""
    return [m for m in (pipe.unet, pipe.text_encoder, getattr(pipe, "text_encoder_2", None)) if m is not None]


def sdviz_hooks(*modules) -> int:
    """Number of sdviz's own forward (pre-)hooks left inside `modules`.

    transformers 5 leaves its own output-recording hooks on CLIP layers after a call with
    output_hidden_states=True (as SDXL's pipeline makes), so `all_hooks` would count those too.
    """
    return sum(
        getattr(fn, "__module__", "").startswith("sdviz")
        for root in modules for m in root.modules()
        for fn in [*m._forward_hooks.values(), *m._forward_pre_hooks.values()]
    )


@pytest.fixture(scope="session")
def words24_csv(binder_nouns):
    """The first 24 Binder nouns."""
    return binder_nouns(24, "words24")


@pytest.fixture(scope="session")
def family_bundle(tmp_path_factory, words24_csv):
    """family_bundle(pipe) -> path of a 24-word probe bundle for that pipe's model, built once per model
    by `sdviz.build.build` with tiny settings (2 steps, 3 folds, 5 permutations)."""
    from sdviz.build import BuildConfig, build

    built: dict = {}

    def get(pipe):
        model = pipe.sdviz.model_id
        if model not in built:
            root = tmp_path_factory.mktemp(f"bundle-{model}")
            config = BuildConfig(model=model, ratings=str(words24_csv), steps=2, folds=3, permutations=5,
                                 device="cpu", cache=str(root / "cache"), out=str(root / "bundle"), progress=False)
            built[model] = build(config, pipe=pipe).path
        return built[model]

    return get


# -- the app: served on a free port, driven by gradio_client or a real browser ---------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Served:
    url: str  # http://127.0.0.1:<port>/
    demo: object  # the gr.Blocks
    app: object  # its sdviz.ui.App (demo.sdviz): the model, the bundle, the handlers


@contextmanager
def _served(*args, **kwargs):
    from sdviz import ui

    demo = ui.create_app(*args, **kwargs)
    port = free_port()
    # launch returns once the server answers; the model loads behind the served page, as for a visitor
    ui.launch(demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield Served(f"http://127.0.0.1:{port}/", demo, demo.sdviz)
    finally:
        demo.close()


@pytest.fixture(scope="session")
def launch_app():
    """`with launch_app(model, device, bundle, ratings, **create_app_kwargs) as served:` the app served on a free
    port of 127.0.0.1 (served.url, served.demo, served.app), closed when the block ends."""
    return _served


@pytest.fixture(scope="session")
def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "the browser test needs Debian's chromium on PATH: apt-get install -y chromium"
    return path


@contextmanager
def _page(chromium: str, width: int, height: int):
    from playwright.sync_api import sync_playwright

    OUTPUT.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()


@pytest.fixture(scope="session")
def browser_page(chromium):
    """`with browser_page(width, height=900) as page:` a page of a headless Debian chromium (Playwright) at that
    viewport, in a browser of its own, closed when the block ends. Screenshots go to OUTPUT (created here)."""
    return lambda width, height=900: _page(chromium, width, height)


LABEL_CORNERS = """els => els.map(el => {
    const b = el.getBBox(), m = el.getScreenCTM();
    return [[b.x, b.y], [b.x + b.width, b.y], [b.x + b.width, b.y + b.height], [b.x, b.y + b.height]]
        .map(([x, y]) => [m.a * x + m.c * y + m.e, m.b * x + m.d * y + m.f]);
})"""


def overlaps(quads: list) -> list[tuple[int, int]]:
    """Pairs of (possibly rotated) label rectangles that overlap by more than a pixel (separating axis test)."""
    def project(quad, axis):
        values = [x * axis[0] + y * axis[1] for x, y in quad]
        return min(values), max(values)

    def axes(quad):
        for (x0, y0), (x1, y1) in zip(quad, quad[1:] + quad[:1]):
            n = ((y1 - y0) ** 2 + (x1 - x0) ** 2) ** 0.5 or 1.0
            yield (-(y1 - y0) / n, (x1 - x0) / n)

    out = []
    for i, a in enumerate(quads):
        for j, b in enumerate(quads[i + 1:], i + 1):
            if all(min(project(a, ax)[1], project(b, ax)[1]) - max(project(a, ax)[0], project(b, ax)[0]) > 1
                   for ax in [*axes(a), *axes(b)]):
                out.append((i, j))
    return out
