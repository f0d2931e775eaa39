"""videoedit: zero-shot, text-driven video editing with pretrained image diffusion models.

The Python API (imported on first use, so ``import videoedit`` stays light)::

    import videoedit

    result = videoedit.edit_video("clip.mp4", ["a watercolor painting"], method="ddim")
    cfg = videoedit.compose_config(["+experiment=instance_edit", "model=tiny", "data=two_figures"])
    result = videoedit.edit(cfg, "outputs/my_run")

See :mod:`videoedit.api`.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "edit_video": "videoedit.api",
    "apply_settings": "videoedit.api",
    "compose_config": "videoedit.config",
    "edit": "videoedit.edit",
    "RunResult": "videoedit.edit",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'videoedit' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
