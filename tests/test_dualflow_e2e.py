"""Dual-flow attention end to end with the tiny model: both modes from the configs, the cached source
flows, the switched-off pipeline equal to the DDIM baseline, bounded streaming memory, config errors."""

import json
import math

import numpy as np
import pytest
import torch
from safetensors import safe_open

from tests.conftest import FAST
from videoedit.edit import edit
from videoedit.errors import ConfigError
from videoedit.inversion.cache import InversionCache
from videoedit.io.transforms import tensor_to_frames
from videoedit.io.video import read_video
from videoedit.pipelines.pipeline_ddim import DDIMEditPipeline
from videoedit.pipelines.pipeline_dualflow import (
    DualFlowPipeline,
    DualFlowSettings,
    LatentSourceFlows,
    latent_preview,
)

SMALL = [*FAST, "data.height=64", "data.width=64", "data.num_frames=3", "method.num_inference_steps=2"]


@pytest.fixture()
def cache_root(monkeypatch, tmp_path):
    monkeypatch.setenv("VIDEOEDIT_CACHE_ROOT", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_both_modes_run_from_the_configs(compose, tmp_path, cache_root):
    runs = {}
    for mode in ("lockstep", "streaming"):
        cfg = compose(
            "+experiment=dualflow_two_figures", *SMALL, f"method.mode={mode}", "method.flow_backend=dis"
        )
        runs[mode] = edit(cfg, tmp_path / mode)
        root = tmp_path / mode
        for rel in (
            "sample/edit0_seed0.mp4",
            "sample/edit0_seed0_discrepancy.mp4",
            "metrics.json",
            "COMPLETE",
        ):
            assert (root / rel).is_file(), (mode, rel)
        # the masks over the source with a colour bar panel, the anchor marked (white border); their values
        picture = read_video(root / "sample" / "edit0_seed0_discrepancy.mp4").frames
        assert picture.shape[:3] == (3, 64, picture.shape[2]) and picture.shape[2] > 64
        assert (picture[0, 0, 8:56] > 230).all() and not (picture[1, 0, 8:56] > 230).all()
        values = np.load(root / "sample" / "edit0_seed0_discrepancy.npy")
        assert values.shape == (3, 8, 8) and values[0].max() == 0 and 0 <= values.min() <= values.max() <= 1
        metrics = json.loads((root / "metrics.json").read_text())
        info = metrics["edits"][0]["dualflow"]
        assert info["mode"] == mode and info["keyframes"][0] == 0
        assert len(info["mean_discrepancy"]) == 3 and info["mean_discrepancy"][0] == 0.0
        # every step but the last (flow_update_interval = 1); streaming: for each frame after the first
        assert info["mask_updates"] == (1 if mode == "lockstep" else 2 * 1)
        assert len(info["admission_discrepancy"]) == 3 and info["admission_discrepancy"][0] == 0.0
        assert metrics["method"]["mode"] == mode and metrics["method"]["flow"]["backend"] == "dis"
        # the warp error of every run (docs/dualflow.md: "reported per run")
        warp = metrics["quality"]["edits"]["edit0_seed0"]["warp_error"]
        assert isinstance(warp, float) and math.isfinite(warp) and warp >= 0
    # the source flows are computed with the inversion and cached with it: the second run reuses them
    assert runs["lockstep"].metrics["inversion"]["cache"] == "miss"
    assert runs["streaming"].metrics["inversion"]["cache"] == "hit"
    path = InversionCache(cache_root / "inversion").path(runs["streaming"].metrics["inversion"]["key"])
    with safe_open(str(path), framework="pt") as f:
        flows = f.get_tensor("extra.dualflow.flow_backward")
    assert flows.shape == (3, 2, 8, 8) and flows[0].abs().max() == 0 and flows[1:].abs().max() > 0
    # and the image-resolution flows went through the FlowCache (method.flow_cache_dir): one per direction
    assert len(list((cache_root / "flow").glob("*.safetensors"))) == 2
    assert info["kv_cache_peak_bytes"] > 0 and len(info["admissions"]) == 2
    assert not (runs["lockstep"].edits["edit0_seed0"] == runs["streaming"].edits["edit0_seed0"]).all()


def test_the_flow_backend_is_part_of_the_inversion_key():
    from videoedit.methods.dualflow import DualFlowMethod

    medium = DualFlowMethod(flow_backend="dis").inversion_signature()
    fast = DualFlowMethod(flow_backend="dis", dis_preset="fast").inversion_signature()
    assert medium != fast and medium["dualflow_source_flows"]["backend"] == "dis"
    # editing-only settings leave the inversion (and its cached flows) alone
    assert (
        DualFlowMethod(flow_backend="dis", mode="streaming", bias_scale=1.0).inversion_signature() == medium
    )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("method.mode=both", "method.mode must be 'lockstep' or 'streaming'"),
        ("method.generated_flow=raft", "method.generated_flow must be 'preview' or 'decode'"),
        ("method.step_range=[0.5,0.2]", "method.step_range must be"),
        ("method.resolutions=[3]", "downsample factors"),
        ("method.flow_backend=raft", "RAFT weights not found"),
        ("method.layers=[mid_block.nothing*]", "match no self-attention layer"),
        ("method.prev_reuse=nearest", "method.prev_reuse must be one of global, window, blend"),
        ("method.window_size=2", "method.window_size must be an odd number >= 1"),
        ("method.blend_weight=1.5", "method.blend_weight must be in"),
    ],
)
def test_bad_settings_fail_before_the_inversion(
    compose, tmp_path, cache_root, override, message, monkeypatch
):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))  # no cached RAFT weights
    with pytest.raises(ConfigError, match=message):
        edit(compose("+experiment=dualflow_two_figures", *SMALL, override), tmp_path / "run")
    assert not (cache_root / "inversion").exists() or not any(
        (cache_root / "inversion").rglob("*.safetensors")
    )


