"""Names read from storage that imlca does not trust (a dataset bucket's manifest, a cache's listing) checked
before any of them becomes a local path: whoever can write the bucket must not be able to write anywhere else
on the nodes that pull from it.

`check_files` checks a whole `{name: [size, sha256]}` mapping before anything is written; `inside` is the last
check on each target path, right before it is opened. Every download that follows a manifest calls both.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from imlca.errors import DataError

SHA256 = re.compile(r"[0-9a-f]{64}")
SHOWN = 120  # characters of a hostile name quoted in a message


def name_problem(name: Any) -> str | None:
    """Why `name` is not a relative '/'-separated path that stays below the folder it is joined to; None if it is."""
    if not isinstance(name, str) or not name:
        return "not a non-empty string"
    if name.startswith("/"):
        return "an absolute path"
    if "\\" in name:
        return "a name with a backslash (names are '/'-separated)"
    if "\0" in name:
        return "a name with a NUL character"
    if any(part in ("", ".", "..") for part in name.split("/")):
        return "a name with an empty, '.' or '..' part"
    return None


def _entry_problem(entry: Any) -> str | None:
    ok = (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], int)
          and not isinstance(entry[0], bool) and entry[0] >= 0 and isinstance(entry[1], str)
          and SHA256.fullmatch(entry[1]) is not None)
    return None if ok else f"not [size in bytes >= 0, sha256 as 64 hex digits] (got {_shown(entry)})"


def _shown(value: Any) -> str:
    text = repr(value)  # escapes newlines and control characters: the message stays one line
    return text if len(text) <= SHOWN else text[:SHOWN] + "…"


def refused(where: str, name: Any, problem: str, fix: str) -> DataError:
    return DataError(f"{where} is refused: its entry {_shown(name)} is {problem}; nothing was written; {fix}")


def check_files(files: Any, where: str, fix: str) -> dict[str, tuple[int, str]]:
    """A manifest's `files` mapping (name → [size, sha256]), every entry checked; the first bad one is raised as one
    line naming it and `where` (the manifest's URI). No name may be a file and also a folder of another name."""
    if not isinstance(files, dict):
        raise DataError(f"{where} is refused: 'files' is not a mapping of names to [size, sha256]; {fix}")
    for name, entry in files.items():
        problem = name_problem(name) or _entry_problem(entry)
        if problem:
            raise refused(where, name, problem, fix)
    folders = set()  # every ancestor folder of every name
    for name in files:
        parts = name.split("/")
        for depth in range(1, len(parts)):
            folders.add("/".join(parts[:depth]))
    for name in sorted(files):
        if name in folders:
            inner = next(other for other in sorted(files) if other.startswith(name + "/"))
            raise refused(where, name, f"both a file and a folder (the manifest also lists {_shown(inner)})", fix)
    return {name: (size, sha) for name, (size, sha) in files.items()}


def inside(root: Path, name: str, where: str, fix: str) -> Path:
    """`root/name`, refused unless it resolves inside `root` (also when a link already on disk points out)."""
    problem = name_problem(name)
    target = Path(root) / name
    if problem is None and not target.resolve().is_relative_to(Path(root).resolve()):
        problem = "a path that resolves outside the local copy (a link on the way points elsewhere)"
    if problem:
        raise refused(where, name, problem, fix)
    return target
