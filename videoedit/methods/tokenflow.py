"""``method=tokenflow``: TokenFlow (PnP or SDEdit) with keyframe extended attention and propagation.

Defaults reproduce the official ``configs/config_pnp.yaml`` and ``preprocess.py`` (omerbt/TokenFlow);
our fixes of the official behaviour are switches whose faithful value is the default (see
``configs/method/tokenflow.yaml``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from videoedit.data.source import SourceVideo
from videoedit.errors import ConfigError
from videoedit.inversion.ddim import InversionOutput
from videoedit.methods.base import EditMethod, EditRequest, EditResult, InversionSettings
from videoedit.pipelines.pipeline_tokenflow import (
    OFFICIAL_NEGATIVE_PROMPT,
    TokenFlowPipeline,
    check_tokenflow_options,
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


class TokenFlowMethod(EditMethod):
    """TokenFlow editing. Arguments are the keys of ``configs/method/tokenflow.yaml``.

    Args:
        num_inference_steps, guidance_scale: DDIM editing steps and CFG (official 50, 7.5).
        inversion: :class:`InversionSettings` (fields not given take :data:`TOKENFLOW_INVERSION`'s values).
        negative_prompt: CFG's unconditional prompt, used when the run's ``negative_prompt`` is empty
            (official: ``"ugly, blurry, low res, unrealistic, unaesthetic"``).
        variant: ``"pnp"`` (``run_tokenflow_pnp.py``) or ``"sdedit"`` (``run_tokenflow_sdedit.py``).
        batch_size: frames per batch, one keyframe each (official 8).
        pnp_attn_t, pnp_f_t: fractions of the steps with q/k and conv injection (official 0.5, 0.8).
        source_prompt: the source branch's prompt: ``"inversion"`` (TokenFlow: the inversion prompt,
            ``data.prompt``) or ``"empty"`` (pnp-diffusers).
        keyframe_sampling: ``"random"`` (official, re-drawn every step) or ``"even"``.
        blend: ``"official"`` or ``"paper"`` (see :mod:`videoedit.attention.tokenflow`).
        init_latent: ``"official"`` (re-noised estimate) or ``"inverted"`` (pnp-diffusers).
        sdedit_start, sdedit_start_rounding, sdedit_noise: SDEdit only (official 0.9, ``"official"``
            slicing, ``"ddim"`` noise).
        nn_chunk_size: query tokens per nearest-neighbour block (``None``: all at once, official).
        keyframe_window: keyframes each keyframe attends to on either side (``None``: all, official).
        offload_keyframe_cache: keep keyframe caches on the CPU during CUDA runs.
    """

    name = "tokenflow"
    pipeline_class = TokenFlowPipeline

    def __init__(
        self,
        num_inference_steps: int = 50,
        guidance_scale: float = 7.5,
        inversion: InversionSettings | Mapping | None = None,
        negative_prompt: str = OFFICIAL_NEGATIVE_PROMPT,
        variant: str = "pnp",
        batch_size: int = 8,
        pnp_attn_t: float = 0.5,
        pnp_f_t: float = 0.8,
        source_prompt: str = "inversion",
        keyframe_sampling: str = "random",
        blend: str = "official",
        init_latent: str = "official",
        sdedit_start: float = 0.9,
        sdedit_start_rounding: str = "official",
        sdedit_noise: str = "ddim",
        nn_chunk_size: int | None = 4096,
        keyframe_window: int | None = None,
        offload_keyframe_cache: bool = False,
    ) -> None:
        if not isinstance(inversion, InversionSettings):
            try:
                inversion = InversionSettings(**{**asdict(TOKENFLOW_INVERSION), **dict(inversion or {})})
            except TypeError as err:
                raise ConfigError(f"Bad method.inversion settings {dict(inversion or {})}: {err}") from err
        super().__init__(num_inference_steps, guidance_scale, inversion)
        check_tokenflow_options(
            variant, batch_size, pnp_attn_t, pnp_f_t, keyframe_sampling, blend, init_latent,
            sdedit_start, sdedit_start_rounding, sdedit_noise, nn_chunk_size, keyframe_window,
        )  # fmt: skip
        if source_prompt not in ("inversion", "empty"):
            raise ConfigError(f"method.source_prompt must be 'inversion' or 'empty', got {source_prompt!r}.")
        self.negative_prompt = negative_prompt or ""
        self.options: dict[str, Any] = dict(
            variant=variant,
            batch_size=int(batch_size),
            pnp_attn_t=float(pnp_attn_t),
            pnp_f_t=float(pnp_f_t),
            keyframe_sampling=keyframe_sampling,
            blend=blend,
            init_latent=init_latent,
            sdedit_start=float(sdedit_start),
            sdedit_start_rounding=sdedit_start_rounding,
            sdedit_noise=sdedit_noise,
            nn_chunk_size=None if nn_chunk_size is None else int(nn_chunk_size),
            keyframe_window=None if keyframe_window is None else int(keyframe_window),
            offload_keyframe_cache=bool(offload_keyframe_cache),
        )
        self.source_prompt = source_prompt

    def check_inputs(self, source: SourceVideo, requests: Sequence[EditRequest]) -> None:
        super().check_inputs(source, requests)
        if self.source_prompt == "inversion" and not source.prompt:
            logger.warning(
                "data.prompt (TokenFlow's inversion prompt, e.g. 'a woman running') is empty: "
                "inversion and the source branch use the empty prompt"
            )
        if any(r.local_prompts for r in requests):
            logger.info("method=tokenflow uses only the full prompt; local prompts are ignored")
        dropped = source.num_frames % self.options["batch_size"]
        if dropped:
            logger.warning(
                "%d frames are not a multiple of method.batch_size=%d: the official code drops the last %d "
                "frames; here they form a shorter last batch with its own keyframe (set data.num_frames to "
                "a multiple of the batch size to match the official run)",
                source.num_frames,
                self.options["batch_size"],
                dropped,
            )

    def check_schedule(self, scheduler) -> None:
        """The inversion grid must contain every editing timestep (raises before any work)."""
        super().check_schedule(scheduler)
        tokenflow_timesteps(
            scheduler,
            self.num_inference_steps,
            self.options["variant"],
            self.options["sdedit_start"],
            self.options["sdedit_start_rounding"],
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
            generator=generator,
            **self.options,
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
            **self.options,
            "source_prompt": self.source_prompt,
            "negative_prompt": self.negative_prompt,
            "inversion": {k: v for k, v in asdict(self.inversion).items() if k != "cache"},
        }
