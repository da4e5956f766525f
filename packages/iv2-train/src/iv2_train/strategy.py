"""How the model runs: one process, DDP or DeepSpeed. The Trainer writes the training step once against
:class:`Strategy`; each strategy owns wrapping, the backward pass and accumulation boundaries, clipping, the
optimizer step (or its skip), and saving and loading its part of a checkpoint.

A checkpoint holds the model's state minus the frozen parts that :func:`iv2_train.freeze` left out
(``checkpoint=False``); loading checks that exactly those keys are missing.

- :class:`SingleProcessStrategy`: ``model.safetensors`` + optimizer / scheduler / grad-scaler state in
  ``trainer.pt``; bf16 / fp16 autocast, a ``GradScaler`` for fp16.
- :class:`DDPStrategy`: the same, with ``DistributedDataParallel`` and ``no_sync()`` on the micro-batches
  before an accumulation boundary.
- :class:`DeepSpeedStrategy`: the DeepSpeed engine (ZeRO 0–3) with our AdamW and schedule; its checkpoint
  is the engine's own (``deepspeed/``, frozen parameters excluded) plus ``frozen.safetensors`` for the frozen
  parameters that stay in checkpoints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import export_safetensors, read_safetensors
from .config import TrainConfig, _deep_merge
from .distributed import DistEnv
from .frozen import check_loaded_keys, state_without
from .optim import build_optimizer, build_scheduler

__all__ = [
    "DDPStrategy",
    "DeepSpeedStrategy",
    "SingleProcessStrategy",
    "StepOutcome",
    "Strategy",
    "move_to_device",
    "strategy_class",
]


def move_to_device(batch: Any, device: torch.device, float_dtype: torch.dtype | None = None) -> Any:
    """Move every tensor in a (nested) dict / list / tuple to ``device``; optionally cast floating tensors."""
    if isinstance(batch, torch.Tensor):
        batch = batch.to(device, non_blocking=True)
        if float_dtype is not None and batch.is_floating_point():
            batch = batch.to(float_dtype)
        return batch
    if isinstance(batch, Mapping):
        moved = {k: move_to_device(v, device, float_dtype) for k, v in batch.items()}
        try:
            return type(batch)(moved)  # type: ignore[call-arg]
        except TypeError:  # a mapping type that cannot be built from a dict
            return moved
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(move_to_device(v, device, float_dtype) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(v, device, float_dtype) for v in batch)
    return batch


@dataclasses.dataclass(frozen=True)
class StepOutcome:
    """What happened at an accumulation boundary."""

    grad_norm: float
    skipped: bool  # the update was not applied
    bad: bool  # counts towards max_consecutive_nonfinite (an fp16 loss-scale overflow does not)


class Strategy:
    """Base class; also the plain single-process strategy.

    The Trainer's step, for ``grad_accum_steps`` micro-batches::

        strategy.train_mode(); strategy.zero_grad()
        for each micro-batch:
            with strategy.micro_step(last):
                loss = strategy.forward(strategy.prepare_batch(batch))
                (strategy.backward if finite on every rank else strategy.backward_nonfinite)(loss, last)
        outcome = strategy.step(skip=any_bad_loss)

    Attributes: ``module`` (the user's model), ``model`` (what forward runs through: the module, DDP or the
    engine), ``optimizer``, ``scheduler``.
    """

    name = "single"

    def __init__(
        self,
        module: nn.Module,
        param_groups: list[dict[str, Any]],
        config: TrainConfig,
        env: DistEnv,
        *,
        checkpoint_left_out: set[str] = frozenset(),  # type: ignore[assignment]
    ) -> None:
        self.module = module
        self.config = config
        self.env = env
        self.accum = config.grad_accum_steps
        self.trainable = [p for group in param_groups for p in group["params"]]
        self.checkpoint_left_out = set(checkpoint_left_out)
        self._setup(param_groups)

    def _setup(self, param_groups: list[dict[str, Any]]) -> None:
        self.module.to(self.env.device)
        self.optimizer: Any = build_optimizer(param_groups, self.config.optimizer)
        self.scheduler: Any = build_scheduler(self.optimizer, self.config.schedule, self.config.max_steps)
        fp16 = self.config.distributed.precision == "fp16"
        self.scaler = torch.amp.GradScaler(self.env.device.type, enabled=fp16)
        self.model: nn.Module = self._wrap(self.module)

    def _wrap(self, module: nn.Module) -> nn.Module:
        return module

    # -- one optimizer step -------------------------------------------------------------------------------
    @property
    def lr(self) -> float:
        """The largest group lr of the step about to be taken."""
        return max(self.scheduler.get_last_lr())

    def train_mode(self) -> None:
        """Training mode (parts frozen with :func:`iv2_train.freeze` stay in eval)."""
        self.model.train()

    def prepare_batch(self, batch: Any) -> Any:
        """The batch as the model wants it: tensors on the device (and cast where the weights are)."""
        return move_to_device(batch, self.env.device)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        return self.env.autocast()

    def micro_step(self, last: bool) -> contextlib.AbstractContextManager[Any]:
        """Context for one micro-batch's forward and backward; ``last`` = it ends an accumulation."""
        return contextlib.nullcontext()

    def forward(self, batch: Any) -> Any:
        with self.autocast():
            return self.model(batch)

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def backward(self, loss: torch.Tensor, last: bool) -> None:
        self.scaler.scale(loss.float() / self.accum).backward()

    def backward_nonfinite(self, loss: torch.Tensor, last: bool) -> None:
        """The backward of a micro-batch whose loss was non-finite on some rank; the step will be skipped.
        Every rank still runs one, so that DDP's reductions stay in step (DDP with find_unused_parameters
        expects the forward's own graph); the gradients are discarded at the boundary."""
        self.backward(loss, last)

    def step(self, skip: bool) -> StepOutcome:
        """End of an accumulation: unscale, clip, then step, or skip (``skip``: a rank saw a bad loss)."""
        self.scaler.unscale_(self.optimizer)
        max_norm = self.config.optimizer.grad_clip if self.config.optimizer.grad_clip > 0 else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.trainable, max_norm, foreach=False))
        if skip:
            self.zero_grad()
            if self.scaler.is_enabled():
                self.scaler.update()
            outcome = StepOutcome(grad_norm, skipped=True, bad=True)
        elif not math.isfinite(grad_norm) and self.scaler.is_enabled():
            # fp16 overflow: the scaler skips this step and lowers its scale; normal early in training.
            self.scaler.step(self.optimizer)
            self.scaler.update()
            outcome = StepOutcome(grad_norm, skipped=True, bad=False)
        elif not math.isfinite(grad_norm):
            self.zero_grad()
            outcome = StepOutcome(grad_norm, skipped=True, bad=True)
        else:
            self.scaler.step(self.optimizer)
            self.scaler.update()
            outcome = StepOutcome(grad_norm, skipped=False, bad=False)
        self.scheduler.step()
        return outcome

    # -- checkpoints and export ---------------------------------------------------------------------------
    def save(self, directory: Path) -> dict[str, Any]:
        """Collective: write this strategy's files into ``directory``; returns what goes into ``trainer.pt``."""
        if not self.env.is_main:
            return {}
        state = state_without(self.module.state_dict(), self.checkpoint_left_out)
        export_safetensors(state, directory / "model.safetensors")
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def load(self, directory: Path, trainer_state: Mapping[str, Any]) -> None:
        """Restore what :meth:`save` wrote (every rank)."""
        path = directory / "model.safetensors"
        result = self.module.load_state_dict(read_safetensors(path), strict=False)
        check_loaded_keys(result.missing_keys, result.unexpected_keys, self.checkpoint_left_out, str(path))
        self.optimizer.load_state_dict(trainer_state["optimizer"])
        self.scheduler.load_state_dict(trainer_state["scheduler"])
        self.scaler.load_state_dict(trainer_state["scaler"])

    def full_state(self, left_out: set[str]) -> dict[str, torch.Tensor] | None:
        """Collective: the model's whole state minus ``left_out`` on rank 0 (None elsewhere)."""
        return state_without(self.module.state_dict(), left_out) if self.env.is_main else None


