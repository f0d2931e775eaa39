"""``method=ddim``: invert and regenerate with the target prompt (the framework's baseline)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from videoedit.attention.consistent import ConsistentSelfAttention
from videoedit.attention.install import attention_processors
from videoedit.attention.state import StepState
from videoedit.data.source import SourceVideo
from videoedit.errors import ConfigError
from videoedit.inversion.ddim import InversionOutput
from videoedit.methods.base import EditRequest, EditResult
from videoedit.methods.inverting import InversionEditMethod, InversionSettings
from videoedit.pipelines.pipeline_ddim import DDIMEditPipeline

logger = logging.getLogger(__name__)


class DDIMMethod(InversionEditMethod):
    """Per-frame DDIM inversion + regeneration with CFG and ControlNet.

    Args:
        num_inference_steps, guidance_scale, inversion: see :class:`EditMethod`.
        blend_with_masks: keep pixels outside the union of the region masks equal to the source.
        blend_source: ``"noised"`` (re-noised source, as VideoGrain) or ``"inverted"`` (inverted latents).
        self_attention: a replacement self-attention for every selected ``attn1`` during editing (and
            during inversion when its ``during_inversion`` is set), e.g.
            :class:`~videoedit.attention.consistent.ConsistentSelfAttention` (or its fields as a
            mapping); ``None`` = per-frame attention (the baseline). Its random draws are seeded
            from the edit's generator (``generator.initial_seed()``), without consuming it. With
            ``during_inversion`` the inversion must run all frames at once (``frame_batch_size: null``).
    """

    name = "ddim"
    pipeline_class = DDIMEditPipeline

    def __init__(
        self,
        num_inference_steps: int = 50,
        guidance_scale: float = 7.5,
        inversion: InversionSettings | Mapping | None = None,
        blend_with_masks: bool = False,
        blend_source: str = "noised",
        self_attention: ConsistentSelfAttention | Mapping | None = None,
    ) -> None:
        super().__init__(num_inference_steps, guidance_scale, inversion)
        self.blend_with_masks = blend_with_masks
        self.blend_source = blend_source
        if isinstance(self_attention, Mapping):
            try:
                self_attention = ConsistentSelfAttention(**self_attention)
            except TypeError as err:
                raise ConfigError(
                    f"Bad method.self_attention settings {dict(self_attention)}: {err}. Its keys are those of "
                    "ConsistentSelfAttention (sampling_rate, tile_size, tile_stride, blocks, start_step, "
                    "during_inversion)."
                ) from err
        if self_attention is not None and self_attention.during_inversion and self.inversion.frame_batch_size:
            # the tiles span frames: with several UNet calls per step they would be cut at the batch
            # boundaries (and each batch would repeat the same draws), so the inversion would depend on
            # the batch size
            raise ConfigError(
                "method.self_attention.during_inversion=true needs every frame in one UNet call: set "
                f"method.inversion.frame_batch_size=null (got {self.inversion.frame_batch_size}), or "
                "during_inversion=false."
            )
        self.self_attention = self_attention

    @property
    def seed_dependent(self) -> bool:
        """DDIM sampling (eta 0) is deterministic; the seed acts through the blending noise and the consistent
        self-attention's draws only."""
        return (self.blend_with_masks and self.blend_source == "noised") or self.self_attention is not None

    def _self_attention_installed(self, pipe: DDIMEditPipeline, state: StepState, seed: int):
        if self.self_attention is None:
            return contextlib.nullcontext()
        return attention_processors(pipe.unet, self.self_attention.processors(pipe.unet, state, seed))

    def inversion_signature(self) -> dict[str, Any]:
        signature = super().inversion_signature()
        if self.self_attention is not None and self.self_attention.during_inversion:
            signature["self_attention"] = self.self_attention.settings()
        return signature

    @contextlib.contextmanager
    def inversion_context(
        self, pipe: DDIMEditPipeline, source: SourceVideo, state: StepState
    ) -> Iterator[dict[str, torch.Tensor]]:
        if self.self_attention is None or not self.self_attention.during_inversion:
            yield {}
            return
        with self._self_attention_installed(pipe, state, seed=0):
            yield {}

    def check_inputs(self, source: SourceVideo, requests: Sequence[EditRequest]) -> None:
        super().check_inputs(source, requests)
        if any(r.local_prompts for r in requests):
            logger.info("method=ddim uses only the full prompt; local prompts are ignored")

    def edit(
        self,
        pipe: DDIMEditPipeline,
        source: SourceVideo,
        inversion: InversionOutput,
        request: EditRequest,
        control: np.ndarray | None,
        controlnet_conditioning_scale: float,
        generator: torch.Generator,
    ) -> EditResult:
        state = StepState()
        with self._self_attention_installed(pipe, state, generator.initial_seed()):
            out = pipe(
                prompt=request.prompt,
                inversion=inversion,
                negative_prompt=request.negative_prompt,
                control=control,
                num_inference_steps=self.num_inference_steps,
                guidance_scale=self.guidance_scale,
                controlnet_conditioning_scale=controlnet_conditioning_scale,
                masks=source.masks if self.blend_with_masks else None,
                blend_source=self.blend_source,
                generator=generator,
                state=state,
            )
        return EditResult(frames=out.frames)

    def describe(self) -> dict:
        return {
            **super().describe(),
            "blend_with_masks": self.blend_with_masks,
            "self_attention": None if self.self_attention is None else self.self_attention.settings(),
        }
