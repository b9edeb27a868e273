"""fastpipes.cache: private directories, what is trusted, and `fastpipes cache clear` on
parts it cannot or must not delete (issue #14 items 11 and 14)."""
import os

import pytest

from fastpipes import cache
from fastpipes.cli.main import main
from fastpipes.errors import CacheError


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTPIPES_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_parts_are_created_private(root):
    path = cache.open_part("auto")
    assert path == root / "auto"
    assert root.stat().st_mode & 0o777 == 0o700 and path.stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize("mode,who", [(0o775, "group"), (0o757, "others"),
                                      (0o777, "group and others")])
def test_a_cache_others_can_write_is_refused(root, mode, who):
    root.mkdir()
    root.chmod(mode)
    with pytest.raises(CacheError, match=f"writable by {who} .*chmod go-w"):
        cache.open_part("inductor")


def test_a_cache_owned_by_another_user_is_refused(root):
    if os.geteuid() != 0:
        pytest.skip("only root can give a directory to another user")
    root.mkdir(mode=0o700)
    (root / "artifacts").mkdir(mode=0o700)
    os.chown(root / "artifacts", 65534, 65534)
    with pytest.raises(CacheError, match="owned by another user"):
        cache.open_part("artifacts")


def test_a_file_in_the_way_and_a_read_only_cache_are_clear_errors(root, read_only):
    root.write_text("")
    with pytest.raises(CacheError, match="is a file, not a directory"):
        cache.open_part("auto")
    root.unlink()
    root.mkdir(mode=0o700)
    read_only(root)
    with pytest.raises(CacheError, match=f"cache directory {root} is not writable"):
        cache.open_part("auto")


def test_clear_keeps_a_symlinked_part_and_what_it_points_to(root, tmp_path, capsys):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious.txt").write_text("keep me")
    cache.open_part("auto")
    (root / "inductor").symlink_to(elsewhere, target_is_directory=True)
    assert main(["cache", "clear", "inductor"]) == 1  # it was asked to, and did not
    assert (root / "inductor").is_symlink()
    assert (elsewhere / "precious.txt").read_text() == "keep me"
    err = capsys.readouterr().err
    assert f"{root / 'inductor'}: a symbolic link (to {elsewhere})" in err


def test_clear_on_a_read_only_cache_is_a_clear_error(root, read_only, capsys):
    (cache.open_part("auto") / f"{'0' * 24}.json").write_text("{}")
    cache.open_part("artifacts")
    read_only(root)
    assert main(["cache", "clear"]) == 1
    err = capsys.readouterr().err
    assert "could not remove" in err and str(root / "auto") in err and "Traceback" not in err
    assert str(root / "artifacts") in err  # every part was tried, not only the first
