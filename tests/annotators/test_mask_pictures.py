"""The mask annotator's overlay: PNG frames beside the mp4, a legend, the user's boxes/points drawn."""

import numpy as np
import pytest
from PIL import Image

from annotators.masks import OVERLAY_FRAMES, write_mask_layout
from annotators.prompts import RegionPrompts
from videoedit.errors import MaskError
from videoedit.io.visualize import legend_bar, region_color


def test_overlay_frames_legend_and_prompts(tmp_path):
    frames = np.full((3, 64, 96, 3), 60, np.uint8)
    masks = np.zeros((3, 2, 64, 96), bool)
    masks[:, 0, 10:50, 20:60] = True
    masks[:, 1] = ~masks[:, 0]
    prompts = RegionPrompts.from_mapping(
        {"regions": {"disc": [{"frame": 6, "box": [20, 10, 60, 50], "points": [[40, 30]]}]}}
    )
    out = write_mask_layout(tmp_path / "m", frames, masks, ["disc", "bg"], [4, 6, 8], fps=4, prompts=prompts)
    names = sorted(p.name for p in (out / OVERLAY_FRAMES).iterdir())
    assert names == ["00004.png", "00006.png", "00008.png"]  # named by clip index, like the masks
    assert (out / "overlay.mp4").is_file()
    legend = legend_bar(["disc", "bg"], 96, 64)
    key = np.asarray(Image.open(out / OVERLAY_FRAMES / "00006.png"))
    plain = np.asarray(Image.open(out / OVERLAY_FRAMES / "00004.png"))
    assert key.shape == (64 + legend.shape[0], 96, 3)
    np.testing.assert_array_equal(key[64:], legend)
    color = np.array(region_color(0), np.uint8)
    assert (key[10, 40] == color).all() and (key[30, 40] == color).all()  # box edge, point
    assert not (plain[10, 40] == color).all()  # no marks on frames without prompts
    # the masks folder reads back as before
    assert np.asarray(Image.open(out / "disc" / "00006.png")).max() == 255
    with pytest.raises(MaskError, match="may not be called 'overlay_frames'"):
        write_mask_layout(tmp_path / "n", frames, masks, ["disc", OVERLAY_FRAMES], [4, 6, 8])
