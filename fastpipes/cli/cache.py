"""``fastpipes cache``: where the caches live, how big they are, and clearing them.

    fastpipes cache info              # per part: path, files, size (of fastpipes' own)
    fastpipes cache clear             # everything: the next start compiles and searches anew
    fastpipes cache clear inductor    # only compiled artifacts

Only what fastpipes created is removed: FASTPIPES_CACHE_DIR may name a directory that holds
your own files too (a models/ or auto/ of yours is kept). Whatever is kept is named, with
why, and the command then exits 1. See docs/caches.md.
"""
from __future__ import annotations

import argparse
import json
import sys

from fastpipes.cache import PARTS, cache_dir
from fastpipes.cache_clear import clear, usage
from fastpipes.cli import SUBCOMMANDS
from fastpipes.errors import CacheError


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("cache", help=SUBCOMMANDS["cache"],
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    info = sub.add_parser("info", help="where each part lives and its size")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    clear = sub.add_parser("clear", help="delete parts of the cache (default: all)")
    clear.add_argument("parts", nargs="*", metavar="PART",
                       help=f"any of: {', '.join(PARTS)} (default: all)")
    p.set_defaults(func=run)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def run(args: argparse.Namespace) -> int:
    if args.action == "info":
        data = usage()
        if args.json:
            print(json.dumps(data, indent=2))
            return 0
        print(f"fastpipes cache: {cache_dir()}  (set FASTPIPES_CACHE_DIR to move it)")
        for part, d in data.items():
            print(f"  {part:<10} {d['files']:>6} files {_size(d['bytes']):>10}  {d['what']}")
            if d["others"]:  # FASTPIPES_CACHE_DIR may hold your files too: not counted
                print(f"  {'':<10} and {d['others']} entr{'y' if d['others'] == 1 else 'ies'} "
                      f"fastpipes did not create in {d['path']} (not counted, never cleared)")
        return 0
    unknown = [p for p in args.parts if p not in PARTS]
    if unknown:
        print(f"fastpipes cache clear: unknown part(s) {', '.join(unknown)}; allowed: "
              f"{', '.join(PARTS)}", file=sys.stderr)
        return 2
    try:
        removed = clear(args.parts or None)
    except CacheError as e:
        print(f"fastpipes cache clear: {e}", file=sys.stderr)
        return 1
    print("removed: " + (", ".join(map(str, removed)) if removed else "nothing (already empty)"))
    return 0
