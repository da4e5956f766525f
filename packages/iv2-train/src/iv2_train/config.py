"""Typed configuration: dataclasses, named flavors, YAML files and dotted command-line overrides.

The loader is generic so that each stage package can describe its own config as a dataclass (usually with a
``train: TrainConfig`` field) and get the same behaviour: strict keys, checked types, clear errors that name
the offending key or file, and a YAML copy saved next to every run.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config could not be built: unknown key, wrong type, bad value, bad override or missing file."""


class _InvalidValue(ConfigError):
    """A field holds a value its section does not accept; ``key`` grows its section prefix on the way up."""

    def __init__(self, key: str, value: Any, expected: str) -> None:
        self.key, self.value, self.expected = key, value, expected
        super().__init__(f"config key {key!r} has an invalid value: {value!r} (expected {expected})")

    def under(self, prefix: str) -> _InvalidValue:
        return _InvalidValue(prefix + self.key, self.value, self.expected) if prefix else self


def _require(section: Any, key: str, ok: bool, expected: str) -> None:
    if not ok:
        raise _InvalidValue(key, getattr(section, key), expected)


@functools.cache
def _literal_fields(cls: type) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    hints = typing.get_type_hints(cls)
    return tuple(
        (f.name, typing.get_args(hints[f.name]))
        for f in dataclasses.fields(cls)
        if typing.get_origin(hints[f.name]) is Literal
    )


def _check_literals(section: Any) -> None:
    """Literal-typed fields hold one of their values (also when the section is built in Python)."""
    for name, allowed in _literal_fields(type(section)):
        value = getattr(section, name)
        if not any(value == a and type(value) is type(a) for a in allowed):
            raise _InvalidValue(name, value, f"one of {list(allowed)}")


