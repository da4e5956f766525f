"""The shared training loop.

A stage hands the :class:`Trainer` a model whose ``forward(batch)`` returns a loss (a scalar tensor, or a
dict of scalar tensors with the total under ``"loss"``), data with a resumable position
(:class:`~iv2_train.data.ResumableData`) and a :class:`~iv2_train.config.TrainConfig`; optionally an
``evaluate`` function and an ``export`` hook. The Trainer does the rest: process group and device, the
strategy (one process, DDP or DeepSpeed ZeRO: :mod:`iv2_train.strategy`), AdamW groups and the lr schedule,
mixed precision, gradient accumulation and clipping, the non-finite guard, checkpoints and exact resume,
evaluation, metrics, progress, plots and the final safetensors export.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._paths import checkpoint_step
from .checkpoint import (
    atomic_checkpoint,
    export_safetensors,
    latest_checkpoint,
    list_checkpoints,
    remove_partial_checkpoints,
)
from .config import ConfigError, TrainConfig, check_config, save_config
from .data import ResumableData
from .distributed import (
    DistEnv,
    any_rank_true,
    barrier,
    get_rng_state,
    init_distributed,
    reduce_dict_mean,
    seed_everything,
    set_rng_state,
)
from .frozen import left_out_keys
from .metrics import EVAL_PREFIX, MetricsLogger, Progress, is_eval_record, is_train_record, plot_metrics, read_metrics
from .optim import build_param_groups, trainable_summary
from .strategy import StepOutcome, Strategy, move_to_device, strategy_class

log = logging.getLogger("iv2_train")

StepCallback = Callable[["Trainer", dict[str, float]], None]
EvaluateFn = Callable[["Trainer"], Mapping[str, Any]]
ExportFn = Callable[[dict[str, torch.Tensor]], Mapping[str, torch.Tensor]]

__all__ = ["NonFiniteLossError", "TrainResult", "Trainer", "move_to_device", "split_loss"]


class NonFiniteLossError(RuntimeError):
    """Training stopped because the loss or the gradients stayed non-finite for too many steps."""


@dataclasses.dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns."""

    step: int
    output_dir: Path
    history: list[dict[str, float]]  # the training rows logged during this call (empty when already finished)
    final_weights: Path | None  # on rank 0; None elsewhere and without export
    skipped_steps: int
    evaluations: list[dict[str, float]] = dataclasses.field(default_factory=list)  # eval rows of this call
    # The newest training row and evaluation row on record: this call's, or the log's when the run had
    # already finished (a rerun of a finished run resumes at max_steps and trains nothing). {} if none.
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    eval_metrics: dict[str, Any] = dataclasses.field(default_factory=dict)


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
            Teachers and frozen towers are marked with :func:`iv2_train.freeze` (eval mode kept; left out of
            checkpoints and the export on request).
        data: iterable of batches with ``state_dict()`` / ``load_state_dict()`` (e.g. ``ResumableBatches``,
            ``MetaLoader``).
        config: the training config.
        run_config: the full config to save next to the run (a stage's config); defaults to ``config``.
        param_groups: optimizer groups to use instead of :func:`build_param_groups`' defaults.
        layer_id_fn / num_layers: layer-wise lr decay assignment (see :func:`build_param_groups`).
        callbacks: ``fn(trainer, metrics)``, called on every rank after every optimizer step with the step's
            metrics; :meth:`log_metrics` adds rows to the run's log.
        evaluate: ``fn(trainer) -> {name: number}``, called on every rank every ``evaluation.every_steps``
            steps and after the last one, with the model in eval mode under ``torch.no_grad()`` (and the
            run's autocast). Return the same numbers on every rank (reduce them yourself); they are logged
            as ``eval/<name>``.
        export: ``fn(state_dict) -> state_dict`` giving the final export from the model's full state (frozen
            parts frozen with ``export=False`` already removed; ZeRO-3 gathered); called on rank 0 only.
            Default: the full state.
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
        evaluate: EvaluateFn | None = None,
        export: ExportFn | None = None,
    ) -> None:
        for name in ("state_dict", "load_state_dict", "__iter__"):
            if not hasattr(data, name):
                raise TypeError(f"data ({type(data).__name__}) lacks {name}(); see iv2_train.ResumableData")
        check_config(config)  # fields may have been changed in place since the config was built
        self.config = config
        self.run_config = run_config if run_config is not None else config
        self.data = data
        self.callbacks = list(callbacks)
        self.evaluate_fn = evaluate
        self.export_fn = export
        self.output_dir = Path(config.output_dir)
        self.resume_from = self._resolve_resume()
        self._refuse_newer_checkpoints()

        dist_cfg = config.distributed
        self.env: DistEnv = init_distributed(dist_cfg)
        strategy = dist_cfg.strategy
        if strategy == "auto":
            strategy = "ddp" if self.env.world_size > 1 else "single"
        _setup_logging(self.env.is_main)

        self.step = 0
        self.consecutive_nonfinite = 0
        self.skipped_steps = 0
        self.module = model  # the user's module, unwrapped
        self._metrics_log: MetricsLogger | None = None
        if param_groups is None:
            param_groups = build_param_groups(model, config.optimizer, num_layers=num_layers, layer_id_fn=layer_id_fn)
        counts = trainable_summary(model)  # before ZeRO-3 partitions the parameters away
        self.checkpoint_left_out = left_out_keys(model, "checkpoint")
        self.export_left_out = left_out_keys(model, "export")
        self.strategy: Strategy = strategy_class(strategy)(
            model, param_groups, config, self.env, checkpoint_left_out=self.checkpoint_left_out
        )
        if self.env.is_main:
            log.info(
                "%s on %d process(es), device %s, %s; %s trainable and %s frozen parameters%s; %s",
                strategy if strategy != "deepspeed" else f"deepspeed ZeRO-{dist_cfg.zero_stage}",
                self.env.world_size,
                self.env.device,
                dist_cfg.precision,
                f"{counts['trainable']:,}",
                f"{counts['frozen']:,}",
                f" ({len(self.checkpoint_left_out)} tensors left out of checkpoints)"
                if self.checkpoint_left_out
                else "",
                f"resuming from {self.resume_from}" if self.resume_from else "fresh start",
            )

    # What a stage may want from the strategy, under the names it expects.
    @property
    def model(self) -> nn.Module:
        """What forward runs through: the module, DDP or the DeepSpeed engine."""
        return self.strategy.model

    @property
    def optimizer(self) -> Any:
        return self.strategy.optimizer

    @property
    def scheduler(self) -> Any:
        return self.strategy.scheduler

    def prepare_batch(self, batch: Any) -> Any:
        """A batch moved (and, under DeepSpeed bf16/fp16, cast) as the training step does it; for ``evaluate``."""
        return self.strategy.prepare_batch(batch)

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
            start = checkpoint_step(self.resume_from) or 0
        newer = [path for step, path in list_checkpoints(self.output_dir) if step > start]
        if newer:
            where = f"checkpoint {self.resume_from}" if self.resume_from is not None else "a fresh start"
            raise ConfigError(
                f"output_dir {self.output_dir} holds checkpoints newer than {where} "
                f"({', '.join(p.name for p in newer)}): they would replace this run's own checkpoints and be "
                "resumed by checkpoint.resume=auto; move them away or use another output_dir"
            )

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

        # Rows after the resumed step were written by a run that died before its next checkpoint: dropped.
        self._metrics_log = MetricsLogger(
            self.output_dir, enabled=env.is_main, tensorboard=cfg.logging.tensorboard, resume_step=self.step
        )
        progress = Progress(cfg.max_steps, self.step, kind=cfg.logging.progress, enabled=env.is_main)
        history: list[dict[str, float]] = []
        evaluations: list[dict[str, float]] = []
        batches = iter(self.data)
        try:
            while self.step < cfg.max_steps:
                started = time.perf_counter()
                metrics = self._train_step(batches)
                self.step += 1
                metrics["step_seconds"] = time.perf_counter() - started
                if self.step % cfg.logging.every_steps == 0 or self.step == cfg.max_steps:
                    self._metrics_log.log(self.step, metrics)
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
                every = cfg.evaluation.every_steps
                if self.evaluate_fn is not None and (self.step == cfg.max_steps or (every and self.step % every == 0)):
                    # Before the step's checkpoint: a resume from it never repeats nor loses this evaluation.
                    evaluations.append({"step": self.step, **self.evaluate()})
                if self.step % cfg.checkpoint.every_steps == 0 or self.step == cfg.max_steps:
                    self.save_checkpoint()
        finally:
            progress.close()
            self._metrics_log.close()
            self._metrics_log = None

        final = None
        if cfg.checkpoint.export_final:
            final = self.export_weights(self.output_dir / "final" / "model.safetensors")
        metrics_path = self.output_dir / "metrics.jsonl"
        if env.is_main and cfg.logging.plots and metrics_path.exists():
            plot_metrics(metrics_path, self.output_dir / "plots")
        barrier()
        if env.is_main:
            log.info("finished at step %d (%d skipped); outputs in %s", self.step, self.skipped_steps, self.output_dir)
        records = read_metrics(metrics_path) if metrics_path.exists() else []  # every rank sees the same files
        return TrainResult(
            self.step,
            self.output_dir,
            history,
            final,
            self.skipped_steps,
            evaluations=evaluations,
            metrics=_last(records, is_train_record),
            eval_metrics=_last(records, is_eval_record),
        )

    # ---------------------------------------------------------------------------------------------------
    def _train_step(self, batches: Iterator[Any]) -> dict[str, float]:
        """One optimizer step over ``grad_accum_steps`` micro-batches, whatever the strategy."""
        strategy = self.strategy
        accum = self.config.grad_accum_steps
        strategy.train_mode()
        strategy.zero_grad()
        parts_sum: dict[str, float] = {}
        loss_sum = 0.0
        any_bad = False
        for micro in range(accum):
            last = micro == accum - 1
            batch = strategy.prepare_batch(next(batches))
            with strategy.micro_step(last):
                loss, parts = split_loss(strategy.forward(batch))
                loss_value = float(loss.detach().float())
                # One collective, so that every rank takes the same branch: a bad loss anywhere skips the step
                # everywhere.
                if any_rank_true(not math.isfinite(loss_value)):
                    any_bad = True
                    strategy.backward_nonfinite(loss, last)
                    continue
                strategy.backward(loss, last)
            loss_sum += loss_value / accum
            for key, value in parts.items():
                parts_sum[key] = parts_sum.get(key, 0.0) + float(value.detach().float()) / accum
        lr = strategy.lr
        outcome = strategy.step(skip=any_bad)
        metrics = reduce_dict_mean({"loss": loss_sum, **parts_sum})  # averaged over ranks, one collective
        if any_bad:
            metrics["loss"] = float("nan")
        self._count(outcome, any_bad)
        metrics.update({"lr": lr, "grad_norm": outcome.grad_norm, "skipped": float(outcome.skipped)})
        return metrics

    def _count(self, outcome: StepOutcome, bad_loss: bool) -> None:
        if outcome.skipped:
            self.skipped_steps += 1
        if outcome.bad:
            self.consecutive_nonfinite += 1
            if self.env.is_main:
                what = "loss" if bad_loss else "gradient norm"
                log.warning("step %d: non-finite %s, update skipped", self.step + 1, what)
        else:
            self.consecutive_nonfinite = 0

    # ---------------------------------------------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        """Collective: run ``evaluate`` now and log its numbers as ``eval/<name>`` at the current step.

        The model is in eval mode under ``torch.no_grad()`` (and the run's autocast) while it runs; training
        mode is restored afterwards (frozen parts stay in eval)."""
        if self.evaluate_fn is None:
            raise RuntimeError("Trainer(evaluate=...) was not given")
        self.module.eval()
        try:
            with torch.no_grad(), self.strategy.autocast():
                values = self.evaluate_fn(self)
        finally:
            self.strategy.train_mode()
        if not isinstance(values, Mapping):
            raise TypeError(f"evaluate must return a mapping of numbers, got {type(values).__name__}")
        metrics = {
            (key if key.startswith(EVAL_PREFIX) else EVAL_PREFIX + key): _number(value, key)
            for key, value in values.items()
        }
        self.log_metrics(metrics)
        if self.env.is_main:
            log.info("step %d: %s", self.step, "  ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
        return metrics

    def log_metrics(self, values: Mapping[str, Any]) -> None:
        """Add a row ``{"step": trainer.step, **values}`` to the run's metrics.jsonl, TensorBoard and plots
        (rank 0 writes; other ranks return). For callbacks and stage code; works during and after :meth:`fit`."""
        row = {str(key): _number(value, key) for key, value in values.items()}
        if self._metrics_log is not None:
            self._metrics_log.log(self.step, row)
            return
        logger = MetricsLogger(self.output_dir, enabled=self.env.is_main, tensorboard=self.config.logging.tensorboard)
        try:
            logger.log(self.step, row)
        finally:
            logger.close()

    # ---------------------------------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        """Collective: write a complete checkpoint for the current step (atomically), prune old ones."""
        trainer_state = {
            "step": self.step,
            "world_size": self.env.world_size,
            "strategy": self.strategy.name,
            "consecutive_nonfinite": self.consecutive_nonfinite,
            "skipped_steps": self.skipped_steps,
        }
        with atomic_checkpoint(self.output_dir, self.step, self.config.checkpoint.keep_last) as tmp:
            strategy_state = self.strategy.save(tmp)
            if self.env.is_main:
                torch.save({**trainer_state, **strategy_state}, tmp / "trainer.pt")
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
        saved_strategy = trainer_state.get("strategy", "deepspeed" if (path / "deepspeed").is_dir() else None)
        if saved_strategy is not None and (saved_strategy == "deepspeed") != (self.strategy.name == "deepspeed"):
            raise RuntimeError(
                f"checkpoint {path} was written by the {saved_strategy} strategy, this run uses "
                f"{self.strategy.name}; resume with the same distributed.strategy"
            )
        self.strategy.load(path, trainer_state)
        self.step = int(trainer_state["step"])
        self.consecutive_nonfinite = int(trainer_state.get("consecutive_nonfinite", 0))
        self.skipped_steps = int(trainer_state.get("skipped_steps", 0))
        rank_state = torch.load(rank_file, map_location="cpu", weights_only=False)
        self.data.load_state_dict(rank_state["data"])
        set_rng_state(rank_state["rng"])

    def export_weights(self, path: str | Path) -> Path | None:
        """Collective: write the final export as safetensors (rank 0 writes; returns the path there).

        The model's full state (ZeRO-3 gathered), minus parts frozen with ``export=False``, passed through the
        ``export`` hook when one was given."""
        path = Path(path)
        state = self.strategy.full_state(self.export_left_out)
        if self.env.is_main:
            assert state is not None
            if self.export_fn is not None:
                exported = self.export_fn(state)
                if not isinstance(exported, Mapping) or not all(isinstance(v, torch.Tensor) for v in exported.values()):
                    raise TypeError("the export hook must return a mapping of names to tensors")
                state = dict(exported)
            export_safetensors(state, path)
        barrier()
        return path if self.env.is_main else None


def _number(value: Any, key: Any) -> float:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value.detach())
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise TypeError(f"metric {key!r} must be a number or a one-element tensor, got {type(value).__name__}")


def _last(records: list[dict[str, Any]], keep: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    return next((dict(r) for r in reversed(records) if keep(r)), {})


def _setup_logging(is_main: bool) -> None:
    """Give the ``iv2_train`` logger a stderr handler unless the application configured one."""
    if log.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("[iv2-train] %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO if is_main else logging.WARNING)
