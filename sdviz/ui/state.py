"""What every visitor of one app shares: the model, its probe bundle, the ratings, and the start-up work.

`AppState` is the state half of `ui.app.App` (its handlers are the other half); one per `create_app`.
Nothing heavy happens at import or in `create_app`: the model loads in a background thread after
the page is served (`AppState.start`), and a missing bundle is built there too when ratings are at
hand. The page polls `AppState.version` to learn what changed, so nothing needs a reload.
"""

import html
import logging
import os
import re
import shutil
import tempfile
import threading
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import SdvizError
from ..hub import is_hub_id, offline, on_space, same_model
from ..io import ROOT, bundle_dir, find_bundle
from ..publish import resolve_bundle
from .line import ModelLine
from .runcache import RunCache

log = logging.getLogger(__name__)

# The automatic first-run build trades precision for time; the UI and the bundle's settings say so.
AUTO_BUILD = {"steps": 8, "permutations": 20}  # the tiny model's whole first build in about 55 s on 2 cores
READY_TIMEOUT_S = 600.0  # an API request that arrives while the model loads waits this long


# -- where bundles come from ------------------------------------------------------------------------
def _resolve_bundle(spec: str) -> Path:
    """A bundle named on the command line or in SDVIZ_BUNDLE -> a local folder: a folder, or a Hub id
    OWNER/NAME[@revision] downloaded into the HF cache (publish.resolve_bundle)."""
    if not is_hub_id(spec):
        return Path(spec).expanduser()  # a folder, possibly still to be built by the automatic build
    return resolve_bundle(spec)


def _default_bundle(slug: str) -> Path:
    """The running model's bundle when none is named: ./probes/<slug>, the checkout's probes/<slug>, then the
    user data folder (io.find_bundle); where none exists, the user data folder, where the automatic build writes."""
    return find_bundle(slug) or bundle_dir(slug)


# -- text shown to visitors ------------------------------------------------------------------------
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>])")


def plain(text) -> str:
    """Escape a string for a toast (gr.Error, gr.Warning, gr.Info) or any HTML: Gradio renders a toast's message as
    HTML, so a prompt, a typed attribute or a bundle's field would otherwise become a live link or a fetched image."""
    return html.escape(str(text), quote=False)


def md(text) -> str:
    """Escape a string from a bundle or a prompt for Markdown: no HTML, no formatting, no links."""
    return _MD_SPECIAL.sub(r"\\\1", plain(text))  # quotes are plain text in Markdown


def without_paths(message: str, path) -> str:
    """An error message about `path` as visitors may see it: the path (as given or resolved) as `shown_path` says."""
    for form in sorted({str(path), str(Path(path).resolve())}, key=len, reverse=True):
        message = message.replace(form, shown_path(path))
    return message


