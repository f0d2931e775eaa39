"""Dual-flow attention editing (see :mod:`videoedit.attention.dualflow`), in two modes.

* **lockstep**: the standard CFG DDIM loop over all frames at once (from the DDIM inversion, with
  ControlNet); frame ``t`` attends to frame ``t-1`` of the same UNet batch, warped by the source flow
  ``t -> t-1``, and to the memory bank's keyframes of the same batch. The generated flow is measured
  every ``flow_update_interval`` steps between the current clean-image predictions ``x0`` of
  neighbouring frames: a latent-to-RGB *preview* at latent resolution (cheap, approximate) or the VAE
  decode (exact, slower).
* **streaming**: frames are edited one after another. While frame ``t-1`` is denoised every dual-flow
  layer records its K/V per step; frame ``t`` reuses them (warped) and the keyframes' stored K/V at the
  same layer and step. Only the previous frame's store, the current one and the bank's (at most
  ``1 + bank_size``) are kept, so memory does not grow with the clip length. The generated flow of
  frame ``t`` is measured between its current ``x0`` and the finished frame ``t-1``.

  A store holds K and V of every dual-flow layer at every active step, on the UNet's device: per step,
  ``2 (K, V) x 2 (CFG) x sum over layers of tokens x channels`` values. For SD-1.5 at 512² (all 16
  self-attention layers: 5 at 4096 tokens x 320, 5 at 1024 x 640, 5 at 256 x 1280, 1 at 64 x 1280) that
  is 46.2 M values, **~92 MB per step per store in fp16** (185 MB in fp32), so ~4.6 GB per store over 50
  steps and up to ``3 + bank_size`` stores at once (current, previous, anchor, dynamic keyframes; the
  previous frame's is shared when it is a keyframe). ``method.layers``, ``method.resolutions`` and
  ``method.step_range`` bound it. The finished frames are kept as uint8 on the CPU (``"pt"`` output is
  therefore quantised to 8 bits in this mode), the bank's decision log is capped
  (:class:`MemoryBank` ``max_history``): nothing else grows with the clip besides the output itself
  (frames, latents, masks ``(F, 1, h, w)`` and per-frame numbers).

Shapes: frames ``(F, 3, H, W)`` in [-1, 1]; latents ``(F, 4, h, w)``; flows ``(F, 2, h, w)`` at latent
resolution in latent pixels, index ``t`` holding the flow of frame ``t`` (``t -> t-1`` or ``t-1 -> t``;
index 0 is unused and zero).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from videoedit.attention.dualflow import (
    PREV_REUSE,
    DualFlowAttnProcessor,
    DualFlowContext,
    MemoryBank,
    lockstep_banks,
    select_layers,
    step_in_range,
)
from videoedit.attention.install import attention_layer_names, attention_processors
from videoedit.attention.state import StepState
from videoedit.errors import ConfigError
from videoedit.inversion.ddim import InversionOutput, sampling_timesteps
from videoedit.io.transforms import frames_to_tensor, tensor_to_frames
from videoedit.motion import FlowCache, FlowEstimator, resize_flow, video_flows
from videoedit.motion.discrepancy import (
    FrameMasks,
    MaskTracker,
    estimate_flow,
    frame_masks,
    mean_discrepancy,
)
from videoedit.numerics import check_finite
from videoedit.pipelines.pipeline_video_edit import GuidanceEmbeddings, VideoEditOutput, VideoEditPipeline

FlowFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# Approximate linear map from SD-1.x latents (scaled by the VAE's scaling factor) to RGB in about
# [-1, 1]: the community's widely used preview coefficients for SD-1.5. Only a preview: colours and
# fine detail are off, but moving structures move, which is all a flow at latent resolution needs.
LATENT_RGB_FACTORS = (
    (0.3512, 0.2297, 0.3227),
    (0.3250, 0.4974, 0.2350),
    (-0.2829, 0.1762, 0.2721),
    (-0.2120, -0.2616, -0.7177),
)


def latent_preview(latents: torch.Tensor) -> torch.Tensor:
    """Approximate RGB ``(F, 3, h, w)`` in [-1, 1] of latents ``(F, 4, h, w)`` (see ``LATENT_RGB_FACTORS``)."""
    factors = torch.tensor(LATENT_RGB_FACTORS, dtype=torch.float32, device=latents.device)
    return torch.einsum("fchw,cr->frhw", latents.float(), factors).clamp(-1, 1)


@dataclass
class LatentSourceFlows:
    """Source flows at latent resolution (see the module docstring for the layout; not
    :class:`videoedit.metrics.temporal.SourceFlows`, which holds ``F-1`` image-resolution flows).

    Attributes:
        backward: ``(F, 2, h, w)``, index ``t``: ``t -> t-1`` (warps frame ``t-1`` into frame ``t``).
        forward: ``(F, 2, h, w)``, index ``t``: ``t-1 -> t`` (for the occlusion check).
    """

    backward: torch.Tensor
    forward: torch.Tensor

    EXTRA_KEYS = ("dualflow.flow_backward", "dualflow.flow_forward")

    @classmethod
    def compute(
        cls,
        frames: torch.Tensor | np.ndarray,
        estimator: FlowEstimator,
        size: tuple[int, int],
        cache: FlowCache | None = None,
    ) -> LatentSourceFlows:
        """Flows of frames ``(F, 3, H, W)`` in [-1, 1] (or ``(F, H, W, 3)`` uint8) estimated at frame
        resolution (:func:`videoedit.motion.video_flows`, through ``cache`` when given), resized to ``size``."""
        size = tuple(size)
        num = frames.shape[0]
        zeros = torch.zeros(1, 2, *size)
        if num < 2:
            return cls(zeros.repeat(num, 1, 1, 1), zeros.repeat(num, 1, 1, 1))
        get = video_flows if cache is None else cache.flows
        # index t: t -> t-1 (video_flows' "backward" f_t+1->t, shifted by one) and t-1 -> t
        bwd, fwd = (resize_flow(get(frames, estimator, d).float(), size) for d in ("backward", "forward"))
        return cls(torch.cat([zeros, bwd]), torch.cat([zeros, fwd]))

    def to_extras(self) -> dict[str, torch.Tensor]:
        return dict(
            zip(self.EXTRA_KEYS, (self.backward.contiguous(), self.forward.contiguous()), strict=True)
        )

    @classmethod
    def from_extras(cls, extras: dict[str, torch.Tensor]) -> LatentSourceFlows | None:
        if not all(k in extras for k in cls.EXTRA_KEYS):
            return None
        return cls(*(extras[k].float() for k in cls.EXTRA_KEYS))


@dataclass
class DualFlowSettings:
    """Everything the dual-flow pipeline needs besides the usual sampling arguments.

    See ``configs/method/dualflow.yaml`` for the meaning and defaults of each field.
    """

    mode: Literal["lockstep", "streaming"] = "lockstep"
    bias_scale: float = 10.0
    prev_reuse: Literal["global", "window", "blend"] = "window"
    window_size: int = 3
    window_distance_bias: float = 0.5
    window_prior: float | None = None
    blend_weight: float = 0.5
    local_weight: float = 1.0
    global_weight: float = 1.0
    discrepancy_tolerance: float = 1.0
    occlusion_alpha: float = 0.01
    occlusion_beta: float = 0.5
    bank_size: int = 2
    use_anchor: bool = True
    motion_threshold: float = 2.0
    quality_threshold: float = 0.2
    generated_flow: Literal["preview", "decode"] = "preview"
    flow_update_interval: int = 1
    layers: Sequence[str] = ("*attn1",)
    resolutions: Sequence[int] | None = None
    step_range: tuple[float, float] = (0.0, 1.0)
    attention_chunk: int | None = 4

    def __post_init__(self) -> None:
        if self.mode not in ("lockstep", "streaming"):
            raise ConfigError(f"method.mode must be 'lockstep' or 'streaming', got {self.mode!r}.")
        if self.generated_flow not in ("preview", "decode"):
            raise ConfigError(
                f"method.generated_flow must be 'preview' or 'decode', got {self.generated_flow!r}."
            )
        if self.flow_update_interval < 1:
            raise ConfigError(f"method.flow_update_interval must be >= 1, got {self.flow_update_interval}.")
        if self.prev_reuse not in PREV_REUSE:
            raise ConfigError(
                f"method.prev_reuse must be one of {', '.join(PREV_REUSE)}, got {self.prev_reuse!r}."
            )
        if self.window_size < 1 or self.window_size % 2 == 0:
            raise ConfigError(f"method.window_size must be an odd number >= 1, got {self.window_size}.")
        if self.window_distance_bias < 0:
            raise ConfigError(f"method.window_distance_bias must be >= 0, got {self.window_distance_bias}.")
        if not 0 <= self.blend_weight <= 1:
            raise ConfigError(f"method.blend_weight must be in [0, 1], got {self.blend_weight}.")
        if self.bias_scale < 0:
            raise ConfigError(f"method.bias_scale (lambda) must be >= 0, got {self.bias_scale}.")
        if self.bank_size < 0:
            raise ConfigError(f"method.bank_size must be >= 0, got {self.bank_size}.")
        if self.discrepancy_tolerance <= 0:
            raise ConfigError(f"method.discrepancy_tolerance must be > 0, got {self.discrepancy_tolerance}.")
        if self.local_weight < 0 or self.global_weight < 0 or self.local_weight + self.global_weight <= 0:
            raise ConfigError(
                "method.local_weight and method.global_weight must be >= 0 and not both 0, got "
                f"{self.local_weight} and {self.global_weight}."
            )
        start, end = (float(x) for x in self.step_range)
        if not 0 <= start <= end <= 1:
            raise ConfigError(
                f"method.step_range must be [start, end] with 0 <= start <= end <= 1, got {self.step_range}."
            )
        self.step_range = (start, end)
        if self.resolutions is not None:
            bad = [r for r in self.resolutions if r not in (1, 2, 4, 8)]
            if bad:
                raise ConfigError(
                    f"method.resolutions are token-grid downsample factors (1, 2, 4, 8) or null, got {bad}."
                )
        if isinstance(self.layers, str):
            self.layers = [self.layers]

    def update_due(self, step: int, num_steps: int) -> bool:
        """Whether to re-measure the generated flow after step ``step``: when the next step is one where
        the processors act, every ``flow_update_interval`` steps counted from the first active step (so
        that the first active steps already use a generated flow when the range starts after step 0)."""
        nxt = step + 1
        if nxt >= num_steps or not step_in_range(nxt, num_steps, self.step_range):
            return False
        first = next(i for i in range(num_steps) if step_in_range(i, num_steps, self.step_range))
        return (nxt - first) % self.flow_update_interval == 0

    def new_bank(self) -> MemoryBank:
        return MemoryBank(self.bank_size, self.motion_threshold, self.quality_threshold, self.use_anchor)


@dataclass
class DualFlowOutput(VideoEditOutput):
    """``frames``/``latents`` as :class:`VideoEditOutput`, plus ``masks (F, 1, h, w)`` (the combined
    discrepancy of the output, frame 0 zero), the final ``keyframes`` and facts for ``metrics.json``
    (``mean_discrepancy``: per-frame mask means; ``admission_discrepancy``: per-frame admission scores)."""

    masks: torch.Tensor | None = None
    keyframes: list[int] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class _ModeResult:
    """What a mode's loop returns: latents ``(F, 4, h, w)``, decoded frames (streaming: ``(F, H, W, 3)``
    uint8) or ``None``, masks ``(F, 1, h, w)``, the final keyframes and facts."""

    latents: torch.Tensor
    frames: np.ndarray | None
    masks: torch.Tensor
    keyframes: list[int]
    info: dict[str, Any]


def _admissions(bank: MemoryBank) -> list[dict[str, Any]]:
    """The bank's decisions (its capped history) for ``metrics.json``."""
    return [
        {
            "frame": a.frame,
            "motion": round(a.motion, 3),
            "discrepancy": round(a.discrepancy, 4),
            "admitted": a.admitted,
            "evicted": a.evicted,
        }
        for a in bank.history
    ]


