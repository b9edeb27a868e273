"""``--engine ray``: the same job on Ray Data, one accelerated pipeline per actor.

The driver lists the inputs and skips finished ones as the local engine does; the pending
ones become a ``ray.data`` dataset, and ``map_batches`` sends them to a fixed pool of
:class:`RunActor` actors (``ray.data.ActorPoolStrategy(size=N)``, ``num_cpus`` each). Each
actor builds, accelerates and warms up the pipeline once. Results (records and the output
files' bytes) stream back to the driver, which writes them atomically into ``--out``, so
outputs land on the driver's disk even on a cluster; workers only need to read the inputs.

Fast starts: actors get the driver's ``FASTPIPES_CACHE_DIR`` and take a file lock in it
around accelerate + warm-up. The first actor compiles and fills the cache; the next ones
wait for the lock, then load compiled artifacts (and a cached ``auto`` decision) instead of
compiling again. On a cluster this needs the cache directory on shared storage.

Your own Ray Data pipeline can use the actor directly::

    job = SamJob(out="unused", everything=True, model="vit_b", checkpoint="/shared/sam_vit_b.pth")
    ds = ray.data.from_items([{"key": "cat", "payload": json.dumps({"path": "/shared/cat.jpg",
                                                                    "name": "cat.jpg"})}])
    ds = ds.map_batches(RunActor, fn_constructor_kwargs={"job": job}, batch_size=1,
                        compute=ray.data.ActorPoolStrategy(size=2), num_cpus=4)
    for row in ds.iter_rows(): ...   # key, ok, record (JSON), error (JSON), files
"""
from __future__ import annotations

import json
import logging
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from fastpipes.cache import CACHE_ENV, cache_dir
from fastpipes.errors import FastpipesError, InputError
from fastpipes.run.base import Item, ItemResult, Job, Worker

LOCK_NAME = "run-start.lock"


