"""The Python API: edit_video end to end (with tracking), compose_config with user config folders."""

import json

import pytest

import videoedit
from tests.conftest import FAST
from videoedit.errors import ConfigError


def test_edit_video_writes_a_result_tree_and_tracks_it(tmp_path):
    result = videoedit.edit_video(
        prompts=[["Spiderman and Polar Bear jogging", "Spiderman", None]],  # None: no prompt for region 2
        experiment="instance_edit",
        overrides=[*FAST, "+tracking=tensorboard"],
        settings={"paths.output_root": str(tmp_path / "out"), "method.guidance_scale": 5.0},
    )
    assert result.output_dir.parent == tmp_path / "out" / "instance_edit"
    assert (result.output_dir / "COMPLETE").is_file()
    assert result.edits["edit0_seed0"].shape == (4, 128, 128, 3)
    listing = json.loads((result.output_dir / "sample" / "edits.json").read_text())
    assert listing[0]["local_prompts"] == ["Spiderman", ""]
    assert result.metrics["method"]["guidance_scale"] == 5.0
    run_name = f"instance_edit_{result.output_dir.name}"  # the run folder relative to the output root
    events = list(
        (tmp_path / "out" / "tensorboard" / "instance_edit" / run_name).glob("events.out.tfevents.*")
    )
    assert events, sorted(p.name for p in (tmp_path / "out" / "tensorboard").rglob("*"))


def test_settings_are_checked_by_key():
    cfg = videoedit.compose_config(["data=video"])
    videoedit.apply_settings(cfg, {"data.path": "/clip.mp4", "data.regions": ["man", "bg"]})
    assert cfg.data.path == "/clip.mp4" and list(cfg.data.regions) == ["man", "bg"]
    with pytest.raises(ConfigError, match=r"Cannot set data\.nope=1: Key 'nope' is not in struct"):
        videoedit.apply_settings(cfg, {"data.nope": 1})


def test_compose_config_takes_user_config_folders(tmp_path):
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "mine.yaml").write_text(
        "# @package _global_\nexperiment_name: mine\nprompts: [a cat]\n"
    )
    cfg = videoedit.compose_config(["+experiment=mine"], config_dirs=[tmp_path])
    assert cfg.experiment_name == "mine" and list(cfg.prompts) == ["a cat"]
    assert cfg.method._target_ == "videoedit.methods.ddim.DDIMMethod"  # the packaged configs still apply
    with pytest.raises(ConfigError, match=r"Config folder .*nowhere does not exist"):
        videoedit.compose_config([], config_dirs=[tmp_path / "nowhere"])


def test_the_package_imports_lightly():
    import subprocess
    import sys

    code = "import sys, videoedit; print('torch' in sys.modules, videoedit.__version__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "0.1.0"]