def _store_bytes(stores: Sequence[dict | None]) -> int:
    """Bytes held by K/V stores (tensors shared between stores counted once)."""
    seen: dict[int, int] = {}
    for store in stores:
        for k, v in (store or {}).values():
            for x in (k, v):
                seen[id(x)] = x.numel() * x.element_size()
    return sum(seen.values())


class DualFlowPipeline(VideoEditPipeline):
    """DDIM inversion + CFG sampling with dual-flow attention (lockstep or streaming)."""

    # ------------------------------------------------------------------ helpers
    def generated_flows(
        self, x0: torch.Tensor, previous: torch.Tensor | None, settings: DualFlowSettings, estimator: FlowFn
    ) -> torch.Tensor:
        """Generated flows ``t -> t-1`` at latent resolution ``(F, 2, h, w)`` between clean-image
        predictions ``x0 (F, 4, h, w)``; frame 0's comes from ``previous (1, 4, h, w)`` (zeros when ``None``)."""
        size = tuple(x0.shape[-2:])
        seq = x0 if previous is None else torch.cat([previous.to(x0), x0])
        if seq.shape[0] < 2:
            return torch.zeros(x0.shape[0], 2, *size)
        images = latent_preview(seq) if settings.generated_flow == "preview" else self.decode_latents(seq)
        flows = estimate_flow(estimator, images[1:], images[:-1], size=size)
        if previous is None:
            flows = torch.cat([torch.zeros(1, 2, *size), flows])
        return flows

    def check_layers(self, settings: DualFlowSettings) -> list[str]:
        """The self-attention layers ``settings.layers`` selects; raises when there are none."""
        names = select_layers(attention_layer_names(self.unet, "attn1"), settings.layers)
        if not names:
            raise ConfigError(
                f"method.layers {list(settings.layers)} match no self-attention layer of this UNet "
                f"(e.g. {attention_layer_names(self.unet, 'attn1')[0]!r}); use patterns such as 'up_blocks.*'."
            )
        return names

    def _processors(
        self, context: DualFlowContext, settings: DualFlowSettings
    ) -> dict[str, DualFlowAttnProcessor]:
        return {n: DualFlowAttnProcessor(n, context) for n in self.check_layers(settings)}

    def _step(
        self,
        latents: torch.Tensor,
        i: int,
        t: int,
        num_steps: int,
        embeddings: GuidanceEmbeddings,
        guidance_scale: float,
        control: torch.Tensor | None,
        controlnet_conditioning_scale: float,
        state: StepState,
        frame_ids: tuple[int, ...],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One CFG DDIM step; returns ``(x_{t-1}, x0 prediction)``."""
        state.update(phase="sample", step_index=i, timestep=t, num_steps=num_steps, frame_ids=frame_ids)
        eps = self.guided_noise(
            latents, t, embeddings, guidance_scale, control, controlnet_conditioning_scale, state
        )
        out = self.scheduler.step(eps, t, latents)
        return check_finite(out.prev_sample, "latents", state=state), out.pred_original_sample

    # ------------------------------------------------------------------ call
    @torch.no_grad()
    def __call__(
        self,
        prompt: str,
        inversion: InversionOutput,
        flows: LatentSourceFlows,
        settings: DualFlowSettings,
        flow_estimator: FlowFn,
        negative_prompt: str = "",
        control: np.ndarray | torch.Tensor | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 7.5,
        controlnet_conditioning_scale: float = 1.0,
        state: StepState | None = None,
        output_type: str = "pt",
    ) -> DualFlowOutput:
        """Edit the inverted clip towards ``prompt`` with dual-flow attention.

        Args:
            prompt: target prompt.
            inversion: the source's inversion (its latents at the first editing timestep start the loop).
            flows: the source flows at latent resolution (:class:`LatentSourceFlows`).
            settings: :class:`DualFlowSettings` (mode, lambda, masks, bank, layers, steps).
            flow_estimator: ``fn(frames_a, frames_b) -> flow a -> b`` on ``(N, 3, H, W)`` frames in [-1, 1]
                (an :class:`videoedit.motion.FlowEstimator`), for the generated flow.
            control: ControlNet maps ``(F, H, W, 3)`` uint8 (``None`` without ControlNet).
            output_type: ``"pt"``, ``"np"`` or ``"latent"`` (streaming keeps finished frames as uint8, so
                its ``"pt"`` frames are 8-bit values mapped back to [-1, 1]).

        The loop is deterministic (DDIM, eta = 0): there is no generator.

        Returns:
            :class:`DualFlowOutput`; ``frames (F, 3, H, W)`` in [-1, 1] for ``"pt"``, ``(F, H, W, 3)``
            uint8 for ``"np"``, ``None`` for ``"latent"``.
        """
        # 1. check inputs
        timesteps = sampling_timesteps(self.scheduler, num_inference_steps)
        if timesteps[0] not in inversion.latents:
            raise ValueError(
                f"the inversion has no latents at t={timesteps[0]}: it was made for another number of steps"
            )
        start = inversion.at(timesteps[0])
        if flows.backward.shape[0] != start.shape[0] or tuple(flows.backward.shape[-2:]) != tuple(
            start.shape[-2:]
        ):
            raise ValueError(
                f"source flows {tuple(flows.backward.shape)} do not match the latents {tuple(start.shape)}"
            )
        # 2. encode the prompts
        embeddings = GuidanceEmbeddings(
            uncond=self.encode_prompt([negative_prompt]), cond=self.encode_prompt([prompt])
        )
        # 3. prepare latents, control, the shared context and the processors
        # lockstep moves every frame to the device at once; streaming one frame (and its control) at a time
        latents = start
        state = state or StepState()
        context = DualFlowContext(
            state=state,
            mode=settings.mode,
            bias_scale=settings.bias_scale,
            step_range=settings.step_range,
            resolutions=None if settings.resolutions is None else tuple(settings.resolutions),
            chunk_size=settings.attention_chunk,
            prev_reuse=settings.prev_reuse,
            window_size=settings.window_size,
            distance_bias=settings.window_distance_bias,
            window_prior=settings.window_prior,
            blend_weight=settings.blend_weight,
        )
        # 4. denoise with the processors installed
        run = self._lockstep if settings.mode == "lockstep" else self._streaming
        with attention_processors(self.unet, self._processors(context, settings)):
            result = run(
                latents,
                [int(t) for t in timesteps],
                embeddings,
                guidance_scale,
                control,
                controlnet_conditioning_scale,
                state,
                context,
                flows,
                settings,
                flow_estimator,
                output_type,
            )
        info = {"mode": settings.mode, "keyframes": result.keyframes, **result.info}
        # 5. decode (streaming decoded each frame as soon as it was finished)
        if result.frames is None:
            out = self.finish(result.latents, output_type)
        else:
            frames = result.frames if output_type == "np" else frames_to_tensor(result.frames)
            out = VideoEditOutput(frames=frames, latents=result.latents)
        return DualFlowOutput(
            frames=out.frames, latents=out.latents, masks=result.masks, keyframes=result.keyframes, info=info
        )

    # ------------------------------------------------------------------ lockstep
    def _lockstep(
        self,
        latents: torch.Tensor,
        timesteps: list[int],
        embeddings: GuidanceEmbeddings,
        guidance_scale: float,
        control: np.ndarray | torch.Tensor | None,
        controlnet_conditioning_scale: float,
        state: StepState,
        context: DualFlowContext,
        flows: LatentSourceFlows,
        settings: DualFlowSettings,
        estimator: FlowFn,
        output_type: str,
    ) -> _ModeResult:
        num = latents.shape[0]
        frame_ids = tuple(range(num))
        latents = latents.to(self.device, self.unet.dtype)
        control = self.prepare_control(control)

        def update(gen_bwd: torch.Tensor) -> tuple[FrameMasks, MemoryBank]:
            masks = frame_masks(
                flows.backward,
                flows.forward,
                gen_bwd,
                settings.discrepancy_tolerance,
                settings.local_weight,
                settings.global_weight,
                settings.occlusion_alpha,
                settings.occlusion_beta,
            )
            bank = settings.new_bank()
            bank_index = lockstep_banks(bank, flows.backward, masks.admission.tolist())
            context.set_frames(flows.backward, masks.combined, bank_index=bank_index)
            return masks, bank

        # before the first prediction the generated motion is assumed to follow the source (the
        # inverted latents reproduce it): only occluded pixels are discrepant
        update(flows.backward)
        updates = 0
        for i, t in enumerate(self.progress_bar(timesteps)):
            latents, x0 = self._step(
                latents,
                i,
                t,
                len(timesteps),
                embeddings,
                guidance_scale,
                control,
                controlnet_conditioning_scale,
                state,
                frame_ids,
            )
            if settings.update_due(i, len(timesteps)):
                update(self.generated_flows(x0, None, settings, estimator))
                updates += 1
        final, bank = update(self.generated_flows(latents, None, settings, estimator))
        info = {
            "mask_updates": updates,
            "mean_discrepancy": [round(float(x), 4) for x in mean_discrepancy(final.combined)],
            "admission_discrepancy": [round(float(x), 4) for x in final.admission],
            "admissions": _admissions(bank),
        }
        return _ModeResult(latents, None, final.combined.cpu(), bank.frames, info)

    # ------------------------------------------------------------------ streaming
    def _streaming(
        self,
        latents: torch.Tensor,
        timesteps: list[int],
        embeddings: GuidanceEmbeddings,
        guidance_scale: float,
        control: np.ndarray | torch.Tensor | None,
        controlnet_conditioning_scale: float,
        state: StepState,
        context: DualFlowContext,
        flows: LatentSourceFlows,
        settings: DualFlowSettings,
        estimator: FlowFn,
        output_type: str,
    ) -> _ModeResult:
        num = latents.shape[0]
        tracker = MaskTracker(
            settings.discrepancy_tolerance,
            settings.local_weight,
            settings.global_weight,
            settings.occlusion_alpha,
            settings.occlusion_beta,
        )
        bank = settings.new_bank()
        stores: dict[int, dict] = {}  # keyframe -> its K/V store
        prev_store: dict | None = None
        prev_final: torch.Tensor | None = None  # (1, 4, h, w) finished previous frame
        out_latents, out_masks, scores = [], [], []
        out_frames: np.ndarray | None = None  # (F, H, W, 3) uint8 on the CPU, filled frame by frame
        peak_bytes, updates = 0, 0
        progress = self.progress_bar(total=num * len(timesteps))
        for f in range(num):
            src_bwd, src_fwd = flows.backward[f : f + 1], flows.forward[f : f + 1]

            def update(gen_bwd: torch.Tensor, f: int = f, src_bwd=src_bwd, src_fwd=src_fwd) -> FrameMasks:
                masks = tracker.masks(src_bwd, src_fwd, gen_bwd)
                context.set_frames(src_bwd, masks.combined, prev_valid=torch.tensor([f > 0]))
                return masks

            context.record = {}
            context.prev_kv = prev_store
            context.bank_kv = [stores[k] for k in bank.frames if k in stores]
            update(src_bwd)  # see the lockstep comment: start from the source's motion
            x = latents[f : f + 1].to(self.device, self.unet.dtype)
            frame_control = None if control is None else self.prepare_control(control[f : f + 1])
            for i, t in enumerate(timesteps):
                x, x0 = self._step(
                    x,
                    i,
                    t,
                    len(timesteps),
                    embeddings,
                    guidance_scale,
                    frame_control,
                    controlnet_conditioning_scale,
                    state,
                    (f,),
                )
                progress.update()
                if f > 0 and settings.update_due(i, len(timesteps)):
                    update(self.generated_flows(x0, prev_final, settings, estimator))
                    updates += 1
            # the frame is finished: its masks, the global reference, the bank and the caches
            gen_bwd = (
                self.generated_flows(x, prev_final, settings, estimator)
                if f > 0
                else torch.zeros_like(src_bwd)
            )
            masks = tracker.masks(src_bwd, src_fwd, gen_bwd)
            tracker.commit()  # the flows of this last masks() call become the next frame's reference
            peak_bytes = max(peak_bytes, _store_bytes([prev_store, context.record, *stores.values()]))
            if f == 0:
                bank.start(0)
                admitted = bank.use_anchor
            else:
                admitted = bank.observe(f, src_bwd, float(masks.admission[0])).admitted
            if admitted:
                stores[f] = context.record
            stores = {k: v for k, v in stores.items() if k in bank.frames}
            prev_store, prev_final = context.record, x
            context.record, context.prev_kv, context.bank_kv = None, None, []
            out_masks.append(masks.combined.cpu())
            scores.append(round(float(masks.admission[0]), 4))
            out_latents.append(x.cpu())
            if output_type != "latent":
                frame = tensor_to_frames(self.decode_latents(x))
                if out_frames is None:
                    out_frames = np.empty((num, *frame.shape[1:]), dtype=np.uint8)
                out_frames[f] = frame[0]
        progress.close()
        masks = torch.cat(out_masks)
        info = {
            "mask_updates": updates,
            "mean_discrepancy": [round(float(v), 4) for v in mean_discrepancy(masks)],
            "admission_discrepancy": scores,
            "kv_cache_peak_bytes": peak_bytes,
            "admissions_observed": bank.observed,
            "admissions": _admissions(bank),
        }
        return _ModeResult(torch.cat(out_latents), out_frames, masks, bank.frames, info)
