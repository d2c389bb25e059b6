"""The documentation site and the README: the strict MkDocs build (no broken link, no page outside the nav), the
config reference against the schema (every key shown with its meaning; a key without one fails), every command
line quoted in the docs parsed by the real argument parser (every `--set key=value` a real key with a valid value),
and the built site in headless Chromium: home, a guide, the config reference, and its search. The Chromium test
saves the screenshots docs/site-home.png and docs/site-config-reference.png. One build serves every test."""
from __future__ import annotations

import functools
import html
import http.server
import os
import re
import shlex
import subprocess
import sys
import threading
import typing
from pathlib import Path

import pytest

from imlca.cli import build_parser, subcommands
from imlca.config import ExperimentConfig, load_config
from imlca.config.loading import config_path
from imlca.config.reference import schema_rows, section_docs
from imlca.config.sweep import SweepConfig
from imlca.errors import UserError
from imlca.registries import METHODS

from browser import chromium, wait_until
from conftest import REPO

PAGES = sorted((REPO / "docs").rglob("*.md")) + [REPO / "README.md", REPO / "CHANGELOG.md"]
COMMAND = re.compile(r"(?:python3? -m imlca|(?<![\w/.-])imlca)\s+(?=[a-z])")
# a line of a fenced block that runs imlca: after optional VAR=value assignments, or after `ray job submit ... --`
SHELL_LINE = re.compile(r"^(?:[A-Z_]+=\S+ )*(?:python3? -m imlca|imlca) |\s-- python3? -m imlca ")
PLACEHOLDER_SET = {"key=value", "KEY=VALUE"}


@pytest.fixture(scope="session")
def built_site(tmp_path_factory) -> Path:
    """`mkdocs build --strict` of mkdocs.yml, as `make docs` runs it, into a temporary folder."""
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-f", str(REPO / "mkdocs.yml"),
                           "-d", str(out)], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0, f"strict docs build failed:\n{proc.stdout}\n{proc.stderr}"
    return out


def test_strict_build_writes_every_page(built_site):
    """Strict mode already refuses a broken link or a page outside the nav; every source page became a page."""
    for page in (REPO / "docs").rglob("*.md"):
        assert (built_site / page.relative_to(REPO / "docs").with_suffix(".html")).is_file(), page
    for generated in ("reference/config.html", "reference/cli.html", "reference/api.html", "changelog.html"):
        assert (built_site / generated).is_file()
    method = (built_site / "concepts" / "method.html").read_text()
    assert method.count("<math") > 20 and "arithmatex" not in method  # equations as MathML: no CDN script needed
    assert "imlca.cli.notebook.run" in (built_site / "reference" / "api.html").read_text()  # docstrings rendered
    cli = (built_site / "reference" / "cli.html").read_text()
    for command in _command_words():
        assert f"imlca {command}" in cli or f" {command}</code>" in cli, command


def test_every_schema_field_has_a_meaning():
    """A new key or section without `described(default, "meaning")` fails here, naming it."""
    rows = schema_rows(ExperimentConfig) + schema_rows(SweepConfig)
    sections = {**section_docs(ExperimentConfig), **section_docs(SweepConfig)}
    missing = [r.key for r in rows if not r.doc.strip()] + [name for name, doc in sections.items() if not doc.strip()]
    assert not missing, f"schema fields without a meaning (give them described(default, '...')): {missing}"


def test_readme_is_one_page_whose_links_resolve():
    """The README stays a newcomer's page: at most 150 lines, the two set-up commands, no commit history, and every
    relative link (into docs/, CHANGELOG.md, the picture) names a file of the repository."""
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 150 and "make sweep" in text and "make test" in text
    assert not re.search(r"\b(?:at|since|before) [0-9a-f]{7}\b", text)
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    assert len(links) > 10
    for link in links:
        if "://" not in link:
            assert (REPO / link).is_file(), f"README links to {link}, which does not exist"


def _table_rows(html_text: str) -> dict[str, list[str]]:
    """First cell (a key in <code>) → the row's cells as text, for every table row of a built page's HTML."""
    rows = {}
    for row in re.findall(r"<tr>(.*?)</tr>", html_text, re.S):
        cells = [html.unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in re.findall(r"<td>(.*?)</td>", row, re.S)]
        if cells:
            rows.setdefault(cells[0], cells)
    return rows


def test_config_reference_shows_every_key(built_site):
    experiment, sweep = (built_site / "reference" / "config.html").read_text().split('id="sweep-file"')
    rows = _table_rows(experiment)
    for schema, shown in ((ExperimentConfig, rows), (SweepConfig, _table_rows(sweep))):
        for row in schema_rows(schema):
            assert row.key in shown, f"{row.key} is missing from the config reference"
            assert row.doc and shown[row.key][-1] == row.doc.replace("`", ""), f"{row.key}: {shown[row.key]}"
    assert f"one of {', '.join(sorted(METHODS))}" in rows["align.method"]  # the registry's names, in order
    assert rows["align.lam"][2] == "0.1" and rows["align.lam"][3] == "must be >= 0"


