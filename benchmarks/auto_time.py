"""How long ``accelerate(pipe, "auto")`` takes, and what it picks (issue 27 item 1): one new
process builds the pipeline with random weights and runs auto. Run it twice with the same
cache: the first process is the cold search (every trial, compiles and conversions), the
second reuses the stored decision and the compiled artifacts.

    export FASTPIPES_CACHE_DIR=/tmp/autocache      # empty: the cold run
    PYTHONPATH=$PWD python benchmarks/auto_time.py sam vit_b    # cold
    PYTHONPATH=$PWD python benchmarks/auto_time.py sam vit_b    # warm

Prints one JSON line: import, build and accelerate seconds, the recipe chosen, every trial
(status, latency, speedup, fidelity) and the load average at the end.
"""
import json
import sys
import time

t0 = time.perf_counter()
import fastpipes  # noqa: E402
from fastpipes.family import BuildSpec  # noqa: E402
from fastpipes.families import FAMILIES  # noqa: E402


def main(family: str, model: str | None) -> None:
    t_import = time.perf_counter()
    pipe = FAMILIES.get(family).build(BuildSpec(model=model))
    t_build = time.perf_counter()
    report = fastpipes.accelerate(pipe, "auto")
    t_auto = time.perf_counter()
    auto = report.extra.get("auto", {})
    print(json.dumps({"import_s": round(t_import - t0, 1), "build_s": round(t_build - t_import, 1),
                      "accelerate_auto_s": round(t_auto - t_build, 1), "recipe": report.recipe,
                      "cached": auto.get("cached"), "baseline_s": auto.get("baseline_s"),
                      "trials": [{k: t.get(k) for k in ("recipe", "status", "latency_s", "speedup")}
                                 for t in auto.get("trials", [])],
                      "load": open("/proc/loadavg").read().split()[:3]}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
