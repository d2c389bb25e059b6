"""`python -m imlca run|sweep|plan|report|predict|bench|benchmarks|data ...`. Bad input: one line on stderr, exit 2.

One module per command under imlca/cli/, each with `HELP`, `add_arguments(parser)` and `execute(args) -> int`;
they import their heavy dependencies inside `execute`, so parsing and config errors cost well under a second.
The Python twin of the commands (`imlca.run`, `imlca.sweep`, `imlca.load`) is cli/notebook.py.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from imlca.errors import UserError, without_passwords

COMMANDS = ("run", "sweep", "plan", "report", "predict", "bench", "benchmarks", "data")


def build_parser() -> argparse.ArgumentParser:
    from imlca import __version__

    parser = argparse.ArgumentParser(prog="imlca", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"imlca {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"imlca.cli.{name}")
        module.add_arguments(sub.add_parser(name, help=module.HELP))
    return parser


def subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(name, help, parser) of each subcommand of `parser`, [] for a leaf: what the docs' CLI reference walks."""
    for action in parser._actions:  # argparse keeps its subparsers on a private list only
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            return [(name, helps.get(name, ""), sub) for name, sub in action.choices.items()]
    return []


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return importlib.import_module(f"imlca.cli.{args.command}").execute(args)
    except UserError as err:
        print(f"error: {without_passwords(str(err))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
