"""Choosing and building the ControlNet condition maps of a run.

Rule (logged in ``run.log``): when the data ships precomputed maps of the ControlNet's condition type
(``data.conditions.<type>``, or the generated clip's own skeletons/depth), those are used; otherwise the
configured annotator runs on the processed frames. The annotator must produce the ControlNet's
condition type; a mismatch is an error before any model is loaded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from annotators.base import Annotator
from annotators.cache import AnnotationCache
from videoedit.data.source import SourceVideo
from videoedit.errors import ConfigError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ControlSpec:
    """The ControlNet side of a run: which condition it needs and at what scale (``None`` = no ControlNet)."""

    condition_type: str | None
    conditioning_scale: float = 1.0

    @property
    def enabled(self) -> bool:
        return self.condition_type is not None


def check_annotator(spec: ControlSpec, annotator_type: str | None) -> None:
    """Raise unless the annotator produces the ControlNet's condition type."""
    if spec.enabled and annotator_type is not None and annotator_type != spec.condition_type:
        raise ConfigError(
            f"The annotator produces '{annotator_type}' maps but the ControlNet needs '{spec.condition_type}'. "
            f"Pick a matching annotator (annotator=<name>) or ControlNet (controlnet=<name>)."
        )


def build_control(
    source: SourceVideo,
    spec: ControlSpec,
    make_annotator: Callable[[], Annotator] | None,
    cache: AnnotationCache | None = None,
) -> tuple[np.ndarray | None, str]:
    """Condition maps ``(F, H, W, 3)`` uint8 for ``source`` and a description of where they came from.

    With ``cache`` (``<paths.cache_root>/annotations``), annotator outputs are reused across runs and
    sweeps (keyed by the frames and ``annotator.settings()``); precomputed maps of the data still win.
    Annotators with ``cacheable = False`` (those that only read files) always run.
    """
    if not spec.enabled:
        return None, "none (no ControlNet)"
    if spec.condition_type in source.conditions:
        return source.conditions[spec.condition_type], f"precomputed {spec.condition_type} maps from the data"
    if make_annotator is None:
        raise ConfigError(
            f"The ControlNet needs '{spec.condition_type}' maps, the data has none "
            f"(it has {sorted(source.conditions) or 'no precomputed maps'}) and no annotator is configured: "
            "set annotator=<name> or data.conditions.<type>=<video of condition maps>."
        )
    annotator = make_annotator()
    check_annotator(spec, annotator.condition_type)
    if cache is None or not getattr(annotator, "cacheable", True):  # e.g. precomputed maps: only a read
        maps = annotator(source.frames_uint8(), source.indices)
        return maps, f"{type(annotator).__name__} {annotator.settings()}"
    maps, hit = cache.annotate(annotator, source.frames_uint8(), source.indices)
    return (
        maps,
        f"{type(annotator).__name__} {annotator.settings()} (annotation cache {'hit' if hit else 'miss'})",
    )
