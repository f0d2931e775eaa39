"""VideoGrain (ICLR 2025): multi-grained video editing with space-time layout attention.

Editing = DDIM sampling from the inverted latents with every ``attn1`` full-frame and layout-modulated,
``attn2`` layout-modulated, optional FLATTEN trajectory attention and PnP injection, ControlNet
residuals, and latent blending with the union of the region masks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from videoedit.attention.base import AttentionProcessorBase
from videoedit.attention.flatten import Trajectories
from videoedit.attention.install import attention_layer_names, attention_processors, module_hooks
from videoedit.attention.st_layout import FrameSpan
from videoedit.attention.state import StepState
from videoedit.attention.videograin import (
    AttentionRecorder,
    ModulationSettings,
    PnPFeatures,
    VideoGrainController,
    pnp_conv_hooks,
    videograin_processors,
)
from videoedit.errors import ConfigError, PromptError
from videoedit.inversion.ddim import InversionOutput, sampling_timesteps
from videoedit.layout.prompts import PromptLayout, locate_local_prompts, swap_span_embeddings
from videoedit.layout.regions import build_layer_layouts
from videoedit.models.freeu import FreeUSettings
from videoedit.models.freeu import freeu as freeu_enabled
from videoedit.pipelines.pipeline_video_edit import (
    GuidanceEmbeddings,
    StepCallback,
    VideoEditOutput,
    VideoEditPipeline,
)


@dataclass
class VideoGrainOutput(VideoEditOutput):
    """Adds the prompt layout and, when recorded, the averaged cross-attention maps ``(F, N, 77)``."""

    prompt_layout: PromptLayout | None = None
    cross_attention: torch.Tensor | None = None
    cross_attention_grid: tuple[int, int] | None = None


class VideoGrainPipeline(VideoEditPipeline):
    """See the module docstring; ``__call__`` edits one prompt with its local prompts."""

    def layout_conditioning(
        self,
        prompt: str,
        local_prompts: Sequence[str],
        negative_prompt: str = "",
        negative_prompt_target: str = "controlnet",
        skip_missing_local_prompts: bool = False,
    ) -> tuple[GuidanceEmbeddings, PromptLayout]:
        """Text conditions with the local prompts' embeddings swapped into their spans.

        Official: the UNet's unconditional prompt is ``""`` and the negative prompt reaches only the
        ControlNet, whose conditional prompt is the plain full prompt (``negative_prompt_target=
        "controlnet"``); ``"both"`` gives the negative prompt to the UNet too.
        """
        layout = locate_local_prompts(self.tokenizer, prompt, local_prompts, skip_missing_local_prompts)
        full = self.encode_prompt([prompt])
        present = [p if span is not None else "" for p, span in zip(local_prompts, layout.spans)]
        merged = swap_span_embeddings(full, self.encode_prompt(present), layout.spans) if present else full
        negative = self.encode_prompt([negative_prompt])
        if negative_prompt_target == "controlnet":
            uncond = self.encode_prompt([""])
        elif negative_prompt_target == "both":
            uncond = negative
        else:
            raise ValueError(
                f"negative_prompt_target must be controlnet or both, got {negative_prompt_target!r}"
            )
        embeddings = GuidanceEmbeddings(
            uncond=uncond, cond=merged, controlnet_uncond=negative, controlnet_cond=full
        )
        return embeddings, layout

    def downsample_factors(self) -> list[int]:
        """Latent downsample factors of the UNet's levels (1, 2, 4, 8 for SD)."""
        return [2**i for i in range(len(self.unet.config.block_out_channels))]

    @contextlib.contextmanager
    def videograin_attention(
        self,
        controller: VideoGrainController,
        freeu: FreeUSettings | None = None,
        self_attention: Callable[[str], AttentionProcessorBase | None] | None = None,
    ) -> Iterator[None]:
        """Install VideoGrain's processors (+ PnP hooks, FreeU, a replacement self-attention) on the UNet
        for the duration of the block (inversion or editing); everything is restored on exit."""
        processors = videograin_processors(controller, attention_layer_names(self.unet))
        if self_attention is not None:
            processors.update({n: p for n in processors if (p := self_attention(n)) is not None})
        hooks = pnp_conv_hooks(controller) if controller.pnp is not None else {}
        with (
            attention_processors(self.unet, processors),
            module_hooks(self.unet, forward_hooks=hooks),
            freeu_enabled(self.unet, freeu),
        ):
            yield

    @torch.no_grad()
    def __call__(
        self,
        prompt: str,
        local_prompts: Sequence[str],
        inversion: InversionOutput,
        masks: torch.Tensor,
        control: np.ndarray | torch.Tensor | None = None,
        negative_prompt: str = "",
        num_inference_steps: int = 50,
        guidance_scale: float = 7.5,
        controlnet_conditioning_scale: float = 1.0,
        modulation: ModulationSettings | None = None,
        frame_span: FrameSpan | None = None,
        chunk_budget_mb: float = 256,
        trajectories: dict[int, Trajectories] | None = None,
        pnp: PnPFeatures | None = None,
        inject_step: int = 0,
        pnp_alignment: str = "official",
        blending_percentage: float = 0.0,
        skip_mode: str = "official",
        blend_source: str = "noised",
        negative_prompt_target: str = "controlnet",
        skip_missing_local_prompts: bool = False,
        record_cross_attention_factor: int | None = None,
        freeu: FreeUSettings | None = None,
        self_attention: Callable[[str], AttentionProcessorBase | None] | None = None,
        attention_maps: str = "official",
        generator: torch.Generator | None = None,
        state: StepState | None = None,
        callback_on_step_end: StepCallback | None = None,
        output_type: str = "pt",
    ) -> VideoGrainOutput:
        """Edit the inverted clip.

        Args:
            prompt: the full target prompt, e.g. "Spiderman and Polar Bear jogging under cherry trees".
            local_prompts: one per region (``masks[:, i]``), each a token span of ``prompt`` or ``""``.
            inversion: the source's inversion (its latents at the editing timesteps).
            masks: ``(F, R, H, W)`` bool region masks at frame resolution.
            control: ControlNet maps ``(F, H, W, 3)`` uint8.
            modulation: ST-Layout settings (``None`` = official defaults).
            frame_span: frames each query frame attends to (official: all).
            chunk_budget_mb: memory for one query chunk's attention scores.
            trajectories: FLATTEN trajectories by downsample factor.
            pnp, inject_step, pnp_alignment: PnP features from the inversion, injected during the first
                ``inject_step`` steps; ``official`` takes features recorded one grid step lower.
            blending_percentage: skip this fraction of the first steps (official 0; tennis 0.25).
            skip_mode: with skipped steps, ``official`` starts from the noisiest inverted latent and
                indexes the modulation/PnP schedule by loop step; ``consistent`` starts from the inverted
                latent of the first executed step and uses the true step.
            blend_source: ``noised`` (official: the clean source re-noised with fresh noise) or
                ``inverted``; pixels outside the union of the masks are blended back after every step.
            record_cross_attention_factor: average the conditional cross-attention maps of the layers at
                this downsample factor (for ``vis_cross_attn``).
            freeu: FreeU settings (``None``: off).
            attention_maps: recorded cross-attention maps: ``official`` (scaled scores before modulation
                and softmax, as the official attention store) or ``probs`` (probabilities).
            self_attention: ``layer name -> processor or None``: replaces VideoGrain's full-frame
                self-attention on the layers it returns a processor for (e.g. consistent self-attention);
                VideoGrain's cross-attention modulation stays.

        Returns:
            :class:`VideoGrainOutput`: frames ``(F, 3, H, W)`` in [-1, 1] for ``output_type="pt"``.
        """
        # 1. check inputs
        modulation = modulation or ModulationSettings()
        schedule = sampling_timesteps(self.scheduler, num_inference_steps)
        if not 0 <= blending_percentage < 1:
            raise ConfigError(f"method.blending_percentage must be in [0, 1), got {blending_percentage}")
        start = int(num_inference_steps * blending_percentage)
        timesteps = schedule[start:]
        if masks.shape[1] < len(local_prompts):
            raise PromptError(
                f"{len(local_prompts)} local prompts but only {masks.shape[1]} region masks: give one local prompt "
                "per region (data.regions), '' for a region without one."
            )
        factors = self.downsample_factors()
        if record_cross_attention_factor is not None and record_cross_attention_factor not in factors:
            raise ConfigError(
                f"method.vis_factor={record_cross_attention_factor} is not a resolution of this UNet "
                f"(latent downsample factors {factors})."
            )

        # 2. text conditioning with the local prompts' spans
        embeddings, prompt_layout = self.layout_conditioning(
            prompt, local_prompts, negative_prompt, negative_prompt_target, skip_missing_local_prompts
        )

        # 3. region layouts at every UNet resolution
        latent_size = tuple(inversion.source_latents.shape[-2:])
        layouts = build_layer_layouts(
            masks.cpu(),
            latent_size,
            prompt_layout.token_region,
            factors,
            modulation.mask_downsample,
            modulation.area_threshold,
        )
        layouts = {f: layout.to(self._execution_device) for f, layout in layouts.items()}

        # 4. latents, control, blending
        first = schedule[0] if skip_mode == "official" else timesteps[0]
        latents = inversion.at(first).to(self._execution_device, self.unet.dtype)
        control = self.prepare_control(control)
        blend = self.make_blend(masks, inversion, blend_source)

        # 5. denoise with the processors and PnP hooks installed
        state = state or StepState()
        recorders = {}
        if record_cross_attention_factor is not None:
            recorders[record_cross_attention_factor] = AttentionRecorder(
                record_cross_attention_factor, False, True
            )
        controller = VideoGrainController(
            state=state,
            layouts=layouts,
            modulation=modulation,
            schedule=schedule,
            step_offset=start,
            skip_mode=skip_mode,
            span=frame_span or FrameSpan(),
            chunk_budget_bytes=int(chunk_budget_mb * 2**20),
            trajectories=trajectories or {},
            pnp=pnp if inject_step > 0 else None,
            pnp_steps=inject_step,
            pnp_alignment=pnp_alignment,
            recorders=recorders,
            record_logits=attention_maps == "official",
        )
        with self.videograin_attention(controller, freeu, self_attention):
            latents = self.denoise(
                latents,
                timesteps,
                embeddings,
                guidance_scale,
                control,
                controlnet_conditioning_scale,
                state=state,
                blend=blend,
                generator=generator,
                callback_on_step_end=callback_on_step_end,
            )

        # 6. decode
        out = self.finish(latents, output_type)
        recorder = recorders.get(record_cross_attention_factor) if record_cross_attention_factor else None
        return VideoGrainOutput(
            frames=out.frames,
            latents=out.latents,
            prompt_layout=prompt_layout,
            cross_attention=None if recorder is None else recorder.cross_average(),
            cross_attention_grid=None if recorder is None else layouts[record_cross_attention_factor].grid,
        )
