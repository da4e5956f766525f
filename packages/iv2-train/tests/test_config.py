from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from iv2_train import (
    TRAIN_FLAVORS,
    CheckpointConfig,
    ConfigError,
    DistributedConfig,
    EvaluationConfig,
    LoggingConfig,
    OptimizerConfig,
    ScheduleConfig,
    TrainConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
    save_config,
)


@dataclasses.dataclass
class StageConfig:
    """What a stage package's config looks like: its own fields plus an embedded TrainConfig."""

    model: str = "internvideo2-tiny"
    num_frames: int = 8
    loss_weights: dict[str, float] = dataclasses.field(default_factory=lambda: {"vtc": 1.0})
    teacher: str | None = None
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)


STAGE_FLAVORS = {"tiny-synthetic": lambda: StageConfig(num_frames=4), "1b": lambda: StageConfig(model="1b")}


def test_every_train_flavor_loads_and_round_trips(tmp_path: Path) -> None:
    for name in TRAIN_FLAVORS:
        cfg = load_config(TrainConfig, name)
        path = save_config(cfg, tmp_path / f"{name}.yaml")
        assert load_config(TrainConfig, path) == cfg


def test_reference_optimiser_facts_in_flavors() -> None:
    stage1, stage2, stage3 = (load_config(TrainConfig, f"stage{i}") for i in (1, 2, 3))
    assert stage1.optimizer.betas == (0.9, 0.98) and stage1.optimizer.eps == 1e-6
    assert stage1.optimizer.grad_clip == 3.0 and stage1.distributed.precision == "bf16"
    assert stage2.schedule.min_lr_ratio == 0.01 and stage2.optimizer.lr == 5e-5
    assert stage3.optimizer.grad_clip == 0.0 and stage3.distributed.precision == "fp16"
    assert stage3.optimizer.weight_decay == 0.02 and stage3.schedule.min_lr_ratio == 0.25
    assert all(c.distributed.zero_stage == 1 for c in (stage1, stage2, stage3))


def test_dotted_overrides_are_typed() -> None:
    cfg = load_config(
        TrainConfig,
        "tiny-cpu",
        ["optimizer.lr=1e-4", "max_steps=7", "optimizer.betas=[0.9, 0.95]", "distributed.precision=bf16",
         "logging.tensorboard=false", "checkpoint.resume=never", "distributed.backend=null"],
    )  # fmt: skip
    assert cfg.optimizer.lr == 1e-4 and isinstance(cfg.optimizer.lr, float)
    assert cfg.max_steps == 7
    assert cfg.optimizer.betas == (0.9, 0.95)
    assert cfg.distributed.precision == "bf16"
    assert cfg.logging.tensorboard is False
    assert cfg.checkpoint.resume == "never"
    assert cfg.distributed.backend is None