def _code_spans(text: str) -> typing.Iterator[str]:
    """Shell lines of fenced blocks that run imlca (continuations joined, a leading `$ ` and comments dropped),
    then inline code spans outside fences that give a command arguments (not a bare `imlca data push`)."""
    outside = []
    for i, part in enumerate(re.split(r"^ *```[^\n]*\n", text, flags=re.M)):
        if i % 2 == 0:
            outside.append(part)
            continue
        for line in part.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s#\s.*$", "", line.strip()).removeprefix("$ ")
            if SHELL_LINE.search(line):
                yield line
    for part in outside:
        for span in re.findall(r"`([^`\n]+)`", part):
            words = span.split()
            arguments = words[words.index("imlca") + 1:] if "imlca" in words else []
            while arguments and arguments[0] in _command_words():
                arguments.pop(0)
            if any(not w.startswith("-") for w in arguments):
                yield span


def command_lines() -> list[tuple[str, str]]:
    """(page, imlca argument string) for every imlca command quoted in the docs and README; synopses (with [ ],
    | or ...) are left out, they show a command's shape, not a command."""
    found = []
    for page in PAGES:
        for span in _code_spans(page.read_text()):
            match = COMMAND.search(span)
            command = re.split(r"&&|;|\|\|", span[match.end():] if match else "")[0].strip()
            if match and not re.search(r"\[|\||\.\.\.|<", command):
                found.append((page.relative_to(REPO).as_posix(), command))
    return found


@functools.cache
def _parser():
    return build_parser()


@functools.cache
def _command_words() -> frozenset[str]:
    """Every command and subcommand name of the parser (run, data, push, ...)."""
    words, todo = set(), [_parser()]
    while todo:
        for name, _, sub in subcommands(todo.pop()):
            words.add(name)
            todo.append(sub)
    return frozenset(words)


def test_every_command_line_in_the_docs_parses():
    lines = command_lines()
    assert len(lines) > 40, lines  # the guides quote dozens; fewer means the extraction broke
    failures = []
    for page, text in lines:
        try:
            args = _parser().parse_args(shlex.split(text))
        except SystemExit:
            failures.append(f"{page}: imlca {text}")
            continue
        if getattr(args, "overrides", None) and config_path(args.config).is_file():
            try:
                load_config(args.config, args.overrides)
            except UserError as err:
                failures.append(f"{page}: imlca {text}: {err}")
    assert not failures, "command lines the parser refuses:\n" + "\n".join(failures)


def test_every_set_in_the_docs_names_a_real_key_with_a_valid_value():
    found = [(page, m) for page in PAGES for m in re.findall(r"--set[ =]([\w.]+=[^\s`|)\]]+)", page.read_text())]
    assert len(found) > 10, found
    bad = []
    for page, override in found:
        if override in PLACEHOLDER_SET:
            continue
        try:
            load_config(None, [override])
        except UserError as err:
            bad.append(f"{page.relative_to(REPO)}: --set {override}: {err}")
    assert not bad, "\n".join(bad)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def served_site(built_site):
    """The built site over HTTP on 127.0.0.1 (search needs http:, not file:), as `make docs-serve` serves it."""
    handler = functools.partial(_Quiet, directory=str(built_site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.slow
def test_site_in_chromium(served_site, tmp_path):
    with chromium(tmp_path / "profile") as driver:
        driver.get(f"{served_site}/index.html")
        wait_until(lambda: driver.execute_script(
            "const i = document.querySelector('article img'); return i && i.complete && i.naturalWidth > 0"),
            "the report picture on the home page", driver=driver)
        assert "imlca" in driver.find_element("tag name", "h1").text
        driver.save_screenshot(str(REPO / "docs" / "site-home.png"))

        driver.get(f"{served_site}/guides/sweeps.html")
        assert driver.find_element("tag name", "h1").text.startswith("Sweeps and λ sweeps")
        nav = driver.find_element("css selector", "nav.md-nav--primary").get_attribute("textContent")
        assert "Choosing on validation" in nav and "Config keys" in nav

        driver.get(f"{served_site}/reference/config.html")
        cells = wait_until(lambda: [c.text for c in driver.find_elements("css selector", "td code")],
                           "the config reference table", driver=driver)
        assert "align.lam" in cells and "storage_path" in cells
        driver.save_screenshot(str(REPO / "docs" / "site-config-reference.png"))

        driver.get(f"{served_site}/index.html?q=lambda")
        results = wait_until(lambda: driver.find_elements("css selector", ".md-search-result__item"),
                             "search results for 'lambda'", driver=driver)
        titles = " ".join(r.get_attribute("textContent") for r in results)
        assert "λ" in titles or "lambda" in titles.lower(), titles
