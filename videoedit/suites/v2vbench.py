"""V2VBench (Sun et al., "Diffusion Model-Based Video Editing: A Survey", arXiv:2407.07111): 50 videos x 3 edits.

Its index (``config.yaml``) and frames live only in the Hugging Face dataset ``Wenhao-Sun/V2VBench``, whose
licence is not stated: nothing of it ships here. Download it
(``hf download Wenhao-Sun/V2VBench --repo-type dataset --local-dir V2VBench``) and give that folder as the
suite root. Schema (documented in github.com/wenhao728/awesome-diffusion-v2v ``doc/README.md``)::

    data:
    - video_id: hike                      # source: frames/<video_id>/NN.png or videos/<video_id>.mp4
      prompt: a man with a backpack ...   # source prompt (read by the author's batch scripts)
      edit:
      - prompt: a superman with a backpack hikes through the desert
        type: foreground                  # foreground | background | stylization | compound:<a>,<b>
        src_words: man                    # optional, Prompt-to-Prompt style word swap
        tgt_words: superman

``video_id`` and ``edit[].prompt`` are documented; ``prompt``, ``type``, ``src_words``, ``tgt_words`` are
read by the author's scripts and are optional here. Edit ``i`` of a video is named ``str(i)`` as the
evaluator names its outputs. Frames: 24 per video (the dataset's frame folders).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from videoedit.suites.base import Suite, SuiteClip, SuiteDataError, SuiteEdit

DOWNLOAD = (
    "Download V2VBench: `hf download Wenhao-Sun/V2VBench --repo-type dataset --local-dir V2VBench` and give "
    "that folder as the suite root (--suite-root V2VBench)."
)


def load_v2vbench(root: str | Path, index: str = "config.yaml", num_frames: int | None = None) -> Suite:
    """The V2VBench suite from a downloaded dataset folder (see the module docstring).

    Args:
        root: the dataset folder (``config.yaml``, ``frames/``, ``videos/``).
        index: the index file name inside ``root``.
        num_frames: frames per clip (default: every frame of the source).

    Raises:
        SuiteDataError: no index file, or an index that does not follow the schema (what is wrong and where).
    """
    root = Path(root).expanduser()
    path = root / index
    if not path.is_file():
        raise SuiteDataError(f"V2VBench: the index {path} is missing.\n{DOWNLOAD}")
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise SuiteDataError(f"V2VBench: {path} is not valid YAML: {err}") from err
    entries = document.get("data") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise SuiteDataError(
            f"V2VBench: {path} has no `data:` list of videos (schema: data[].video_id, data[].edit[].prompt)"
        )
    clips = []
    for n, entry in enumerate(entries):
        if not isinstance(entry, dict) or not entry.get("video_id"):
            raise SuiteDataError(f"V2VBench: {path} data[{n}] has no video_id")
        video = str(entry["video_id"])
        edits = entry.get("edit")
        if not isinstance(edits, list) or not edits:
            raise SuiteDataError(f"V2VBench: {path} data[{n}] ({video}) has no `edit:` list")
        parsed = []
        for i, edit in enumerate(edits):
            if not isinstance(edit, dict) or not str(edit.get("prompt") or "").strip():
                raise SuiteDataError(f"V2VBench: {path} data[{n}].edit[{i}] ({video}) has no prompt")
            parsed.append(SuiteEdit(str(i), str(edit["prompt"]).strip(), edit.get("type")))
        frames, mp4 = root / "frames" / video, root / "videos" / f"{video}.mp4"
        source = str(entry.get("prompt") or "").strip()
        data = {
            "path": str(frames if frames.is_dir() or not mp4.is_file() else mp4),
            "prompt": source,
            "name": video,
        }
        if num_frames:
            data["num_frames"] = int(num_frames)
        clips.append(
            SuiteClip(
                id=video,
                source_prompt=source,
                edits=tuple(parsed),
                data=data,
                required=((f"{video} frames", (frames, mp4)),),
            )
        )
    return Suite(
        name="v2vbench",
        title="V2VBench",
        source="huggingface.co/datasets/Wenhao-Sun/V2VBench; github.com/wenhao728/awesome-diffusion-v2v "
        "(Sun et al., arXiv:2407.07111)",
        licence="code: MIT; dataset: not stated (nothing of it ships here)",
        clips=tuple(clips),
        download=DOWNLOAD,
        notes="A video without `prompt` in the index is inverted with an empty source prompt.",
    )
