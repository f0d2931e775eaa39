import torch

from videoedit.attention.flatten import (
    build_trajectories,
    link_tokens,
    reference_trajectory_attention,
    trajectory_attention,
)


def _shift_flows(frames, height, width, dx, dy):
    flow = torch.zeros(frames - 1, 2, height, width)
    flow[:, 0], flow[:, 1] = dx, dy
    return flow


def test_trajectories_follow_a_translation():
    # 64x96 pixels, 8x12 tokens (8 px per token); content moves 8 px right and 8 px down per frame
    flows = _shift_flows(4, 64, 96, 8.0, 8.0)
    traj = build_trajectories(flows, 4, (8, 12))
    n = 8 * 12
    start = 1 * 12 + 2  # token (y=1, x=2) of frame 0
    members = traj.members[traj.token_trajectory[start]]
    expected = [f * n + (1 + f) * 12 + (2 + f) for f in range(4)]  # (y+f, x+f) in frame f
    assert members.tolist() == expected
    # every token is in exactly one trajectory, with at most one token per frame
    assert torch.equal(torch.sort(traj.members[traj.members >= 0]).values, torch.arange(4 * n))
    # tokens that leave the frame end their trajectory; new tokens entering start one
    last_col = 5 * 12 + 11
    assert (traj.members[traj.token_trajectory[last_col]] >= 0).sum() == 1


def test_non_square_frames_and_conflicts_are_resolved():
    flow = torch.zeros(1, 2, 16, 48)
    flow[0, 0, :, :24] = 24.0  # the left half moves onto the right half, which stays: 2 sources per target
    succ = link_tokens(flow, (2, 6), torch.Generator().manual_seed(0))
    targets = succ[0][succ[0] >= 0]
    assert len(targets) == len(set(targets.tolist()))  # one winner per target
    assert set(targets.tolist()) == {3, 4, 5, 9, 10, 11}  # right half of both rows
    traj = build_trajectories(flow, 2, (2, 6), torch.Generator().manual_seed(0))
    assert traj.token_trajectory.shape == (2 * 12,)


def test_trajectory_attention_equals_the_full_matrix_reference():
    flows = torch.randn(3, 2, 32, 32, generator=torch.Generator().manual_seed(0)) * 6
    traj = build_trajectories(flows, 4, (8, 8), torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(2, 4 * 64, 8, generator=g) for _ in range(3))
    ref = reference_trajectory_attention(q, k, v, traj, 0.3)
    for budget in (1, 10**9):
        torch.testing.assert_close(
            trajectory_attention(q, k, v, traj, 0.3, budget), ref, rtol=1e-5, atol=1e-5
        )
    single = (traj.lengths[traj.token_trajectory] == 1).nonzero()[:, 0]
    torch.testing.assert_close(
        trajectory_attention(q, k, v, traj, 0.3)[:, single], v[:, single]
    )  # alone: itself
