"""Pictures that explain themselves: legends, PNG frames beside overlay videos, the user's boxes and
points, comparison grids labelled with prompts."""

import numpy as np
import pytest
from PIL import Image

from videoedit.io.result_tree import RunDirectory
from videoedit.io.video import read_video
from videoedit.io.visualize import (
    add_legend,
    draw_prompts,
    legend_bar,
    overlay_masks,
    prompt_label,
    region_color,
    shorten,
)


def _has_swatch(image: np.ndarray, color: tuple[int, int, int], size: int) -> bool:
    """Whether ``image`` holds at least a ``size x size`` worth of pixels of exactly ``color``."""
    return int((image == np.array(color, np.uint8)).all(-1).sum()) >= size * size


def test_legend_names_every_region_in_its_overlay_colour():
    names = ["left_man", "right_man", "trees", "sky", "ground", "a", "b", "c", "d"]
    bar = legend_bar(names, 160, 128)
    assert bar.dtype == np.uint8 and bar.shape[1] == 160 and bar.shape[0] > 12
    assert bar.shape[0] > legend_bar(names[:1], 160, 128).shape[0]  # wraps onto more lines
    for i in range(len(names)):
        assert _has_swatch(bar, region_color(i), 9), names[i]
    assert region_color(8) == region_color(0)  # 8 colours, cycled
    # the overlay uses the same colours: a region's pixels are 50% frame + 50% its colour
    frames = np.zeros((2, 32, 48, 3), np.uint8)
    masks = np.zeros((2, 2, 32, 48), bool)
    masks[:, 1, :, 24:] = True
    overlay = overlay_masks(frames, masks)
    np.testing.assert_array_equal(
        overlay[0, 0, 30], np.round(0.5 * np.array(region_color(1))).astype(np.uint8)
    )
    with_legend = add_legend(overlay, ["a", "b"])
    assert with_legend.shape[:3] == (2, 32 + legend_bar(["a", "b"], 48, 32).shape[0], 48)
    np.testing.assert_array_equal(with_legend[:, :32], overlay)


def test_boxes_and_points_are_drawn_in_the_region_colour():
    frame = np.full((64, 64, 3), 40, np.uint8)
    color = region_color(2)
    out = draw_prompts(frame, color, box=(10, 12, 50, 40), points=[(30, 30), (20, 50)], labels=[1, 0])
    assert frame.max() == 40  # the input is not drawn on
    assert tuple(out[12, 30]) == color and tuple(out[40, 30]) == color  # top and bottom edges
    assert tuple(out[26, 10]) == color and tuple(out[26, 50]) == color  # left and right edges
    assert tuple(out[30, 30]) == color  # an inside point: a filled disc
    assert tuple(out[50, 20]) == color  # an outside point: a cross through it
    assert tuple(out[50, 24]) != color and tuple(out[46, 20]) != color  # a cross, not a disc
    assert tuple(out[20, 30]) == (40, 40, 40)  # inside the box, away from marks: untouched


def test_prompt_labels_are_shortened_at_words():
    long = "Spiderman and Polar Bear on grass meadow before cherry trees in the morning light"
    assert shorten(long, 40) == "Spiderman and Polar Bear on grass..."
    assert len(shorten(long, 40)) <= 40 and shorten("short one", 40) == "short one"
    assert prompt_label("edit0_seed0", long, 30) == "edit0_seed0: Spiderman and Polar Bear on..."
    assert prompt_label("input", "") == "input" and prompt_label("input", None) == "input"


def test_result_tree_overlay_has_a_legend_and_png_frames(tmp_path):
    run = RunDirectory(tmp_path / "run").start()
    frames = np.random.default_rng(0).integers(0, 255, (3, 64, 64, 3), dtype=np.uint8)
    masks = np.zeros((3, 2, 64, 64), bool)
    masks[:, 0, :32] = True
    masks[:, 1, 32:] = True
    run.write_masks(frames, masks, ["man", "bg"])
    run.mark_complete()  # staged files move into the tree
    png = np.asarray(Image.open(tmp_path / "run" / "infer_samples" / "masked_video" / "00002.png"))
    assert png.shape[0] > 64 and png.shape[1] == 64  # the frame, then the legend
    assert _has_swatch(png[64:], region_color(0), 9) and _has_swatch(png[64:], region_color(1), 9)
    video = read_video(tmp_path / "run" / "infer_samples" / "masked_video.mp4").frames
    assert video.shape[:3] == (3, *png.shape[:2])


def test_comparison_is_labelled_with_the_prompts(tmp_path):
    run = RunDirectory(tmp_path / "run").start()
    videos = [np.zeros((2, 64, 64, 3), np.uint8) for _ in range(3)]
    labels = ["input", "edit0_seed0", "edit1_seed0"]
    plain = read_video(run.write_comparison(videos, labels)).frames
    prompts = [None, "Spiderman and Polar Bear on grass meadow before cherry trees", "a robot"]
    labelled = read_video(run.write_comparison(videos, labels, prompts)).frames
    assert labelled.shape[2] == plain.shape[2]  # same columns
    assert labelled.shape[1] > plain.shape[1]  # taller caption bars: the prompts are wrapped in
    with pytest.raises(ValueError):
        run.write_comparison(videos, labels, prompts[:2])
