"""The shared training loop.

A stage hands the :class:`Trainer` a model whose ``forward(batch)`` returns a loss (a scalar tensor, or a
dict of scalar tensors with the total under ``"loss"``), data with a resumable position
(:class:`~iv2_train.data.ResumableData`) and a :class:`~iv2_train.config.TrainConfig`. The Trainer does the
rest: process group and device, DDP or DeepSpeed ZeRO, AdamW groups and the lr schedule, mixed precision,
gradient accumulation and clipping, the non-finite guard, checkpoints and exact resume, metrics, progress,
plots and the final safetensors export.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import (
    atomic_checkpoint,
    export_safetensors,
    latest_checkpoint,
    list_checkpoints,
    load_safetensors,
    remove_partial_checkpoints,
    unwrap_model,
)
from .config import ConfigError, TrainConfig, _deep_merge, save_config
from .data import ResumableData
from .distributed import (
    DistEnv,
    barrier,
    get_rng_state,
    init_distributed,
    reduce_dict_mean,
    seed_everything,
    set_rng_state,
)
from .metrics import MetricsLogger, Progress, plot_metrics
from .optim import build_optimizer, build_param_groups, build_scheduler, trainable_summary

log = logging.getLogger("iv2_train")

StepCallback = Callable[["Trainer", dict[str, float]], None]


class NonFiniteLossError(RuntimeError):
    """Training stopped because the loss or the gradients stayed non-finite for too many steps."""


@dataclasses.dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns."""

    step: int
    output_dir: Path
    history: list[dict[str, float]]  # the metrics logged by this process during this call
    final_weights: Path | None
    skipped_steps: int


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


