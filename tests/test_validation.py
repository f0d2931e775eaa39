"""Config values checked against their constructors' signatures and type hints (videoedit/validation.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Literal

import pytest
from omegaconf import OmegaConf

from videoedit.config import CONFIG_DIR
from videoedit.errors import ConfigError
from videoedit.validation import check_config, check_node


@dataclasses.dataclass(frozen=True)
class Inner:
    strength: float = 0.5
    mode: Literal["a", "b"] = "a"


class Target:
    def __init__(
        self,
        scale: float = 7.5,
        steps: int = 50,
        flag: bool = False,
        name: str = "x",
        choice: Literal["one", "two"] = "one",
        optional: int | None = None,
        factors: Sequence[int] = (1, 2),
        pair: tuple[float, float] = (0.0, 1.0),
        table: Mapping[str, float] | None = None,
        inner: Inner | Mapping | None = None,
        loose=None,
        threshold: float = float("inf"),
    ) -> None:
        pass


def problems(**values) -> str:
    """The message for ``values`` as ``node.<key>`` arguments of :class:`Target` ("" when valid)."""
    try:
        check_node(values, "node", Target)
    except ConfigError as err:
        return str(err)
    return ""


def test_valid_values_pass():
    assert problems() == ""
    assert problems(scale=3, steps=8.0, flag=True, name="y", choice="two", optional=None, factors=[4]) == ""
    assert problems(pair=[0.1, 0.9], table={"a": 1, "b": 2.5}, inner={"strength": 1, "mode": "b"}) == ""
    assert problems(loose=object(), threshold=float("inf")) == ""  # no hint; a non-finite default


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"scale": float("nan")}, "node.scale=nan is not a finite number: expected a float (default 7.5)"),
        ({"scale": float("-inf")}, "node.scale=-inf is not a finite number"),
        ({"scale": "abc"}, "node.scale='abc' is not a number: expected a float (default 7.5)"),
        ({"scale": True}, "node.scale=True is a boolean: expected a float"),
        ({"steps": 2.5}, "node.steps=2.5 is a float: expected an integer (default 50)"),
        ({"steps": "8"}, "node.steps='8' is not a number: expected an integer"),
        ({"flag": "yes"}, "node.flag='yes' is a string: expected true or false (default False)"),
        ({"flag": 1}, "node.flag=1 is an integer: expected true or false"),
        ({"name": 3}, "node.name=3 is an integer: expected a string (default x)"),
        ({"choice": "three"}, "node.choice='three' is not one of 'one', 'two'"),
        ({"optional": "none"}, "node.optional='none' is not a number: expected an integer or null"),
        ({"steps": None}, "node.steps is null: expected an integer"),
        ({"factors": 4}, "node.factors=4 is an integer: expected a list of integers"),
        ({"factors": [1, "x"]}, "node.factors[1]='x' is not a number: expected an integer"),
        ({"pair": [0.5]}, "node.pair=[0.5] has 1 items: expected a list of 2 values (a float, a float)"),
        ({"pair": [0.5, float("nan")]}, "node.pair[1]=nan is not a finite number"),
        ({"table": {"a": "big"}}, "node.table.a='big' is not a number: expected a float"),
        ({"inner": {"strength": float("nan")}}, "node.inner.strength=nan is not a finite number"),
        ({"inner": {"mode": "c"}}, "node.inner.mode='c' is not one of 'a', 'b'"),
        ({"inner": {"strenght": 1.0}}, "node.inner.strenght is not a setting of tests.test_validation.Inner"),
        (
            {"scael": 1.0},
            "node.scael is not a setting of tests.test_validation.Target (did you mean node.scale?)",
        ),
        ({"zzz": 1}, "(its settings: scale, steps, flag, name, choice, optional"),
        ({"steps": "???"}, "node.steps is not set (???): give it a value, e.g. node.steps=<value>"),
    ],
)
def test_each_problem_names_its_key_and_the_expected_type(values, message):
    assert message in problems(**values)


def test_all_problems_of_a_node_are_reported_together():
    message = problems(scale="abc", flag="no", choice="x")
    assert message.startswith("Invalid config values: node.scale='abc'")
    assert "node.flag='no'" in message and "node.choice='x'" in message


def test_nested_targets_and_interpolations():
    cfg = OmegaConf.create(
        {
            "g": 2.0,
            "method": {
                "_target_": "videoedit.methods.keyframe_propagate.KeyframePropagateMethod",
                "keyframe_method": {
                    "_target_": "videoedit.methods.ddim.DDIMMethod",
                    "guidance_scale": "${g}",
                },
            },
        }
    )
    check_config(cfg)  # interpolations are resolved first: 2.0 is a float
    cfg.g = "strong"
    with pytest.raises(
        ConfigError, match=r"method\.keyframe_method\.guidance_scale='strong' is not a number"
    ):
        check_config(cfg)
    # a target that cannot be imported is left to build(), which names the config group
    check_node(OmegaConf.create({"_target_": "nowhere.Nothing", "x": float("nan")}), "method")


def test_root_settings_and_the_metrics_block(compose):
    with pytest.raises(ConfigError) as err:
        check_config(
            compose("seed=abc", "sample_seeds=[0,x]", "dtype=fp8", "force=yes", "metrics.max_psnr=nan")
        )
    message = str(err.value)
    for part in (
        "seed='abc' is not a number: expected an integer",
        "sample_seeds[1]='x' is not a number: expected an integer",
        "dtype='fp8' is not one of 'auto', 'fp32'",
        "force='yes' is a string: expected true or false",
        "metrics.max_psnr=nan is not a finite number: expected a float (default 100.0)",
    ):
        assert part in message
    with pytest.raises(ConfigError, match=r"metrics\.flow_bakend is not a setting of .*Evaluator"):
        check_config(compose("+metrics.flow_bakend=dis"))


EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))
OPTIONS = [
    (group, p.stem)
    for group in ("model", "data", "method", "annotator", "controlnet")
    for p in sorted((CONFIG_DIR / group).glob("*.yaml"))
]
# values a user must give (``???`` in the option's config)
REQUIRED = {
    ("data", "video"): ["data.path=/clip.mp4"],
    ("data", "video_sam"): ["data.path=/clip.mp4", "data.mask_builder.prompts=/p.yaml"],
    ("annotator", "precomputed"): ["annotator.path=/maps.mp4"],
}


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_passes(compose, experiment):
    check_config(compose(f"+experiment={experiment}"))


@pytest.mark.parametrize(("group", "option"), OPTIONS)
def test_every_config_option_passes(compose, group, option):
    check_config(compose(f"{group}={option}", *REQUIRED.get((group, option), [])))
    if (group, option) in REQUIRED:
        with pytest.raises(ConfigError, match=r"is not set \(\?\?\?\)"):
            check_config(compose(f"{group}={option}"))
