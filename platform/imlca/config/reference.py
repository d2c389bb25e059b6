"""Every key of a config schema as a row (key, type, default, allowed values, meaning), read from the dataclasses
themselves: the meaning from `described(...)`, the allowed values from the checks of `__post_init__` (`choose` and
`require` calls), so the docs' config reference cannot drift from what the loader accepts."""
from __future__ import annotations

import ast
import dataclasses
import inspect
import sys
import textwrap
import typing
from typing import Any, NamedTuple

from imlca.config.loading import field_doc


class KeyRow(NamedTuple):
    key: str  # dotted, e.g. "align.lam"
    type: str
    default: Any
    allowed: str  # "" when any value of the type is accepted
    doc: str


def schema_rows(cls: type, prefix: str = "") -> list[KeyRow]:
    """One row per leaf key of dataclass `cls`, nested sections flattened to dotted keys, in declaration order."""
    hints = typing.get_type_hints(cls)
    checks = _checks(cls)
    rows: list[KeyRow] = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            rows.extend(schema_rows(hint, f"{prefix}{f.name}."))
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        rows.append(KeyRow(prefix + f.name, _type_text(hint), default, checks.get(f.name, ""), field_doc(f)))
    return rows


def section_docs(cls: type) -> dict[str, str]:
    """The meaning of each nested section of `cls` (e.g. "data" → "the benchmark, ..."), one level deep."""
    hints = typing.get_type_hints(cls)
    return {f.name: field_doc(f) for f in dataclasses.fields(cls) if dataclasses.is_dataclass(hints[f.name])}


def _type_text(hint: Any) -> str:
    return getattr(hint, "__name__", None) if not typing.get_args(hint) else str(hint).replace("typing.", "")


def _checks(cls: type) -> dict[str, str]:
    """field name → what its `__post_init__` checks allow: "one of a, b" (choose) and "must ..." (require)."""
    post_init = cls.__dict__.get("__post_init__")
    if post_init is None:
        return {}
    scope = vars(sys.modules[cls.__module__])
    out: dict[str, list[str]] = {}
    for call in ast.walk(ast.parse(textwrap.dedent(inspect.getsource(post_init)))):
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and len(call.args) == 3):
            continue
        key = call.args[1]
        if not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
            continue
        if call.func.id == "choose":
            names = _names(call.args[2], scope)
            if names:
                out.setdefault(key.value, []).append("one of " + ", ".join(names))
        elif call.func.id == "require":
            text = _leading_text(call.args[2])
            if text.startswith("must"):
                out.setdefault(key.value, []).append(text)
    return {name: "; ".join(dict.fromkeys(parts)) for name, parts in out.items()}


def _names(node: ast.expr, scope: dict) -> list[str]:
    """The choices a `choose` call offers: a module-level registry/tuple name, or a literal tuple."""
    if isinstance(node, ast.Name) and node.id in scope:
        values = scope[node.id]
        return sorted(values) if isinstance(values, dict) else list(values)
    if isinstance(node, (ast.Tuple, ast.List)):
        return [elt.value for elt in node.elts if isinstance(elt, ast.Constant)]
    return []


def _leading_text(node: ast.expr) -> str:
    """The fixed text of a `require` message up to its first interpolated value ("must be >= 1")."""
    if isinstance(node, ast.Constant):
        return str(node.value)
    if not isinstance(node, ast.JoinedStr):
        return ""
    text = ""
    for part in node.values:
        if not isinstance(part, ast.Constant):
            break
        text += part.value
    return text.split(" (got")[0].split(" (null")[0].rstrip(" (").strip()
