"""Reports over a real 2-job tiny sweep: the table (CSV + Markdown), the per-setting summary, plots and the
labelled comparison grid/video; ``videoedit report``/``compare`` on the command line."""

import csv
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.tiny_sweep import tiny_sweep
from videoedit.cli import main as cli
from videoedit.errors import InputError
from videoedit.io.video import read_video
from videoedit.reports import (
    RunRecord,
    build_report,
    collect_runs,
    comparison_grid,
    edit_rows,
    parse_overrides,
    swept_keys,
)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    return tiny_sweep(tmp_path_factory.getbasetemp() / "tiny_sweep")


@pytest.fixture(scope="module")
def report(sweep, tmp_path_factory):
    return build_report(sweep.folder, out=tmp_path_factory.mktemp("report"))


def _metrics(job: Path) -> dict:
    return json.loads((job / "metrics.json").read_text())


def test_one_row_per_edit_with_the_swept_values_and_metrics(sweep, report):
    assert report.swept == ["method.guidance_scale"]
    with (report.out_dir / "runs.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["job"], r["method.guidance_scale"], r["edit"]) for r in rows] == [
        ("0", "5", "edit0_seed0"),
        ("0", "5", "edit0_seed1"),
        ("1", "7.5", "edit0_seed0"),
        ("1", "7.5", "edit0_seed1"),
    ]
    for row in rows:
        metrics = _metrics(sweep.folder / row["job"])
        scores = metrics["quality"]["edits"][row["edit"]]
        for key in ("warp_error", "warp_mse", "psnr_preserved", "ssim_preserved"):
            assert float(row[key]) == pytest.approx(scores[key]), key
        assert row["method"] == "ddim" and row["frames"] == "3" and row["resolution"] == "64x64"
        assert row["flow_backend"] == "dis" and row["sample_seed"] == row["edit"][-1]
        assert float(row["total_s"]) == pytest.approx(metrics["timings_s"]["total"])
        assert float(row["cpu_peak_gib"]) > 0
    assert "clip_t" not in rows[0] and "clip_model" not in rows[0]  # no CLIP: empty columns left out


def test_the_summary_averages_over_seeds(report):
    assert [(s["method"], s["method.guidance_scale"], s["n"]) for s in report.summary] == [
        ("ddim", 5, 2),
        ("ddim", 7.5, 2),
    ]
    for setting in report.summary:
        members = [r for r in report.rows if r["method.guidance_scale"] == setting["method.guidance_scale"]]
        assert setting["warp_error"] == pytest.approx(np.mean([r["warp_error"] for r in members]))
        # DDIM inversion + regeneration records seed_dependent=false: its seeds are repeats, no spread
        assert {r["seed_dependent"] for r in members} == {False}
        assert setting["seed_dependent"] is False and setting["warp_error_std"] is None


def test_markdown_plots_and_comparison(report):
    text = (report.out_dir / "report.md").read_text()
    assert "Swept: method.guidance_scale." in text
    assert (
        "| job | method.guidance_scale | method | edit | sample_seed | motion_alignment | warp_error |"
        in text
    )
    assert (
        "Units and directions: motion_alignment: -pixels, higher is better; warp_error: 8-bit levels, lower"
        in text
    )
    assert "different settings" not in text  # every run's metrics were made with one setting
    assert "![method.guidance_scale](plots/method.guidance_scale.png)" in text
    with Image.open(report.files["plot:method.guidance_scale"]) as plot:
        assert plot.size[0] > 400
    grid = np.asarray(Image.open(report.files["grid"]))
    # 3 columns (source + 2 jobs) of 64 px with 4-px gaps; a caption bar and 3 frames (rows) of 64 px
    assert grid.shape[1] == 3 * 64 + 2 * 4 and grid.shape[0] > 3 * 64
    video = read_video(report.files["video"]).frames
    assert video.shape[0] == 3 and video.shape[2] >= 3 * 64


def test_a_swept_global_seed_keeps_its_column(tmp_path):
    metrics = {"method": {"name": "ddim"}, "edits": [{"name": "edit0_seed3", "seed": 3}]}
    records = [RunRecord(tmp_path / str(seed), str(seed), {"seed": str(seed)}, metrics) for seed in (42, 43)]
    rows = edit_rows(records, swept_keys(records))
    assert [(r["seed"], r["sample_seed"]) for r in rows] == [(42, 3), (43, 3)]


def test_mixed_metric_settings_are_shown_and_warned_about(sweep, tmp_path, caplog):
    root = tmp_path / "sweep"
    shutil.copytree(sweep.folder, root)
    path = root / "1" / "metrics.json"
    metrics = json.loads(path.read_text())
    metrics["quality"]["settings"]["flow"] = {"backend": "raft", "weights": "/x.pth", "updates": 12}
    path.write_text(json.dumps(metrics))
    report = build_report(root, plots=False, grid=False)
    assert [r["flow_backend"] for r in report.rows] == ["dis", "dis", "raft", "raft"]
    assert "computed with different settings (flow: " in caplog.text
    text = (report.out_dir / "report.md").read_text()
    assert "**Warning: the quality metrics were computed with different settings** (flow: " in text
    assert f"videoedit metrics {root} --flow-backend" in text


