import numpy as np
import pytest
import torch

from videoedit.io.video import FrameSampling, read_video
from videoedit.motion import DISFlow, occlusion, out_of_frame, video_flows
from videoedit.motion.discrepancy import (
    MaskTracker,
    clamp_near_border,
    combine_masks,
    discrepancy,
    estimate_flow,
    frame_masks,
    masks_to_video,
    mean_discrepancy,
    motion_magnitude,
    valid_mean,
)


def _const(n, h, w, dx, dy):
    flow = torch.zeros(n, 2, h, w)
    flow[:, 0], flow[:, 1] = dx, dy
    return flow


def test_discrepancy_is_zero_where_motions_agree_and_high_where_they_differ():
    src = _const(1, 24, 32, 2.0, -1.0)
    gen = src.clone()
    gen[:, :, 8:16, 10:20] = 0.0  # the edit stands still there while the source moves
    mask = discrepancy(src, gen, tolerance=1.0)
    assert mask.shape == (1, 1, 24, 32)
    assert mask[0, 0, 8:16, 10:20].min() == 1.0
    outside = torch.ones(24, 32, dtype=torch.bool)
    outside[8:16, 10:20] = False
    assert mask[0, 0][outside].abs().max() == 0.0


def test_discrepancy_normalisation_is_a_saturating_ramp():
    src = torch.zeros(1, 2, 4, 4)
    gen = torch.zeros(1, 2, 4, 4)
    gen[0, 0, 0] = 0.3  # |d| = 0.3
    gen[0, :, 1] = torch.tensor([3.0, 4.0]).view(2, 1)  # |d| = 5
    mask = discrepancy(src, gen, tolerance=2.0)
    expected = (torch.linalg.vector_norm(gen - src, dim=1, keepdim=True) / 2.0).clamp(0, 1)
    torch.testing.assert_close(mask, expected)
    assert mask[0, 0, 0, 0] == pytest.approx(0.15) and mask[0, 0, 1, 0] == 1.0
    with pytest.raises(ValueError, match="tolerance must be > 0"):
        discrepancy(src, gen, tolerance=0)


def test_occluded_pixels_count_as_discrepant():
    # a square moves 10 px right in the source; the background it covers is occluded
    h, w = 40, 40
    f_ab = torch.zeros(1, 2, h, w)
    f_ab[:, 0, 15:25, 10:20] = 10.0
    f_ba = torch.zeros(1, 2, h, w)
    f_ba[:, 0, 15:25, 20:30] = -10.0
    occ = occlusion(f_ab, f_ba)
    mask = discrepancy(f_ab, f_ab.clone(), occ)  # generated motion agrees everywhere...
    assert mask[0, 0, 15:25, 20:30].min() == 1.0  # ...but the hidden background is still discrepant
    assert mask[0, 0, 15:25, 10:20].max() == 0.0


def test_local_and_global_masks_on_translations():
    """Content moves 1 px right per frame (flow t -> t-1 = (-1, 0)); the edit stalls at frame 2.
    Locally only frame 2 disagrees; globally the lost pixel of motion stays for every later frame."""
    num, h, w = 5, 16, 24
    src_bwd, src_fwd = _const(num, h, w, -1.0, 0.0), _const(num, h, w, 1.0, 0.0)
    gen_bwd = src_bwd.clone()
    gen_bwd[2] = 0.0
    masks = frame_masks(src_bwd, src_fwd, gen_bwd, tolerance=1.0)
    inner = (slice(None), 0, slice(2, -2), slice(6, -6))  # away from the borders that leave the frame
    assert masks.local[0].abs().max() == 0 and masks.global_[0].abs().max() == 0  # the anchor
    torch.testing.assert_close(masks.local[inner].mean((1, 2)), torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0]))
    torch.testing.assert_close(masks.global_[inner].mean((1, 2)), torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0]))
    torch.testing.assert_close(masks.combined, (masks.local + masks.global_) / 2)
    assert masks.occluded[1:, 0, :, 0].all()  # the left column came from outside the frame
    # with a larger tolerance the 1 px global drift is half-discrepant
    half = frame_masks(src_bwd, src_fwd, gen_bwd, tolerance=2.0, local_weight=0.0)
    torch.testing.assert_close(half.combined[inner].mean((1, 2)), torch.tensor([0.0, 0.0, 0.5, 0.5, 0.5]))


