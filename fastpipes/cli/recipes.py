"""`fastpipes recipes list | show NAME | validate FILE... | new NAME --from BASE`."""
from __future__ import annotations

import sys
from pathlib import Path

from fastpipes.errors import FastpipesError, RecipeError


def add_parser(sub) -> None:
    p = sub.add_parser("recipes", help="list, show, validate or start recipes")
    rs = p.add_subparsers(dest="recipes_command", metavar="ACTION", required=True)
    ls = rs.add_parser("list", help="built-in and FASTPIPES_RECIPE_PATH recipes")
    ls.add_argument("--family", help="only this family (sam, sdxl, llama, any)")
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
    from rich.table import Table

    from fastpipes.hardware import detect, ipex_unavailable, unmet_requirements
    from fastpipes.recipe import available, load_recipe

    info = detect()
    no_ipex = ""
    t = Table(title="fastpipes recipes", title_justify="left")
    for col in ("name", "family", "this machine", "description"):
        t.add_column(col)
    for name, path in sorted(available().items()):
        try:
            r = load_recipe(path)
        except FastpipesError as e:
            t.add_row(name, "?", "[red]invalid[/]", str(e).splitlines()[0])
            continue
        if args.family and r.family.value != args.family:
            continue
        unmet = unmet_requirements(r.requires, info)
        fit = "[green]ok[/]" if not unmet else "[yellow]runs slowly here[/]"
        if r.requires.ipex and ipex_unavailable():
            fit, no_ipex = "[red]unavailable: needs IPEX[/]", ipex_unavailable()
        t.add_row(name, r.family.value, fit, r.description.splitlines()[0] if r.description else "")
    Console().print(t)
    if not info.bf16_native:
        print(f"note: {info.low_precision_note('bf16')}")
    if no_ipex:
        print(f"note: recipes that need IPEX cannot run here: {no_ipex}")
    return 0


def run_show(args) -> int:
    from fastpipes.recipe import load_recipe

    r = load_recipe(args.name, args.overrides)
    print(f"# {r.name}: resolved from {' <- '.join(r.chain)}")
    print(r.to_yaml(), end="")
    return 0


def run_validate(args) -> int:
    from fastpipes.recipe import load_recipe

    bad = 0
    for f in args.files:
        try:
            r = load_recipe(f, args.overrides)
        except RecipeError as e:
            bad += 1
            print(f"{f}: INVALID\n{e}", file=sys.stderr)
            continue
        passes = ", ".join(n for n in r.sections) or "no passes"
        print(f"{f}: ok (recipe {r.name!r}, family {r.family.value}, passes: {passes})")
    return 1 if bad else 0


STARTER = """\
# {name}: a fastpipes recipe that starts from {base!r}.
# Check it:   fastpipes recipes validate {file}
# Resolved:   fastpipes recipes show {file}
# Use it:     fastpipes.accelerate(pipe, recipe="{file}")
#             fastpipes bench {family} --recipes {file}
name: {name}
description: "{base} with my changes"
base: {base}
# Every key below overrides the base; delete what you do not change.
# Set a whole section to null to drop a pass the base applies, e.g.
#   compile: null
# The base resolves to (for reference; uncomment and edit to change):
{body}
"""


def run_new(args) -> int:
    from fastpipes.recipe import load_recipe

    base = load_recipe(args.base)
    out = Path(args.output or f"{args.name}.yaml")
    if out.exists() and not args.force:
        raise FastpipesError(f"{out} exists; pass --force to overwrite it")
    body = {k: v for k, v in base.raw.items() if k not in ("name", "description", "base")}
    from omegaconf import OmegaConf

    text = OmegaConf.to_yaml(OmegaConf.create(body)) if body else ""
    commented = "\n".join(f"# {line}" for line in text.splitlines())
    # `base:` is resolved relative to the file, so a built-in name is written as is
    out.write_text(STARTER.format(name=args.name, base=args.base, file=out,
                                  family=base.family.value if base.family.value != "any" else "sam",
                                  body=commented))
    load_recipe(out)  # the starter must validate
    print(f"wrote {out} (inherits {args.base}); validate with: fastpipes recipes validate {out}")
    return 0
