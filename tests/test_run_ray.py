"""`fastpipes run sam --engine ray`: the same job on a local Ray, with the same outputs."""
import json

import pytest

from fastpipes.cli.main import main

ray = pytest.importorskip("ray", reason="ray is not installed: pip install 'fastpipes[ray]' "
                                         "(CI installs it with .[all])")
Image = pytest.importorskip("PIL.Image")
from sam_images import make_images  # noqa: E402  (after the PIL check)
TINY = ["--model", "tiny", "--random-weights", "--recipe", "sam_fp32_fast",
        "--set", "compile.enabled=false", "--quiet"]


def test_ray_engine_matches_the_local_engine(tmp_path, capsys):
    images = make_images(tmp_path / "pics", n=4)
    (images / "broken.png").write_bytes(b"\x89PNG truncated")
    args = ["run", "sam", "--images", str(images), "--points", "45,30", *TINY]
    assert main(args + ["--out", str(tmp_path / "local")]) == 1
    capsys.readouterr()
    assert main(args + ["--out", str(tmp_path / "ray"), "--engine", "ray", "--actors", "2",
                        "--cpus-per-actor", "1"]) == 1
    assert not ray.is_initialized()  # the Ray it started is shut down again
    text = capsys.readouterr().out
    assert "4 done, 0 skipped (already done), 1 failed" in text

    local = json.loads((tmp_path / "local" / "masks.json").read_text())["images"]
    remote = json.loads((tmp_path / "ray" / "masks.json").read_text())["images"]
    assert [r["image"] for r in remote] == [r["image"] for r in local]
    for a, b in zip(local, remote):
        (ma,), (mb,) = a["masks"], b["masks"]
        assert ma["score"] == pytest.approx(mb["score"], abs=1e-4)
        assert ma["segmentation"]["size"] == mb["segmentation"]["size"]
        assert (tmp_path / "ray" / mb["file"]).is_file()
    errors = (tmp_path / "ray" / "errors.jsonl").read_text().splitlines()
    assert [json.loads(e)["input"] for e in errors] == ["broken.png"]

    summary = json.loads((tmp_path / "ray" / "summary.json").read_text())
    assert summary["engine"] == "ray" and summary["recipe"] == "sam_fp32_fast"
    assert 1 <= len(summary["start"]) <= 2  # an actor that got no input reports nothing
    for start in summary["start"]:  # each actor's own start, apart from its lock wait
        assert {"actor", "threads", "build_s", "accelerate_s", "warm_up_s", "wait_s"} <= set(start)
        assert start["threads"] == 1
    # issue #27: items per actor and per node (every input, the broken one too, went to one)
    assert sum(start["items"] for start in summary["start"]) == 5
    assert all(start["node"] for start in summary["start"])
    assert any(line.startswith("  node     ") and ": 5 item(s) by " in line
               for line in text.splitlines())


@pytest.mark.parametrize("address", ["auto", "10.0.0.1:6379", "head.local:6379",
                                     "ray://10.0.0.1:10001"])
def test_ray_addresses_the_cli_accepts(address, monkeypatch):
    """Issue #27: HOST:PORT (what `ray start --head` prints) is accepted, and joining says
    "joining", not "starting Ray"."""
    from fastpipes.run import ray_engine

    assert ray_engine.check_address(address) == address
    said = []

    def stop(**kwargs):
        said.append(kwargs["address"])
        raise RuntimeError("no cluster in a unit test")

    monkeypatch.setattr(ray, "init", stop)
    with pytest.raises(RuntimeError, match="no cluster"):
        ray_engine.run_on_ray(None, [], None, None, address=address, say=said.append)
    assert said == [f"joining the Ray cluster at {address}", address]


@pytest.mark.parametrize("address", ["6379", "http://10.0.0.1:6379", "10.0.0.1:port",
                                     "10.0.0.1:70000", ":6379"])
def test_a_bad_ray_address_is_refused_naming_the_forms(address):
    from fastpipes.errors import InputError
    from fastpipes.run import ray_engine

    with pytest.raises(InputError, match="allowed: auto, HOST:PORT"):
        ray_engine.check_address(address)
