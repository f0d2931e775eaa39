"""SAM-2 video propagation, offline, with random-weight SAM-2 models built from the package's own model
config (no checkpoint): the bf16-memory crash (two regions prompted on different frames) in fp32 and under
bf16 autocast, boxes / points / masks, several regions and keyframes, forward and backward passes, scratch
files under the cache root, and the ``data=video_sam`` config keys. Skipped when ``sam2`` is absent, except
the checks that need no model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from omegaconf import OmegaConf
from PIL import Image

from annotators import sam2_video
from annotators.masks import PromptedVideoClip
from annotators.propagation import Sam2VideoPropagator as OldPath
from annotators.sam2_video import (
    Sam2VideoPropagator,
    merge_prompts,
    resolve_sam2_config,
    sam2_available,
)
from videoedit.errors import ConfigError, MaskError, ModelLoadError
from videoedit.io.writers import write_frames

ROOT = Path(__file__).resolve().parents[2]
needs_sam2 = pytest.mark.skipif(not sam2_available(), reason="sam2 not installed (pip extra 'sam2')")

#: a small random SAM-2 (hiera-t config, one block per stage, one memory-attention layer) at 128 px:
#: about a second per frame on 2 shared cores instead of 20
SMALL = [
    "model.image_encoder.trunk.stages=[1,1,1,1]",
    "model.image_encoder.trunk.global_att_blocks=[]",
    "model.memory_attention.num_layers=1",
    "model.memory_attention.layer.dim_feedforward=256",
]
H, W = 48, 64


def _frames(num: int, seed: int = 0) -> np.ndarray:
    """A bright square moving right over a darker smooth texture, ``(num, H, W, 3)`` uint8."""
    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 120, (H // 8, W // 8, 3)).astype(np.uint8)
    bg = np.asarray(Image.fromarray(small).resize((W, H), Image.BICUBIC))
    out = []
    for t in range(num):
        f = bg.copy()
        f[14:34, 8 + 4 * t : 28 + 4 * t] = (230, 200, 60)
        out.append(f)
    return np.stack(out)


def test_old_import_path_still_works():
    assert OldPath is Sam2VideoPropagator


def test_without_the_package_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(sam2_video, "sam2_available", lambda: False)
    with pytest.raises(
        ModelLoadError, match=r'pip install --no-build-isolation -c constraints.txt -e "\.\[sam2\]"'
    ):
        Sam2VideoPropagator("sam2.1_hiera_t", "random")


def test_merge_prompts_per_keyframe():
    mask_a = np.zeros((4, 5), bool)
    mask_a[0] = True
    mask_b = np.zeros((4, 5), bool)
    mask_b[:, 0] = True
    merged = merge_prompts(
        "man",
        [
            {"position": 2, "points": [[1, 2]], "labels": [1]},
            {"position": 0, "box": [0, 0, 3, 3]},
            {"position": 2, "points": [[3, 3], [0, 1]], "labels": [0, 1], "box": [1, 1, 4, 4]},
            {"position": 3, "mask": mask_a},
            {"position": 3, "mask": mask_b},
        ],
    )
    assert [p.position for p in merged] == [0, 2, 3]
    np.testing.assert_array_equal(merged[1].points, [[1, 2], [3, 3], [0, 1]])
    np.testing.assert_array_equal(merged[1].labels, [1, 0, 1])
    np.testing.assert_array_equal(merged[1].box, [1, 1, 4, 4])
    np.testing.assert_array_equal(merged[2].mask, mask_a | mask_b)
    assert merged[0].points is None and merged[0].mask is None
    with pytest.raises(MaskError, match="Region 'man' has two boxes on keyframe 0: SAM-2 takes one box"):
        merge_prompts("man", [{"position": 0, "box": [0, 0, 1, 1]}, {"position": 0, "box": [0, 0, 2, 2]}])


@needs_sam2
def test_import_leaves_hydra_as_it_was():
    """``import sam2`` initialises Hydra's global state; ``import_sam2`` does not leave it so."""
    code = (
        "from hydra.core.global_hydra import GlobalHydra\n"
        "{imp}\n"
        "print(GlobalHydra.instance().is_initialized())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    raw = subprocess.run(
        [sys.executable, "-c", code.format(imp="import sam2")], capture_output=True, text=True, env=env
    )
    ours = subprocess.run(
        [
            sys.executable,
            "-c",
            code.format(imp="from annotators.sam2_video import import_sam2; import_sam2()"),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert raw.stdout.strip() == "True", raw.stderr
    assert ours.stdout.strip() == "False", ours.stderr


@needs_sam2
def test_model_configs_and_checkpoints_resolve():
    tiny = resolve_sam2_config("configs/sam2.1/sam2.1_hiera_t.yaml")
    assert tiny.is_file() and tiny.parts[-3:] == ("configs", "sam2.1", "sam2.1_hiera_t.yaml")
    assert resolve_sam2_config("sam2.1_hiera_t") == tiny
    assert resolve_sam2_config("sam2.1/sam2.1_hiera_t.yaml") == tiny
    assert resolve_sam2_config(str(tiny)) == tiny
    assert resolve_sam2_config(None, "/weights/sam2.1_hiera_small.pt").name == "sam2.1_hiera_s.yaml"
    assert resolve_sam2_config("", "sam2_hiera_large.pt").parts[-2:] == ("sam2", "sam2_hiera_l.yaml")
    with pytest.raises(
        ConfigError, match=r"SAM-2 model config 'hiera_xl' not found: give a YAML file or one of \["
    ):
        resolve_sam2_config("hiera_xl")
    with pytest.raises(
        ConfigError, match=r"sam2_config is not set and the checkpoint name 'mine.pt' is not one"
    ):
        resolve_sam2_config(None, "mine.pt")


@needs_sam2
def test_bad_settings_fail_before_any_model(tmp_path):
    with pytest.raises(
        ModelLoadError, match=r"SAM-2 checkpoint not found: .*nope\.pt\. Download SAM-2 weights"
    ):
        Sam2VideoPropagator("sam2.1_hiera_t", str(tmp_path / "nope.pt"))
    with pytest.raises(ModelLoadError, match=r"SAM-2 checkpoint not found: \(none given\)"):
        Sam2VideoPropagator("sam2.1_hiera_t", None)
    with pytest.raises(ConfigError, match="sam2_dtype must be auto, bfloat16, float16, float32; got 'fp8'"):
        Sam2VideoPropagator("sam2.1_hiera_t", "random", dtype="fp8")
    bad = tmp_path / "sam2.1_hiera_tiny.pt"
    torch.save({"model": {"w": torch.zeros(1)}}, bad)
    prop = Sam2VideoPropagator(None, str(bad), "cpu", image_size=128, model_overrides=SMALL)
    with pytest.raises(
        ModelLoadError, match=r"Could not load SAM-2 weights .* Check that sam2_config is the config"
    ):
        _ = prop.model


def _record_memory_dtypes(prop: Sam2VideoPropagator) -> list[tuple[torch.dtype, torch.dtype]]:
    """``(memory dtype, query dtype)`` of every memory-attention call, as SAM-2 passes them (a pre-hook
    registered before the propagator's own cast)."""
    seen: list[tuple[torch.dtype, torch.dtype]] = []

    def hook(module, args, kwargs):
        seen.append((kwargs["memory"].dtype, kwargs["curr"][0].dtype))

    prop.model.memory_attention.register_forward_pre_hook(hook, with_kwargs=True)
    return seen


@needs_sam2
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_two_regions_prompted_on_different_frames(tmp_path, monkeypatch, dtype):
    """The reported crash: SAM-2's bf16 memories met fp32 queries. In fp32 our cast handles it; under
    bf16 autocast (SAM-2's own usage) the linear layers cast for themselves."""
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    frames = _frames(3)
    prop = Sam2VideoPropagator(
        "sam2.1_hiera_t",
        "random",
        "cpu",
        dtype=dtype,
        image_size=128,
        cache_root=tmp_path / "cache",
        model_overrides=SMALL,
    )
    seen = _record_memory_dtypes(prop)
    out = prop.propagate_prompts(
        frames,
        [
            [{"position": 0, "box": [8, 14, 28, 34]}],
            [{"position": 1, "points": [[50.0, 40.0]], "labels": [1]}],
        ],
    )
    assert out.shape == (3, 2, H, W) and out.dtype == bool
    assert prop.last_passes.forward == [0, 1, 2] and prop.last_passes.backward == []
    with pytest.raises(MaskError, match=r"Region 'man': keyframe position 3 outside 0\.\.2"):
        prop.propagate_prompts(frames, [[{"position": 3, "box": [8, 14, 28, 34]}]], ["man"])
    with pytest.raises(MaskError, match="Region 'man' has no keyframe prompt"):
        prop.propagate_prompts(frames, [[]], ["man"])
    if dtype == "float32":  # the situation that crashed: bf16 memory, fp32 queries
        assert (torch.bfloat16, torch.float32) in seen
    assert not list((tmp_path / "tmp").iterdir())  # nothing in $TMPDIR
    assert not list(
        (tmp_path / "cache" / "tmp").iterdir()
    )  # the frame folder, under <cache_root>/tmp, is removed


@needs_sam2
def test_video_sam_data_config_propagates_boxes_points_and_masks(compose, tmp_path, monkeypatch):
    """``data=video_sam`` with ``propagation=sam2``: three regions (a box; points on two keyframes; a mask
    image on the last frame), forward from the first prompted frame and backward to frame 0."""
    from videoedit.edit import build

    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    frames = _frames(5)
    write_frames(tmp_path / "clip", frames)
    mask = np.zeros((H, W), np.uint8)
    mask[30:46, 40:62] = 255
    Image.fromarray(mask).save(tmp_path / "ground_00004.png")
    spec = {
        "regions": {
            "square": [{"frame": 1, "box": [12, 14, 32, 34]}],
            "left": [
                {"frame": 2, "points": [[4, 4], [6, 40]], "labels": [1, 1]},
                {"frame": 3, "points": [[5, 20]], "labels": [1]},
            ],
            "ground": [{"frame": 4, "mask": "ground_00004.png"}],
        },
        "background": "bg",
    }
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    cfg = compose(
        "data=video_sam",
        f"data.path={tmp_path / 'clip'}",
        f"data.mask_builder.prompts={tmp_path / 'p.yaml'}",
        "data.mask_builder.propagation=sam2",
        "data.mask_builder.sam2_checkpoint=random",
        "data.mask_builder.sam2_config=configs/sam2.1/sam2.1_hiera_t.yaml",
        "data.mask_builder.sam2_image_size=128",
        "data.mask_builder.device=cpu",
        "data.resize.mode=none",
        f"paths.cache_root={tmp_path / 'cache'}",
    )
    OmegaConf.update(cfg, "data.mask_builder.sam2_model_overrides", SMALL, force_add=True)
    clip = build(cfg.data, "data")
    assert isinstance(clip, PromptedVideoClip)
    prop = clip.mask_builder.sam2
    assert prop.dtype == torch.float32 and prop.settings()["config"] == "sam2.1_hiera_t.yaml"
    assert prop.cache_root == tmp_path / "cache"  # the clip's cache root, passed down
    folders = []
    real_init = prop.model.init_state

    def init_state(video_path, **kwargs):
        folders.append(Path(video_path))
        assert sorted(p.name for p in Path(video_path).iterdir()) == [f"{i:05d}.jpg" for i in range(5)]
        return real_init(video_path=video_path, **kwargs)

    monkeypatch.setattr(prop.model, "init_state", init_state)
    source = clip.load()
    assert source.regions == ["square", "left", "ground", "bg"]
    assert tuple(source.masks.shape) == (5, 4, H, W)
    assert prop.last_passes.forward == [1, 2, 3, 4] and prop.last_passes.backward == [1, 0]
    # a mask prompt is SAM-2's output on its own frame (use_mask_input_as_output_without_sam)
    ground = source.masks[4, 2].numpy()
    given = mask > 0
    assert (ground & given).sum() / (ground | given).sum() > 0.9
    # the background region covers exactly what no prompted region covers
    masks = source.masks.numpy()
    np.testing.assert_array_equal(masks[:, 3], ~masks[:, :3].any(axis=1))
    # scratch frames under the cache root, removed; nothing in $TMPDIR
    assert folders and folders[0].parent == tmp_path / "cache" / "tmp"
    assert not folders[0].exists() and not list((tmp_path / "tmp").iterdir())
    # cached: the second load does not run SAM-2
    again = build(cfg.data, "data")
    again.mask_builder.sam2.propagate_prompts = lambda *a, **k: pytest.fail("SAM-2 ran again")
    np.testing.assert_array_equal(again.load().masks.numpy(), masks)
