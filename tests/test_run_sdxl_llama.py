"""`fastpipes run sdxl` and `fastpipes run llama` end to end on tiny seeded models."""
import json

import pytest
import torch

from fastpipes.cli.main import main


def test_sdxl_images_settings_and_a_bad_prompt(tmp_path, capsys, monkeypatch):
    pytest.importorskip("diffusers")
    Image = pytest.importorskip("PIL.Image")
    prompts = tmp_path / "prompts.txt"
    # blank lines (here the 3rd and the trailing one) are no prompts (issue #27); an empty
    # JSON prompt is a bad input
    prompts.write_text('a red cube\n{"prompt": " "}\n\n'
                       '{"prompt": "a blue ball", "seed": 7, "steps": 1}\n\n')
    out = tmp_path / "out"
    args = ["run", "sdxl", "--prompts", str(prompts), "--model", "tiny", "--random-weights",
            "--steps", "2", "--width", "64", "--height", "48", "--recipe", "sdxl_fp32_fast",
            "--set", "compile.enabled=false", "--out", str(out), "--quiet"]
    assert main(args) == 1
    assert "2 done, 0 skipped (already done), 1 failed" in capsys.readouterr().out
    settings = json.loads((out / "settings.json").read_text())["images"]
    assert [(s["file"], s["prompt"], s["seed"], s["steps"]) for s in settings] == [
        ("images/00000.png", "a red cube", 0, 2), ("images/00002.png", "a blue ball", 7, 1)]
    for s in settings:
        with Image.open(out / s["file"]) as im:
            assert im.size == (64, 48) == (s["width"], s["height"])
    (err,) = [json.loads(x) for x in (out / "errors.jsonl").read_text().splitlines()]
    assert err["input"] == "line 2" and "empty prompt" in err["message"]

    # the same prompts again: nothing to generate (no model is even built), the bad line
    # is retried and still fails
    first = (out / "images/00000.png").read_bytes()
    import fastpipes.run.jobs

    def no_model(*a, **k):
        raise AssertionError("a rerun with nothing to generate built the pipeline")

    monkeypatch.setattr(fastpipes.run.jobs, "Worker", no_model)
    assert main(args) == 1
    assert "0 done, 2 skipped (already done), 1 failed" in capsys.readouterr().out
    assert (out / "images/00000.png").read_bytes() == first


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    """A tiny random Llama saved with a word-level tokenizer: the --model DIR path."""
    tokenizers = pytest.importorskip("tokenizers")
    from transformers import PreTrainedTokenizerFast

    from fastpipes.llama.pipeline import build_llama

    words = ["<unk>", "<s>", "</s>"] + [f"w{i}" for i in range(300)] + "the cat sat on a mat".split()
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({w: i for i, w in enumerate(words)},
                                                           unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    path = tmp_path_factory.mktemp("llama")
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>",
                            eos_token="</s>").save_pretrained(path)
    build_llama("tiny", seed=0).save_pretrained(path)
    return path


