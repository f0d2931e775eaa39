"""Damage files the way disks and interrupted copies do, keeping their structure intact."""

from __future__ import annotations

import json
from pathlib import Path


def corrupt_safetensors(path: str | Path, tensor: str | None = None, offset: int = 0) -> str:
    """Flip one byte of a tensor's data in a safetensors file; its header (names, dtypes, shapes) is kept.

    Returns the name of the tensor whose bytes changed (``tensor``, or the first one in the file).
    """
    path = Path(path)
    raw = bytearray(path.read_bytes())
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + header_len])
    names = [n for n in header if n != "__metadata__"]
    name = tensor or sorted(names)[0]
    start, end = header[name]["data_offsets"]
    assert end - start > offset, f"tensor {name} has only {end - start} bytes"
    raw[8 + header_len + start + offset] ^= 0x5A
    path.write_bytes(bytes(raw))
    return name


def flip_byte(path: str | Path, offset: int = -1) -> None:
    """Flip one byte of any file (the size stays the same)."""
    path = Path(path)
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x5A
    path.write_bytes(bytes(raw))
