"""The base of methods that DDIM-invert the source first (VideoGrain, TokenFlow, dual-flow, DDIM...).

The inversion runs once per run, with the method's own attention processors and recording hooks installed
(:meth:`InversionEditMethod.inversion_context`), and is cached on disk keyed by everything that determines it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from videoedit.attention.state import StepState
from videoedit.data.source import SourceVideo
from videoedit.errors import ConfigError
from videoedit.inversion.cache import InversionCache, cache_key, tensor_digest
from videoedit.inversion.ddim import InversionOutput, NoiseTimestep, inversion_grid, sampling_timesteps
from videoedit.methods.base import Artifacts, EditMethod, Reconstruction
from videoedit.pipelines.pipeline_video_edit import VideoEditPipeline

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class InversionSettings:
    """How a method inverts the source (``method.inversion`` in the configs).

    Attributes:
        num_inversion_steps: a finer inversion schedule whose grid contains the editing timesteps
            (TokenFlow: 500); ``None`` = the editing schedule.
        guidance_scale: CFG during inversion (official: 1, the source prompt only).
        noise_timestep: ``"current"`` (VideoGrain / diffusers' inverse scheduler) or ``"next"``
            (TokenFlow / pnp-diffusers); see ``videoedit/inversion/ddim.py``.
        vae_sample: encode frames with a posterior sample (official VideoGrain) rather than the mean.
        use_controlnet: apply the ControlNet during inversion too (official VideoGrain: yes).
        frame_batch_size: frames per UNet call; ``None`` = all (needed when attention spans frames).
        cache: reuse inversions from the on-disk cache.
    """

    num_inversion_steps: int | None = None
    guidance_scale: float = 1.0
    noise_timestep: NoiseTimestep = "current"
    vae_sample: bool = False
    use_controlnet: bool = True
    frame_batch_size: int | None = None
    cache: bool = True


def _as_settings(value: InversionSettings | Mapping | None) -> InversionSettings:
    if isinstance(value, InversionSettings):
        return value
    try:
        return InversionSettings(**dict(value or {}))
    except TypeError as err:
        raise ConfigError(f"Bad method.inversion settings {dict(value or {})}: {err}") from err


class InversionEditMethod(EditMethod):
    """Base class of the methods that DDIM-invert the source (the ``sd`` family's editors).

    Args:
        num_inference_steps: DDIM editing steps (official: 50).
        guidance_scale: classifier-free guidance (official: 7.5).
        inversion: :class:`InversionSettings` (or its fields).
    """

    backbones: ClassVar[tuple[str, ...]] = ("sd",)
    pipeline_class: ClassVar[type[VideoEditPipeline]] = VideoEditPipeline

    def __init__(
        self,
        num_inference_steps: int = 50,
        guidance_scale: float = 7.5,
        inversion: InversionSettings | Mapping | None = None,
    ) -> None:
        super().__init__(num_inference_steps, guidance_scale)
        self.inversion = _as_settings(inversion)

    def check_schedule(self, scheduler) -> None:
        """Raise before any work if the inversion and editing schedules do not fit together."""
        inversion_grid(scheduler, self.num_inference_steps, self.inversion.num_inversion_steps)

    # ------------------------------------------------------------------ inversion
    def inversion_signature(self) -> dict[str, Any]:
        """What, besides :class:`InversionSettings`, changes this method's inversion (cache key).

        Methods that install processors or capture features during inversion describe them here.
        """
        return {}

    @contextlib.contextmanager
    def inversion_context(
        self, pipe: VideoEditPipeline, source: SourceVideo, state: StepState
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Installed around the inversion (processors, recording hooks). The yielded dict, filled by
        the time the context exits, becomes :attr:`InversionOutput.extras` (and is cached)."""
        yield {}

    #: run the noise predictor once more on the final inverted latent (so processors can record features
    #: at the noisiest timestep, which the inversion loop itself never evaluates)
    final_feature_pass: bool = False
    #: CFG branches run during inversion (``None``: the conditional one only at guidance 1)
    inversion_branches: tuple[str, ...] | None = None

    def inversion_artifacts(
        self, source: SourceVideo, inversion: InversionOutput, pipe: VideoEditPipeline
    ) -> Artifacts:
        """Outputs derived from the inversion (written once per run), e.g. attention-feature studies."""
        return Artifacts()

    def prepare(self, pipe, source, control, controlnet_conditioning_scale, cache, model_fingerprint, seed=0):
        """The source's DDIM inversion (:meth:`invert`)."""
        return self.invert(
            pipe, source, control, controlnet_conditioning_scale, cache, model_fingerprint, seed
        )

    def prepared_info(self, prepared: InversionOutput) -> dict[str, Any]:
        return {"cache": prepared.cache_status, "key": prepared.key}

    def prepared_artifacts(self, source: SourceVideo, prepared: InversionOutput, pipe) -> Artifacts:
        return self.inversion_artifacts(source, prepared, pipe)

    def reconstruct(self, pipe, source, prepared, control, controlnet_conditioning_scale):
        """DDIM sampling from the noisiest inverted latent with the inversion's prompt, guidance and
        ControlNet, through the backbone's own attention."""
        settings = self.inversion
        frames = pipe.reconstruct(
            prepared,
            prompt=source.prompt,
            num_inference_steps=self.num_inference_steps,
            guidance_scale=settings.guidance_scale,
            control=control if settings.use_controlnet else None,
            controlnet_conditioning_scale=controlnet_conditioning_scale,
        )
        how = (
            f"DDIM inversion, then {self.num_inference_steps} DDIM steps from the noisiest editing latent with "
            f"the source prompt at guidance {settings.guidance_scale:g}"
            + (" and the ControlNet" if settings.use_controlnet and control is not None else "")
            + ", through the backbone's own attention"
        )
        return Reconstruction(frames=frames, definition=how)

    def invert(
        self,
        pipe: VideoEditPipeline,
        source: SourceVideo,
        control: np.ndarray | None,
        controlnet_conditioning_scale: float,
        cache: InversionCache | None,
        model_fingerprint: str,
        seed: int = 0,
    ) -> InversionOutput:
        """Invert ``source`` (from the cache when an identical inversion exists)."""
        settings = self.inversion
        control = control if settings.use_controlnet and pipe.controlnet is not None else None
        parts = {
            "frames": tensor_digest(source.frames),
            "model": model_fingerprint,
            "dtype": str(pipe.unet.dtype),
            "control": tensor_digest(
                None if control is None else torch.from_numpy(np.ascontiguousarray(control))
            ),
            "controlnet_conditioning_scale": controlnet_conditioning_scale if control is not None else None,
            "prompt": source.prompt,
            "num_inference_steps": self.num_inference_steps,
            "settings": {k: v for k, v in asdict(settings).items() if k != "cache"},
            "seed": seed if settings.vae_sample else None,
            "method": self.inversion_signature(),
            "branches": self.inversion_branches,
            "final_feature_pass": self.final_feature_pass,
        }
        key = cache_key(parts)
        grid = inversion_grid(pipe.scheduler, self.num_inference_steps, settings.num_inversion_steps)
        expected = sorted(set(sampling_timesteps(pipe.scheduler, self.num_inference_steps)) | {grid[-1]})
        h, w = source.size
        latent_shape = (
            source.num_frames,
            pipe.unet.config.in_channels,
            h // pipe.vae_scale_factor,
            w // pipe.vae_scale_factor,
        )
        if cache is not None and settings.cache:
            hit = cache.load(key, expected, latent_shape)
            if hit is not None:
                logger.info("inversion cache hit: %s", cache.path(key))
                hit.cache_status = "hit"
                return hit
            logger.info("inversion cache miss: %s", key)
        state = StepState(phase="invert")
        generator = torch.Generator(device="cpu").manual_seed(seed)
        with self.inversion_context(pipe, source, state) as extras:
            output = pipe.invert(
                source.frames,
                prompt=source.prompt,
                control=control,
                num_inference_steps=self.num_inference_steps,
                num_inversion_steps=settings.num_inversion_steps,
                guidance_scale=settings.guidance_scale,
                controlnet_conditioning_scale=controlnet_conditioning_scale,
                noise_timestep=settings.noise_timestep,
                vae_sample=settings.vae_sample,
                generator=generator,
                frame_batch_size=settings.frame_batch_size,
                state=state,
                final_feature_pass=self.final_feature_pass,
                branches=self.inversion_branches,
            )
        output.extras = dict(extras)
        output.key = key
        output.cache_status = "miss" if cache is not None and settings.cache else "off"
        if cache is not None and settings.cache:
            path = cache.save(
                key, output, info={k: v for k, v in parts.items() if k not in ("frames", "control")}
            )
            logger.info("inversion cached: %s", path)
        return output

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "inversion": {k: v for k, v in asdict(self.inversion).items() if k != "cache"},
        }
