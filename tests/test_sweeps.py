"""Sweeps at scale: the joblib launcher (parallel workers, one sweep folder), resuming (finished jobs are
skipped, force=true redoes them, a changed config is an error), the SLURM launcher config, and
sweep_split=jobs under torchrun (each job on one process, no overlap)."""

import json
import re
import shutil
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from tests.tiny_sweep import SWEPT, TINY, run, sweep_env, tiny_sweep
from videoedit.config import compose_config
from videoedit.edit import edit
from videoedit.errors import ConfigError
from videoedit.io.result_tree import RunDirectory
from videoedit.sweeps import (
    SingleProcess,
    config_differences,
    finished_run,
    job_owner,
    runs_jobs_alone,
)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    return tiny_sweep(tmp_path_factory.getbasetemp() / "tiny_sweep")


def test_the_joblib_launcher_runs_the_jobs_in_workers_into_one_sweep_folder(sweep):
    assert "Joblib.Parallel(n_jobs=2,backend=loky,prefer=processes" in sweep.output
    jobs = sorted(p.name for p in sweep.folder.iterdir() if p.is_dir())
    assert jobs == ["0", "1"]  # the run_id resolver gives every worker the same sweep folder
    scales = [
        json.loads((sweep.folder / j / "metrics.json").read_text())["method"]["guidance_scale"] for j in jobs
    ]
    assert scales == [5.0, 7.5]
    assert all(RunDirectory.is_complete(sweep.folder / j) for j in jobs)


def test_an_interrupted_sweep_resumes(sweep, tmp_path):
    # the same sweep, moved elsewhere, with job 1 unfinished
    copy = tmp_path / "outputs" / "tiny_sweep" / "multirun" / "sweep0"
    shutil.copytree(sweep.folder, copy)
    (copy / "1" / "COMPLETE").unlink()
    before = (copy / "0" / "metrics.json").read_bytes()
    env = {**sweep_env(tmp_path), "VIDEOEDIT_CACHE_ROOT": sweep.env["VIDEOEDIT_CACHE_ROOT"]}
    proc = run([sys.executable, "run.py", "-m", *TINY, *SWEPT], env)  # VIDEOEDIT_RUN_ID=sweep0: same folder
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"Already complete, skipped (force=true to redo): {(copy / '0').resolve()}" in proc.stdout
    assert f"Results written to {(copy / '1').resolve()}" in proc.stdout
    assert (copy / "0" / "metrics.json").read_bytes() == before
    redone = json.loads((copy / "1" / "metrics.json").read_text())
    assert RunDirectory.is_complete(copy / "1") and redone["inversion"]["cache"] == "hit"


def test_finished_runs_are_recognised_by_their_config(sweep):
    job = sweep.folder / "0"
    same = compose_config([*TINY, "method.guidance_scale=5", "force=true", "metrics.enabled=false"])
    assert finished_run(same, job)["method"]["guidance_scale"] == 5.0  # output/cache roots moved: same run
    with pytest.raises(ConfigError, match=r"another config \(method.guidance_scale: 5 -> 7.5\)"):
        finished_run(compose_config([*TINY, "method.guidance_scale=7.5"]), job)
    assert finished_run(same, sweep.folder / "missing") is None


def _recorded(tmp_path: Path, cfg) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return path


def test_settings_on_one_side_only_are_differences(tmp_path):
    recorded = _recorded(tmp_path, compose_config(TINY))
    assert config_differences(compose_config(TINY), recorded) == []
    added = compose_config([*TINY, "+data.conditions.openpose=/x", "+method.foo=1"])
    assert config_differences(added, recorded) == [
        "data.conditions.openpose: <absent> -> '/x'",
        "method.foo: <absent> -> 1",
    ]
    # ... and the other way round: a recorded setting the new config drops
    assert config_differences(compose_config(TINY), _recorded(tmp_path, added)) == [
        "data.conditions.openpose: '/x' -> <absent>",
        "method.foo: 1 -> <absent>",
    ]


