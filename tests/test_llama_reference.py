"""The reference Llama trained here, at a micro size (a few steps): corpus split, training
determinism, the saved directory, build-on-first-use with a lock, fidelity functions."""
import json
import threading
import time
import zlib
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("transformers")
from fastpipes.errors import InputError  # noqa: E402
from fastpipes.llama import reference as ref  # noqa: E402
from fastpipes.llama.pipeline import build_llama  # noqa: E402
from fastpipes.llama.reference import models as ref_models  # noqa: E402
from fastpipes.llama.reference.__main__ import main  # noqa: E402

# intermediate 48 is not a multiple of the int4 group size 32, like trained-tiny's 704 / 128
MICRO = ref.ReferenceSpec(hidden=32, layers=1, heads=2, kv_heads=1, intermediate=48,
                          context=32, steps=3, batch=2, train_bytes=32 << 10,
                          heldout_bytes=4 << 10)


@pytest.fixture
def micro(tmp_path, monkeypatch):
    """'micro-test' registered, and a cache directory of its own."""
    monkeypatch.setitem(ref.REFERENCE_MODELS, "micro-test", MICRO)
    monkeypatch.setenv("FASTPIPES_CACHE_DIR", str(tmp_path / "cache"))
    return "micro-test"


def test_corpus_split_is_by_file_disjoint_and_deterministic():
    a = ref.stdlib_corpus(train_bytes=64 << 10, heldout_bytes=16 << 10)
    b = ref.stdlib_corpus(train_bytes=64 << 10, heldout_bytes=16 << 10)
    assert a.train_files and a.heldout_files
    assert not set(a.train_files) & set(a.heldout_files)
    assert all(zlib.crc32(f.encode()) % 20 == 0 for f in a.heldout_files)
    assert a.train_files == sorted(a.train_files)
    assert torch.equal(a.train, b.train) and a.heldout == b.heldout
    assert a.info["train_bytes"] == a.train.numel() == 64 << 10
    assert a.info["heldout_bytes"] == len(a.heldout) == 16 << 10
    assert int(a.train.min()) >= 3 and int(a.train.max()) <= 258  # bytes -> ids 3..258


def test_training_is_deterministic_and_the_saved_directory_loads_the_same(micro, tmp_path):
    m1, meta1 = ref.build_reference(MICRO, tmp_path / "a", progress=False)
    m2, meta2 = ref.build_reference(MICRO, tmp_path / "b", progress=False)
    assert meta1["first_loss"] == meta2["first_loss"] and meta1["train_loss"] == meta2["train_loss"]
    assert all(torch.equal(x, y) for x, y in zip(m1.state_dict().values(), m2.state_dict().values()))
    assert {p.name for p in (tmp_path / "a").iterdir()} >= {
        "config.json", "model.safetensors", "tokenizer_config.json", "heldout.bin", "reference.json"}
    assert meta1["steps"] == 3 and meta1["spec"]["intermediate"] == 48
    assert meta1["corpus"]["python"] and meta1["corpus"]["heldout_files"] >= 1
    loaded = build_llama(str(tmp_path / "a"))
    tokens = ref.heldout_batches(ref.heldout_tokens(tmp_path / "a"), 32, 4)
    assert torch.equal(ref.teacher_forced(loaded, tokens), ref.teacher_forced(m1, tokens))

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tmp_path / "a"))
    assert tok("ab").input_ids[:2] == [ord("a") + 3, ord("b") + 3]
    assert loaded.config.vocab_size == ref.VOCAB and ref.VOCAB % 16 == 0


def test_reference_dir_builds_once_then_reuses(micro, monkeypatch):
    path = ref.reference_dir(micro, progress=False)
    assert path == ref.stored_dir(micro) and ref.read_metadata(path)["name"] == micro
    assert not (path.parent / ".building" / micro).exists()

    def refuse(*a, **k):
        raise AssertionError("trained again")

    monkeypatch.setattr(ref_models, "build_reference", refuse)
    assert ref.reference_dir(micro) == path
    model = build_llama(micro)  # the name resolves to the stored directory
    assert model.config.hidden_size == 32 and not model.training


