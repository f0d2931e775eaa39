"""``method=dualflow``: dual-flow attention (flow-gated reuse of the previous edited frame + a memory
bank of keyframes), in lockstep or streaming mode. See :mod:`videoedit.attention.dualflow` and
:mod:`videoedit.pipelines.pipeline_dualflow`."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from videoedit.attention.state import StepState
from videoedit.data.source import SourceVideo
from videoedit.errors import ConfigError
from videoedit.inversion.ddim import InversionOutput
from videoedit.io.transforms import tensor_to_frames
from videoedit.io.visualize import heatmap_over_frames
from videoedit.methods.base import EditRequest, EditResult
from videoedit.methods.inverting import InversionEditMethod, InversionSettings
from videoedit.motion import (
    FlowCache,
    FlowEstimator,
    RAFTFlow,
    build_flow_estimator,
)
from videoedit.pipelines.pipeline_dualflow import DualFlowPipeline, DualFlowSettings, LatentSourceFlows

logger = logging.getLogger(__name__)


DISCREPANCY_LABEL = "discrepancy M (0: motion agrees, previous frame reused; 1: bank read)"


def discrepancy_video(
    frames: np.ndarray, masks: torch.Tensor, info: Mapping[str, Any], use_anchor: bool = True
) -> np.ndarray:
    """The discrepancy masks ``(F, 1, h, w)`` blended over the source frames ``(F, H, W, 3)`` uint8, with a
    colour bar, the anchor and every frame the bank admitted (``info["admissions"]``) marked:
    ``(F, H, W + panel, 3)`` uint8 (:func:`videoedit.io.visualize.heatmap_over_frames`)."""
    marks = {0: "anchor"} if use_anchor else {}
    for decision in info.get("admissions", []):
        if decision["admitted"]:
            marks[int(decision["frame"])] = "keyframe"
    return heatmap_over_frames(frames, masks, DISCREPANCY_LABEL, 0.0, 1.0, marks=marks)


class DualFlowMethod(InversionEditMethod):
    """Dual-flow attention editing on top of DDIM inversion (+ ControlNet).

    Args:
        num_inference_steps, guidance_scale, inversion: see :class:`EditMethod`.
        mode: ``"lockstep"`` (all frames denoised together) or ``"streaming"`` (frame after frame,
            memory independent of the clip length).
        bias_scale: lambda of the attention bias (soft ~1-10, hard 1e4 as the change log).
        prev_reuse: which previous-frame keys a query reads: ``"window"`` (the ``k x k`` tokens around
            its flow target), ``"blend"`` (the warped value, gated by ``1 - M``) or ``"global"`` (all
            warped tokens: the change log's form, where the flow acts through ``M`` only).
        window_size: ``k`` (odd) of the window.
        window_distance_bias: ``gamma``, the window keys' bias per squared token from the flow target.
        window_prior: ``beta``, the window keys' prior; ``None`` = the prior weight the global form's
            ``N`` keys give the previous frame.
        blend_weight: the blend's gate where ``M = 0``.
        local_weight, global_weight: weights of the local (``t -> t-1``) and global (``t -> 0``) masks in
            the combined mask.
        discrepancy_tolerance: flow disagreement (latent pixels) at which a mask saturates at 1.
        occlusion_alpha, occlusion_beta: the forward-backward check (UnFlow).
        bank_size: dynamic keyframes kept (0 = anchor only).
        use_anchor: keep the first frame in the bank.
        motion_threshold: accumulated source motion (mean latent pixels) before a new keyframe.
        quality_threshold: maximum mean discrepancy of a new keyframe.
        generated_flow: ``"preview"`` (latent-to-RGB projection) or ``"decode"`` (VAE decode).
        flow_update_interval: recompute the generated flow every this many steps.
        layers: ``fnmatch`` patterns of the self-attention layers that use dual-flow attention.
        resolutions: token-grid downsample factors (1, 2, 4, 8) it applies to; ``None`` = all.
        step_range: ``[start, end]`` fraction of the steps it applies to.
        attention_chunk: batch items per attention call (bounds the bias' memory).
        flow_backend: ``"auto"`` (RAFT when its weights are on disk, else DIS), ``"raft"`` or ``"dis"``.
        raft_weights: a RAFT-large state dict (else torch hub's cache).
        dis_preset: OpenCV DIS preset.
        flow_cache_dir: a :class:`~videoedit.motion.FlowCache` folder for the source flows (image
            resolution, reused across inversion settings); ``None`` = no disk cache (they are still cached
            with the inversion).
        save_masks: write the discrepancy masks blended over the source, with a colour bar and the
            anchor/keyframes marked, as ``sample/<edit>_discrepancy.mp4``, and their values ``(F, h, w)``
            at latent resolution as ``sample/<edit>_discrepancy.npy``.
    """

    name = "dualflow"
    pipeline_class = DualFlowPipeline

    def __init__(
        self,
        num_inference_steps: int = 50,
        guidance_scale: float = 7.5,
        inversion: InversionSettings | Mapping | None = None,
        mode: str = "lockstep",
        bias_scale: float = 10.0,
        prev_reuse: str = "window",
        window_size: int = 3,
        window_distance_bias: float = 0.5,
        window_prior: float | None = None,
        blend_weight: float = 0.5,
        local_weight: float = 1.0,
        global_weight: float = 1.0,
        discrepancy_tolerance: float = 1.0,
        occlusion_alpha: float = 0.01,
        occlusion_beta: float = 0.5,
        bank_size: int = 2,
        use_anchor: bool = True,
        motion_threshold: float = 2.0,
        quality_threshold: float = 0.2,
        generated_flow: str = "preview",
        flow_update_interval: int = 1,
        layers: Sequence[str] | str = ("*attn1",),
        resolutions: Sequence[int] | None = None,
        step_range: Sequence[float] = (0.0, 1.0),
        attention_chunk: int | None = 4,
        flow_backend: str = "auto",
        raft_weights: str | None = None,
        dis_preset: str = "medium",
        flow_cache_dir: str | None = None,
        save_masks: bool = True,
    ) -> None:
        super().__init__(num_inference_steps, guidance_scale, inversion)
        if flow_backend not in ("auto", "raft", "dis"):
            raise ConfigError(f"method.flow_backend must be auto, raft or dis, got {flow_backend!r}.")
        if len(tuple(step_range)) != 2:
            raise ConfigError(f"method.step_range must be [start, end], got {step_range}.")
        self.settings = DualFlowSettings(
            mode=mode,
            bias_scale=float(bias_scale),
            prev_reuse=prev_reuse,
            window_size=int(window_size),
            window_distance_bias=float(window_distance_bias),
            window_prior=None if window_prior is None else float(window_prior),
            blend_weight=float(blend_weight),
            local_weight=float(local_weight),
            global_weight=float(global_weight),
            discrepancy_tolerance=float(discrepancy_tolerance),
            occlusion_alpha=float(occlusion_alpha),
            occlusion_beta=float(occlusion_beta),
            bank_size=int(bank_size),
            use_anchor=bool(use_anchor),
            motion_threshold=float(motion_threshold),
            quality_threshold=float(quality_threshold),
            generated_flow=generated_flow,
            flow_update_interval=int(flow_update_interval),
            layers=[layers] if isinstance(layers, str) else list(layers),
            resolutions=None if resolutions is None else [int(r) for r in resolutions],
            step_range=tuple(step_range),
            attention_chunk=None if attention_chunk is None else int(attention_chunk),
        )
        self.flow_backend, self.raft_weights, self.dis_preset = flow_backend, raft_weights, dis_preset
        self.flow_cache_dir = flow_cache_dir
        self.save_masks = save_masks
        self._estimator: FlowEstimator | None = None

    # ------------------------------------------------------------------ flows
    def flow_estimator(self, device: torch.device | str | None = None) -> FlowEstimator:
        """The configured estimator (built once, on the CPU). RAFT is moved to ``device`` when one is
        given; ``None`` (settings, checks) leaves it where it is."""
        if self._estimator is None:
            self._estimator = build_flow_estimator(
                self.flow_backend, self.raft_weights, "cpu", self.dis_preset
            )
        est = self._estimator
        if device is not None and isinstance(est, RAFTFlow) and str(est.device) != str(device):
            est.model.to(device)
            est.device = str(device)
        return est

    def source_flows(self, pipe: DualFlowPipeline, source: SourceVideo) -> LatentSourceFlows:
        h, w = source.size
        size = (h // pipe.vae_scale_factor, w // pipe.vae_scale_factor)
        cache = FlowCache(self.flow_cache_dir) if self.flow_cache_dir else None
        return LatentSourceFlows.compute(source.frames, self.flow_estimator(pipe.device), size, cache)

    # ------------------------------------------------------------------ inversion
    def inversion_signature(self) -> dict[str, Any]:
        # the source flows are computed with the inversion and cached with it
        return {
            "dualflow_source_flows": {**self.flow_estimator().settings(), "resolution": "latent", "format": 1}
        }

    @contextlib.contextmanager
    def inversion_context(
        self, pipe: DualFlowPipeline, source: SourceVideo, state: StepState
    ) -> Iterator[dict[str, torch.Tensor]]:
        extras = self.source_flows(pipe, source).to_extras()
        yield extras

    # ------------------------------------------------------------------ editing
    def check_inputs(self, source: SourceVideo, requests: Sequence[EditRequest]) -> None:
        super().check_inputs(source, requests)
        if any(r.local_prompts for r in requests):
            logger.info("method=dualflow uses only the full prompt; local prompts are ignored")
        try:
            self.flow_estimator()
        except FileNotFoundError as err:
            raise ConfigError(f"method.flow_backend={self.flow_backend!r}: {err}") from err

    def build_pipeline(self, components) -> DualFlowPipeline:
        pipe = super().build_pipeline(components)
        pipe.check_layers(self.settings)  # fail before the inversion, not after it
        return pipe

    def edit(
        self,
        pipe: DualFlowPipeline,
        source: SourceVideo,
        inversion: InversionOutput,
        request: EditRequest,
        control: np.ndarray | None,
        controlnet_conditioning_scale: float,
        generator: torch.Generator,
    ) -> EditResult:
        flows = LatentSourceFlows.from_extras(inversion.extras)
        if flows is None:
            logger.warning("the inversion carries no source flows (older cache entry?): computing them now")
            flows = self.source_flows(pipe, source)
        out = pipe(
            prompt=request.prompt,
            inversion=inversion,
            flows=flows,
            settings=self.settings,
            flow_estimator=self.flow_estimator(pipe.device),
            negative_prompt=request.negative_prompt,
            control=control,
            num_inference_steps=self.num_inference_steps,
            guidance_scale=self.guidance_scale,
            controlnet_conditioning_scale=controlnet_conditioning_scale,
        )  # DDIM with eta = 0: deterministic, the generator is not needed
        # the warp error of the output is measured for every run by videoedit/metrics (metrics.json "quality")
        info = {"dualflow": out.info}
        videos, arrays = {}, {}
        if self.save_masks and out.masks is not None:
            videos[f"sample/{request.name}_discrepancy.mp4"] = discrepancy_video(
                tensor_to_frames(source.frames), out.masks, out.info, self.settings.use_anchor
            )
            arrays[f"sample/{request.name}_discrepancy.npy"] = out.masks[:, 0].float().cpu().numpy()
        return EditResult(frames=out.frames, videos=videos, arrays=arrays, info=info)

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            **asdict(self.settings),
            "flow": self.flow_estimator().settings(),
        }