def test_an_option_added_by_a_code_update_at_its_default_is_no_difference(tmp_path):
    old = OmegaConf.to_container(compose_config(TINY), resolve=True)
    del old["method"]["blend_source"]  # a run made before the option existed
    recorded = _recorded(tmp_path, OmegaConf.create(old))
    assert config_differences(compose_config(TINY), recorded) == []  # "noised" is DDIMMethod's default
    changed = compose_config([*TINY, "method.blend_source=inverted"])
    assert config_differences(changed, recorded) == ["method.blend_source: <absent> -> 'inverted'"]
    # a key absent from the record that is no constructor argument of a target node still counts
    old["method"]["inversion"].pop("cache")
    assert config_differences(compose_config(TINY), _recorded(tmp_path, OmegaConf.create(old))) == [
        "method.inversion.cache: <absent> -> True"
    ]


def test_empty_mappings_are_values(tmp_path):
    recorded = _recorded(tmp_path, OmegaConf.create({"data": {"conditions": {}}, "seed": 1}))
    assert config_differences(OmegaConf.create({"data": {"conditions": {}}, "seed": 1}), recorded) == []
    assert config_differences(OmegaConf.create({"data": {}, "seed": 1}), recorded) == [
        "data: <absent> -> {}",
        "data.conditions: {} -> <absent>",
    ]
    given = OmegaConf.create({"data": {"conditions": {"depth": "/d"}}, "seed": 1})
    assert config_differences(given, recorded) == [
        "data.conditions: {} -> <absent>",
        "data.conditions.depth: <absent> -> '/d'",
    ]


def _quality_settings(job: Path) -> dict:
    return json.loads((job / "metrics.json").read_text())["quality"]["settings"]


def test_a_resumed_run_recomputes_metrics_made_with_other_settings(sweep, tmp_path):
    job = tmp_path / "job"
    shutil.copytree(sweep.folder / "0", job)
    cfg = [*TINY, "method.guidance_scale=5"]
    before = (job / "metrics.json").read_bytes()
    assert finished_run(compose_config(cfg), job) is not None
    assert (job / "metrics.json").read_bytes() == before  # same metric settings: untouched
    # metrics made with another flow estimator (as if the sweep had run with metrics.flow_backend=raft)
    metrics, reference = json.loads(before), json.loads(before)["quality"]
    metrics["quality"]["settings"]["flow"] = {"backend": "raft", "weights": "/x/raft.pth", "updates": 12}
    for scores in metrics["quality"]["edits"].values():
        scores["warp_error"] = 1234.0
    (job / "metrics.json").write_text(json.dumps(metrics))
    RunDirectory(job).update_manifest(["metrics.json"])  # as the run itself would have recorded them
    refreshed = finished_run(compose_config(cfg), job)
    assert refreshed["quality"]["settings"]["flow"]["backend"] == "dis"
    on_disk = json.loads((job / "metrics.json").read_text())
    assert on_disk["quality"] == refreshed["quality"] and on_disk["timings_s"] == metrics["timings_s"]
    for name, scores in on_disk["quality"]["edits"].items():
        assert scores["warp_error"] == pytest.approx(reference["edits"][name]["warp_error"], rel=1e-6)
    # another occlusion setting in the job's metrics block: recomputed with it
    finished_run(compose_config([*cfg, "metrics.occlusion_check=false"]), job)
    assert _quality_settings(job)["occlusion_check"] is False
    # processes that do not write leave the file alone
    finished_run(compose_config(cfg), job, refresh=False)
    assert _quality_settings(job)["occlusion_check"] is False
    with pytest.raises(ConfigError, match=r"metrics\.flow_backend=raft but no RAFT-large weights"):
        finished_run(compose_config([*cfg, "metrics.flow_backend=raft", "metrics.raft_weights=/x.pth"]), job)


def test_single_process_selects_its_gpu(monkeypatch):
    selected = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: selected.append(device))
    state = SingleProcess(torch.device("cuda", 1))
    assert selected == [torch.device("cuda", 1)] and state.device == torch.device("cuda", 1)
    SingleProcess(torch.device("cpu"))
    assert len(selected) == 1


def test_force_redoes_a_finished_run(sweep, tmp_path):
    job = tmp_path / "job"
    shutil.copytree(sweep.folder / "0", job)
    cfg = [*TINY, "method.guidance_scale=5"]
    skipped = edit(compose_config(cfg), job)
    assert skipped.skipped and skipped.metrics["method"]["guidance_scale"] == 5.0 and not skipped.edits
    marker = (job / "COMPLETE").read_text()
    forced = edit(compose_config([*cfg, "force=true"]), job)
    assert not forced.skipped and sorted(forced.edits) == ["edit0_seed0", "edit0_seed1"]
    assert (job / "COMPLETE").read_text() != marker


