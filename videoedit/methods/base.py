"""What every editing method provides to :func:`videoedit.edit.edit`.

A method is a small class that Hydra instantiates from ``configs/method/<name>.yaml`` (its keys are the
constructor's arguments). It says which pipeline it runs, checks its inputs cheaply before any model is
loaded, inverts the source (cached on disk), and edits one request at a time. Adding a method touches no
central ``if method == ...``: a new class, its pipeline, its processors and its config.
"""

from __future__ import annotations

import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from videoedit.attention.state import StepState
from videoedit.data.source import SourceVideo
from videoedit.errors import ConfigError, PromptError
from videoedit.inversion.cache import InversionCache, cache_key, tensor_digest
from videoedit.inversion.ddim import InversionOutput, NoiseTimestep, inversion_grid, sampling_timesteps
from videoedit.pipelines.pipeline_video_edit import VideoEditPipeline

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EditRequest:
    """One edit: a target prompt (plus local prompts for region-aware methods) and a seed."""

    index: int
    prompt: str
    local_prompts: tuple[str, ...] = ()
    seed: int = 0
    negative_prompt: str = ""

    @property
    def name(self) -> str:
        """File stem in the result tree: ``edit<i>_seed<s>``."""
        return f"edit{self.index}_seed{self.seed}"


def parse_edit_requests(
    prompts: Sequence[str | Sequence[str]], seeds: Sequence[int], negative_prompt: str = ""
) -> list[EditRequest]:
    """Requests from the config's ``prompts`` (each a string or ``[full, local_1, ...]``) x ``sample_seeds``."""
    if not prompts:
        raise PromptError(
            "No editing prompt: set `prompts` (a list of strings or of [full_prompt, local_1, ...])."
        )
    if not seeds:
        raise ConfigError("`sample_seeds` is empty: give at least one seed.")
    requests = []
    for i, item in enumerate(prompts):
        parts = [item] if isinstance(item, str) else [str(p) if p is not None else "" for p in item]
        if not parts or not parts[0].strip():
            raise PromptError(f"Editing prompt {i} has an empty full prompt: {item!r}.")
        for seed in seeds:
            requests.append(EditRequest(i, parts[0], tuple(parts[1:]), int(seed), negative_prompt or ""))
    return requests


@dataclass
class Artifacts:
    """Extra outputs for the result tree, by path relative to the run directory.

    Attributes:
        videos: ``(F, H, W, 3)`` uint8, written as mp4.
        images: ``(H, W, 3)`` uint8, written as png.
        arrays: any array, written with ``numpy.save``.
        info: facts for ``metrics.json``.
    """

    videos: dict[str, np.ndarray] = field(default_factory=dict)
    images: dict[str, np.ndarray] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class EditResult(Artifacts):
    """Output of one edit: ``frames (F, 3, H, W)`` in [-1, 1] plus extra :class:`Artifacts`
    (e.g. attention visualisations)."""

    frames: torch.Tensor | None = None


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


class EditMethod(ABC):
    """Base class of editing methods.

    Args:
        num_inference_steps: DDIM editing steps (official: 50).
        guidance_scale: classifier-free guidance (official: 7.5).
        inversion: :class:`InversionSettings` (or its fields).
    """

    name: ClassVar[str] = ""
    pipeline_class: ClassVar[type[VideoEditPipeline]] = VideoEditPipeline
    #: whether :meth:`edit` needs region masks (checked before any model is loaded)
    needs_masks: ClassVar[bool] = False

    def __init__(
        self,
        num_inference_steps: int = 50,
        guidance_scale: float = 7.5,
        inversion: InversionSettings | Mapping | None = None,
    ) -> None:
        if num_inference_steps < 1:
            raise ConfigError(f"method.num_inference_steps must be >= 1, got {num_inference_steps}.")
        self.num_inference_steps = int(num_inference_steps)
        self.guidance_scale = float(guidance_scale)
        self.inversion = _as_settings(inversion)

    # ------------------------------------------------------------------ checks (cheap, before models)
    def check_inputs(self, source: SourceVideo, requests: Sequence[EditRequest]) -> None:
        """Raise on inputs this method cannot use. Runs before any model is loaded."""
        if self.needs_masks and source.masks is None:
            raise ConfigError(
                f"Method '{self.name}' needs region masks but the data has none: set data.masks_dir and "
                "data.regions (or use data=two_figures)."
            )

    def check_schedule(self, scheduler) -> None:
        """Raise before any work if the inversion and editing schedules do not fit together."""
        inversion_grid(scheduler, self.num_inference_steps, self.inversion.num_inversion_steps)

    def build_pipeline(self, components) -> VideoEditPipeline:
        return self.pipeline_class.from_components(components)

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
        if cache is not None and settings.cache:
            path = cache.save(
                key, output, info={k: v for k, v in parts.items() if k not in ("frames", "control")}
            )
            logger.info("inversion cached: %s", path)
        return output

    # ------------------------------------------------------------------ editing
    @abstractmethod
    def edit(
        self,
        pipe: VideoEditPipeline,
        source: SourceVideo,
        inversion: InversionOutput,
        request: EditRequest,
        control: np.ndarray | None,
        controlnet_conditioning_scale: float,
        generator: torch.Generator,
    ) -> EditResult:
        """Run one edit and return its frames (and any extra visualisations)."""

    def describe(self) -> dict[str, Any]:
        """The method's settings, for ``metrics.json``."""
        return {
            "name": self.name,
            "num_inference_steps": self.num_inference_steps,
            "guidance_scale": self.guidance_scale,
        }
