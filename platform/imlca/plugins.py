"""Plugins: the user's modules that register choices (merge rules, alignment losses, methods, benchmarks,
backbones) in `imlca.registries`, imported in every process that runs part of a run.

Two ways name a plugin: the config's `plugins:` list of module names, and the `imlca.plugins` entry-point group of
installed distributions (`[project.entry-points."imlca.plugins"]`: `name = "module"` or `"module:function"`, the
function called with no arguments). Both are loaded wherever an `ExperimentConfig` is built from its tree (the
driver, a Tune trial, the TaskWorker and the CentralActor), before its sections check names against the
registries, so a name registered by a plugin is valid in every process that has the plugin's code. A process
without it (the module not shipped to the cluster) stops with one line naming the module and the process.
"""
from __future__ import annotations

import importlib
import os
import socket
from collections.abc import Iterable
from importlib import metadata

from imlca.errors import ConfigError, UserError

ENTRY_POINTS = "imlca.plugins"
SHIP = ("ship it with the job (ray job submit --working-dir DIR, or runtime_env py_modules) or install it on "
        "every node")

TRIAL = "Tune trial"
_role = "driver"  # what this process is in the run: set by the Tune trial and the actors when they start
_entry_points_loaded = False


class PluginError(UserError):
    """A plugin failed to import, or a name it registers is unknown in this process."""


def set_role(role: str) -> None:
    """Name this process in plugin errors ("Tune trial", "TaskWorker", "CentralActor")."""
    global _role
    _role = role


def process_name() -> str:
    return f"the {_role} (pid {os.getpid()} on {socket.gethostname()})"


def _imported(target: str, origin: str) -> None:
    module, _, function = target.partition(":")
    try:
        loaded = importlib.import_module(module)
        if function:
            getattr(loaded, function)()
    except Exception as err:  # a plugin's own error: named with the module and the process, never a traceback
        cause = str(err).splitlines()[0] if str(err) else ""
        raise PluginError(f"plugin '{target}' ({origin}) failed to load in {process_name()}: "
                          f"{type(err).__name__}{': ' + cause if cause else ''}; {SHIP}") from None


def load_entry_points() -> None:
    """Import the `imlca.plugins` entry points of the installed distributions, once per process."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for point in metadata.entry_points(group=ENTRY_POINTS):
        _imported(point.value, f"entry point '{point.name}' of {ENTRY_POINTS}")


def load_plugins(modules: Iterable[str]) -> None:
    """The entry points, then the `plugins:` modules (a module already imported is not imported again)."""
    load_entry_points()
    for module in modules:
        _imported(module, "listed under plugins:")


def check_names(modules: object) -> list[str]:
    """`plugins:` as read from YAML: a list of module names."""
    if not (isinstance(modules, list) and all(isinstance(m, str) and m.strip() for m in modules)):
        raise ConfigError("plugins", f"expected a list of module names such as [my_plugin], got {modules!r}")
    return modules


def worker_config(tree: dict, role: str):
    """The ExperimentConfig a worker process builds from the tree the driver sent (where it was valid): a name
    that only a plugin registers and this process lacks is one line naming the process."""
    from imlca.config import ExperimentConfig, from_dict

    set_role(role)
    try:
        return from_dict(ExperimentConfig, tree)
    except PluginError:
        raise
    except ConfigError as err:
        raise PluginError(f"{process_name()} refused the config the driver accepted ({err}): a plugin registers "
                          f"the name there but not here; list the plugin under plugins: (or install its "
                          f"{ENTRY_POINTS} entry point) and {SHIP}") from None
