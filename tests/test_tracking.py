"""Experiment tracking through accelerate's trackers, checked offline with TensorBoard's event files."""

import numpy as np
import pytest

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from videoedit.errors import ConfigError
from videoedit.tracking import ExperimentTracker, flatten, numeric


def _events(folder):
    """The events written into ``folder`` itself (add_hparams writes its own into a sub-folder)."""
    acc = EventAccumulator(str(folder), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    return acc


def test_tracking_is_off_unless_asked_for(compose):
    assert "tracking" not in compose()
    assert ExperimentTracker.from_config(compose().get("tracking")) is None
    tracker = ExperimentTracker.from_config(compose("+tracking=tensorboard").tracking)
    assert isinstance(tracker, ExperimentTracker) and tracker.names == ["tensorboard"]
    assert tracker.project_name == "default" and tracker.logging_dir.endswith("/tensorboard")


def test_tensorboard_logs_config_metrics_timings_and_frames(tmp_path, compose):
    cfg = compose("+tracking=tensorboard", f"paths.output_root={tmp_path}")
    tracker = ExperimentTracker.from_config(cfg.tracking)
    from omegaconf import OmegaConf

    tracker.start(OmegaConf.to_container(cfg, resolve=True), run_name="run1")
    frames = np.random.default_rng(0).integers(0, 255, (8, 32, 48, 3), dtype=np.uint8)
    metrics = {
        "quality": {"mean": {"warp_error": 0.25, "clip_text": float("nan")}, "skipped": {"clip": "no model"}},
        "timings_s": {"inversion": 1.5, "total": 4.0},
        "peak_memory": {"cpu_max_rss_bytes": 1024},
    }
    tracker.log_run(metrics, {"edit0_seed0": frames}, fps=8)
    tracker.end()
    tracker.end()  # idempotent
    events = _events(tmp_path / "tensorboard" / "default" / "run1")
    scalars = events.Tags()["scalars"]
    assert {
        "quality/mean/warp_error",
        "timings_s/inversion",
        "timings_s/total",
        "peak_memory/cpu_max_rss_bytes",
    } <= set(scalars)
    assert "quality/mean/clip_text" not in scalars  # NaN is not a number to plot
    assert events.Scalars("timings_s/inversion")[0].value == pytest.approx(1.5)
    (image,) = events.Images("edit/edit0_seed0")  # video_frames=4 evenly spaced frames, one grid image
    from io import BytesIO

    from PIL import Image

    grid = np.asarray(Image.open(BytesIO(image.encoded_image_string)))
    assert (image.height, image.width) == grid.shape[:2] and grid.size >= 4 * 32 * 48
    hparams = list((tmp_path / "tensorboard" / "default" / "run1").rglob("hparams.yml"))
    assert hparams and "method/guidance_scale" in hparams[0].read_text()


def test_bad_tracker_settings_are_named(monkeypatch):
    with pytest.raises(ConfigError, match=r"Unknown tracker\(s\) \['tensorboardx'\]"):
        ExperimentTracker(["tensorboardx"], logging_dir="x")
    with pytest.raises(ConfigError, match=r"tracking\.logging_dir is needed"):
        ExperimentTracker(["tensorboard"])
    monkeypatch.setattr("accelerate.tracking.get_available_trackers", lambda: [])
    with pytest.raises(ConfigError, match=r"Tracker\(s\) \['wandb'\] are not installed: `pip install wandb`"):
        ExperimentTracker(["wandb"])


def test_flatten_and_numeric():
    values = {"a": {"b": 1, "c": [1, 2], "d": None}, "e": True, "f": float("inf"), "g": 2.5}
    assert flatten(values) == {"a/b": 1, "a/c": "[1, 2]", "a/d": None, "e": True, "f": float("inf"), "g": 2.5}
    assert numeric(values) == {"a/b": 1.0, "g": 2.5}
