"""Minimal safetensors reader/writer on numpy (memory-mapped, bf16 via ml_dtypes).

Own code rather than `safetensors.numpy` because numpy has no bfloat16 and because a bad
file must produce an error that names the file and the tensor (truncation, bad header).
Format: 8-byte little-endian header size, JSON header {name: {dtype, shape,
data_offsets}}, then the raw little-endian tensor bytes.
"""
from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping

import ml_dtypes
import numpy as np

DTYPES = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16), "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32), "I16": np.dtype(np.int16), "I8": np.dtype(np.int8),
    "U8": np.dtype(np.uint8), "BOOL": np.dtype(np.bool_),
}
_NAMES = {v: k for k, v in DTYPES.items()}


class SafetensorsError(ValueError):
    pass


def read_header(path: str | os.PathLike) -> tuple[dict, int]:
    """Return ({name: info}, data_start) after validating every tensor fits the file."""
    path = os.fspath(path)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise SafetensorsError(f"{path}: truncated safetensors file ({size} bytes, no header)")
        (n,) = struct.unpack("<Q", raw)
        if n > size - 8:
            raise SafetensorsError(f"{path}: truncated safetensors file: header claims {n} bytes, "
                                   f"file has {size - 8} after the size field")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise SafetensorsError(f"{path}: corrupt safetensors header: {e}") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path}: corrupt safetensors header: a JSON {type(header).__name__}, "
                               "not an object of tensors")
    header.pop("__metadata__", None)
    start = 8 + n
    for name, info in header.items():
        if not isinstance(info, dict):
            raise SafetensorsError(f"{path}: tensor {name!r}: header entry is not an object")
        if info.get("dtype") not in DTYPES:
            raise SafetensorsError(f"{path}: tensor {name!r} has unsupported dtype {info.get('dtype')!r}")
        offsets, shape = info.get("data_offsets"), info.get("shape")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(x) is int and x >= 0 for x in offsets)
                and offsets[0] <= offsets[1]):
            raise SafetensorsError(f"{path}: tensor {name!r}: data_offsets {offsets!r} is not [begin, end]")
        if not (isinstance(shape, list) and all(type(x) is int and x >= 0 for x in shape)):
            raise SafetensorsError(f"{path}: tensor {name!r}: shape {shape!r} is not a list of sizes")
        begin, end = offsets
        want = int(np.prod(info["shape"], dtype=np.int64)) * DTYPES[info["dtype"]].itemsize
        if end - begin != want:
            raise SafetensorsError(f"{path}: tensor {name!r} spans {end - begin} bytes but shape "
                                   f"{info['shape']} {info['dtype']} needs {want}")
        if start + end > size:
            raise SafetensorsError(f"{path}: truncated safetensors file: tensor {name!r} needs bytes "
                                   f"up to {start + end}, file has {size}")
    return header, start


def load_file(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Memory-mapped arrays for every tensor in the file."""
    header, start = read_header(path)
    mm = np.memmap(os.fspath(path), dtype=np.uint8, mode="r")
    out = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        dt = DTYPES[info["dtype"]]
        out[name] = mm[start + begin:start + end].view(dt).reshape(info["shape"])
    return out


def save_file(tensors: Mapping[str, np.ndarray], path: str | os.PathLike,
              metadata: Mapping[str, str] | None = None) -> None:
    """Write tensors (sorted by name, 8-byte aligned header) atomically."""
    header: dict = {"__metadata__": dict(metadata or {"format": "pt"})}
    offset = 0
    arrays = []
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        if a.dtype not in _NAMES:
            raise SafetensorsError(f"{path}: tensor {name!r} has unsupported dtype {a.dtype}")
        nbytes = a.nbytes
        header[name] = {"dtype": _NAMES[a.dtype], "shape": list(a.shape),
                        "data_offsets": [offset, offset + nbytes]}
        arrays.append(a)
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    tmp = f"{os.fspath(path)}.tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for a in arrays:
            f.write(a.tobytes())
    os.replace(tmp, path)
