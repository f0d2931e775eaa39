"""FreeU (Si et al., CVPR 2024) for the duration of a call, through diffusers' own switch."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from diffusers import UNet2DConditionModel


@dataclass(frozen=True)
class FreeUSettings:
    """Backbone (``b1``, ``b2``) and skip (``s1``, ``s2``) scales; the values VideoGrain uses."""

    b1: float = 1.2
    b2: float = 1.5
    s1: float = 1.0
    s2: float = 1.0


@contextlib.contextmanager
def freeu(unet: UNet2DConditionModel, settings: FreeUSettings | None) -> Iterator[None]:
    """Enable FreeU on ``unet`` inside the block (no-op for ``None``); always disabled on exit."""
    if settings is None:
        yield
        return
    unet.enable_freeu(s1=settings.s1, s2=settings.s2, b1=settings.b1, b2=settings.b2)
    try:
        yield
    finally:
        unet.disable_freeu()
