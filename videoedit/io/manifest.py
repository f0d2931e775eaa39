"""Manifests of folders: every file's size and SHA-256, to tell a complete, unchanged folder from one
whose files were lost, truncated or changed (result trees, cached mask layouts, tokenizer files)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

MANIFEST_FORMAT = 1


def file_sha256(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes (read in chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def files_under(folder: str | Path, skip: Sequence[str] = ()) -> list[str]:
    """Relative POSIX paths of every file under ``folder``, sorted, leaving out the top-level names in
    ``skip`` and hidden top-level entries."""
    folder = Path(folder)
    out = []
    for path in folder.rglob("*"):
        rel = path.relative_to(folder)
        if rel.parts[0] in skip or rel.parts[0].startswith(".") or not path.is_file():
            continue
        out.append(rel.as_posix())
    return sorted(out)


def build_manifest(folder: str | Path, files: Sequence[str] | None = None) -> dict[str, Any]:
    """``{"format": 1, "files": {rel: {"size", "sha256"}}}`` of ``files`` (default: all) under ``folder``."""
    folder = Path(folder)
    names = files_under(folder) if files is None else sorted(files)
    entries = {
        rel: {"size": (folder / rel).stat().st_size, "sha256": file_sha256(folder / rel)} for rel in names
    }
    return {"format": MANIFEST_FORMAT, "files": entries}


def verify_manifest(folder: str | Path, manifest: Mapping[str, Any] | None) -> list[str]:
    """Problems of ``folder`` against ``manifest`` (``[]``: every listed file is there, unchanged)."""
    if not isinstance(manifest, Mapping) or not isinstance(manifest.get("files"), Mapping):
        return ["no readable manifest"]
    folder = Path(folder)
    problems = []
    for rel, entry in manifest["files"].items():
        path = folder / rel
        entry = entry if isinstance(entry, Mapping) else {}
        if not path.is_file():
            problems.append(f"{rel} is missing")
        elif path.stat().st_size != entry.get("size"):
            problems.append(f"{rel} has {path.stat().st_size} bytes, the manifest says {entry.get('size')}")
        elif file_sha256(path) != entry.get("sha256"):
            problems.append(f"{rel} was changed (its SHA-256 differs from the manifest)")
    return problems
