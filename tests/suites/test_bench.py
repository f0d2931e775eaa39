"""``videoedit bench``: the spec, the job configs (composed by Hydra as the runs see them), a real run of the
synthetic suite on the tiny model (leaderboard values against metrics.json, cost relative to the reference),
resume, and missing jobs."""

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.conftest import ROOT
from videoedit.errors import ConfigError, InputError
from videoedit.suites import load_suite
from videoedit.suites.bench import (
    check_methods,
    config_groups,
    job_config,
    load_spec,
    parse_spec,
    prepare,
    split_overrides,
)
from videoedit.suites.leaderboard import build_leaderboard


def test_the_spec_names_what_is_wrong():
    base = {
        "suite": "synthetic",
        "backbones": {
            "sd": {"model": "tiny", "reference": "sample"},
            "wan": {
                "model": "wan_tiny",
                "reference": "sample",
                "reference_overrides": ["method.guidance_scale=5"],
            },
        },
        "methods": {"videograin": {}},
    }
    spec = parse_spec(base)
    assert spec.labels == ["videograin", "sample-sd"]  # the reference of each backbone used runs too
    assert spec.is_reference("sample-sd") and not spec.is_reference("videograin")
    assert spec.method("sample-sd").method == "sample" and spec.method("sample-sd").backbone == "sd"
    both = parse_spec({**base, "methods": {"videograin": {}, "flowedit": {"backbone": "wan"}}})
    assert both.labels == ["videograin", "flowedit", "sample-sd", "sample-wan"]
    assert both.method("sample-wan").overrides == ["method.guidance_scale=5"]
    with pytest.raises(
        ConfigError, match=r"methods.sample-sd: the label is taken by a backbone's reference runs"
    ):
        parse_spec({**base, "methods": {"sample-sd": {}}})
    with pytest.raises(ConfigError, match=r"backbones.sd has unknown keys \['steps'\]"):
        parse_spec({**base, "backbones": {"sd": {"model": "tiny", "reference": "sample", "steps": 2}}})
    with pytest.raises(ConfigError, match=r"bench spec: unknown keys \['method'\]"):
        parse_spec({**base, "method": "x"})
    with pytest.raises(
        ConfigError, match=r"methods.videograin.backbone=xl is not one of the backbones \['sd', 'wan'\]"
    ):
        parse_spec({**base, "methods": {"videograin": {"backbone": "xl"}}})
    with pytest.raises(ConfigError, match=r"backbones.sd needs `model` \(a model config\) and `reference`"):
        parse_spec({**base, "backbones": {"sd": {"model": "tiny"}}})
    # a method on a backbone family it does not support stops the bench before any job
    with pytest.raises(
        ConfigError,
        match=r"bench: method videograin \(label videograin\) does not run on backbones.wan \(model wan_tiny, "
        r"family 'wan'\): it runs on sd",
    ):
        prepare(parse_spec({**base, "methods": {"videograin": {"backbone": "wan"}}}), "/nowhere")
    with pytest.raises(ConfigError, match=r"methods.videograin has unknown keys \['steps'\]"):
        parse_spec({**base, "methods": {"videograin": {"steps": 2}}})
    with pytest.raises(ConfigError, match=r"overrides must be a list of Hydra overrides"):
        parse_spec({**base, "overrides": "data.num_frames=3"})
    with pytest.raises(InputError, match=r"no bench spec 'nope': give a YAML file or one of .*synthetic"):
        load_spec("nope")
    assert load_spec("synthetic", ["max_clips=1"]).max_clips == 1


def test_overrides_split_into_group_choices_and_values():
    groups = config_groups()
    assert {"model", "data", "method", "controlnet", "annotator"} <= groups
    choices, values = split_overrides(
        [
            "controlnet=none",
            "annotator=midas",
            "method.batch_size=2",
            "+data.conditions.depth=x.mp4",
            "data.stride=[1]",
        ],
        groups,
    )
    assert choices == {"controlnet": "none", "annotator@_global_.annotator": "midas"}
    assert values == {"method": {"batch_size": 2}, "data": {"conditions": {"depth": "x.mp4"}, "stride": [1]}}
    with pytest.raises(ConfigError, match=r"Hydra settings go after `--`"):
        split_overrides(["hydra/launcher=slurm"], groups)