def test_global_mask_carries_occlusion_forward():
    num, h, w = 3, 12, 12
    src_bwd, src_fwd = torch.zeros(num, 2, h, w), torch.zeros(num, 2, h, w)
    src_bwd[1, 0, 4:8, 4:8] = 3.0  # an inconsistent patch in frame 1 (no matching forward flow)
    masks = frame_masks(src_bwd, src_fwd, src_bwd.clone())
    assert masks.local[1, 0, 4:8, 4:8].min() == 1 and masks.local[2].max() == 0
    assert masks.global_[2, 0, 4:8, 4:8].min() == 1  # frame 2 looks through frame 1's occluded patch


def test_streaming_tracker_equals_the_whole_clip_masks():
    g = torch.Generator().manual_seed(0)
    num, h, w = 5, 12, 16

    def smooth(scale):
        small = torch.randn(num, 2, 3, 4, generator=g) * scale
        return torch.nn.functional.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)

    src_bwd, gen_bwd = smooth(1.5), smooth(1.5)
    src_fwd = -src_bwd + 0.05 * smooth(1.0)
    ref = frame_masks(src_bwd, src_fwd, gen_bwd, tolerance=1.5, local_weight=1.0, global_weight=3.0)
    tracker = MaskTracker(tolerance=1.5, local_weight=1.0, global_weight=3.0)
    for t in range(num):
        step = tracker.masks(src_bwd[t : t + 1], src_fwd[t : t + 1], gen_bwd[t : t + 1])
        torch.testing.assert_close(step.local, ref.local[t : t + 1])
        torch.testing.assert_close(step.global_, ref.global_[t : t + 1])
        torch.testing.assert_close(step.combined, ref.combined[t : t + 1])
        torch.testing.assert_close(step.admission, ref.admission[t : t + 1])
        tracker.commit()
    assert 0 < float(ref.combined[1:].mean()) < 1
    assert 0 < float(ref.admission[1:].mean()) < 1


def test_tracker_commits_the_flows_of_its_last_masks_call():
    """Intermediate masks() calls (earlier generated flows) do not leak into the reference: commit() keeps
    the last one's."""
    src_bwd, src_fwd = _const(3, 8, 8, -1.0, 0.0), _const(3, 8, 8, 1.0, 0.0)
    gen_bwd = src_bwd.clone()
    tracker = MaskTracker()
    tracker.masks(src_bwd[:1], src_fwd[:1], gen_bwd[:1])
    tracker.commit()  # the anchor
    tracker.masks(src_bwd[1:2], src_fwd[1:2], torch.zeros_like(gen_bwd[1:2]))  # a stale estimate
    tracker.masks(src_bwd[1:2], src_fwd[1:2], gen_bwd[1:2])  # the final one
    tracker.commit()
    step = tracker.masks(src_bwd[2:], src_fwd[2:], gen_bwd[2:])
    torch.testing.assert_close(step.global_, frame_masks(src_bwd, src_fwd, gen_bwd).global_[2:])
    tracker.commit()
    with pytest.raises(RuntimeError, match="call masks"):
        tracker.commit()  # frame 3 never got masks()


