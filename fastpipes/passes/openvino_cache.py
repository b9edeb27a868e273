"""The ``openvino/`` cache part: converted (and compressed) models as OpenVINO IR, keyed by
what they were made from, so a component converts once and later processes read it in
seconds.

An entry is ``<component>-<key>.xml`` + ``.bin`` (the IR) and ``.json`` (its header, written
last: an entry without it is incomplete and ignored). The key hashes the machine
(fastpipes.fingerprint), the OpenVINO and nncf versions, the rewrite applied, the module's
structure, its weights' content, the example inputs' shapes and the compression. The header
records the sha256 of the .xml and .bin; an entry whose files fail that check, or fail the
ownership and permission rules of every fastpipes cache (fastpipes.cache.trusted_file), is
not read: the component is converted again and a warning says why.

>>> model, why = load(ov, open_part("openvino"), "image_encoder-0123456789abcdef0123")  # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
import json
import os
from importlib import metadata
from pathlib import Path
from typing import Any

import torch.nn as nn

from fastpipes.cache import trusted_file
from fastpipes.errors import CacheError
from fastpipes.fingerprint import content_hash, machine_fingerprint, shapes, structure_signature
from fastpipes.passes.openvino_convert import shared_core


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return ""


def entry_name(component: str, kind: str, module: nn.Module, example: tuple, hardware: Any,
               weights: str, group_size: int) -> str:
    """``<component>-<20 hex>``: the entry a conversion of `module` on `example` lands in."""
    state = module.state_dict()
    what = {"openvino": _version("openvino"), "nncf": _version("nncf") if weights != "none" else "",
            "machine": machine_fingerprint(hardware), "kind": kind,
            "structure": structure_signature({component: module}), "inputs": shapes(example),
            "weights": weights, "group_size": group_size if weights == "int4" else 0,
            "content": content_hash(state, state.__getitem__)}
    key = hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()
    return f"{component}-{key[:20]}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


def load(ov: Any, root: Path, stem: str) -> tuple[Any, dict, str]:
    """(the cached model, its header's ``meta``, "") or (None, {}, why it was not read; ""
    when there is no entry)."""
    header = root / f"{stem}.json"
    if not header.exists():
        return None, {}, ""
    try:
        recorded = json.loads(trusted_file(header).read_text())
        for suffix in ("xml", "bin"):
            path = trusted_file(root / f"{stem}.{suffix}")
            if _sha256(path) != recorded.get(suffix):
                return None, {}, (f"{path} does not match the sha256 in its header (damaged "
                                  "or changed); converting again")
    except CacheError as e:
        return None, {}, f"{e}; converting again"
    except (OSError, ValueError, AttributeError) as e:
        return None, {}, f"cache entry {stem} cannot be read ({e}); converting again"
    meta = recorded.get("meta")
    return (shared_core(ov).read_model(str(root / f"{stem}.xml")),
            meta if isinstance(meta, dict) else {}, "")


def save(ov: Any, root: Path, stem: str, model: Any, meta: dict) -> None:
    """Write `model` as entry `stem` (`meta`: plain JSON kept in its header): IR first,
    under temporary names, header last."""
    tmp_xml = root / f"{stem}.tmp.xml"
    ov.save_model(model, str(tmp_xml), compress_to_fp16=False)
    tmp_bin = tmp_xml.with_suffix(".bin")
    digests = {"xml": _sha256(tmp_xml), "bin": _sha256(tmp_bin)}
    os.replace(tmp_xml, root / f"{stem}.xml")
    os.replace(tmp_bin, root / f"{stem}.bin")
    tmp_json = root / f"{stem}.tmp.json"
    tmp_json.write_text(json.dumps({**digests, "meta": meta}))
    os.replace(tmp_json, root / f"{stem}.json")