def test_job_configs_compose_with_the_right_precedence(tmp_path, compose):
    spec = parse_spec(
        {
            "suite": "videograin",
            "backbones": {
                "sd": {
                    "model": "tiny",
                    "reference": "sample",
                    "overrides": ["data.num_frames=4", "controlnet=none"],
                }
            },
            "methods": {"videograin": {"overrides": ["data.num_frames=5", "method.inject_step=3"]}},
            "overrides": ["method.num_inference_steps=2"],
            "sample_seeds": [0, 1],
        }
    )
    suite = load_suite("videograin", tmp_path).select(clips=["class_car_posche"])
    clip = suite.clips[0]
    node = job_config(spec, "videograin", clip, config_groups())
    # clip < backbone < method < every-job overrides
    assert node["defaults"] == [
        {"override /model": "tiny"},
        {"override /data": "video"},
        {"override /method": "videograin"},
        {"override /controlnet": "none"},  # the backbone's choice wins over the clip's depth ...
    ]  # ... and without a ControlNet the clip's annotator (zoe) has nothing to annotate for
    assert node["data"]["num_frames"] == 5 and node["method"]["inject_step"] == 3
    assert node["method"]["use_pnp"] is True  # the official VideoGrain settings of this clip
    assert node["bench"]["clip"] == "class_car_posche" and node["bench"]["reference"] is False
    spec.backbones["sd"].overrides = ["data.num_frames=4"]  # the clip's own ControlNet and annotator
    official = job_config(spec, "videograin", clip, config_groups())["defaults"]
    assert official[3:] == [
        {"override /controlnet": "depth"},
        {"override /annotator@_global_.annotator": "zoe"},
    ]
    spec.backbones["sd"].overrides = ["data.num_frames=4", "controlnet=none"]
    ref = job_config(spec, "sample-sd", clip, config_groups())
    assert "use_pnp" not in ref.get("method", {}) and ref["bench"]["reference"] is True
    assert {"override /method": "sample"} in ref["defaults"] and ref["bench"]["label"] == "sample-sd"
    # what the run sees: Hydra composes the written file
    bench = prepare(spec, tmp_path / "bench", check=False)
    bench.suite = suite
    bench.write_configs()
    cfg = compose(
        f"hydra.searchpath=[file://{bench.config_dir('videograin')}]", "+bench_clip=class_car_posche"
    )
    assert cfg.method._target_.endswith("VideoGrainMethod") and cfg.model.get("seed") is not None  # tiny
    assert (
        cfg.data.num_frames == 5 and cfg.method.num_inference_steps == 2 and list(cfg.sample_seeds) == [0, 1]
    )
    assert cfg.controlnet.condition_type is None and cfg.negative_prompt == "jittery"
    assert cfg.prompts[0][1] == "A red porsche car" and cfg.cache_inversion is False
    with pytest.raises(
        Exception, match=r"bench_clip/class_wolf_wolf"
    ):  # a clip of another bench is not there
        compose(f"hydra.searchpath=[file://{bench.config_dir('videograin')}]", "+bench_clip=class_wolf_wolf")


def test_a_suite_with_missing_files_stops_before_any_run(tmp_path):
    with pytest.raises(
        InputError, match=r"the tgve suite runs on your downloaded copy of its videos: give its folder"
    ):
        prepare(load_spec("tgve"), tmp_path / "out")
    spec = load_spec("synthetic", ["suite=tgve", f"suite_root={tmp_path}", "clips=[bmx-rider]"])
    with pytest.raises(
        InputError, match=r"LOVEU-TGVE-2023: 1 of 1 clips have missing files:\n  DAVIS_480p/bmx-rider"
    ):
        prepare(spec, tmp_path / "out")
    spec = load_spec("synthetic", ["methods={sample_x: {}}"])
    with pytest.raises(
        ConfigError, match=r"bench: method 'sample_x' \(label sample_x\) has no configs/method/sample_x.yaml"
    ):
        prepare(spec, tmp_path / "out")


# ------------------------------------------------------------------------------------------ a real bench


def _env(base: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "VIDEOEDIT_CACHE_ROOT": str(base / "cache"),
        "VIDEOEDIT_OUTPUT_ROOT": str(base / "outputs"),
    }


