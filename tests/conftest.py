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