def test_stage_config_with_flavors_yaml_and_overrides(tmp_path: Path) -> None:
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("flavor: tiny-synthetic\nteacher: clip\ntrain:\n  optimizer:\n    lr: 3e-4\n")
    cfg = load_config(StageConfig, yaml_file, ["train.max_steps=5", "loss_weights.vtm=0.5"], flavors=STAGE_FLAVORS)
    assert cfg.num_frames == 4  # from the flavor
    assert cfg.teacher == "clip"
    assert cfg.train.optimizer.lr == 3e-4  # "3e-4" is a string to YAML 1.1; still read as a float
    assert cfg.train.max_steps == 5
    assert cfg.loss_weights == {"vtc": 1.0, "vtm": 0.5}
    assert load_config(StageConfig, "1b", flavors=STAGE_FLAVORS).model == "1b"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optimizer.lrr=1"], "unknown config key 'optimizer.lrr'; did you mean 'lr'?"),
        (["nope=1"], "unknown config key 'nope'"),
        (["max_steps=ten"], "config key 'max_steps': expected int, got 'ten'"),
        (["max_steps=1.5"], "config key 'max_steps': expected int"),
        (["optimizer.lr=fast"], "config key 'optimizer.lr': expected float"),
        (["distributed.precision=fp8"], "config key 'distributed.precision': expected one of"),
        (["distributed.zero_stage=4"], "config key 'distributed.zero_stage': expected one of [0, 1, 2, 3]"),
        (["optimizer.betas=[0.9]"], "config key 'optimizer.betas': expected 2 values"),
        (["logging.plots=maybe"], "config key 'logging.plots': expected bool"),
        (["optimizer=3"], "config key 'optimizer': expected OptimizerConfig"),
        (["max_steps"], "must look like key.sub=value"),
    ],
)
def test_bad_overrides_name_the_key(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(TrainConfig, None, overrides)
    assert message in str(err.value)


def test_bad_files_and_names(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config file not found: .*missing\.yaml"):
        load_config(TrainConfig, tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="unknown config flavor 'huge'; known flavors: stage1, stage2"):
        load_config(TrainConfig, "huge")
    bad_key = tmp_path / "bad_key.yaml"
    bad_key.write_text("optimizer:\n  weight_decay: 0.1\n  momentum: 0.9\n")
    with pytest.raises(ConfigError, match=r"bad_key\.yaml: unknown config key 'optimizer\.momentum'"):
        load_config(TrainConfig, bad_key)
    bad_yaml = tmp_path / "broken.yaml"
    bad_yaml.write_text("optimizer: [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml is not valid YAML"):
        load_config(TrainConfig, bad_yaml)
    bad_flavor = tmp_path / "bad_flavor.yaml"
    bad_flavor.write_text("flavor: enormous\n")
    with pytest.raises(ConfigError, match="unknown flavor 'enormous'"):
        load_config(TrainConfig, bad_flavor)


def test_to_dict_and_back_is_identity() -> None:
    cfg = apply_overrides(StageConfig(), ["train.optimizer.no_weight_decay_keywords=[pos_embed, temp]"])
    assert cfg.train.optimizer.no_weight_decay_keywords == ("pos_embed", "temp")
    assert config_from_dict(StageConfig, config_to_dict(cfg)) == cfg


def test_command_line_words() -> None:
    from iv2_train import parse_config_args

    cfg = parse_config_args(
        StageConfig, ["--local_rank=1", "tiny-synthetic", "train.max_steps=3", "--num_frames=2", "--local-rank", "0"],
        flavors=STAGE_FLAVORS,
    )  # fmt: skip
    assert (cfg.num_frames, cfg.train.max_steps) == (2, 3)
    assert parse_config_args(StageConfig, [], flavors=STAGE_FLAVORS, default="1b").model == "1b"
    with pytest.raises(ConfigError, match="unexpected argument 'extra'"):
        parse_config_args(StageConfig, ["1b", "extra"], flavors=STAGE_FLAVORS)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: TrainConfig(max_steps=0), "config key 'max_steps' has an invalid value: 0 (expected >= 1)"),
        (lambda: OptimizerConfig(betas=(0.9, 1.0)), "config key 'betas' has an invalid value: (0.9, 1.0)"),
        (lambda: ScheduleConfig(min_lr_ratio=1.5), "config key 'min_lr_ratio' has an invalid value: 1.5"),
        (
            lambda: DistributedConfig(precision="fp8"),
            "config key 'precision' has an invalid value: 'fp8' (expected one of ['fp32', 'bf16', 'fp16'])",
        ),
        (lambda: LoggingConfig(every_steps=0), "config key 'every_steps' has an invalid value: 0"),
        (lambda: EvaluationConfig(every_steps=-1), "config key 'every_steps' has an invalid value: -1"),
        (lambda: CheckpointConfig(keep_last=-2), "config key 'keep_last' has an invalid value: -2"),
    ],
)
def test_sections_check_their_values_when_built_in_python(build, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        build()
    assert message in str(err.value)


def test_value_errors_name_the_full_key_from_yaml_overrides_and_stage_configs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config key 'optimizer.eps' has an invalid value: 0.0 \(expected > 0\)"):
        load_config(TrainConfig, None, ["optimizer.eps=0"])
    with pytest.raises(ConfigError, match=r"config key 'train.evaluation.every_steps' has an invalid value: -3"):
        load_config(StageConfig, None, ["train.evaluation.every_steps=-3"], flavors=STAGE_FLAVORS)
    run = tmp_path / "run.yaml"
    run.write_text("flavor: tiny-synthetic\ntrain:\n  schedule:\n    warmup_steps: -1\n")
    with pytest.raises(
        ConfigError, match=r"run\.yaml: config key 'train.schedule.warmup_steps' has an invalid value: -1"
    ):
        load_config(StageConfig, run, flavors=STAGE_FLAVORS)


def test_check_config_catches_fields_changed_in_place() -> None:
    from iv2_train import check_config

    cfg = StageConfig()
    check_config(cfg)  # valid
    cfg.train.checkpoint.every_steps = 0
    with pytest.raises(ConfigError, match=r"config key 'train.checkpoint.every_steps' has an invalid value: 0"):
        check_config(cfg)
