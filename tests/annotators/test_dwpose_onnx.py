"""DWPose through ONNX: the real onnxruntime pipeline on tiny ONNX files with the official models'
input/output signatures (built here with the ``onnx`` package; mocked only at the file boundary)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from annotators.dwpose_onnx import (  # noqa: E402
    DWPoseOnnx,
    box_to_center_scale,
    coco_wholebody_to_openpose,
    decode_yolox,
    nms,
    onnx_providers,
)
from annotators.pose import draw_wholebody  # noqa: E402
from videoedit.errors import ModelLoadError  # noqa: E402

DET_SIZE = 64  # the real yolox_l.onnx takes 640x640; the code reads the size from the model
POSE_H, POSE_W = 64, 48  # the real dw-ll_ucoco_384.onnx takes 384x288 (same 4:3 aspect)


def _constant_model(path, input_name, input_shape, outputs: dict[str, np.ndarray]) -> None:
    """An ONNX file whose outputs are constants plus 0 x mean(input) (so they depend on the input)."""
    nodes = [helper.make_node("ReduceMean", [input_name], ["mean"], keepdims=0)]
    nodes.append(helper.make_node("Constant", [], ["zero"], value=numpy_helper.from_array(np.float32(0))))
    nodes.append(helper.make_node("Mul", ["mean", "zero"], ["nothing"]))
    outs = []
    for name, value in outputs.items():
        const = f"{name}_const"
        nodes.append(
            helper.make_node("Constant", [], [const], value=numpy_helper.from_array(value.astype(np.float32)))
        )
        nodes.append(helper.make_node("Add", [const, "nothing"], [name]))
        outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(value.shape)))
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, input_shape)], outs
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _anchor(gx: int, gy: int, stride: int) -> int:
    """Row index of grid cell (gx, gy) of a stride in YOLOX's flattened output."""
    offset = 0
    for s in (8, 16, 32):
        if s == stride:
            return offset + gy * (DET_SIZE // s) + gx
        offset += (DET_SIZE // s) ** 2
    raise ValueError(stride)


def _yolox_row(box_input: tuple[float, float, float, float], stride: int, obj: float, cls: int, p: float):
    """The raw output row of an anchor predicting ``box_input`` (input pixels) and its grid cell."""
    x0, y0, x1, y1 = box_input
    cx, cy, w, h = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0
    gx, gy = int(cx // stride), int(cy // stride)
    row = np.zeros(85)
    row[:4] = cx / stride - gx, cy / stride - gy, np.log(w / stride), np.log(h / stride)
    row[4], row[5 + cls] = obj, p
    return _anchor(gx, gy, stride), row


#: a 96x128 (HxW) frame: the detector's 64x64 input holds it at r = 0.5
FRAME_HW = (96, 128)
PERSON = (32.0, 16.0, 80.0, 88.0)  # in frame pixels


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dwpose")
    anchors = sum((DET_SIZE // s) ** 2 for s in (8, 16, 32))
    raw = np.zeros((1, anchors, 85))
    half = tuple(v * 0.5 for v in PERSON)
    for box, stride, obj, cls, p in [
        (half, 8, 0.9, 0, 0.9),  # the person (score 0.81)
        ((17.0, 8.0, 40.0, 44.0), 16, 0.9, 0, 0.8),  # the same person again: removed by NMS
        ((0.0, 40.0, 10.0, 60.0), 8, 0.9, 3, 0.9),  # another class: dropped
        ((44.0, 2.0, 60.0, 20.0), 8, 0.5, 0, 0.5),  # a person at 0.25 (passes 0.1, not 0.3): dropped
    ]:
        index, row = _yolox_row(box, stride, obj, cls, p)
        raw[0, index] = row
    _constant_model(folder / "yolox_l.onnx", "images", [1, 3, DET_SIZE, DET_SIZE], {"output": raw})
    # pose: SimCC peaks at known bins (split ratio 2: bins are half pixels of the 48x64 input)
    rng = np.random.default_rng(0)
    bins_x = rng.integers(10, 2 * POSE_W - 10, 133)
    bins_y = rng.integers(10, 2 * POSE_H - 10, 133)
    peak = np.full(133, 0.9)
    peak[[3, 4]] = 0.1  # the ears below 0.3: not drawn
    peak[24:92] = 0.05  # the face: hidden
    peak[10] = 0.0  # a wrist with score 0: its location is -1 (official)
    simcc_x = np.full((1, 133, 2 * POSE_W), 0.01)
    simcc_y = np.full((1, 133, 2 * POSE_H), 0.01)
    simcc_x[0, np.arange(133), bins_x] = peak
    simcc_y[0, np.arange(133), bins_y] = peak + 0.02  # the score is the smaller of the two maxima
    simcc_x[0, 10] = simcc_y[0, 10] = 0.0
    _constant_model(
        folder / "dw-ll_ucoco_384.onnx",
        "input",
        [1, 3, POSE_H, POSE_W],
        {"simcc_x": simcc_x, "simcc_y": simcc_y},
    )
    return folder, bins_x, bins_y, peak


def test_detector_decodes_yolox_and_keeps_one_person(models):
    folder, *_ = models
    annotator = DWPoseOnnx(str(folder), device="cpu")
    frame = np.zeros((*FRAME_HW, 3), np.uint8)
    boxes = annotator.detect_people(frame)
    np.testing.assert_allclose(boxes, [PERSON], atol=1e-4)


def test_no_person_means_the_whole_frame_is_the_box(models, tmp_path):
    folder, *_ = models
    empty = np.zeros((1, sum((DET_SIZE // s) ** 2 for s in (8, 16, 32)), 85))
    _constant_model(tmp_path / "yolox_l.onnx", "images", [1, 3, DET_SIZE, DET_SIZE], {"output": empty})
    annotator = DWPoseOnnx(str(folder), det_model=str(tmp_path / "yolox_l.onnx"), device="cpu")
    np.testing.assert_array_equal(
        annotator.detect_people(np.zeros((*FRAME_HW, 3), np.uint8)), [[0, 0, 128, 96]]
    )


def test_keypoints_map_back_to_the_frame(models):
    """Reference: bin / 2 in the 48x64 input, then input -> frame through the padded, widened box."""
    folder, bins_x, bins_y, peak = models
    annotator = DWPoseOnnx(str(folder), device="cpu")
    frame = np.random.default_rng(1).integers(0, 255, (*FRAME_HW, 3), dtype=np.uint8)
    points, scores = annotator.estimate(frame, np.array([PERSON]))
    x0, y0, x1, y1 = PERSON
    w, h = (x1 - x0) * 1.25, (y1 - y0) * 1.25  # 60 x 90: taller than 3:4, so widened to 67.5 x 90
    scale = (
        np.array([h * POSE_W / POSE_H, h]) if w <= h * POSE_W / POSE_H else np.array([w, w * POSE_H / POSE_W])
    )
    center = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    locs = np.stack([bins_x, bins_y], 1) / 2.0
    locs[10] = -0.5
    expected = locs / np.array([POSE_W, POSE_H]) * scale + center - scale / 2
    np.testing.assert_allclose(points[0], expected, atol=1e-6)
    expected_scores = peak.copy()
    expected_scores[10] = 0.0
    np.testing.assert_allclose(scores[0], expected_scores, atol=1e-6)
    np.testing.assert_allclose(box_to_center_scale(np.array(PERSON), POSE_W / POSE_H)[1], scale)


def test_openpose_order_and_neck():
    rng = np.random.default_rng(0)
    kp = rng.uniform(0, 100, (2, 133, 2))
    sc = rng.uniform(0.5, 1.0, (2, 133))
    sc[1, 6] = 0.2  # person 1's right shoulder is weak: no neck
    out, out_s = coco_wholebody_to_openpose(kp, sc)
    assert out.shape == (2, 134, 2) and out_s.shape == (2, 134)
    np.testing.assert_allclose(out[:, 1], (kp[:, 5] + kp[:, 6]) / 2)
    np.testing.assert_array_equal(out_s[:, 1], [1.0, 0.0])
    # OpenPose: 2 right shoulder <- COCO 6, 5 left shoulder <- 5, 14 right eye <- 2, 17 left ear <- 3
    for op, coco in [(0, 0), (2, 6), (5, 5), (8, 12), (11, 11), (14, 2), (15, 1), (16, 4), (17, 3)]:
        np.testing.assert_array_equal(out[:, op], kp[:, coco])
    np.testing.assert_array_equal(out[:, 18:], kp[:, 17:])  # feet, face, hands follow in order


def test_draws_like_controlnet_aux(models):
    """The map equals controlnet-aux's draw_pose fed the official annotator's dict (a reference)."""
    from controlnet_aux.dwpose import draw_pose

    folder, *_ = models
    annotator = DWPoseOnnx(str(folder), hand=True, face=False, device="cpu")
    frame = np.zeros((*FRAME_HW, 3), np.uint8)
    maps = annotator(frame[None])
    keypoints, scores = annotator.detect(frame)
    height, width = FRAME_HW
    # the official DWposeDetector.__call__, written out
    candidate = keypoints / np.array([width, height])
    subset = scores.copy()
    body = candidate[:, :18].reshape(-1, 2)
    score = np.where(subset[:, :18] > 0.3, np.arange(subset.shape[0] * 18).reshape(-1, 18), -1)
    hidden = candidate.copy()
    hidden[subset < 0.3] = -1
    pose = {
        "bodies": {"candidate": body, "subset": score},
        "hands": np.vstack([hidden[:, 92:113], hidden[:, 113:]]),
        "faces": hidden[:, 24:92][:0],  # face off: nothing drawn
    }
    reference = draw_pose(pose, height, width)
    np.testing.assert_array_equal(maps[0], reference)
    assert maps[0].any()
    np.testing.assert_array_equal(draw_wholebody(candidate, subset, height, width, True, False), reference)


def test_nms_and_decoding_helpers():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], float)
    assert nms(boxes, np.array([0.9, 0.8, 0.7]), 0.45) == [0, 2]
    assert nms(boxes, np.array([0.5, 0.8, 0.7]), 0.45) == [1, 2]
    raw = np.zeros((84, 7))
    raw[_anchor(2, 1, 8), :4] = 0.5, 0.5, 0.0, np.log(2)
    decoded, _ = decode_yolox(raw, (DET_SIZE, DET_SIZE))
    np.testing.assert_allclose(decoded[_anchor(2, 1, 8)], [16, 4, 24, 20])  # centre (20, 12), 8 x 16
    with pytest.raises(ModelLoadError, match="is det_model a YOLOX ONNX export"):
        decode_yolox(np.zeros((10, 7)), (DET_SIZE, DET_SIZE))


def test_weights_are_resolved_before_any_session(tmp_path, monkeypatch):
    with pytest.raises(
        ModelLoadError,
        match=r"DWPose annotator: weight file .*yolox_l\.onnx not found.*annotator=pose_mediapipe",
    ):
        DWPoseOnnx(str(tmp_path), device="cpu")
    (tmp_path / "yolox_l.onnx").write_bytes(b"x")
    with pytest.raises(ModelLoadError, match=r"dw-ll_ucoco_384\.onnx not found"):
        DWPoseOnnx(str(tmp_path), device="cpu")
    with pytest.raises(ModelLoadError, match=r"DWPose annotator: .*nowhere\.onnx is not a file"):
        DWPoseOnnx(str(tmp_path), pose_model=str(tmp_path / "nowhere.onnx"))
    monkeypatch.setattr("annotators.dwpose_onnx.module_available", lambda name: False)
    with pytest.raises(ModelLoadError, match=r"needs onnxruntime .*annotator=pose_mediapipe"):
        DWPoseOnnx(str(tmp_path))


def test_providers_follow_the_device(monkeypatch):
    import onnxruntime as ort

    assert onnx_providers("cpu") == ["CPUExecutionProvider"]
    monkeypatch.setattr(
        ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    assert onnx_providers("cuda") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert onnx_providers("cuda:0") == ["CPUExecutionProvider"]  # with a warning


def test_the_default_config_is_the_onnx_annotator(compose):
    cfg = compose("controlnet=openpose")
    assert cfg.annotator._target_ == "annotators.dwpose_onnx.DWPoseOnnx"
    assert cfg.annotator.pretrained_model_or_path == "sxela/dwpose_ckpts"
    assert compose("annotator=dwpose_mm").annotator._target_ == "annotators.pose.DWPose"