SingleProcessStrategy = Strategy


class DDPStrategy(Strategy):
    """``DistributedDataParallel``; gradients are all-reduced only on the last micro-batch of a step."""

    name = "ddp"

    def _wrap(self, module: nn.Module) -> nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(
            module,
            device_ids=[self.env.device] if self.env.device.type == "cuda" else None,
            find_unused_parameters=self.config.distributed.find_unused_parameters,
        )

    def micro_step(self, last: bool) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext() if last else self.model.no_sync()  # type: ignore[operator]


class DeepSpeedStrategy(Strategy):
    """The DeepSpeed engine with ZeRO ``distributed.zero_stage``, our torch AdamW and lr schedule handed to it.

    ``gradient_accumulation_steps``, ``gradient_clipping`` and bf16/fp16 come from the config (entries in
    ``distributed.deepspeed`` are merged over them). Under bf16/fp16 the engine casts the model, so floating
    tensors in the batch are cast to match. A skipped step runs the engine's boundary bookkeeping with the
    AdamW step switched off, so weights and Adam's moments stay as they were.
    """

    name = "deepspeed"

    def _setup(self, param_groups: list[dict[str, Any]]) -> None:
        import deepspeed

        cfg = self.config
        ds_config: dict[str, Any] = {
            # The micro-batch size is the data's business; DeepSpeed only uses it for throughput reports.
            "train_micro_batch_size_per_gpu": 1,
            "gradient_accumulation_steps": cfg.grad_accum_steps,
            "gradient_clipping": cfg.optimizer.grad_clip,
            "zero_optimization": {"stage": cfg.distributed.zero_stage},
            "bf16": {"enabled": cfg.distributed.precision == "bf16"},
            "fp16": {"enabled": cfg.distributed.precision == "fp16", "initial_scale_power": 16},
            "zero_allow_untested_optimizer": True,
            "steps_per_print": 2**31 - 1,
        }
        ds_config = _deep_merge(ds_config, cfg.distributed.deepspeed)
        # The torch AdamW inside DeepSpeed's wrapper (ZeRO steps it on its flat fp32 partitions); a skipped
        # step switches its step() off.
        self.base_optimizer = build_optimizer(param_groups, cfg.optimizer)
        scheduler = build_scheduler(self.base_optimizer, cfg.schedule, cfg.max_steps)
        engine, optimizer, _, ds_scheduler = deepspeed.initialize(
            model=self.module,
            optimizer=self.base_optimizer,
            lr_scheduler=scheduler,
            config=ds_config,
            dist_init_required=False,
        )
        self.engine = engine
        self.model = engine
        self.optimizer = optimizer
        self.scheduler = ds_scheduler
        self.scaler = torch.amp.GradScaler("cpu", enabled=False)  # DeepSpeed scales fp16 losses itself
        self.zero_stage = cfg.distributed.zero_stage
        self.float_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.distributed.precision)
        # Frozen parameters never enter the engine's checkpoint (exclude_frozen_parameters): DeepSpeed would
        # otherwise also store ZeRO-2/3 fragments of every frozen tensor, teachers included.
        self.frozen_keys = {n for n, p in self.module.named_parameters() if not p.requires_grad}

    def prepare_batch(self, batch: Any) -> Any:
        return move_to_device(batch, self.env.device, self.float_dtype)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()  # the engine cast the weights themselves

    def zero_grad(self) -> None:
        pass  # the engine clears gradients at accumulation boundaries

    def backward_nonfinite(self, loss: torch.Tensor, last: bool) -> None:
        # Never backpropagate a non-finite loss into ZeRO's gradient buffers: an exact zero built from every
        # trainable parameter keeps the engine's gradient hooks and reductions in step on every rank.
        zero = sum((p * 0).sum() for p in self.trainable)
        self.backward(zero, last)  # type: ignore[arg-type]

    def backward(self, loss: torch.Tensor, last: bool) -> None:
        self.engine.backward(loss)  # scales by 1 / gradient_accumulation_steps itself
        if not last:
            self.engine.step()  # a non-boundary micro-step: bookkeeping only

    def step(self, skip: bool) -> StepOutcome:
        overflows_before = int(getattr(self.engine, "skipped_steps", 0))
        if skip:
            # Skip the update for real: a zero (or partly good) gradient would still move the weights through
            # Adam's momentum and weight decay and advance its moments.
            with _step_disabled(self.base_optimizer):
                self.engine.step()
        else:
            self.engine.step()
        norm = self.engine.get_global_grad_norm()
        grad_norm = float(norm) if norm is not None else float("nan")
        # DeepSpeed's fp16 loss scaler skips overflowing steps on its own: skipped, but not a bad step.
        overflow = int(getattr(self.engine, "skipped_steps", 0)) > overflows_before and not skip
        return StepOutcome(grad_norm, skipped=skip or overflow, bad=skip)

    # -- checkpoints and export ---------------------------------------------------------------------------
    def save(self, directory: Path) -> dict[str, Any]:
        self.engine.save_checkpoint(
            str(directory / "deepspeed"), tag="state", save_latest=False, exclude_frozen_parameters=True
        )
        kept_frozen = self.frozen_keys - self.checkpoint_left_out
        if kept_frozen:
            state = self._collect(kept_frozen)
            if state is not None:
                export_safetensors(state, directory / "frozen.safetensors")
        return {}

    def load(self, directory: Path, trainer_state: Mapping[str, Any]) -> None:
        engine_dir = directory / "deepspeed"

        def load_module(src: Mapping[str, torch.Tensor], dst: nn.Module) -> None:
            result = dst.load_state_dict(src, strict=False)
            check_loaded_keys(result.missing_keys, result.unexpected_keys, self.frozen_keys, str(engine_dir))

        load_path, _ = self.engine.load_checkpoint(
            str(engine_dir),
            tag="state",
            load_optimizer_states=True,
            load_lr_scheduler_states=True,
            custom_load_fn=load_module,
        )
        if load_path is None:
            raise RuntimeError(f"DeepSpeed could not load its checkpoint from {engine_dir}")
        kept_frozen = self.frozen_keys - self.checkpoint_left_out
        if kept_frozen:
            path = directory / "frozen.safetensors"
            state = read_safetensors(path)
            missing = sorted(kept_frozen - set(state))
            if missing:
                raise RuntimeError(f"{path} lacks frozen parameter(s) {missing[:8]}")
            self._assign({key: state[key] for key in sorted(kept_frozen)})

    def full_state(self, left_out: set[str]) -> dict[str, torch.Tensor] | None:
        return self._collect(set(self.module.state_dict()) - left_out)

    def _zero3_param(self, tensor: Any) -> bool:
        return self.zero_stage == 3 and hasattr(tensor, "ds_id")

    def _collect(self, keys: set[str]) -> dict[str, torch.Tensor] | None:
        """Collective: the tensors named ``keys`` as full CPU copies on rank 0 (ZeRO-3 partitions gathered)."""
        import deepspeed

        params = dict(self.module.named_parameters(remove_duplicate=False))
        state = self.module.state_dict()
        out: dict[str, torch.Tensor] = {}
        for key in state:  # the same order on every rank: each gather is a collective
            if key not in keys:
                continue
            param = params.get(key)
            if param is not None and self._zero3_param(param):
                with deepspeed.zero.GatheredParameters([param], modifier_rank=None):
                    if self.env.is_main:
                        out[key] = param.detach().to("cpu", copy=True)
            elif self.env.is_main:
                out[key] = state[key].detach().to("cpu", copy=True)
        return out if self.env.is_main else None

    def _assign(self, values: Mapping[str, torch.Tensor]) -> None:
        """Every rank: copy ``values`` into the named parameters (through a ZeRO-3 gather where partitioned)."""
        import deepspeed

        params = dict(self.module.named_parameters(remove_duplicate=False))
        for key, value in values.items():
            param = params[key]
            if self._zero3_param(param):
                with deepspeed.zero.GatheredParameters([param], modifier_rank=0), torch.no_grad():
                    if self.env.is_main:
                        param.copy_(value)
            else:
                with torch.no_grad():
                    param.copy_(value)


@contextlib.contextmanager
def _step_disabled(optimizer: torch.optim.Optimizer) -> Iterator[None]:
    """``optimizer.step()`` does nothing inside the block (an instance attribute shadows the method)."""
    own = vars(optimizer).get("step")  # an instance-level step (a wrapper's patch) is put back as it was
    optimizer.step = lambda *args, **kwargs: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        if own is None:
            del optimizer.step
        else:
            optimizer.step = own  # type: ignore[method-assign]


_STRATEGIES: dict[str, type[Strategy]] = {"single": Strategy, "ddp": DDPStrategy, "deepspeed": DeepSpeedStrategy}


def strategy_class(name: str) -> type[Strategy]:
    """The strategy called ``name``: ``single``, ``ddp`` or ``deepspeed``."""
    if name not in _STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; known: {', '.join(_STRATEGIES)}")
    return _STRATEGIES[name]
