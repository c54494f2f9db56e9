"""sdviz: where Stable Diffusion's human-like semantics come from, live and measured."""

__version__ = "0.1.0"

__all__ = ["Capture", "SdvizError", "StepRecord", "Trace", "load_bundle", "load_pipeline", "steer", "stream", "trace",
           "__version__"]

_LAZY = {
    "SdvizError": "errors", "load_pipeline": "models", "Capture": "capture", "load_bundle": "bundle",
    "StepRecord": "run", "Trace": "run", "stream": "run", "trace": "run", "steer": "steering",
}


def __getattr__(name):
    # Lazy, so `import sdviz` (and the app's start-up) does not pay for torch/diffusers until used.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'sdviz' has no attribute {name!r}")
