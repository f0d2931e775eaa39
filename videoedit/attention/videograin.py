"""VideoGrain's attention processors: full-frame ST-Layout self-attention, ST-Layout cross-attention,
FLATTEN, PnP feature recording/injection, and attention-map recording.

All processors of one call share a :class:`VideoGrainController` (the per-step state, the region
layouts, the modulation schedule, trajectories, PnP features, recorders); nothing is stored on modules.
Adapted from VideoGrain (Yang et al., ICLR 2025; knightyxp/VideoGrain) and DenseDiffusion (Kim et al.,
ICCV 2023); the code is ours.

Official behaviours reproduced by default (see ``configs/method/videograin.yaml``):
* modulation strength ``treg = ((t - 1) / 1000) ** 5``, ``sreg = 0.3``, ``creg = 1.0``, active for the
  first 30% of the steps (15 of 50), at latent downsample factors 2, 4, 8 (32, 16, 8 for 512 px). The
  official code hard-codes ``end_step = 15`` steps whatever the number of steps (its YAML key
  ``modulated_percentage: 0.3`` is unused); ``fraction`` scales the window with the number of steps so it
  covers the same noise levels (t 981..701); both agree at the official 50 steps, and
  ``ModulationSettings(end_step=15)`` is the official absolute form (e.g. 25 steps: 8 modulated steps
  with ``fraction``, 15 with ``end_step=15``);
* self-attention modulated on the **unconditional** CFG branch (the official sliced-attention quirk;
  DenseDiffusion modulates the conditional one), cross-attention on the conditional branch;
* every ``attn1`` is full-frame (all frames' keys), in inversion and editing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from diffusers.models.attention_processor import Attention

from videoedit.attention.base import (
    AttentionCall,
    AttentionProcessorBase,
    frames_to_sequence,
    sequence_to_frames,
)
from videoedit.attention.flatten import Trajectories, trajectory_attention
from videoedit.attention.st_layout import FrameSpan, SelfModulation, cross_attention, full_frame_attention
from videoedit.attention.state import StepState
from videoedit.errors import ConfigError
from videoedit.layout.regions import DownsampleMode, LayerLayout

Branch = Literal["uncond", "cond", "both"]

#: PnP layers of the official code (FateZero's ``out_layers_features`` / inject_q/k).
PNP_CONV_LAYERS = ("up_blocks.1.resnets.0", "up_blocks.1.resnets.1", "up_blocks.2.resnets.0")
PNP_ATTN_LAYERS = tuple(
    f"{block}.transformer_blocks.0.attn1"
    for block in (
        "up_blocks.1.attentions.1",
        "up_blocks.1.attentions.2",
        "up_blocks.2.attentions.0",
        "up_blocks.2.attentions.1",
        "up_blocks.2.attentions.2",
        "up_blocks.3.attentions.0",
    )
)


def _branches(choice: Branch) -> set[str]:
    if choice not in ("uncond", "cond", "both"):
        raise ConfigError(f"modulated branch must be uncond, cond or both, got {choice!r}")
    return {"uncond", "cond"} if choice == "both" else {choice}


@dataclass(frozen=True)
class ModulationSettings:
    """ST-Layout modulation (``method.modulation``); defaults reproduce the official code.

    Attributes:
        sreg: self-attention weight (official 0.3).
        creg: cross-attention weight (official 1.0).
        treg_power, treg_offset: ``treg = ((t - treg_offset) / 1000) ** treg_power`` (official 5 and 1;
            DenseDiffusion uses offset 0).
        fraction: modulate the first ``ceil(fraction * steps)`` steps (15 of 50, as the official code at
            its 50 steps; the window follows the number of steps).
        end_step: the official absolute form: modulate the first ``end_step`` steps whatever the number of
            steps (official code: 15, hard-coded); ``None`` (default) uses ``fraction``. Equal at 50 steps.
        factors: latent downsample factors of the modulated layers (official 2, 4, 8 = 32, 16, 8 for
            512 px; the factor-1 layers (64x64) are not modulated).
        self_branch: CFG branch modulated in self-attention (official quirk ``uncond``; DenseDiffusion
            ``cond``; or ``both``).
        cross_branch: CFG branch modulated in cross-attention (official ``cond``).
        mask_downsample: ``nearest`` (official), ``max`` or ``area`` (keeps thin parts at low resolution).
        area_threshold: coverage a token needs with ``area``.
    """

    sreg: float = 0.3
    creg: float = 1.0
    treg_power: float = 5.0
    treg_offset: float = 1.0
    fraction: float = 0.3
    end_step: int | None = None
    factors: tuple[int, ...] = (2, 4, 8)
    self_branch: Branch = "uncond"
    cross_branch: Branch = "cond"
    mask_downsample: DownsampleMode = "nearest"
    area_threshold: float = 0.25

    def __post_init__(self) -> None:
        _branches(self.self_branch)
        _branches(self.cross_branch)
        if not 0 <= self.fraction <= 1:
            raise ConfigError(f"modulation.fraction must be in [0, 1], got {self.fraction}")
        if self.end_step is not None and (isinstance(self.end_step, bool) or int(self.end_step) < 0):
            raise ConfigError(
                f"modulation.end_step must be a number of steps >= 0 (official: 15) or null (use "
                f"modulation.fraction), got {self.end_step!r}"
            )

    def active_steps(self, num_steps: int) -> int:
        """Number of modulated steps: ``end_step`` (official absolute form; at most ``num_steps``) when
        set, else ``ceil(fraction * num_steps)``: 15 for 50 steps at 0.3, at least one when ``fraction > 0``."""
        if self.end_step is not None:
            return min(int(self.end_step), num_steps)
        return math.ceil(self.fraction * num_steps - 1e-9)

    def treg(self, timestep: int | float) -> float:
        return max(0.0, (float(timestep) - self.treg_offset) / 1000.0) ** self.treg_power


class PnPFeatures:
    """Features recorded during inversion and injected while editing (VideoGrain's PnP).

    Residual-branch outputs (``conv2``) of :data:`PNP_CONV_LAYERS` and self-attention q/k of
    :data:`PNP_ATTN_LAYERS`, stored per recorded timestep and CFG branch. Only the timesteps that will be
    injected are recorded (the official code keeps every inversion step: ~29 GB of host RAM at 16 frames).

    The official inversion runs the batch ``["", source prompt]`` (guidance 1) and injects each half into
    the same half of the edit: the unconditional branch gets the features of the ``""``-prompt pass.
    When only the conditional branch was recorded, its features go to every branch.
    """

    PREFIX = "pnp/"

    def __init__(
        self, record_timesteps: Sequence[int] = (), features: dict[str, torch.Tensor] | None = None
    ) -> None:
        self.record_timesteps = {int(t) for t in record_timesteps}
        self.features: dict[str, torch.Tensor] = dict(features or {})

    @classmethod
    def key(cls, layer: str, kind: str, timestep: int, branch: str = "cond") -> str:
        return f"{cls.PREFIX}{layer}/{kind}/{int(timestep)}/{branch}"

    @classmethod
    def from_extras(cls, extras: dict[str, torch.Tensor]) -> PnPFeatures:
        return cls(features={k: v for k, v in extras.items() if k.startswith(cls.PREFIX)})

    def record(self, layer: str, kind: str, state: StepState, value: torch.Tensor) -> None:
        """Store ``value`` (the whole batch) per branch when the current timestep is recorded."""
        if int(state.timestep) not in self.record_timesteps:
            return
        for branch in state.branches:
            part = value[state.branch_slice(branch)]
            self.features[self.key(layer, kind, state.timestep, branch)] = part.detach().to("cpu", copy=True)

    def get(self, layer: str, kind: str, timestep: int | None, branch: str = "cond") -> torch.Tensor | None:
        if timestep is None:
            return None
        found = self.features.get(self.key(layer, kind, timestep, branch))
        return found if found is not None else self.features.get(self.key(layer, kind, timestep, "cond"))

    def batch(
        self, layer: str, kind: str, timestep: int | None, branches: Sequence[str]
    ) -> torch.Tensor | None:
        """The features for a whole branch-major batch (``None`` when nothing was recorded)."""
        parts = [self.get(layer, kind, timestep, b) for b in branches]
        return None if any(p is None for p in parts) else torch.cat(parts)


class AttentionRecorder:
    """Averages conditional-branch attention maps of one resolution over heads, layers and calls.

    ``self_maps``: per-frame diagonal blocks of the full-frame attention probabilities (frame ``f``'s
    queries over frame ``f``'s keys, not renormalised), ``(F, N, N)`` (the clustering features).
    ``cross_maps``: cross-attention maps ``(F, N, 77)``: probabilities, or the scaled scores before
    modulation and softmax when the controller's ``record_logits`` is set (the official attention store).
    """

    def __init__(self, factor: int, record_self: bool, record_cross: bool) -> None:
        self.factor = factor
        self.record_self = record_self
        self.record_cross = record_cross
        self.self_sum: torch.Tensor | None = None
        self.self_calls = 0
        self.cross_sum: torch.Tensor | None = None
        self.cross_calls = 0

    def self_hook(
        self, num_frames: int, tokens: int
    ) -> Callable[[torch.Tensor, list[int], list[int], int], None]:
        if self.self_sum is None:
            self.self_sum = torch.zeros(num_frames, tokens, tokens)
        self.self_calls += 1

        def record(probs: torch.Tensor, q_frames: list[int], k_frames: list[int], row_offset: int) -> None:
            mean = probs.float().mean(0)  # (Q, K)
            device = mean.device
            rows = torch.arange(mean.shape[0], device=device) + row_offset
            frame = q_frames[0] + rows // tokens
            slot = torch.full((num_frames,), -1, dtype=torch.long, device=device)
            slot[torch.as_tensor(k_frames, device=device)] = torch.arange(len(k_frames), device=device)
            cols = slot[frame][:, None] * tokens + torch.arange(tokens, device=device)  # frame f's own keys
            self.self_sum[frame.cpu(), (rows % tokens).cpu()] += mean.gather(1, cols).cpu()

        return record

    def cross_hook(self) -> Callable[[torch.Tensor], None]:
        self.cross_calls += 1

        def record(probs: torch.Tensor) -> None:
            mean = probs.float().mean(1).cpu()  # (F, N, 77)
            self.cross_sum = mean if self.cross_sum is None else self.cross_sum + mean

        return record

    def self_average(self) -> torch.Tensor | None:
        return None if self.self_sum is None else self.self_sum / max(1, self.self_calls)

    def cross_average(self) -> torch.Tensor | None:
        return None if self.cross_sum is None else self.cross_sum / max(1, self.cross_calls)


@dataclass
class VideoGrainController:
    """Everything VideoGrain's processors share during one call (inversion, or one edit).

    Attributes:
        state: the pipeline's per-step state.
        layouts: region layouts by downsample factor (``None``: no modulation, e.g. during inversion).
        modulation: modulation settings (``None``: off).
        schedule: the full sampling schedule (descending timesteps), for ``treg``.
        step_offset: steps skipped at the start (``blending_percentage``).
        skip_mode: ``official``: with skipped steps the modulation and PnP still index the full schedule
            by loop step (the official quirk); ``consistent``: they use the true step.
        span: frame span of full-frame self-attention.
        chunk_budget_bytes: memory for one query chunk's scores.
        trajectories: FLATTEN trajectories by factor (``{}``: FLATTEN off).
        pnp: PnP features (``None``: off).
        pnp_steps: inject PnP during the first ``pnp_steps`` steps.
        pnp_alignment: ``official`` (features recorded one grid step below the sampling timestep) or
            ``same`` (recorded at the sampling timestep).
        recorders: attention-map recorders by factor, fed from the ``record_branch`` branch.
        record_logits: recorders of cross-attention get the scaled scores before modulation and softmax
            (what the official AttentionStore keeps) instead of the probabilities.
    """

    state: StepState
    layouts: dict[int, LayerLayout] | None = None
    modulation: ModulationSettings | None = None
    schedule: list[int] = field(default_factory=list)
    step_offset: int = 0
    skip_mode: Literal["official", "consistent"] = "official"
    span: FrameSpan = field(default_factory=FrameSpan)
    chunk_budget_bytes: int = 256 * 2**20
    trajectories: dict[int, Trajectories] = field(default_factory=dict)
    pnp: PnPFeatures | None = None
    pnp_steps: int = 0
    pnp_alignment: Literal["official", "same"] = "official"
    recorders: dict[int, AttentionRecorder] = field(default_factory=dict)
    record_branch: str = "cond"
    record_logits: bool = False

    def schedule_position(self) -> int:
        """Index into the full schedule that the modulation and PnP use for the current step."""
        return schedule_position(self.state.step_index, self.step_offset, self.skip_mode)

    def treg(self) -> float:
        """Modulation strength at the current step (0 when inactive)."""
        if (
            self.modulation is None
            or self.layouts is None
            or self.state.phase != "sample"
            or not self.schedule
        ):
            return 0.0
        index = self.schedule_position()
        if index >= self.modulation.active_steps(len(self.schedule)):
            return 0.0
        t = self.schedule[index] if self.skip_mode == "official" else self.state.timestep
        return self.modulation.treg(t)

    def modulation_for(
        self, factor: int, kind: Literal["self", "cross"]
    ) -> tuple[LayerLayout, float, set[str]] | None:
        """``(layout, weight * treg, modulated branches)`` at a layer of ``factor``, or ``None`` when off."""
        treg = self.treg()
        layout = (self.layouts or {}).get(factor)
        if treg <= 0 or layout is None or self.modulation is None or factor not in self.modulation.factors:
            return None
        m = self.modulation
        if kind == "self":
            return layout, m.sreg * treg, _branches(m.self_branch)
        return layout, m.creg * treg, _branches(m.cross_branch)

    def pnp_recording(self) -> bool:
        return self.pnp is not None and self.state.phase == "invert"

    def pnp_inject_timestep(self) -> int | None:
        """During the first ``pnp_steps`` editing steps: the recorded timestep to inject, else ``None``."""
        if self.pnp is None or self.state.phase != "sample" or self.state.step_index >= self.pnp_steps:
            return None
        return pnp_source_timestep(self.schedule, self.schedule_position(), self.pnp_alignment)

    def factor(self, tokens: int) -> int:
        return self.state.downsample_factor(tokens)


def schedule_position(step_index: int, step_offset: int, skip_mode: str) -> int:
    """Schedule index of loop step ``step_index`` when ``step_offset`` steps were skipped:
    ``official`` indexes the full schedule by loop step (the official quirk), ``consistent`` by true step."""
    return step_index + (step_offset if skip_mode == "consistent" else 0)


def pnp_source_timestep(schedule: Sequence[int], position: int, alignment: str) -> int | None:
    """The recorded timestep injected at schedule ``position``: one grid step lower (``official``: the
    inversion call at ``t - 20`` feeds the step at ``t``) or the same timestep (``same``)."""
    source = position + 1 if alignment == "official" else position
    return schedule[source] if 0 <= source < len(schedule) else None


class VideoGrainSelfAttnProcessor(AttentionProcessorBase):
    """``attn1``: full-frame self-attention with ST-Layout modulation, FLATTEN and PnP q/k."""

    def __init__(self, controller: VideoGrainController, name: str) -> None:
        self.controller = controller
        self.name = name
        self.pnp_layer = name in PNP_ATTN_LAYERS

    def adjust_qkv(self, attn: Attention, query, key, value, call: AttentionCall):
        c = self.controller
        if c.pnp is None or not self.pnp_layer:
            return query, key, value
        state = c.state
        if c.pnp_recording():
            c.pnp.record(self.name, "q", state, query)
            c.pnp.record(self.name, "k", state, key)
            return query, key, value
        t = c.pnp_inject_timestep()
        q_src = c.pnp.batch(self.name, "q", t, state.branches)
        k_src = c.pnp.batch(self.name, "k", t, state.branches)
        if q_src is not None and k_src is not None:
            query, key = q_src.to(query), k_src.to(key)
        return query, key, value

    def attend(self, attn: Attention, query, key, value, call: AttentionCall) -> torch.Tensor:
        c = self.controller
        state = c.state
        frames = state.num_frames
        tokens = query.shape[2]
        factor = c.factor(tokens)
        modulated = c.modulation_for(factor, "self")
        trajectories = c.trajectories.get(factor)
        recorder = c.recorders.get(factor)
        qs, ks, vs = (frames_to_sequence(x, frames) for x in (query, key, value))
        outs = []
        for b, branch in enumerate(state.branches):
            modulation = None
            if modulated is not None and branch in modulated[2]:
                layout, weight, _ = modulated
                modulation = SelfModulation(
                    member=layout.flat_member(), size_fn=layout.self_size, weight=weight
                )
            record = None
            if recorder is not None and recorder.record_self and branch == c.record_branch:
                record = recorder.self_hook(frames, tokens)
            out = full_frame_attention(
                qs[b], ks[b], vs[b], frames, attn.scale, c.span, modulation, c.chunk_budget_bytes, record
            )
            if trajectories is not None:
                out = trajectory_attention(qs[b], ks[b], out, trajectories, attn.scale, c.chunk_budget_bytes)
            outs.append(out)
        return sequence_to_frames(torch.stack(outs), frames)


class VideoGrainCrossAttnProcessor(AttentionProcessorBase):
    """``attn2``: cross-attention with ST-Layout modulation of the local prompts' tokens."""

    def __init__(self, controller: VideoGrainController, name: str) -> None:
        self.controller = controller
        self.name = name

    def attend(self, attn: Attention, query, key, value, call: AttentionCall) -> torch.Tensor:
        c = self.controller
        state = c.state
        factor = c.factor(query.shape[2])
        modulated = c.modulation_for(factor, "cross")
        recorder = c.recorders.get(factor)
        outs = []
        for branch in state.branches:
            sl = state.branch_slice(branch)
            positive = strength = None
            if modulated is not None and branch in modulated[2]:
                layout, weight, _ = modulated
                positive, strength = layout.cross_mask, layout.cross_size * weight
            record = None
            if recorder is not None and recorder.record_cross and branch == c.record_branch:
                record = recorder.cross_hook()
            outs.append(
                cross_attention(
                    query[sl], key[sl], value[sl], attn.scale, positive, strength, record, c.record_logits
                )
            )
        return torch.cat(outs)


def pnp_conv_hooks(controller: VideoGrainController) -> dict[str, Callable]:
    """Forward hooks on the ``conv2`` of :data:`PNP_CONV_LAYERS` (the residual branch, before the skip
    addition) that record (inversion) or replace (editing) their output."""

    def make(layer: str) -> Callable:
        def hook(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
            c = controller
            state = c.state
            if c.pnp is None:
                return None
            if c.pnp_recording():
                c.pnp.record(layer, "h", state, output)
                return None
            src = c.pnp.batch(layer, "h", c.pnp_inject_timestep(), state.branches)
            return None if src is None else src.to(output)

        return hook

    return {f"{layer}.conv2": make(layer) for layer in PNP_CONV_LAYERS}


def videograin_processors(
    controller: VideoGrainController, layer_names: Sequence[str]
) -> dict[str, AttentionProcessorBase]:
    """Processors for every UNet attention layer (``...attn1`` / ``...attn2``)."""
    procs: dict[str, AttentionProcessorBase] = {}
    for name in layer_names:
        if name.endswith(".attn1"):
            procs[name] = VideoGrainSelfAttnProcessor(controller, name)
        elif name.endswith(".attn2"):
            procs[name] = VideoGrainCrossAttnProcessor(controller, name)
    return procs
