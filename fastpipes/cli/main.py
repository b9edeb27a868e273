"""`fastpipes` command line: one module per subcommand.

Each subcommand module exposes ``add_parser(subparsers)`` (which sets ``func=run``) and
``run(args) -> int``.
"""
from __future__ import annotations

import argparse
import importlib
import sys

import fastpipes
from fastpipes.errors import FastpipesError

SUBCOMMANDS = ("info", "recipes", "bench", "cache", "run", "export")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastpipes",
        description="Accelerate SAM, SDXL and Llama pipelines with YAML recipes, "
                    "measured against FP32.")
    parser.add_argument("--version", action="version", version=f"fastpipes {fastpipes.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"fastpipes.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"fastpipes.cli.{name}":
                raise
            continue
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
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
