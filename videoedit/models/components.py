"""The set of models an editing pipeline needs, with a fingerprint that identifies their weights."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from diffusers import AutoencoderKL, ControlNetModel, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer


@dataclass
class Components:
    """Stable-Diffusion-shaped components.

    ``fingerprint`` identifies the weights (hub id + revision, local folder + file stats, or the tiny
    model's config and seed); it enters the inversion cache key, so two runs share an inversion only
    when they use the same weights.
    """

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

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Components:
        """Move every module (casting only those whose dtype differs)."""
        for module in self.modules.values():
            if dtype is not None and next(module.parameters()).dtype != dtype:
                module.to(device, dtype)
            else:  # a dtype argument, even an unchanged one, makes diffusers warn about fp32 modules
                module.to(device)
        return self

    def unet_downsample_factor(self) -> int:
        """Pixel-space factor frame sides must be multiples of (VAE factor x UNet down-samplings)."""
        vae_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        return vae_factor * 2 ** (len(self.unet.config.block_out_channels) - 1)


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
