"""TokenFlow's attention: keyframe extended attention, nearest-neighbour propagation, PnP injection.

TokenFlow (Geyer, Bar-Tal, Bagon, Dekel, ICLR 2024, arXiv 2307.10373; github.com/omerbt/TokenFlow) edits
a video one denoising step at a time in two kinds of UNet passes, each on a three-branch batch
``[source | uncond | cond]`` (branch-major, ``StepState.branches == ("source", "uncond", "cond")``):

1. the **keyframe pass** runs the UNet on one keyframe per batch of frames. Every self-attention layer
   (``attn1`` of each ``BasicTransformerBlock``) lets each keyframe of the edited branches attend to the
   tokens of *all* keyframes (extended attention); the source branch attends per frame. Each layer
   caches its input tokens (source branch: ``norm1``'s output, what the correspondences are computed
   on) and its output (every branch).
2. the **propagation passes** run the UNet on each batch of frames. Self-attention is *not computed*:
   each token takes the cached keyframe output of its nearest neighbour (cosine similarity on the source
   branch's ``attn1`` input) in one or two keyframes, blended by temporal distance. The same indices
   serve every branch.

Plug-and-Play injection (Tumanyan et al., CVPR 2023; github.com/MichalGeyer/pnp-diffusers), as TokenFlow
uses it: during the first ``int(steps * pnp_attn_t)`` steps the edited branches' queries and keys in
the 8 decoder layers of :data:`PNP_ATTENTION_LAYERS` are the source branch's; during the first
``int(steps * pnp_f_t)`` steps the output of ``conv2`` in ``up_blocks.1.resnets.1`` (the residual
branch, before the skip addition) of the edited branches is the source branch's
(:class:`PnPConvInjection`, a forward hook).

Where state lives. A pipeline call owns one :class:`KeyframeStore`: the pass kind (``mode``), the
current batch's :class:`PropagationPlan`, the injection timesteps, and per self-attention layer the
keyframe caches (``tokens``: ``(K, N, C)`` source-branch inputs, ``outputs``: ``(3, K, N, D)``
outputs), keyed by layer name. Nothing is stored on modules: the processors and the hook only hold a
reference to the store; the keyframe pass overwrites the caches at every step, and the pipeline clears
the store and uninstalls processors and hook (``attention_processors`` / ``module_hooks``) when the
call ends, normally or not. With ``cache_device="cpu"`` the caches are kept on the CPU and each
propagation pass copies to the GPU only the (at most three) keyframes its batch reads.

Memory and compute. The memory held across a step grows linearly with the number of frames: the caches
hold one keyframe per batch (copies, never views of a whole UNet batch), and the nearest-neighbour
search is chunked (never the full ``(B*N) x (2*N)`` similarity). The largest transient is the keyframe
pass, one UNet call on ``3 * K`` keyframe rows (``K = ceil(F / batch_size)``), freed when it returns;
its extended attention runs as one SDPA call over the keyframes' tokens (no repeated K/V, no Python
loop over heads; flash / memory-efficient kernels keep its memory linear in the sequence). The
*compute* is not linear: extended attention costs ``O(K^2 N^2)`` per layer (every keyframe attends to
all keyframes), as in the official code; ``keyframe_window`` bounds it to ``O(K (2w+1) N^2)`` (each
keyframe attends to its ``2 * window + 1`` nearest keyframes).

The pure functions (:func:`batch_keyframes`, :func:`official_blend_plan`, :func:`paper_blend_plan`,
:func:`cosine_nearest_neighbours`, :func:`propagate_keyframe_outputs`, :func:`extended_attention`,
:func:`injection_timesteps`, :func:`sdedit_timesteps`) are what the processors use; tests compare them
with straightforward references.
"""

from __future__ import annotations

import bisect
import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention

from videoedit.attention.base import (
    AttentionCall,
    AttentionProcessorBase,
    frames_to_sequence,
    sequence_to_frames,
)
from videoedit.attention.state import StepState
from videoedit.errors import ConfigError

#: the batch layout of every TokenFlow UNet call (official ``denoise_step``: ``cat([src, x, x])``)
BRANCHES = ("source", "uncond", "cond")

#: official ``register_extended_attention_pnp``: ``up_blocks[1].attentions[1, 2]``,
#: ``up_blocks[2].attentions[0..2]``, ``up_blocks[3].attentions[0..2]`` ("blocks 4-11 of the decoder")
PNP_ATTENTION_LAYERS = tuple(
    f"up_blocks.{block}.attentions.{i}.transformer_blocks.0.attn1"
    for block, indices in ((1, (1, 2)), (2, (0, 1, 2)), (3, (0, 1, 2)))
    for i in indices
)

