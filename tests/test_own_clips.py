"""A user's own clip in one line: the papercuts of issue 13, VideoGrain with a global prompt only, and
the README's recipe "my mp4 -> propagated masks -> VideoGrain edit" on a DAVIS clip (tiny model)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import FAST, ROOT
from videoedit.data.source import VideoClip
from videoedit.data.synthetic import render_two_figures
from videoedit.edit import edit
from videoedit.errors import ConfigError, ModelLoadError, VideoReadError
from videoedit.io.result_tree import RunDirectory
from videoedit.io.writers import write_mp4
from videoedit.methods.base import parse_edit_requests


@pytest.fixture()
def clip(tmp_path) -> Path:
    """An 8-frame 96x192 mp4 (the generated two-figure scene, not square)."""
    frames = render_two_figures(8, 96, 192)["frames"]
    return write_mp4(tmp_path / "root" / "clips" / "joggers.mp4", frames, 8.0)


# ------------------------------------------------------------------------------------- papercuts


def test_relative_data_path_is_looked_up_in_the_current_folder_then_in_data_root(
    compose, clip, tmp_path, monkeypatch
):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("VIDEOEDIT_DATA_ROOT", str(tmp_path / "root"))
    cfg = compose("data=video", "data.path=clips/joggers.mp4")
    source = VideoClip(**{k: v for k, v in cfg.data.items() if k != "_target_"})
    assert source.path == tmp_path / "root" / "clips" / "joggers.mp4"
    assert source.load().num_frames == 8
    # the current folder wins when the path exists there
    (elsewhere / "clips").mkdir()
    write_mp4(elsewhere / "clips" / "joggers.mp4", render_two_figures(3, 64, 64)["frames"], 8.0)
    assert VideoClip("clips/joggers.mp4", data_root=str(tmp_path / "root")).load().num_frames == 3
    # missing in both: the message names both places and the environment variable
    with pytest.raises(VideoReadError) as err:
        VideoClip("clips/nope.mp4", data_root=str(tmp_path / "root"))
    message = str(err.value)
    assert message.startswith("Video not found: data.path=clips/nope.mp4 is neither in the current folder")
    assert str(elsewhere) in message and str(tmp_path / "root") in message
    assert "VIDEOEDIT_DATA_ROOT" in message
    # masks_dir and conditions follow the same rule
    masks = tmp_path / "root" / "masks" / "a"
    masks.mkdir(parents=True)
    clip_obj = VideoClip(
        "clips/joggers.mp4",
        masks_dir="masks",
        regions=["a"],
        conditions={"openpose": "clips/joggers.mp4"},
        data_root=str(tmp_path / "root"),
    )
    assert clip_obj.masks_dir == tmp_path / "root" / "masks"
    assert Path(clip_obj.conditions["openpose"]).resolve() == elsewhere / "clips" / "joggers.mp4"


def test_resize_keys_are_in_every_video_config_so_no_plus_is_needed(compose, clip):
    for data in ("video", "video_sam", "run_two_man", "wolf", "woman_running"):
        cfg = compose(
            f"data={data}",
            "data.resize.mode=keep_aspect",
            "data.resize.short_side=64",
        )
        assert cfg.data.resize.short_side == 64 and cfg.data.data_root == cfg.paths.data_root
    cfg = compose("data=video", f"data.path={clip}", "data.resize.mode=keep_aspect")
    cfg.data.resize.height, cfg.data.resize.width = 64, 256
    source = VideoClip(**{k: v for k, v in cfg.data.items() if k != "_target_"}).load()
    assert source.size == (64, 128)  # 96x192 fits the 64x256 box as 64x128 (height-bound)
    with pytest.raises(ConfigError, match=r"Unknown data.resize key\(s\) \['shortside'\]"):
        VideoClip(str(clip), resize={"mode": "keep_aspect", "shortside": 64})


def test_an_empty_local_prompt_is_null_on_the_command_line(compose):
    """``null`` needs no quoting in Hydra or the shell; it is the empty local prompt ('' = no prompt)."""
    cfg = compose("prompts=[[two men jogging in a park,men,null]]")
    (request,) = parse_edit_requests(cfg.prompts, [0])
    assert request.prompt == "two men jogging in a park" and request.local_prompts == ("men", "")


def test_the_missing_weights_hint_names_the_current_hub_cli(compose, tmp_path):
    with pytest.raises(ModelLoadError) as err:
        edit(compose("model=sd15", "controlnet=none", *FAST[1:]), tmp_path / "run")
    assert "`hf download stable-diffusion-v1-5/stable-diffusion-v1-5`" in str(err.value)
    assert "huggingface-cli" not in str(err.value)


def test_an_output_root_that_cannot_be_created_names_the_setting(tmp_path, capsys):
    from videoedit import cli

    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(SystemExit) as exit_code:
        cli.main(["run", "model=tiny", f"paths.output_root={blocker / 'outputs'}"])
    assert exit_code.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(
        f"error: Cannot create the output folder {blocker / 'outputs'}: {blocker} is a file"
    )
    assert "VIDEOEDIT_OUTPUT_ROOT" in err and "paths.output_root=<folder>" in err
    assert "Traceback" not in err
    # the Python API says the same
    import videoedit

    with pytest.raises(ConfigError, match=r"Cannot create the output folder .*a_file is a file"):
        videoedit.edit_video(overrides=FAST, settings={"paths.output_root": str(blocker)})


# ---------------------------------------------------------------------------- VideoGrain, global


def test_videograin_edits_a_clip_without_masks_with_a_global_prompt(compose, clip, tmp_path):
    overrides = [
        "method=videograin",
        "model=tiny",
        "controlnet=none",
        "data=video",
        f"data.path={clip}",
        "data.resize.mode=keep_aspect",
        "data.resize.height=64",
        "data.resize.width=128",
        "data.num_frames=4",
        "method.num_inference_steps=2",
        "method.flatten_factors=[]",
        "progress_bar=false",
        "metrics.clip_model=null",
    ]
    result = edit(compose(*overrides, "prompts=[a watercolor painting of two joggers]"), tmp_path / "run")
    assert RunDirectory.is_complete(tmp_path / "run")
    assert result.edits["edit0_seed0"].shape == (4, 64, 128, 3)  # 96x192 fits the box as 64x128
    assert result.metrics["video"]["regions"] == []  # no user regions: nothing written as masks
    assert not (tmp_path / "run" / "masks").exists()
    # local prompts need regions: said before any model loads
    with pytest.raises(ConfigError) as err:
        edit(compose(*overrides, "model=sd15", "prompts=[[two joggers,joggers]]"), tmp_path / "run2")
    assert "needs region masks for the local prompts ['joggers'] of editing prompt 0" in str(err.value)
    assert "give a global prompt only" in str(err.value)


# ------------------------------------------------------------------------- the README recipe


def _readme_recipe() -> list[list[str]]:
    """The two commands of the README's own-clip recipe (the block after 'own-clip recipe')."""
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- own-clip recipe -->", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [c.strip() for c in block.replace("\\\n", " ").split("\n") if c.strip()]
    assert len(commands) == 2, commands
    import shlex

    return [shlex.split(c) for c in commands]


