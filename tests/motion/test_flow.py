import numpy as np
import pytest
import torch

from videoedit.io.video import FrameSampling, read_video
from videoedit.motion import (
    DISFlow,
    FlowCache,
    RAFTFlow,
    accumulate,
    accumulate_backward,
    build_flow_estimator,
    compose,
    flow_to_tokens,
    occlusion,
    out_of_frame,
    photometric_error,
    resize_flow,
    video_flows,
    warp,
)


def _texture(h=64, w=80, seed=0):
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(1, 3, h // 4, w // 4, generator=g)
    return torch.nn.functional.interpolate(small, size=(h, w), mode="bicubic", align_corners=False)


def _shift(img, dx, dy):
    """Content moves by (+dx, +dy): out(x, y) = img(x - dx, y - dy)."""
    return torch.roll(img, shifts=(dy, dx), dims=(-2, -1))


def test_warp_undoes_a_known_shift():
    a = _texture()
    b = _shift(a, 3, 2)  # pixel p of a is at p + (3, 2) in b
    flow_a_to_b = torch.zeros(1, 2, 64, 80)
    flow_a_to_b[:, 0], flow_a_to_b[:, 1] = 3.0, 2.0
    back = warp(b, flow_a_to_b)  # b aligned with a
    torch.testing.assert_close(back[..., 4:-4, 4:-4], a[..., 4:-4, 4:-4], atol=1e-5, rtol=0)
    assert out_of_frame(flow_a_to_b)[0, 0, :, -1].all() and not out_of_frame(flow_a_to_b)[0, 0, 10, 10]


def test_warp_works_on_feature_maps_and_identity():
    feats = torch.randn(2, 7, 9, 11)
    torch.testing.assert_close(warp(feats, torch.zeros(2, 2, 9, 11)), feats)


def _affine_flow(h, w, matrix):
    """Flow of the affine motion p -> A p + t (A = matrix[:, :2], t = matrix[:, 2])."""
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    p = torch.stack([xs, ys])
    a, t = matrix[:, :2], matrix[:, 2]
    q = torch.einsum("ij,jhw->ihw", a, p) + t.view(2, 1, 1)
    return (q - p)[None]


def test_composition_equals_the_direct_flow_on_affine_motion():
    m1 = torch.tensor([[1.02, 0.01, 1.5], [-0.01, 0.99, -0.8]], dtype=torch.float64)
    m2 = torch.tensor([[0.98, -0.02, -0.7], [0.015, 1.01, 1.2]], dtype=torch.float64)
    h, w = 48, 64
    f_ab, f_bc = _affine_flow(h, w, m1), _affine_flow(h, w, m2)
    # a -> c: apply m1 then m2
    m21 = torch.cat([m2[:, :2] @ m1[:, :2], (m2[:, :2] @ m1[:, 2:] + m2[:, 2:])], dim=1)
    direct = _affine_flow(h, w, m21)
    composed = compose(f_ab, f_bc)
    inside = ~out_of_frame(f_ab)[0, 0]
    assert (composed - direct)[0][:, inside].abs().max() < 1e-6  # bilinear sampling is exact on affine fields
    chained = accumulate(torch.cat([f_ab, f_bc]))
    torch.testing.assert_close(chained[1], composed[0])


def test_backward_accumulation_of_translations():
    f_10 = torch.zeros(1, 2, 16, 16)
    f_10[:, 0] = -2.0  # frame 1 -> 0: content was 2 px to the left
    f_21 = torch.zeros(1, 2, 16, 16)
    f_21[:, 1] = -3.0  # frame 2 -> 1: content was 3 px up
    to_first = accumulate_backward(torch.cat([f_10, f_21]))
    torch.testing.assert_close(to_first[1, :, 8, 8], torch.tensor([-2.0, -3.0]))  # 2 -> 0
    forward = accumulate(torch.cat([-f_10, -f_21]))
    torch.testing.assert_close(forward[1, :, 8, 8], torch.tensor([2.0, 3.0]))  # 0 -> 2


def test_occlusion_flags_a_region_that_disappears():
    h, w = 40, 40
    # frame a: a square at x in [10, 20); in b it moved 10 px right and covers what was at [20, 30)
    f_ab = torch.zeros(1, 2, h, w)
    f_ab[:, 0, 15:25, 10:20] = 10.0
    f_ba = torch.zeros(1, 2, h, w)
    f_ba[:, 0, 15:25, 20:30] = -10.0  # the square's pixels in b come from 10 px left
    occ = occlusion(f_ab, f_ba)[0, 0]
    assert not occ[15:25, 10:20].any()  # the moving square is visible in both
    assert occ[15:25, 20:30].all()  # background behind the square's new position is hidden in b
    assert not occ[:10].any()


def test_resize_flow_scales_values():
    flow = torch.zeros(1, 2, 64, 96)
    flow[:, 0], flow[:, 1] = 8.0, -4.0
    small = resize_flow(flow, (16, 24))
    assert small.shape == (1, 2, 16, 24)
    torch.testing.assert_close(small[:, 0], torch.full((1, 16, 24), 2.0))
    torch.testing.assert_close(small[:, 1], torch.full((1, 16, 24), -1.0))
    tokens = flow_to_tokens(flow, (16, 24))
    assert tokens.shape == (1, 16 * 24, 2) and torch.allclose(tokens[0, 25], torch.tensor([2.0, -1.0]))


def test_dis_recovers_a_shift_in_the_documented_direction():
    a = (_texture(128, 128)[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    b = np.roll(a, shift=(3, 5), axis=(0, 1))  # content moves +5 in x, +3 in y
    flow = DISFlow()(a[None], b[None])
    assert flow.shape == (1, 2, 128, 128)
    mean = flow[0, :, 20:-20, 20:-20].mean((1, 2))
    torch.testing.assert_close(mean, torch.tensor([5.0, 3.0]), atol=0.15, rtol=0)


@pytest.mark.parametrize("clip", ["wolf.mp4", "car-turn.mp4", "woman-running.mp4"])
def test_dis_flow_beats_zero_flow_on_real_frames(shared_data, clip):
    video = read_video(shared_data / "clips" / clip, FrameSampling(0, 6, 2))
    frames = torch.from_numpy(video.frames).permute(0, 3, 1, 2).float()
    flows = video_flows(video.frames, DISFlow(), direction="forward")  # f_t->t+1
    with_flow = photometric_error(frames[:-1], frames[1:], flows)
    without = photometric_error(frames[:-1], frames[1:], torch.zeros_like(flows))
    assert (with_flow < without).all(), (with_flow, without)


def test_build_estimator_falls_back_to_dis_without_raft_weights(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    assert isinstance(build_flow_estimator("auto"), DISFlow)
    with pytest.raises(FileNotFoundError, match="RAFT weights not found"):
        RAFTFlow()


def test_raft_with_a_local_state_dict_runs(tmp_path):
    from torchvision.models.optical_flow import raft_large

    torch.manual_seed(0)
    torch.save(raft_large(weights=None).state_dict(), tmp_path / "raft.pth")
    est = build_flow_estimator("auto", raft_weights=str(tmp_path / "raft.pth"))
    assert isinstance(est, RAFTFlow)
    est.num_flow_updates = 2
    frames = np.random.default_rng(0).integers(0, 255, (2, 36, 44, 3), dtype=np.uint8)  # not multiples of 8
    assert est(frames[:1], frames[1:]).shape == (1, 2, 36, 44)


def test_flow_cache(tmp_path):
    frames = (np.random.default_rng(0).random((3, 32, 32, 3)) * 255).astype(np.uint8)
    cache = FlowCache(tmp_path)
    first = cache.flows(frames, DISFlow("fast"))
    assert len(list(tmp_path.glob("*.safetensors"))) == 1
    torch.testing.assert_close(cache.flows(frames, DISFlow("fast")), first)
    cache.flows(frames, DISFlow("fast"), direction="backward")
    assert len(list(tmp_path.glob("*.safetensors"))) == 2


@pytest.mark.parametrize("clip", ["man-skiing.mp4", "truck.mp4", "trucks-race.mp4"])
def test_backward_dis_flow_brings_the_previous_frame_closer(shared_data, clip):
    """The direction dual-flow attention warps with: the previous frame warped by the flow
    current -> previous matches the current frame better than the unwarped previous frame."""
    video = read_video(shared_data / "clips" / clip, FrameSampling(0, 3, 1))
    frames = torch.from_numpy(video.frames).permute(0, 3, 1, 2).float()
    flows = video_flows(video.frames, DISFlow(), direction="backward")  # f_t+1->t
    with_flow = photometric_error(frames[1:], frames[:-1], flows)
    without = photometric_error(frames[1:], frames[:-1], torch.zeros_like(flows))
    assert (with_flow < without).all(), (with_flow, without)


def test_flow_cache_rebuilds_entries_whose_bytes_changed(tmp_path, caplog):
    from tests.corruption import corrupt_safetensors

    class Counting(DISFlow):
        calls = 0

        def __call__(self, *args, **kwargs):
            type(self).calls += 1
            return super().__call__(*args, **kwargs)

    frames = (np.random.default_rng(0).random((3, 32, 32, 3)) * 255).astype(np.uint8)
    cache = FlowCache(tmp_path)
    first = cache.flows(frames, Counting("fast"))
    (path,) = tmp_path.glob("*.safetensors")
    corrupt_safetensors(path, "flows", offset=17)
    again = cache.flows(frames, Counting("fast"))
    assert Counting.calls == 2 and "checksum mismatch" in caplog.text  # discarded, recomputed, stored
    torch.testing.assert_close(again, first)
    torch.testing.assert_close(cache.flows(frames, Counting("fast")), first)
    assert Counting.calls == 2  # the rebuilt entry is a hit
    # an entry of another shape under this key (e.g. written for other frames) is not used either
    key = cache.key(frames, Counting("fast"), "forward")
    cache.save(key, torch.zeros(1, 2, 32, 32))
    torch.testing.assert_close(cache.flows(frames, Counting("fast")), first)
    assert Counting.calls == 3 and "shape (1, 2, 32, 32) != expected (2, 2, 32, 32)" in caplog.text
