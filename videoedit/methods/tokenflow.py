"""``method=tokenflow``: TokenFlow (PnP or SDEdit) with keyframe extended attention and propagation.

Defaults reproduce the official ``configs/config_pnp.yaml`` and ``preprocess.py`` (omerbt/TokenFlow);
our fixes of the official behaviour are switches whose faithful value is the default (see
``configs/method/tokenflow.yaml``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import ClassVar

import numpy as np
import torch

from videoedit.data.source import SourceVideo
from videoedit.errors import ConfigError
from videoedit.inversion.ddim import InversionOutput
from videoedit.methods.base import EditRequest, EditResult
from videoedit.methods.inverting import InversionEditMethod, InversionSettings
from videoedit.pipelines.pipeline_tokenflow import (
    OFFICIAL_NEGATIVE_PROMPT,
    TokenFlowPipeline,
    TokenFlowSettings,
    tokenflow_timesteps,
)

logger = logging.getLogger(__name__)

#: official ``preprocess.py``: 500 DDIM inversion steps (t = 1, 3, ..., 999), noise predicted at the
#: level reached, the posterior mean, 40 frames per UNet call, no CFG (the inversion prompt only)
TOKENFLOW_INVERSION = InversionSettings(
    num_inversion_steps=500,
    guidance_scale=1.0,
    noise_timestep="next",
    vae_sample=False,
    use_controlnet=True,
    frame_batch_size=40,
)


@dataclass
class TokenFlowMethod(TokenFlowSettings, InversionEditMethod):
    """TokenFlow editing. Its config keys are :class:`TokenFlowSettings`' fields (written once, there, and
    passed to the pipeline as they are) and these:

    Attributes:
        num_inference_steps, guidance_scale: DDIM editing steps and CFG (official 50, 7.5).
        inversion: :class:`InversionSettings` (fields not given take :data:`TOKENFLOW_INVERSION`'s values).
        negative_prompt: CFG's unconditional prompt, used when the run's ``negative_prompt`` is empty
            (official: ``"ugly, blurry, low res, unrealistic, unaesthetic"``).
        source_prompt: the source branch's prompt: ``"inversion"`` (TokenFlow: the inversion prompt,
            ``data.prompt``) or ``"empty"`` (pnp-diffusers).
    """

    name: ClassVar[str] = "tokenflow"
    pipeline_class: ClassVar[type] = TokenFlowPipeline

    num_inference_steps: int = 50
    guidance_scale: float = 7.5
    inversion: InversionSettings | Mapping | None = None
    negative_prompt: str = OFFICIAL_NEGATIVE_PROMPT
    source_prompt: str = "inversion"

    def __post_init__(self) -> None:
        super().__post_init__()  # the TokenFlow options
        inversion = self.inversion
        if not isinstance(inversion, InversionSettings):
            try:
                inversion = InversionSettings(**{**asdict(TOKENFLOW_INVERSION), **dict(inversion or {})})
            except TypeError as err:
                raise ConfigError(f"Bad method.inversion settings {dict(inversion or {})}: {err}") from err
        InversionEditMethod.__init__(self, self.num_inference_steps, self.guidance_scale, inversion)
        if self.source_prompt not in ("inversion", "empty"):
            raise ConfigError(
                f"method.source_prompt must be 'inversion' or 'empty', got {self.source_prompt!r}."
            )
        self.negative_prompt = self.negative_prompt or ""

    @property
    def seed_dependent(self) -> bool:
        """The seed draws the keyframes (``random`` sampling) and SDEdit's random noise; nothing else."""
        return self.keyframe_sampling == "random" or (
            self.variant == "sdedit" and self.sdedit_noise == "random"
        )

    def check_inputs(self, source: SourceVideo, requests: Sequence[EditRequest]) -> None:
        super().check_inputs(source, requests)
        if self.source_prompt == "inversion" and not source.prompt:
            logger.warning(
                "data.prompt (TokenFlow's inversion prompt, e.g. 'a woman running') is empty: "
                "inversion and the source branch use the empty prompt"
            )
        if any(r.local_prompts for r in requests):
            logger.info("method=tokenflow uses only the full prompt; local prompts are ignored")
        dropped = source.num_frames % self.batch_size
        if dropped:
            logger.warning(
                "%d frames are not a multiple of method.batch_size=%d: the official code drops the last %d "
                "frames; here they form a shorter last batch with its own keyframe (set data.num_frames to "
                "a multiple of the batch size to match the official run)",
                source.num_frames,
                self.batch_size,
                dropped,
            )

    def check_schedule(self, scheduler) -> None:
        """The inversion grid must contain every editing timestep (raises before any work)."""
        super().check_schedule(scheduler)
        tokenflow_timesteps(
            scheduler, self.num_inference_steps, self.variant, self.sdedit_start, self.sdedit_start_rounding
        )

    def edit(
        self,
        pipe: TokenFlowPipeline,
        source: SourceVideo,
        inversion: InversionOutput,
        request: EditRequest,
        control: np.ndarray | None,
        controlnet_conditioning_scale: float,
        generator: torch.Generator,
    ) -> EditResult:
        out = pipe(
            prompt=request.prompt,
            inversion=inversion,
            source_prompt=source.prompt if self.source_prompt == "inversion" else "",
            negative_prompt=request.negative_prompt or self.negative_prompt,
            control=control,
            num_inference_steps=self.num_inference_steps,
            guidance_scale=self.guidance_scale,
            controlnet_conditioning_scale=controlnet_conditioning_scale,
            settings=self,  # a TokenFlowSettings
            generator=generator,
        )
        info = {
            "steps_run": len(out.timesteps),
            "first_timestep": out.timesteps[0],
            "keyframes_first_step": out.keyframes[0],
            "keyframe_cache_mib": round(out.cache_bytes / 2**20, 2),
        }
        return EditResult(frames=out.frames, info=info)

    def describe(self) -> dict:
        return {
            **super().describe(),
            **TokenFlowSettings.options(self),
            "source_prompt": self.source_prompt,
            "negative_prompt": self.negative_prompt,
            "inversion": {k: v for k, v in asdict(self.inversion).items() if k != "cache"},
        }
