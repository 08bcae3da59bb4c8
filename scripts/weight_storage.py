"""How packaging scripts store trained weights: rounded in memory first, then the file rewritten to match.

``round_to_storage`` rounds a module's parameters to what a storage keeps (``int8``: per-row int8 with a 16-bit
scale for the tensors :mod:`diffeic.weight_packing` packs, fp16 for the others; ``fp16``: every one fp16), so the
model measured before writing is the model loaded after.  ``store_file`` rewrites a saved safetensors file in that
storage, and ``record_hashes`` re-records the rewritten files' SHA-256 in the folder's ``config.yaml`` (loading
checks them).
"""
from __future__ import annotations

from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file, save_file

from diffeic.util import file_sha256
from diffeic.weight_packing import is_packable, pack_int8, quantise_roundtrip

STORAGES = ("fp16", "int8")


def _check(storage: str) -> None:
    if storage not in STORAGES:
        raise ValueError(f"storage must be one of {', '.join(STORAGES)}, got {storage!r}")


def round_to_storage(module: torch.nn.Module, storage: str) -> None:
    """Round ``module``'s parameters in place to what ``storage`` keeps of them."""
    _check(storage)
    for p in module.parameters():
        p.data = quantise_roundtrip(p.data) if storage == "int8" and is_packable(p.data) else p.data.half().float()


def store_file(path: Path, storage: str) -> None:
    """Rewrite a safetensors file of rounded weights in ``storage``: int8-packed (``int8``: the packable tensors,
    which loading unpacks to exactly the rounded values), and every float tensor that fp16 holds exactly as fp16."""
    _check(storage)
    out = {}
    for k, v in load_file(str(path)).items():
        packed = storage == "int8" and is_packable(v)
        if v.is_floating_point() and not packed and torch.equal(v.half().float(), v):
            v = v.half()
        out[k] = v.contiguous()
    save_file(pack_int8(out) if storage == "int8" else out, str(path))


def record_hashes(folder: Path) -> None:
    """Record the rewritten weights' SHA-256 in config.yaml, as ``save_pretrained`` does (the reader checks them)."""
    meta_file = folder / "config.yaml"
    meta = yaml.safe_load(meta_file.read_text())
    meta["files"] = {f: file_sha256(folder / f) for f in meta["files"]}
    meta_file.write_text(yaml.safe_dump(meta, sort_keys=False))