def shown_path(path) -> str:
    """A path as visitors may see it: relative to the project, else only its last part."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return path.name


def _damaged_note(message: str, path) -> str:
    """load_bundle's sentence about a damaged bundle, for visitors: what is wrong, no server paths, no advice meant for
    whoever runs the app (the log has the whole message)."""
    what = without_paths(message, path).split("; rebuild")[0].rstrip(". ")
    if "damaged" not in what:
        what = f"The probe bundle is damaged: {what}"
    return f"{md(what)}, so the app runs without bars."


@dataclass(eq=False, repr=False)  # one object, compared and hashed by identity (Gradio and ZeroGPU hash its methods)
class AppState:
    model: str
    device: str | None
    bundle_spec: str | None
    ratings_path: str | None
    build_cache: str | None = None  # feature cache of the automatic build (default: io.feature_cache_dir)
    recordings_spec: str | None = None  # recorded runs: a folder or Hub dataset id (default: env SDVIZ_RECORDINGS)
    size: int | None = None  # side in pixels of every image the app makes (None: the model's own, 512 for SD 1.5)
    phase: str = "waiting"  # waiting -> loading -> ready | failed
    error: str = ""
    pipe: object = None
    bundle: object = None
    bundle_note: str = ""  # one sentence shown when there are no bars
    ratings: object = None
    clip_name: str | None = None
    unet_names: list = field(default_factory=list)
    report_figures: list = field(default_factory=list)  # (key, figure, caption, title), computed once per bundle
    bundle_missing: bool = False  # no meta.json where the bundle should be (the automatic build may fill it)
    building: bool = False
    build_bars: list = field(default_factory=list)  # the automatic build's tqdm bars, newest last
    build_error: str = ""
    version: int = 0  # bumped on every change the page should show
    step_seconds: float | None = None  # measured per-step time of live runs, for the estimate
    recordings: list = field(default_factory=list)  # record.RecordedRun of the running model: the page's examples
    downloads: Path | None = None  # the one folder of files visitors download (report, CSVs): made on the first
    # request, removed when the server closes (server.launch) or the process ends; never one folder per click
    bundle_key: tuple | None = None  # which bundle (folder, probes' mtime): part of the live-run cache's key
    page: object = None  # layout.Page: the components the start-up poll updates (set by layout.build_page)
    line: ModelLine = field(default_factory=ModelLine)  # one run of the model at a time, first come first served
    live_runs: RunCache = field(default_factory=RunCache)  # finished live runs, replayed for identical requests
    _shared: dict = field(default_factory=dict)  # what every visitor sees alike, made once per bundle (`once`)
    _shared_lock: threading.Lock = field(default_factory=threading.Lock)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _ready: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    # -- downloads ---------------------------------------------------------------------------------
    def download_folder(self) -> Path:
        """This app's one download folder (made on first use). Gradio copies what a handler returns into its own
        cache, keyed by content and removed by `delete_cache` and at shutdown; this folder is removed with the app."""
        with self._lock:
            if self.downloads is None or not self.downloads.is_dir():
                self.downloads = Path(tempfile.mkdtemp(prefix="sdviz-downloads-"))
                weakref.finalize(self, shutil.rmtree, self.downloads, True)  # also at interpreter exit
            return self.downloads

    def remove_downloads(self) -> None:
        """Remove the download folder and the kept live runs, with everything in them (the server is closing)."""
        with self._lock:
            folder, self.downloads = self.downloads, None
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
        self.live_runs.clear()

    # -- start-up ---------------------------------------------------------------------------------
    def start(self) -> None:
        """Load the model (then the bundle, then build what is missing) in a background thread; idempotent."""
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._start_up, name="sdviz-load", daemon=True)
            self._thread.start()

    def _bump(self) -> None:
        self.version += 1

    def shared_entry(self, key, keep: int | None = None) -> dict:
        """The entry of `once` for this key: {"lock"} and, once made, "value"."""
        with self._shared_lock:
            full = (id(self.bundle), key)
            entry = self._shared.pop(full, None) or {"lock": threading.Lock()}
            self._shared[full] = entry  # the most recently used last
            if keep is not None:
                kind = [k for k in self._shared if isinstance(k[1], tuple) and k[1][:1] == key[:1]]
                for old in kind[:-keep]:
                    del self._shared[old]
        return entry

    def once(self, key, make, keep: int | None = None):
        """make() once per bundle and key, however many visitors ask at the same moment (the others wait for the
        first, then share its result); `reload_bundle` forgets them all. For what every visitor is shown alike.
        keep=n: only the n most recently used keys of this key's kind (key[0]) are kept."""
        entry = self.shared_entry(key, keep)
        with entry["lock"]:
            if "value" not in entry:
                entry["value"] = make()
        return entry["value"]

    def _start_up(self) -> None:
        self.phase = "loading"
        self._bump()
        try:
            from ..models import load_pipeline

            self.pipe = load_pipeline(self.model, device=self.device)
        except Exception as err:  # noqa: BLE001 - any failure: say it in one sentence and keep serving
            log.exception("model not loaded")
            self.error = str(err) if isinstance(err, SdvizError) else "The model could not be loaded; the server log says why."
            self.phase = "failed"
            self._ready.set()
            self._bump()
            return
        self._load_ratings()
        self.reload_bundle()
        self._load_recordings()
        self.phase = "ready"
        self._ready.set()
        self._bump()
        if self.bundle is None and self.bundle_missing and self.can_build():  # never over a damaged one
            self.auto_build()

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        self.start()
        if not self._ready.wait(timeout):
            raise SdvizError("The model is still loading; try again in a minute.")
        if self.phase == "failed":
            raise SdvizError(self.error)

    @property
    def ready(self) -> bool:
        return self.phase == "ready"

    def _load_ratings(self) -> None:
        from ..ratings import default_ratings_path, fetch_binder, load_ratings

        path = self.ratings_path or default_ratings_path()
        try:
            if path is None and not on_space() and not offline():
                path = fetch_binder()  # a machine with internet: the verified download, once
            if path is not None:
                self.ratings = load_ratings(path)
        except Exception as err:  # noqa: BLE001 - no ratings only means no overlay and no build
            log.warning("ratings not loaded: %s", err)

    def _load_recordings(self) -> None:
        """Recorded runs of the running model (record.load_recordings): from recordings_spec, env SDVIZ_RECORDINGS,
        else record.default_dir(slug) when it exists. Runs of other models are left out: they would show
        another model's results under this one's name. Any problem only means no recorded examples."""
        from ..record import default_dir, load_recordings

        spec = self.recordings_spec or os.environ.get("SDVIZ_RECORDINGS")
        if not spec:
            folder = default_dir(self.pipe.sdviz.slug)
            spec = folder if folder.is_dir() else None
        if not spec:
            return
        try:
            runs = load_recordings(spec)
        except Exception as err:  # noqa: BLE001 - the app serves live runs without them
            log.warning("recordings not loaded: %s", err)
            return
        model = self.pipe.sdviz.model_id
        self.recordings = [r for r in runs if same_model(r.model, model)]
        if len(self.recordings) < len(runs):
            log.info("%d recorded run(s) of other models left out (this app runs %s)", len(runs) - len(self.recordings), model)

    # -- the bundle ---------------------------------------------------------------------------------
    def bundle_path(self) -> Path:
        return _resolve_bundle(self.bundle_spec) if self.bundle_spec else _default_bundle(self.pipe.sdviz.slug)

    def reload_bundle(self) -> None:
        """Load, check and prepare the bundle; any defect leaves the app running without bars."""
        from ..bundle import check_bundle_matches, load_bundle
        from ..results import best_per_step, reference_names
        from .figures import page_figures

        self.bundle, self.clip_name, self.unet_names, self.report_figures = None, None, [], []
        self.bundle_missing, self.bundle_key = False, None
        with self._shared_lock:
            self._shared.clear()
        try:
            path = self.bundle_path()
        except Exception as err:  # noqa: BLE001
            log.warning("bundle not found: %s", err)
            self.bundle_note = "The probe bundle named for this app could not be found, so the app runs without bars."
            return
        if not (Path(path) / "meta.json").exists():
            self.bundle_missing = True
            self.bundle_note = self._missing_note(path)
            return
        try:
            bundle = load_bundle(path)  # checked: raises SdvizError (or anything else, for a damaged one)
        except SdvizError as err:
            log.warning("bundle not used: %s", err)
            self.bundle_note = _damaged_note(str(err), path)
            return
        except Exception:  # noqa: BLE001 - a damaged bundle must never stop the app
            log.exception("bundle not used")
            self.bundle_note = ("The probe bundle is damaged in a way sdviz does not check (the server log says where), "
                                "so the app runs without bars.")
            return
        try:
            check_bundle_matches(bundle, self.pipe)
        except SdvizError as err:
            log.warning("bundle not used: %s", err)
            self.bundle_note = self._other_model_note(bundle)
            return
        try:
            refs = reference_names(bundle.report)
            best = best_per_step(bundle.report)
            unet = sorted([n for n in bundle.meta["per_step"] if n.startswith("unet.")], key=lambda n: (n != best, n))
            figures = page_figures(bundle.report)  # once per bundle, served to every visitor
            bundle.attributes, bundle.meta["dataset"]["groups"]  # noqa: B018 - fields the bars need
        except Exception:  # noqa: BLE001 - a damaged bundle must never stop the app
            log.exception("bundle not used")
            self.bundle_note = ("The probe bundle's report.json is damaged in a way sdviz does not check (the server log "
                                "says where), so the app runs without bars.")
            return
        self.bundle, self.clip_name, self.unet_names, self.report_figures = bundle, (refs[0] if refs else None), unet, figures
        self.bundle_note = ""
        probes = Path(bundle.path) / "probes.safetensors"
        self.bundle_key = (str(Path(bundle.path).resolve()), probes.stat().st_mtime_ns if probes.exists() else None)
        self.prepare_shared()

    def prepare_shared(self) -> None:
        """At bundle load, what the first visitors would otherwise all compute at once: the Maps tab before a run
        (its default block). Figures for other blocks are made on their first request, once."""
        names = getattr(self, "map_names", lambda: [])()  # MapsHandlers, when this state is an App
        if names:
            try:
                self.render_maps(names[0], [])
            except Exception:  # noqa: BLE001 - the tab makes it again on request and says what went wrong there
                log.exception("maps not prepared")

    def _other_model_note(self, bundle) -> str:
        built_for, running = bundle.meta.get("model"), self.pipe.sdviz.model_id
        if built_for == running:  # same name, other sizes: a bundle of another version of the model
            return (f"The probe bundle was built for a model named {md(running)} whose layers have other sizes than "
                    "the running one, so the app runs without bars.")
        return f"The probe bundle was built for another model ({md(built_for)}, not {md(running)}), so the app runs without bars."

    def _missing_note(self, path) -> str:
        if on_space():
            return "This Space has no probes for its model yet, so images form without bars, maps or report."
        if self.ratings is None:
            return ("No probe bundle for this model yet. Get the ratings with `python -m sdviz data fetch binder` and "
                    "restart the app: it then builds the probes by itself.")
        return f"No probe bundle for this model yet (expected in {md(shown_path(path))})."

    def can_build(self) -> bool:
        local = not self.bundle_spec or not is_hub_id(self.bundle_spec)  # never over a bundle named on the Hub
        return self.pipe is not None and self.ratings is not None and not on_space() and local

    def auto_build(self) -> None:
        """Build the missing bundle with reduced settings (AUTO_BUILD), showing tqdm's progress in the page."""
        from ..build import BuildConfig, build

        self.building, self.build_error, self.build_bars = True, "", []
        self._bump()
        try:
            out = self.bundle_path()
            config = BuildConfig(model=self.pipe.sdviz.model_id, ratings=str(self.ratings.source), out=str(out),
                                 cache=self.build_cache, progress=True, automatic=True, **AUTO_BUILD)
            with watch_tqdm(self.build_bars):
                build(config, pipe=self.pipe)
        except Exception as err:  # noqa: BLE001 - the app keeps serving without bars
            log.exception("automatic build failed")
            self.build_error = (str(err) if isinstance(err, SdvizError) else "The automatic build failed; the server log says why.")
        finally:
            # reload and bump before clearing `building`: a poll in between would see a settled page with no
            # news, switch its timer off and leave the progress bar up
            try:
                self.reload_bundle()
            finally:
                self._bump()
                self.building = False
                self._bump()

    def build_progress(self) -> tuple[str, float]:
        """(what the build is doing, fraction done of that stage) from its newest tqdm bar."""
        if not self.build_bars:
            return "loading the ratings", 0.0
        bar = self.build_bars[-1]
        desc, n, total = str(getattr(bar, "desc", "") or ""), int(getattr(bar, "n", 0) or 0), int(getattr(bar, "total", 0) or 0)
        names = {"extract": "reading every rated word through the model", "probes": "training and testing the probes",
                 "maps": "drawing the maps"}
        desc = names.get(desc.split("[")[0].strip(), desc or "working")
        return (f"{desc} ({n}/{total})" if total else desc), (min(n / total, 1.0) if total else 0.0)

    def note_step_time(self, seconds: float) -> None:
        self.step_seconds = seconds if self.step_seconds is None else 0.7 * self.step_seconds + 0.3 * seconds