def _bench(base: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "videoedit.cli",
        "bench",
        "--config",
        "synthetic",
        "--out",
        str(base / "bench"),
        *args,
    ]
    return subprocess.run(cmd, cwd=ROOT, env=_env(base), capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def synthetic_bench(tmp_path_factory):
    base = tmp_path_factory.mktemp("bench")
    proc = _bench(base)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return base / "bench", proc.stdout


def _rows(path: Path) -> list[dict]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_the_synthetic_bench_writes_a_leaderboard(synthetic_bench):
    folder, out = synthetic_bench
    assert "leaderboard: 4 methods, 16 edits, 0 missing jobs" in out
    board = {r["method"]: r for r in _rows(folder / "leaderboard" / "leaderboard.csv")}
    assert list(board) == ["flowedit", "videograin", "sample-sd", "sample-wan"]  # the references last
    assert [board[k]["backbone"] for k in board] == ["wan", "sd", "sd", "wan"]
    edits = _rows(folder / "leaderboard" / "edits.csv")
    assert len(edits) == 16 and {(r["clip"], r["edit"]) for r in edits} == {
        (c, e) for c in ("figures_a", "figures_b") for e in ("global", "layout")
    }

    def metrics(label: str, clip: str) -> dict:
        return json.loads((folder / "runs" / label / clip / "metrics.json").read_text())

    clips = ("figures_a", "figures_b")
    for label in board:
        runs = [metrics(label, c) for c in clips]
        # every metric: the mean over the 4 edits of what the runs recorded
        for key in ("warp_error", "motion_alignment"):
            values = [m["quality"]["edits"][e][key] for m in runs for e in m["quality"]["edits"]]
            assert float(board[label][key]) == pytest.approx(sum(values) / 4, rel=1e-6), (label, key)
        kept = [m["quality"]["edits"]["edit1_seed0"]["psnr_preserved"] for m in runs]  # layout edits only
        assert float(board[label]["psnr_preserved"]) == pytest.approx(sum(kept) / 2, rel=1e-6)
    # the reconstruction check of the editors (plain sampling has none)
    psnr = [metrics("videograin", c)["quality"]["reconstruction"]["psnr"] for c in clips]
    assert float(board["videograin"]["reconstruction_psnr"]) == pytest.approx(sum(psnr) / 2, rel=1e-6)
    assert board["sample-sd"]["reconstruction_psnr"] == ""

    # cost relative to plain sampling of the same backbone on the same clip
    def latency(m: dict) -> float:
        return (m["timings_s"]["inversion"] + sum(e["seconds"] for e in m["edits"])) / len(m["edits"])

    for label, ref in (("videograin", "sample-sd"), ("flowedit", "sample-wan")):
        ratios = [latency(metrics(label, c)) / latency(metrics(ref, c)) for c in clips]
        assert float(board[label]["latency_rel"]) == pytest.approx(sum(ratios) / 2, rel=1e-6), label
        assert float(board[ref]["latency_rel"]) == 1.0 and float(board[ref]["memory_rel"]) == 1.0
        assert float(board[label]["peak_memory_gib"]) > 0
    text = (folder / "leaderboard" / "leaderboard.md").read_text()
    assert "| sample-sd (reference) | sd | 2 | 4 |" in text and "| flowedit | wan | 2 | 4 |" in text
    # every metric is present or marked unavailable with its reason
    assert "- `clip_t`: openai/clip-vit-large-patch14 is not in the local Hugging Face cache" in text
    assert "- `pick_score`: yuvalkirstain/PickScore_v1 is not in the local Hugging Face cache" in text
    assert "- `lpips_preserved`: the LPIPS alex backbone weights were not found" in text
    assert "warp_error (↓)" in text and "motion_alignment (↑)" in text and "reconstruction_psnr (↑)" in text
    assert (folder / "leaderboard" / "plots" / "metrics.png").stat().st_size > 10_000
    assert (folder / "leaderboard" / "plots" / "cost.png").is_file()
    recorded = OmegaConf.load(folder / "runs" / "flowedit" / "figures_b" / "config.yaml")
    assert (
        recorded.bench.clip_id == "figures_b" and recorded.data.pan == 3.0 and recorded.data.num_frames == 5
    )
    reference = OmegaConf.load(folder / "runs" / "sample-wan" / "figures_b" / "config.yaml")
    assert reference.method.guidance_scale == 5.0 and reference.method.num_inference_steps == 2


def test_resume_skips_finished_jobs_and_missing_jobs_are_named(synthetic_bench, tmp_path):
    folder, _ = synthetic_bench
    copy = tmp_path / "bench"
    shutil.copytree(folder, copy)
    before = (copy / "runs" / "flowedit" / "figures_a" / "metrics.json").read_bytes()
    proc = _bench(tmp_path, "--methods", "flowedit")  # flowedit and its reference, sample-wan
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("Already complete, skipped") == 4
    assert (copy / "runs" / "flowedit" / "figures_a" / "metrics.json").read_bytes() == before
    # a job killed before COMPLETE, a job never started
    (copy / "runs" / "videograin" / "figures_a" / "COMPLETE").unlink()
    shutil.rmtree(copy / "runs" / "videograin" / "figures_b")
    board = build_leaderboard(copy)
    assert board.missing == [
        f"videograin on figures_a: started, not finished (see {copy}/runs/videograin/figures_a/run.log)",
        "videograin on figures_b: not started",
    ]
    assert [s["method"] for s in board.summary] == ["flowedit", "sample-sd", "sample-wan"]
    assert "## Missing jobs (2)" in (copy / "leaderboard" / "leaderboard.md").read_text()
    proc = _bench(tmp_path, "--leaderboard-only")
    assert proc.returncode == 1 and "missing: videograin on figures_b: not started" in proc.stdout


@pytest.mark.parametrize("name", ["synthetic", "tgve", "v2vbench", "five", "videograin"])
def test_the_shipped_specs_name_existing_methods_and_models(name, tmp_path):
    from videoedit.config import CONFIG_DIR

    spec = load_spec(name)
    for label in spec.labels:
        assert (CONFIG_DIR / "method" / f"{spec.method(label).method}.yaml").is_file(), label
    for key, backbone in spec.backbones.items():
        assert (CONFIG_DIR / "model" / f"{backbone.model}.yaml").is_file()
        assert backbone.reference == "sample" and spec.reference_label(key) in spec.labels
    check_methods(spec)  # every method runs on its backbone's family


def test_a_failed_jobs_error_is_quoted_in_the_missing_list(tmp_path):
    from videoedit.suites.leaderboard import collect, job_errors

    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "videograin.log").write_text(
        "[2026-12-02 07:19:40,272][HYDRA] \t#0 : +bench_clip=DAVIS_480p__bmx-rider\n"
        "error: Method 'videograin' needs region masks but the data has none: set data.masks_dir.\n"
        "[2026-12-02 07:19:41,272][HYDRA] \t#1 : +bench_clip=DAVIS_480p__judo\n"
    )
    assert job_errors(tmp_path, "videograin") == {
        "DAVIS_480p__bmx-rider": "Method 'videograin' needs region masks but the data has none: set data.masks_dir."
    }
    for clip in ("DAVIS_480p__bmx-rider", "DAVIS_480p__judo"):
        path = tmp_path / "configs" / "videograin" / "bench_clip" / f"{clip}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"bench: {{clip_id: {clip.replace('__', '/')}}}\n")
    (tmp_path / "runs" / "videograin" / "DAVIS_480p__bmx-rider").mkdir(parents=True)
    runs, missing = collect(tmp_path)
    assert runs == [] and missing == [
        f"videograin on DAVIS_480p/bmx-rider: started, not finished (see {tmp_path}/runs/videograin/"
        "DAVIS_480p__bmx-rider/run.log): error: Method 'videograin' needs region masks but the data has none: "
        "set data.masks_dir.",
        "videograin on DAVIS_480p/judo: not started",
    ]


