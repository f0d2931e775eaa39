"""Pose annotators: the BlazePose -> OpenPose conversion, the offline mediapipe backend on real frames,
the controlnet-aux backends' drawing and fail-fast errors, and the CLI."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from annotators.openpose_draw import COLORS
from annotators.pose import (
    BLAZEPOSE_TO_OPENPOSE,
    DWPose,
    MediapipePose,
    OpenPose,
    blazepose_to_openpose,
    draw_hands,
    main,
)
from annotators.precomputed import PrecomputedCondition
from videoedit.errors import ConfigError, ModelLoadError


def _mediapipe_importable() -> bool:
    try:
        import mediapipe  # noqa: F401
    except Exception:  # not installed (no 0.10.21 wheel for this Python, e.g. > 3.12)
        return False
    return True


needs_mediapipe = pytest.mark.skipif(
    not _mediapipe_importable(), reason="mediapipe 0.10.21 is not importable (see test.sh)"
)


def _davis(shared_data, seq, n, step=4):
    root = shared_data / "davis2016" / "JPEGImages" / seq
    return np.stack(
        [np.asarray(Image.open(root / f"{i:05d}.jpg").convert("RGB")) for i in range(0, n * step, step)]
    )


# ------------------------------------------------------------------------------------ conversion


def test_blazepose_to_openpose_maps_every_joint():
    rng = np.random.default_rng(0)
    lm = np.concatenate([rng.uniform(0.1, 0.9, (33, 2)), np.ones((33, 1))], axis=1)
    kp = blazepose_to_openpose(lm, height=100, width=200)
    for k, src in enumerate(BLAZEPOSE_TO_OPENPOSE):
        expected = (lm[11, :2] + lm[12, :2]) / 2 if src is None else lm[src, :2]
        np.testing.assert_allclose(kp[k, :2], expected * [200, 100])
    assert kp[:, 2].all()
    # OpenPose "right shoulder" (2) is BlazePose's right shoulder (12); "left eye" (15) is BlazePose 2
    assert BLAZEPOSE_TO_OPENPOSE[2] == 12 and BLAZEPOSE_TO_OPENPOSE[15] == 2


def test_low_visibility_and_out_of_frame_joints_are_dropped():
    lm = np.full((33, 3), 0.5)
    lm[:, 2] = 0.9
    lm[12, 2] = 0.2  # right shoulder hidden -> neck hidden too
    lm[27, 0] = 1.3  # left ankle outside the frame
    kp = blazepose_to_openpose(lm, 64, 64, min_visibility=0.5)
    assert kp[2, 2] == 0 and kp[1, 2] == 0 and kp[13, 2] == 0
    assert kp[5, 2] == 1 and kp[0, 2] == 1
    with pytest.raises(ValueError, match=r"\(33, 3\)"):
        blazepose_to_openpose(np.zeros((17, 3)), 64, 64)


def test_draw_hands_colours_bones_and_marks_joints_blue():
    hand = np.stack([np.linspace(10, 110, 21), np.full(21, 60.0)], axis=1)
    canvas = draw_hands(np.zeros((128, 128, 3), np.uint8), [hand])
    assert tuple(canvas[60, 10]) == (0, 0, 255)  # a joint
    assert canvas.any(axis=-1).sum() > 100
    hidden = np.concatenate([hand, np.zeros((21, 1))], axis=1)
    assert not draw_hands(np.zeros((128, 128, 3), np.uint8), [hidden]).any()


# ------------------------------------------------------------------------------------ mediapipe


@needs_mediapipe
def test_mediapipe_draws_a_person_and_nothing_on_the_swan(shared_data):
    annotator = MediapipePose()
    person = _davis(shared_data, "tennis", 3)
    maps = annotator(person)
    assert maps.shape == person.shape and maps.dtype == np.uint8
    assert all(m.any() for m in maps)
    # the skeleton uses the OpenPose palette: the neck -> right shoulder limb colour appears
    colours = {tuple(c) for c in maps.reshape(-1, 3)[::7]}
    assert any(np.abs(np.array(c) - np.array(COLORS[0])).max() < 40 for c in colours if any(c))
    swan = _davis(shared_data, "blackswan", 3)
    assert not annotator(swan).any()
    # mediapipe's own default presence threshold invents skeletons on the swan (what min_presence fixes)
    assert any(f["body"] is not None for f in MediapipePose(min_presence=0.5, tracking=False).detect(swan))


@needs_mediapipe
def test_mediapipe_settings_and_bad_threshold():
    annotator = MediapipePose(hand=True)
    s = annotator.settings()
    assert s["condition_type"] == "openpose" and s["hand"] is True and s["min_presence"] == 0.98
    assert s["mediapipe"].startswith("0.10")
    with pytest.raises(ConfigError, match=r"min_presence must be in \[0, 1\]"):
        MediapipePose(min_presence=1.5)
    blank = np.zeros((2, 64, 64, 3), np.uint8)
    assert not annotator(blank).any()


# ------------------------------------------------------------------------------------ controlnet-aux


def test_dwpose_fails_fast_naming_the_offline_alternative():
    pytest.importorskip("controlnet_aux")
    from annotators.common import module_available

    if module_available("mmpose"):
        pytest.skip("mmpose is installed")
    with pytest.raises(ModelLoadError, match=r"needs mmcv, mmdet, mmpose.*annotator=pose_mediapipe"):
        DWPose()


def test_mediapipe_missing_names_the_working_install(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "mediapipe", None)  # `import mediapipe` fails
    with pytest.raises(ModelLoadError) as err:
        MediapipePose()
    assert (
        'pip install -c constraints.txt -e ".[pose]" && pip install --no-deps -c constraints.txt '
        "mediapipe==0.10.21" in str(err.value)
    )


def _fake_mm(monkeypatch, tmp_path):
    """Pretend mmcv/mmdet/mmpose are installed; torch hub's folder in ``tmp_path`` (empty)."""
    import torch

    monkeypatch.setattr("annotators.pose.module_available", lambda name: True)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    return tmp_path / "hub" / "checkpoints"