#: official ``register_conv_injection``: ``up_blocks[1].resnets[1]``, after ``conv2``, before the skip
PNP_CONV_LAYER = "up_blocks.1.resnets.1.conv2"

KEYFRAME_SAMPLING = ("random", "even")
BLEND_MODES = ("official", "paper")


# ----------------------------------------------------------------------------------- schedules
def injection_timesteps(timesteps: Sequence[int], fraction: float) -> list[int]:
    """The first ``int(len(timesteps) * fraction)`` timesteps (official: ``timesteps[:int(n * pnp_t)]``).

    ``fraction`` is in [0, 1] (checked by ``TokenFlowSettings``). With 50 steps:
    ``pnp_attn_t=0.5`` -> 25 timesteps (981 ... 501), ``pnp_f_t=0.8`` -> 40 (981 ... 201).
    """
    return [int(t) for t in timesteps[: int(len(timesteps) * fraction)]]


def sdedit_timesteps(timesteps: Sequence[int], start: float, rounding: str = "official") -> list[int]:
    """The timesteps an SDEdit run goes through, starting at noise level ``start`` (in (0, 1]).

    ``rounding="official"`` reproduces ``run_tokenflow_sdedit.py``: ``timesteps[int(1 - start * n):]``,
    which for ``start=0.9`` and 50 steps runs the last 44 steps, from t=861 (the formula was meant to
    skip ``(1 - start) * n`` steps). ``rounding="exact"`` runs ``floor(start * n)`` steps (the
    diffusers img2img convention; 45 steps from t=881 for 0.9 and 50), robust to float error.
    """
    timesteps = [int(t) for t in timesteps]
    n = len(timesteps)
    if rounding == "official":
        return timesteps[int(1 - start * n) :]
    if rounding == "exact":
        count = min(n, math.floor(start * n + 1e-6))
        return timesteps[n - count :] if count > 0 else []
    raise ConfigError(f"sdedit_start_rounding must be 'official' or 'exact', got {rounding!r}.")


# ----------------------------------------------------------------------------------- keyframes
def frame_batches(num_frames: int, batch_size: int) -> list[range]:
    """Consecutive batches of ``batch_size`` frames (the last one may be shorter)."""
    return [range(s, min(s + batch_size, num_frames)) for s in range(0, num_frames, batch_size)]


