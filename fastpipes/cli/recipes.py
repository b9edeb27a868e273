"""`fastpipes recipes list | show NAME | validate FILE... | new NAME --from BASE`."""
from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from pathlib import Path

from fastpipes.cli import SUBCOMMANDS
from fastpipes.errors import FastpipesError, RecipeError
from fastpipes.files import atomic_file
from fastpipes.hardware import detect, ipex_unavailable, unmet_requirements, wrong_device
from fastpipes.recipe import available, load_recipe
from fastpipes.recipe.load import is_path_spec
from fastpipes.recipe.schema import FAMILY_COMPONENTS, GENERIC


def add_parser(sub) -> None:
    p = sub.add_parser("recipes", help=SUBCOMMANDS["recipes"])
    rs = p.add_subparsers(dest="recipes_command", metavar="ACTION", required=True)
    ls = rs.add_parser("list", help="built-in and FASTPIPES_RECIPE_PATH recipes")
    families = FAMILY_COMPONENTS.names()  # an unknown family is an error, not an empty table
    ls.add_argument("--family", choices=families, metavar="FAMILY",
                    help=f"only this family: {', '.join(families)}")
    ls.set_defaults(func=run_list)
    show = rs.add_parser("show", help="the fully resolved recipe (after inheritance and overrides)")
    show.add_argument("name", help="recipe name or YAML path")
    show.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                      help="override a field, e.g. --set compile.mode=max-autotune (repeatable)")
    show.set_defaults(func=run_show)
    val = rs.add_parser("validate", help="check recipe files; exit 1 listing every problem")
    val.add_argument("files", nargs="+", help="recipe YAML files or names")
    val.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    val.set_defaults(func=run_validate)
    new = rs.add_parser("new", help="write a commented starter recipe that inherits BASE")
    new.add_argument("name", help="new recipe name (writes NAME.yaml unless --output)")
    new.add_argument("--from", dest="base", required=True, help="built-in recipe to inherit")
    new.add_argument("--output", "-o", help="file to write (default: ./NAME.yaml)")
    new.add_argument("--force", action="store_true", help="overwrite an existing file")
    new.set_defaults(func=run_new)


def run_list(args) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    info = detect()
    no_ipex = ""
    t = Table(title=f"fastpipes recipes (this machine: tier {info.tier})", title_justify="left")
    # one line per recipe at any width: the description is cut to what is left, with an
    # ellipsis (recipes show NAME has all of it); the other columns never wrap
    console = Console()
    names = sorted(available().items())
    # 'here' fits its longest word ('needs CUDA'): cut, it read 'needs C…'
    widths = {"name": max([4] + [len(n) for n, _ in names]), "family": 7, "class": 5, "here": 10}
    for col, width in widths.items():
        t.add_column(col, no_wrap=True, width=width)
    room = max(12, console.width - sum(widths.values()) - 3 * (len(widths) + 1) - 1)
    t.add_column("description", no_wrap=True, width=room)

    def cut(text: str) -> str:
        return escape(text if len(text) <= room else text[:room - 1] + "…")

    for name, path in names:
        try:
            r = load_recipe(path)
        except FastpipesError as e:  # one broken file must not hide the others
            t.add_row(name, "?", "?", "[red]invalid[/]", cut(_first_problem(e)))
            continue
        if args.family and r.family != args.family:
            continue
        device = "cuda" if info.cuda_devices else "cpu"
        unmet = unmet_requirements(r.requires, info, device)
        fit = "[green]ok[/]" if not unmet else "[yellow]slow[/]"
        if wrong_device(r.requires, device, info):
            fit = "[red]needs CUDA[/]" if device == "cpu" else "[red]CPU only[/]"
        if r.requires.ipex and ipex_unavailable():
            fit, no_ipex = "[red]no IPEX[/]", ipex_unavailable()
        t.add_row(name, r.family, r.precision_class.value, fit,
                  cut(" ".join(r.description.split())))
    console.print(t)  # and the notes wrapped at the terminal's width, between words
    say = lambda text: console.print(escape(text), highlight=False)  # noqa: E731
    say("here: ok; slow = runs, but this machine misses a requirement; no IPEX, needs CUDA, "
        "CPU only = cannot run. The whole description: fastpipes recipes show NAME")
    say("class: the numerics a recipe computes in, derived from its passes (exact, fp16, bf16, "
        "int8, int4); each is judged by its own fidelity bars (docs/fidelity.md)")
    if not info.bf16_native:
        say(f"note: {info.low_precision_note('bf16')}")
    if no_ipex:
        say(f"note: recipes that need IPEX cannot run here: {no_ipex}")
    return 0