def test_dwpose_default_checkpoints_are_resolved_before_any_model_loads(monkeypatch, tmp_path):
    from annotators.pose import DWPOSE_DET_CHECKPOINT, DWPOSE_POSE_CHECKPOINT

    checkpoints = _fake_mm(monkeypatch, tmp_path)
    with pytest.raises(
        ModelLoadError, match=r"det_checkpoint .*yolox_l_8x8.* not downloaded.*annotator=pose_mediapipe"
    ):
        DWPose()
    checkpoints.mkdir(parents=True)
    (checkpoints / DWPOSE_DET_CHECKPOINT.rsplit("/", 1)[1]).write_bytes(b"det")
    with pytest.raises(ModelLoadError, match=r"pose_checkpoint .*dw-ll_ucoco_384\.pth is not downloaded"):
        DWPose()
    (checkpoints / "dw-ll_ucoco_384.pth").write_bytes(b"pose")
    annotator = DWPose()
    assert annotator.det_checkpoint == str(checkpoints / DWPOSE_DET_CHECKPOINT.rsplit("/", 1)[1])
    assert annotator.pose_checkpoint == str(checkpoints / "dw-ll_ucoco_384.pth")
    assert DWPOSE_POSE_CHECKPOINT.endswith("/dw-ll_ucoco_384.pth")
    # the cache key sees the files (size, mtime): other weights behind the same name, another key
    before = annotator.settings()
    assert before["pose"][1]["size"] == 4 and before["version"] == 1
    (checkpoints / "dw-ll_ucoco_384.pth").write_bytes(b"other pose")
    assert DWPose().settings() != before
    # an explicit URL must be downloaded too; an explicit file is used as is
    with pytest.raises(ModelLoadError, match=r"pose_checkpoint https://example.com/w/other\.pth"):
        DWPose(pose_checkpoint="https://example.com/w/other.pth")
    (tmp_path / "mine.pth").write_bytes(b"x")
    assert DWPose(pose_checkpoint=str(tmp_path / "mine.pth")).pose_checkpoint == str(tmp_path / "mine.pth")