def check_config(cfg: Any, prefix: str = "") -> None:
    """Re-run the checks of ``cfg`` and every nested config section (after fields were changed in place);
    raises :class:`ConfigError` naming the dotted key."""
    for field in dataclasses.fields(cfg):
        value = getattr(cfg, field.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            check_config(value, f"{prefix}{field.name}.")
    post_init = getattr(cfg, "__post_init__", None)
    if post_init is not None:
        try:
            post_init()
        except _InvalidValue as err:
            raise err.under(prefix) from None


# --------------------------------------------------------------------------------------------------------
# The training runtime's own config
# --------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class OptimizerConfig:
    """AdamW and what decides each parameter group's learning rate and weight decay."""

    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.05
    # Per-layer lr scale decay**(num_layers + 1 - layer_id); 1.0 switches it off.
    layer_decay: float = 1.0
    # Besides every 1-D parameter (norm weights, biases, scalars): names containing one of these get no decay.
    no_weight_decay_keywords: tuple[str, ...] = ("pos_embed", "cls_token")
    # Max global gradient norm; 0 disables clipping (the norm is still computed and logged).
    grad_clip: float = 0.0

    def __post_init__(self) -> None:
        _require(self, "lr", self.lr >= 0, ">= 0")
        _require(self, "betas", len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "two values in [0, 1)")
        _require(self, "eps", self.eps > 0, "> 0")
        _require(self, "weight_decay", self.weight_decay >= 0, ">= 0")
        _require(self, "layer_decay", 0 < self.layer_decay <= 1, "in (0, 1]")
        _require(self, "grad_clip", self.grad_clip >= 0, ">= 0 (0 = no clipping)")


@dataclasses.dataclass
class ScheduleConfig:
    """Learning-rate schedule over ``TrainConfig.max_steps`` optimizer steps."""

    kind: Literal["cosine", "constant"] = "cosine"
    # Linear warmup from 0 to the peak lr over this many optimizer steps.
    warmup_steps: int = 0
    # The cosine ends at min_lr_ratio * lr (a floor), e.g. 0.01 for stage 2.
    min_lr_ratio: float = 0.0
    # How the floor enters: "rescale" = floor + (1 - floor)·cosine, warmup from 0 (stage 1, the official
    # single-modality cosine_scheduler); "clamp" = max(floor, ·) of the plain warmup and cosine, so warmup
    # starts at the floor and the cosine is cut off at it (stages 2 and 3: official multi_modality and
    # VideoChat2 get_cosine_schedule_with_warmup with min_lr_multi).
    min_lr_mode: Literal["rescale", "clamp"] = "rescale"

    def __post_init__(self) -> None:
        _check_literals(self)
        _require(self, "warmup_steps", self.warmup_steps >= 0, ">= 0")
        _require(self, "min_lr_ratio", 0 <= self.min_lr_ratio <= 1, "in [0, 1]")


@dataclasses.dataclass
class DistributedConfig:
    """How processes, devices and precision are set up."""

    # "auto": DDP when several processes were started, plain single process otherwise.
    strategy: Literal["auto", "ddp", "deepspeed"] = "auto"
    zero_stage: Literal[0, 1, 2, 3] = 1
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    # None: NCCL on CUDA, gloo on CPU.
    backend: str | None = None
    # "auto": CUDA when available, else CPU.
    device: str = "auto"
    find_unused_parameters: bool = False
    # Extra raw DeepSpeed config entries, merged over the ones derived from this config.
    deepspeed: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_literals(self)
        _require(self, "device", bool(self.device), "'auto', 'cpu', 'cuda' or 'cuda:N'")


@dataclasses.dataclass
class CheckpointConfig:
    every_steps: int = 1000
    keep_last: int = 3
    # "auto": resume from the newest checkpoint in output_dir if there is one; "never"; or a checkpoint path.
    resume: str = "auto"
    # Write the final model weights to output_dir/final/model.safetensors.
    export_final: bool = True

    def __post_init__(self) -> None:
        _require(self, "every_steps", self.every_steps >= 1, ">= 1")
        _require(self, "keep_last", self.keep_last >= 0, ">= 0 (0 keeps all)")
        _require(self, "resume", bool(self.resume), "'auto', 'never' or a checkpoint directory")


@dataclasses.dataclass
class LoggingConfig:
    every_steps: int = 10
    progress: Literal["rich", "tqdm", "none"] = "rich"
    tensorboard: bool = True
    plots: bool = True

    def __post_init__(self) -> None:
        _check_literals(self)
        _require(self, "every_steps", self.every_steps >= 1, ">= 1")


@dataclasses.dataclass
class EvaluationConfig:
    """When the Trainer's ``evaluate`` function runs (it always runs after the last step too)."""

    # Every this many optimizer steps; 0 = only at the end.
    every_steps: int = 0

    def __post_init__(self) -> None:
        _require(self, "every_steps", self.every_steps >= 0, ">= 0 (0 = only at the end)")


@dataclasses.dataclass
class TrainConfig:
    """Everything the shared training loop needs; stage configs embed one as their ``train`` field."""

    output_dir: str = "runs/default"
    max_steps: int = 1000
    grad_accum_steps: int = 1
    seed: int = 0
    # Non-finite loss or gradients skip the step; this many in a row stop the run.
    max_consecutive_nonfinite: int = 5
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)
    distributed: DistributedConfig = dataclasses.field(default_factory=DistributedConfig)
    checkpoint: CheckpointConfig = dataclasses.field(default_factory=CheckpointConfig)
    logging: LoggingConfig = dataclasses.field(default_factory=LoggingConfig)
    evaluation: EvaluationConfig = dataclasses.field(default_factory=EvaluationConfig)

    def __post_init__(self) -> None:
        _require(self, "output_dir", bool(self.output_dir), "a directory")
        _require(self, "max_steps", self.max_steps >= 1, ">= 1")
        _require(self, "grad_accum_steps", self.grad_accum_steps >= 1, ">= 1")
        _require(self, "max_consecutive_nonfinite", self.max_consecutive_nonfinite >= 1, ">= 1")


def _tiny_cpu() -> TrainConfig:
    return TrainConfig(
        output_dir="runs/tiny-cpu",
        max_steps=20,
        optimizer=OptimizerConfig(lr=1e-3),
        schedule=ScheduleConfig(warmup_steps=2),
        checkpoint=CheckpointConfig(every_steps=10, keep_last=2),
        logging=LoggingConfig(every_steps=1, progress="tqdm", tensorboard=False),
    )


def _stage1() -> TrainConfig:
    # REFERENCE d: DeepSpeed AdamW (0.9, 0.98), eps 1e-6, wd 0.05, clip 3, bf16, ZeRO-1;
    # lr 1.5e-4·B/256 with B = 4096, min_lr 1e-5·B/256, warmup 40 of 301 epochs.
    return TrainConfig(
        output_dir="runs/stage1",
        max_steps=301 * 268,  # 1.1M clips / 4096 per step ≈ 268 steps an epoch
        optimizer=OptimizerConfig(lr=2.4e-3, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.05, grad_clip=3.0),
        schedule=ScheduleConfig(warmup_steps=40 * 268, min_lr_ratio=1e-5 / 1.5e-4),
        distributed=DistributedConfig(strategy="deepspeed", zero_stage=1, precision="bf16"),
    )


