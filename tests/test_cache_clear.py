"""`fastpipes cache clear` removes only what fastpipes created (issue 22): a cache directory
that is the user's $HOME keeps the user's models/ and auto/; `cache info` counts only what
fastpipes created too."""
import json

import pytest

from fastpipes import cache
from fastpipes.cache_clear import clear, usage
from fastpipes.cli.main import main
from fastpipes.errors import CacheError

KEY = "0123456789abcdef01234567"  # an auto decision key: 24 hex digits


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A home directory with the user's own models/ and auto/, used as the cache."""
    home = tmp_path / "home"
    (home / "models" / "my-llama").mkdir(parents=True)
    (home / "models" / "my-llama" / "config.json").write_text('{"mine": true}')
    (home / "models" / "notes.txt").write_text("mine")
    (home / "auto").mkdir()
    (home / "auto" / "shopping.json").write_text('["milk"]')
    (home / ".bashrc").write_text("# mine")
    monkeypatch.setenv("FASTPIPES_CACHE_DIR", str(home))
    return home


def test_cache_clear_in_home_keeps_the_users_files_and_says_so(home, capsys):
    (cache.open_part("auto") / f"{KEY}.json").write_text("{}")  # a decision fastpipes wrote
    (cache.open_part("inductor") / "fxgraph").mkdir()  # a part fastpipes made
    assert main(["cache", "clear"]) == 1
    err = capsys.readouterr().err
    assert (home / "models" / "my-llama" / "config.json").read_text() == '{"mine": true}'
    assert (home / "models" / "notes.txt").exists() and (home / "auto" / "shopping.json").exists()
    assert (home / ".bashrc").exists()
    assert not (home / "auto" / f"{KEY}.json").exists() and not (home / "inductor").exists()
    assert "kept what fastpipes did not create" in err
    assert f"{home / 'models'}: 2 entries fastpipes did not create (my-llama, notes.txt)" in err
    assert f"{home / 'auto'}: 1 entry fastpipes did not create (shopping.json)" in err
    assert ".fastpipes-cache" in err and "Traceback" not in err


def test_cache_info_in_home_counts_only_what_fastpipes_made(home, capsys):
    (cache.open_part("auto") / f"{KEY}.json").write_text("{}")  # a decision fastpipes wrote
    (home / "models" / "my-llama" / "weights.bin").write_bytes(b"w" * 1000)  # the user's
    (home / "openvino").symlink_to(home / "models")  # a link: not a part fastpipes made
    assert main(["cache", "info", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["auto"]["files"], data["auto"]["bytes"], data["auto"]["others"]) == (1, 2, 1)
    assert (data["models"]["files"], data["models"]["bytes"], data["models"]["others"]) == (0, 0, 2)
    assert (data["openvino"]["files"], data["openvino"]["others"]) == (0, 1)
    assert (data["inductor"]["files"], data["inductor"]["others"]) == (0, 0)  # not there
    assert main(["cache", "info"]) == 0
    out = capsys.readouterr().out
    assert f"and 2 entries fastpipes did not create in {home / 'models'} (not counted" in out
    assert (home / "models" / "my-llama" / "weights.bin").exists()  # info only counts


def test_clearing_one_part_the_user_owns_is_refused(home, capsys):
    with pytest.raises(CacheError, match="models: 2 entries fastpipes did not create"):
        clear(["models"])
    assert main(["cache", "clear", "models"]) == 1
    assert (home / "models" / "notes.txt").exists()
    assert not (home / cache.MARKER).exists()  # fastpipes did not make $HOME: no marker there


def test_a_model_directory_without_fastpipes_metadata_is_kept(home):
    ours, theirs = home / "models" / "llama-trained-tiny", home / "models" / "llama-7b"
    ours.mkdir()
    (ours / "reference.json").write_text("{}")
    theirs.mkdir()
    (theirs / "config.json").write_text("{}")
    with pytest.raises(CacheError, match=r"3 entries fastpipes did not create \(llama-7b, "):
        clear(["models"])
    assert not ours.exists() and (theirs / "config.json").exists()


def test_what_fastpipes_makes_carries_its_marker(tmp_path, monkeypatch):
    root = tmp_path / "new-cache"
    monkeypatch.setenv("FASTPIPES_CACHE_DIR", str(root))
    part = cache.open_part("artifacts")
    assert (root / cache.MARKER).is_file() and (part / cache.MARKER).is_file()
    (part / "anything-the-user-put-here").write_text("x")  # inside a directory fastpipes made
    assert clear() == [part]
    assert usage()["artifacts"]["files"] == 0


def test_an_older_fastpipes_cache_without_markers_is_cleared_whole(tmp_path, monkeypatch):
    root = tmp_path / "old"
    for rel in (f"auto/{KEY}.json", "artifacts/image_encoder-0123456789abcdef0123.bin",
                "inductor/fxgraph/x/y", "inductor/c7/c7abcdefghijklmnopqrstuvwxyz.cpp",
                "models/llama-trained-tiny/reference.json", "models/.llama-trained-tiny.lock",
                "openvino/unet-0123456789abcdef0123.xml", "openvino/unet-0123456789abcdef0123.bin",
                "openvino/unet-0123456789abcdef0123.json"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x")
    monkeypatch.setenv("FASTPIPES_CACHE_DIR", str(root))
    removed = clear()
    assert sorted(p.name for p in removed) == ["artifacts", "auto", "inductor", "models",
                                               "openvino"]
    assert list(root.iterdir()) == []


@pytest.mark.parametrize("rel", ["auto/k.json", "artifacts/firmware.bin", "inductor/notes",
                                 "inductor/py/script.sh", "models/llama-x/weights.bin",
                                 "openvino/model.xml"])
def test_entries_that_only_resemble_the_old_layout_are_kept(tmp_path, monkeypatch, rel):
    root = tmp_path / "c"
    (root / rel).parent.mkdir(parents=True)
    (root / rel).write_text("x")
    monkeypatch.setenv("FASTPIPES_CACHE_DIR", str(root))
    with pytest.raises(CacheError, match="fastpipes did not create"):
        clear()
    assert (root / rel).read_text() == "x"
