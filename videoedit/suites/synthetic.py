"""A two-clip synthetic suite the project draws itself: runs offline on the tiny models (CI).

Two renderings of the generated two-figures clip (``configs/data/two_figures.yaml``: two jogging figures over
a park, exact region masks and OpenPose skeletons), differing in seed and background pan; two edits each: a
plain prompt and a layout prompt that keeps the background (``trees``), so background preservation is measured.
"""

from __future__ import annotations

from videoedit.suites.base import Suite, SuiteClip, SuiteEdit

EDITS = (
    SuiteEdit("global", "two astronauts jogging on the moon", "global"),
    SuiteEdit(
        "layout",
        ("Spiderman and Polar Bear jogging under trees", "Spiderman", "Polar Bear", ""),
        "foreground",
    ),
)


def load_synthetic() -> Suite:
    """The synthetic suite: clips ``figures_a`` (seed 0, pan 1 px/frame) and ``figures_b`` (seed 1, pan 3)."""
    clips = tuple(
        SuiteClip(
            id=name,
            source_prompt="two men jogging in a park",
            edits=EDITS,
            data_group="two_figures",
            data={"seed": seed, "pan": pan, "name": name},
        )
        for name, seed, pan in (("figures_a", 0, 1.0), ("figures_b", 1, 3.0))
    )
    return Suite(
        name="synthetic",
        title="synthetic two-figures",
        source="drawn by videoedit.data.synthetic.TwoFiguresClip",
        licence="generated (no third-party content)",
        clips=clips,
    )
