"""`python app.py`: parse arguments, build the page, serve it, then load the model behind it."""

import argparse
import logging
import os
from contextlib import asynccontextmanager

from ..errors import SdvizError


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python app.py", description="The sdviz Gradio app.")
    parser.add_argument("--model", default=os.environ.get("SDVIZ_MODEL", "auto"))
    parser.add_argument("--device", default=os.environ.get("SDVIZ_DEVICE"))
    parser.add_argument("--bundle", default=os.environ.get("SDVIZ_BUNDLE"),
                        help="probe bundle folder (default: probes/<model-slug>, built automatically when ratings are at hand)")
    parser.add_argument("--ratings", default=os.environ.get("SDVIZ_RATINGS"))
    parser.add_argument("--recordings", default=os.environ.get("SDVIZ_RECORDINGS"),
                        help="recorded runs shown as examples: a folder or Hub dataset id from `python -m sdviz record` "
                             "(default: recordings/<model-slug> when it exists)")
    parser.add_argument("--size", type=int, default=int(os.environ["SDVIZ_SIZE"]) if os.environ.get("SDVIZ_SIZE") else None,
                        help="image side in pixels of every run (default: the model's own, e.g. 512 for SD 1.5)")
    parser.add_argument("--share", action="store_true", help="ask Gradio for a public share link (off by default)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from .app import create_app

    try:
        demo = create_app(args.model, args.device, args.bundle, args.ratings, recordings=args.recordings, size=args.size)
    except SdvizError as err:
        raise SystemExit(f"error: {err}") from None
    launch(demo, share=args.share)


def launch(demo, *, share: bool = False, prevent_thread_lock: bool = False, **kwargs):
    """Queue (one generation at a time) and serve `demo` (from `create_app`): 127.0.0.1 unless GRADIO_SERVER_NAME
    says otherwise, no share link unless asked, readable messages (show_error). Its App starts loading the model
    once the server answers."""
    from .layout import CSS

    kwargs.setdefault("server_name", os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    kwargs.setdefault("server_port", int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    kwargs.setdefault("css", CSS)
    app = demo.sdviz

    @asynccontextmanager
    async def remove_downloads(_):  # the server's lifespan: its download folder goes when it closes
        try:
            yield
        finally:
            app.remove_downloads()

    kwargs.setdefault("app_kwargs", {}).setdefault("lifespan", remove_downloads)
    # show_error=True: Gradio's own checks of an input (a seed "abc") say which value is wrong. A full temp folder, the
    # one failure inside Gradio that would show its internals and paths, is refused first (generate.check_disk)
    kwargs.setdefault("max_threads", 64)  # Gradio's worker threads: replays and runs waiting in line hold one each
    result = demo.queue(default_concurrency_limit=1, max_size=64).launch(share=share, show_error=True,
                                                                         prevent_thread_lock=True, **kwargs)
    demo.sdviz.start()
    if not prevent_thread_lock:
        demo.block_thread()
    return result