def _first_problem(e: FastpipesError) -> str:
    """What is wrong with a recipe, in one line (the first problem, and how many more)."""
    problems = getattr(e, "problems", [])
    if not problems:
        return str(e).splitlines()[0]
    p = problems[0]
    text = f"{p.key}: {p.message}" if p.key else p.message
    return text + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else "")


def run_show(args) -> int:
    r = load_recipe(args.name, args.overrides)
    print(f"# {r.name}: resolved from {' <- '.join(r.chain)}")
    print(r.to_yaml(), end="")
    return 0


def run_validate(args) -> int:
    bad = 0
    for f in args.files:
        try:
            r = load_recipe(f, args.overrides)
        except RecipeError as e:
            bad += 1
            print(f"{f}: INVALID\n{e}", file=sys.stderr)
            continue
        passes = ", ".join(n for n in r.sections) or "no passes"
        print(f"{f}: ok (recipe {r.name!r}, family {r.family}, passes: {passes})")
    return 1 if bad else 0


STARTER = """\
# {name}: a fastpipes recipe that starts from {base_text}.
# Check it:   fastpipes recipes validate {file}
# Resolved:   fastpipes recipes show {file}
# Use it:     fastpipes.accelerate(pipe, recipe="{file}")
#             fastpipes bench {family} --recipes {file}
name: {name_yaml}
description: {description}
base: {base_yaml}
# Every key below overrides the base; delete what you do not change.
# Set a whole section to null to drop a pass the base applies, e.g.
#   compile: null
# The base resolves to (for reference; uncomment and edit to change):
{body}
"""


def _scalar(text: str) -> str:
    """`text` as a YAML scalar: plain when that reads back the same, else double-quoted."""
    import yaml

    try:
        plain = "\n" not in text and yaml.safe_load(text) == text
    except yaml.YAMLError:
        plain = False
    return text if plain else json.dumps(text)


def _base_for(base: str, out: Path) -> str:
    """`base` as the new file must write it. ``base:`` is resolved relative to the file
    naming it, so a path (relative to the working directory here) is rewritten relative to
    `out`'s directory, or absolute where there is no relative path; a name stays a name."""
    if not is_path_spec(base):
        return base
    path = Path(base).expanduser().resolve()
    try:
        return os.path.relpath(path, out.parent.resolve())
    except ValueError:  # e.g. another drive
        return str(path)


def run_new(args) -> int:
    from omegaconf import OmegaConf

    base = load_recipe(args.base)
    out = Path(args.output or f"{args.name}.yaml")
    if out.is_dir():
        raise FastpipesError(f"cannot write {out}: it is a directory; give a file name, e.g. "
                             f"-o {out / (args.name + '.yaml')}")
    if out.exists() and not args.force:
        raise FastpipesError(f"{out} exists; pass --force to overwrite it")
    if not out.parent.is_dir():
        raise FastpipesError(f"cannot write {out}: directory {out.parent} does not exist; "
                             "create it first or pick another --output")
    body = {k: v for k, v in base.raw.items() if k not in ("name", "description", "base")}
    text = OmegaConf.to_yaml(OmegaConf.create(body)) if body else ""
    base_ref = _base_for(args.base, out)
    starter = STARTER.format(
        name=args.name, name_yaml=_scalar(args.name), base_text=repr(args.base), file=out,
        description=json.dumps(f"{args.base} with my changes"), base_yaml=_scalar(base_ref),
        family=base.family if base.family != GENERIC else "sam",
        body="\n".join(f"# {line}" for line in text.splitlines()))
    # written next to `out` (so a relative base resolves as it will there), validated, then
    # moved into place: a starter that does not validate is never left behind
    def write_checked(tmp: Path) -> None:
        tmp.write_text(starter, encoding="utf-8")
        try:
            load_recipe(str(tmp))
        except RecipeError as e:  # name the file the user asked for, not the temporary one
            raise RecipeError([replace(p, file=str(out)) if Path(p.file) == tmp else p
                               for p in e.problems], recipe=e.recipe) from None

    try:
        atomic_file(out, write_checked, suffix=".yaml")
    except OSError as e:
        raise FastpipesError(f"cannot write {out}: {e.strerror}") from None
    print(f"wrote {out} (inherits {base_ref}); validate with: fastpipes recipes validate {out}")
    return 0
