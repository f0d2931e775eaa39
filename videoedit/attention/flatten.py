"""FLATTEN trajectory attention (Cong et al., ICLR 2024), as VideoGrain uses it, vectorised.

Trajectories link each token to where optical flow carries it in the next frame. At a layer with a
``h x w`` token grid, the forward flow between consecutive frames is brought to that grid (values scaled
to tokens, nearest sampling as the official code) and rounded; token ``(t, y, x)`` links to
``(t+1, y+dy, x+dx)`` when that is inside the frame. When several tokens land on the same one, one of
them (chosen at random, reproducibly) keeps the link and the others end their trajectory there.
Following links from frame 0 on gives disjoint chains with at most one token per frame; a token in no
chain is a trajectory of its own.

Attention then runs inside each trajectory: every token attends to the tokens of its own trajectory
(itself included), with the full-frame attention output as values (official ``old_qk=1``: the
queries/keys are the layer's own projections).

The official code builds these with Python loops over every pixel, computes all four resolutions even
when one is used, and indexes with ``x // H`` (wrong for non-square frames); this version is tensor code,
per requested resolution, and correct for any aspect ratio.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from videoedit.motion import resize_flow


@dataclass
class Trajectories:
    """Trajectories of one clip at one token grid.

    Attributes:
        grid: ``(h, w)``.
        num_frames: ``F``.
        members: ``(T, F)`` long, the token index (frame-major ``f*h*w + y*w + x``) of each trajectory in
            each frame, ``-1`` where it has none.
        token_trajectory: ``(F*h*w,)`` long, the trajectory of each token.
    """

    grid: tuple[int, int]
    num_frames: int
    members: torch.Tensor
    token_trajectory: torch.Tensor

    @property
    def lengths(self) -> torch.Tensor:
        return (self.members >= 0).sum(1)


def link_tokens(
    flow: torch.Tensor, grid: tuple[int, int], generator: torch.Generator | None = None
) -> torch.Tensor:
    """Successor of every token of frame ``t`` in frame ``t+1``: ``(F-1, h*w)`` long, ``-1`` for none.

    Args:
        flow: ``(F-1, 2, H, W)`` forward flows ``t -> t+1`` in pixels.
        grid: ``(h, w)`` token grid.
        generator: decides conflicts (several tokens landing on the same one) reproducibly.
    """
    h, w = grid
    steps = resize_flow(flow.float(), (h, w), mode="nearest").round().long()  # in tokens
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    n = h * w
    succ = torch.full((flow.shape[0], n), -1, dtype=torch.long)
    for t in range(flow.shape[0]):
        ty = (ys + steps[t, 1]).reshape(-1)
        tx = (xs + steps[t, 0]).reshape(-1)
        inside = (ty >= 0) & (ty < h) & (tx >= 0) & (tx < w)
        target = torch.where(inside, ty * w + tx, torch.full_like(ty, -1))
        # conflicts: the source with the highest random priority wins its target
        priority = torch.randperm(n, generator=generator).float()
        best = torch.full((n,), -1.0).scatter_reduce(0, target.clamp_min(0)[inside], priority[inside], "amax")
        wins = inside & (priority == best[target.clamp_min(0)])
        succ[t] = torch.where(wins, target, torch.full_like(target, -1))
    return succ


def build_trajectories(
    flow: torch.Tensor, num_frames: int, grid: tuple[int, int], generator: torch.Generator | None = None
) -> Trajectories:
    """Trajectories at ``grid`` from forward flows ``(F-1, 2, H, W)`` (see the module docstring)."""
    h, w = grid
    n = h * w
    if num_frames < 2:
        members = torch.arange(n)[:, None]
        return Trajectories(grid, num_frames, members, torch.arange(n))
    succ = link_tokens(flow, grid, generator)
    traj = torch.full((num_frames, n), -1, dtype=torch.long)
    traj[0] = torch.arange(n)
    next_id = n
    for t in range(num_frames - 1):
        has = succ[t] >= 0
        traj[t + 1, succ[t][has]] = traj[t][has]
        fresh = traj[t + 1] < 0
        count = int(fresh.sum())
        traj[t + 1, fresh] = torch.arange(next_id, next_id + count)
        next_id += count
    token_trajectory = traj.reshape(-1)
    members = torch.full((next_id, num_frames), -1, dtype=torch.long)
    frame_of = torch.arange(num_frames).repeat_interleave(n)
    members[token_trajectory, frame_of] = torch.arange(num_frames * n)
    return Trajectories(grid, num_frames, members, token_trajectory)


def trajectory_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    trajectories: Trajectories,
    scale: float,
    chunk_budget_bytes: int = 128 * 2**20,
) -> torch.Tensor:
    """Attention of every token over the tokens of its trajectory.

    Args:
        q, k, v: ``(heads, F*N, d)`` (frame-major tokens of one branch).
        trajectories: from :func:`build_trajectories` at this layer's grid.

    Returns:
        ``(heads, F*N, d)``.
    """
    heads, total, d = q.shape
    members = trajectories.members.to(q.device)
    if members.numel() and members.max() >= total:
        raise ValueError(f"trajectories cover {int(members.max()) + 1} tokens but the layer has {total}")
    out = torch.empty_like(q)
    num_t, slots = members.shape
    # per trajectory, in fp32: gathered q, k, v and the result (4 * S * d), scores and probabilities (2 * S^2)
    per_traj = heads * slots * (4 * d + 2 * slots) * 4
    chunk = max(1, chunk_budget_bytes // per_traj)
    qf, kf, vf = (x if x.dtype == torch.float32 else x.float() for x in (q, k, v))
    for start in range(0, num_t, chunk):
        m = members[start : start + chunk]  # (c, S)
        valid = m >= 0
        idx = m.clamp_min(0)
        logits = torch.matmul(qf[:, idx] * scale, kf[:, idx].transpose(-1, -2))  # (heads, c, S, S)
        logits.masked_fill_(~valid[None, :, None, :], float("-inf"))
        res = torch.matmul(logits.softmax(-1), vf[:, idx])  # (heads, c, S, d)
        out[:, m[valid]] = res[:, valid].to(q.dtype)
    return out


def reference_trajectory_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, trajectories: Trajectories, scale: float
) -> torch.Tensor:
    """Full-matrix reference: attention restricted to same-trajectory pairs (tests only)."""
    same = trajectories.token_trajectory[:, None] == trajectories.token_trajectory[None, :]
    logits = torch.einsum("hqd,hkd->hqk", q.double(), k.double()) * scale
    logits = logits.masked_fill(~same, float("-inf"))
    return torch.einsum("hqk,hkd->hqd", logits.softmax(-1), v.double()).to(q.dtype)