def _stage2() -> TrainConfig:
    # REFERENCE e: AdamW lr 5e-5, (0.9, 0.98), wd 0.05, clip 3, bf16, ZeRO-1;
    # 1 of 5 epochs warmup, floor 0.01·lr. eps 1e-8: the official multi_modality setup_deepspeed_config
    # writes DeepSpeed Adam (adamw mode) with eps 1e-8 (1e-6 is stage 1's).
    return TrainConfig(
        output_dir="runs/stage2",
        max_steps=5 * 1000,
        optimizer=OptimizerConfig(lr=5e-5, betas=(0.9, 0.98), eps=1e-8, weight_decay=0.05, grad_clip=3.0),
        schedule=ScheduleConfig(warmup_steps=1000, min_lr_ratio=0.01, min_lr_mode="clamp"),
        distributed=DistributedConfig(strategy="deepspeed", zero_stage=1, precision="bf16"),
    )


def _stage3() -> TrainConfig:
    # REFERENCE k: AdamW (0.9, 0.999), wd 0.02, no clipping, fp16, ZeRO-1; stage-3 lr 2e-5, min ×0.25.
    return TrainConfig(
        output_dir="runs/stage3",
        max_steps=3 * 1000,
        optimizer=OptimizerConfig(lr=2e-5, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.02, grad_clip=0.0),
        schedule=ScheduleConfig(warmup_steps=600, min_lr_ratio=0.25, min_lr_mode="clamp"),
        distributed=DistributedConfig(strategy="deepspeed", zero_stage=1, precision="fp16"),
    )


TRAIN_FLAVORS: dict[str, Callable[[], TrainConfig]] = {
    "tiny-cpu": _tiny_cpu,
    "stage1": _stage1,
    "stage2": _stage2,
    "stage3": _stage3,
}


# --------------------------------------------------------------------------------------------------------
# Generic loading
# --------------------------------------------------------------------------------------------------------


def load_config(
    cls: type[T],
    source: str | Path | None = None,
    overrides: Sequence[str] = (),
    *,
    flavors: Mapping[str, Callable[[], T]] | None = None,
) -> T:
    """Build a ``cls`` config from a flavor name or a YAML file, then apply ``key.sub=value`` overrides.

    ``source`` is a flavor name (looked up in ``flavors``), a path to a YAML file, or None for the defaults.
    A YAML file may start from a flavor with a top-level ``flavor: NAME`` key. Every key and type is
    checked here, so a bad config fails before any work starts, with the offending key in the message.
    """
    flavors = dict(flavors or {})
    if cls is TrainConfig and not flavors:
        flavors = dict(TRAIN_FLAVORS)  # type: ignore[arg-type]
    if source is None:
        cfg = cls()
    elif str(source) in flavors:
        cfg = flavors[str(source)]()
    else:
        path = Path(source)
        looks_like_file = path.suffix in (".yaml", ".yml", ".json") or "/" in str(source)
        if not path.is_file():
            if looks_like_file:
                raise ConfigError(f"config file not found: {path}")
            known = ", ".join(sorted(flavors)) or "(none)"
            raise ConfigError(f"unknown config flavor {str(source)!r}; known flavors: {known}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path} is not valid YAML: {err}") from err
        if not isinstance(data, Mapping):
            raise ConfigError(f"config file {path} must hold a mapping at the top, got {type(data).__name__}")
        data = dict(data)
        base_name = data.pop("flavor", None)
        if base_name is not None:
            if base_name not in flavors:
                known = ", ".join(sorted(flavors)) or "(none)"
                raise ConfigError(f"{path}: unknown flavor {base_name!r}; known flavors: {known}")
            base = config_to_dict(flavors[base_name]())
            data = _deep_merge(base, data)
        try:
            cfg = config_from_dict(cls, data)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from err
    return apply_overrides(cfg, overrides)


