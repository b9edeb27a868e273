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