def test_labelled_side_by_side_aligns_frames_under_wrapped_captions():
    from videoedit.io.visualize import caption_bar, side_by_side

    videos = [np.full((2, 20, 30, 3), v, dtype=np.uint8) for v in (50, 150)]
    labels = ["a", "a much longer label that wraps over several lines"]
    bars = [caption_bar(label, 30, 20, wrap=True) for label in labels]
    assert bars[1].shape[0] > bars[0].shape[0] and bars[1].shape[1] == 30  # wrapped: taller, same width
    out = side_by_side(videos, labels, gap=2, wrap=True)
    top = bars[1].shape[0]
    assert out.shape == (2, top + 20, 62, 3)
    assert (out[:, top:, :30] == 50).all() and (out[:, top:, 32:] == 150).all()  # frames aligned
    plain = side_by_side(videos, labels, gap=2)  # one-line captions (the result tree's comparison)
    assert plain.shape == (2, max(12, 20 // 16) + 4 + 20, 62, 3)


def test_the_report_command(sweep, tmp_path, capsys):
    assert (
        cli(["report", str(sweep.folder), "--out", str(tmp_path / "r"), "--no-plots", "--frames", "2"]) == 0
    )
    out = capsys.readouterr().out
    assert "4 edits from" in out and "swept: method.guidance_scale" in out
    assert (tmp_path / "r" / "summary.csv").is_file() and not (tmp_path / "r" / "plots").exists()


def test_the_console_script_is_installed(sweep, tmp_path):
    exe = shutil.which("videoedit", path=str(Path(__import__("sys").executable).parent))
    if exe is None:
        pytest.skip("the videoedit console script is not installed (pip install -e .)")
    proc = subprocess.run([exe, "report", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "--max-columns" in proc.stdout


def test_compare_runs_of_separate_commands(sweep, tmp_path, capsys):
    jobs = [str(sweep.folder / "0"), str(sweep.folder / "1")]
    args = ["compare", *jobs, "--labels", "gs 5", "gs 7.5", "--out", str(tmp_path), "--edit", "edit0_seed1"]
    assert cli(args) == 0
    grid = np.asarray(Image.open(tmp_path / "comparison.png"))
    assert grid.shape[1] == 3 * 64 + 2 * 4
    assert cli(["compare", *jobs, "--labels", "one", "--out", str(tmp_path)]) == 2
    assert "2 runs but 1 labels" in capsys.readouterr().err


def test_swept_keys_without_hydra_overrides_come_from_the_configs(tmp_path):
    def record(name, method, cfg):
        return RunRecord(tmp_path / name, name, {}, {"method": {"name": method}}, cfg)

    records = [
        record(
            "a",
            "tokenflow",
            {"seed": 1, "method.batch_size": 8, "method.guidance_scale": 7.5, "paths.x": "a"},
        ),
        record(
            "b", "videograin", {"seed": 1, "method.sreg": 0.3, "method.guidance_scale": 5.0, "paths.x": "b"}
        ),
    ]
    # method-specific keys only say "another method"; paths are not parameters
    assert swept_keys(records) == ["method.guidance_scale"]
    assert parse_overrides(["+experiment=x", "method.guidance_scale=5", "~data.masks_dir"]) == {
        "experiment": "x",
        "method.guidance_scale": "5",
        "data.masks_dir": "<deleted>",
    }


def test_comparison_grid_layout():
    videos = [np.full((5, 20, 30, 3), v, dtype=np.uint8) for v in (0, 100, 200)]
    grid = comparison_grid(videos, ["source", "a long label that wraps", "b"], num_frames=3, gap=2)
    assert grid.shape[1] == 3 * 30 + 2 * 2
    caption = grid.shape[0] - 3 * (20 + 2)
    assert caption > 0
    assert (grid[caption + 2 : caption + 22, 32:62] == 100).all()  # column 2, first frame


def test_a_folder_without_runs(tmp_path):
    with pytest.raises(InputError, match="No finished run under"):
        collect_runs(tmp_path)


# ------------------------------------------------------------------------------------------ issue 15 / 13


def test_unfinished_jobs_of_a_sweep_are_named(sweep, tmp_path, caplog, capsys):
    root = tmp_path / "sweep"
    shutil.copytree(sweep.folder, root)
    (root / "1" / "COMPLETE").unlink()  # killed before the end
    report = build_report(root, plots=False, grid=False)
    assert report.missing == [f"job 1 (method.guidance_scale=7.5): started, not finished ({root / '1'})"]
    assert "1 jobs of the sweep have no finished run" in caplog.text
    shutil.rmtree(root / "1")
    report = build_report(root, plots=False, grid=False)
    assert report.missing == ["job 1 (method.guidance_scale=7.5): not started"]
    text = (report.out_dir / "report.md").read_text()
    assert "**Missing jobs (1)**: the sweep is not finished:" in text
    assert "- job 1 (method.guidance_scale=7.5): not started" in text
    assert build_report(sweep.folder, out=tmp_path / "full", plots=False, grid=False).missing == []
    assert cli(["report", str(root), "--no-plots", "--no-grid"]) == 0
    assert "  missing: job 1 (method.guidance_scale=7.5): not started" in capsys.readouterr().out


def test_force_is_never_a_swept_parameter(tmp_path):
    metrics = {"method": {"name": "ddim"}, "edits": [{"name": "edit0_seed0", "seed": 0}]}
    records = [
        RunRecord(
            tmp_path / "0",
            "0",
            {"method.guidance_scale": "5", "force": "true", "progress_bar": "false"},
            metrics,
        ),
        RunRecord(tmp_path / "1", "1", {"method.guidance_scale": "7.5", "force": "false"}, metrics),
    ]
    assert swept_keys(records) == ["method.guidance_scale"]
    configs = [
        RunRecord(tmp_path / n, n, {}, metrics, {"force": f, "seed": 1})
        for n, f in (("a", True), ("b", False))
    ]
    assert swept_keys(configs) == []


def test_seeds_of_a_deterministic_method_are_reported_as_such(sweep, tmp_path, caplog):
    # the tiny sweep's method (DDIM) records seed_dependent=false and the sweep varies sample_seeds
    assert json.loads((sweep.folder / "0" / "metrics.json").read_text())["method"]["seed_dependent"] is False
    report = build_report(sweep.folder, out=tmp_path / "r", plots=False, grid=False)
    for setting in report.summary:  # two seeds per setting: repeats, not a spread
        assert setting["n"] == 2 and setting["seed_dependent"] is False
        assert setting["warp_error_std"] is None and setting["warp_error"] is not None
    assert len(report.warnings) == 2
    assert (
        "the sweep varies the seed over 2 values, but the method records seed_dependent=false"
        in report.warnings[0]
    )
    assert "seed_dependent=false" in caplog.text
    assert (
        "**Warning (seeds)**: method=ddim, method.guidance_scale=5: the sweep varies"
        in (report.out_dir / "report.md").read_text()
    )
    # a seed-dependent method keeps its spread over the seeds
    root = tmp_path / "sweep"
    shutil.copytree(sweep.folder, root)
    for job in ("0", "1"):
        path = root / job / "metrics.json"
        metrics = json.loads(path.read_text())
        metrics["method"]["seed_dependent"] = True
        path.write_text(json.dumps(metrics))
    spread = build_report(root, plots=False, grid=False)
    assert spread.warnings == []
    for setting in spread.summary:
        members = [r for r in spread.rows if r["method.guidance_scale"] == setting["method.guidance_scale"]]
        assert setting["warp_error_std"] == pytest.approx(np.std([r["warp_error"] for r in members], ddof=1))


def test_every_plot_axis_says_which_way_is_better(report, monkeypatch, tmp_path):
    import matplotlib.figure

    from videoedit.reports import plot_metrics

    labels: list[str] = []
    original = matplotlib.figure.Figure.savefig

    def capture(self, *args, **kwargs):
        labels.extend(ax.get_ylabel() for ax in self.axes)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", capture)
    plot_metrics(report.summary, report.swept, tmp_path / "plots")
    plot_metrics(report.summary, [], tmp_path / "bars")  # nothing numeric swept: bars
    assert "warp error (8-bit levels; lower is better)" in labels
    assert "background PSNR (dB; higher is better)" in labels
    assert all(label.endswith(("lower is better)", "higher is better)")) for label in labels), labels


def test_reconstruction_psnr_is_shown_when_runs_record_it(tmp_path):
    metrics = {
        "method": {"name": "ddim"},
        "edits": [{"name": "edit0_seed0", "seed": 0}],
        "quality": {"reconstruction": {"psnr": 31.5, "definition": "..."}, "edits": {}},
    }
    records = [
        RunRecord(tmp_path / "0", "0", {"seed": "1"}, metrics),
        RunRecord(tmp_path / "1", "1", {"seed": "2"}, {**metrics, "quality": {}}),
    ]
    rows = edit_rows(records, swept_keys(records))
    assert [r["reconstruction_psnr"] for r in rows] == [31.5, None]
    from videoedit.reports import summarize

    assert summarize(rows, ["seed"])[0]["reconstruction_psnr"] == 31.5