def test_a_failed_build_leaves_nothing_and_a_stale_one_is_rebuilt(micro, monkeypatch):
    final = ref.stored_dir(micro)
    (final.parent / ".building" / micro / "4242").mkdir(parents=True)  # a killed build's

    def boom(*a, **k):
        raise RuntimeError("interrupted")

    train = ref_models.train
    monkeypatch.setattr(ref_models, "train", boom)
    with pytest.raises(RuntimeError, match="interrupted"):
        ref.reference_dir(micro, progress=False)
    assert not final.exists() and not (final.parent / ".building" / micro).exists()
    monkeypatch.setattr(ref_models, "train", train)
    path = ref.reference_dir(micro, progress=False)
    meta = json.loads((path / "reference.json").read_text())
    meta["spec"]["steps"] = 99  # trained for longer (build --steps): still this model
    (path / "reference.json").write_text(json.dumps(meta))
    assert ref.read_metadata(ref.reference_dir(micro, progress=False))["spec"]["steps"] == 99
    meta["spec"]["hidden"] = 64  # another shape: rebuilt on the next use
    (path / "reference.json").write_text(json.dumps(meta))
    meta = ref.read_metadata(ref.reference_dir(micro, progress=False, steps=2))
    assert meta["spec"]["hidden"] == 32 and meta["steps"] == 2


def test_a_second_caller_waits_for_the_lock_then_reuses(micro):
    from filelock import FileLock

    final = ref.stored_dir(micro)
    final.parent.mkdir(parents=True)
    holder = FileLock(str(final.parent / f".llama-{micro}.lock"))
    holder.acquire()  # another process is building
    done = []
    t = threading.Thread(target=lambda: done.append(ref.reference_dir(micro, progress=False)))
    t.start()
    time.sleep(1.0)
    assert t.is_alive() and not final.exists()  # waiting, not training beside it
    holder.release()
    t.join(timeout=120)
    assert done == [final] and ref.read_metadata(final) is not None


def test_cli_info_and_build(micro, capsys):
    assert main(["info", "--name", micro]) == 1
    assert "not built yet" in capsys.readouterr().out
    assert main(["build", "--name", micro]) == 0
    out = capsys.readouterr().out
    assert str(ref.stored_dir(micro)) in out and '"heldout_loss"' in out


def test_fidelity_functions():
    tokens = torch.arange(3, 3 + 100)
    batches = ref.heldout_batches(tokens, 10, 3)
    assert batches.shape == (3, 10) and torch.equal(batches[1], tokens[10:20])
    with pytest.raises(InputError, match="hold 10 windows of 10"):
        ref.heldout_batches(tokens, 10, 11)
    flat = torch.zeros(3, 10, 272)
    assert ref.perplexity(flat, batches) == pytest.approx(272)  # uniform: every id equally likely
    sharp = flat.clone()
    sharp[:, :-1].scatter_(-1, batches[:, 1:, None], 50.0)  # certain of every next byte
    assert ref.perplexity(sharp, batches) == pytest.approx(1.0)
    assert ref.top1_agreement(sharp, sharp) == 1.0
    other = sharp.clone()
    other[0, 0] = -sharp[0, 0]
    assert ref.top1_agreement(sharp, other) == pytest.approx(29 / 30)


def test_time_budget_replans_the_steps_and_progress_prints_plain_lines(monkeypatch, capsys):
    from transformers import LlamaForCausalLM

    from fastpipes.llama.reference import training as train_mod

    clock = iter(range(1000))  # every step "takes" one second
    monkeypatch.setattr(train_mod, "time", SimpleNamespace(perf_counter=lambda: float(next(clock))))
    torch.manual_seed(0)
    model = LlamaForCausalLM(MICRO.llama_config())
    stream = torch.randint(3, 259, (4096,))
    stats = ref.train(model, stream, ref.TrainConfig(steps=50, batch=2, context=32),
                      max_seconds=10, progress=True)
    assert stats["steps"] == 10 and stats["steps_planned"] == 50
    assert "50 steps, 1.00 s/step here -> 10 steps" in stats["budget"]
    err = capsys.readouterr().err  # not a terminal: plain lines, about every 10%
    assert "step 10/10" in err and "tokens/s" in err and "ETA 0 s" in err
    assert not model.training


def test_the_llama_benchmark_judges_a_trained_model_on_its_held_out_text(micro):
    """`fastpipes bench llama --model trained-tiny` as it runs: the parent trains (or
    reuses) the model once, each worker gets its directory, and fidelity is teacher-forced
    top-1 agreement and perplexity on held-out text, judged by the int8 class's bars."""
    import json

    from fastpipes.bench import WorkloadSpec, check_schema, run_benchmark

    spec = WorkloadSpec("llama", model=micro, options={"prompt_len": 8, "new_tokens": 4,
                                                        "heldout_windows": 2})
    result = run_benchmark(spec, [{"name": "int8", "quantize": {"dtype": "int8"}}], iters=1,
                           warmup=0, limits=False, warm_start=False, progress=False)
    assert check_schema(json.loads(result.json())) == []
    base, int8 = result.configs
    assert base.ok and int8.ok, int8.reason
    assert "trained here (3 steps; held-out fidelity)" in result.workload["description"]
    fid = int8.fidelity
    assert fid["precision_class"] == "int8" and fid["ok"] in (True, False)  # judged
    assert fid["metrics"]["heldout_positions"] == 2 * 256
    assert fid["metrics"]["fp32_perplexity"] > 1 and "perplexity_change_pct" in fid["metrics"]
    assert "(int8 bars)" in fid["thresholds"]