@contextmanager
def start_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` (flock) for the block; without fcntl, no lock."""
    try:
        import fcntl
    except ImportError:  # not POSIX: starts are not serialised, only slower
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class RunActor:
    """Ray Data callable class: one accelerated pipeline per actor, then rows of inputs.

    Input rows: ``key`` (file-name safe), ``payload`` (a JSON object as str: what the
    job's ``process`` reads, e.g. ``{"path": ..., "name": ...}`` for SAM, ``{"prompt":
    ...}`` for SDXL / Llama) and optionally ``fingerprint``. Output rows: ``key``,
    ``fingerprint``, ``ok``, ``record`` and ``error`` (JSON str), ``file_names`` (JSON list)
    with ``file_data`` (their bytes, same order), ``seconds``, ``by`` (the actor that made
    it: ``host:pid``), and ``actor`` (JSON: this actor's start times, node and accelerate()
    report; only in its first row, else "").

    `threads` sets torch's intra-op threads (default: Ray's ``num_cpus`` for the actor).
    `start_log` (an actor handle with ``add.remote(str)``) also gets the start record, so
    the driver hears of actors that started but were given no input.
    """

    def __init__(self, job: Job, threads: int | None = None, lock: bool = True,
                 start_log: object = None, verbose: bool = True):
        import torch

        if threads:
            torch.set_num_threads(int(threads))
        gate = (lambda: start_lock(cache_dir() / LOCK_NAME)) if lock else None
        self.worker = Worker(job, gate=gate, verbose=verbose)  # Ray shows its stderr
        self.info = {"actor": f"{socket.gethostname()}:{os.getpid()}", "node": _node(),
                     "threads": torch.get_num_threads(), "ready_at": time.time(),
                     **self.worker.start, "report": self.worker.report.to_dict()}
        if start_log is not None:
            start_log.add.remote(json.dumps(self.info, default=str))
        self._announced = False

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        out: dict[str, list] = {k: [] for k in ("key", "fingerprint", "ok", "record", "error",
                                                "file_names", "file_data", "seconds",
                                                "by", "actor")}
        fingerprints = batch.get("fingerprint")
        for i, key in enumerate(batch["key"]):
            fp = str(fingerprints[i]) if fingerprints is not None else ""
            result = self.worker(Item(str(key), json.loads(str(batch["payload"][i])), fp))
            out["key"].append(result.key)
            out["fingerprint"].append(fp)
            out["ok"].append(result.ok)
            out["record"].append(json.dumps(result.record))
            out["error"].append(json.dumps(result.error))
            out["file_names"].append(json.dumps(list(result.files)))
            out["file_data"].append(list(result.files.values()))
            out["seconds"].append(result.seconds)
            out["by"].append(self.info["actor"])
            out["actor"].append("" if self._announced else json.dumps(self.info, default=str))
            self._announced = True
        return out


def _node() -> str:
    """This process's Ray node: its host name and the start of its node id (two nodes may
    share a host)."""
    try:
        import ray

        return f"{socket.gethostname()} (node {ray.get_runtime_context().get_node_id()[:8]})"
    except Exception:  # noqa: BLE001  (outside a Ray worker: the host is all we know)
        return socket.gethostname()


def result_of(row: dict) -> ItemResult:
    """An output row of :class:`RunActor` as the driver's ItemResult."""
    names = json.loads(row["file_names"])
    return ItemResult(str(row["key"]), str(row["fingerprint"]), bool(row["ok"]),
                      dict(zip(names, (bytes(d) for d in row["file_data"]))),
                      json.loads(row["record"]), json.loads(row["error"]),
                      float(row["seconds"]))


def _cpus(actors: int, cpus_per_actor: float | None) -> float:
    """CPUs per actor: as given, or the cluster's CPUs shared out, at most one node's."""
    import ray

    if cpus_per_actor:
        return cpus_per_actor
    total = ray.cluster_resources().get("CPU", 1)
    biggest = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")),
                  default=total)
    return max(1, min(int(total // actors), int(biggest)))


ADDRESS_FORMS = "auto, HOST:PORT (the head's GCS port, e.g. 10.0.0.1:6379) or ray://HOST:PORT"


def check_address(address: str) -> str:
    """`address` if it is a form Ray can join, else InputError naming the forms:
    ``auto`` (the cluster this machine belongs to), ``HOST:PORT`` (what ``ray start
    --head`` prints), or a Ray Client URL ``ray://HOST:PORT``.

    >>> check_address("10.0.0.1:6379")
    '10.0.0.1:6379'
    """
    if address == "auto":
        return address
    rest = address[len("ray://"):] if address.startswith("ray://") else address
    host, sep, port = rest.rpartition(":")
    if not (sep and host and port.isdigit() and 0 < int(port) < 65536 and "/" not in host):
        raise InputError(f"--address {address!r} is not a Ray address; allowed: {ADDRESS_FORMS}")
    return address


def run_on_ray(job: Job, pending: list[Item], take: Callable[[ItemResult], None],
               started: Callable[[dict, dict], None], actors: int = 1,
               cpus_per_actor: float | None = None, address: str | None = None,
               say: Callable[[str], None] = print, verbose: bool = True) -> None:
    """Process `pending` on `actors` RunActor actors; `take` each result as it arrives,
    `started(report, start)` once per actor. Starts a local Ray unless `address` (a
    ``ray://host:port`` URL, ``host:port`` or ``auto``) names a cluster to join; leaves Ray
    as it found it. `verbose`: the actors say how their start goes (fastpipes.progress)."""
    if address is not None:
        check_address(address)
    try:
        import ray
        import ray.data
    except ImportError:
        raise InputError("--engine ray needs Ray Data: pip install 'fastpipes[ray]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        say(f"joining the Ray cluster at {address}" if address else
            "starting a local Ray (shut down after the job)")
        # "local": a new Ray of our own even where an earlier `ray start` left its address
        # file in /tmp/ray (address=None would join that cluster, or fail if it is gone)
        ray.init(address=address or "local", include_dashboard=False,
                 logging_level=logging.WARNING,
                 **({} if address else {"num_cpus": os.cpu_count()}))
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False  # ours is on screen
        cpus = _cpus(actors, cpus_per_actor)
        say(f"{actors} actor(s) x {cpus:g} CPU(s); compile cache {cache_dir()}")
        log = _start_log(ray)
        ds = ray.data.from_items([{"key": i.key, "payload": json.dumps(i.payload),
                                   "fingerprint": i.fingerprint} for i in pending])
        ds = ds.map_batches(RunActor, fn_constructor_kwargs={"job": job, "threads": int(cpus),
                                                             "start_log": log,
                                                             "verbose": verbose},
                            compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=cpus,
                            batch_size=1,
                            runtime_env={"env_vars": {CACHE_ENV: str(cache_dir())}})
        made: dict[str, int] = {}  # actor -> items it processed
        try:
            for row in ds.iter_rows():
                made[str(row.get("by", ""))] = made.get(str(row.get("by", "")), 0) + 1
                take(result_of(row))
        finally:  # also after Ctrl-C: the starts seen so far
            for info in _starts(ray, log):
                info["items"] = made.get(info.get("actor", ""), 0)
                started(info.pop("report"), info)
    except ray.exceptions.RayError as e:  # e.g. an actor that could not build the pipeline
        raise FastpipesError(f"the Ray job failed: {e}") from e
    finally:
        if started_here:
            ray.shutdown()


def _starts(ray, log) -> list[dict]:
    try:
        return [json.loads(text) for text in ray.get(log.items.remote(), timeout=30)]
    except Exception:  # Ray going down after Ctrl-C: the summary just lacks start times
        return []


def _start_log(ray):
    """A small actor (no CPU) that collects RunActor start records for the driver."""
    @ray.remote(num_cpus=0)
    class StartLog:
        def __init__(self):
            self.records: list[str] = []

        def add(self, record: str) -> None:
            self.records.append(record)

        def items(self) -> list[str]:
            return self.records

    return StartLog.remote()
