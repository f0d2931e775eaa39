"""heatmap_over_frames: a map blended over its frames, with a colour bar and marked frames."""

import numpy as np
import pytest
import torch
from matplotlib import colormaps

from videoedit.io.visualize import heatmap_over_frames


def _lut(name, x):
    return np.asarray(colormaps[name](np.linspace(0, 1, 256))[round(x * 255), :3] * 255, np.float32)


def _setup():
    frames = np.full((3, 64, 96, 3), 128, np.uint8)
    values = np.zeros((3, 8, 12), np.float32)  # a latent-grid map (8x smaller)
    values[:, :, 6:] = 1.0  # right half: 1
    values[1, :, :6] = 0.5
    return frames, values


def test_colours_are_the_colormap_blended_over_the_frames():
    frames, values = _setup()
    out = heatmap_over_frames(frames, values, "discrepancy M", marks={0: "anchor", 2: "keyframe"}, alpha=0.4)
    assert out.dtype == np.uint8 and out.shape[:3] == (3, 64, out.shape[2]) and out.shape[2] % 2 == 0
    assert out.shape[2] > 96  # the colour bar panel on the right
    for t, (left, right) in enumerate([(0.0, 1.0), (0.5, 1.0), (0.0, 1.0)]):
        for x, value in ((24, left), (72, right)):
            expected = np.round(0.6 * 128 + 0.4 * _lut("inferno", value))
            np.testing.assert_array_equal(out[t, 32, x], expected, err_msg=f"frame {t} x {x}")
    # values are clipped to [vmin, vmax]; torch (F, 1, h, w) works as numpy (F, h, w)
    over = torch.from_numpy(values * 3)[:, None]
    same = heatmap_over_frames(frames, over, "discrepancy M", vmax=3.0, marks={0: "anchor", 2: "keyframe"},
                               alpha=0.4)  # fmt: skip
    np.testing.assert_array_equal(same[:, :, :96], out[:, :, :96])
    clipped = heatmap_over_frames(frames, values * 5, "M", alpha=0.4)
    np.testing.assert_array_equal(clipped[:, 32, 72], out[:, 32, 72])


def test_marked_frames_have_a_border_and_a_tag():
    frames, values = _setup()
    out = heatmap_over_frames(frames, values, "discrepancy M", marks={0: "anchor", 2: "keyframe"})
    for t in (0, 2):
        assert (out[t, 0, 10:90] == 255).all() and (out[t, 40, 0] == 255).all()  # white border
        assert (out[t, 2:12, 2:30] == 0).all(-1).any()  # the black tag box
    assert not (out[1, 0, 10:90] == 255).all(-1).any()
    assert not (out[1, 2:12, 2:30] == 0).all(-1).any()


def test_the_colour_bar_runs_from_vmax_at_the_top_to_vmin():
    frames, values = _setup()
    out = heatmap_over_frames(frames, values, "M", colormap="viridis")
    panel = out[0, :, 96:].astype(np.float32)
    top, bottom = _lut("viridis", 1.0), _lut("viridis", 0.0)
    rows_top = np.where((np.abs(panel - top).max(-1) <= 1).any(1))[0]
    rows_bottom = np.where((np.abs(panel - bottom).max(-1) <= 1).any(1))[0]
    assert len(rows_top) and len(rows_bottom) and rows_top.max() < rows_bottom.min()
    # every frame carries the same panel
    assert (out[:, :, 96:] == out[:1, :, 96:]).all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(values=np.zeros((2, 8, 12))), "values .* must be \\(F, h, w\\) with F = 3"),
        (dict(values=np.zeros((3, 7, 12))), "dividing the frame size"),
        (dict(vmin=1.0, vmax=1.0), "vmax must be greater than vmin"),
        (dict(marks={3: "keyframe"}), "marks name frames \\[3\\] outside the clip's 3 frames"),
        (dict(frames=np.zeros((3, 64, 96, 3), np.float32)), "frames must be \\(F, H, W, 3\\) uint8"),
    ],
)
def test_bad_input_is_refused(kwargs, message):
    frames, values = _setup()
    args = dict(frames=frames, values=values, label="M")
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        heatmap_over_frames(**args)