def test_a_damaged_stored_model_is_rebuilt_not_used(micro, capsys):
    """Bytes flipped in the stored weights (reference.json intact): issue 22's silent
    corruption, caught by the file hashes reference.json records."""
    path = ref.reference_dir(micro, progress=False)
    weights = path / "model.safetensors"
    good = weights.read_bytes()
    raw = bytearray(good)
    raw[-64:] = bytes(b ^ 0xFF for b in raw[-64:])  # tensor data, not the header
    weights.write_bytes(bytes(raw))
    assert ref.reference_dir(micro, progress=False) == path
    assert "is damaged" in capsys.readouterr().err
    assert weights.read_bytes() == good  # trained again: training is deterministic
    assert ref_models.is_current(path, ref_models.spec_of(micro))


def test_a_training_says_so_before_it_starts_with_its_eta_and_how_to_shorten(micro, capsys,
                                                                            monkeypatch):
    """Issue #27: `bench llama --model trained-tiny` started a 16-minute training silently."""
    monkeypatch.setitem(ref.REFERENCE_MODELS, micro, ref.ReferenceSpec(
        **{**MICRO.__dict__, "steps": 5}))
    ref.reference_dir(micro, shorten="use --train-steps N")
    err = capsys.readouterr().err
    head = err.splitlines()[0]
    assert "is not built yet: training it now" in head and "5 steps of 2 x 32 bytes" in head
    assert "The ETA follows the first steps" in head and head.endswith("use --train-steps N")
    assert "[train] 3 steps took" in err and "s/step on this machine): about" in err
    assert "for 5 steps" in err
    assert err.index("[train] 3 steps took") > err.index("is not built yet")


def test_info_reports_the_steps_actually_run(micro, capsys):
    ref.reference_dir(micro, progress=False, steps=2)
    assert main(["info", "--name", micro]) == 0
    out = capsys.readouterr().out
    assert "trained for 2 steps in " in out and "(planned 2)" in out
    meta = {"steps": 40, "steps_planned": 180, "seconds": 61.2,
            "budget": "time budget 60 s: planned 180 steps, 1.50 s/step here -> 40 steps"}
    assert ref_models.trained_for(meta) == ("trained for 40 steps in 61 s (planned 180; time "
                                            "budget 60 s: planned 180 steps, 1.50 s/step here "
                                            "-> 40 steps)")


def test_the_bench_header_says_how_long_the_reference_model_was_trained(tmp_path):
    """A table of a model trained for 6 steps (--train-steps 6) must not read like one of the
    full training: the description carries the steps that ran, and the plan when cut."""
    from fastpipes.bench.workloads.base import WorkloadSpec, get_workload

    (tmp_path / "heldout.bin").write_bytes(b"x" * 64)
    describe = get_workload(WorkloadSpec("llama", model=str(tmp_path))).describe
    assert "trained here (held-out fidelity)" in describe()  # no metadata: nothing invented
    (tmp_path / ref_models.METADATA).write_text(json.dumps({"steps": 6, "steps_planned": 6}))
    assert "trained here (6 steps; held-out fidelity)" in describe()
    (tmp_path / ref_models.METADATA).write_text(json.dumps({"steps": 40, "steps_planned": 180}))
    assert "trained here (40 of 180 planned steps; held-out fidelity)" in describe()


def test_bench_llama_trains_with_train_steps(micro, monkeypatch):
    from fastpipes.bench.workloads.base import WorkloadSpec, get_workload

    seen = {}
    monkeypatch.setattr("fastpipes.llama.bench.reference_dir",
                        lambda name, **kw: seen.update(kw) or "/x")
    spec = get_workload(WorkloadSpec("llama", model=micro,
                                     options={"train_steps": 7})).prepare()
    assert spec.model == "/x" and seen["steps"] == 7 and "--train-steps N" in seen["shorten"]
    with pytest.raises(Exception, match="train_steps must be >= 1"):
        get_workload(WorkloadSpec("llama", model=micro, options={"train_steps": 0}))


def test_the_models_cache_is_created_private(micro, tmp_path):
    """Issue #27: ~/.cache/fastpipes/models was created 0755 (docs/caches.md says 0700)."""
    path = ref.reference_dir(micro, progress=False)
    for d in (tmp_path / "cache", tmp_path / "cache" / "models"):
        assert d.stat().st_mode & 0o777 == 0o700, d
    assert path.parent == tmp_path / "cache" / "models"
