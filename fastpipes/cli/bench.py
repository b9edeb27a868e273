"""``fastpipes bench FAMILY``: FP32 eager vs recipes, with a table, JSON, Markdown and a chart.

    fastpipes bench sam --size tiny --recipes sam_fp32_fast --json sam.json --plot sam.png
    fastpipes bench llama --recipes llama_woq_int8 --set quantize.group_size=64 --iters 3
    fastpipes bench toy --size tiny --max-time 60        # a seconds-long smoke run
"""
from __future__ import annotations

import argparse
import math
import shlex
import sys
from typing import Any

# Family options -> WorkloadSpec.options[key]: (flag, key, type, help). Kept here (not on the
# Workload classes) so building the parser imports no model library.
FAMILY_OPTIONS: dict[str, list[tuple[str, str, Any, str]]] = {
    "sam": [("--checkpoint", "checkpoint", str, "local SAM checkpoint (.pth) instead of random "
                                                "weights"),
            ("--image", "image", str, "image file to segment instead of a seeded random image")],
    "sdxl": [("--resolution", "resolution", int, "image side in pixels (latents are 1/8)"),
             ("--steps", "steps", int, "denoising steps per timed run")],
    "llama": [("--prompt-len", "prompt_len", int, "prompt tokens"),
              ("--new-tokens", "new_tokens", int, "tokens generated per timed run")],
    "toy": [],
}
FAMILY_HELP = {
    "sam": "Segment Anything: image encoder + prompt encoder + mask decoder",
    "sdxl": "Stable Diffusion XL: UNet steps, VAE decode, text encoders",
    "llama": "Llama (transformers generate): prefill + decode tokens",
    "toy": "a tiny seeded conv+MLP (smoke runs of the harness; no model library needed)",
}


def _positive_float(text: str) -> float:
    """A finite number > 0 (``nan`` would disable a limit, ``inf`` is no limit)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _int_at_least(low: int):
    """An argparse type: an integer >= `low`."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text}")
        return value

    parse.__name__ = f"integer >= {low}"  # how argparse names the type in its messages
    return parse


