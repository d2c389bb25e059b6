"""The extending guide's plugin (docs/guides/extending.md), written out as a user would write it: the module itself,
an installed distribution whose `imlca.plugins` entry point names it, and a broken plugin."""
from __future__ import annotations

import re
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from conftest import REPO

GUIDE = REPO / "docs" / "guides" / "extending.md"
MODULE = "wavg_plugin"


def guide_block(first_line: str) -> str:
    """The code block of the guide whose first line is `first_line` (e.g. "# wavg_plugin.py")."""
    (block,) = re.findall(rf"```(?:python|yaml)\n{re.escape(first_line)}\n(.*?)```", GUIDE.read_text(), re.S)
    return block


def write_plugin(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{MODULE}.py").write_text(guide_block(f"# {MODULE}.py"))
    return folder


def write_entry_point(folder: Path, target: str = MODULE, dist: str = "wavg_plugin") -> Path:
    """`<dist>-1.0.dist-info` with an `imlca.plugins` entry point `target`: what `pip install` of a package
    declaring `[project.entry-points."imlca.plugins"]` leaves on the path."""
    info = folder / f"{dist}-1.0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[imlca.plugins]\nwavg = {target}\n")
    return folder


def write_broken(folder: Path, name: str = "broken_plugin") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.py").write_text('raise RuntimeError("needs a GPU driver")\n')
    return folder


def guide_sweep() -> dict:
    """The guide's sweep file: its plugin's rule and method, one epoch a phase (seconds per task)."""
    import yaml

    return yaml.safe_load(guide_block("# my_sweep.yaml"))


@contextmanager
def importable(folder: Path) -> Iterator[Path]:
    """`folder` on this process's path (not on Ray's workers'); afterwards the registries, sys.path and sys.modules
    as they were, so the plugin's names do not leak into other tests."""
    from imlca import registries

    saved = {name: dict(r) for name, r in vars(registries).items() if isinstance(r, registries.Registry)}
    before = set(sys.modules)
    sys.path.insert(0, str(folder))
    try:
        yield folder
    finally:
        sys.path.remove(str(folder))
        for name in set(sys.modules) - before:
            if getattr(sys.modules[name], "__file__", "") and sys.modules[name].__file__.startswith(str(folder)):
                del sys.modules[name]
        for name, entries in saved.items():
            registry = getattr(registries, name)
            registry.clear()
            registry.update(entries)
