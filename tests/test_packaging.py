"""The package as a user installs it: build the wheel, install it into a clean virtualenv (no checkout on
the path, no editable install), run the quickstart from an empty folder with ``videoedit run``.

The clean virtualenv reuses this environment's site-packages through a ``.pth`` path line (installing
torch again would take minutes): a path line adds the folder without running the ``.pth`` files inside
it, so the editable install of the checkout stays invisible; the test checks that ``videoedit`` is
imported from the installed wheel.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.conftest import FAST, ROOT

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git to list the sources")


def _sources() -> list[str]:
    """The files a clone of the repository has (tracked, plus new files git does not ignore)."""
    proc = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return [f for f in proc.stdout.split("\0") if f and (ROOT / f).is_file()]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for rel in _sources():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, src / rel)
    dist = tmp_path_factory.mktemp("dist")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), "."],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (found,) = dist.glob("videoedit-*.whl")
    return found


def test_the_wheel_ships_every_config_from_the_top_level_folder(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        "videoedit/configs/" + p.relative_to(ROOT / "configs").as_posix()
        for p in (ROOT / "configs").rglob("*.yaml")
    }
    assert len(expected) > 50 and expected <= names, sorted(expected - names)[:5]
    assert "videoedit/run.py" in names and "annotators/pose.py" in names
    assert not any(n.startswith("configs/") for n in names)  # one copy, inside the package
    assert "videoedit/configs/hydra/launcher/slurm.yaml" in names


@pytest.fixture(scope="module")
def clean_venv(wheel, tmp_path_factory) -> Path:
    """A new virtualenv with the wheel installed and this environment's site-packages on a path line."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site) / "shared_site_packages.pth").write_text("\n".join(sorted(ours)) + "\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return venv


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIDEOEDIT_"))}
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        OMP_NUM_THREADS="1",
        VIDEOEDIT_CACHE_ROOT=str(tmp / "cache"),
        HOME=str(tmp / "home"),
    )
    return env


def test_quickstart_from_the_installed_wheel_in_an_empty_folder(clean_venv, tmp_path):
    work = tmp_path / "empty"
    work.mkdir()
    env = _env(tmp_path)
    python = clean_venv / "bin" / "python"
    where = subprocess.run(
        [
            str(python),
            "-c",
            "import videoedit, annotators, videoedit.config as c; "
            "print(videoedit.__file__); print(annotators.__file__); print(c.config_source()); "
            "print(c.checkout_config_dir())",
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert where.returncode == 0, where.stderr[-2000:]
    package, annotators_file, source, checkout = where.stdout.split()
    assert Path(package).is_relative_to(clean_venv) and Path(annotators_file).is_relative_to(clean_venv)
    assert source == "pkg://videoedit.configs" and checkout == "None"

    proc = subprocess.run(
        [str(clean_venv / "bin" / "videoedit"), "run", "+experiment=instance_edit", *FAST],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    match = re.search(r"Results written to (\S+)", proc.stdout)
    assert match, proc.stdout[-2000:]
    run = Path(match.group(1))
    assert run.parent == work / "outputs" / "instance_edit"  # ./outputs of the folder it ran in
    for rel in (
        "COMPLETE",
        "config.yaml",
        "run.log",
        "metrics.json",
        "source_video.mp4",
        "control/control.mp4",
        "masks/left_man/00000.png",
        "infer_samples/masked_video.mp4",
        "sample/edit0_seed0.mp4",
        "sample/edit0_seed0/00000.png",
        "sample/comparison.mp4",
        "sample/edits.json",
    ):
        assert (run / rel).is_file(), rel
    assert "videoedit.configs" not in str(run)


def test_user_config_folders_are_searched_after_the_packaged_ones(clean_venv, tmp_path):
    work = tmp_path / "empty"
    (work / "my_configs" / "experiment").mkdir(parents=True)
    (work / "my_configs" / "experiment" / "my_edit.yaml").write_text(
        "# @package _global_\n"
        "defaults:\n  - override /method: videograin\n"
        "experiment_name: my_edit\n"
        "prompts: [[two astronauts on the moon, astronaut, astronaut, null]]\n"
    )
    env = _env(tmp_path)
    proc = subprocess.run(
        [
            str(clean_venv / "bin" / "videoedit"),
            "run",
            "--config-dir",
            "my_configs",
            "+experiment=my_edit",
            "model=tiny",
            "--cfg",
            "job",
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "experiment_name: my_edit" in proc.stdout
    assert "_target_: videoedit.methods.videograin.VideoGrainMethod" in proc.stdout
    assert "- null" in proc.stdout  # the empty local prompt, written without quotes
