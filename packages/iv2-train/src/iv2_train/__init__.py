"""iv2-train: the training runtime shared by the iv2 stages (no model code).

Configs (typed dataclasses, flavors, YAML, dotted overrides), start-up under a single process, torchrun or
the DeepSpeed launcher, strategies (one process, DDP, DeepSpeed ZeRO), AdamW groups and a cosine schedule,
frozen parts (teachers), evaluation during training, exact checkpoint/resume, a non-finite guard, the
MetaLoader data mixer, metrics/progress/plots and a memory estimator. See README.md for the Trainer API.

The names below are imported on first use (PEP 562), so that ``import iv2_train`` and ``iv2-train --help``
do not load torch.
"""

from __future__ import annotations

from importlib.metadata import version as _version
from typing import TYPE_CHECKING

from iv2_data.lazy import lazy_exports

__version__ = _version("iv2-train")

# public name -> submodule that defines it
_EXPORTS: dict[str, str] = {
    # checkpoints and weights
    "CheckpointWriteError": "checkpoint",
    "atomic_checkpoint": "checkpoint",
    "checkpoint_dir": "checkpoint",
    "export_safetensors": "checkpoint",
    "latest_checkpoint": "checkpoint",
    "list_checkpoints": "checkpoint",
    "load_safetensors": "checkpoint",
    "prune_checkpoints": "checkpoint",
    "read_safetensors": "checkpoint",
    "unwrap_model": "checkpoint",
    # configs
    "TRAIN_FLAVORS": "config",
    "CheckpointConfig": "config",
    "ConfigError": "config",
    "DistributedConfig": "config",
    "EvaluationConfig": "config",
    "LoggingConfig": "config",
    "OptimizerConfig": "config",
    "ScheduleConfig": "config",
    "TrainConfig": "config",
    "apply_overrides": "config",
    "check_config": "config",
    "config_from_dict": "config",
    "config_to_dict": "config",
    "load_config": "config",
    "parse_config_args": "config",
    "save_config": "config",
    # data positions and the mixer
    "MetaLoader": "data",
    "ResumableBatches": "data",
    "ResumableData": "data",
    # processes and collectives
    "DistEnv": "distributed",
    "all_gather_no_grad": "distributed",
    "all_gather_with_grad": "distributed",
    "all_reduce_mean": "distributed",
    "any_rank_true": "distributed",
    "barrier": "distributed",
    "broadcast_object": "distributed",
    "get_rank": "distributed",
    "get_rng_state": "distributed",
    "get_world_size": "distributed",
    "init_distributed": "distributed",
    "main_process_first": "distributed",
    "reduce_dict_mean": "distributed",
    "seed_everything": "distributed",
    "set_rng_state": "distributed",
    "shutdown_distributed": "distributed",
    "usable_cpus": "distributed",
    # memory estimates
    "MemoryEstimate": "estimate",
    "activation_bytes": "estimate",
    "count_parameters": "estimate",
    "estimate_memory": "estimate",
    "estimate_step_time": "estimate",
    # frozen parts
    "FrozenSpec": "frozen",
    "freeze": "frozen",
    "frozen_spec": "frozen",
    "left_out_keys": "frozen",
    # logging
    "MetricsLogger": "metrics",
    "Progress": "metrics",
    "plot_metrics": "metrics",
    "read_metrics": "metrics",
    # optimizer and schedule
    "build_optimizer": "optim",
    "build_param_groups": "optim",
    "build_scheduler": "optim",
    "default_layer_id": "optim",
    "lr_multiplier": "optim",
    "uses_weight_decay": "optim",
    # strategies
    "DDPStrategy": "strategy",
    "DeepSpeedStrategy": "strategy",
    "SingleProcessStrategy": "strategy",
    "StepOutcome": "strategy",
    "Strategy": "strategy",
    "move_to_device": "strategy",
    "strategy_class": "strategy",
    # the loop
    "NonFiniteLossError": "trainer",
    "TrainResult": "trainer",
    "Trainer": "trainer",
    "split_loss": "trainer",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


if TYPE_CHECKING:  # what static analysis and IDEs see; the table above is what runs
    from .checkpoint import (  # noqa: F401
        CheckpointWriteError,
        atomic_checkpoint,
        checkpoint_dir,
        export_safetensors,
        latest_checkpoint,
        list_checkpoints,
        load_safetensors,
        prune_checkpoints,
        read_safetensors,
        unwrap_model,
    )
    from .config import (  # noqa: F401
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
        check_config,
        config_from_dict,
        config_to_dict,
        load_config,
        parse_config_args,
        save_config,
    )
    from .data import MetaLoader, ResumableBatches, ResumableData  # noqa: F401
    from .distributed import (  # noqa: F401
        DistEnv,
        all_gather_no_grad,
        all_gather_with_grad,
        all_reduce_mean,
        any_rank_true,
        barrier,
        broadcast_object,
        get_rank,
        get_rng_state,
        get_world_size,
        init_distributed,
        main_process_first,
        reduce_dict_mean,
        seed_everything,
        set_rng_state,
        shutdown_distributed,
        usable_cpus,
    )
    from .estimate import MemoryEstimate, activation_bytes, count_parameters, estimate_memory, estimate_step_time  # noqa: F401
    from .frozen import FrozenSpec, freeze, frozen_spec, left_out_keys  # noqa: F401
    from .metrics import MetricsLogger, Progress, plot_metrics, read_metrics  # noqa: F401
    from .optim import (  # noqa: F401
        build_optimizer,
        build_param_groups,
        build_scheduler,
        default_layer_id,
        lr_multiplier,
        uses_weight_decay,
    )
    from .strategy import (  # noqa: F401
        DDPStrategy,
        DeepSpeedStrategy,
        SingleProcessStrategy,
        StepOutcome,
        Strategy,
        move_to_device,
        strategy_class,
    )
    from .trainer import NonFiniteLossError, Trainer, TrainResult, split_loss  # noqa: F401
