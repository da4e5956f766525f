"""Single-process Trainer tests (no process group): resume, guard, outputs, bad input."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from iv2_train import (
    ConfigError,
    NonFiniteLossError,
    ResumableBatches,
    TrainConfig,
    Trainer,
    export_safetensors,
    freeze,
    list_checkpoints,
    load_config,
    load_safetensors,
    read_metrics,
    read_safetensors,
)


class Regressor(nn.Module):
    """Tiny model with dropout (exercises RNG restore) and a frozen part (must never change)."""

    def __init__(self, nan_calls: frozenset[int] = frozenset()) -> None:
        super().__init__()
        self.frozen = nn.Linear(6, 6)
        self.frozen.requires_grad_(False)
        self.net = nn.Sequential(nn.Linear(6, 12), nn.GELU(), nn.Dropout(0.2), nn.Linear(12, 1))
        self.nan_calls = nan_calls
        self.calls = 0

    def forward(self, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        self.calls += 1
        x, y = batch
        pred = self.net(torch.tanh(self.frozen(x))).squeeze(-1)
        mse = nn.functional.mse_loss(pred.float(), y)
        loss = mse * float("nan") if self.calls in self.nan_calls else mse
        return {"loss": loss, "mse": mse}


def dataset(n: int = 40) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(7)
    x = torch.randn(n, 6, generator=g)
    y = x.sum(1) + 0.1 * torch.randn(n, generator=g)
    return list(zip(x, y))


def make(output_dir: Path, *overrides: str, nan_calls: frozenset[int] = frozenset(), callbacks=()) -> Trainer:
    cfg = load_config(
        TrainConfig,
        "tiny-cpu",
        [f"output_dir={output_dir}", "max_steps=6", "checkpoint.every_steps=2", "logging.progress=none",
         "logging.plots=false", "logging.tensorboard=false", *overrides],
    )  # fmt: skip
    torch.manual_seed(0)
    return Trainer(Regressor(nan_calls), ResumableBatches(dataset(), batch_size=4, seed=3), cfg, callbacks=callbacks)


class Crash(Exception):
    pass


def crash_after(step: int):
    def callback(trainer: Trainer, metrics: dict[str, float]) -> None:
        if trainer.step == step:
            raise Crash

    return callback


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_resume_after_crash_is_exact(tmp_path: Path, precision: str) -> None:
    extra = ["grad_accum_steps=2", "optimizer.grad_clip=0.5", f"distributed.precision={precision}"]
    straight = make(tmp_path / "a", *extra).fit()

    with pytest.raises(Crash):
        make(tmp_path / "b", *extra, callbacks=[crash_after(5)]).fit()
    assert [s for s, _ in list_checkpoints(tmp_path / "b")] == [2, 4]
    resumed_trainer = make(tmp_path / "b", *extra)
    assert resumed_trainer.resume_from == tmp_path / "b" / "checkpoints" / "step_00000004"
    resumed = resumed_trainer.fit()

    assert [r["step"] for r in resumed.history] == [5, 6]
    want = [r["loss"] for r in straight.history]
    got = [r["loss"] for r in read_metrics(tmp_path / "b" / "metrics.jsonl")]
    assert len(got) == 6 and all(abs(a - b) <= 1e-6 for a, b in zip(want, got)), (want, got)
    for (name, p), q in zip(
        resumed_trainer.module.state_dict().items(), make(tmp_path / "c").module.state_dict().values()
    ):
        if name.startswith("frozen."):
            assert torch.equal(p, q), "frozen parameters changed"


def test_outputs_of_a_run(tmp_path: Path) -> None:
    trainer = make(tmp_path, "logging.plots=true", "logging.tensorboard=true", "checkpoint.keep_last=2")
    result = trainer.fit()
    assert result.step == 6 and result.skipped_steps == 0
    assert load_config(TrainConfig, tmp_path / "config.yaml") == trainer.config
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(1, 7))
    assert {"loss", "mse", "lr", "grad_norm", "skipped"} <= set(records[0])
    assert records[0]["lr"] == 0.0 and records[2]["lr"] == pytest.approx(1e-3)  # 2 warmup steps
    assert (tmp_path / "plots" / "loss.png").stat().st_size > 1000
    assert [s for s, _ in list_checkpoints(tmp_path)] == [4, 6]
    fresh = Regressor()
    assert load_safetensors(fresh, tmp_path / "final" / "model.safetensors") == ([], [])
    for a, b in zip(fresh.state_dict().values(), trainer.module.state_dict().values()):
        assert torch.equal(a, b)
    # A finished run resumes to "nothing to do".
    again = make(tmp_path, "checkpoint.keep_last=2").fit()
    assert again.step == 6 and again.history == []


@pytest.mark.parametrize("progress", ["rich", "tqdm"])
def test_progress_bars_run(tmp_path: Path, progress: str) -> None:
    assert make(tmp_path, "max_steps=2", f"logging.progress={progress}").fit().step == 2


class Overflowing(Regressor):
    """Finite losses, but on the given calls the fp16 gradients overflow under the loss scale."""

    def __init__(self, overflow_calls: frozenset[int]) -> None:
        super().__init__()
        self.overflow_calls = overflow_calls

    def forward(self, batch):
        x, y = batch
        if self.calls + 1 in self.overflow_calls:
            y = y * 1e4  # a finite loss whose scaled gradient (~1e4 * 65536) overflows fp16 in backward
        return super().forward((x, y))


def test_fp16_overflow_is_skipped_by_the_grad_scaler_and_its_state_resumes(tmp_path: Path) -> None:
    def run(name: str, overflow_calls: frozenset[int]):
        cfg = load_config(TrainConfig, "tiny-cpu", [
            f"output_dir={tmp_path / name}", "max_steps=6", "checkpoint.every_steps=6", "logging.progress=none",
            "logging.plots=false", "logging.tensorboard=false", "distributed.precision=fp16",
            "optimizer.grad_clip=0"])  # fmt: skip
        torch.manual_seed(0)
        seen: list[dict[str, Any]] = []
        trainer = Trainer(
            Overflowing(overflow_calls),
            ResumableBatches(dataset(), batch_size=4, seed=3),
            cfg,
            callbacks=[lambda t, m: seen.append({k: v.clone() for k, v in t.module.state_dict().items()})],
        )
        assert trainer.strategy.scaler.is_enabled()
        result = trainer.fit()
        return trainer, result, [r["skipped"] for r in read_metrics(tmp_path / name / "metrics.jsonl")], seen

    plain, _, plain_skips, _ = run("plain", frozenset())
    forced, result, forced_skips, seen = run("forced", frozenset({5}))
    # the scaler's own back-off steps happen in both runs; the forced overflow adds exactly one at step 5
    assert plain_skips[4] == 0 and forced_skips[4] == 1
    assert sum(forced_skips) == sum(plain_skips) + 1
    assert all(torch.equal(seen[3][k], seen[4][k]) for k in seen[3])  # the overflow step changed nothing
    assert forced.strategy.scaler.get_scale() < plain.strategy.scaler.get_scale()
    # an overflow is the scaler's business, not a bad step: it does not stop the run
    assert result.step == 6
    saved = torch.load(tmp_path / "forced" / "checkpoints" / "step_00000006" / "trainer.pt", weights_only=False)
    assert saved["scaler"]["scale"] == forced.strategy.scaler.get_scale()


def test_isolated_nonfinite_step_is_skipped(tmp_path: Path) -> None:
    seen: list[dict[str, Any]] = []

    def snapshot(trainer: Trainer, metrics: dict[str, float]) -> None:
        seen.append({k: v.clone() for k, v in trainer.module.state_dict().items()})

    result = make(tmp_path, nan_calls=frozenset({3}), callbacks=[snapshot]).fit()
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["skipped"] for r in records] == [0, 0, 1, 0, 0, 0]
    assert records[2]["loss"] == "nan"
    assert result.skipped_steps == 1 and result.step == 6
    assert all(torch.equal(seen[1][k], seen[2][k]) for k in seen[1])  # the NaN step changed nothing
    assert math.isfinite(records[-1]["loss"])


def test_repeated_nonfinite_steps_stop_with_last_good_checkpoint(tmp_path: Path) -> None:
    trainer = make(tmp_path, "max_consecutive_nonfinite=2", nan_calls=frozenset({3, 4, 5, 6}))
    with pytest.raises(NonFiniteLossError) as err:
        trainer.fit()
    message = str(err.value)
    assert "stopped at step 4" in message and "2 consecutive steps" in message
    assert "step_00000002" in message
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2]
    assert not (tmp_path / "final").exists()
    assert load_safetensors(Regressor(), tmp_path / "checkpoints" / "step_00000002" / "model.safetensors") == ([], [])


def test_bad_input_fails_before_work(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'max_steps' has an invalid value: 0"):
        make(tmp_path / "x", "max_steps=0")
    with pytest.raises(ConfigError, match="'schedule.min_lr_ratio' has an invalid value"):
        make(tmp_path / "x", "schedule.min_lr_ratio=2")
    # AdamW's own checks would fire only after the process group and model placement
    with pytest.raises(ConfigError, match=r"'optimizer.betas' has an invalid value: \(0.9, 1.5\)"):
        make(tmp_path / "x", "optimizer.betas=[0.9, 1.5]")
    with pytest.raises(ConfigError, match="'optimizer.eps' has an invalid value: -1"):
        make(tmp_path / "x", "optimizer.eps=-1e-8")
    with pytest.raises(ConfigError, match="'optimizer.weight_decay' has an invalid value: -0.05"):
        make(tmp_path / "x", "optimizer.weight_decay=-0.05")
    with pytest.raises(ConfigError, match=r"checkpoint.resume: .*nowhere is not a checkpoint"):
        make(tmp_path / "x", f"checkpoint.resume={tmp_path / 'nowhere'}")
    assert not (tmp_path / "x").exists()
    cfg = TrainConfig(output_dir=str(tmp_path / "y"))
    with pytest.raises(TypeError, match="lacks state_dict"):
        Trainer(Regressor(), [1, 2, 3], cfg)  # type: ignore[arg-type]


def test_model_must_return_a_scalar_loss(tmp_path: Path) -> None:
    class Vector(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(6, 2)

        def forward(self, batch: Any) -> torch.Tensor:
            return self.lin(batch[0]).mean(0)

    cfg = load_config(TrainConfig, "tiny-cpu", [f"output_dir={tmp_path}", "logging.progress=none"])
    trainer = Trainer(Vector(), ResumableBatches(dataset(), batch_size=4), cfg)
    with pytest.raises(ValueError, match=r"scalar loss, got a tensor of shape \(2,\)"):
        trainer.fit()


def test_batches_and_losses_helpers() -> None:
    from collections import OrderedDict, namedtuple

    from iv2_train import move_to_device, split_loss

    Pair = namedtuple("Pair", "x y")
    batch = OrderedDict(video=torch.ones(2, dtype=torch.float32), meta=[Pair(torch.zeros(1), 3), "name"])
    moved = move_to_device(batch, torch.device("cpu"), torch.bfloat16)
    assert isinstance(moved, OrderedDict) and moved["video"].dtype == torch.bfloat16
    assert isinstance(moved["meta"][0], Pair) and moved["meta"][0].y == 3 and moved["meta"][1] == "name"
    total, parts = split_loss({"vtc": torch.tensor(1.0), "mlm": torch.tensor(2.0), "note": "x"})
    assert float(total) == 3.0 and set(parts) == {"vtc", "mlm"}
    with pytest.raises(TypeError, match="got str"):
        split_loss("loss")


def test_ddp_strategy_with_one_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from iv2_train import shutdown_distributed

    for name in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK"):
        # Start-up sets these for its private rendezvous; setenv first so that monkeypatch restores them.
        monkeypatch.setenv(name, "unset")
        monkeypatch.delenv(name)
    try:
        trainer = make(tmp_path, "max_steps=2", "distributed.strategy=ddp")
        assert isinstance(trainer.model, nn.parallel.DistributedDataParallel)
        assert trainer.env.backend == "gloo"
        assert trainer.fit().step == 2
    finally:
        shutdown_distributed()


def test_checkpoints_newer_than_the_resume_point_are_refused(tmp_path: Path) -> None:
    # A run started (fresh, or from an older checkpoint) in a folder holding a later run's checkpoints would
    # see keep-last-K prune its own new checkpoints (pruning goes by step number) and resume=auto pick the
    # other run's: refused before any work, naming the checkpoints.
    make(tmp_path, "checkpoint.keep_last=0").fit()  # checkpoints at 2, 4, 6
    before = (tmp_path / "metrics.jsonl").read_text()
    with pytest.raises(ConfigError, match=r"newer than a fresh start \(step_00000002, step_00000004, step_00000006\)"):
        make(tmp_path, "checkpoint.resume=never")
    older = tmp_path / "checkpoints" / "step_00000002"
    with pytest.raises(ConfigError, match=r"newer than checkpoint .*step_00000002 \(step_00000004, step_00000006\)"):
        make(tmp_path, f"checkpoint.resume={older}")
    assert (tmp_path / "metrics.jsonl").read_text() == before  # nothing was touched
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2, 4, 6]
    # the newest checkpoint (resume=auto, or named) is fine
    newest = tmp_path / "checkpoints" / "step_00000006"
    assert make(tmp_path, f"checkpoint.resume={newest}").fit().step == 6


# ---- frozen parts, the export hook, evaluation ------------------------------------------------------------


class TeacherStudent(nn.Module):
    """A student regressing a frozen teacher's output; both have dropout."""

    def __init__(self, *, use_freeze: bool = True, checkpoint: bool = False, export: bool | None = None) -> None:
        super().__init__()
        self.teacher = nn.Sequential(nn.Linear(6, 6), nn.Dropout(0.5))
        if use_freeze:
            freeze(self.teacher, checkpoint=checkpoint, export=export)
        else:  # what stages did before freeze(): requires_grad only
            self.teacher.requires_grad_(False)
        self.student = nn.Sequential(nn.Linear(6, 12), nn.Dropout(0.2), nn.Linear(12, 6))

    def forward(self, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        x, _ = batch
        with torch.no_grad():
            target = self.teacher(x)
        loss = nn.functional.mse_loss(self.student(x), target)
        return {"loss": loss}


PROBE = torch.randn(5, 6, generator=torch.Generator().manual_seed(11))


def teacher_trainer(output_dir: Path, *overrides: str, callbacks=(), **kwargs: Any) -> Trainer:
    model_kwargs = {k: kwargs.pop(k) for k in ("use_freeze", "checkpoint") if k in kwargs}
    if "teacher_export" in kwargs:
        model_kwargs["export"] = kwargs.pop("teacher_export")
    cfg = load_config(TrainConfig, "tiny-cpu", [
        f"output_dir={output_dir}", "max_steps=6", "checkpoint.every_steps=2", "checkpoint.keep_last=0",
        "logging.progress=none", "logging.plots=false", *overrides])  # fmt: skip
    torch.manual_seed(0)
    data = ResumableBatches(dataset(), batch_size=4, seed=3)
    return Trainer(TeacherStudent(**model_kwargs), data, cfg, callbacks=callbacks, **kwargs)


def teacher_outputs(seen: list[tuple[bool, bool, torch.Tensor]]):
    def callback(trainer: Trainer, metrics: dict[str, float]) -> None:
        module = trainer.module
        with torch.no_grad():
            seen.append((module.teacher.training, module.student.training, module.teacher(PROBE)))

    return callback


@pytest.mark.parametrize("strategy", ["auto", "ddp"])
def test_a_frozen_teacher_stays_in_eval_while_the_student_trains(
    tmp_path: Path, strategy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from iv2_train import shutdown_distributed

    for name in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.setenv(name, "unset")
        monkeypatch.delenv(name)
    try:
        seen: list[tuple[bool, bool, torch.Tensor]] = []
        teacher_trainer(
            tmp_path / "frozen", f"distributed.strategy={strategy}", callbacks=[teacher_outputs(seen)]
        ).fit()
        assert [(t, s) for t, s, _ in seen] == [(False, True)] * 6  # teacher in eval, student in train mode
        assert all(torch.equal(out, seen[0][2]) for _, _, out in seen)  # dropout off: identical outputs
        # The control: requires_grad alone leaves the teacher to model.train(), whose dropout then acts.
        control: list[tuple[bool, bool, torch.Tensor]] = []
        teacher_trainer(tmp_path / "control", f"distributed.strategy={strategy}", callbacks=[teacher_outputs(control)],
                        use_freeze=False).fit()  # fmt: skip
        assert control[0][0] is True and not torch.equal(control[0][2], control[1][2])
    finally:
        shutdown_distributed()


def test_freeze_marks_and_keeps_eval_mode_through_train_calls() -> None:
    from iv2_train import frozen_spec, left_out_keys

    model = TeacherStudent(checkpoint=False, export=True)
    model.teacher.register_buffer("stats", torch.ones(2))
    model.train()
    assert not model.teacher.training and not model.teacher[1].training and model.student.training
    assert all(not p.requires_grad for p in model.teacher.parameters())
    assert frozen_spec(model.teacher).checkpoint is False and frozen_spec(model.teacher).export is True
    assert left_out_keys(model, "checkpoint") == {"teacher.0.weight", "teacher.0.bias", "teacher.stats"}
    assert left_out_keys(model, "export") == set()
    # a trainable adapter added inside a frozen part later (LoRA) stays in checkpoints
    model.teacher.adapter = nn.Linear(2, 2)
    assert "teacher.adapter.weight" not in left_out_keys(model, "checkpoint")
    # copies and pickles of the model keep the pinning
    import copy
    import io

    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    for clone in (copy.deepcopy(model), torch.load(buffer, weights_only=False)):
        clone.train()
        assert not clone.teacher.training and clone.student.training and clone.teacher.train.module is clone.teacher
    # eval_mode=False leaves train mode alone (a frozen base hosting adapters with dropout)
    base = freeze(nn.Dropout(0.5), eval_mode=False)
    assert base.train().training
    with pytest.raises(TypeError, match="takes an nn.Module"):
        freeze(torch.ones(2))  # type: ignore[arg-type]


def test_teacher_left_out_of_checkpoints_and_export_and_resume_is_exact(tmp_path: Path) -> None:
    straight = teacher_trainer(tmp_path / "a").fit()
    with pytest.raises(Crash):
        teacher_trainer(tmp_path / "b", callbacks=[crash_after(5)]).fit()
    resumed = teacher_trainer(tmp_path / "b").fit()
    want = [r["loss"] for r in straight.history]
    got = [r["loss"] for r in read_metrics(tmp_path / "b" / "metrics.jsonl")]
    assert len(got) == 6 and all(abs(a - b) <= 1e-6 for a, b in zip(want, got)), (want, got)
    assert resumed.metrics["loss"] == pytest.approx(want[-1], abs=1e-6)

    student_keys = {"student.0.weight", "student.0.bias", "student.2.weight", "student.2.bias"}
    for step, path in list_checkpoints(tmp_path / "b"):
        assert set(read_safetensors(path / "model.safetensors")) == student_keys, step
    assert set(read_safetensors(tmp_path / "b" / "final" / "model.safetensors")) == student_keys

    # the teacher's weights come from the stage (here: the seed), so a resume with another teacher is the stage's
    # business; a checkpoint missing a key that is *not* left out is refused, naming the key and the file
    ckpt = tmp_path / "b" / "checkpoints" / "step_00000006" / "model.safetensors"
    state = read_safetensors(ckpt)
    del state["student.0.bias"]
    export_safetensors(state, ckpt)
    with pytest.raises(
        RuntimeError,
        match=r"step_00000006/model.safetensors does not fit the model: missing 1 key\(s\): student.0.bias",
    ):
        teacher_trainer(tmp_path / "b").fit()


def test_export_hook_and_frozen_parts_that_stay_in_the_export(tmp_path: Path) -> None:
    def student_alone(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k.removeprefix("student."): v for k, v in state.items() if k.startswith("student.")}

    trainer = teacher_trainer(tmp_path / "hook", "max_steps=2", export=student_alone)
    result = trainer.fit()
    exported = read_safetensors(result.final_weights)
    assert set(exported) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert torch.equal(exported["2.weight"], trainer.module.student[2].weight)
    # checkpoint=False, export=True: a frozen tower that is part of the product, rebuilt on resume
    kept = teacher_trainer(tmp_path / "kept", "max_steps=2", checkpoint=False, teacher_export=True).fit()
    assert "teacher.0.weight" in read_safetensors(kept.final_weights)
    assert "teacher.0.weight" not in read_safetensors(
        tmp_path / "kept" / "checkpoints" / "step_00000002" / "model.safetensors"
    )
    with pytest.raises(TypeError, match="export hook must return a mapping of names to tensors"):
        teacher_trainer(tmp_path / "bad", "max_steps=2", export=lambda state: {"x": 1}).fit()


def test_evaluation_runs_in_eval_mode_without_grad_and_is_logged(tmp_path: Path) -> None:
    modes: list[tuple[int, bool, bool, bool]] = []
    train_modes: list[bool] = []

    def evaluate(trainer: Trainer) -> dict[str, Any]:
        module = trainer.module
        modes.append((trainer.step, module.training, module.teacher.training, torch.is_grad_enabled()))
        x = trainer.prepare_batch(PROBE)
        return {"loss": nn.functional.mse_loss(module.student(x), module.teacher(x)), "count": 5}

    trainer = teacher_trainer(tmp_path, "evaluation.every_steps=4", "max_steps=6", "logging.plots=true",
                              evaluate=evaluate, callbacks=[lambda t, m: train_modes.append(t.module.student.training)])  # fmt: skip
    result = trainer.fit()
    assert modes == [(4, False, False, False), (6, False, False, False)]  # every 4 steps and at the end
    assert train_modes == [True] * 6  # training mode came back after the evaluation at step 4
    assert [r["step"] for r in result.evaluations] == [4, 6]
    assert set(result.evaluations[0]) == {"step", "eval/loss", "eval/count"}
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [(r["step"], "eval/loss" in r) for r in records] == [
        (1, False), (2, False), (3, False), (4, False), (4, True), (5, False), (6, False), (6, True)]  # fmt: skip
    assert result.eval_metrics == records[-1] and result.metrics == records[-2]
    assert (tmp_path / "plots" / "eval_loss.png").stat().st_size > 1000
    with pytest.raises(TypeError, match="metric 'loss' must be a number or a one-element tensor, got str"):
        teacher_trainer(tmp_path / "bad", "max_steps=1", evaluate=lambda t: {"loss": "low"}).fit()


def test_eval_rows_survive_a_resume_without_duplicates(tmp_path: Path) -> None:
    def evaluate(trainer: Trainer) -> dict[str, Any]:
        x = PROBE
        return {"loss": nn.functional.mse_loss(trainer.module.student(x), trainer.module.teacher(x))}

    common = ("evaluation.every_steps=1", "checkpoint.every_steps=4")
    straight = read_metrics(
        teacher_trainer(tmp_path / "a", *common, evaluate=evaluate).fit().output_dir / "metrics.jsonl"
    )
    with pytest.raises(Crash):  # after the evaluation of step 5, which follows the checkpoint of step 4
        teacher_trainer(tmp_path / "b", *common, evaluate=evaluate, callbacks=[crash_after(6)]).fit()
    assert [r["step"] for r in read_metrics(tmp_path / "b" / "metrics.jsonl") if "eval/loss" in r] == [1, 2, 3, 4, 5]
    teacher_trainer(tmp_path / "b", *common, evaluate=evaluate).fit()
    resumed = read_metrics(tmp_path / "b" / "metrics.jsonl")
    kinds = lambda rows: [(r["step"], "eval/loss" in r) for r in rows]
    assert kinds(resumed) == kinds(straight) == [(s, e) for s in range(1, 7) for e in (False, True)]
    for a, b in zip(straight, resumed):
        key = "eval/loss" if "eval/loss" in a else "loss"
        assert abs(a[key] - b[key]) <= 1e-6, (a, b)


def test_callbacks_add_rows_and_a_finished_run_reports_its_last_metrics(tmp_path: Path) -> None:
    def extra(trainer: Trainer, metrics: dict[str, float]) -> None:
        if trainer.step % 3 == 0:
            trainer.log_metrics({"throughput": 10.0 * trainer.step, "note": torch.tensor(1.5)})

    first = teacher_trainer(tmp_path, callbacks=[extra]).fit()
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r for r in rows if "throughput" in r] == [
        {"step": 3, "throughput": 30.0, "note": 1.5}, {"step": 6, "throughput": 60.0, "note": 1.5}]  # fmt: skip
    # a rerun resumes at max_steps, trains nothing, and still says where the run ended (the README example)
    again = teacher_trainer(tmp_path).fit()
    assert again.history == [] and again.step == 6
    assert again.metrics == first.metrics == first.history[-1]
    assert len(read_metrics(tmp_path / "metrics.jsonl")) == len(rows)  # nothing rewritten or lost


def test_config_changed_in_place_is_checked_by_the_trainer(tmp_path: Path) -> None:
    cfg = load_config(TrainConfig, "tiny-cpu", [f"output_dir={tmp_path}"])
    cfg.optimizer.lr = -1.0
    with pytest.raises(ConfigError, match=r"config key 'optimizer.lr' has an invalid value: -1.0 \(expected >= 0\)"):
        Trainer(Regressor(), ResumableBatches(dataset(), batch_size=4), cfg)
    assert not tmp_path.joinpath("config.yaml").exists()
