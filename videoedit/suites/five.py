"""FiVE-Bench (Li et al., "FiVE: A Fine-grained Video Editing Benchmark", ICCV 2025, arXiv:2503.13684).

100 videos (74 from DAVIS, 26 generated with Wan2.1), 419 prompt pairs in six fine-grained tasks, one file
each: ``edit_prompt/edit{1..6}_FiVE.json`` (1 rigid and 2 non-rigid object replacement, 3 colour, 4 material,
5 object addition, 6 object removal). The files live only in the Hugging Face dataset
``LIMinghan/FiVE-Fine-Grained-Video-Editing-Benchmark`` (CC BY-NC 4.0): download it (``git clone
https://huggingface.co/datasets/LIMinghan/FiVE-Fine-Grained-Video-Editing-Benchmark`` then unzip
``images.zip``, ``videos.zip``, ``bmasks.zip`` one by one) and give that folder as the suite root.

Each file is a JSON list of ``{video_name, editing_type_id, source_prompt, target_prompt, ...}``; the edited
words of ``target_prompt`` may be wrapped in ``[...]``, which the official evaluator strips (so does this
loader). Sources: ``images/<video_name>/*.jpg`` or ``videos/<video_name>.mp4``. Clips default to 40 frames
(the authors' TokenFlow runs; Wan-Edit reads 41). The ``bmasks/`` background masks are not read (their
file layout is not documented): background preservation of FiVE runs needs masks given another way.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from videoedit.suites.base import Suite, SuiteClip, SuiteDataError, SuiteEdit

TASKS = {
    1: "object replacement (rigid)",
    2: "object replacement (non-rigid)",
    3: "color alteration",
    4: "material modification",
    5: "object addition",
    6: "object removal",
}
DOWNLOAD = (
    "Download FiVE-Bench: `git clone https://huggingface.co/datasets/LIMinghan/FiVE-Fine-Grained-Video-Editing-Benchmark "
    "FiVE` then, inside it, `unzip images.zip`, `unzip videos.zip`, `unzip bmasks.zip` (one at a time); give that "
    "folder as the suite root (--suite-root FiVE)."
)


def load_five(
    root: str | Path, edit_types: Sequence[int] = (1, 2, 3, 4, 5, 6), num_frames: int | None = 40
) -> Suite:
    """The FiVE-Bench suite from a downloaded dataset folder (see the module docstring).

    Args:
        root: the dataset folder (``edit_prompt/``, ``images/`` or ``videos/``).
        edit_types: which of the six task files to read.
        num_frames: frames per clip (``None``: every frame).

    Raises:
        SuiteDataError: a task file is missing or does not follow the schema (what and where).
    """
    root = Path(root).expanduser()
    unknown = sorted(set(map(int, edit_types)) - set(TASKS))
    if unknown:
        raise SuiteDataError(
            f"FiVE-Bench has no edit type {unknown}; types: "
            + ", ".join(f"{k} {v}" for k, v in TASKS.items())
        )
    missing = [root / "edit_prompt" / f"edit{t}_FiVE.json" for t in edit_types]
    missing = [p for p in missing if not p.is_file()]
    if missing:
        raise SuiteDataError(
            "FiVE-Bench: missing prompt files: " + ", ".join(map(str, missing)) + f"\n{DOWNLOAD}"
        )
    videos: dict[str, dict] = {}
    for t in edit_types:
        path = root / "edit_prompt" / f"edit{t}_FiVE.json"
        try:
            entries = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise SuiteDataError(f"FiVE-Bench: {path} is not valid JSON: {err}") from err
        if not isinstance(entries, list):
            raise SuiteDataError(f"FiVE-Bench: {path} must hold a JSON list of entries")
        for n, entry in enumerate(entries):
            absent = [k for k in ("video_name", "source_prompt", "target_prompt") if not entry.get(k)]
            if absent:
                raise SuiteDataError(f"FiVE-Bench: {path} entry {n} has no {', '.join(absent)}")
            if int(entry.get("editing_type_id", t)) != int(t):
                raise SuiteDataError(
                    f"FiVE-Bench: {path} entry {n} has editing_type_id {entry['editing_type_id']}, expected {t}"
                )
            video = str(entry["video_name"])
            item = videos.setdefault(video, {"source": str(entry["source_prompt"]).strip(), "edits": []})
            target = str(entry["target_prompt"]).replace("[", "").replace("]", "").strip()
            item["edits"].append(SuiteEdit(f"edit{t}", target, TASKS[int(t)]))
    clips = []
    for video, item in videos.items():
        frames, mp4 = root / "images" / video, root / "videos" / f"{video}.mp4"
        data = {
            "path": str(frames if frames.is_dir() or not mp4.is_file() else mp4),
            "prompt": item["source"],
            "name": video,
        }
        if num_frames:
            data["num_frames"] = int(num_frames)
        clips.append(
            SuiteClip(
                id=video,
                source_prompt=item["source"],
                edits=tuple(item["edits"]),
                data=data,
                required=((f"{video} frames", (frames, mp4)),),
            )
        )
    return Suite(
        name="five",
        title="FiVE-Bench",
        source="huggingface.co/datasets/LIMinghan/FiVE-Fine-Grained-Video-Editing-Benchmark; "
        "github.com/MinghanLi/FiVE-Bench (Li et al., arXiv:2503.13684)",
        licence="CC BY-NC 4.0 (dataset card); DAVIS terms apply to the DAVIS-derived frames",
        clips=tuple(clips),
        download=DOWNLOAD,
        notes="bmasks/ are not read: background metrics need masks given another way; use "
        "metrics.background_protocol=pie_bench for FiVE's protocol.",
    )
