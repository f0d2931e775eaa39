import numpy as np
import pytest
from PIL import Image

from videoedit.errors import MaskError
from videoedit.io.masks import read_masks, write_masks


def test_read_run_two_man_masks(shared_data):
    masks_dir = shared_data / "videograin" / "run_two_man" / "layout_masks"
    masks = read_masks(masks_dir, ["left_man", "right_man", "trees"], [0, 5, 15], (512, 512))
    assert masks.shape == (3, 3, 512, 512) and masks.dtype == bool
    coverage = masks.mean(axis=(0, 2, 3))
    assert 0.1 < coverage[0] < 0.4 and 0.1 < coverage[1] < 0.4  # two people
    assert (masks[:, 0] & masks[:, 1]).mean() < 0.01  # nearly disjoint


def test_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    masks = rng.random((4, 2, 20, 30)) > 0.5
    write_masks(tmp_path, masks, ["a", "b"], [3, 4, 5, 6])
    assert (tmp_path / "a" / "00003.png").is_file()
    np.testing.assert_array_equal(read_masks(tmp_path, ["a", "b"], [3, 4, 5, 6], (20, 30)), masks)


def test_missing_region(tmp_path):
    write_masks(tmp_path, np.ones((1, 1, 8, 8), bool), ["left"], [0])
    with pytest.raises(MaskError, match=r"No mask folder for region\(s\) \['right'\].*it has \['left'\]"):
        read_masks(tmp_path, ["left", "right"], [0], (8, 8))


def test_missing_frame(tmp_path):
    write_masks(tmp_path, np.ones((2, 1, 8, 8), bool), ["left"], [0, 1])
    with pytest.raises(MaskError, match=r"region 'left' for frame 2 is missing: expected .*left/00002\.png"):
        read_masks(tmp_path, ["left"], [0, 1, 2], (8, 8))


def test_mask_of_another_size(tmp_path):
    (tmp_path / "left").mkdir()
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(tmp_path / "left" / "00000.png")
    with pytest.raises(MaskError, match=r"is 12x10 \(WxH\) but the frames are 16x8"):
        read_masks(tmp_path, ["left"], [0], (8, 16))


def test_missing_folder(tmp_path):
    with pytest.raises(MaskError, match="Mask folder not found"):
        read_masks(tmp_path / "nope", ["a"], [0], (8, 8))
