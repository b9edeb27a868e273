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

from fastpipes.bench import WorkloadSpec, run_benchmark
from fastpipes.bench.outputs import check_outputs, write_outputs
from fastpipes.bench.plan import plan
from fastpipes.bench.render import extras_table, profiles, table
from fastpipes.bounds import BOUNDS, check_int
from fastpipes.cli import SUBCOMMANDS
from fastpipes.errors import BenchmarkError, FastpipesError, InputError
from fastpipes.family import resolve, with_hook
from fastpipes.hardware import check_device
from fastpipes.recipe.ablate import ablations
from fastpipes.recipe.load import load_recipe, parse_overrides


def _boolean(text: str) -> bool:
    if text.lower() in ("true", "yes", "1"):
        return True
    if text.lower() in ("false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _positive_float(text: str) -> float:
    """A finite number > 0 (``nan`` would disable a limit, ``inf`` is no limit)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _bounded(name: str):
    """An argparse type: a whole number within ``BOUNDS[name]`` (fastpipes/bounds.py), the
    one table every size and count a user gives is checked against."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = text  # check_int names it: "... must be a whole number from 1 to ..."
        try:
            return check_int(name, value)
        except InputError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse.__name__ = BOUNDS[name].allowed()  # how argparse names the type in its messages
    return parse


def key_value(text: str) -> str:
    """argparse type of --set / --option: KEY=VALUE with a non-empty key."""
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
                                     "can run, made for the --workload measured)")
    p.add_argument("--ablate", metavar="RECIPE",
                   help="also run RECIPE with each of its passes dropped in turn, and each pass "
                        "alone: which pass earns its keep on this machine")
    p.add_argument("--all", action="store_true", dest="run_all",
                   help="with no --recipes: also run recipes whose hardware requirements this "
                        "machine misses (marked in the table) and those made for another "
                        "--workload")
    p.add_argument("--set", action="append", default=[], type=key_value, metavar="KEY=VALUE",
                   dest="overrides", help="override applied to every recipe, e.g. "
                                          "compile.mode=max-autotune (repeatable)")
    p.add_argument("--option", action="append", default=[], type=key_value, metavar="KEY=VALUE",
                   help="any family workload option (WorkloadSpec.options), repeatable")
    p.add_argument("--batch-size", type=_bounded("batch_size"), default=1)
    p.add_argument("--seed", type=_bounded("seed"), default=0)
    p.add_argument("--iters", type=_bounded("iters"), default=5, help="timed runs (default 5)")
    p.add_argument("--warmup", type=_bounded("warmup"), default=1,
                   help="warm-up runs after the first call (default 1)")
    p.add_argument("--threads", type=_bounded("threads"), help="torch threads in every worker "
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
    p.add_argument("--profile", action="store_true",
                   help="profile one more call per row: where its time goes, by kind of work, "
                        "against the ceiling of its precision")
    p.add_argument("--json", metavar="PATH", help="write the full result as JSON")
    p.add_argument("--markdown", metavar="PATH", help="write the table as Markdown")
    p.add_argument("--plot", metavar="PATH.png", help="write a PNG chart of speedup over FP32")
    p.add_argument("--quiet", action="store_true", help="no live progress")


def add_parser(subparsers) -> None:
    """Add ``bench`` with one sub-command per family (the cli/main.py contract)."""
    bench = subparsers.add_parser("bench", help=SUBCOMMANDS["bench"],
                                  description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    families = bench.add_subparsers(dest="family", metavar="FAMILY", required=True)
    for name, family in with_hook("bench").items():
        workload = resolve(family, "bench")
        p = families.add_parser(name, help=family.help)
        add_common(p)
        # each family option (Workload.OPTIONS) is also a flag: --prompt-len 64
        for key, (typ, text) in workload.OPTIONS.items():
            p.add_argument(f"--{key.replace('_', '-')}", dest=f"opt_{key}",
                           type=_boolean if typ is bool else typ, help=text)
    bench.set_defaults(func=run)


def _options(args: argparse.Namespace) -> dict[str, Any]:
    """The workload options of --option and the family flags; BenchmarkError if an --option
    value does not parse."""
    opts: dict[str, Any] = {}
    if args.option:  # typed like YAML (3 -> int, true -> bool), bounded like recipe overrides
        parsed, problems = parse_overrides(args.option)
        if problems:
            raise BenchmarkError("bad --option: " + "; ".join(
                f"{p.key}: {p.message}" if p.key else p.message for p in problems))
        opts.update(parsed)
    for key in resolve(with_hook("bench")[args.family], "bench").OPTIONS:
        value = getattr(args, f"opt_{key}", None)
        if value is not None:
            opts[key] = value
    return opts


def _empty_arguments(args: argparse.Namespace) -> list[str]:
    """A problem for each option given an empty value (``--recipes ''``, ``--recipes ,,,``,
    ``--model ''``) or an empty item of --recipes (``a,,b``, ``a,``): leaving the option out
    picks the default; an empty value is a mistake (an unset shell variable), and running the
    default set, or the other items, instead would hide it. Output paths are checked with the
    others (bench/outputs.py)."""
    out = []
    for flag, value, allowed in (
            ("--recipes", args.recipes, "comma-separated recipe names, YAML paths or 'auto' "
                                        "(see: fastpipes recipes list); leave it out for this "
                                        "family's built-in recipes"),
            ("--ablate", args.ablate, "a recipe name or YAML path"),
            ("--model", args.model, "a model name or a local path; leave it out for the "
                                    "family's default"),
            ("--device", args.device, "cpu, cuda, cuda:1 ...")):
        if value is not None and not value.replace(",", "").strip():
            out.append(f"{flag} {value!r}: names nothing; allowed: {allowed}")
        elif flag == "--recipes" and value is not None:  # 'a,,b' is a typo, not 'a,b'
            out += [f"--recipes {value!r}: item {i} of {value.count(',') + 1} is empty; "
                    f"allowed: {allowed}"
                    for i, item in enumerate(value.split(","), 1) if not item.strip()]
    return out


def _problems(args: argparse.Namespace, outputs: dict[str, str | None]) -> list[str]:
    """What is wrong with the arguments themselves, each as one line; every output path is
    tried before hours of measurements, not after."""
    problems = _empty_arguments(args) + check_outputs(outputs) + [
        f"--set: {p}" for p in parse_overrides(args.overrides)[1]]  # e.g. two of one key
    if problems:
        return problems + ["nothing was run"]
    problem = check_device(args.device)
    # every worker would fail the same way: say it once, before anything runs
    return [f"--device {args.device}: {problem}"] if problem else []


def _recipes(args: argparse.Namespace) -> tuple[list[str] | None, list[str]]:
    """The recipes of --recipes and --ablate (None: the family's built-in ones), each loaded
    first, and the problems found (a typo must not cost an FP32 baseline run first)."""
    recipes = [r.strip() for r in args.recipes.split(",")] if args.recipes else None
    if args.ablate:
        try:
            base = load_recipe(args.ablate, args.overrides)
        except FastpipesError as e:
            return None, [f"--ablate: {e}"]
        recipes = (recipes or []) + [args.ablate] + ablations(base)
    bad = [p for p in plan(args.family, recipes, args.overrides, device=args.device)
           if p.failed] if recipes else []
    return recipes, [f"{p.name}: {p.reason}" for p in bad] + (
        ["nothing was run; fix --recipes / --set (see: fastpipes recipes list)"] if bad else [])


def _say(lines: list[str]) -> None:
    for line in lines:
        print(f"fastpipes bench: {line}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark, print the table, write the files asked for. Exit 1 if any failed."""
    from rich.console import Console  # not imported by `fastpipes --help`: ~16 ms spared

    outputs = {"json": args.json, "markdown": args.markdown, "plot": args.plot}
    problems = _problems(args, outputs)  # an empty value must not quietly mean "the default"
    if problems:
        _say(problems)
        return 2
    try:
        spec = WorkloadSpec(family=args.family, size=args.size, model=args.model,
                            device=args.device, batch_size=args.batch_size, seed=args.seed,
                            options=_options(args))
        recipes, problems = _recipes(args)
        if problems:
            _say(problems)
            return 2
        result = run_benchmark(spec, recipes, overrides=args.overrides, iters=args.iters,
                               warmup=args.warmup, threads=args.threads, max_time=args.max_time,
                               run_all=args.run_all, warm_start=args.warm_start,
                               limits=args.limits, baseline=args.baseline,
                               profile=args.profile, progress=not args.quiet,
                               command="fastpipes " + shlex.join(sys.argv[1:]))
    except FastpipesError as e:
        _say([str(e)])
        return 2
    console = Console()
    if not console.is_terminal:  # logs and files: no folding of a wide table
        console = Console(width=220)
    console.print(table(result))
    if (extras := extras_table(result)) is not None:
        console.print(extras)
    if args.profile:
        console.print(profiles(result), markup=False, highlight=False)
    wrote, failed = write_outputs(result, outputs)
    for line in wrote:
        console.print(line)
    _say(failed)
    if result.interrupted:
        _say(["interrupted; the rows measured so far were kept"
              + (" and written (marked interrupted)" if wrote else "")])
        return 130
    return 1 if failed or any(c.status in ("failed", "cut") for c in result.configs) else 0
