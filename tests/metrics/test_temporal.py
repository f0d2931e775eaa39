"""Warp error: known answers on synthetic clips, float math (no uint8 wrap-around), occlusion masking."""

import numpy as np
import pytest
import torch

from videoedit.metrics.temporal import SourceFlows, motion_alignment, source_flows, warp_error
from videoedit.motion import DISFlow, FlowEstimator


def _texture(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth random RGB texture (H, W, 3) uint8 (DIS needs texture to find the flow)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 8 + 2, width // 8 + 2, 3)).astype(np.float32)
    big = torch.nn.functional.interpolate(
        torch.from_numpy(small).permute(2, 0, 1)[None], scale_factor=8, mode="bicubic", align_corners=False
    )[0].permute(1, 2, 0)
    return big[:height, :width].clamp(0, 255).round().to(torch.uint8).numpy()


def _constant_flows(n: int, h: int, w: int, dx: float, dy: float) -> SourceFlows:
    fwd = torch.zeros(n, 2, h, w)
    fwd[:, 0], fwd[:, 1] = dx, dy
    return SourceFlows(fwd, -fwd)


def _panning(frames: int, h: int, w: int, dx: int, dy: int) -> np.ndarray:
    """Frames of a camera moving over a larger texture: content moves by (-dx, -dy) px per frame, so
    pixel p of frame t is pixel p - (dx, dy)... i.e. flow_t->t+1 = (-dx, -dy)."""
    big = _texture(h + abs(dy) * frames + 8, w + abs(dx) * frames + 8, seed=3)
    return np.stack([big[t * dy + 4 : t * dy + 4 + h, t * dx + 4 : t * dx + 4 + w] for t in range(frames)])


def test_a_static_video_has_zero_warp_error():
    frames = np.repeat(_texture(64, 64)[None], 4, axis=0)
    exact = warp_error(frames, _constant_flows(3, 64, 64, 0, 0))  # zero up to grid_sample's float rounding
    assert exact.warp_error < 1e-4 and exact.warp_mse < 1e-8 and max(exact.per_pair) < 1e-4
    estimated = warp_error(frames, source_flows(frames, DISFlow()))  # DIS finds ~1e-6 px of motion
    assert estimated.warp_error < 1e-3
    assert estimated.valid_fraction > 0.99


def test_a_shifted_video_warped_by_its_true_flow_has_zero_error():
    frames = _panning(4, 48, 64, dx=3, dy=2)
    result = warp_error(frames, _constant_flows(3, 48, 64, dx=-3, dy=-2))
    assert result.warp_error < 1e-3
    # pixels whose flow leaves the frame are not counted: 3 columns and 2 rows of each frame
    assert result.valid_fraction == pytest.approx((48 - 2) * (64 - 3) / (48 * 64))


def test_a_shifted_video_with_estimated_flow_is_nearly_consistent():
    frames = _panning(4, 96, 96, dx=2, dy=1)
    flows = source_flows(frames, DISFlow())
    steady = warp_error(frames, flows).warp_error
    # the same flow applied to frames that do not follow it: much larger error
    shuffled = warp_error(frames[[0, 2, 1, 3]], flows).warp_error
    assert steady < 1.0
    assert shuffled > 10 * steady


def test_matches_a_numpy_reference_for_an_integer_shift():
    rng = np.random.default_rng(1)
    out = rng.integers(0, 256, (3, 20, 30, 3), dtype=np.uint8)
    result = warp_error(out, _constant_flows(2, 20, 30, dx=2, dy=1))
    a, b = out.astype(np.float64), out.astype(np.float64)
    # warp(out[t+1], flow)(y, x) = out[t+1](y + 1, x + 2), inside for y < 19, x < 28
    per_pair = [np.abs(a[t, :19, :28] - b[t + 1, 1:, 2:]).mean() for t in range(2)]
    mse = [((a[t, :19, :28] - b[t + 1, 1:, 2:]) / 255) ** 2 for t in range(2)]
    torch.testing.assert_close(result.per_pair, per_pair, rtol=1e-5, atol=1e-4)
    assert result.warp_error == pytest.approx(np.mean(per_pair), rel=1e-5)
    assert result.warp_mse == pytest.approx(1000 * np.mean([m.mean() for m in mse]), rel=1e-5)


def _reference(out: np.ndarray, fwd: np.ndarray, bwd: np.ndarray | None, alpha=0.01, beta=0.5):
    """numpy warp error for integer flows: pixel p of frame t is compared with out[t+1] at
    p + f_t->t+1(p); it counts when that lands inside the frame and (with ``bwd``) passes the
    forward-backward check |f + b(p + f)|^2 <= alpha (|f|^2 + |b(p + f)|^2) + beta. Returns
    (per-pair L1 in levels, per-pair MSE of [0, 1] intensities, fraction of pixels counted)."""
    frames, height, width, _ = out.shape
    ys, xs = np.mgrid[0:height, 0:width]
    x = out.astype(np.float64)
    l1, mse, counted = [], [], []
    for t in range(frames - 1):
        fx, fy = fwd[t, 0], fwd[t, 1]
        tx, ty = xs + fx, ys + fy
        valid = (tx >= 0) & (tx <= width - 1) & (ty >= 0) & (ty <= height - 1)
        tx = np.clip(tx, 0, width - 1).astype(int)
        ty = np.clip(ty, 0, height - 1).astype(int)
        if bwd is not None:
            bx, by = bwd[t, 0][ty, tx], bwd[t, 1][ty, tx]
            err = (fx + bx) ** 2 + (fy + by) ** 2
            valid &= err <= alpha * (fx**2 + fy**2 + bx**2 + by**2) + beta
        diff = x[t] - x[t + 1][ty, tx]  # (H, W, 3)
        l1.append(np.abs(diff)[valid].mean())
        mse.append(((diff / 255) ** 2)[valid].mean())
        counted.append(valid.mean())
    return l1, mse, float(np.mean(counted))


def test_matches_a_numpy_reference_for_a_moving_block_with_occlusions():
    """Non-uniform flow: one block moves (a different shift per pair), the rest is still. Background
    pixels the block covers in frame t+1 fail the forward-backward check and are not counted."""
    rng = np.random.default_rng(4)
    h, w = 32, 40
    out = rng.integers(0, 256, (3, h, w, 3), dtype=np.uint8)
    fwd = np.zeros((2, 2, h, w), np.float32)
    bwd = np.zeros((2, 2, h, w), np.float32)
    for t, (top, left, dx, dy) in enumerate([(8, 10, 3, 2), (12, 30, 5, -4)]):
        fwd[t, 0, top : top + 8, left : left + 10] = dx  # the block in frame t ...
        fwd[t, 1, top : top + 8, left : left + 10] = dy
        bwd[t, 0, top + dy : top + dy + 8, left + dx : left + dx + 10] = -dx  # ... where it is in t+1
        bwd[t, 1, top + dy : top + dy + 8, left + dx : left + dx + 10] = -dy
    flows = SourceFlows(torch.from_numpy(fwd), torch.from_numpy(bwd))
    result = warp_error(out, flows)
    l1, mse, counted = _reference(out, fwd, bwd)
    torch.testing.assert_close(result.per_pair, l1, rtol=1e-5, atol=1e-4)
    assert result.warp_error == pytest.approx(np.mean(l1), rel=1e-5)
    assert result.warp_mse == pytest.approx(1000 * np.mean(mse), rel=1e-5)
    assert result.valid_fraction == pytest.approx(counted)
    # pair 1's block leaves the frame on the right (x 30..39 + 5) and is partly occluding: both drop pixels
    assert counted < 1 - 20 / (h * w)
    # without the occlusion check only pixels leaving the frame are dropped: another (reference) answer
    plain = warp_error(out, SourceFlows(torch.from_numpy(fwd), None))
    l1_plain, _, counted_plain = _reference(out, fwd, None)
    torch.testing.assert_close(plain.per_pair, l1_plain, rtol=1e-5, atol=1e-4)
    assert plain.valid_fraction == pytest.approx(counted_plain) and counted_plain > counted
    # sampling at p - f instead of p + f would give another error: the test can tell them apart
    l1_wrong, _, _ = _reference(out, -fwd, None)
    assert not np.allclose(l1_wrong, l1_plain, rtol=1e-3)


def test_computed_in_float_without_uint8_wrap_around():
    # frames at 100, 97, 100, 97 levels: consecutive frames differ by exactly 3 levels, both ways
    frames = np.array([100, 97, 100, 97], dtype=np.uint8)[:, None, None, None].repeat(16, 1).repeat(16, 2)
    frames = frames.repeat(3, 3)
    result = warp_error(frames, _constant_flows(3, 16, 16, 0, 0))
    assert result.warp_error == pytest.approx(3.0)
    assert result.warp_mse == pytest.approx(1000 * (3 / 255) ** 2)
    wrapped = np.abs(frames[:-1] - frames[1:]).mean()  # what StreamV2V's uint8 subtraction computes
    assert wrapped > 80  # 97 - 100 wraps to 253


def test_occluded_pixels_are_not_counted():
    frames = np.zeros((2, 32, 32, 3), dtype=np.uint8)
    frames[1, 8:16, 8:16] = 255  # a change in a square ...
    fwd = torch.zeros(1, 2, 32, 32)
    bwd = torch.zeros(1, 2, 32, 32)
    bwd[:, 0, 8:16, 8:16] = 10.0  # ... where the flow fails the forward-backward check
    assert warp_error(frames, SourceFlows(fwd, bwd)).warp_error == 0.0
    assert warp_error(frames, SourceFlows(fwd, None)).warp_error > 0  # no occlusion check: counted
    assert warp_error(frames, SourceFlows(fwd, bwd)).valid_fraction == pytest.approx(1 - 64 / 1024)


def test_float_frames_in_minus_one_one_give_the_same_error():
    rng = np.random.default_rng(2)
    out = rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    flows = _constant_flows(2, 16, 16, 1, 0)
    as_tensor = torch.from_numpy(out).permute(0, 3, 1, 2).float() / 127.5 - 1
    assert warp_error(as_tensor, flows).warp_error == pytest.approx(
        warp_error(out, flows).warp_error, rel=1e-5
    )


def test_frames_that_do_not_match_the_flows():
    with pytest.raises(ValueError, match="do not match the source flows"):
        warp_error(np.zeros((4, 16, 16, 3), np.uint8), _constant_flows(2, 16, 16, 0, 0))


class _FixedFlow(FlowEstimator):
    """Returns given flows: the edited clip's flows are known exactly."""

    name = "fixed"

    def __init__(self, flows: torch.Tensor) -> None:
        self.flows = flows

    def estimate(self, frames_a: np.ndarray, frames_b: np.ndarray) -> torch.Tensor:
        return self.flows[: len(frames_a)]


def test_motion_alignment_is_minus_the_mean_end_point_error():
    frames = np.repeat(_texture(16, 16)[None], 3, axis=0)
    rng = np.random.default_rng(0)
    source = torch.from_numpy(rng.normal(size=(2, 2, 16, 16))).float()
    edited = torch.from_numpy(rng.normal(size=(2, 2, 16, 16))).float()
    result = motion_alignment(frames, SourceFlows(source), _FixedFlow(edited))
    epe = np.sqrt(((edited.numpy() - source.numpy()) ** 2).sum(1))  # (2, 16, 16), V2VBench's formula
    assert result["motion_alignment"] == pytest.approx(-epe.mean(), rel=1e-5)
    assert result["motion_epe_per_pair"] == pytest.approx(epe.mean((1, 2)), rel=1e-5)
    assert motion_alignment(frames, SourceFlows(source), _FixedFlow(source))["motion_alignment"] == 0.0


def test_motion_alignment_of_estimated_flows():
    source = _panning(4, 64, 64, 2, 1)
    flows = source_flows(source, DISFlow())
    assert motion_alignment(source, flows, DISFlow())["motion_alignment"] == pytest.approx(0.0, abs=1e-6)
    still = np.repeat(source[:1], 4, axis=0)  # the edit does not move: EPE = the source's motion, sqrt(5) px
    assert motion_alignment(still, flows, DISFlow())["motion_alignment"] == pytest.approx(
        -np.sqrt(5), abs=0.3
    )
    with pytest.raises(ValueError, match="do not match the source flows"):
        motion_alignment(source[:3], flows, DISFlow())
