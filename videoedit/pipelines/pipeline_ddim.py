"""The baseline: invert the source, regenerate it with the target prompt (frame by frame attention)."""

from __future__ import annotations

import numpy as np
import torch

from videoedit.attention.state import StepState
from videoedit.inversion.ddim import InversionOutput, sampling_timesteps
from videoedit.pipelines.pipeline_video_edit import (
    GuidanceEmbeddings,
    StepCallback,
    VideoEditOutput,
    VideoEditPipeline,
)


class DDIMEditPipeline(VideoEditPipeline):
    """DDIM inversion + CFG sampling with ControlNet; no cross-frame attention (each frame on its own)."""

    @torch.no_grad()
    def __call__(
        self,
        prompt: str,
        inversion: InversionOutput,
        negative_prompt: str = "",
        control: np.ndarray | torch.Tensor | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 7.5,
        controlnet_conditioning_scale: float = 1.0,
        masks: torch.Tensor | None = None,
        blend_source: str = "noised",
        generator: torch.Generator | None = None,
        state: StepState | None = None,
        callback_on_step_end: StepCallback | None = None,
        output_type: str = "pt",
    ) -> VideoEditOutput:
        """Edit the inverted clip towards ``prompt``.

        Args:
            prompt: target prompt.
            inversion: the source's inversion (its noisiest kept latent is the starting point).
            negative_prompt: the unconditional prompt of CFG.
            control: ControlNet maps ``(F, H, W, 3)`` uint8 (``None`` without ControlNet).
            masks: ``(F, R, H, W)`` region masks; when given, pixels outside their union are blended
                back to the source after every step (``blend_source``: ``"noised"`` or ``"inverted"``).
            generator: drives the blending noise.
            output_type: ``"pt"``, ``"np"`` or ``"latent"``.

        Returns:
            :class:`VideoEditOutput` with ``(F, 3, H, W)`` frames in [-1, 1] for ``"pt"``.
        """
        # 1. check inputs
        timesteps = sampling_timesteps(self.scheduler, num_inference_steps)
        if timesteps[0] not in inversion.latents:
            raise ValueError(
                f"the inversion has no latents at t={timesteps[0]}: it was made for another number of steps"
            )
        # 2. encode the prompts
        embeddings = GuidanceEmbeddings(
            uncond=self.encode_prompt([negative_prompt]), cond=self.encode_prompt([prompt])
        )
        # 3. prepare latents, control and blending
        latents = inversion.at(timesteps[0]).to(self._execution_device, self.unet.dtype)
        control = self.prepare_control(control)
        blend = self.make_blend(masks, inversion, blend_source)
        # 4. denoise
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
        # 5. decode
        return self.finish(latents, output_type)
