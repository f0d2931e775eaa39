"""Keyframe edit, then propagate: the pieces that turn K edited keyframes into a whole clip.

1. :func:`select_keyframes`: K frames, evenly spaced or evenly spaced in accumulated motion.
2. :func:`propagate_keyframes`: every other frame is made from the nearest edited keyframes before and
   after it, backward-warped along the **source** optical flow and blended with occlusion-aware weights.
3. :func:`refine_frames`: optionally, a short low-strength SDEdit pass over the propagated frames
   (noise their latents to a low level, denoise a few steps with the target prompt and ControlNet).

Blending (frame ``t`` between keyframes ``a < t < b``; flows follow ``videoedit/motion/__init__.py``)::

    W_k  = warp(E_k, flow_t->k)                                 k in {a, b}, E_k the edited keyframe
    v_k  = [not occluded] * exp(-e_k / sigma)                   in [0, 1], per pixel
           occluded: forward-backward check of flow_t->k against flow_k->t (incl. leaving the frame)
           e_k = |S_t - warp(S_k, flow_t->k)| (source frames S, mean over RGB, 0..255 units); the
                 photometric factor is off when sigma is None
    l_a  = (b - t) / (b - a),  l_b = (t - a) / (b - a)         temporal (linear) weights
    w_k  = l_k * (v_k + eps)                                    eps = 1e-3
    E_t  = sum_k w_k W_k / sum_k w_k

A pixel seen reliably by one keyframe only takes that keyframe; seen by both, the temporal weights mix
them; seen by neither, the ``eps`` terms fall back to the temporal weights. Frames before the first or
after the last keyframe take their single nearest keyframe. ``flow_t->k`` (and ``flow_k->t`` for the
occlusion test) is chained from consecutive flows with :func:`~videoedit.motion.accumulate` /
:func:`~videoedit.motion.accumulate_backward`, one segment between two keyframes at a time.

This is the classic propagation of keyframe edits along flow (as in Rerender-A-Video / TokenFlow's
RGB-propagation baseline); the formula above is ours.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from videoedit.attention.state import StepState
from videoedit.errors import ConfigError
from videoedit.inversion.ddim import sampling_timesteps
from videoedit.motion import accumulate, accumulate_backward, occlusion, warp
from videoedit.pipelines.pipeline_video_edit import GuidanceEmbeddings, VideoEditPipeline

KEYFRAME_MODES = ("even", "motion")


# ------------------------------------------------------------------------------------ keyframes


def motion_per_step(forward_flows: torch.Tensor) -> torch.Tensor:
    """Mean flow magnitude (pixels) between consecutive frames: ``(F-1, 2, H, W) -> (F-1,)``."""
    return forward_flows.float().norm(dim=1).flatten(1).mean(1)


def select_keyframes(
    num_frames: int, num_keyframes: int, mode: str = "even", motion: torch.Tensor | None = None
) -> list[int]:
    """Choose ``K`` keyframe indices (ascending, distinct) among ``F`` frames.

    Args:
        mode: ``"even"``: evenly spaced in time, ``round(linspace(0, F-1, K))``; ``"motion"``: evenly
            spaced in accumulated motion ``c_t = sum_{s<t} motion[s]`` (each interior keyframe is the
            frame whose ``c_t`` is nearest to ``k/(K-1) * c_{F-1}``), so fast passages get more
            keyframes. Both keep the first and last frames when ``K >= 2``; ``K = 1`` takes the
            middle frame (in time, or in motion).
        motion: ``(F-1,)`` per-step motion (:func:`motion_per_step`), needed for ``"motion"`` when
            ``F > 1`` (a one-frame clip has no motion: its keyframe is frame 0).
    """
    if mode not in KEYFRAME_MODES:
        raise ConfigError(f"keyframe_selection must be one of {list(KEYFRAME_MODES)}, got {mode!r}.")
    if not 1 <= num_keyframes <= num_frames:
        raise ConfigError(
            f"num_keyframes={num_keyframes} must be between 1 and the clip's {num_frames} frames: "
            "lower method.num_keyframes or raise data.num_frames."
        )
    if mode == "even" or motion is None or float(motion.sum()) <= 0:
        if mode == "motion" and motion is None and num_frames > 1:
            raise ValueError("keyframe_selection='motion' needs the per-step motion")
        if num_keyframes == 1:
            return [(num_frames - 1) // 2]
        return sorted({round(x) for x in np.linspace(0, num_frames - 1, num_keyframes)})
    if motion.shape != (num_frames - 1,):
        raise ValueError(f"motion must have shape ({num_frames - 1},), got {tuple(motion.shape)}")
    cumulative = torch.cat([torch.zeros(1), motion.double().cpu().cumsum(0)]).numpy()
    total = cumulative[-1]
    if num_keyframes == 1:
        return [int(np.abs(cumulative - total / 2).argmin())]
    chosen = [0]
    for k in range(1, num_keyframes - 1):
        target = total * k / (num_keyframes - 1)
        low, high = chosen[-1] + 1, num_frames - (num_keyframes - k)  # leave room for the rest
        chosen.append(low + int(np.abs(cumulative[low : high + 1] - target).argmin()))
    return [*chosen, num_frames - 1]


# ------------------------------------------------------------------------------------ propagation


@dataclass
class PropagationOutput:
    """Result of :func:`propagate_keyframes`.

    Attributes:
        frames: ``(F, C, H, W)`` the clip: the keyframes as given, the rest propagated.
        reliability: ``(F, 1, H, W)`` in [0, 1]: ``sum_k l_k v_k`` (1 on keyframes): how well the
            in-between pixels are explained by the warped keyframes.
        keyframes: the keyframe indices.
    """

    frames: torch.Tensor
    reliability: torch.Tensor
    keyframes: list[int]


@torch.no_grad()
def propagate_keyframes(
    keyframes: torch.Tensor,
    keyframe_indices: Sequence[int],
    forward_flows: torch.Tensor,
    backward_flows: torch.Tensor,
    source: torch.Tensor | None = None,
    occlusion_check: bool = True,
    photometric_sigma: float | None = None,
    eps: float = 1e-3,
) -> PropagationOutput:
    """Fill the frames between edited keyframes by warping them along the source flow (module docstring).

    Args:
        keyframes: ``(K, C, H, W)`` edited keyframes (any value range; frames in [-1, 1] in the pipeline).
        keyframe_indices: their ``K`` ascending frame indices in the clip.
        forward_flows: ``(F-1, 2, H, W)`` source flows ``f_t->t+1``.
        backward_flows: ``(F-1, 2, H, W)`` source flows ``f_t+1->t``.
        source: ``(F, 3, H, W)`` source frames in [-1, 1]; needed when ``photometric_sigma`` is set.
        occlusion_check: use the forward-backward occlusion test in the weights.
        photometric_sigma: scale (0..255 units) of the source warp error in the weights; ``None`` = off.

    Returns:
        :class:`PropagationOutput` with ``(F, C, H, W)`` frames on the flows' device.
    """
    indices = [int(i) for i in keyframe_indices]
    num_frames = forward_flows.shape[0] + 1
    if len(indices) != keyframes.shape[0] or not indices:
        raise ValueError(f"{keyframes.shape[0]} keyframes but indices {indices}")
    if indices != sorted(set(indices)) or indices[0] < 0 or indices[-1] >= num_frames:
        raise ValueError(f"keyframe indices must be ascending, distinct and < {num_frames}: {indices}")
    if backward_flows.shape != forward_flows.shape or forward_flows.shape[-2:] != keyframes.shape[-2:]:
        raise ValueError(
            f"flows {tuple(forward_flows.shape)}/{tuple(backward_flows.shape)} do not match keyframes "
            f"{tuple(keyframes.shape)}"
        )
    if photometric_sigma is not None and source is None:
        raise ValueError("photometric_sigma needs the source frames")
    device = forward_flows.device
    keyframes = keyframes.to(device, torch.float32)
    height, width = keyframes.shape[-2:]
    frames = torch.empty(num_frames, keyframes.shape[1], height, width, device=device)
    reliability = torch.ones(num_frames, 1, height, width, device=device)
    key_of = dict(zip(indices, range(len(indices))))
    for i, k in key_of.items():
        frames[i] = keyframes[k]

    def view(t: int, k: int, to_key: torch.Tensor, from_key: torch.Tensor | None):
        """The keyframe ``k`` warped into frame ``t`` and its per-pixel validity ``(1, 1, H, W)``."""
        warped = warp(keyframes[key_of[k]][None], to_key)
        valid = torch.ones(1, 1, height, width, device=device)
        if occlusion_check:
            valid = valid * (~occlusion(to_key, from_key)).float()
        if photometric_sigma is not None:
            src_k = warp(source[k][None].to(device, torch.float32), to_key)
            err = (source[t][None].to(device, torch.float32) - src_k).abs().mean(1, keepdim=True) * 127.5
            valid = valid * torch.exp(-err / float(photometric_sigma))
        return warped, valid

    bounds = [None, *indices, None]
    for a, b in itertools.pairwise(bounds):
        lo = -1 if a is None else a
        hi = num_frames if b is None else b
        if hi - lo < 2:
            continue
        # row j of each chain is for frame t = lo + 1 + j: flows t->a, a->t, t->b, b->t
        if a is not None:
            to_prev = accumulate_backward(backward_flows[a : hi - 1])
            from_prev = accumulate(forward_flows[a : hi - 1]) if occlusion_check else None
        if b is not None:
            to_next = accumulate_backward(forward_flows[lo + 1 : b].flip(0)).flip(0)
            from_next = accumulate(backward_flows[lo + 1 : b].flip(0)).flip(0) if occlusion_check else None
        for t in range(lo + 1, hi):
            j = slice(t - lo - 1, t - lo)
            sides = []
            if a is not None:
                lam = 1.0 if b is None else (b - t) / (b - a)
                sides.append((lam, *view(t, a, to_prev[j], None if from_prev is None else from_prev[j])))
            if b is not None:
                lam = 1.0 if a is None else (t - a) / (b - a)
                sides.append((lam, *view(t, b, to_next[j], None if from_next is None else from_next[j])))
            num = sum(lam * (v + eps) * w for lam, w, v in sides)
            den = sum(lam * (v + eps) for lam, _, v in sides)
            frames[t] = (num / den)[0]
            reliability[t] = sum(lam * v for lam, _, v in sides)[0]
    return PropagationOutput(frames=frames, reliability=reliability, keyframes=indices)


def copy_nearest_keyframe(
    keyframes: torch.Tensor, keyframe_indices: Sequence[int], num_frames: int
) -> torch.Tensor:
    """The no-motion baseline: every frame is its temporally nearest keyframe ``(F, C, H, W)``."""
    idx = torch.tensor([int(i) for i in keyframe_indices])
    nearest = (torch.arange(num_frames)[:, None] - idx[None]).abs().argmin(1)
    return keyframes[nearest]


# ------------------------------------------------------------------------------------ refinement


@dataclass(frozen=True)
class RefineSettings:
    """The optional SDEdit pass over propagated frames (``method.refine`` in the configs).

    Attributes:
        strength: noise level as a fraction of the schedule (diffusers img2img convention): the pass
            runs the last ``int(strength * num_inference_steps)`` steps; 0 = off.
        num_inference_steps: length of the DDIM schedule the steps are taken from.
        guidance_scale: CFG of the pass; ``None`` = the keyframe method's.
        frame_batch_size: frames per UNet call (memory does not grow with the clip).
        noise: ``"shared"`` (one noise map for every frame: the same perturbation everywhere, no
            added flicker) or ``"independent"`` (a fresh map per frame).
    """

    strength: float = 0.0
    num_inference_steps: int = 20
    guidance_scale: float | None = None
    frame_batch_size: int = 8
    noise: str = "shared"

    def __post_init__(self) -> None:
        if not 0.0 <= self.strength <= 1.0:
            raise ConfigError(f"method.refine.strength must be in [0, 1], got {self.strength}.")
        if self.num_inference_steps < 1 or self.frame_batch_size < 1:
            raise ConfigError(
                "method.refine.num_inference_steps and method.refine.frame_batch_size must be >= 1, got "
                f"{self.num_inference_steps} and {self.frame_batch_size}."
            )
        if self.noise not in ("shared", "independent"):
            raise ConfigError(f"method.refine.noise must be 'shared' or 'independent', got {self.noise!r}.")

    @property
    def num_steps(self) -> int:
        """Denoising steps the pass runs."""
        return int(self.strength * self.num_inference_steps)


@torch.no_grad()
def refine_frames(
    pipe: VideoEditPipeline,
    frames: torch.Tensor,
    indices: Sequence[int],
    prompt: str,
    settings: RefineSettings,
    guidance_scale: float,
    generator: torch.Generator,
    negative_prompt: str = "",
    control: np.ndarray | torch.Tensor | None = None,
    controlnet_conditioning_scale: float = 1.0,
) -> torch.Tensor:
    """Re-noise the latents of ``frames[indices]`` to a low level and denoise them with the target prompt.

    Args:
        frames: ``(F, 3, H, W)`` in [-1, 1] (propagated clip); frames not in ``indices`` are kept as is.
        indices: the frames to refine (the in-between frames).
        settings: :class:`RefineSettings` (``guidance_scale`` here is the one to use).
        generator: draws the noise (all of it at once, before any UNet call: the result does not
            depend on ``frame_batch_size``).
        control: ControlNet maps of the whole clip ``(F, H, W, 3)`` uint8, or ``None``.

    Returns:
        ``(F, 3, H, W)`` in [-1, 1] on the CPU.
    """
    # 1. check inputs and pick the tail of the schedule
    out = frames.detach().float().cpu().clone()
    indices = [int(i) for i in indices]
    if settings.num_steps == 0 or not indices:
        return out
    timesteps = sampling_timesteps(pipe.scheduler, settings.num_inference_steps)[-settings.num_steps :]
    # 2. encode the prompts
    embeddings = GuidanceEmbeddings(
        uncond=pipe.encode_prompt([negative_prompt]), cond=pipe.encode_prompt([prompt])
    )
    # 3. draw the noise and prepare the control
    height, width = frames.shape[-2:]
    shape = (pipe.unet.config.in_channels, height // pipe.vae_scale_factor, width // pipe.vae_scale_factor)
    if settings.noise == "shared":
        noise = torch.randn((1, *shape), generator=generator).expand(len(indices), *shape)
    else:
        noise = torch.randn((len(indices), *shape), generator=generator)
    control = pipe.prepare_control(control)
    state = StepState()
    # 4. noise, denoise and decode, a batch of frames at a time
    for start in range(0, len(indices), settings.frame_batch_size):
        batch = indices[start : start + settings.frame_batch_size]
        latents = pipe.encode_frames(out[batch])
        eps = noise[start : start + len(batch)].to(latents)
        latents = pipe.scheduler.add_noise(latents, eps, torch.tensor([timesteps[0]]))
        state.update(frame_ids=tuple(batch))
        latents = pipe.denoise(
            latents,
            timesteps,
            embeddings,
            guidance_scale,
            None if control is None else control[batch],
            controlnet_conditioning_scale,
            state=state,
            generator=generator,
        )
        out[batch] = pipe.decode_latents(latents).cpu()
    return out