_WATCHED: dict[int, list] = {}  # thread id -> the list its tqdm bars go to (watch_tqdm); tqdm is process-wide
_WATCH_LOCK = threading.Lock()


@contextmanager
def watch_tqdm(bars: list):
    """Collect the tqdm bars this thread creates (the build's extract/probes/maps stages) into `bars`. tqdm is
    patched once while any thread watches and restored after the last, so two apps building at once each see
    their own bars."""
    from tqdm import std

    me = threading.get_ident()
    with _WATCH_LOCK:
        if not _WATCHED:
            init = std.tqdm.__init__

            def __init__(bar, *args, **kwargs):
                init(bar, *args, **kwargs)
                into = _WATCHED.get(threading.get_ident())
                if into is not None and not getattr(bar, "disable", True):
                    bar.mininterval = 0.2  # iterating bars update .n only when they refresh
                    into.append(bar)

            __init__.unwatched = std.tqdm.__dict__["__init__"]  # as defined (tqdm wraps it): restored as it was
            std.tqdm.__init__ = __init__
        _WATCHED[me] = bars
    try:
        yield bars
    finally:
        with _WATCH_LOCK:
            del _WATCHED[me]
            if not _WATCHED:
                std.tqdm.__init__ = std.tqdm.__dict__["__init__"].unwatched
