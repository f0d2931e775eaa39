"""The result tree: staged writes, the manifest written with COMPLETE, verification, re-runs into a folder."""

from __future__ import annotations

import hashlib
import json

import numpy as np

from tests.corruption import flip_byte
from videoedit.io.result_tree import MANIFEST_NAME, STAGING_NAME, RunDirectory


def _frames(value: int = 0, num: int = 2) -> np.ndarray:
    return np.full((num, 16, 16, 3), value, np.uint8)


def _run(root, edits=("edit0_seed0",), value=0) -> RunDirectory:
    """A complete run writing ``edits``; Hydra's files are in the folder too."""
    run = RunDirectory(root).start()
    run.write_config(f"value: {value}\n")
    run.write_source(_frames(value))
    for name in edits:
        run.write_edit(name, _frames(value + 1))
    run.write_artifacts(arrays={"sd_study/feat.npy": np.arange(3)})
    run.write_metrics({"value": value})
    return run


def _hydra_files(root) -> None:
    (root / ".hydra").mkdir(parents=True, exist_ok=True)
    (root / ".hydra" / "config.yaml").write_text("hydra: {}\n")
    (root / "run.log").write_text("log of every attempt\n")


def test_a_run_writes_into_staging_until_it_is_complete(tmp_path):
    root = tmp_path / "run"
    run = _run(root)
    assert (root / STAGING_NAME / "metrics.json").is_file()
    assert not (root / "metrics.json").exists() and not (root / "sample").exists()
    marker = json.loads(run.mark_complete({"edits": 1}).read_text())
    assert not (root / STAGING_NAME).exists()
    manifest = json.loads((root / MANIFEST_NAME).read_text())["files"]
    assert {"config.yaml", "metrics.json", "sample/edit0_seed0.mp4", "sample/edit0_seed0/00001.png"} <= set(
        manifest
    )
    assert "sd_study/feat.npy" in manifest and len(manifest) == marker["files"]
    for rel, entry in manifest.items():  # sizes and checksums of the files in place
        data = (root / rel).read_bytes()
        assert entry == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    digest = hashlib.sha256((root / MANIFEST_NAME).read_bytes()).hexdigest()
    assert marker["manifest_sha256"] == digest and marker["edits"] == 1
    assert run.verify() == []


def test_verify_finds_missing_changed_and_unlisted_damage(tmp_path):
    root = tmp_path / "run"
    run = _run(root)
    run.mark_complete()
    flip_byte(root / "sample" / "edit0_seed0" / "00000.png", 40)
    (root / "sample" / "edit0_seed0.mp4").unlink()
    problems = run.verify()
    assert "sample/edit0_seed0.mp4 is missing" in problems
    assert "sample/edit0_seed0/00000.png was changed (its SHA-256 differs from the manifest)" in problems
    (root / "config.yaml").write_text("value: 12345\n")
    assert "config.yaml has 13 bytes, the manifest says 9" in run.verify()
    # a manifest edited to match the damage no longer matches COMPLETE
    manifest = json.loads((root / MANIFEST_NAME).read_text())
    del manifest["files"]["sample/edit0_seed0.mp4"]
    (root / MANIFEST_NAME).write_text(json.dumps(manifest))
    assert run.verify() == ["MANIFEST.json does not match the checksum recorded in COMPLETE"]
    (root / MANIFEST_NAME).unlink()
    assert run.verify() == ["no MANIFEST.json (written by an older version, or removed)"]


def test_a_killed_run_leaves_nothing_beside_the_next_one(tmp_path):
    root = tmp_path / "run"
    _hydra_files(root)
    _run(root, edits=("edit0_seed0", "edit1_seed0"), value=1)  # killed: never marked complete
    assert not RunDirectory.is_complete(root) and not (root / "metrics.json").exists()
    run = _run(root, edits=("edit0_seed0",), value=2)  # the re-run starts by clearing the killed one
    run.mark_complete()
    assert not (root / "sample" / "edit1_seed0.mp4").exists() and not (root / STAGING_NAME).exists()
    assert json.loads((root / "metrics.json").read_text()) == {"value": 2}
    assert (root / ".hydra" / "config.yaml").is_file() and (root / "run.log").is_file()  # Hydra's: kept
    assert run.verify() == []


def test_a_forced_rerun_replaces_the_previous_runs_files(tmp_path):
    root = tmp_path / "run"
    _hydra_files(root)
    _run(root, edits=("edit0_seed0", "edit0_seed1"), value=1).mark_complete()
    (root / "notes.txt").write_text("a user's file in the folder")
    rerun = _run(root, edits=("edit0_seed0",), value=5)
    # until the new run completes, the folder holds the previous run (not complete any more) untouched
    assert not RunDirectory.is_complete(root) and (root / "sample" / "edit0_seed1.mp4").is_file()
    rerun.mark_complete()
    listed = json.loads((root / MANIFEST_NAME).read_text())["files"]
    assert (
        not (root / "sample" / "edit0_seed1.mp4").exists() and not (root / "sample" / "edit0_seed1").exists()
    )
    assert (
        "sample/edit0_seed1.mp4" not in listed
        and json.loads((root / "metrics.json").read_text())["value"] == 5
    )
    assert (root / "notes.txt").is_file() and (root / "run.log").is_file()  # never listed: never removed
    assert rerun.verify() == []


def test_a_manifest_never_removes_files_outside_its_folder(tmp_path):
    outside = tmp_path / "precious.txt"
    outside.write_text("keep")
    root = tmp_path / "run"
    _run(root).mark_complete()
    manifest = json.loads((root / MANIFEST_NAME).read_text())
    manifest["files"]["../precious.txt"] = {"size": 4, "sha256": "x"}
    (root / MANIFEST_NAME).write_text(json.dumps(manifest))
    _run(root).mark_complete()
    assert outside.read_text() == "keep"


def test_rewritten_metrics_keep_the_tree_verified(tmp_path):
    root = tmp_path / "run"
    run = _run(root)
    run.mark_complete()
    RunDirectory(root).rewrite_metrics({"value": 0, "quality": {"warp_error": float("nan")}})
    assert RunDirectory(root).verify() == []
    assert json.loads((root / "metrics.json").read_text())["non_finite"] == ["quality.warp_error"]


def test_a_tree_written_without_start_lists_its_own_files(tmp_path):
    root = tmp_path / "run"
    _hydra_files(root)
    run = RunDirectory(root)
    run.write_edit("edit0_seed0", _frames())
    run.write_metrics({"a": 1})
    run.mark_complete()
    listed = json.loads((root / MANIFEST_NAME).read_text())["files"]
    assert sorted(listed)[:2] == ["metrics.json", "sample/edit0_seed0.mp4"]
    assert not any(rel.startswith(".hydra") or rel.endswith(".log") for rel in listed)
    assert run.verify() == []
