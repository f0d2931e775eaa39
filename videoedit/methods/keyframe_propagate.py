"""``method=keyframe_propagate``: edit K keyframes jointly with any method, propagate the rest along flow.

Diffusion work grows with K, not with the clip: only the keyframes are inverted (cached as usual, by the
wrapped method) and edited (one batch); every other frame is made from its nearest edited keyframes
warped along the source video's optical flow, blended with occlusion-aware weights
(:mod:`videoedit.pipelines.pipeline_keyframe`), and optionally refined by a short low-strength denoising
pass (which does grow with the clip, in batches of fixed size; it uses the UNet's own per-frame
attention, not the keyframe method's processors).

Which frames are keyframes is decided from the source alone (:meth:`KeyframePropagateMethod.keyframes`),
so the inversion (of the keyframes only) is shared by every edit of a run and cached on disk.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from videoedit.data.source import SourceVideo
from videoedit.errors import ConfigError
from videoedit.inversion.cache import InversionCache, tensor_digest
from videoedit.inversion.ddim import InversionOutput
from videoedit.io.transforms import tensor_to_frames
from videoedit.io.visualize import heatmap_over_frames
from videoedit.methods.base import Artifacts, EditRequest, EditResult, Reconstruction
from videoedit.methods.inverting import InversionEditMethod
from videoedit.motion import FlowCache, build_flow_estimator, video_flows
from videoedit.pipelines.pipeline_keyframe import (
    KEYFRAME_MODES,
    RefineSettings,
    motion_per_step,
    propagate_keyframes,
    refine_frames,
    select_keyframes,
)
from videoedit.pipelines.pipeline_video_edit import VideoEditPipeline

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FlowSettings:
    """Optical flow of the source clip (``method.flow``); see ``videoedit/motion/__init__.py``.

    Attributes:
        backend: ``auto`` (RAFT when its weights are on disk, else OpenCV DIS), ``raft`` or ``dis``.
        raft_weights: a RAFT-large state dict (``None``: torch hub's cache).
        dis_preset: ``ultrafast`` | ``fast`` | ``medium``.
        device: where RAFT runs.
        cache_dir: a :class:`~videoedit.motion.FlowCache` folder; ``None`` = no disk cache.
    """

    backend: str = "auto"
    raft_weights: str | None = None
    dis_preset: str = "medium"
    device: str = "cpu"
    cache_dir: str | None = None


def subset_source(source: SourceVideo, indices: Sequence[int]) -> SourceVideo:
    """The clip restricted to ``indices`` (frames, masks, conditions and clip indices stay aligned)."""
    idx = [int(i) for i in indices]
    return SourceVideo(
        frames=source.frames[idx],
        prompt=source.prompt,
        fps=source.fps,
        name=source.name,
        indices=[source.indices[i] for i in idx],
        masks=None if source.masks is None else source.masks[idx],
        regions=list(source.regions),
        conditions={kind: maps[idx] for kind, maps in source.conditions.items()},
    )


class KeyframePropagateMethod(InversionEditMethod):
    """Edit keyframes with ``keyframe_method``, then propagate them to every frame.

    Args:
        keyframe_method: the method that edits the keyframes (in one batch), e.g. ``DDIMMethod`` with
            consistent self-attention; its inversion settings and steps are this method's.
        num_keyframes: K.
        keyframe_selection: ``even`` (in time) or ``motion`` (evenly in accumulated source motion).
        flow: :class:`FlowSettings` (or its fields).
        occlusion_check: weigh warped keyframes by the forward-backward occlusion test.
        photometric_sigma: weigh them by ``exp(-e / sigma)``, ``e`` the source's own warp error (0..255);
            ``None`` = off.
        refine: :class:`RefineSettings` (or its fields); ``strength: 0`` = no refinement.
    """

    name = "keyframe_propagate"

    def __init__(
        self,
        keyframe_method: InversionEditMethod,
        num_keyframes: int = 4,
        keyframe_selection: str = "even",
        flow: FlowSettings | Mapping | None = None,
        occlusion_check: bool = True,
        photometric_sigma: float | None = 10.0,
        refine: RefineSettings | Mapping | None = None,
    ) -> None:
        if not isinstance(keyframe_method, InversionEditMethod):
            raise ConfigError(
                "method.keyframe_method must be a method config with a _target_ (e.g. the ddim method), "
                f"got {type(keyframe_method).__name__}."
            )
        super().__init__(
            keyframe_method.num_inference_steps, keyframe_method.guidance_scale, keyframe_method.inversion
        )
        if num_keyframes < 1:
            raise ConfigError(f"method.num_keyframes must be >= 1, got {num_keyframes}.")
        if keyframe_selection not in KEYFRAME_MODES:
            raise ConfigError(
                f"method.keyframe_selection must be one of {list(KEYFRAME_MODES)}, got {keyframe_selection!r}."
            )
        if photometric_sigma is not None and photometric_sigma <= 0:
            raise ConfigError(f"method.photometric_sigma must be > 0 or null, got {photometric_sigma}.")
        self.keyframe_method = keyframe_method
        self.num_keyframes = int(num_keyframes)
        self.keyframe_selection = keyframe_selection
        try:
            self.flow = flow if isinstance(flow, FlowSettings) else FlowSettings(**dict(flow or {}))
            self.refine = (
                refine if isinstance(refine, RefineSettings) else RefineSettings(**dict(refine or {}))
            )
        except TypeError as err:
            raise ConfigError(f"Bad method.flow or method.refine settings: {err}") from err
        self.occlusion_check = bool(occlusion_check)
        self.photometric_sigma = None if photometric_sigma is None else float(photometric_sigma)
        self._flows: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    # ------------------------------------------------------------------ delegation
    def check_inputs(self, source: SourceVideo, requests: Sequence[EditRequest]) -> None:
        if self.num_keyframes > source.num_frames:
            raise ConfigError(
                f"method.num_keyframes={self.num_keyframes} exceeds the clip's {source.num_frames} frames: "
                "lower method.num_keyframes or raise data.num_frames."
            )
        self.keyframe_method.check_inputs(source, requests)

    def check_schedule(self, scheduler) -> None:
        self.keyframe_method.check_schedule(scheduler)

    def build_pipeline(self, components) -> VideoEditPipeline:
        return self.keyframe_method.build_pipeline(components)

    @property
    def seed_dependent(self) -> bool:
        return self.keyframe_method.seed_dependent or self.refine.strength > 0

    def inversion_signature(self) -> dict[str, Any]:
        return self.keyframe_method.inversion_signature()

    def inversion_artifacts(
        self, source: SourceVideo, inversion: InversionOutput, pipe: VideoEditPipeline
    ) -> Artifacts:
        """The keyframe method's, on the keyframes (the inversion is theirs)."""
        return self.keyframe_method.inversion_artifacts(
            subset_source(source, self.keyframes(source)), inversion, pipe
        )

    # ------------------------------------------------------------------ flow and keyframes
    def source_flows(self, source: SourceVideo) -> tuple[torch.Tensor, torch.Tensor]:
        """``(forward, backward)`` flows ``(F-1, 2, H, W)`` of the source (memoised, disk-cached if set)."""
        key = tensor_digest(source.frames)
        if key not in self._flows:
            estimator = build_flow_estimator(
                self.flow.backend, self.flow.raft_weights, self.flow.device, self.flow.dis_preset
            )
            frames = source.frames_uint8()
            if self.flow.cache_dir:
                cache = FlowCache(self.flow.cache_dir)
                flows = tuple(cache.flows(frames, estimator, d) for d in ("forward", "backward"))
            else:
                flows = tuple(video_flows(frames, estimator, d) for d in ("forward", "backward"))
            self._flows = {key: flows}  # keep one clip
        return self._flows[key]

    def keyframes(self, source: SourceVideo) -> list[int]:
        """The keyframe indices of ``source`` (the motion mode estimates its flow)."""
        motion = None
        if self.keyframe_selection == "motion" and source.num_frames > 1:
            motion = motion_per_step(self.source_flows(source)[0])
        return select_keyframes(source.num_frames, self.num_keyframes, self.keyframe_selection, motion)

    # ------------------------------------------------------------------ inversion (keyframes only)
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
        """Invert only the keyframes, with the keyframe method (and its cache entry)."""
        keys = self.keyframes(source)
        logger.info("keyframes (%s): %s of %d frames", self.keyframe_selection, keys, source.num_frames)
        return self.keyframe_method.invert(
            pipe,
            subset_source(source, keys),
            None if control is None else control[keys],
            controlnet_conditioning_scale,
            cache,
            model_fingerprint,
            seed=seed,
        )

    def reconstruct(self, pipe, source, prepared, control, controlnet_conditioning_scale) -> Reconstruction:
        """The keyframes' reconstruction (only they are inverted)."""
        keys = self.keyframes(source)
        out = self.keyframe_method.reconstruct(
            pipe,
            subset_source(source, keys),
            prepared,
            None if control is None else control[keys],
            controlnet_conditioning_scale,
        )
        out.reference = source.frames[keys]
        out.definition += f" (keyframes {keys} only)"
        return out

    # ------------------------------------------------------------------ editing
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
        """Edit the keyframes (``inversion`` is theirs), propagate, optionally refine.

        Returns:
            :class:`EditResult` with ``(F, 3, H, W)`` frames, the propagation reliability video
            (``sample/<name>_reliability.mp4``: the reliability blended over the source frames, with a
            colour bar, 1 = explained by the warped keyframes; keyframes marked) and the keyframes and
            stage timings in ``info``.
        """
        keys = self.keyframes(source)
        seconds = {}
        start = time.perf_counter()
        key_result = self.keyframe_method.edit(
            pipe,
            subset_source(source, keys),
            inversion,
            request,
            None if control is None else control[keys],
            controlnet_conditioning_scale,
            generator,
        )
        seconds["keyframes"] = time.perf_counter() - start
        start = time.perf_counter()
        forward, backward = self.source_flows(source)
        propagated = propagate_keyframes(
            key_result.frames.float().cpu(),
            keys,
            forward,
            backward,
            source=source.frames,
            occlusion_check=self.occlusion_check,
            photometric_sigma=self.photometric_sigma,
        )
        seconds["propagation"] = time.perf_counter() - start
        frames = propagated.frames
        if self.refine.num_steps > 0:
            start = time.perf_counter()
            in_between = sorted(set(range(source.num_frames)) - set(keys))
            guidance = self.refine.guidance_scale
            frames = refine_frames(
                pipe,
                frames,
                in_between,
                request.prompt,
                self.refine,
                self.keyframe_method.guidance_scale if guidance is None else guidance,
                generator,
                negative_prompt=request.negative_prompt,
                control=control,
                controlnet_conditioning_scale=controlnet_conditioning_scale,
            )
            seconds["refine"] = time.perf_counter() - start
        reliability = heatmap_over_frames(
            tensor_to_frames(source.frames),
            propagated.reliability,
            "reliability (1: explained by the warped keyframes, 0: not)",
            marks={int(k): "keyframe" for k in keys},
            colormap="viridis",
        )
        videos = {f"sample/{request.name}_reliability.mp4": reliability}
        for rel, video in key_result.videos.items():
            videos[rel.replace(".mp4", "_keyframes.mp4")] = video
        info = {
            **key_result.info,
            "keyframes": keys,
            "mean_reliability": round(float(propagated.reliability.mean()), 4),
            "stage_seconds": {k: round(v, 3) for k, v in seconds.items()},
        }
        return EditResult(
            frames=frames, videos=videos, images=key_result.images, arrays=key_result.arrays, info=info
        )

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "keyframe_method": self.keyframe_method.describe(),
            "num_keyframes": self.num_keyframes,
            "keyframe_selection": self.keyframe_selection,
            "flow": asdict(self.flow),
            "occlusion_check": self.occlusion_check,
            "photometric_sigma": self.photometric_sigma,
            "refine": asdict(self.refine),
        }
