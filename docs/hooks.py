"""MkDocs hooks for the documentation site (mkdocs.yml `hooks:`): the reference pages written at build time from
the code itself, so they cannot go stale, and equations turned into MathML (rendered by the browser, offline).

- reference/config.md: every key of the experiment and sweep schemas (`imlca.config.reference.schema_rows`).
- reference/cli.md: every command and flag of the argparse parsers (`imlca.cli.build_parser`).
"""
from __future__ import annotations

import argparse
import html
import re
import sys
from pathlib import Path

from mkdocs.structure.files import File

sys.path.insert(0, str(Path(__file__).resolve().parent / "platform"))

from imlca.cli import build_parser, subcommands  # noqa: E402
from imlca.config import ExperimentConfig  # noqa: E402
from imlca.config.reference import schema_rows, section_docs  # noqa: E402
from imlca.config.sweep import SweepConfig  # noqa: E402

CONFIG_INTRO = """# Config keys

Every key of an experiment config and of a sweep file, generated from the schema (`platform/imlca/config/`) when
the site is built. A YAML file holds only what differs from these defaults; `--set key=value` overrides any key of
an experiment (`imlca run CONFIG --set align.lam=0.3`), a sweep's `set:` / `space:` name the same dotted keys.
Allowed values are the checks the loader applies: anything else stops with one line naming the key and the fix.
See [Configuration](../concepts/configuration.md) for how files combine.
"""


def on_files(files, config):
    for uri, text in (("reference/config.md", config_page()), ("reference/cli.md", cli_page())):
        files.append(File.generated(config, uri, content=text))
    return files


def _cell(value) -> str:
    text = "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    text = html.escape(text, quote=False).replace("{", "&#123;").replace("}", "&#125;")  # no attr_list syntax
    return text.replace("|", "\\|").replace("\n", " ")


def _key_table(rows) -> list[str]:
    lines = ["| key | type | default | allowed | meaning |", "|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| `{row.key}` | `{_cell(row.type)}` | `{_cell(row.default)}` | {_cell(row.allowed)} "
                     f"| {_cell(row.doc)} |")
    return lines


def config_page() -> str:
    out = [CONFIG_INTRO, "## Experiment config", ""]
    rows = schema_rows(ExperimentConfig)
    out += _key_table([r for r in rows if "." not in r.key]) + [""]
    for section, doc in section_docs(ExperimentConfig).items():
        out += [f"### `{section}`", "", doc[:1].upper() + doc[1:] + ".", ""]
        out += _key_table([r for r in rows if r.key.startswith(section + ".")]) + [""]
    out += ["## Sweep file", "", "The keys of a sweep YAML (`imlca sweep SWEEP.yaml`); `scheduler` is a section.", ""]
    out += _key_table(schema_rows(SweepConfig)) + [""]
    return "\n".join(out)


def _flag_rows(parser: argparse.ArgumentParser) -> list[str]:
    lines = ["| argument | default | meaning |", "|---|---|---|"]
    for action in parser._actions:  # argparse keeps no public list of a parser's arguments
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        name = ", ".join(action.option_strings) or action.dest
        if action.option_strings and action.nargs != 0:
            name += f" {action.metavar or action.dest.upper()}"
        default = "" if action.default in (None, False, [], argparse.SUPPRESS) else f"`{_cell(action.default)}`"
        meaning = _cell(action.help or "")
        if action.choices:
            meaning += f" (one of {', '.join(map(str, action.choices))})"
        lines.append(f"| `{name}` | {default} | {meaning} |")
    return lines


def cli_page() -> str:
    parser = build_parser()
    out = ["# Command line", "",
           "Every command and flag of `imlca` (also `python -m imlca`), generated from its argument parsers when "
           "the site is built. Bad input stops with one line, `error: ...`, and exit code 2.", "",
           "```text", parser.format_usage().strip(), "```", ""]
    for name, text, sub in subcommands(parser):
        out += _command(f"imlca {name}", text, sub, "##")
    return "\n".join(out)


def _command(title: str, text: str, parser: argparse.ArgumentParser, level: str) -> list[str]:
    out = [f"{level} `{title}`", ""] + ([text[:1].upper() + text[1:] + ".", ""] if text else [])
    out += ["```text", parser.format_usage().strip(), "```", ""]
    rows = _flag_rows(parser)
    if len(rows) > 2:  # more than the table's header
        out += rows + [""]
    for name, sub_text, sub in subcommands(parser):
        out += _command(f"{title} {name}", sub_text, sub, level + "#")
    return out


MATH = re.compile(r'<(span|div) class="arithmatex">\\[(\[](.*?)\\[)\]]</\1>', re.S)


def on_page_content(content: str, page, config, files) -> str:
    """pymdownx.arithmatex (generic) leaves \\(...\\) and \\[...\\] in spans and divs: MathML instead."""
    from latex2mathml.converter import convert

    def mathml(match: re.Match) -> str:
        display = "block" if match.group(1) == "div" else "inline"
        return convert(html.unescape(match.group(2)).strip(), display=display)

    return MATH.sub(mathml, content)