def batch_keyframes(
    num_frames: int,
    batch_size: int,
    sampling: str = "random",
    generator: torch.Generator | None = None,
) -> list[int]:
    """TokenFlow's keyframes: one per batch of ``batch_size`` frames, ascending (frame indices).

    (Not :func:`videoedit.pipelines.pipeline_keyframe.select_keyframes`, which picks the keyframes of
    ``method=keyframe_propagate``.)

    Args:
        sampling: ``"random"`` (official, re-drawn every step: ``randint(B, (F // B,)) + arange(0, F, B)``,
            here from ``generator`` so runs are reproducible) or ``"even"`` (each batch's centre frame,
            the paper's "w/o random keyframes" ablation).
        generator: the run's generator (``"random"`` only), CPU or CUDA: the draws are made on its
            device (a CUDA generator cannot draw CPU tensors).
    """
    batches = frame_batches(num_frames, batch_size)
    if sampling == "even":
        return [b.start + len(b) // 2 for b in batches]
    if sampling != "random":
        raise ConfigError(f"keyframe_sampling must be one of {KEYFRAME_SAMPLING}, got {sampling!r}.")
    device = generator.device if generator is not None else None
    full = num_frames // batch_size
    offsets = torch.randint(batch_size, (full,), generator=generator, device=device).tolist() if full else []
    if len(batches) > full:  # a shorter last batch (the official code drops those frames instead)
        offsets.append(int(torch.randint(len(batches[-1]), (1,), generator=generator, device=device)))
    return [b.start + int(o) for b, o in zip(batches, offsets)]


@dataclass(frozen=True)
class PropagationPlan:
    """Where each frame of a batch takes its self-attention output from.

    Attributes:
        sources: per frame, up to two ``(keyframe index, weight)`` pairs (keyframe index = position in
            the step's keyframe list); the weights sum to 1.
        exact: per frame, whether it *is* its first source keyframe and copies that keyframe's cached
            output unchanged (no nearest-neighbour search; ``paper`` blend).
    """

    sources: tuple[tuple[tuple[int, float], ...], ...]
    exact: tuple[bool, ...]

    @property
    def num_frames(self) -> int:
        return len(self.sources)

    def keyframes(self) -> list[int]:
        """The keyframes (indices) this batch reads."""
        return sorted({k for pairs in self.sources for k, w in pairs if w > 0})

    def users(self, keyframe: int) -> tuple[list[int], list[float]]:
        """Frames (positions in the batch) that gather from ``keyframe`` by nearest neighbour, and their weights."""
        frames, weights = [], []
        for f, pairs in enumerate(self.sources):
            if self.exact[f]:
                continue
            for k, w in pairs:
                if k == keyframe and w > 0:
                    frames.append(f)
                    weights.append(w)
        return frames, weights


def official_blend_plan(batch: range, batch_index: int, previous: range | None) -> PropagationPlan:
    """TokenFlow's blend (``TokenFlowBlock``): the batch's own keyframe and the previous batch's.

    For batch ``b > 0`` with frames ``s``: ``p1``/``p2`` are the centres of batch ``b`` and ``b - 1``
    (the code assumes the keyframes sit there even though they are drawn at random), and the own
    keyframe gets ``w1 = sigmoid(|s - p2| / (|s - p1| + |s - p2|))`` (0.62 ... 0.73 for 8 frames), the
    previous one ``1 - w1``. Batch 0 uses its own keyframe only. A shorter last batch (never produced
    by the official code) uses its real centre.
    """
    n = len(batch)
    if batch_index == 0 or previous is None:
        return PropagationPlan(sources=(((batch_index, 1.0),),) * n, exact=(False,) * n)
    s = torch.arange(batch.start, batch.stop, dtype=torch.float64)
    p1 = batch.start + n // 2
    p2 = previous.start + len(previous) // 2
    d1, d2 = (s - p1).abs(), (s - p2).abs()
    w1 = torch.sigmoid(d2 / (d1 + d2)).tolist()
    sources = tuple(((batch_index, w), (batch_index - 1, 1.0 - w)) for w in w1)
    return PropagationPlan(sources=sources, exact=(False,) * n)


def paper_blend_plan(frame_ids: Sequence[int], keyframes: Sequence[int]) -> PropagationPlan:
    """The paper's blend: the two temporally adjacent keyframes at their real positions, linear weights.

    A frame between keyframes at ``a < i < c`` takes ``(c - i) / (c - a)`` from ``a`` and
    ``(i - a) / (c - a)`` from ``c``; before the first / after the last keyframe only the nearest one
    is used; a keyframe copies its own output (``exact``).
    """
    keyframes = list(keyframes)
    sources, exact = [], []
    for i in frame_ids:
        j = bisect.bisect_right(keyframes, i)  # keyframes[:j] <= i
        prev = j - 1 if j > 0 else None
        nxt = j if j < len(keyframes) else None
        if prev is not None and keyframes[prev] == i:
            sources.append(((prev, 1.0),))
            exact.append(True)
            continue
        exact.append(False)
        if prev is None:
            sources.append(((nxt, 1.0),))
        elif nxt is None:
            sources.append(((prev, 1.0),))
        else:
            a, c = keyframes[prev], keyframes[nxt]
            sources.append(((prev, (c - i) / (c - a)), (nxt, (i - a) / (c - a))))
    return PropagationPlan(sources=tuple(sources), exact=tuple(exact))


def propagation_plan(
    batch_index: int, batches: Sequence[range], keyframes: Sequence[int], blend: str = "official"
) -> PropagationPlan:
    """The plan of batch ``batch_index`` (``blend``: ``"official"`` or ``"paper"``)."""
    batch = batches[batch_index]
    if blend == "official":
        return official_blend_plan(batch, batch_index, batches[batch_index - 1] if batch_index else None)
    if blend == "paper":
        return paper_blend_plan(list(batch), keyframes)
    raise ConfigError(f"blend must be one of {BLEND_MODES}, got {blend!r}.")


# ----------------------------------------------------------------------------------- tensor functions
def cosine_nearest_neighbours(
    queries: torch.Tensor, keys: torch.Tensor, chunk_size: int | None = 4096
) -> torch.Tensor:
    """Index of the most cosine-similar key for every query.

    Args:
        queries: ``(M, C)``.
        keys: ``(N, C)``.
        chunk_size: queries per similarity block (``None``: all at once, the official
            ``batch_cosine_sim``); memory is ``chunk_size x N`` instead of ``M x N``.

    Returns:
        ``(M,)`` long indices into ``keys``.
    """
    keys = keys / keys.norm(dim=-1, keepdim=True)
    step = queries.shape[0] if not chunk_size else int(chunk_size)
    out = torch.empty(queries.shape[0], dtype=torch.long, device=queries.device)
    for start in range(0, queries.shape[0], max(1, step)):
        q = queries[start : start + step]
        q = q / q.norm(dim=-1, keepdim=True)
        out[start : start + step] = (q @ keys.T).argmax(dim=-1)
    return out


def propagate_keyframe_outputs(
    queries: torch.Tensor,
    keyframe_tokens: torch.Tensor,
    keyframe_outputs: torch.Tensor,
    plan: PropagationPlan,
    chunk_size: int | None = 4096,
) -> torch.Tensor:
    """Self-attention outputs of a batch, gathered from the keyframes by nearest neighbour and blended.

    Args:
        queries: ``(n, N, C)`` the batch's source-branch self-attention inputs.
        keyframe_tokens: ``(K, N, C)`` the keyframes' source-branch inputs (any device).
        keyframe_outputs: ``(R, K, N, D)`` the keyframes' outputs per branch (any device).
        plan: the batch's :class:`PropagationPlan` (keyframe indices into ``K``).
        chunk_size: see :func:`cosine_nearest_neighbours`.

    Returns:
        ``(R, n, N, D)``: ``out[r, f, i] = sum_k w[f, k] * keyframe_outputs[r, k, nn_k(f, i)]`` with
        ``nn_k(f, i)`` the token of keyframe ``k`` closest to token ``i`` of frame ``f`` (the same
        indices for every branch ``r``), or the keyframe's own output for ``exact`` frames.
    """
    n, seq, _ = queries.shape
    if plan.num_frames != n:
        raise ValueError(f"the propagation plan is for {plan.num_frames} frames, the batch has {n}")
    device = queries.device
    r, _, _, d = keyframe_outputs.shape
    out = torch.zeros((r, n, seq, d), dtype=keyframe_outputs.dtype, device=device)
    for k in plan.keyframes():
        frames, weights = plan.users(k)
        if not frames:
            continue
        keys = keyframe_tokens[k].to(device, queries.dtype)
        q = queries if len(frames) == n else queries[frames]
        idx = cosine_nearest_neighbours(q.reshape(-1, q.shape[-1]), keys, chunk_size).view(len(frames), seq)
        gathered = keyframe_outputs[:, k].to(device)[:, idx]  # (R, m, N, D)
        w = torch.tensor(weights, dtype=out.dtype, device=device).view(1, -1, 1, 1)
        if len(frames) == n:
            out += w * gathered
        else:
            out[:, frames] += w * gathered
    for f, is_exact in enumerate(plan.exact):
        if is_exact:
            out[:, f] = keyframe_outputs[:, plan.sources[f][0][0]].to(device)
    return out


def extended_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    num_frames: int,
    scale: float | None = None,
    window: int | None = None,
) -> torch.Tensor:
    """Every frame's queries attend to the keys/values of all ``num_frames`` frames of its group.

    Args:
        query, key, value: ``(G*F, heads, N, d)`` (``G`` groups of ``F = num_frames`` frames).
        scale: the softmax scale (``attn.scale``).
        window: ``None`` (official: all frames) or ``w``: frame ``f`` attends to the ``2w + 1`` frames
            nearest to it (a window shifted inward at the ends), which bounds the compute for long videos.

    Returns:
        ``(G*F, heads, N, d)``; one SDPA call, no repeated K/V (window: K/V of ``2w + 1`` frames per frame).
    """
    if window is None or 2 * window + 1 >= num_frames:
        q = frames_to_sequence(query, num_frames)
        out = F.scaled_dot_product_attention(
            q, frames_to_sequence(key, num_frames), frames_to_sequence(value, num_frames), scale=scale
        )
        return sequence_to_frames(out, num_frames)
    gf, heads, n, d = key.shape
    length = 2 * window + 1
    starts = (torch.arange(num_frames) - window).clamp(0, num_frames - length)
    idx = (starts[:, None] + torch.arange(length)[None, :]).to(key.device)  # (F, L)

    def windows(x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(gf // num_frames, num_frames, heads, n, d)[:, idx]  # (G, F, L, heads, N, d)
        return x.permute(0, 1, 3, 2, 4, 5).reshape(gf, heads, length * n, d)

    return F.scaled_dot_product_attention(query, windows(key), windows(value), scale=scale)


def inject_source(x: torch.Tensor, state: StepState) -> torch.Tensor:
    """A copy of ``x`` (batch ``(len(branches) * F, ...)``) whose edited branches equal the source branch."""
    src = state.branch_slice("source")
    out = x.clone()
    for branch in state.branches:
        if branch != "source":
            out[state.branch_slice(branch)] = x[src]
    return out


# ----------------------------------------------------------------------------------- the per-call store
@dataclass
class KeyframeCache:
    """One self-attention layer's keyframe cache.

    Attributes:
        tokens: ``(K, N, C)`` the keyframes' source-branch ``attn1`` inputs (``norm1`` output).
        outputs: ``(R, K, N, D)`` the keyframes' ``attn1`` outputs per branch.
    """

    tokens: torch.Tensor
    outputs: torch.Tensor


class KeyframeStore:
    """The state one TokenFlow pipeline call shares with its processors and hook (see module docstring).

    Args:
        state: the call's :class:`StepState` (timestep, batch layout, frames of the current pass).
        qk_timesteps: timesteps at which the PnP layers' q/k are injected.
        conv_timesteps: timesteps at which the PnP conv features are injected.
        nn_chunk_size: queries per nearest-neighbour similarity block (``None``: all at once).
        keyframe_window: see :func:`extended_attention`.
        cache_device: where keyframe caches are kept (``None``: where they are computed; ``"cpu"`` to
            offload them from the GPU).

    Attributes:
        mode: ``"off"`` (plain attention), ``"keyframes"`` (extended attention, caches filled) or
            ``"propagate"`` (outputs gathered from the caches).
        plan: the current batch's :class:`PropagationPlan` (``"propagate"`` only).
    """

    def __init__(
        self,
        state: StepState,
        qk_timesteps: Sequence[int] = (),
        conv_timesteps: Sequence[int] = (),
        nn_chunk_size: int | None = 4096,
        keyframe_window: int | None = None,
        cache_device: torch.device | str | None = None,
    ) -> None:
        self.state = state
        self.qk_timesteps = frozenset(int(t) for t in qk_timesteps)
        self.conv_timesteps = frozenset(int(t) for t in conv_timesteps)
        self.nn_chunk_size = nn_chunk_size
        self.keyframe_window = keyframe_window
        self.cache_device = None if cache_device is None else torch.device(cache_device)
        self.mode = "off"
        self.plan: PropagationPlan | None = None
        self._tokens: dict[str, torch.Tensor] = {}
        self._outputs: dict[str, torch.Tensor] = {}

    @contextlib.contextmanager
    def pass_(self, mode: str, plan: PropagationPlan | None = None) -> Iterator[None]:
        """Set the pass kind (and plan) for one UNet call."""
        if mode not in ("off", "keyframes", "propagate"):
            raise ValueError(f"unknown TokenFlow pass {mode!r}")
        if mode == "propagate" and plan is None:
            raise ValueError("a propagation pass needs a PropagationPlan")
        self.mode, self.plan = mode, plan
        try:
            yield
        finally:
            self.mode, self.plan = "off", None

    def _keep(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` detached, on ``cache_device``, owning exactly its own elements.

        The source-branch tokens are a dim-0 view of the ``(3K, N, C)`` ``norm1`` output: keeping the
        view would keep all three branches alive, so a view is copied when nothing else copies it.
        """
        x = x.detach()
        if self.cache_device is not None and x.device != self.cache_device:
            return x.to(self.cache_device)  # a new tensor of x's size
        if x.untyped_storage().nbytes() != x.numel() * x.element_size():
            return x.clone(memory_format=torch.contiguous_format)
        return x

    def save_tokens(self, layer: str, tokens: torch.Tensor) -> None:
        """Cache ``(K, N, C)`` source-branch inputs of ``layer`` (keyframe pass)."""
        self._tokens[layer] = self._keep(tokens)

    def save_outputs(self, layer: str, outputs: torch.Tensor) -> None:
        """Cache ``(R*K, N, D)`` outputs of ``layer`` (keyframe pass) as ``(R, K, N, D)``."""
        r = len(self.state.branches)
        self._outputs[layer] = self._keep(outputs.reshape(r, outputs.shape[0] // r, *outputs.shape[1:]))

    def cache(self, layer: str) -> KeyframeCache:
        if layer not in self._tokens or layer not in self._outputs:
            raise RuntimeError(f"no keyframe cache for {layer!r}: run the keyframe pass of this step first")
        return KeyframeCache(self._tokens[layer], self._outputs[layer])

    def nbytes(self) -> int:
        """Bytes held by the caches."""
        return sum(t.numel() * t.element_size() for t in (*self._tokens.values(), *self._outputs.values()))

    def clear(self) -> None:
        """Drop every cache (end of a step or of the call)."""
        self._tokens.clear()
        self._outputs.clear()
        self.mode, self.plan = "off", None


# ----------------------------------------------------------------------------------- processor and hook
class TokenFlowAttnProcessor(AttentionProcessorBase):
    """TokenFlow's self-attention (install on every ``attn1``), driven by a :class:`KeyframeStore`.

    * ``"keyframes"`` pass: PnP q/k injection (``inject_qk`` layers, at the store's ``qk_timesteps``),
      per-frame attention for the source branch and :func:`extended_attention` across the keyframes for
      the edited branches; caches the layer's source-branch input and its output.
    * ``"propagate"`` pass: no attention is computed; the output is
      :func:`propagate_keyframe_outputs` of the cache with the store's plan.
    * ``"off"``: ``AttnProcessor2_0``'s result.

    Args:
        name: the layer name (key of the cache).
        store: the call's store.
        inject_qk: whether this is one of the PnP layers (:data:`PNP_ATTENTION_LAYERS`).
    """

    def __init__(self, name: str, store: KeyframeStore, inject_qk: bool = False) -> None:
        self.name = name
        self.store = store
        self.inject_qk = inject_qk

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args,
        **kwargs,
    ) -> torch.Tensor:
        mode = self.store.mode
        if mode != "off" and (encoder_hidden_states is not None or hidden_states.ndim != 3):
            raise RuntimeError(
                f"TokenFlow processors belong on self-attention layers (attn1) with (B, N, C) input; {self.name} is not"
            )
        if mode == "propagate":
            return self.propagate(hidden_states)
        out = super().__call__(
            attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs
        )
        if mode == "keyframes":
            self.store.save_outputs(self.name, out)
        return out

    def adjust_qkv(
        self,
        attn: Attention,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        call: AttentionCall,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        store = self.store
        if store.mode != "keyframes":
            return query, key, value
        state = store.state
        store.save_tokens(self.name, call.hidden_states[state.branch_slice("source")])
        if self.inject_qk and state.timestep in store.qk_timesteps:
            query, key = inject_source(query, state), inject_source(key, state)
        return query, key, value

    def attend(
        self,
        attn: Attention,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        call: AttentionCall,
    ) -> torch.Tensor:
        if self.store.mode != "keyframes":
            return super().attend(attn, query, key, value, call)
        if call.attention_mask is not None:
            raise RuntimeError("TokenFlow's extended attention does not take an attention mask")
        state = self.store.state
        outs = []
        for branch in state.branches:
            sl = state.branch_slice(branch)
            if branch == "source":  # official: the source branch attends per frame
                outs.append(F.scaled_dot_product_attention(query[sl], key[sl], value[sl], scale=attn.scale))
            else:
                outs.append(
                    self.extended_attention(query[sl], key[sl], value[sl], state.num_frames, attn.scale)
                )
        return torch.cat(outs)

    def extended_attention(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, num_frames: int, scale: float
    ) -> torch.Tensor:
        """``(F, heads, N, d)`` -> ``(F, heads, N, d)`` across the keyframes (overridable for references)."""
        return extended_attention(query, key, value, num_frames, scale, self.store.keyframe_window)

    def propagate(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """``(R*n, N, C)`` self-attention inputs -> ``(R*n, N, D)`` outputs gathered from the keyframes."""
        store = self.store
        cache = store.cache(self.name)
        tokens = hidden_states[store.state.branch_slice("source")]
        out = propagate_keyframe_outputs(tokens, cache.tokens, cache.outputs, store.plan, store.nn_chunk_size)
        return out.reshape(-1, *out.shape[2:]).to(hidden_states.dtype)


class PnPConvInjection:
    """Forward hook for :data:`PNP_CONV_LAYER`: at the store's ``conv_timesteps`` the edited branches'
    ``conv2`` output (the ResNet block's residual branch, before the skip addition) becomes the source
    branch's (official ``register_conv_injection``). Install with ``module_hooks``."""

    def __init__(self, store: KeyframeStore) -> None:
        self.store = store

    def __call__(self, module: torch.nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        store = self.store
        if store.mode == "off" or store.state.timestep not in store.conv_timesteps:
            return None
        return inject_source(output, store.state)