def split_loss(output: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(total loss, named parts to log) from a model output: a scalar tensor or a dict of them."""
    if isinstance(output, torch.Tensor):
        if output.numel() != 1:
            raise ValueError(f"model must return a scalar loss, got a tensor of shape {tuple(output.shape)}")
        return output.reshape(()), {}
    if isinstance(output, Mapping):
        parts = {str(k): v for k, v in output.items() if isinstance(v, torch.Tensor) and v.numel() == 1}
        if "loss" in parts:
            total = parts.pop("loss")
        elif parts:
            total = sum(parts.values())  # type: ignore[assignment]
        else:
            raise ValueError(f"model returned a dict without scalar tensors (keys: {sorted(output)})")
        return total.reshape(()), parts
    raise TypeError(f"model must return a loss tensor or a dict of them, got {type(output).__name__}")


class Trainer:
    """Runs ``config.max_steps`` optimizer steps of ``model`` on ``data``; see the package README.

    Args:
        model: ``model(batch)`` returns the loss (scalar tensor) or a dict with ``"loss"`` and other scalars
            to log. Parameters with ``requires_grad=False`` are frozen: no optimizer state, not updated.
        data: iterable of batches with ``state_dict()`` / ``load_state_dict()`` (e.g. ``ResumableBatches``).
        config: the training config.
        run_config: the full config to save next to the run (a stage's config); defaults to ``config``.
        param_groups: optimizer groups to use instead of :func:`build_param_groups`' defaults.
        layer_id_fn / num_layers: layer-wise lr decay assignment (see :func:`build_param_groups`).
        callbacks: called on every rank after every optimizer step with the step's metrics.
    """

    def __init__(
        self,
        model: nn.Module,
        data: ResumableData,
        config: TrainConfig,
        *,
        run_config: Any = None,
        param_groups: list[dict[str, Any]] | None = None,
        layer_id_fn: Callable[[str, int], int] | None = None,
        num_layers: int | None = None,
        callbacks: Sequence[StepCallback] = (),
    ) -> None:
        for name in ("state_dict", "load_state_dict", "__iter__"):
            if not hasattr(data, name):
                raise TypeError(f"data ({type(data).__name__}) lacks {name}(); see iv2_train.ResumableData")
        _check_config(config)
        self.config = config
        self.run_config = run_config if run_config is not None else config
        self.data = data
        self.callbacks = list(callbacks)
        self.output_dir = Path(config.output_dir)
        self.resume_from = self._resolve_resume()
        self._refuse_newer_checkpoints()

        dist_cfg = config.distributed
        self.env: DistEnv = init_distributed(dist_cfg)
        strategy = dist_cfg.strategy
        if strategy == "auto":
            strategy = "ddp" if self.env.world_size > 1 else "single"
        self.strategy = strategy

        _setup_logging(self.env.is_main)

        self.step = 0
        self.consecutive_nonfinite = 0
        self.skipped_steps = 0
        self.module = model  # the user's module, unwrapped
        if param_groups is None:
            param_groups = build_param_groups(model, config.optimizer, num_layers=num_layers, layer_id_fn=layer_id_fn)
        self._trainable = [p for group in param_groups for p in group["params"]]

        if strategy == "deepspeed":
            self._init_deepspeed(model, param_groups)
        else:
            model.to(self.env.device)
            self.optimizer = build_optimizer(param_groups, config.optimizer)
            self.scheduler = build_scheduler(self.optimizer, config.schedule, config.max_steps)
            self.scaler = torch.amp.GradScaler(self.env.device.type, enabled=dist_cfg.precision == "fp16")
            if strategy == "ddp":
                from torch.nn.parallel import DistributedDataParallel

                self.model: nn.Module = DistributedDataParallel(
                    model,
                    device_ids=[self.env.device] if self.env.device.type == "cuda" else None,
                    find_unused_parameters=dist_cfg.find_unused_parameters,
                )
            else:
                self.model = model
            self.engine = None
        if self.env.is_main:
            counts = trainable_summary(model)
            log.info(
                "%s on %d process(es), device %s, %s; %s trainable and %s frozen parameters; %s",
                strategy if strategy != "deepspeed" else f"deepspeed ZeRO-{dist_cfg.zero_stage}",
                self.env.world_size,
                self.env.device,
                dist_cfg.precision,
                f"{counts['trainable']:,}",
                f"{counts['frozen']:,}",
                f"resuming from {self.resume_from}" if self.resume_from else "fresh start",
            )

    # ---------------------------------------------------------------------------------------------------
    def _resolve_resume(self) -> Path | None:
        resume = self.config.checkpoint.resume
        if resume == "never":
            return None
        if resume == "auto":
            return latest_checkpoint(self.output_dir)
        path = Path(resume)
        if not (path / "trainer.pt").is_file():
            raise ConfigError(f"checkpoint.resume: {path} is not a checkpoint directory (no trainer.pt)")
        return path

    def _refuse_newer_checkpoints(self) -> None:
        """Checkpoints in ``output_dir`` newer than the resume point belong to another run: keep-last-K pruning
        (by step number) would delete this run's new checkpoints in their favour, and a later ``resume=auto``
        would continue that other run. Refuse before any work instead of mixing the two."""
        start = 0
        if self.resume_from is not None:
            match = re.match(r"^step_(\d+)$", self.resume_from.name)
            start = int(match.group(1)) if match else 0
        newer = [path for step, path in list_checkpoints(self.output_dir) if step > start]
        if newer:
            where = f"checkpoint {self.resume_from}" if self.resume_from is not None else "a fresh start"
            raise ConfigError(
                f"output_dir {self.output_dir} holds checkpoints newer than {where} "
                f"({', '.join(p.name for p in newer)}): they would replace this run's own checkpoints and be "
                "resumed by checkpoint.resume=auto; move them away or use another output_dir"
            )

    def _init_deepspeed(self, model: nn.Module, param_groups: list[dict[str, Any]]) -> None:
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
        optimizer = build_optimizer(param_groups, cfg.optimizer)
        scheduler = build_scheduler(optimizer, cfg.schedule, cfg.max_steps)
        engine, ds_optimizer, _, ds_scheduler = deepspeed.initialize(
            model=model,
            optimizer=optimizer,
            lr_scheduler=scheduler,
            config=ds_config,
            dist_init_required=False,
        )
        self.engine = engine
        self.model = engine
        # The torch AdamW inside DeepSpeed's wrapper (ZeRO steps it on its flat fp32 partitions); the
        # non-finite guard switches its step() off for a skipped step.
        self._base_optimizer = optimizer
        self.optimizer = ds_optimizer
        self.scheduler = ds_scheduler
        self.scaler = torch.amp.GradScaler("cpu", enabled=False)  # DeepSpeed scales fp16 losses itself

    # ---------------------------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        """Train to ``max_steps`` (resuming first when a checkpoint is found) and return the result."""
        cfg = self.config
        env = self.env
        if env.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            save_config(self.run_config, self.output_dir / "config.yaml")
            remove_partial_checkpoints(self.output_dir)
        barrier()
        if self.resume_from is not None:
            self.load_checkpoint(self.resume_from)
            if env.is_main:
                log.info("resumed from %s at step %d", self.resume_from, self.step)
        else:
            seed_everything(cfg.seed, env.rank)

        metrics_log = MetricsLogger(
            self.output_dir, enabled=env.is_main, tensorboard=cfg.logging.tensorboard, resume_step=self.step
        )
        progress = Progress(cfg.max_steps, self.step, kind=cfg.logging.progress, enabled=env.is_main)
        history: list[dict[str, float]] = []
        batches = iter(self.data)
        try:
            while self.step < cfg.max_steps:
                started = time.perf_counter()
                metrics = self._train_step(batches)
                self.step += 1
                metrics["step_seconds"] = time.perf_counter() - started
                if self.step % cfg.logging.every_steps == 0 or self.step == cfg.max_steps:
                    metrics_log.log(self.step, metrics)
                    history.append({"step": self.step, **metrics})
                    progress.update(self.step, {"loss": metrics["loss"], "lr": metrics["lr"]})
                for callback in self.callbacks:
                    callback(self, metrics)
                if self.consecutive_nonfinite >= cfg.max_consecutive_nonfinite:
                    good = latest_checkpoint(self.output_dir)
                    raise NonFiniteLossError(
                        f"stopped at step {self.step}: loss or gradients were non-finite for "
                        f"{self.consecutive_nonfinite} consecutive steps (max_consecutive_nonfinite="
                        f"{cfg.max_consecutive_nonfinite}); last good checkpoint: {good or 'none'}"
                    )
                if self.step % cfg.checkpoint.every_steps == 0 or self.step == cfg.max_steps:
                    self.save_checkpoint()
        finally:
            progress.close()
            metrics_log.close()

        final = None
        if cfg.checkpoint.export_final:
            final = self.export_weights(self.output_dir / "final" / "model.safetensors")
        if env.is_main and cfg.logging.plots and metrics_log.path.exists():
            plot_metrics(metrics_log.path, self.output_dir / "plots")
        barrier()
        if env.is_main:
            log.info("finished at step %d (%d skipped); outputs in %s", self.step, self.skipped_steps, self.output_dir)
        return TrainResult(self.step, self.output_dir, history, final, self.skipped_steps)

    # ---------------------------------------------------------------------------------------------------
    def _train_step(self, batches: Iterator[Any]) -> dict[str, float]:
        if self.engine is not None:
            return self._train_step_deepspeed(batches)
        cfg = self.config
        accum = cfg.grad_accum_steps
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        parts_sum: dict[str, float] = {}
        loss_sum = 0.0
        loss_finite = True
        for micro in range(accum):
            batch = move_to_device(next(batches), self.env.device)
            no_sync = micro < accum - 1 and hasattr(self.model, "no_sync")
            with self.model.no_sync() if no_sync else contextlib.nullcontext():  # type: ignore[operator]
                with self.env.autocast():
                    loss, parts = split_loss(self.model(batch))
                loss_value = float(loss.detach())
                loss_finite &= math.isfinite(loss_value)
                self.scaler.scale(loss.float() / accum).backward()
            loss_sum += loss_value / accum
            for key, value in parts.items():
                parts_sum[key] = parts_sum.get(key, 0.0) + float(value.detach()) / accum

        self.scaler.unscale_(self.optimizer)
        max_norm = cfg.optimizer.grad_clip if cfg.optimizer.grad_clip > 0 else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self._trainable, max_norm, foreach=False))
        lr = max(self.scheduler.get_last_lr())
        # Averaged over ranks in one collective; "nonfinite" > 0 means some rank saw a bad loss.
        metrics = reduce_dict_mean({"loss": loss_sum, **parts_sum, "nonfinite": 0.0 if loss_finite else 1.0})
        bad_loss = metrics.pop("nonfinite") > 0
        bad_grad = not math.isfinite(grad_norm)
        if self.scaler.is_enabled() and bad_grad and not bad_loss:
            # fp16 overflow: the scaler skips this step and lowers its scale; normal early in training.
            self.scaler.step(self.optimizer)
            self.scaler.update()
            skipped, counted = True, False
        elif bad_loss or bad_grad:
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler.is_enabled():
                self.scaler.update()
            skipped, counted = True, True
        else:
            self.scaler.step(self.optimizer)
            self.scaler.update()
            skipped, counted = False, False
        self.scheduler.step()
        self._after_step(skipped, counted, bad_loss, bad_grad)
        metrics.update({"lr": lr, "grad_norm": grad_norm, "skipped": float(skipped)})
        return metrics

    def _train_step_deepspeed(self, batches: Iterator[Any]) -> dict[str, float]:
        engine = self.engine
        assert engine is not None
        cfg = self.config
        accum = cfg.grad_accum_steps
        float_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.distributed.precision)
        engine.train()
        parts_sum: dict[str, float] = {}
        loss_sum = 0.0
        any_bad = False
        lr = max(self.scheduler.get_last_lr()) if self.scheduler is not None else cfg.optimizer.lr
        overflows_before = int(getattr(engine, "skipped_steps", 0))
        for micro in range(accum):
            batch = move_to_device(next(batches), self.env.device, float_dtype)
            loss, parts = split_loss(engine(batch))
            loss_value = float(loss.detach().float())
            reduced = reduce_dict_mean({"bad": 0.0 if math.isfinite(loss_value) else 1.0})
            if reduced["bad"] > 0:
                # Never backpropagate a non-finite loss: a zero loss built from the parameters keeps ZeRO's
                # gradient hooks and reductions in step on every rank while adding nothing.
                any_bad = True
                zero = sum((p * 0).sum() for p in self._trainable)
                engine.backward(zero)
            else:
                engine.backward(loss)
                loss_sum += loss_value / accum
                for key, value in parts.items():
                    parts_sum[key] = parts_sum.get(key, 0.0) + float(value.detach().float()) / accum
            if any_bad and micro == accum - 1:
                # Skip the update for real: a zero (or partly good) gradient would still move the weights
                # through Adam's momentum and weight decay and advance its moments. DeepSpeed still runs its
                # boundary bookkeeping (gradient reduction and clearing, scheduler), the AdamW step is a no-op.
                with _step_disabled(self._base_optimizer):
                    engine.step()
            else:
                engine.step()
        grad_norm = engine.get_global_grad_norm()
        grad_norm = float(grad_norm) if grad_norm is not None else float("nan")
        metrics = reduce_dict_mean({"loss": loss_sum if not any_bad else float("nan"), **parts_sum})
        # DeepSpeed's fp16 loss scaler skips overflowing steps on its own; count them as skipped, not as bad.
        overflow = int(getattr(engine, "skipped_steps", 0)) > overflows_before and not any_bad
        self._after_step(any_bad or overflow, any_bad, any_bad, False)
        metrics.update({"lr": lr, "grad_norm": grad_norm, "skipped": float(any_bad or overflow)})
        return metrics

    def _after_step(self, skipped: bool, counted: bool, bad_loss: bool, bad_grad: bool) -> None:
        if skipped:
            self.skipped_steps += 1
        if counted:
            self.consecutive_nonfinite += 1
            if self.env.is_main:
                what = "loss" if bad_loss else "gradient norm"
                log.warning("step %d: non-finite %s, update skipped", self.step + 1, what)
        else:
            self.consecutive_nonfinite = 0

    # ---------------------------------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        """Collective: write a complete checkpoint for the current step (atomically), prune old ones."""
        cfg = self.config
        trainer_state = {
            "step": self.step,
            "world_size": self.env.world_size,
            "consecutive_nonfinite": self.consecutive_nonfinite,
            "skipped_steps": self.skipped_steps,
        }
        with atomic_checkpoint(self.output_dir, self.step, cfg.checkpoint.keep_last) as tmp:
            if self.engine is not None:
                self.engine.save_checkpoint(str(tmp / "deepspeed"), tag="state", save_latest=False)
                if self.env.is_main:
                    torch.save(trainer_state, tmp / "trainer.pt")
            elif self.env.is_main:
                export_safetensors(self.module, tmp / "model.safetensors")
                trainer_state.update(
                    optimizer=self.optimizer.state_dict(),
                    scheduler=self.scheduler.state_dict(),
                    scaler=self.scaler.state_dict(),
                )
                torch.save(trainer_state, tmp / "trainer.pt")
            rank_state = {"rng": get_rng_state(), "data": self.data.state_dict()}
            torch.save(rank_state, tmp / f"rank_{self.env.rank:05d}.pt")

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore everything :meth:`save_checkpoint` wrote (all ranks call it)."""
        path = Path(path)
        # Our own files hold Python RNG tuples and NumPy states, which weights_only cannot read.
        trainer_state = torch.load(path / "trainer.pt", map_location="cpu", weights_only=False)
        saved_world = trainer_state.get("world_size", self.env.world_size)
        rank_file = path / f"rank_{self.env.rank:05d}.pt"
        if saved_world != self.env.world_size or not rank_file.is_file():
            raise RuntimeError(
                f"checkpoint {path} was written by {saved_world} processes, this run has "
                f"{self.env.world_size}; "
                "exact resume needs the same number (load the weights with load_safetensors instead)"
            )
        if self.engine is not None:
            load_path, _ = self.engine.load_checkpoint(
                str(path / "deepspeed"),
                tag="state",
                load_optimizer_states=True,
                load_lr_scheduler_states=True,
            )
            if load_path is None:
                raise RuntimeError(f"DeepSpeed could not load its checkpoint from {path / 'deepspeed'}")
        else:
            load_safetensors(self.module, path / "model.safetensors")
            self.optimizer.load_state_dict(trainer_state["optimizer"])
            self.scheduler.load_state_dict(trainer_state["scheduler"])
            self.scaler.load_state_dict(trainer_state["scaler"])
        self.step = int(trainer_state["step"])
        self.consecutive_nonfinite = int(trainer_state.get("consecutive_nonfinite", 0))
        self.skipped_steps = int(trainer_state.get("skipped_steps", 0))
        rank_state = torch.load(rank_file, map_location="cpu", weights_only=False)
        self.data.load_state_dict(rank_state["data"])
        set_rng_state(rank_state["rng"])

    def export_weights(self, path: str | Path) -> Path | None:
        """Collective: write the model's full weights as safetensors (rank 0 writes; ZeRO-3 is gathered)."""
        path = Path(path)
        if self.engine is not None and self.config.distributed.zero_stage == 3:
            state = self.engine._zero3_consolidated_16bit_state_dict()  # collective gather
            if self.env.is_main:
                export_safetensors(state, path)
        elif self.env.is_main:
            export_safetensors(unwrap_model(self.module), path)
        barrier()
        return path if self.env.is_main else None


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


def _setup_logging(is_main: bool) -> None:
    """Give the ``iv2_train`` logger a stderr handler unless the application configured one."""
    if log.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("[iv2-train] %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO if is_main else logging.WARNING)


def _check_config(cfg: TrainConfig) -> None:
    """Value checks the type checker cannot do; raised before any process group or model work."""
    checks = [
        ("max_steps", cfg.max_steps >= 1),
        ("grad_accum_steps", cfg.grad_accum_steps >= 1),
        ("max_consecutive_nonfinite", cfg.max_consecutive_nonfinite >= 1),
        ("optimizer.lr", cfg.optimizer.lr >= 0),
        ("optimizer.betas", all(0 <= beta < 1 for beta in cfg.optimizer.betas)),
        ("optimizer.eps", cfg.optimizer.eps > 0),
        ("optimizer.weight_decay", cfg.optimizer.weight_decay >= 0),
        ("optimizer.grad_clip", cfg.optimizer.grad_clip >= 0),
        ("optimizer.layer_decay", 0 < cfg.optimizer.layer_decay <= 1),
        ("schedule.warmup_steps", cfg.schedule.warmup_steps >= 0),
        ("schedule.min_lr_ratio", 0 <= cfg.schedule.min_lr_ratio <= 1),
        ("checkpoint.every_steps", cfg.checkpoint.every_steps >= 1),
        ("logging.every_steps", cfg.logging.every_steps >= 1),
    ]
    for key, ok in checks:
        if not ok:
            section, _, leaf = key.rpartition(".")
            value = getattr(getattr(cfg, section) if section else cfg, leaf)
            raise ConfigError(f"config key {key!r} has an invalid value: {value!r}")
