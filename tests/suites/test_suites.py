"""Benchmark suites: the shipped LOVEU-TGVE-2023 prompts (intact, licensed), loaders for the V2VBench and
FiVE-Bench schemas on small fixtures written in those schemas, the VideoGrain examples, the synthetic suite,
and exact messages naming what is missing."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from videoedit.errors import InputError
from videoedit.suites import SuiteDataError, load_suite
from videoedit.suites.tgve import data_dir


def test_the_shipped_tgve_files_are_the_upstream_bytes_with_their_licence():
    folder = data_dir()
    sums = [line.split("  ", 1) for line in (folder / "SHA256SUMS").read_text().splitlines()]
    assert len(sums) == 77  # 76 configs + LICENSE
    for digest, name in sums:
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, name
    licence = (folder / "LICENSE").read_text()
    assert "Apache License" in licence and "Version 2.0, January 2004" in licence


def test_tgve_has_76_videos_and_304_edits():
    suite = load_suite("tgve")
    assert len(suite.clips) == 76 and suite.num_edits == 304
    by_subset = {
        s: sum(c.id.startswith(s + "/") for c in suite.clips)
        for s in ("DAVIS_480p", "youtube_480p", "videvo_480p")
    }
    assert by_subset == {"DAVIS_480p": 16, "youtube_480p": 23, "videvo_480p": 37}
    bmx = next(c for c in suite.clips if c.id == "DAVIS_480p/bmx-rider")
    assert bmx.source_prompt == "A person does a trick on a BMX bike at a skatepark."
    assert [(e.name, e.prompt) for e in bmx.edits] == [
        ("style", "A person does a trick on a BMX bike at a skatepark, grayscale."),
        ("object", "A person does a trick on a unicycle at a skatepark."),
        ("background", "A person does a trick on a BMX bike at a snow covered park in Antarctica."),
        (
            "multiple",
            "A person does a trick on a skateboard at a beach skate park, vintage style.",
        ),  # wrapped line
    ]
    assert bmx.data["num_frames"] == 32 and bmx.data["prompt"] == bmx.source_prompt
    assert {c.data["num_frames"] for c in suite.clips if c.id.startswith("youtube_480p/")} == {128}
    assert len({e.prompt for c in suite.clips for e in c.edits}) == 304  # all distinct


def test_tgve_names_each_missing_video(tmp_path):
    (tmp_path / "DAVIS_480p" / "480p_frames" / "bmx-rider").mkdir(parents=True)
    (tmp_path / "DAVIS_480p" / "480p_videos").mkdir(parents=True)
    (tmp_path / "DAVIS_480p" / "480p_videos" / "judo.mp4").write_bytes(b"x")
    suite = load_suite("tgve", tmp_path, subsets=["DAVIS_480p"])
    missing = suite.missing()
    assert len(missing) == 14
    assert missing[0] == (
        f"DAVIS_480p/dog-competition: dog-competition frames: {tmp_path}/DAVIS_480p/480p_frames/dog-competition"
        f" or {tmp_path}/DAVIS_480p/480p_videos/dog-competition.mp4"
    )
    judo = next(c for c in suite.clips if c.id == "DAVIS_480p/judo")
    assert judo.data["path"] == str(
        tmp_path / "DAVIS_480p" / "480p_videos" / "judo.mp4"
    )  # the mp4 when no frames
    with pytest.raises(SuiteDataError, match=r"LOVEU-TGVE-2023: 14 of 16 clips have missing files") as info:
        suite.check(limit=2)
    assert "... and 12 more" in str(info.value) and "loveu-tgve-2023.zip" in str(info.value)
    suite.select(clips=["bmx-rider", "judo"]).check()  # present: no error
    with pytest.raises(InputError, match="LOVEU-TGVE-2023 has no subset DAVIS"):
        load_suite("tgve", tmp_path, subsets=["DAVIS"])


def _frames(folder: Path, count: int, name: str = "{:02d}.png") -> None:
    folder.mkdir(parents=True)
    for i in range(count):
        Image.fromarray(np.full((16, 16, 3), i * 10, np.uint8)).save(folder / name.format(i))


def test_v2vbench_reads_its_schema(tmp_path):
    index = {
        "data": [
            {
                "video_id": "hike",
                "prompt": "a man with a backpack hikes through the desert",
                "edit": [
                    {
                        "prompt": "a superman with a backpack hikes through the desert",
                        "type": "foreground",
                        "src_words": "man",
                        "tgt_words": "superman",
                    },
                    {
                        "prompt": "a man with a backpack hikes through the dolomites, pixel art",
                        "type": "compound:background,stylization",
                    },
                ],
            },
            {"video_id": "landing", "edit": [{"prompt": "a plane landing on the moon"}]},
        ]
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(index))
    _frames(tmp_path / "frames" / "hike", 3)
    suite = load_suite("v2vbench", tmp_path, num_frames=3)
    assert [c.id for c in suite.clips] == ["hike", "landing"] and suite.num_edits == 3
    hike = suite.clips[0]
    assert hike.source_prompt == "a man with a backpack hikes through the desert"
    assert [(e.name, e.kind) for e in hike.edits] == [
        ("0", "foreground"),
        ("1", "compound:background,stylization"),
    ]
    assert hike.data == {
        "path": str(tmp_path / "frames" / "hike"),
        "prompt": hike.source_prompt,
        "name": "hike",
        "num_frames": 3,
    }
    assert suite.clips[1].source_prompt == "" and suite.clips[1].edits[0].kind is None
    assert suite.missing() == [
        f"landing: landing frames: {tmp_path}/frames/landing or {tmp_path}/videos/landing.mp4"
    ]
    assert [e.name for c in suite.select(edits=["foreground"]).clips for e in c.edits] == ["0"]


def test_v2vbench_says_what_is_wrong_with_an_index(tmp_path):
    with pytest.raises(SuiteDataError, match=r"V2VBench: the index .*config.yaml is missing") as info:
        load_suite("v2vbench", tmp_path)
    assert "hf download Wenhao-Sun/V2VBench --repo-type dataset" in str(info.value)
    (tmp_path / "config.yaml").write_text("videos: []\n")
    with pytest.raises(SuiteDataError, match=r"has no `data:` list of videos"):
        load_suite("v2vbench", tmp_path)
    (tmp_path / "config.yaml").write_text(
        yaml.safe_dump({"data": [{"video_id": "a", "edit": [{"type": "x"}]}]})
    )
    with pytest.raises(SuiteDataError, match=r"data\[0\]\.edit\[0\] \(a\) has no prompt"):
        load_suite("v2vbench", tmp_path)
    with pytest.raises(InputError, match="the v2vbench suite reads your downloaded copy"):
        load_suite("v2vbench")


def _five_entry(video: str, kind: int, target: str) -> dict:
    return {
        "video_name": video,
        "editing_type_id": kind,
        "source_prompt": "A city bus is moving steadily along a city street.",
        "target_prompt": target,
        "save_dir": f"{kind}_{target[:10]}",
        "source_yes_no_question": "Is there a bus?",
        "target_yes_no_question": "Is there a jeep?",
        "multiple_choice_question": "What is on the street? (a) bus (b) jeep",
    }


def test_five_reads_its_schema_and_strips_the_brackets(tmp_path):
    prompts = tmp_path / "edit_prompt"
    prompts.mkdir()
    (prompts / "edit1_FiVE.json").write_text(
        json.dumps(
            [
                _five_entry("0001_bus", 1, "A [jeep] is moving steadily along a city street."),
                _five_entry("0002_girl-dog", 1, "A girl walks a [cat]."),
            ]
        )
    )
    (prompts / "edit3_FiVE.json").write_text(
        json.dumps([_five_entry("0001_bus", 3, "A [purple] city bus ...")])
    )
    _frames(tmp_path / "images" / "0001_bus", 2, "{:05d}.jpg")
    suite = load_suite("five", tmp_path, edit_types=[1, 3])
    assert [c.id for c in suite.clips] == ["0001_bus", "0002_girl-dog"]
    bus = suite.clips[0]
    assert [(e.name, e.prompt, e.kind) for e in bus.edits] == [
        ("edit1", "A jeep is moving steadily along a city street.", "object replacement (rigid)"),
        ("edit3", "A purple city bus ...", "color alteration"),
    ]
    assert bus.data["num_frames"] == 40 and bus.data["path"] == str(tmp_path / "images" / "0001_bus")
    assert suite.missing() == [
        f"0002_girl-dog: 0002_girl-dog frames: {tmp_path}/images/0002_girl-dog or {tmp_path}/videos/0002_girl-dog.mp4"
    ]
    with pytest.raises(SuiteDataError, match=r"FiVE-Bench: missing prompt files: .*edit2_FiVE.json") as info:
        load_suite("five", tmp_path, edit_types=[1, 2])
    assert "unzip images.zip" in str(info.value)
    (prompts / "edit4_FiVE.json").write_text(json.dumps([_five_entry("0001_bus", 1, "x")]))
    with pytest.raises(SuiteDataError, match=r"edit4_FiVE.json entry 0 has editing_type_id 1, expected 4"):
        load_suite("five", tmp_path, edit_types=[4])
    with pytest.raises(SuiteDataError, match="FiVE-Bench has no edit type \\[7\\]"):
        load_suite("five", tmp_path, edit_types=[7])


def test_the_29_videograin_examples(tmp_path):
    suite = load_suite("videograin", tmp_path)
    assert len(suite.clips) == 29
    clip = next(c for c in suite.clips if c.id == "class_car_posche")
    assert clip.edits[0].prompt == (
        "A red porsche car driving before the autumn view lawn",
        "A red porsche car",
        "autumn view lawn",
    )
    assert clip.groups == {"controlnet": "depth", "annotator@_global_.annotator": "zoe"}
    assert clip.data["path"] == "${paths.data_root}/videograin/car/car"  # resolved by the run, not here
    assert (
        clip.method_config["videograin"]["inject_step"] == 10 and clip.config["negative_prompt"] == "jittery"
    )
    assert clip.missing() == [
        f"video: {tmp_path}/videograin/car/car",
        f"layout masks: {tmp_path}/videograin/car/layout_masks",
    ]


def test_the_synthetic_suite_and_bad_requests():
    suite = load_suite("synthetic")
    assert [c.id for c in suite.clips] == ["figures_a", "figures_b"] and suite.missing() == []
    assert [e.name for e in suite.clips[0].edits] == ["global", "layout"]
    assert suite.clips[0].data_group == "two_figures"
    with pytest.raises(
        InputError, match="unknown suite 'loveu'; suites: tgve, v2vbench, five, videograin, synthetic"
    ):
        load_suite("loveu")
    with pytest.raises(
        InputError, match="synthetic two-figures has no clip figures_c; it has: figures_a, figures_b"
    ):
        suite.select(clips=["figures_c"])
    with pytest.raises(InputError, match="has no edit named nope"):
        suite.select(edits=["nope"])
    assert len(suite.select(max_clips=1).clips) == 1
