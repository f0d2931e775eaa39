"""``method=sample``: plain text-to-video sampling from noise with the target prompt, on any backbone.

Not an editor: the cost reference papers normalise editing methods by (latency and peak memory relative to
plain sampling of the same backbone, same steps, same clip size). On SD-1.5 it is DDIM sampling of every frame
(with the ControlNet when one is configured); on Wan 2.1 Euler sampling of the clip with CFG (on Wan VACE with the
condition maps of the ``controlnet`` group, as the editors on it use them: :meth:`EditMethod.uses_control`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from videoedit.data.source import SourceVideo
from videoedit.inversion.cache import InversionCache
from videoedit.methods.base import EditMethod, EditRequest, EditResult


class SampleMethod(EditMethod):
    """Plain sampling with the request's prompt, at the source clip's frame count and size.

    Args:
        num_inference_steps: sampling steps (match the method you normalise).
        guidance_scale: classifier-free guidance (SD-1.5: 7.5; Wan 2.1's default: 5.0).
    """

    name: ClassVar[str] = "sample"
    backbones: ClassVar[tuple[str, ...]] = ("sd", "wan")

    def prepare(
        self,
        pipe,
        source: SourceVideo,
        control: np.ndarray | None,
        controlnet_conditioning_scale: float,
        cache: InversionCache | None,
        model_fingerprint: str,
        seed: int = 0,
    ) -> None:
        """Nothing: plain sampling does not look at the source."""
        return None

    def prepared_info(self, prepared: Any) -> dict[str, Any]:
        return {"cache": "none", "plain_sampling": True}

    def edit(
        self,
        pipe,
        source: SourceVideo,
        prepared: Any,
        request: EditRequest,
        control: np.ndarray | None,
        controlnet_conditioning_scale: float,
        generator: torch.Generator,
    ) -> EditResult:
        h, w = source.size
        out = pipe.sample(
            prompt=request.prompt,
            num_frames=source.num_frames,
            height=h,
            width=w,
            negative_prompt=request.negative_prompt,
            num_inference_steps=self.num_inference_steps,
            guidance_scale=self.guidance_scale,
            control=control,
            controlnet_conditioning_scale=controlnet_conditioning_scale,
            generator=generator,
        )
        return EditResult(frames=out.frames)
