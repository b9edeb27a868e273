import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_threads():
    # tests are small: 1-2 threads keeps them quick and stable on a shared 2-core machine
    torch.manual_seed(0)
    yield


@pytest.fixture
def recipe_dir(tmp_path, monkeypatch):
    """A temporary directory on FASTPIPES_RECIPE_PATH; write recipes into it."""
    monkeypatch.setenv("FASTPIPES_RECIPE_PATH", str(tmp_path))
    return tmp_path


@pytest.fixture(autouse=True, scope="session")
def _isolated_fastpipes_cache(tmp_path_factory):
    """Compiled artifacts and auto decisions of the tests go to a temporary cache, never the
    user's ~/.cache/fastpipes (and a test never finds a warm cache it did not make)."""
    import os

    before = os.environ.get("FASTPIPES_CACHE_DIR")
    os.environ["FASTPIPES_CACHE_DIR"] = str(tmp_path_factory.mktemp("fastpipes-cache"))
    yield
    if before is None:
        os.environ.pop("FASTPIPES_CACHE_DIR", None)
    else:
        os.environ["FASTPIPES_CACHE_DIR"] = before


@pytest.fixture
def read_only():
    """`read_only(path)` makes directory `path` unwritable for this process until the test
    ends: chmod 0555, or for root (who ignores mode bits) the immutable attribute
    (``chattr +i``); skips the test where neither is possible."""
    import os
    import shutil
    import subprocess

    undo = []

    def make(path):
        if os.geteuid() != 0:
            path.chmod(0o555)
            undo.append(lambda: path.chmod(0o700))
        elif shutil.which("chattr") and subprocess.run(
                ["chattr", "+i", str(path)], capture_output=True).returncode == 0:
            undo.append(lambda: subprocess.run(["chattr", "-i", str(path)], check=True))
        else:
            pytest.skip("root without chattr +i: no way to make a directory read-only here")
        return path

    yield make
    for step in reversed(undo):
        step()


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` need a CUDA device: skipped, with the reason, where there is none."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (marker cuda)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def trained_small(tmp_path_factory):
    """A reference Llama trained here for 150 small steps (seconds), once per session:
    sharp enough logits for top-1 agreement to mean something, vocab 272 (the int4 lm_head
    has a tail block). (path, held-out windows [16, 64])."""
    pytest.importorskip("transformers")
    from fastpipes.llama import reference as ref

    spec = ref.ReferenceSpec(hidden=64, layers=2, heads=2, kv_heads=1, intermediate=176,
                             context=64, steps=150, batch=8, train_bytes=256 << 10,
                             heldout_bytes=32 << 10)
    path = tmp_path_factory.mktemp("ref") / "prompt-test"
    ref.build_reference(spec, path, progress=False)
    return path, ref.heldout_batches(ref.heldout_tokens(path), 64, n=16)  # [16, 64]: 1024 rows
