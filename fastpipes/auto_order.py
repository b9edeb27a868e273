"""Which recipes recipe="auto" tries, in which order, and how it says so.

The family's own recipes come first, then the generic ones; within each, the recipe
expected to be fastest on this machine comes first. The expectation is a cheap prior, not
a measurement: the ratio of the typical GEMM ceiling of the precision the recipe computes
in to FP32's on this CPU tier (hardware.TIER_CEILINGS_2T), or for memory-bound families
(Llama decode) the bytes its weights save. So on avx512-bf16 and amx a BF16 recipe is tried
before an FP32 one, and on avx2 (BF16 100x slower) last, so a tight budget is spent on the
likely winner rather than in name order.

>>> expected_speedup("bf16", "amx", bf16_native=True)
5.0
>>> expected_speedup("bf16", "avx2", bf16_native=False) < 0.1
True
"""
from __future__ import annotations

from typing import Any

from fastpipes.hardware import TIER_CEILINGS_2T, unmet_requirements
from fastpipes.recipe.load import available, builtin_dir, load_recipe
from fastpipes.recipe.schema import GENERIC, AutoConfig

# dynamic int8 quantizes activations on every call: it has realized about half of its
# ceiling ratio (SAM vit_b: 2.68x on avx512-bf16, 2.33x on amx, benchmarks/RESULTS.md)
INT8_EFFICIENCY = 0.5
NOT_NATIVE = 0.01  # a precision the CPU emulates: expected 100x slower
MEMORY_BOUND = {"llama"}  # families whose default shape is decode: bytes, not FLOPs
BYTES_SAVED = {"exact": 1.0, "fp16": 2.0, "bf16": 2.0, "int8": 4.0, "int4": 8.0}


def expected_speedup(klass: str, tier: str, bf16_native: bool, fp16_native: bool = False,
                     memory_bound: bool = False) -> float:
    """The prior: how much faster than FP32 a recipe computing in `klass` is expected to be
    on `tier` (1.0 when nothing is known)."""
    native = {"bf16": bf16_native, "fp16": fp16_native}
    compute = "bf16" if klass == "int4" and bf16_native else klass
    if compute in native and not native[compute]:
        return NOT_NATIVE
    if memory_bound:
        return BYTES_SAVED.get(klass, 1.0) * (INT8_EFFICIENCY if klass in ("int8", "int4")
                                              else 1.0)
    ceilings = TIER_CEILINGS_2T.get(tier, {})
    if "exact" not in ceilings or compute not in ceilings:
        return 1.0
    ratio = ceilings[compute] / ceilings["exact"]
    return ratio * INT8_EFFICIENCY if compute == "int8" else ratio


def candidate_recipes(family: str, hardware: Any, cfg: AutoConfig,
                      device: str = "cpu") -> list[str]:
    """Built-in recipes of `family`, then generic ones, whose requires are met and whose
    precision class is within ``cfg.max_class``, each group likeliest winner first (bases
    before the recipes that extend them); then
    ``cfg.candidates`` in the order given; none named in ``cfg.exclude``."""
    ranked = []
    if cfg.builtin:
        builtin = builtin_dir().resolve()
        for name, path in sorted(available().items()):
            if path.parent.resolve() != builtin:
                continue
            rec = load_recipe(path)
            if (rec.family in (family, GENERIC)
                    and rec.precision_class.rank <= cfg.max_class.rank
                    and not unmet_requirements(rec.requires, hardware, device)):
                prior = expected_speedup(rec.precision_class.value, hardware.tier,
                                         hardware.native("bf16", device),
                                         hardware.native("fp16", device),
                                         family in MEMORY_BOUND)
                # on a tie, a base recipe before the ones that extend it: a derived
                # recipe (e.g. *_click) adds work aimed at another workload
                ranked.append((rec.family != family, -prior, len(rec.chain), name))
    names = [name for *_, name in sorted(ranked)]
    names += [c for c in cfg.candidates if c not in names]
    return [n for n in names if n not in cfg.exclude]


def _mmss(seconds: float) -> str:
    m, s = divmod(int(seconds + 0.5), 60)
    return f"{m}:{s:02d}"


def trying(name: str, n: int, total: int, elapsed: float, budget_s: float,
           what: str = "candidate") -> str:
    """The progress line before a trial."""
    left = max(budget_s - elapsed, 0.0)
    return (f"trying {name} ({what} {n} of {total}; {_mmss(elapsed)} elapsed, "
            f"{_mmss(left)} of auto.budget_s={budget_s:g} s left)")


def untried_summary(trials: list[Any]) -> str:
    """'a, b (over-budget: ...); c (excluded: ...)' for the trials that were not tried,
    grouped by why."""
    groups: dict[tuple[str, str], list[str]] = {}
    for t in trials:
        if not t.tried:
            groups.setdefault((t.status.value, t.reason), []).append(t.recipe)
    return "; ".join(f"{', '.join(names)} ({status}: {reason})"
                     for (status, reason), names in groups.items())