def _key_value(text: str) -> str:
    if "=" not in text or not text.split("=", 1)[0].strip():
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    return text


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ... (default cpu)")
    p.add_argument("--size", choices=("tiny", "small", "full"), default="full",
                   help="model size: full = the real architecture (default), tiny/small = "
                        "scaled-down shapes for quick checks")
    p.add_argument("--model", help="family model name (e.g. vit_b) or a local path")
    p.add_argument("--recipes", help="comma-separated built-in names, YAML paths or 'auto' "
                                     "(default: this family's built-in recipes this machine "
                                     "can run)")
    p.add_argument("--all", action="store_true", dest="run_all",
                   help="with no --recipes: also run recipes whose hardware requirements this "
                        "machine misses (marked in the table)")
    p.add_argument("--set", action="append", default=[], type=_key_value, metavar="KEY=VALUE",
                   dest="overrides", help="override applied to every recipe, e.g. "
                                          "compile.mode=max-autotune (repeatable)")
    p.add_argument("--option", action="append", default=[], type=_key_value, metavar="KEY=VALUE",
                   help="any family workload option (WorkloadSpec.options), repeatable")
    p.add_argument("--batch-size", type=_int_at_least(1), default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--iters", type=_int_at_least(1), default=5, help="timed runs (default 5)")
    p.add_argument("--warmup", type=_int_at_least(0), default=1,
                   help="warm-up runs after the first call (default 1)")
    p.add_argument("--threads", type=_int_at_least(1), help="torch threads in every worker "
                                                            "(default: torch's default, the "
                                                            "physical cores)")
    p.add_argument("--max-time", type=_positive_float, metavar="SECONDS",
                   help="wall-clock limit per configuration; a worker over it is killed and "
                        "reported as cut")
    p.add_argument("--no-warm-start", action="store_false", dest="warm_start",
                   help="skip the second start of each compiling recipe (which measures "
                        "compile time on the caches the first start left)")
    p.add_argument("--no-baseline", action="store_false", dest="baseline",
                   help="skip the FP32 eager baseline (for models whose FP32 form does not "
                        "fit in memory): no speedup or fidelity columns then")
    p.add_argument("--no-limits", action="store_false", dest="limits",
                   help="skip measuring the machine's GEMM and bandwidth limits")
    p.add_argument("--json", metavar="PATH", help="write the full result as JSON")
    p.add_argument("--markdown", metavar="PATH", help="write the table as Markdown")
    p.add_argument("--plot", metavar="PATH.png", help="write a PNG chart of speedup over FP32")
    p.add_argument("--quiet", action="store_true", help="no live progress")


def add_parser(subparsers) -> None:
    """Add ``bench`` with one sub-command per family (the cli/main.py contract)."""
    bench = subparsers.add_parser("bench", help="benchmark recipes against FP32 eager",
                                  description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    families = bench.add_subparsers(dest="family", metavar="FAMILY", required=True)
    for family, options in FAMILY_OPTIONS.items():
        p = families.add_parser(family, help=FAMILY_HELP[family])
        add_common(p)
        for flag, key, typ, text in options:
            p.add_argument(flag, dest=f"opt_{key}", type=typ, help=text)
    bench.set_defaults(func=run)


def _options(args: argparse.Namespace) -> dict[str, Any]:
    """The workload options of --option and the family flags; BenchmarkError if an --option
    value does not parse."""
    from fastpipes.errors import BenchmarkError
    from fastpipes.recipe.load import parse_overrides

    opts: dict[str, Any] = {}
    if args.option:  # typed like YAML (3 -> int, true -> bool), bounded like recipe overrides
        parsed, problems = parse_overrides(args.option)
        if problems:
            raise BenchmarkError("bad --option: " + "; ".join(
                f"{p.key}: {p.message}" if p.key else p.message for p in problems))
        opts.update(parsed)
    for _, key, _, _ in FAMILY_OPTIONS.get(args.family, []):
        value = getattr(args, f"opt_{key}", None)
        if value is not None:
            opts[key] = value
    return opts


def run(args: argparse.Namespace) -> int:
    """Run the benchmark, print the table, write the files asked for. Exit 1 if any failed."""
    from rich.console import Console

    from fastpipes.bench import WorkloadSpec, run_benchmark
    from fastpipes.bench.render import table
    from fastpipes.errors import FastpipesError
    from fastpipes.hardware import check_device

    problem = check_device(args.device)
    if problem:  # every worker would fail the same way: say it once, before anything runs
        print(f"fastpipes bench: --device {args.device}: {problem}", file=sys.stderr)
        return 2
    console = Console()
    if not console.is_terminal:  # logs and files: no folding of a wide table
        console = Console(width=220)
    try:
        options = _options(args)
    except FastpipesError as e:
        print(f"fastpipes bench: {e}", file=sys.stderr)
        return 2
    spec = WorkloadSpec(family=args.family, size=args.size, model=args.model,
                        device=args.device, batch_size=args.batch_size, seed=args.seed,
                        options=options)
    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()] if args.recipes else None
    if recipes:  # a typo in --recipes must not cost an FP32 baseline run first
        from fastpipes.bench.runner import plan

        bad = [p for p in plan(args.family, recipes, args.overrides, device=args.device)
               if p.failed]
        if bad:
            for p in bad:
                print(f"fastpipes bench: {p.name}: {p.reason}", file=sys.stderr)
            print("fastpipes bench: nothing was run; fix --recipes / --set "
                  "(see: fastpipes recipes list)", file=sys.stderr)
            return 2
    try:
        result = run_benchmark(spec, recipes, overrides=args.overrides, iters=args.iters,
                               warmup=args.warmup, threads=args.threads, max_time=args.max_time,
                               run_all=args.run_all, warm_start=args.warm_start,
                               limits=args.limits, baseline=args.baseline,
                               progress=not args.quiet,
                               command="fastpipes " + shlex.join(sys.argv[1:]))
    except FastpipesError as e:
        print(f"fastpipes bench: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # the running worker was already killed
        print("fastpipes bench: interrupted; no results written", file=sys.stderr)
        return 130
    console.print(table(result))
    for path, write in ((args.json, result.write_json), (args.markdown, result.write_markdown),
                        (args.plot, result.plot)):
        if path:
            console.print(f"wrote {write(path)}")
    return 1 if any(c.status in ("failed", "cut") for c in result.configs) else 0