def config_from_dict(cls: type[T], data: Mapping[str, Any], *, prefix: str = "") -> T:
    """Strictly build dataclass ``cls`` from a nested mapping: unknown keys and wrong types raise."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(_unknown_key_message(prefix + str(key), list(fields)))
        kwargs[key] = _coerce(value, hints[key], prefix + key)
    try:
        return cls(**kwargs)
    except _InvalidValue as err:  # raised by the section's __post_init__: name the full dotted key
        raise err.under(prefix) from None


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A plain, YAML-friendly nested dict (tuples become lists)."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, Mapping):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, Path):
            return str(value)
        return value

    return plain(cfg)


def save_config(cfg: Any, path: str | Path) -> Path:
    """Write ``cfg`` as YAML; ``load_config(type(cfg), path)`` reads it back equal."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    return path


def apply_overrides(cfg: T, overrides: Sequence[str]) -> T:
    """A copy of ``cfg`` with ``dotted.key=value`` overrides applied (values parsed as YAML scalars)."""
    data = config_to_dict(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        dotted, raw = item.split("=", 1)
        dotted = dotted.strip()
        if dotted.startswith("--"):
            dotted = dotted[2:]
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node: Any = data
        node_cls: Any = type(cfg)
        parts = dotted.split(".")
        for depth, part in enumerate(parts):
            here = ".".join(parts[: depth + 1])
            names = [f.name for f in dataclasses.fields(node_cls)] if dataclasses.is_dataclass(node_cls) else []
            if dataclasses.is_dataclass(node_cls) and part not in names:
                raise ConfigError(_unknown_key_message(here, names))
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {'.'.join(parts[:depth])} is not a section")
            if depth == len(parts) - 1:
                node[part] = value
            else:
                if node.get(part) is None or not isinstance(node.get(part), dict):
                    node[part] = {} if node.get(part) is None else node[part]
                node = node[part]
                node_cls = typing.get_type_hints(node_cls).get(part) if dataclasses.is_dataclass(node_cls) else None
                node_cls = _strip_optional(node_cls)
    return config_from_dict(type(cfg), data)


# --------------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------------


def _unknown_key_message(dotted: str, known: Sequence[str]) -> str:
    leaf = dotted.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(leaf, list(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown config key {dotted!r}{hint} (known: {', '.join(known)})"


def _deep_merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _strip_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against annotation ``tp``; convert only where lossless (int→float, list→tuple)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    wrong = ConfigError(f"config key {key!r}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")

    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if value is None or not isinstance(value, Mapping):
            raise wrong
        return config_from_dict(tp, value, prefix=key + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
        raise wrong
    if origin is Literal:
        for allowed in args:
            if value == allowed and type(value) is type(allowed):
                return allowed
        raise ConfigError(f"config key {key!r}: expected one of {list(args)}, got {value!r}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise wrong
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            items = [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
        elif origin is tuple and args:
            if len(value) != len(args):
                raise ConfigError(f"config key {key!r}: expected {len(args)} values, got {len(value)}: {value!r}")
            items = [_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
        else:
            item_tp = args[0] if args else Any
            items = [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise wrong
        val_tp = args[1] if len(args) == 2 else Any
        return {str(k): _coerce(v, val_tp, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise wrong
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise wrong
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" as a string
            try:
                return float(value)
            except ValueError:
                raise wrong from None
        raise wrong
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # e.g. resume=100 from the command line
        raise wrong
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        raise wrong
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise wrong
    return value


def parse_config_args(
    cls: type[T],
    argv: Sequence[str],
    *,
    flavors: Mapping[str, Callable[[], T]] | None = None,
    default: str | None = None,
) -> T:
    """Config from command-line words: ``[FLAVOR_OR_YAML] [key.sub=value ...]``.

    The first word without ``=`` is the flavor name or YAML path (else ``default``); the rest are dotted
    overrides, ``--key.sub=value`` accepted too. ``--local_rank``/``--local-rank`` (added by the DeepSpeed
    launcher) are ignored: the rank comes from the environment.
    """
    source: str | None = default
    source_given = False
    overrides: list[str] = []
    words = list(argv)
    i = 0
    while i < len(words):
        word = words[i]
        if word.startswith(("--local_rank", "--local-rank")):
            i += 1 if "=" in word else 2
            continue
        if "=" in word:
            overrides.append(word)
        elif not source_given and not overrides:
            source, source_given = word, True
        else:
            raise ConfigError(f"unexpected argument {word!r}: expected FLAVOR_OR_YAML then key.sub=value overrides")
        i += 1
    return load_config(cls, source, overrides, flavors=flavors)
