"""apply_recipe(): preflight -> snapshot -> passes in order -> Report, all-or-nothing.

The preflight (fastpipes.passes.preflight) finds everything knowable wrong before the
pipeline is touched. Then everything the passes may change is snapshotted; if any pass
fails, or the user interrupts (Ctrl-C), the snapshot is restored before the error
propagates, so the pipeline is exactly as it was.
"""
from __future__ import annotations

from typing import Any

from fastpipes.errors import FastpipesError, PassError
from fastpipes.hardware import detect
from fastpipes.passes.base import PASSES, PassContext, SkipPass
from fastpipes.passes.order import ordered
from fastpipes.passes.preflight import check, mark_numerics
from fastpipes.families import find_adapter
from fastpipes.pipelines.base import Adapter
from fastpipes.recipe.schema import PrecisionClass, Recipe
from fastpipes.report import PassStatus, Report
from fastpipes.snapshot import Snapshot


def apply_recipe(pipe: Any, rec: Recipe, strict: bool = False, adapter: Adapter | None = None,
                 verbose: bool = True) -> tuple[Report, Snapshot]:
    """Apply a loaded recipe to `pipe` in place; return the Report and the Snapshot that
    undoes it (recipe="auto" uses it to try candidates). `verbose`: passes whose work comes
    later (a compile at the first call) say on stderr what they do while it takes long."""
    adapter = adapter or find_adapter(pipe)
    hw = detect()
    found = check(rec, adapter, hw, strict)
    found.raise_if_any()
    report = Report(recipe=rec.name, family=adapter.family, adapter=adapter.name,
                    components=list(adapter.components()), warnings=list(found.warnings))

    snapshot = Snapshot(adapter.components().values(), adapter.state_objects())
    ctx = PassContext(pipe=pipe, adapter=adapter, hardware=hw, recipe=rec, report=report,
                      strict=strict, snapshot=snapshot, verbose=verbose)
    current = ""
    try:
        for name in ordered(rec):
            current = name
            section = rec.sections[name]
            entry = report.record(name)
            if not section.enabled:
                entry.status, entry.reason = PassStatus.skipped, "enabled: false in the recipe"
                continue
            ctx.pass_name = name
            try:
                PASSES.get(name).apply(ctx, section)
            except SkipPass as skip:
                entry.status, entry.reason = PassStatus.skipped, str(skip)
        report.precision_class = PrecisionClass.loosest(
            rec.sections[p].numerics() for p in report.applied).value
        mark_numerics(adapter, rec, report.applied)
    except FastpipesError:
        snapshot.restore()  # a user-facing error raised by a pass (e.g. a bad input shape)
        raise
    except Exception as e:
        snapshot.restore()
        raise PassError(current, f"{type(e).__name__}: {e}") from e
    except BaseException:  # Ctrl-C half-way through a pass: nothing may stay half-done
        snapshot.restore()
        raise
    return report, snapshot