def test_scalar_summaries_are_per_pixel_means_not_global_norms():
    for size in ((8, 8), (64, 96)):
        flow = _const(1, *size, 3.0, 4.0)
        assert float(motion_magnitude(flow)[0]) == pytest.approx(5.0)  # independent of the image size
        mask = torch.zeros(1, 1, *size)
        mask[..., : size[0] // 2, :] = 1
        assert float(mean_discrepancy(mask)[0]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="mask weights"):
        combine_masks(mask, mask, 0.0, 0.0)


def test_masks_to_video():
    masks = torch.tensor([0.0, 0.5, 1.0]).view(3, 1, 1, 1).expand(3, 1, 2, 2)
    video = masks_to_video(masks, (4, 6))
    assert video.shape == (3, 4, 6, 3) and video.dtype == np.uint8
    assert video[:, 0, 0, 0].tolist() == [0, 128, 255]


def test_estimate_flow_upsamples_tiny_frames_and_rescales():
    g = torch.Generator().manual_seed(0)
    small = torch.rand(1, 3, 4, 4, generator=g) * 2 - 1
    a = torch.nn.functional.interpolate(small, size=(16, 16), mode="bicubic", align_corners=False).clamp(
        -1, 1
    )
    b = torch.roll(a, shifts=1, dims=-1)  # content moves +1 px in x
    flow = estimate_flow(DISFlow(), a, b)  # DIS alone refuses 12 px and is poor at 16 px
    assert flow.shape == (1, 2, 16, 16)
    torch.testing.assert_close(
        flow[0, :, 4:-4, 4:-4].mean((1, 2)), torch.tensor([1.0, 0.0]), atol=0.2, rtol=0
    )
    assert estimate_flow(DISFlow(), a, b, size=(8, 8)).shape == (1, 2, 8, 8)


def test_discrepancy_of_real_source_flows_against_themselves_and_a_frozen_edit(shared_data):
    video = read_video(shared_data / "clips" / "woman-running.mp4", FrameSampling(0, 3, 2))
    bwd = video_flows(video.frames, DISFlow(), direction="backward")
    fwd = video_flows(video.frames, DISFlow(), direction="forward")
    pad = torch.zeros(1, *bwd.shape[1:])
    src_bwd, src_fwd = torch.cat([pad, bwd]), torch.cat([pad, fwd])
    same = frame_masks(src_bwd, src_fwd, src_bwd.clone(), tolerance=2.0)
    frozen = frame_masks(src_bwd, src_fwd, torch.zeros_like(src_bwd), tolerance=2.0)  # a static edit
    occluded = same.occluded[1:].float().mean()
    assert float(same.local[1:].mean()) == pytest.approx(float(occluded), abs=1e-6)  # only occlusions
    assert float(same.global_[1:].mean()) >= float(occluded)  # plus occlusions carried from frame 1
    moving = motion_magnitude(bwd) > 2.0
    assert moving.any()
    assert (mean_discrepancy(frozen.local[1:])[moving] > mean_discrepancy(same.local[1:])[moving] + 0.1).all()


# ------------------------------------------------------------------------------------------- admission


def test_clamp_near_border_moves_only_sub_margin_outward_targets():
    flow = torch.zeros(1, 2, 4, 5)
    flow[0, 0, :, 0] = -0.3  # column 0 points 0.3 px left of the frame: pulled onto the edge
    flow[0, 0, :, 4] = 0.7  # column 4 points 0.7 px right: really leaves it
    flow[0, 1, 0, 2] = -0.2  # one top pixel 0.2 px above
    flow[0, 0, 1:3, 1:4] = -0.9  # inner pixels stay inside: untouched
    out = clamp_near_border(flow, margin=0.5)
    assert (out[0, 0, :, 0] == 0).all() and out[0, 1, 0, 2] == 0
    torch.testing.assert_close(out[0, 0, :, 4], flow[0, 0, :, 4])
    torch.testing.assert_close(out[0, 0, 1:3, 1:4], flow[0, 0, 1:3, 1:4])
    gone = out_of_frame(out)[0, 0]
    assert gone[:, 4].all() and not gone[:, :4].any()
    assert out_of_frame(flow)[0, 0, :, 0].all()  # the strict check flags the ring


def test_valid_mean_ignores_invalid_pixels_and_is_one_without_any():
    values = torch.tensor([0.2, 0.4, 1.0, 1.0]).view(1, 1, 2, 2).repeat(2, 1, 1, 1)
    valid = torch.tensor([True, True, False, False]).view(1, 1, 2, 2).repeat(2, 1, 1, 1)
    valid[1] = False
    torch.testing.assert_close(valid_mean(values, valid), torch.tensor([0.3, 1.0]))


def test_admission_score_leaves_out_occlusion_but_keeps_the_sub_pixel_border_ring():
    """Pan of 0.3 px/frame (columns 0 leave the frame by less than the 0.5 px margin) with a patch the
    forward-backward check rejects; the edit disagrees only on the ring and inside the patch."""
    num, h, w = 3, 16, 16
    src_bwd, src_fwd = _const(num, h, w, -0.3, 0.0), _const(num, h, w, 0.3, 0.0)
    src_bwd[:, 0, 6:10, 6:10] = 3.0  # inconsistent with src_fwd: occluded
    gen_bwd = src_bwd.clone()
    gen_bwd[:, 0, :, 0] += 1.0  # ring: disagreement 1 px -> raw discrepancy 1
    gen_bwd[:, 1, 6:10, 6:10] = 5.0  # occluded patch: disagreement, not counted in the score
    masks = frame_masks(src_bwd, src_fwd, gen_bwd, local_weight=1.0, global_weight=0.0)
    assert masks.local[1, 0, :, 0].min() == 1 and masks.local[1, 0, 6:10, 6:10].min() == 1  # both in the mask
    assert masks.occluded[1, 0, :, 0].all()  # strict out-of-frame, for the attention mask
    # score: the ring's 16 pixels count (value 1), the 16 occluded ones do not: 16 / (256 - 16)
    torch.testing.assert_close(masks.admission[1], torch.tensor(16 / 240))
    assert float(mean_discrepancy(masks.combined)[1]) == pytest.approx(32 / 256)
    # once the pan really leaves the frame (1 px), the ring is occluded and left out too
    far_bwd = _const(2, h, w, -1.0, 0.0)
    far_gen = far_bwd.clone()
    far_gen[:, 0, :, 0] += 1.0
    far = frame_masks(far_bwd, _const(2, h, w, 1.0, 0.0), far_gen)
    assert far.admission[1] == 0 and far.local[1, 0, :, 0].min() == 1


def test_a_perfect_edit_of_a_panning_clip_admits_keyframes_with_the_default_thresholds():
    """TwoFiguresClip, 16 frames at 256², DIS source flows at the latent grid (32²), generated = source.
    The mask mean (occlusion counted as 1, strict border, OR-accumulated global occlusion) stays around
    0.1-0.2 and used to block every admission; the admission score is 0 and the bank grows."""
    from videoedit.attention.dualflow import MemoryBank, lockstep_banks
    from videoedit.data.synthetic import TwoFiguresClip
    from videoedit.pipelines.pipeline_dualflow import LatentSourceFlows

    source = TwoFiguresClip(num_frames=16, height=256, width=256).load()
    flows = LatentSourceFlows.compute(source.frames, DISFlow(), (32, 32))
    masks = frame_masks(flows.backward, flows.forward, flows.backward.clone())
    assert float(mean_discrepancy(masks.combined)[1:].mean()) > 0.1  # the occlusion floor of the mask
    torch.testing.assert_close(masks.admission, torch.zeros(16))
    bank = MemoryBank()  # the defaults of configs/method/dualflow.yaml
    lockstep_banks(bank, flows.backward, masks.admission.tolist())
    assert len(bank.frames) > 1 and bank.frames[0] == 0
    old = MemoryBank()
    lockstep_banks(old, flows.backward, mean_discrepancy(masks.combined).tolist())
    assert old.frames == [0]  # scoring on the mask mean: nothing admitted
