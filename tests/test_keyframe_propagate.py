"""Keyframe edit, then propagate: keyframe choice, flow propagation on synthetic motion, refinement, runs."""

import json

import cv2
import numpy as np
import pytest
import torch

from tests.conftest import FAST
from videoedit.data.synthetic import TwoFiguresClip
from videoedit.edit import edit
from videoedit.errors import ConfigError
from videoedit.methods.base import EditRequest
from videoedit.methods.ddim import DDIMMethod
from videoedit.methods.keyframe_propagate import KeyframePropagateMethod, subset_source
from videoedit.motion import DISFlow, video_flows
from videoedit.pipelines.pipeline_ddim import DDIMEditPipeline
from videoedit.pipelines.pipeline_keyframe import (
    RefineSettings,
    copy_nearest_keyframe,
    propagate_keyframes,
    refine_frames,
    select_keyframes,
)

# ------------------------------------------------------------------------------------ synthetic motion


def _texture(height: int, width: int, seed: int) -> np.ndarray:
    """A smooth multi-scale random texture ``(H, W, 3)`` uint8 (flow can track it)."""
    rng = np.random.default_rng(seed)
    img = np.zeros((height, width, 3), np.float32)
    for cells in (4, 8, 16, 32):
        small = rng.random((cells, cells * width // height, 3)).astype(np.float32)
        img += cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC) / cells**0.5
    img = (img - img.min()) / (img.max() - img.min())
    return (img * 255).astype(np.uint8)


def _translating_clip(num_frames: int = 9, size: int = 96, v: tuple[int, int] = (2, 1)) -> np.ndarray:
    """A texture sliding by ``v`` px per frame (the camera pans): ``(F, H, W, 3)`` uint8."""
    canvas = _texture(size + v[1] * num_frames + 2, size + v[0] * num_frames + 2, seed=0)
    return np.stack(
        [canvas[v[1] * t : v[1] * t + size, v[0] * t : v[0] * t + size] for t in range(num_frames)]
    )


def _moving_square_clip(num_frames: int = 9, size: int = 96, speed: int = 3) -> np.ndarray:
    """A textured square moving right over a static textured background (occlusions at its edges)."""
    background, square = _texture(size, size, seed=0), _texture(24, 24, seed=1)[..., ::-1]
    frames = []
    for t in range(num_frames):
        frame = background.copy()
        frame[36:60, 10 + speed * t : 34 + speed * t] = square
        frames.append(frame)
    return np.stack(frames)


def _to_tensor(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1


def _recolour(x: torch.Tensor) -> torch.Tensor:
    """A stand-in for an edit: a fixed colour transform of frames in [-1, 1]."""
    return torch.stack([-x[:, 1], x[:, 2], x[:, 0]], dim=1)


def _propagation_mae(clip: np.ndarray, **kwargs) -> tuple[float, float]:
    """MAE (0..255) of propagating recoloured keyframes 0, 4, 8 vs the recoloured true in-between
    frames, and the same for copying the nearest keyframe."""
    source = _to_tensor(clip)
    estimator = DISFlow("medium")
    forward, backward = video_flows(clip, estimator, "forward"), video_flows(clip, estimator, "backward")
    keys = select_keyframes(len(clip), 3)
    target = _recolour(source)
    between = [t for t in range(len(clip)) if t not in keys]
    out = propagate_keyframes(target[keys], keys, forward, backward, source=source, **kwargs)
    torch.testing.assert_close(out.frames[keys], target[keys])
    assert out.reliability.shape == (len(clip), 1, *clip.shape[1:3])
    copy = copy_nearest_keyframe(target[keys], keys, len(clip))
    mae = float((out.frames[between] - target[between]).abs().mean()) * 127.5
    copy_mae = float((copy[between] - target[between]).abs().mean()) * 127.5
    return mae, copy_mae


def test_propagation_reproduces_a_translating_texture():
    # measured: 0.12 with occlusion-aware weights, 0.57 with temporal weights only, 13.1 copying
    mae, copy_mae = _propagation_mae(_translating_clip(), occlusion_check=True, photometric_sigma=10.0)
    assert mae < 0.5
    assert copy_mae > 10
    temporal_only, _ = _propagation_mae(_translating_clip(), occlusion_check=False)
    assert mae < temporal_only  # pixels leaving the frame on one side come from the other keyframe


def test_propagation_reproduces_a_moving_object_over_a_background():
    # measured: 0.95 (occlusion + photometric weights), 1.25 (occlusion only), 2.96 copying
    mae, copy_mae = _propagation_mae(_moving_square_clip(), occlusion_check=True, photometric_sigma=10.0)
    assert mae < 1.5
    assert mae < copy_mae / 2


def test_blend_weights_follow_the_formula():
    """With zero flow, no occlusion test and no photometric term, the blend is the linear cross-fade."""
    keys = torch.stack([torch.zeros(3, 8, 8), torch.ones(3, 8, 8)])
    flows = torch.zeros(4, 2, 8, 8)
    out = propagate_keyframes(keys, [0, 4], flows, flows, occlusion_check=False)
    for t in range(5):
        torch.testing.assert_close(out.frames[t], torch.full((3, 8, 8), t / 4))
    # before the first / after the last keyframe: the single nearest keyframe
    out = propagate_keyframes(keys, [1, 3], flows, flows, occlusion_check=False)
    assert torch.equal(out.frames[0], keys[0]) and torch.equal(out.frames[4], keys[1])
    with pytest.raises(ValueError, match="ascending, distinct"):
        propagate_keyframes(keys, [3, 1], flows, flows)


# ------------------------------------------------------------------------------------ keyframes


def test_even_keyframes():
    assert select_keyframes(16, 4) == [0, 5, 10, 15]
    assert select_keyframes(5, 5) == [0, 1, 2, 3, 4]
    assert select_keyframes(9, 1) == [4]
    with pytest.raises(ConfigError, match=r"lower method\.num_keyframes or raise data\.num_frames"):
        select_keyframes(4, 5)
    with pytest.raises(ConfigError, match="keyframe_selection must be one of"):
        select_keyframes(8, 2, "random")


def test_motion_keyframes_crowd_where_the_motion_is():
    motion = torch.tensor([0.0] * 7 + [10.0] * 8)  # still for 7 steps, then fast
    assert select_keyframes(16, 3, "motion", motion) == [0, 11, 15]
    assert select_keyframes(16, 5, "motion", motion) == [0, 9, 11, 13, 15]
    assert select_keyframes(16, 3, "motion", torch.zeros(15)) == select_keyframes(16, 3)  # no motion
    assert select_keyframes(16, 1, "motion", motion) == [11]
    with pytest.raises(ValueError, match="needs the per-step motion"):
        select_keyframes(16, 3, "motion")
    assert select_keyframes(1, 1, "motion") == [0]  # one frame: no motion, no flow


def test_a_one_frame_clip_with_motion_keyframes(clip):
    one = subset_source(clip, [1])
    method = KeyframePropagateMethod(
        DDIMMethod(num_inference_steps=2),
        num_keyframes=1,
        keyframe_selection="motion",
        flow={"backend": "dis"},
    )
    assert method.keyframes(one) == [0]


# ------------------------------------------------------------------------------------ refinement


@pytest.fixture(scope="module")
def tiny_pipe(tiny_components):
    pipe = DDIMEditPipeline.from_components(tiny_components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def clip():
    return TwoFiguresClip(num_frames=5, height=64, width=64).load()


def test_refinement_keeps_shapes_keyframes_and_seeds(tiny_pipe, clip):
    frames, control = clip.frames, clip.conditions["openpose"]
    settings = RefineSettings(strength=0.5, num_inference_steps=4, frame_batch_size=2)

    def refine(seed, **changes):
        s = RefineSettings(**{**settings.__dict__, **changes})
        g = torch.Generator().manual_seed(seed)
        return refine_frames(tiny_pipe, frames, [1, 2, 3], "a robot", s, 7.5, g, control=control)

    first = refine(0)
    assert first.shape == frames.shape and first.dtype == torch.float32
    assert torch.equal(first[[0, 4]], frames[[0, 4]])  # keyframes untouched
    assert not torch.allclose(first[1:4], frames[1:4], atol=1e-3)
    torch.testing.assert_close(refine(0), first, rtol=0, atol=0)  # same seed, same result
    torch.testing.assert_close(refine(0, frame_batch_size=3), first, rtol=1e-4, atol=1e-4)  # batching-free
    assert not torch.allclose(refine(1), first, atol=1e-4)
    assert not torch.allclose(refine(0, noise="independent"), first, atol=1e-4)
    assert torch.equal(refine(0, strength=0.0), frames)
    with pytest.raises(ConfigError, match=r"refine\.noise must be"):
        RefineSettings(noise="fresh")


def test_refine_steps_follow_the_diffusers_img2img_convention():
    # diffusers img2img: int(num_inference_steps * strength) steps
    assert RefineSettings(strength=0.3, num_inference_steps=5).num_steps == 1  # int(1.5), not round
    assert RefineSettings(strength=0.2, num_inference_steps=20).num_steps == 4
    assert RefineSettings(strength=1.0, num_inference_steps=7).num_steps == 7


# ------------------------------------------------------------------------------------ the method


def test_method_checks_and_inverts_only_the_keyframes(tiny_pipe, clip):
    method = KeyframePropagateMethod(DDIMMethod(num_inference_steps=2), num_keyframes=2)
    with pytest.raises(ConfigError, match="num_keyframes=6 exceeds the clip's 5 frames"):
        KeyframePropagateMethod(DDIMMethod(), num_keyframes=6).check_inputs(clip, [])
    with pytest.raises(ConfigError, match="keyframe_method must be a method config"):
        KeyframePropagateMethod({"num_inference_steps": 2})
    assert method.keyframes(clip) == [0, 4]
    sub = subset_source(clip, [0, 4])
    assert torch.equal(sub.frames, clip.frames[[0, 4]]) and sub.conditions["openpose"].shape[0] == 2
    control = clip.conditions["openpose"]
    inversion = method.invert(tiny_pipe, clip, control, 1.0, None, "tiny")
    assert inversion.noisiest.shape[0] == 2
    request = EditRequest(0, "a robot", seed=0)
    result = method.edit(tiny_pipe, clip, inversion, request, control, 1.0, torch.Generator().manual_seed(0))
    assert result.frames.shape == clip.frames.shape
    assert result.info["keyframes"] == [0, 4]
    # the reliability over the source with a colour bar panel on the right; the keyframes marked (white border)
    picture = result.videos["sample/edit0_seed0_reliability.mp4"]
    assert picture.shape[:3] == (5, 64, picture.shape[2]) and picture.shape[2] > 64
    assert [bool((picture[t, 0, 8:56] == 255).all()) for t in range(5)] == [True, False, False, False, True]


def test_keyframe_two_figures_experiment_writes_the_result_tree(compose, tmp_path, monkeypatch):
    monkeypatch.setenv("VIDEOEDIT_CACHE_ROOT", str(tmp_path / "cache"))
    overrides = [o for o in FAST if not o.startswith(("data.height", "data.width", "method.num_inference"))]
    overrides += [
        "data.height=64",
        "data.width=64",
        "data.num_frames=7",
        "method.num_keyframes=3",
        "method.keyframe_method.num_inference_steps=2",
        "method.refine.num_inference_steps=2",
        "method.refine.strength=0.5",
        "method.flow.backend=dis",  # never RAFT, even where its weights are on disk
    ]
    first = edit(compose("+experiment=keyframe_two_figures", *overrides), tmp_path / "a")
    root = tmp_path / "a"
    for rel in (
        "source_video.mp4",
        "control/00006.png",
        "sample/edit0_seed0.mp4",
        "sample/edit0_seed0/00006.png",
        "sample/edit0_seed0_reliability.mp4",
        "sample/comparison.mp4",
        "metrics.json",
        "COMPLETE",
    ):
        assert (root / rel).is_file(), rel
    metrics = json.loads((root / "metrics.json").read_text())
    assert metrics["edits"][0]["keyframes"] == [0, 3, 6]
    assert metrics["method"]["keyframe_method"]["self_attention"]["name"] == "consistent"
    assert metrics["inversion"]["cache"] == "miss"
    assert first.edits["edit0_seed0"].shape == (7, 64, 64, 3)
    # the keyframes' inversion is cached: changing only the propagation reuses it
    second = edit(
        compose("+experiment=keyframe_two_figures", *overrides, "method.refine.strength=0"), tmp_path / "b"
    )
    assert second.metrics["inversion"]["cache"] == "hit"
    assert any((tmp_path / "cache" / "flow").glob("*.safetensors"))
