"""Stable Diffusion's components (UNet, VAE, CLIP text encoder, DDIM scheduler, optional ControlNet)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from diffusers import AutoencoderKL, ControlNetModel, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from videoedit.backbones.base import Components, VideoShapeRule


@dataclass
class StableDiffusionComponents(Components):
    """Stable-Diffusion-shaped components (the ``sd`` backbone family).

    ``fingerprint`` identifies the weights (hub id + revision, local folder + file stats, or the tiny
    model's config and seed); it enters the inversion cache key, so two runs share an inversion only
    when they use the same weights.
    """

    family: ClassVar[str] = "sd"

    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    scheduler: DDIMScheduler
    controlnet: ControlNetModel | None = None
    fingerprint: str = ""
    info: dict[str, str] = field(default_factory=dict)

    @property
    def modules(self) -> dict[str, torch.nn.Module]:
        mods = {"unet": self.unet, "vae": self.vae, "text_encoder": self.text_encoder}
        if self.controlnet is not None:
            mods["controlnet"] = self.controlnet
        return mods

    @property
    def denoiser(self) -> torch.nn.Module:
        return self.unet

    def shape_rule(self) -> VideoShapeRule:
        return sd_shape_rule(self.vae.config.block_out_channels, self.unet.config.block_out_channels)

    def pipeline(self):
        """The family's base pipeline (:class:`~videoedit.pipelines.pipeline_video_edit.VideoEditPipeline`)."""
        from videoedit.pipelines.pipeline_video_edit import VideoEditPipeline

        return VideoEditPipeline.from_components(self)


def sd_shape_rule(vae_blocks, unet_blocks) -> VideoShapeRule:
    """Frame sides must be multiples of the VAE factor x the UNet's down-samplings (64 for SD); any frame count."""
    factor = 2 ** (len(vae_blocks) - 1) * 2 ** (len(unet_blocks) - 1)
    return VideoShapeRule(size_multiple=factor, what="this UNet")


def sd_ddim_scheduler(config: dict | None = None) -> DDIMScheduler:
    """The DDIM scheduler as the official VideoGrain/TokenFlow code configures it.

    ``scaled_linear`` betas 0.00085..0.012, no clipping, ``set_alpha_to_one=False``, ``steps_offset=1``,
    "leading" spacing: 50 steps give timesteps 981, 961, ..., 1.
    """
    base = dict(config or {})
    base.update(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        timestep_spacing="leading",
    )
    base.pop("_class_name", None)
    base.pop("_diffusers_version", None)
    return DDIMScheduler.from_config(base)
