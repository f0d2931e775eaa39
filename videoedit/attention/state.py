"""The per-step state a method's processors and hooks share (instead of ``setattr(module, 't', t)``)."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class StepState:
    """Written by the pipeline before every UNet call, read by processors and hooks.

    Attributes:
        phase: ``"invert"`` during inversion, ``"sample"`` during editing.
        step_index: 0-based index of the current step in its loop.
        timestep: the UNet's timestep for this call.
        num_steps: length of the loop (for "the first N% of steps" schedules).
        num_frames: frames per branch in the current batch.
        branches: the batch layout, branch-major: the UNet batch is ``len(branches) * num_frames``
            samples, branch ``b`` owning samples ``b*F .. (b+1)*F - 1``. E.g. ``("uncond", "cond")``
            for classifier-free guidance, ``("source", "uncond", "cond")`` for PnP/TokenFlow.
        latent_size: ``(h, w)`` of the latents, to recover each layer's token grid.
        frame_ids: clip index of each frame in the batch (methods that process subsets of frames).
    """

    phase: str = "sample"
    step_index: int = 0
    timestep: int = 0
    num_steps: int = 1
    num_frames: int = 1
    branches: tuple[str, ...] = ("cond",)
    latent_size: tuple[int, int] = (64, 64)
    frame_ids: tuple[int, ...] | None = None

    def update(self, **values: object) -> StepState:
        for key, value in values.items():
            if not hasattr(self, key):
                raise AttributeError(f"StepState has no field {key!r}")
            setattr(self, key, value)
        return self

    def branch_slice(self, name: str) -> slice:
        """Batch slice of branch ``name``."""
        i = self.branches.index(name)
        return slice(i * self.num_frames, (i + 1) * self.num_frames)

    def token_grid(self, seq_len: int) -> tuple[int, int]:
        """``(h, w)`` token grid of a layer with ``seq_len`` tokens per frame."""
        h, w = self.latent_size
        factor = math.isqrt(max(1, (h * w) // seq_len))
        if (h // factor) * (w // factor) != seq_len:
            raise ValueError(
                f"{seq_len} tokens do not form a grid of latents {h}x{w} downsampled by a power of 2"
            )
        return h // factor, w // factor

    def downsample_factor(self, seq_len: int) -> int:
        """How many times smaller than the latent grid a layer with ``seq_len`` tokens is (1, 2, 4, 8)."""
        return self.latent_size[0] // self.token_grid(seq_len)[0]
