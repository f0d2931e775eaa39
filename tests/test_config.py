import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf

from videoedit.config import CONFIG_DIR, run_id

EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_resolves(compose, experiment):
    cfg = compose(f"+experiment={experiment}")
    OmegaConf.resolve(cfg)  # every interpolation resolves
    assert cfg.experiment_name
    assert cfg.method._target_.startswith("videoedit.methods.")
    assert cfg.prompts and cfg.sample_seeds


def test_defaults(compose):
    cfg = compose()
    assert cfg.model._target_ == "videoedit.backbones.stable_diffusion.StableDiffusion"
    assert cfg.controlnet.condition_type == "openpose"
    assert cfg.model.controlnet == "lllyasviel/control_v11p_sd15_openpose"
    assert cfg.method.guidance_scale == 7.5 and cfg.method.num_inference_steps == 50


def test_controlnet_brings_its_annotator_and_it_can_be_overridden(compose):
    assert compose("controlnet=canny").annotator._target_ == "annotators.canny.CannyAnnotator"
    assert (
        compose("controlnet=openpose", "annotator=canny").annotator._target_
        == "annotators.canny.CannyAnnotator"
    )
    cfg = compose("controlnet=none")
    assert cfg.controlnet.condition_type is None and cfg.model.controlnet is None


def test_unknown_group_options_name_the_choices(compose):
    with pytest.raises(MissingConfigException, match=r"Could not find 'method/nope'[\s\S]*ddim"):
        compose("method=nope")
    with pytest.raises(MissingConfigException, match=r"model/nope[\s\S]*tiny"):
        compose("model=nope")
    with pytest.raises(MissingConfigException, match=r"controlnet/nope[\s\S]*openpose"):
        compose("controlnet=nope")
    with pytest.raises((MissingConfigException, ConfigCompositionException), match="experiment/nope"):
        compose("+experiment=nope")


def test_paths_follow_environment_variables(compose, monkeypatch, tmp_path):
    monkeypatch.setenv("VIDEOEDIT_DATA_ROOT", str(tmp_path / "d"))
    monkeypatch.setenv("VIDEOEDIT_MODEL_ROOT", str(tmp_path / "m"))
    cfg = compose("+experiment=instance_edit")
    assert cfg.paths.data_root == str(tmp_path / "d")
    assert cfg.data.path.startswith(str(tmp_path / "d"))
    assert cfg.model.model_root == str(tmp_path / "m")
    monkeypatch.delenv("VIDEOEDIT_MODEL_ROOT")
    assert compose().model.model_root is None


def test_run_id_is_shared_by_the_ranks_of_a_launch(monkeypatch):
    monkeypatch.setenv("VIDEOEDIT_RUN_ID", "fixed")
    assert run_id() == "fixed"
    monkeypatch.delenv("VIDEOEDIT_RUN_ID")
    monkeypatch.setenv("WORLD_SIZE", "2")
    first = run_id()
    assert first == run_id()  # from the launcher's start time, identical in every rank


OPTIONS = [
    (group, p.stem)
    for group in ("model", "data", "method", "annotator")
    for p in sorted((CONFIG_DIR / group).glob("*.yaml"))
]


@pytest.mark.parametrize(("group", "option"), OPTIONS)
def test_config_keys_are_constructor_arguments(compose, group, option):
    """Every key of an instantiable node is an argument of its ``_target_`` (keys = constructor args)."""
    import importlib
    import inspect

    node = compose(f"{group}={option}")[group]
    module, _, name = node._target_.rpartition(".")
    target = getattr(importlib.import_module(module), name)
    params = inspect.signature(target).parameters
    extra = [k for k in node if k != "_target_" and k not in params]
    assert not extra, f"{group}/{option}: {extra} are not arguments of {node._target_}"
