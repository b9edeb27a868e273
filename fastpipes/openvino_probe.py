"""Whether OpenVINO (and nncf, for weight compression) import here, asked without breaking
``import fastpipes``: nothing is imported until a caller asks, and every failure becomes a
sentence saying why and what to do.

>>> ov, why = import_openvino()   # doctest: +SKIP
"""
from __future__ import annotations

import functools
from importlib import metadata

INSTALL_ADVICE = ("install it with `pip install 'fastpipes[openvino]'` (or `make setup`), or "
                  "use a native recipe (fastpipes recipes list)")


def import_openvino():
    """(the openvino module, "") when it imports, else (None, why not and what to do).
    Never raises."""
    try:
        version = metadata.version("openvino")
    except metadata.PackageNotFoundError:
        return None, f"openvino is not installed; {INSTALL_ADVICE}"
    try:
        import openvino
    except (Exception, SystemExit) as e:
        return None, (f"openvino {version} is installed but does not import: "
                      f"{type(e).__name__}: {e}; {INSTALL_ADVICE}")
    return openvino, ""


def import_nncf():
    """(the nncf module, "") when it imports, else (None, why not). Never raises."""
    try:
        import nncf
    except (Exception, SystemExit) as e:
        return None, (f"nncf (OpenVINO's weight compression) does not import: "
                      f"{type(e).__name__}: {e}; `pip install 'fastpipes[openvino]'`")
    return nncf, ""


@functools.lru_cache(maxsize=1)
def openvino_unavailable() -> str:
    """"" when OpenVINO imports here, else why not (for ``requires: {openvino: true}``)."""
    return import_openvino()[1]
