"""imlca: class-incremental learning with Incremental backbone Merging + Local Classifier Alignment, on Ray.

From a notebook: `imlca.run(config, overrides={"align.lam": 0.3})`, `imlca.sweep(sweep_file)` (a DataFrame of
trials), `imlca.load(run_id_or_folder)` (a model that names the classes of images). `import imlca` itself loads
nothing heavy: each name is imported on first use.
"""
__version__ = "0.1.0"

_LAZY = {name: "imlca.cli.notebook" for name in ("run", "sweep", "experiment", "load")}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'imlca' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_LAZY))
