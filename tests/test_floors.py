"""The version floors in pyproject.toml are versions the suite really runs on: the lowest
supported set is pinned in constraints-ipex.txt and tested there (`make test-floor`)."""
import re
import tomllib
from pathlib import Path

from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def _floors() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + [r for extra in project["optional-dependencies"].values()
                                      for r in extra]
    return {m[1].lower(): m[2] for r in reqs if (m := re.match(r"([A-Za-z0-9_.-]+)>=([\w.]+)$", r))}


def _pins(name: str) -> dict[str, str]:
    lines = (ROOT / name).read_text().splitlines()
    return {m[1].lower().replace("_", "-"): m[2] for line in lines
            if (m := re.match(r"([A-Za-z0-9_.-]+)==([\w.+]+)$", line.strip()))}


def test_floors_of_torch_and_the_model_libraries_are_the_ipex_env_pins():
    floors, pins = _floors(), _pins("constraints-ipex.txt")
    for name in ("torch", "transformers", "diffusers"):
        assert Version(floors[name]) == Version(pins[name]), \
            f"pyproject says {name}>={floors[name]}, but the floor env tests {name}=={pins[name]}"


def test_main_env_torch_is_above_the_floor():
    assert Version(_pins("constraints.txt")["torch"]) >= Version(_floors()["torch"])
