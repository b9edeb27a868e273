"""``fastpipes run FAMILY``: run an accelerated pipeline over your inputs (resumable).

    fastpipes run sam --images photos/ --points 320,240 --checkpoint sam_vit_b_01ec64.pth --out masks/
    fastpipes run sam --images 'shots/**/*.jpg' --everything --model vit_h --checkpoint sam_vit_h.pth --out all/
    fastpipes run sdxl --prompts prompts.txt --model ~/models/sdxl-base --steps 30 --out images/
    fastpipes run llama --prompts prompts.jsonl --model ~/models/Llama-3.2-1B --out completions/
    fastpipes run sam ... --engine ray --actors 2          # the same job on Ray Data

Rerun the same command to resume: finished inputs are skipped. Exit status: 0 all done,
1 some inputs failed (see OUT/errors.jsonl), 130 interrupted (Ctrl-C), 143 terminated
(SIGTERM); both write the summary. Every size and number is checked first (docs/run.md).
"""
from __future__ import annotations

import argparse
import dataclasses

from fastpipes.cli import SUBCOMMANDS
from fastpipes.cli.bench import key_value
from fastpipes.errors import InputError
from fastpipes.family import resolve, with_hook
from fastpipes.run.base import Flag


def _arg(parse):
    """An argparse type from a parser that raises InputError (keeps its message)."""
    def convert(text: str):
        try:
            return parse(text)
        except InputError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = parse.__name__
    return convert


def _add(p: argparse.ArgumentParser, flag: Flag) -> None:
    """`flag` (a family's declaration, ``Job.FLAGS``) as an argparse argument."""
    kw = {k: v for k, v in dataclasses.asdict(flag).items() if k != "name" and v is not None}
    if flag.type is not None:
        kw["type"] = _arg(flag.type)
    p.add_argument(flag.name, **kw)


def _common(p: argparse.ArgumentParser, model_help: str) -> None:
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output directory; rerunning with the same DIR resumes")
    p.add_argument("--recipe", default="auto",
                   help="a built-in recipe name, a YAML path, none (FP32 eager), or auto "
                        "(default: measure the candidates on this machine and keep the fastest "
                        "faithful one)")
    p.add_argument("--set", action="append", default=[], type=key_value, metavar="KEY=VALUE",
                   dest="overrides", help="recipe override, e.g. compile.enabled=false "
                                          "(repeatable)")
    p.add_argument("--model", help=model_help)
    p.add_argument("--random-weights", action="store_true",
                   help="seeded random weights at --model's shape, to try the job out "
                        "(outputs are noise)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ... (default cpu)")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: this process; ray: Ray Data actors (pip install "
                        "'fastpipes[ray]')")
    p.add_argument("--actors", type=int, default=1, help="Ray actors (default 1)")
    p.add_argument("--cpus-per-actor", type=float,
                   help="CPUs per Ray actor (default: the cluster's CPUs shared out)")
    p.add_argument("--address", help="join a Ray cluster: auto, HOST:PORT (e.g. HEAD_IP:6379) "
                                     "or ray://HOST:10001 (default: start a local Ray; see "
                                     "docs/ray.md for token setup)")
    p.add_argument("--quiet", action="store_true", help="no progress display")


def add_parser(subparsers) -> None:
    """Add ``run`` with one sub-command per family with a run job (the cli/main.py contract):
    the family's own flags (``Job.FLAGS``) and then the common ones."""
    run = subparsers.add_parser("run", help=SUBCOMMANDS["run"],
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    fams = run.add_subparsers(dest="family", metavar="FAMILY", required=True)
    for name, family in with_hook("run").items():
        job = resolve(family, "run")
        p = fams.add_parser(name, help=family.help, description=job.SUMMARY or None)
        for flag in job.FLAGS:
            _add(p, flag)
        _common(p, job.MODEL_HELP)
    run.set_defaults(func=run_command)


def run_command(args: argparse.Namespace) -> int:
    """Run the job, print its summary; exit 0 / 1 (some inputs failed) / 130 (interrupted)."""
    job = resolve(with_hook("run")[args.family], "run")
    common = dict(out=args.out, model=args.model, random_weights=args.random_weights,
                  recipe=args.recipe, overrides=args.overrides, seed=args.seed,
                  device=args.device, engine=args.engine, actors=args.actors,
                  cpus_per_actor=args.cpus_per_actor, address=args.address,
                  progress=not args.quiet)
    summary = job.run_cli({f.key: getattr(args, f.key) for f in job.FLAGS}, common)
    print(summary)
    return summary.exit_code