# ------------------------------------------------------------------------------------------- pipeline level


@pytest.fixture(scope="module")
def inverted(tiny_components):
    """4 frames of the two-figures clip at 64 px, inverted for 2 steps, with DIS source flows, and the
    DDIM baseline's edit of the first 3 (it edits frames independently)."""
    from videoedit.data.synthetic import TwoFiguresClip
    from videoedit.motion import DISFlow

    source = TwoFiguresClip(num_frames=4, height=64, width=64, pan=8.0).load()
    pipe = DualFlowPipeline.from_components(tiny_components)
    pipe.set_progress_bar_config(disable=True)
    control = source.conditions["openpose"]
    inversion = pipe.invert(source.frames, source.prompt, control, num_inference_steps=2)
    flows = LatentSourceFlows.compute(source.frames, DISFlow(), (8, 8))
    ddim = DDIMEditPipeline.from_components(tiny_components)
    ddim.set_progress_bar_config(disable=True)
    first3 = type(inversion)(
        latents={t: x[:3] for t, x in inversion.latents.items()}, source_latents=inversion.source_latents[:3]
    )
    ref = ddim(PROMPT, first3, control=control[:3], num_inference_steps=2, guidance_scale=3.0).latents
    return pipe, inversion, flows, control, ref


PROMPT = "two robots jogging"


def _edit(pipe, inversion, flows, control, frames=None, **settings):
    from videoedit.motion import DISFlow

    if frames is not None:
        inversion = type(inversion)(
            latents={t: x[:frames] for t, x in inversion.latents.items()},
            source_latents=inversion.source_latents[:frames],
        )
        flows = LatentSourceFlows(flows.backward[:frames], flows.forward[:frames])
        control = control[:frames]
    return pipe(
        PROMPT,
        inversion,
        flows,
        DualFlowSettings(**settings),
        DISFlow("fast"),
        control=control,
        num_inference_steps=2,
        guidance_scale=3.0,
    )


@pytest.mark.parametrize("prev_reuse", ["window", "blend", "global"])
def test_switched_off_it_is_the_ddim_baseline_and_switched_on_it_is_not(inverted, prev_reuse):
    pipe, inversion, flows, control, ref = inverted
    for mode in ("lockstep", "streaming"):
        off = _edit(pipe, inversion, flows, control, frames=3, mode=mode, step_range=(0.0, 0.0),
                    prev_reuse=prev_reuse)  # fmt: skip
        torch.testing.assert_close(off.latents, ref, atol=1e-4, rtol=1e-4)
    on = _edit(
        pipe, inversion, flows, control, frames=3, mode="lockstep", bias_scale=5.0, prev_reuse=prev_reuse
    )
    assert (on.latents - ref).abs().max() > 1e-3
    # frame 0 has no previous frame and no bank: it attends to itself only
    torch.testing.assert_close(on.latents[0], ref[0], atol=1e-4, rtol=1e-4)
    # every processor was restored
    assert {type(p).__name__ for p in pipe.unet.attn_processors.values()} == {"AttnProcessor2_0"}


