"""Backbones: the model families methods run on, behind one seam (see :mod:`videoedit.backbones.base`)."""

from videoedit.backbones.base import (
    Acceleration,
    Backbone,
    Components,
    VideoShapeRule,
    check_supported,
)

__all__ = ["Acceleration", "Backbone", "Components", "VideoShapeRule", "check_supported"]
