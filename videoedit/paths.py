"""Default roots outside a composed config, and the scratch folder under the cache root.

``configs/paths/default.yaml`` sets the roots of a run; code that runs without a config (library use,
command-line tools, checks before the models) uses the same defaults through these functions. Scratch
files (temporary tokenizer files, mask layouts built with the cache off, frames handed to external tools)
live under ``<cache_root>/tmp``, never in ``$TMPDIR``: the cache root is the one folder a user configures
for bulky, disposable files (a cluster's scratch disk rather than a small ``/tmp``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

CACHE_ROOT_ENV = "VIDEOEDIT_CACHE_ROOT"


def default_cache_root() -> Path:
    """``$VIDEOEDIT_CACHE_ROOT``, or ``~/.cache/videoedit`` (as ``configs/paths/default.yaml``)."""
    root = os.environ.get(CACHE_ROOT_ENV)
    return Path(root) if root else Path.home() / ".cache" / "videoedit"


def scratch_dir(cache_root: str | Path | None = None) -> Path:
    """``<cache_root>/tmp`` (created), where temporary files go (default root: :func:`default_cache_root`)."""
    folder = Path(cache_root) if cache_root else default_cache_root()
    folder = folder / "tmp"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def temporary_directory(prefix: str, cache_root: str | Path | None = None) -> tempfile.TemporaryDirectory:
    """A :class:`tempfile.TemporaryDirectory` under :func:`scratch_dir` (removed when its context exits)."""
    return tempfile.TemporaryDirectory(prefix=prefix, dir=scratch_dir(cache_root))
