"""DDIM inversion (+ControlNet) and its on-disk cache."""

from videoedit.inversion.cache import InversionCache, cache_key, tensor_digest
from videoedit.inversion.ddim import (
    InversionOutput,
    ddim_invert,
    ddim_step_between,
    inversion_grid,
    sampling_timesteps,
)

__all__ = [
    "InversionCache",
    "InversionOutput",
    "cache_key",
    "ddim_invert",
    "ddim_step_between",
    "inversion_grid",
    "sampling_timesteps",
    "tensor_digest",
]