def test_dwpose_draws_like_the_official_annotator(monkeypatch, tmp_path):
    """The drawing half of DWPose with a fake whole-body estimate (the networks need mmpose + weights)."""
    _fake_mm(monkeypatch, tmp_path)
    for name in ("det.pth", "pose.pth"):
        (tmp_path / name).write_bytes(b"x")
    annotator = DWPose(
        hand=True,
        face=False,
        det_checkpoint=str(tmp_path / "det.pth"),
        pose_checkpoint=str(tmp_path / "pose.pth"),
        device="cpu",
    )
    candidate = np.zeros((1, 134, 2))
    score = np.zeros((1, 134))
    candidate[0, 1], candidate[0, 2] = (0.5, 0.3), (0.4, 0.3)  # neck, right shoulder
    score[0, [1, 2]] = 0.9
    candidate[0, 92:113] = np.stack([np.linspace(0.2, 0.4, 21), np.full(21, 0.8)], 1)  # left hand
    score[0, 92:113] = 0.9
    candidate[0, 30] = (0.9, 0.1)  # a face point: face drawing is off
    score[0, 30] = 0.9
    canvas = annotator.draw(candidate, score, 100, 100)
    assert canvas[30, 45:50].any()  # the neck-shoulder limb
    assert canvas[80, 20:40].any()  # the hand
    assert not canvas[8:13, 88:93].any()  # no face
    score[0, [1, 2]] = 0.1  # below the official 0.3 threshold: the limb disappears
    assert not annotator.draw(candidate, score, 100, 100)[30, 45:50].any()
    # exactly 0.3: controlnet-aux draws a body joint only above it (score > 0.3) but hides hand/face
    # points only below it (score < 0.3)
    score[0, [1, 2]] = 0.3
    score[0, 92:113] = 0.3
    at_threshold = annotator.draw(candidate, score, 100, 100)
    assert not at_threshold[30, 45:50].any() and at_threshold[80, 20:40].any()
    score[0, [1, 2]] = 0.31
    assert annotator.draw(candidate, score, 100, 100)[30, 45:50].any()


def test_openpose_missing_weights(tmp_path):
    pytest.importorskip("controlnet_aux")
    with pytest.raises(ModelLoadError, match=r"body_pose_model\.pth.*annotator=pose_mediapipe"):
        OpenPose(str(tmp_path))
    with pytest.raises(ModelLoadError, match=r"lllyasviel/Annotators.*annotator=pose_mediapipe"):
        OpenPose("lllyasviel/Annotators")  # offline: not in the hub cache


def test_openpose_passes_flags_and_resizes(tmp_path, monkeypatch):
    for name in OpenPose.FILES:
        (tmp_path / name).write_bytes(b"x")
    annotator = OpenPose(str(tmp_path), hand=True, face=False, device="cpu")
    calls = []

    def fake(image, **kwargs):
        calls.append(kwargs)
        return np.full((kwargs["image_resolution"], kwargs["image_resolution"] * 2, 3), 200, np.uint8)

    monkeypatch.setattr(annotator, "_build", lambda: fake)
    maps = annotator(np.zeros((2, 40, 90, 3), np.uint8))
    assert maps.shape == (2, 40, 90, 3) and (maps == 200).all()
    assert calls[0]["include_hand"] is True and calls[0]["include_face"] is False
    assert "body_pose_model.pth" in str(annotator.settings()["weights"])


# ------------------------------------------------------------------------------------ CLI


@needs_mediapipe
def test_cli_writes_maps_that_precomputed_reads_back(shared_data, tmp_path, capsys):
    clip = shared_data / "davis2016" / "JPEGImages" / "tennis"
    out = tmp_path / "openpose"
    assert main(["--video", str(clip), "--num-frames", "2", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["00000.png", "00001.png"]
    assert (tmp_path / "openpose.mp4").is_file()
    assert "wrote 2 pose maps" in capsys.readouterr().out
    back = PrecomputedCondition(str(out), "openpose")(np.zeros((2, 480, 854, 3), np.uint8), [0, 1])
    assert back.any() and back.shape == (2, 480, 854, 3)
    with pytest.raises(ConfigError, match="draws no faces"):
        main(["--video", str(clip), "--out", str(out), "--face"])
