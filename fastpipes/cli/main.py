"""`fastpipes` command line: one module per subcommand.

Each subcommand module exposes ``add_parser(subparsers)`` (which sets ``func=run``) and
``run(args) -> int``; its help line is in :data:`fastpipes.cli.SUBCOMMANDS`.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

from fastpipes._version import __version__
from fastpipes.cli import SUBCOMMANDS
from fastpipes.errors import FastpipesError


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``fastpipes`` parser. With `command` (a sub-command's name, or "" for none) only
    that sub-command's module is imported and its parser built; the others are their name and
    help line. Building ``bench`` or ``run`` imports torch and every family (about 1.5 s),
    which ``fastpipes --help``, a mistyped command or ``fastpipes cache info`` do not need
    (tests/test_cli_startup.py)."""
    parser = argparse.ArgumentParser(
        prog="fastpipes",
        description="Accelerate SAM, SDXL and Llama pipelines with YAML recipes, "
                    "measured against FP32.")
    parser.add_argument("--version", action="version", version=f"fastpipes {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_line in SUBCOMMANDS.items():
        if importlib.util.find_spec(f"fastpipes.cli.{name}") is None:  # left out of a build
            continue
        if command is None or command == name:
            importlib.import_module(f"fastpipes.cli.{name}").add_parser(sub)
        else:
            sub.add_parser(name, help=help_line)
    return parser


def _command(argv: list[str]) -> str:
    """The sub-command `argv` names: its first word that is not an option (``fastpipes``
    itself takes only --help and --version, neither with a value); "" for none."""
    return next((a for a in argv if not a.startswith("-")), "")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(_command(argv))
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except FastpipesError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