def test_a_tgve_clip_from_the_users_files(shared_data, tmp_path):
    """The TGVE path end to end on the tiny model: a DAVIS sequence stands in for the downloaded bmx-rider frames."""
    frames = tmp_path / "tgve" / "DAVIS_480p" / "480p_frames"
    frames.mkdir(parents=True)
    (frames / "bmx-rider").symlink_to(shared_data / "davis2016" / "JPEGImages" / "blackswan")
    proc = _bench(
        tmp_path,
        "--suite",
        "tgve",
        "--suite-root",
        str(tmp_path / "tgve"),
        "--clips",
        "bmx-rider",
        "--edits",
        "style,object",
        "--set",
        "methods.ddim={}",  # a plain-prompt editor on the SD backbone (VideoGrain needs masks)
        "--methods",
        "ddim",
        "--set",
        "backbones.sd.overrides=[data.num_frames=3,data.resize.height=64,data.resize.width=64,controlnet=none]",
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [r for r in _rows(tmp_path / "bench" / "leaderboard" / "edits.csv") if r["method"] == "ddim"]
    assert [(r["clip"], r["edit"], r["prompt"]) for r in rows] == [
        ("DAVIS_480p/bmx-rider", "style", "A person does a trick on a BMX bike at a skatepark, grayscale."),
        ("DAVIS_480p/bmx-rider", "object", "A person does a trick on a unicycle at a skatepark."),
    ]
    recorded = OmegaConf.load(tmp_path / "bench" / "runs" / "ddim" / "DAVIS_480p__bmx-rider" / "config.yaml")
    assert (
        recorded.data.prompt == "A person does a trick on a BMX bike at a skatepark."
    )  # the inversion prompt
    assert recorded.controlnet.condition_type is None and recorded.data.num_frames == 3
    board = {r["method"]: r for r in _rows(tmp_path / "bench" / "leaderboard" / "leaderboard.csv")}
    assert list(board) == ["ddim", "sample-sd"] and float(board["sample-sd"]["latency_rel"]) == 1.0