def test_readme_own_clip_recipe_on_a_davis_clip(shared_data, tmp_path):
    """The README's recipe, run as written on DAVIS lucia (8 frames), with the tiny model and a box
    taken from the ground-truth mask of frame 0; the propagated mask must cover the person."""
    from videoedit.io.video import FrameSampling, read_video

    frames = read_video(shared_data / "davis2016" / "JPEGImages" / "lucia", FrameSampling(0, 8)).frames
    write_mp4(tmp_path / "clip.mp4", frames, 8.0)
    gt = np.stack(
        [
            np.asarray(Image.open(shared_data / "davis2016" / "Annotations" / "lucia" / f"{i:05d}.png")) > 0
            for i in range(8)
        ]
    )
    if gt.ndim == 4:
        gt = gt[..., 0]
    ys, xs = np.nonzero(gt[0])
    box = f"{xs.min()},{ys.min()},{xs.max()},{ys.max()}"
    masks_cmd, run_cmd = _readme_recipe()
    # the README's placeholders: the box, and the tiny model + small sizes for this machine
    masks_cmd = [a.replace("X0,Y0,X1,Y1", box) for a in masks_cmd]
    assert masks_cmd[:3] == ["python", "-m", "annotators.masks"]
    assert run_cmd[:2] == ["videoedit", "run"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VIDEOEDIT_OUTPUT_ROOT": str(tmp_path / "outputs")}
    proc = subprocess.run(
        [sys.executable, *masks_cmd[1:]], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    person = np.stack(
        [np.asarray(Image.open(tmp_path / "clip_masks" / "person" / f"{i:05d}.png")) > 0 for i in range(8)]
    )
    iou = (person & gt).sum((1, 2)) / (person | gt).sum((1, 2))
    assert iou.min() > 0.5, iou  # GrabCut + flow propagation without weights
    assert (tmp_path / "clip_masks" / "overlay.mp4").is_file()
    small = [  # the masks cover 8 frames; the edit reads the first 4 (the masks of those are read)
        "model=tiny",
        "data.num_frames=4",
        "data.resize.height=128",
        "data.resize.width=256",
        "method.num_inference_steps=3",
        "progress_bar=false",
        "metrics.clip_model=null",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "videoedit", *run_cmd[1:], *small],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    run = Path(re.search(r"Results written to (\S+)", proc.stdout).group(1))
    assert RunDirectory.is_complete(run)
    listing = json.loads((run / "sample" / "edits.json").read_text())
    assert listing[0]["local_prompts"] == ["robot", ""]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["video"]["regions"] == ["person", "bg"]
    assert (metrics["video"]["height"], metrics["video"]["width"]) == (128, 192)  # keep_aspect in 128x256
    assert "MediapipePose" in metrics["control"]
