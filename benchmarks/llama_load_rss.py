"""Peak RSS and new-process-to-first-token of a weight-only Llama recipe loading a Hugging Face
directory (issue 25 parts 2 and 3): per recipe, one fresh process with an empty quantized-weight
cache (cold: quantizes while loading, writes the cache), then one with the cache warm.

    export FASTPIPES_CACHE_DIR=/tmp/h-llama-cache
    PYTHONPATH=$PWD python benchmarks/llama_load_rss.py --save /tmp/h-llama-1b   # once: random 1B
    # the 7B shape, written shard by shard in BF16 (13.5 GB on disk; never whole in memory):
    # ... --save /tmp/h7b/llama-7b --shape llama-2-7b --save-dtype bfloat16
    PYTHONPATH=$PWD python benchmarks/llama_load_rss.py --dir /tmp/h-llama-1b \\
        --recipes llama_woq_int4,llama_woq_int8

Each child: ``fastpipes.load_llama(DIR, recipe, ["kv_cache.compile_decode=false"])``,
``accelerate`` with the same override, a 32-token prompt and 16 greedy tokens. Reported per
child: its phases (import, load, accelerate, first token, generate), the wall time from the
parent starting it to its first token, and peak RSS (``ru_maxrss``; load-independent). Times
depend on the machine's load: the script prints ``/proc/loadavg`` with every row.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

OVERRIDES = ["kv_cache.compile_decode=false"]


def child(path: str, recipe: str) -> None:
    t0 = time.time()
    import resource

    import torch
    from transformers.generation.streamers import BaseStreamer

    import fastpipes
    t_import = time.time()
    model = fastpipes.load_llama(path, recipe, OVERRIDES)
    t_load = time.time()
    fastpipes.accelerate(model, recipe, OVERRIDES)
    t_acc = time.time()
    stamps = []

    class Stamp(BaseStreamer):
        def put(self, value):  # first call: the prompt; then one per new token
            stamps.append(time.time())

        def end(self):
            pass

    ids = torch.randint(3, 1000, (1, 32), generator=torch.Generator().manual_seed(0))
    before = resource.getrusage(resource.RUSAGE_SELF)
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=16, min_new_tokens=16, do_sample=False,
                             streamer=Stamp())
    t_gen = time.time()
    after = resource.getrusage(resource.RUSAGE_SELF)
    how = getattr(model, "_fastpipes_quantized_at_load", {}).get("how", "")
    print(json.dumps({
        "t0": t0, "import_s": t_import - t0, "load_s": t_load - t_import,
        "accelerate_s": t_acc - t_load, "first_token_s": stamps[1] - t_acc,
        "first_token_at": stamps[1], "generate_s": t_gen - t_acc,
        "new_tokens": out.shape[1] - ids.shape[1],
        # tokens after the first over their time (streamer stamps; eager decode here)
        "decode_tok_s": (len(stamps) - 2) / (stamps[-1] - stamps[1]),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "generate_faults": [after.ru_majflt - before.ru_majflt, after.ru_minflt - before.ru_minflt],
        "generate_cpu_s": after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime,
        "dirty_kb_after": _dirty_kb(), "how": how[:200]}))


def _dirty_kb() -> int:
    """The machine's dirty page cache (a cold run's cache file still being written back)."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("Dirty:"):
            return int(line.split()[1])
    return -1


def _loadavg() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


def run(path: str, recipe: str, start: str) -> dict:
    load_before = _loadavg()
    t_launch = time.time()
    proc = subprocess.run([sys.executable, __file__, "--child", path, recipe],
                          capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{recipe} {start} failed:\n{proc.stderr[-3000:]}")
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    row.update(recipe=recipe, start=start, load_before=load_before, load_after=_loadavg(),
               new_process_to_first_token_s=row["first_token_at"] - t_launch)
    return row


def clear_weights(recipe: str) -> None:
    """The cache files of `recipe`'s dtype: the next load is a cold one."""
    dtype = "int4" if "int4" in recipe else "int8"
    cache = Path(os.environ.get("FASTPIPES_CACHE_DIR", Path.home() / ".cache/fastpipes"))
    for f in (cache / "weights").glob(f"load-{dtype}-*.safetensors"):
        f.unlink()


def save(path: str, shape: str, dtype: str) -> None:
    import resource

    import torch

    from fastpipes.llama.random_dir import save_random_llama
    t0 = time.time()
    save_random_llama(shape, path, getattr(torch, dtype))
    size = sum(f.stat().st_size for f in Path(path).iterdir())
    print(f"{shape} ({dtype}) written to {path} in {time.time() - t0:.1f} s: {size / 1e9:.2f} GB "
          f"on disk, peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dir", default="/tmp/h-llama-1b")
    p.add_argument("--save", help="write build_llama(SHAPE)'s random weights here (shard by "
                   "shard: llama/random_dir.py), then exit")
    p.add_argument("--shape", default="llama-3.2-1b", help="the named shape --save writes")
    p.add_argument("--save-dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--recipes", default="llama_woq_int4,llama_woq_int8")
    p.add_argument("--starts", default="cold,warm")
    p.add_argument("--child", nargs=2, metavar=("DIR", "RECIPE"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        return child(*a.child)
    if a.save:
        return save(a.save, a.shape, a.save_dtype)
    print("| recipe | start | import | load | accelerate | first token | new process to first "
          "token | decode | peak RSS | load avg before/after |\n|---|---|---|---|---|---|---|---|---|---|")
    for recipe in a.recipes.split(","):
        for start in a.starts.split(","):
            if start == "cold":
                clear_weights(recipe)
            r = run(a.dir, recipe, start)
            print(f"| {recipe} | {start} | {r['import_s']:.1f} s | {r['load_s']:.1f} s | "
                  f"{r['accelerate_s']:.1f} s | {r['first_token_s']:.2f} s | "
                  f"{r['new_process_to_first_token_s']:.1f} s | {r['decode_tok_s']:.2f} tok/s | "
                  f"{r['peak_rss_mb']:,.0f} MB | "
                  f"{r['load_before']} / {r['load_after']} |", flush=True)
            print(f"<!-- {json.dumps(r)} -->", flush=True)


if __name__ == "__main__":
    main()
