"""Video masks: prompt parsing and its errors, keyframe segmentation (GrabCut, random-weight SAM), flow
propagation (synthetic motion and real DAVIS frames against ground truth), disjoint/background regions,
the VideoGrain layout round trip, automatic layouts, the CLI and the ``data=video_sam`` source."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

import annotators.masks as masks_module
from annotators.cache import AnnotationCache
from annotators.layouts import labels_to_masks, sam_automatic_layout
from annotators.masks import (
    PromptedVideoClip,
    VideoMaskBuilder,
    add_background,
    main,
    make_disjoint,
    write_mask_layout,
)
from annotators.prompts import RegionPrompts
from annotators.propagation import FlowMaskPropagator
from annotators.sam import SamSegmenter, build_sam, grabcut_segment, mask_iou
from tests.corruption import flip_byte
from videoedit.errors import MaskError, ModelLoadError
from videoedit.io.masks import read_masks
from videoedit.io.writers import write_frames

H, W = 96, 128


def _moving_disc(num=6, speed=3, radius=16, seed=0):
    """A red disc moving right over a smooth green/blue texture: frames (F, H, W, 3) and exact masks (F, H, W)."""
    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 1, (H // 8, (W + num * 2) // 8 + 1, 3))
    texture = np.asarray(
        Image.fromarray((small * 255).astype(np.uint8)).resize((small.shape[1] * 8, H), Image.BICUBIC)
    ).astype(np.float64)
    texture[..., 0] *= 0.3  # little red in the background
    ys, xs = np.mgrid[0:H, 0:W]
    spots = rng.uniform(0.2, 1.0, (radius + 1, radius + 1))  # the disc's own texture
    spots = (
        np.asarray(
            Image.fromarray((spots * 255).astype(np.uint8)).resize((2 * radius + 1,) * 2, Image.BICUBIC)
        )
        / 255.0
    )
    frames, masks = [], []
    for t in range(num):
        bg = texture[:, t : t + W]  # the background pans by 1 px per frame
        cx, cy = 40 + speed * t, 48
        m = (xs - cx) ** 2 + (ys - cy) ** 2 <= radius**2
        f = bg.copy()
        local = spots[ys[m] - cy + radius, xs[m] - cx + radius]
        f[m] = np.stack([230 * local, 60 * local, 40 * local], axis=-1)
        frames.append(f.clip(0, 255).astype(np.uint8))
        masks.append(m)
    return np.stack(frames), np.stack(masks)


def _prompts(**regions):
    return RegionPrompts.from_mapping({"regions": regions})


# ------------------------------------------------------------------------------------ prompts


def test_prompts_from_yaml_and_cli_agree(tmp_path):
    spec = {
        "background": "bg",
        "disjoint": True,
        "regions": {
            "man": [{"frame": 0, "points": [[10, 20], [30, 40]], "labels": [1, 0], "box": [5, 5, 50, 60]}],
            "eyes": {"frame": 2, "box": [1, 2, 3, 4]},
        },
    }
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    from_yaml = RegionPrompts.from_yaml(tmp_path / "p.yaml")
    from_cli = RegionPrompts.from_cli(
        points=["man:0:10,20", "man:0:30,40,0"],
        boxes=["man:0:5,5,50,60", "eyes:2:1,2,3,4"],
        background="bg",
        disjoint=True,
    )
    assert from_yaml.to_dict() == from_cli.to_dict()
    assert from_yaml.names == ["man", "eyes", "bg"]
    assert from_yaml.regions["man"][0].labels == (1, 0)


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        (
            {"man": [{"frame": 0, "points": [[128, 10]]}]},
            r"Point \(128, 10\) of region 'man', keyframe 0 is outside the frame \(128x96: x in \[0, 127\]",
        ),
        ({"man": [{"frame": 0, "points": [[5, -1]]}]}, r"outside the frame"),
        (
            {"man": [{"frame": 6, "box": [0, 0, 5, 5]}]},
            r"Keyframe 6 of region 'man' is past the end of the clip \(6 frames: indices 0..5\)",
        ),
        ({"man": [{"frame": 0, "box": [10, 10, 5, 20]}]}, r"is empty: need x0 < x1"),
        ({"man": [{"frame": 0, "box": [0, 0, 200, 20]}]}, r"outside the frame"),
    ],
)
def test_prompts_that_do_not_fit_the_clip(prompt, message):
    with pytest.raises(MaskError, match=message):
        _prompts(**prompt).validate(list(range(6)), 6, (H, W))


def test_keyframe_not_read_and_malformed_prompts():
    with pytest.raises(MaskError, match=r"Keyframe 3 of region 'a' is not among the frames read \(0, 2, 4\)"):
        _prompts(a=[{"frame": 3, "box": [0, 0, 5, 5]}]).validate([0, 2, 4], 6, (H, W))
    with pytest.raises(MaskError, match="nothing to segment from"):
        _prompts(a=[{"frame": 0}])
    with pytest.raises(MaskError, match="2 points but 1 labels"):
        _prompts(a=[{"frame": 0, "points": [[1, 2], [3, 4]], "labels": [1]}])
    with pytest.raises(MaskError, match=r"unknown key\(s\) \['pts'\]"):
        _prompts(a=[{"frame": 0, "pts": [[1, 2]]}])
    with pytest.raises(MaskError, match="expected REGION:FRAME:VALUES"):
        RegionPrompts.from_cli(points=["10,20"])
    with pytest.raises(MaskError, match=r"Unknown region\(s\) \['legs'\]: the prompts define \['a'\]"):
        _prompts(a=[{"frame": 0, "box": [0, 0, 5, 5]}]).select(["a", "legs"])


# ------------------------------------------------------------------------------------ keyframes


def test_grabcut_segments_from_a_box_without_weights():
    frames, masks = _moving_disc(num=1)
    got = grabcut_segment(frames[0], box=(20, 28, 60, 68))
    assert mask_iou(got, masks[0]) > 0.85
    with pytest.raises(MaskError, match="needs a box or at least one inside point"):
        grabcut_segment(frames[0], points=np.array([[5, 5]]), labels=np.array([0]))


def test_random_weight_sam_plumbing():
    segmenter = SamSegmenter("tiny", device="cpu")
    frames, masks = _moving_disc(num=1)
    mask, score = segmenter.segment(
        frames[0], np.array([[40, 48]]), np.array([1]), np.array([20, 28, 60, 68])
    )
    assert mask.shape == (H, W) and mask.dtype == bool and np.isfinite(score)
    _, iou = segmenter.segment(frames[0], box=np.array([20, 28, 60, 68]), reference=masks[0])
    assert 0.0 <= iou <= 1.0
    with pytest.raises(ModelLoadError, match=r"SAM checkpoint not found.*GrabCut"):
        build_sam("vit_b", "/nowhere/sam.pth")
    with pytest.raises(MaskError, match="SAM model type"):
        build_sam("vit_x")


# ------------------------------------------------------------------------------------ propagation


def test_flow_propagation_follows_a_moving_object():
    frames, masks = _moving_disc(num=6)
    copy_j = np.mean([mask_iou(masks[0], m) for m in masks[1:]])
    for refine, gain in (("color", 0.25), ("threshold", 0.1)):  # the colour model stops the drift
        out = FlowMaskPropagator(flow_backend="dis", refine=refine).propagate(frames, {0: masks[0]})
        j = np.mean([mask_iou(o, m) for o, m in zip(out[1:], masks[1:])])
        assert j > copy_j + gain, (refine, j, copy_j)
    # from a keyframe in the middle: backward and forward
    out = FlowMaskPropagator(flow_backend="dis").propagate(frames, {3: masks[3]})
    assert (out[3] == masks[3]).all()
    for t in (0, 5):
        assert mask_iou(out[t], masks[t]) > mask_iou(masks[3], masks[t]) + 0.2


def test_flow_propagation_beats_copying_on_davis(shared_data):
    root = shared_data / "davis2016"
    ids = range(0, 12, 2)
    frames = np.stack(
        [
            np.asarray(
                Image.open(root / f"JPEGImages/car-turn/{i:05d}.jpg").convert("RGB").resize((427, 240))
            )
            for i in ids
        ]
    )
    gt = np.stack(
        [
            np.asarray(
                Image.open(root / f"Annotations/car-turn/{i:05d}.png")
                .convert("L")
                .resize((427, 240), Image.NEAREST)
            )
            > 0
            for i in ids
        ]
    )
    out = FlowMaskPropagator(flow_backend="dis").propagate(frames, {0: gt[0]})
    j = np.mean([mask_iou(o, g) for o, g in zip(out[1:], gt[1:])])
    copy_j = np.mean([mask_iou(gt[0], g) for g in gt[1:]])
    assert j > copy_j + 0.1 and j > 0.75, (j, copy_j)


def test_propagation_with_random_sam_keeps_the_flow_mask_when_sam_disagrees():
    frames, masks = _moving_disc(num=3)
    plain = FlowMaskPropagator(flow_backend="dis").propagate(frames, {0: masks[0]})
    guarded = FlowMaskPropagator(
        flow_backend="dis", segmenter=SamSegmenter("tiny", device="cpu"), sam_min_iou=1.01
    )
    np.testing.assert_array_equal(guarded.propagate(frames, {0: masks[0]}), plain)
    assert guarded.settings()["sam"]["sam"] == "tiny"


# ------------------------------------------------------------------------------------ layout ops


def test_disjoint_gives_overlaps_to_the_smaller_region_and_background_covers_the_rest():
    m = np.zeros((2, 2, 8, 8), bool)
    m[:, 0, 1:7, 1:7] = True  # man
    m[:, 1, 2:4, 2:5] = True  # eyes, inside the man
    d = make_disjoint(m)
    assert (d[:, 1] == m[:, 1]).all()  # the part keeps its pixels
    assert (d[:, 0] == (m[:, 0] & ~m[:, 1])).all()  # man_wo_eyes
    assert d.sum(1).max() == 1
    full = add_background(d)
    assert full.shape == (2, 3, 8, 8) and (full.sum(1) == 1).all()


def test_layout_round_trip_through_the_loader(tmp_path):
    frames, masks = _moving_disc(num=3)
    layout = add_background(masks[:, None])
    write_mask_layout(tmp_path / "m", frames, layout, ["disc", "bg"], [4, 6, 8], fps=4)
    back = read_masks(tmp_path / "m", ["disc", "bg"], [4, 6, 8], (H, W))
    np.testing.assert_array_equal(back, layout)
    assert (tmp_path / "m" / "overlay.mp4").is_file()
    assert sorted(p.name for p in (tmp_path / "m" / "disc").iterdir()) == [
        "00004.png",
        "00006.png",
        "00008.png",
    ]


def test_labels_to_masks_and_automatic_layout():
    labels = np.array([[[0, 1], [2, -1]]] * 2)
    masks, names = labels_to_masks(labels, (4, 6))
    assert names == ["cluster_0", "cluster_1", "cluster_2"] and masks.shape == (2, 3, 4, 6)
    assert masks[0, 0, :2, :3].all() and not masks[0, :, 2:, 3:].any()
    with pytest.raises(MaskError, match="integer array"):
        labels_to_masks(labels.astype(float), (4, 6))


class _CopyPropagator:
    """Propagation stand-in: the keyframe mask on every frame (the layout logic is what is tested)."""

    def propagate(self, frames, keyframes):
        ((_, mask),) = keyframes.items()
        return np.repeat(mask[None], len(frames), axis=0)


def test_automatic_layout_orders_keeps_max_regions_and_partitions(monkeypatch):
    frames, _ = _moving_disc(num=2)
    segmenter = SamSegmenter("tiny", device="cpu")
    big = np.zeros((H, W), bool)
    big[:, :64] = True  # 96 x 64 = 6144 px
    mid = np.zeros((H, W), bool)
    mid[:80, 10:70] = True  # 4800 px, 4320 of them inside big: the overlap goes to the smaller region
    small = np.zeros((H, W), bool)
    small[80:90, 100:110] = True  # 100 px
    tiny = np.zeros((H, W), bool)
    tiny[0, 127] = True  # 1 px < min_area: dropped
    calls = []

    def fake_automatic(image, **kwargs):
        calls.append((image.shape, kwargs))
        return [big, mid, small, tiny]  # SamSegmenter.automatic returns largest first

    monkeypatch.setattr(segmenter, "automatic", fake_automatic)
    masks, names = sam_automatic_layout(
        frames, segmenter, keyframe=1, max_regions=2, min_area=0.005, propagator=_CopyPropagator(),
        generator_kwargs={"points_per_side": 4},
    )  # fmt: skip
    assert calls == [((H, W, 3), {"points_per_side": 4})]
    assert names == ["region_0", "region_1", "bg"] and masks.shape == (2, 3, H, W)
    # disjoint first (mid keeps its pixels, big loses the overlap: 1824 px left), then the 2 largest by
    # remaining area: mid before big's rest (the reverse of SAM's order); `small` is left out
    big_rest = big & ~mid
    assert big_rest.sum() == 1824
    for f in range(2):
        np.testing.assert_array_equal(masks[f, 0], mid)
        np.testing.assert_array_equal(masks[f, 1], big_rest)
        np.testing.assert_array_equal(masks[f, 2], ~(big_rest | mid))  # the background is the rest
    assert not masks[:, :, 80:90, 100:110].any(axis=(0, 2, 3))[:2].any()  # small is in no region
    assert (masks.sum(1) == 1).all()  # a partition of every frame
    monkeypatch.setattr(segmenter, "automatic", lambda image, **kw: [tiny])
    with pytest.raises(MaskError, match="draw prompts instead"):
        sam_automatic_layout(frames, segmenter, min_area=0.005, propagator=_CopyPropagator())


# ------------------------------------------------------------------------------------ builder, cache, CLI


def test_builder_masks_cache_and_part_layout(tmp_path):
    frames, masks = _moving_disc(num=4)
    Image.fromarray(masks[0].astype(np.uint8) * 255).save(tmp_path / "disc.png")
    spec = {
        "regions": {
            "disc": [{"frame": 0, "mask": "disc.png"}],
            "spot": [{"frame": 0, "box": [34, 42, 46, 54]}],  # part of the disc (GrabCut)
        },
        "background": "bg",
        "disjoint": True,
    }
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    builder = VideoMaskBuilder(str(tmp_path / "p.yaml"), flow_backend="dis")
    cache = AnnotationCache(tmp_path / "cache")
    first = builder.build(frames, cache=cache)
    assert first.regions == ["disc", "spot", "bg"] and not first.cache_hit
    assert (first.masks.sum(1) == 1).all()  # disjoint + background = a partition
    assert mask_iou(first.masks[3, 0] | first.masks[3, 1], masks[3]) > 0.8
    second = builder.build(frames, cache=cache)
    assert second.cache_hit and second.key == first.key
    np.testing.assert_array_equal(second.masks, first.masks)
    # another setting is another entry
    assert (
        VideoMaskBuilder(str(tmp_path / "p.yaml"), flow_backend="dis", refine="threshold")
        .build(frames, cache=cache)
        .key
        != first.key
    )
    with pytest.raises(MaskError, match=r"Unknown region\(s\) \['eyes'\]"):
        VideoMaskBuilder(str(tmp_path / "p.yaml"), regions=["disc", "eyes"])


def test_cli_writes_masks_from_clicks(tmp_path, capsys):
    frames, masks = _moving_disc(num=4)
    write_frames(tmp_path / "clip", frames)
    out = tmp_path / "masks"
    main(["--video", str(tmp_path / "clip"), "--out", str(out), "--box", "disc:0:20,28,60,68", "--point", "disc:0:40,48",
          "--background", "bg", "--flow", "dis", "--cache-root", str(tmp_path / "cache")])  # fmt: skip
    back = read_masks(out, ["disc", "bg"], range(4), (H, W))
    assert mask_iou(back[3, 0], masks[3]) > 0.75
    assert "wrote 2 regions x 4 frames" in capsys.readouterr().out
    with pytest.raises(MaskError, match=r"Point \(200, 48\) .* outside the frame"):
        main(["--video", str(tmp_path / "clip"), "--out", str(out), "--point", "disc:0:200,48", "--no-cache"])
    with pytest.raises(MaskError, match="past the end of the clip"):
        main(
            [
                "--video",
                str(tmp_path / "clip"),
                "--out",
                str(out),
                "--box",
                "disc:9:20,28,60,68",
                "--no-cache",
            ]
        )
    with pytest.raises(MaskError, match=r"Unknown region\(s\) \['cat'\]"):
        main(
            [
                "--video",
                str(tmp_path / "clip"),
                "--out",
                str(out),
                "--box",
                "disc:0:20,28,60,68",
                "--regions",
                "cat",
                "--no-cache",
            ]
        )


def test_prompted_clip_is_a_data_source(compose, tmp_path):
    from videoedit.edit import build

    frames, _ = _moving_disc(num=4)
    write_frames(tmp_path / "clip", frames)
    spec = {"regions": {"disc": [{"frame": 0, "box": [20, 28, 60, 68]}]}, "background": "bg"}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    overrides = [
        "data=video_sam",
        f"data.path={tmp_path / 'clip'}",
        f"data.mask_builder.prompts={tmp_path / 'p.yaml'}",
        "data.mask_builder.flow_backend=dis",
        "data.resize.height=64",
        "data.resize.width=64",
        f"paths.cache_root={tmp_path / 'cache'}",
    ]
    clip = build(compose(*overrides).data, "data")
    assert isinstance(clip, PromptedVideoClip)
    source = clip.load()
    assert source.regions == ["disc", "bg"] and tuple(source.masks.shape) == (4, 2, 64, 64)
    (layout,) = (tmp_path / "cache" / "annotations" / "layouts").iterdir()
    # the layout folder is checked against the manifest in its COMPLETE marker: a changed file is rewritten
    png = layout / "disc" / "00002.png"
    original = png.read_bytes()
    flip_byte(png, len(original) // 2)
    again = clip.load()
    assert png.read_bytes() == original
    np.testing.assert_array_equal(again.masks.numpy(), source.masks.numpy())
    with pytest.raises(MaskError, match=r"Unknown region\(s\) \['cat'\]"):
        build(compose(*overrides, "data.regions=[cat]").data, "data")


def test_cache_annotations_false_builds_masks_without_the_cache(compose, tmp_path, monkeypatch):
    from videoedit.edit import build

    frames, _ = _moving_disc(num=3)
    write_frames(tmp_path / "clip", frames)
    spec = {"regions": {"disc": [{"frame": 0, "box": [20, 28, 60, 68]}]}, "background": "bg"}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    overrides = [
        "data=video_sam",
        f"data.path={tmp_path / 'clip'}",
        f"data.mask_builder.prompts={tmp_path / 'p.yaml'}",
        "data.mask_builder.flow_backend=dis",
        "data.resize.height=64",
        "data.resize.width=64",
        f"paths.cache_root={tmp_path / 'cache'}",
        "cache_annotations=false",
    ]
    clip = build(compose(*overrides).data, "data")
    assert clip.cache is False
    calls = []
    real_build = VideoMaskBuilder.build

    def spy(self, frames, indices=None, total_frames=None, cache=None):
        calls.append(cache)
        return real_build(self, frames, indices, total_frames, cache)

    monkeypatch.setattr(VideoMaskBuilder, "build", spy)
    folders = []
    real_write = masks_module.write_mask_layout

    def spy_write(folder, *args, **kwargs):
        folders.append(Path(folder))
        return real_write(folder, *args, **kwargs)

    monkeypatch.setattr(masks_module, "write_mask_layout", spy_write)
    first, second = clip.load(), clip.load()
    assert len(folders) == 2 and all(f.parent == tmp_path / "cache" / "tmp" for f in folders)
    assert calls == [None, None]  # no cache handed to the builder: built both times
    assert first.regions == ["disc", "bg"] and tuple(first.masks.shape) == (3, 2, 64, 64)
    np.testing.assert_array_equal(first.masks.numpy(), second.masks.numpy())
    # nothing read from or kept in the cache; the masks' scratch folder lived under <cache_root>/tmp
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["tmp"]
    assert build(compose(*overrides[:-1]).data, "data").cache is True  # the default: cached


def test_cli_labels_must_have_one_map_per_frame_read(tmp_path):
    frames, _ = _moving_disc(num=4)
    write_frames(tmp_path / "clip", frames)
    np.save(tmp_path / "labels.npy", np.zeros((3, 6, 8), np.int64))
    args = [
        "--video",
        str(tmp_path / "clip"),
        "--out",
        str(tmp_path / "m"),
        "--labels",
        str(tmp_path / "labels.npy"),
    ]
    with pytest.raises(MaskError, match=r"holds \(3, 6, 8\) label maps but 4 frames were read"):
        main(args)
    assert main([*args, "--num-frames", "3"]) == 0
    assert read_masks(tmp_path / "m", ["cluster_0"], range(3), (H, W)).all()