def test_streaming_memory_does_not_grow_with_the_clip(inverted):
    pipe, inversion, flows, control, ref = inverted
    # admit every frame into a one-slot bank: the bank is full from frame 2 on
    settings = dict(mode="streaming", bank_size=1, motion_threshold=0.0, quality_threshold=1.01)
    short = _edit(pipe, inversion, flows, control, frames=3, **settings)
    long = _edit(pipe, inversion, flows, control, **settings)
    assert short.keyframes == [0, 2] and long.keyframes == [0, 3]
    assert long.info["kv_cache_peak_bytes"] == short.info["kv_cache_peak_bytes"] > 0
    assert [a["evicted"] for a in long.info["admissions"]] == [None, 1, 2]
    assert long.frames.shape == (4, 3, 64, 64) and long.masks.shape == (4, 1, 8, 8)
    # the cached K/V do reach the next frames; frame 0 is edited on its own
    assert (short.latents - ref).abs().max() > 1e-3
    torch.testing.assert_close(short.latents[0], ref[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(long.latents[:3], short.latents)  # causal: later frames change nothing before


def test_generated_flow_updates_follow_the_interval_and_the_step_range():
    every_other = DualFlowSettings(flow_update_interval=2, step_range=(0.0, 0.5))
    assert [i for i in range(10) if every_other.update_due(i, 10)] == [1, 3]  # before steps 2 and 4
    assert [i for i in range(4) if DualFlowSettings().update_due(i, 4)] == [0, 1, 2]  # never after the last
    assert not any(DualFlowSettings(step_range=(0.0, 0.0)).update_due(i, 4) for i in range(4))
    # counted from the first active step (3 of 8): the flow is measured before steps 3, 5 and 7
    late = DualFlowSettings(flow_update_interval=2, step_range=(0.375, 1.0))
    assert [i for i in range(8) if late.update_due(i, 8)] == [2, 4, 6]
    # 0.3 of 10 steps is step 3 (0.3 * 10 = 3.0000000000000004 in floats)
    assert [i for i in range(10) if DualFlowSettings(step_range=(0.3, 0.6)).update_due(i, 10)] == [2, 3, 4]


# ------------------------------------------------------------------------------------------- flow directions


class SpyFlow:
    """DIS that records the uint8 frames ``(N, H, W, 3)`` it is asked about (``a``: from, ``b``: to)."""

    def __init__(self) -> None:
        from videoedit.motion import DISFlow

        self.dis, self.calls = DISFlow("medium"), []

    def __call__(self, a, b):
        from videoedit.motion import to_uint8_frames

        self.calls.append((to_uint8_frames(a).copy(), to_uint8_frames(b).copy()))
        return self.dis(a, b)

    def settings(self):
        return self.dis.settings()


def _smooth(*shape, seed=0, size=(16, 16)):
    small = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.interpolate(small, size=size, mode="bicubic", align_corners=False)


def test_generated_flows_of_rolled_latents_point_to_the_previous_frame(inverted):
    """Content moves one latent pixel right per frame: the flow t -> t-1 is (-1, 0)."""
    pipe = inverted[0]
    base = _smooth(1, 4, 4, 4, seed=1) * 0.7
    x0 = torch.cat([torch.roll(base, t, dims=-1) for t in range(3)])
    flows = pipe.generated_flows(x0, None, DualFlowSettings(), SpyFlow())
    assert flows.shape == (3, 2, 16, 16) and flows[0].abs().max() == 0
    torch.testing.assert_close(
        flows[1:, :, 3:-3, 3:-3].mean((0, 2, 3)), torch.tensor([-1.0, 0.0]), atol=0.15, rtol=0
    )
    # streaming: frame 0 of the batch follows the finished previous frame
    flows = pipe.generated_flows(x0[2:], x0[1:2], DualFlowSettings(), SpyFlow())
    assert flows.shape == (1, 2, 16, 16)
    torch.testing.assert_close(
        flows[0, :, 3:-3, 3:-3].mean((1, 2)), torch.tensor([-1.0, 0.0]), atol=0.15, rtol=0
    )


def test_source_flows_of_rolled_frames_have_the_documented_directions(tmp_path):
    """Frames move 8 image px (1 latent px) right per frame: backward (t -> t-1) = (-1, 0), forward
    (t-1 -> t) = (+1, 0), index 0 zero; a FlowCache serves the second computation."""
    from videoedit.motion import FlowCache

    base = _smooth(1, 3, 8, 8, seed=2, size=(128, 128)).clamp(-1, 1)
    frames = torch.cat([torch.roll(base, 8 * t, dims=-1) for t in range(3)])
    spy, cache = SpyFlow(), FlowCache(tmp_path / "flow")
    flows = LatentSourceFlows.compute(frames, spy, (16, 16), cache)
    assert flows.backward.shape == flows.forward.shape == (3, 2, 16, 16)
    assert flows.backward[0].abs().max() == 0 and flows.forward[0].abs().max() == 0
    inner = (slice(1, None), slice(None), slice(3, -3), slice(3, -3))
    torch.testing.assert_close(
        flows.backward[inner].mean((0, 2, 3)), torch.tensor([-1.0, 0.0]), atol=0.1, rtol=0
    )
    torch.testing.assert_close(
        flows.forward[inner].mean((0, 2, 3)), torch.tensor([1.0, 0.0]), atol=0.1, rtol=0
    )
    assert len(spy.calls) == 2
    again = LatentSourceFlows.compute(frames, spy, (16, 16), cache)
    assert len(spy.calls) == 2  # read from the cache
    torch.testing.assert_close(again.backward, flows.backward)


def test_the_generated_flow_is_measured_on_the_edit_not_the_source(inverted):
    """The masks of the output are not those of a generated flow equal to the source flow (the change
    log's defect 1), and the last flow was measured from the output's frames t to t-1 (defect 4)."""
    from videoedit.motion import to_uint8_frames
    from videoedit.motion.discrepancy import frame_masks

    pipe, inversion, flows, control, _ = inverted
    as_source = frame_masks(flows.backward, flows.forward, flows.backward).combined
    for mode in ("lockstep", "streaming"):
        spy = SpyFlow()
        out = pipe(PROMPT, inversion, flows, DualFlowSettings(mode=mode), spy, control=control,
                   num_inference_steps=2, guidance_scale=3.0)  # fmt: skip
        assert (out.masks - as_source).abs().max() > 0.05, mode
        images = torch.nn.functional.interpolate(latent_preview(out.latents), size=(32, 32), mode="bilinear")
        a, b = spy.calls[-1]
        np.testing.assert_array_equal(a, to_uint8_frames(images[1:] if mode == "lockstep" else images[-1:]))
        np.testing.assert_array_equal(
            b, to_uint8_frames(images[:-1] if mode == "lockstep" else images[-2:-1])
        )
        assert all(x.shape[1:3] == (32, 32) for call in spy.calls for x in call)  # previews, not the source


# ------------------------------------------------------------------------------------------- decode, interval, outputs


@pytest.fixture(scope="module")
def inverted4(inverted):
    """The first 3 frames inverted for 4 steps (for flow_update_interval = 2)."""
    pipe, _, flows, control, _ = inverted
    from videoedit.data.synthetic import TwoFiguresClip

    source = TwoFiguresClip(num_frames=3, height=64, width=64, pan=8.0).load()
    inversion = pipe.invert(source.frames, source.prompt, control[:3], num_inference_steps=4)
    return pipe, inversion, LatentSourceFlows(flows.backward[:3], flows.forward[:3]), control[:3]


def test_decode_flow_with_an_update_interval_and_streaming_outputs(inverted4):
    pipe, inversion, flows, control = inverted4
    kwargs = dict(control=control, num_inference_steps=4, guidance_scale=3.0)
    settings = dict(generated_flow="decode", flow_update_interval=2)
    spy = SpyFlow()
    lock = pipe(PROMPT, inversion, flows, DualFlowSettings(**settings), spy, **kwargs)
    # 4 steps, every 2nd counted from step 0: measured before step 2 only, then once on the output
    assert lock.info["mask_updates"] == 1 and len(spy.calls) == 2
    assert all(x.shape[1:3] == (64, 64) for call in spy.calls for x in call)  # VAE-decoded frames
    runs = {}
    for output_type in ("pt", "np", "latent"):
        spy = SpyFlow()
        runs[output_type] = pipe(PROMPT, inversion, flows, DualFlowSettings(mode="streaming", **settings), spy,
                                 output_type=output_type, **kwargs)  # fmt: skip
        assert runs[output_type].info["mask_updates"] == 2  # once for frames 1 and 2
        assert len(spy.calls) == 4 and all(x.shape[1:3] == (64, 64) for c in spy.calls for x in c)
    pt, np_, latent = runs["pt"], runs["np"], runs["latent"]
    assert np_.frames.dtype == np.uint8 and np_.frames.shape == (3, 64, 64, 3)
    assert pt.frames.dtype == torch.float32 and pt.frames.shape == (3, 3, 64, 64)
    np.testing.assert_array_equal(tensor_to_frames(pt.frames), np_.frames)
    assert latent.frames is None
    torch.testing.assert_close(latent.latents, np_.latents)
    torch.testing.assert_close(pt.masks, latent.masks)