def test_a_finished_job_whose_files_changed_is_redone_not_skipped(sweep, tmp_path, caplog):
    from tests.corruption import flip_byte

    job = tmp_path / "job"
    shutil.copytree(sweep.folder / "0", job)
    cfg = compose_config([*TINY, "method.guidance_scale=5"])
    assert RunDirectory(job).verify() == []  # the sweep wrote a manifest with COMPLETE
    flip_byte(job / "sample" / "edit0_seed1" / "00002.png", 60)
    assert finished_run(cfg, job) is None
    assert "sample/edit0_seed1/00002.png was changed" in caplog.text and "running it again" in caplog.text
    redone = edit(cfg, job)
    assert not redone.skipped and sorted(redone.edits) == ["edit0_seed0", "edit0_seed1"]
    assert RunDirectory(job).verify() == [] and edit(cfg, job).skipped
    (job / "sample" / "edit0_seed0.mp4").unlink()  # a listed file missing: not finished either
    assert finished_run(cfg, job) is None


def test_the_slurm_launcher_config_composes_into_a_valid_sbatch_script(tmp_path, monkeypatch):
    submitit = pytest.importorskip("submitit")
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import instantiate

    from videoedit.config import CONFIG_DIR, register_resolvers

    register_resolvers()
    overrides = ["hydra/launcher=slurm", "hydra.launcher.partition=gpu", f"hydra.sweep.dir={tmp_path}/sweep"]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    launcher = instantiate(cfg.hydra.launcher)
    assert type(launcher).__name__ == "SlurmLauncher"
    assert launcher.params["gpus_per_node"] == 1 and launcher.params["tasks_per_node"] == 1
    # submit through the plugin's own code path, up to the sbatch script (no cluster: a fake srun)
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text("#!/bin/sh\n")
    (fake / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{__import__('os').environ['PATH']}")
    scripts = []

    def capture(self, fn, *args):
        scripts.append(self._executor._make_submission_file_text("python run.py", "uid"))
        scripts.append(self._executor.parameters)
        return []

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", capture)
    launcher.setup(hydra_context=None, task_function=lambda c: None, config=cfg)
    assert launcher.launch([["method.guidance_scale=5"], ["method.guidance_scale=7.5"]], 0) == []
    script = scripts[0]
    for line in (
        "#SBATCH --partition=gpu",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --time=120",
        "#SBATCH --mem=48GB",
    ):
        assert line in script, line
    assert scripts[1]["array_parallelism"] == 32
    assert (tmp_path / "sweep").is_dir()


def test_sweep_split_jobs_gives_each_job_to_one_process(tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    env = {**sweep_env(tmp_path), "VIDEOEDIT_RUN_ID": "split"}
    # --standalone: a free rendezvous port (parallel test sessions must not collide on the default one)
    args = [
        torchrun,
        "--standalone",
        "--nproc_per_node",
        "2",
        "run.py",
        "-m",
        *TINY,
        "sample_seeds=[0]",
        "sweep_split=jobs",
    ]
    proc = run([*args, "method.guidance_scale=5,6"], env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    owners = dict(re.findall(r"sweep job (\d): process (\d) of 2", log))
    assert owners == {"0": "0", "1": "1"}
    assert len(re.findall(r"edit edit0_seed0: ", log)) == 2  # every job computed exactly once
    folder = tmp_path / "outputs" / "tiny_sweep" / "multirun" / "split"
    for job, scale in (("0", 5.0), ("1", 6.0)):
        metrics = json.loads((folder / job / "metrics.json").read_text())
        assert metrics["method"]["guidance_scale"] == scale and metrics["processes"] == 1
        assert f"method.guidance_scale={scale:g}" in (folder / job / ".hydra" / "overrides.yaml").read_text()
        assert "(process 0 of 1)" in (folder / job / "run.log").read_text()


def test_sweep_split_values(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert runs_jobs_alone(compose_config(["sweep_split=jobs"]))
    assert not runs_jobs_alone(compose_config([]))
    with pytest.raises(ConfigError, match=r"sweep_split must be one of \['edits', 'jobs'\], got 'all'"):
        runs_jobs_alone(compose_config(["sweep_split=all"]))
    assert [job_owner(j, 3) for j in range(5)] == [0, 1, 2, 0, 1]