def test_llama_completions_match_generate_and_sampling_is_seeded(tmp_path, llama_dir, capsys):
    from fastpipes.llama.pipeline import build_llama, load_tokenizer

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "the cat sat"}\nthe mat\n{"prompt": "a", "colour": 1}\n')
    out = tmp_path / "out"
    args = ["run", "llama", "--prompts", str(prompts), "--model", str(llama_dir),
            "--max-new-tokens", "5", "--recipe", "llama_woq_int8",  # minus its compiled decode
            "--set", "kv_cache.enabled=false", "--out", str(out), "--quiet"]
    assert main(args) == 1
    assert "2 done, 0 skipped (already done), 1 failed" in capsys.readouterr().out
    rows = [json.loads(x) for x in (out / "completions.jsonl").read_text().splitlines()]
    assert [r["line"] for r in rows] == [1, 2]
    assert all(r["new_tokens"] == 5 and r["tokens_per_s"] > 0 and r["decoding"] == "greedy"
               for r in rows)
    (err,) = [json.loads(x) for x in (out / "errors.jsonl").read_text().splitlines()]
    assert "unknown keys ['colour']" in err["message"]

    # greedy output equals the model's own generate() within int8 weight rounding: compare
    # with the FP32 model on the first tokens, where the decision is clear-cut
    tok, model = load_tokenizer(llama_dir), build_llama(str(llama_dir))
    ids = tok("the cat sat", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        ref = model.generate(ids, max_new_tokens=5, do_sample=False,
                             pad_token_id=tok.eos_token_id)[0, ids.shape[1]:]
    assert rows[0]["prompt_tokens"] == ids.shape[1]
    assert rows[0]["completion"] == tok.decode(ref, skip_special_tokens=True)

    # sampling: the seed of each prompt decides its completion
    def sampled(dest):
        assert main(args[:-3] + ["--sample", "--temperature", "1.5", "--seed", "3",
                                 "--out", str(dest), "--quiet"]) == 1
        return [json.loads(x)["completion"] for x in (dest / "completions.jsonl").read_text().splitlines()]

    a, b = sampled(tmp_path / "s1"), sampled(tmp_path / "s2")
    assert a == b and a != [r["completion"] for r in rows]


def test_blank_lines_of_a_prompts_file_are_skipped_and_lines_keep_their_numbers(tmp_path):
    """Issue #27: a trailing blank line counted as a failed item."""
    from fastpipes.errors import InputError
    from fastpipes.run.prompts import read_prompts

    path = tmp_path / "p.txt"
    path.write_text("a cat\n\n   \n{bad json\nlast\n\n")
    got = read_prompts(str(path), {"seed"})
    assert [(e["line"], e["prompt"], "error" in e) for e in got] == [
        (1, "a cat", False), (4, "", True), (5, "last", False)]
    assert got[1]["error"].startswith("line 4: not valid JSON")
    path.write_text("\n \n")
    with pytest.raises(InputError, match="no prompts, only blank lines"):
        read_prompts(str(path), set())


def test_sdxl_small_is_small_by_default_and_run_options_say_their_defaults(capsys):
    """Issue #27: --random-weights small rendered 1024x1024; --steps had no help."""
    from fastpipes.sdxl.build import SdxlShape

    assert SdxlShape.from_name("small").sample_size * 8 == 256
    assert SdxlShape.from_name("full").sample_size * 8 == 1024
    with pytest.raises(SystemExit):
        main(["run", "sdxl", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "denoising steps per image (default 30" in text
    assert "256 for small" in text


def test_sampling_with_an_openvino_recipe_is_refused_before_any_work(tmp_path, capsys,
                                                                     monkeypatch):
    """The OpenVINO Llama decodes greedily: `run llama --sample --recipe llama_openvino_int4`
    failed at warm-up, after building and converting the model. Now the argument check
    refuses it, saying what is allowed; greedy with it and sampling natively still pass."""
    pytest.importorskip("transformers")
    import fastpipes.run.jobs
    from fastpipes.errors import InputError
    from fastpipes.llama.run import LlamaJob

    def no_model(*a, **k):
        raise AssertionError("the pipeline was built before the refusal")

    monkeypatch.setattr(fastpipes.run.jobs, "Worker", no_model)
    prompts = tmp_path / "p.txt"
    prompts.write_text("hello\n")
    out = tmp_path / "out"
    args = ["run", "llama", "--prompts", str(prompts), "--model", "tiny", "--random-weights",
            "--sample", "--recipe", "llama_openvino_int4", "--out", str(out), "--quiet"]
    assert main(args) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "--recipe llama_openvino_int4 with --sample" in err
    assert "decodes greedily only" in err and "without --sample (greedy)" in err
    assert "--sample with a native recipe (e.g. llama_woq_int4)" in err
    assert not out.exists()  # nothing was run, not even the output directory made

    base = dict(out=str(out), prompts=str(prompts), model="tiny", random_weights=True)
    LlamaJob(**base, recipe="llama_openvino_int4").check()  # greedy: allowed
    LlamaJob(**base, recipe="llama_woq_int4", sample=True).check()  # native: samples
    user = tmp_path / "mine.yaml"  # a recipe of one's own that converts the decoder
    user.write_text("family: llama\nopenvino: {components: [model], precision: f32}\n")
    with pytest.raises(InputError, match="decodes greedily only"):
        LlamaJob(**base, recipe=str(user), sample=True).check()
    LlamaJob(**base, recipe="llama_openvino_int4", sample=True,  # the pass switched off
             overrides=("openvino.enabled=false",)).check()


def test_auto_with_sample_leaves_the_greedy_only_openvino_recipes_out(tmp_path):
    from fastpipes.auto_order import candidate_recipes
    from fastpipes.hardware import detect
    from fastpipes.llama.run import LlamaJob
    from fastpipes.recipe.load import load_recipe

    base = dict(out=str(tmp_path / "out"), prompts="p", model="tiny", random_weights=True)
    greedy = LlamaJob(**base).auto_overrides()
    assert greedy == []  # greedy decoding: every recipe may be tried
    sampled = LlamaJob(**base, sample=True, overrides=("auto.budget_s=60",)).auto_overrides()
    assert sampled == ["auto.budget_s=60", "auto.exclude=[llama_openvino_f32,"
                       "llama_openvino_int4,llama_openvino_int8]"]
    cfg = load_recipe({"name": "auto", "auto": {}}, sampled).section("auto")
    names = candidate_recipes("llama", detect(), cfg)
    assert names and not any(n.startswith("llama_openvino") for n in names)
    assert "llama_woq_int4" in names
