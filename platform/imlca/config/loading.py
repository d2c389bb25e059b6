"""Strict YAML → typed dataclasses, for any dataclass schema: unknown keys, wrong types and out-of-range values
name their dotted key; `extends:` and dotted overrides; the flat dotted view used for MLflow params; the config and
sweep files bundled with the package, found by name."""
from __future__ import annotations

import copy
import dataclasses
import difflib
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from imlca.errors import ConfigError, ConfigFileError
from imlca.safe_paths import name_problem


PASSWORD_REFUSED = (
    "holds a password (user:password@ in a URI), and the config is saved with every run and logged to MLflow; "
    "remove it and give it in the environment: PGPASSWORD or a password file (PGPASSFILE, default ~/.pgpass) for "
    "PostgreSQL, MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD for an MLflow server, AWS_SECRET_ACCESS_KEY "
    "for S3")


def holds_password(value: Any) -> bool:
    """A string with a URI's `user:password@` in it (where configs name databases, servers and buckets)."""
    return isinstance(value, str) and re.search(r"://[^/@\s]*:[^/@\s]*@", value) is not None


def folder_name(value: str, key: str) -> None:
    """`value` names a folder (the run's, the sweep's): one path component, never a way out of its parent."""
    problem = name_problem(value) or ("a path of several folders" if "/" in value else None)
    require(problem is None, key, f"must be one folder name (it names an output folder), not {problem}")


def require(ok: bool, key: str, problem: str) -> None:
    """The one validation style of every config section: a failed check names its key and the fix."""
    if not ok:
        raise ConfigError(key, problem)


def did_you_mean(name: str, candidates: typing.Iterable[str], prefix: str = "") -> str:
    """" did you mean 'x'?" for the closest of `candidates` to a misspelt `name` (difflib), else ""."""
    close = difflib.get_close_matches(str(name), [str(c) for c in candidates], n=1)
    return f" did you mean '{prefix}{close[0]}'?" if close else ""


def choose(value: str, key: str, allowed: typing.Iterable[str]) -> None:
    """`value` must be one of `allowed` (a registry or a tuple of names)."""
    names = tuple(sorted(allowed)) if isinstance(allowed, dict) else tuple(allowed)
    require(value in names, key, f"unknown value '{value}';{did_you_mean(value, names)} use one of {', '.join(names)}")


def described(default: Any = dataclasses.MISSING, doc: str = "", *, factory: Any = dataclasses.MISSING) -> Any:
    """A schema field with its meaning: `lam: float = described(0.1, "λ of the LCA loss")`. The docs' config
    reference shows `doc` (`field_doc`); tests/test_docs.py fails on a schema field without one."""
    return dataclasses.field(default=default, default_factory=factory, metadata={"doc": doc})


def field_doc(f: dataclasses.Field) -> str:
    """The meaning `described` gave a schema field ("" when it has none)."""
    return f.metadata.get("doc", "")


# imlca/sweeps: in a checkout a link to the top-level sweeps/ folder, in the wheel a folder of package data.
BUNDLED_DIR = Path(__file__).resolve().parent.parent / "sweeps"


def bundled_names() -> list[str]:
    """The bundled config and sweep files, as names relative to BUNDLED_DIR (`tiny.yaml`, `paper/table1.yaml`)."""
    return sorted(p.relative_to(BUNDLED_DIR).as_posix() for p in BUNDLED_DIR.rglob("*.yaml"))


def bundled_sweep(name: str) -> Path:
    """The bundled config or sweep file `name`, e.g. `bundled_sweep("tiny.yaml")`, in a checkout or an install."""
    path = BUNDLED_DIR / name
    if not path.is_file():
        raise ConfigFileError(name, f"no bundled config of that name; bundled: {', '.join(bundled_names())}")
    return path


def config_path(name: str | Path, folder: str | Path = ".") -> Path:
    """`folder/name` when it exists, else the bundled file `name` (a leading `sweeps/` dropped) when that exists.

    So `imlca run tiny.yaml` or `sweeps/tiny.yaml` works from any folder, and a sweep's `base:` or a config's
    `extends:` may name a bundled file. Otherwise `folder/name`, whose reading reports it missing.
    """
    local = Path(folder) / name
    parts = Path(name).parts
    if local.exists() or Path(name).is_absolute() or not parts:
        return local
    bundled = BUNDLED_DIR.joinpath(*(parts[1:] if parts[0] == "sweeps" and len(parts) > 1 else parts))
    return bundled if bundled.is_file() else local


class ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader plus YAML 1.2's float rule: `3e-3` and `1E5` are floats (YAML 1.1 reads them as
    strings, since its floats need a dot). Appended after the built-in rules, so ints and 1.1 floats are unchanged."""


ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$"),
    list("-+0123456789."))


def load_yaml(text: str):
    """YAML text → Python values, with YAML 1.2 floats (every config, override and sweep file goes through here)."""
    return yaml.load(text, Loader=ConfigLoader)


def _is_instance(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_is_instance(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_is_instance(v, item) for v in value)
    if origin is dict:
        key_type, item = typing.get_args(hint)
        return isinstance(value, dict) and all(_is_instance(k, key_type) and _is_instance(v, item)
                                               for k, v in value.items())
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _section_of(key: str, hints: dict, prefix: str) -> str:
    """" did you mean 'align.method'?" for a key given one level too high (`method`): the sections that have it."""
    homes = [name for name, hint in hints.items()
             if dataclasses.is_dataclass(hint) and key in {f.name for f in dataclasses.fields(hint)}]
    names = [f"'{prefix + '.' if prefix else ''}{home}.{key}'" for home in homes]
    return f" did you mean {' or '.join(names)}?" if names else ""


def from_dict(cls: type, data: Any, prefix: str = "") -> Any:
    """Build dataclass `cls` from a nested dict; unknown keys, wrong types and bad values name their dotted key."""
    if not isinstance(data, dict):
        raise ConfigError(prefix or "<root>", f"expected a mapping, got {type(data).__name__}")
    prepare = getattr(cls, "prepare_tree", None)  # e.g. plugins that register names the sections check
    if prepare is not None:
        prepare(data)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            hint = _section_of(key, hints, prefix) or did_you_mean(key, names, f"{prefix}." if prefix else "")
            raise ConfigError(path, f"unknown key;{hint} valid keys here: {', '.join(sorted(names))}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = from_dict(hint, value, path)
        elif not _is_instance(value, hint):
            raise ConfigError(path, f"expected {_type_name(hint)}, got {value!r}")
        elif any(holds_password(v) for v in (value if isinstance(value, list) else [value])):
            raise ConfigError(path, PASSWORD_REFUSED)
        else:
            kwargs[key] = float(value) if hint is float else value
    try:
        return cls(**kwargs)
    except ConfigError as err:
        raise err.under(prefix) from None


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def flatten(cfg: Any) -> dict[str, Any]:
    """`{"lora.rank": 64, ...}`: the view logged as MLflow params and used for sweep keys."""
    out: dict[str, Any] = {}

    def walk(node: dict, prefix: str) -> None:
        for key, value in node.items():
            path = f"{prefix}{key}"
            if isinstance(value, dict):
                walk(value, path + ".")
            else:
                out[path] = value

    walk(to_dict(cfg), "")
    return out


def set_dotted(tree: dict, key: str, value: Any) -> None:
    """Set `a.b.c` in a nested dict, creating levels; the key is checked later by `from_dict`."""
    *parents, leaf = key.split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(key, f"'{part}' is a value, not a section")
    node[leaf] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`a.b=c` → ("a.b", yaml-parsed c)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(text, "an override is written key=value, e.g. --set lora.rank=16")
    try:
        value = load_yaml(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigFileError(str(path), "file not found; pass the path of a YAML config or a bundled name such as "
                                         "tiny.yaml (imlca.config.bundled_names() lists them)")
    try:
        data = load_yaml(path.read_text()) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigFileError(str(path), f"malformed YAML{where}; fix the syntax") from None
    if not isinstance(data, dict):
        raise ConfigFileError(str(path), "the top level must be a mapping of sections")
    return data


def deep_update(base: dict, updates: dict) -> dict:
    out = dict(base)
    for key, value in updates.items():
        out[key] = deep_update(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def read_config_tree(path: str | Path, seen: tuple = ()) -> dict:
    """A config file as a nested dict; `extends: other.yaml` (relative to the file) is read first, then overlaid."""
    path = Path(path).resolve()
    if path in seen:
        raise ConfigFileError(str(path), "'extends' forms a cycle; remove one of the extends keys")
    tree = read_yaml(path)
    parent = tree.pop("extends", None)
    if parent is None:
        return tree
    if not isinstance(parent, str):
        raise ConfigFileError(str(path), "'extends' must be the path of another YAML config")
    return deep_update(read_config_tree(config_path(parent, path.parent), (*seen, path)), tree)


CASE = "case"  # the sweep space key whose values are experiment files, each a trial's own base (config/sweep.py)


def merge_trees(base: dict, updates: dict[str, Any]) -> dict:
    """Copy of `base` with dotted `updates` applied (used by sweeps); a `case` update ({"file", "set"}) applies the
    dotted keys of its `set`: where its experiment file differs from the sweep's base."""
    tree = copy.deepcopy(base)
    for key, value in updates.items():
        for dotted, v in (value["set"].items() if key == CASE and isinstance(value, dict) else [(key, value)]):
            set_dotted(tree, dotted, v)
    return tree
