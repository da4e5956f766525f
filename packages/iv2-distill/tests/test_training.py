"""Stage-1 training end to end on a small synthetic corpus: it learns, the export loads, cached targets equal
live teachers on the same crops, resume is exact, and two processes equal one on the same global batch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _distill_runs import tiny_config, write_random_teachers, write_small_corpus
from safetensors.torch import load_file

from iv2_distill import (
    DistillationModel,
    TargetCache,
    ViewDataset,
    build_target_cache,
    build_teachers,
    create_student,
    train,
    training_records,
)
from iv2_encoders import VideoEncoder, create_model
from iv2_train import ResumableBatches, Trainer, apply_overrides, read_metrics

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_small_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def teachers(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("teachers")
    write_random_teachers(root)
    return root


def _encoder_outputs_equal(a: VideoEncoder, b: VideoEncoder, video: torch.Tensor) -> None:
    a.eval(), b.eval()
    with torch.no_grad():
        out_a, out_b = VideoEncoder.forward(a, video), VideoEncoder.forward(b, video)
    torch.testing.assert_close(out_a.tokens, out_b.tokens, rtol=0, atol=0)
    torch.testing.assert_close(out_a.pooled, out_b.pooled, rtol=0, atol=0)


@pytest.mark.slow
def test_tiny_synthetic_run_learns_exports_and_evaluates(tmp_path, corpus):
    # The real path of the quick flavor: synthetic teachers trained first (a few steps here), their targets
    # cached, the student trained from the cache; then the export and the k-NN evaluation with its baseline.
    cfg = tiny_config(tmp_path, corpus, None, "train.max_steps=40", "train.schedule.warmup_steps=4",
                      "train.checkpoint.every_steps=20")
    result = train(cfg)
    m = result.metrics
    assert m["loss_last"] < 0.5 * m["loss_first"], m
    for key in ("label", "object", "direction", "colour"):
        assert {f"knn_top1_{key}", f"linear_top1_{key}", f"chance_{key}", f"random_knn_top1_{key}"} <= set(m)
    assert m["chance_direction"] == 25.0 and m["queries"] == 8
    saved = json.loads(result.metrics_path.read_text())
    assert saved["metrics"] == pytest.approx(m) and set(saved["teachers"]) == {"image", "video"}
    assert "object" in saved["teachers"]["image"]["what"] and "direction" in saved["teachers"]["video"]["what"]
    # the logged terms, separately
    rows = [r for r in read_metrics(result.output_dir / "metrics.jsonl") if "loss" in r]
    assert len(rows) == 40 and {"loss_clip_middle", "loss_clip_final", "loss_mae"} <= set(rows[0])

    # the export: the student encoder alone (no head, no counter), loading into iv2_encoders with nothing missing
    student = create_student(cfg.model.name, **cfg.model.overrides)
    exported = load_file(str(result.weights))
    assert set(exported) == set(VideoEncoder(student.cfg).state_dict())
    encoder = create_model(pretrained=result.encoder_dir)
    assert encoder.cfg == student.cfg
    student.load_state_dict({**student.state_dict(), **exported})
    _encoder_outputs_equal(encoder, student, torch.randn(2, 3, 4, 56, 56))

    # a rerun of the finished run trains nothing and reports the same numbers
    again = train(cfg)
    assert again.train.history == [] and again.metrics["loss_last"] == m["loss_last"]


def _fit(model, dataset, cfg, out: Path):
    cfg = apply_overrides(cfg, [f"train.output_dir={out}"])
    data = ResumableBatches(dataset, cfg.data.batch_size, seed=cfg.train.seed, collate_fn=_collate())
    result = Trainer(model, data, cfg.train, export=lambda state: state).fit()
    return [r["loss"] for r in result.history], load_file(str(result.final_weights))


def _collate():
    from iv2_data import collate

    return collate


@pytest.mark.parametrize("dtype, tolerance", [("float32", 1e-5), ("float16", 5e-3)])
def test_training_from_the_cache_equals_live_teachers_on_the_same_crops(tmp_path, corpus, teachers, dtype, tolerance):
    cfg = tiny_config(tmp_path, corpus, teachers, f"cache.dtype={dtype}", "cache.views=2")
    build_target_cache(cfg, progress=False)
    records = training_records(cfg.data.annotations, None, cfg.data.holdout_last)
    cache = TargetCache(cfg.cache.dir)
    assert len(cache) == 2 * len(records)
    torch.manual_seed(0)
    initial = create_student(cfg.model.name, **cfg.model.overrides).state_dict()

    def student():
        s = create_student(cfg.model.name, **cfg.model.overrides)
        s.load_state_dict(initial)
        return s

    # live: the teachers run every step on the cache's own views (all 8 frames; the student takes every 2nd)
    live_teachers = build_teachers(cfg.teachers, clip_frames=cfg.data.num_frames)
    live_data = ViewDataset(records, cache.record_of, cache.views, cfg.data.size, frame_stride=1)
    live = DistillationModel(student(), live_teachers, mask=cfg.mask, seed=cfg.train.seed)
    # cached: the student's frames of the same views and the stored targets, no teacher in the model
    cached_data = ViewDataset(records, cache.record_of, cache.views, cfg.data.size, frame_stride=2,
                              targets=cache.targets)
    cached = DistillationModel(student(), None, mask=cfg.mask, seed=cfg.train.seed)
    live_losses, live_state = _fit(live, live_data, cfg, tmp_path / "live")
    cached_losses, cached_state = _fit(cached, cached_data, cfg, tmp_path / "cached")
    assert len(live_losses) == cfg.train.max_steps
    torch.testing.assert_close(torch.tensor(cached_losses), torch.tensor(live_losses), rtol=tolerance, atol=0)
    student_keys = [k for k in cached_state if k.startswith("student.")]
    assert student_keys and set(student_keys) == {k for k in live_state if k.startswith("student.")}
    worst = max((cached_state[k] - live_state[k]).abs().max().item() for k in student_keys)
    assert worst < 50 * tolerance, worst


@pytest.mark.slow
def test_resume_from_a_checkpoint_is_exact_with_teachers_rebuilt(tmp_path, corpus, teachers):
    # live teachers: left out of checkpoints and rebuilt from their files when the run resumes
    cfg = tiny_config(tmp_path, corpus, teachers, "train.max_steps=6", "train.checkpoint.every_steps=3",
                      "train.checkpoint.keep_last=0", "eval.annotations=", cache=False)
    straight = train(apply_overrides(cfg, [f"train.output_dir={tmp_path / 'straight'}"]))
    ckpt = straight.output_dir / "checkpoints" / "step_00000003"
    assert not any(k.startswith("teachers.") for k in load_file(str(ckpt / "model.safetensors")))
    resumed_dir = tmp_path / "resumed"
    resumed_dir.mkdir()
    shutil.copytree(ckpt, resumed_dir / "checkpoints" / ckpt.name)
    resumed = train(apply_overrides(cfg, [f"train.output_dir={resumed_dir}"]))
    assert [r["step"] for r in resumed.train.history] == [4, 5, 6]
    a, b = load_file(str(straight.weights)), load_file(str(resumed.weights))
    assert all(torch.equal(a[k], b[k]) for k in a)
    losses = {r["step"]: r["loss"] for r in read_metrics(straight.output_dir / "metrics.jsonl") if "loss" in r}
    assert [r["loss"] for r in resumed.train.history] == [losses[s] for s in (4, 5, 6)]


@pytest.mark.slow
@pytest.mark.distributed
def test_two_processes_equal_one_on_the_same_global_batch(tmp_path, corpus, teachers):
    common = ["eval.annotations=", "train.max_steps=3", "cache.views=1"]
    one = tiny_config(tmp_path, corpus, teachers, *common, "data.batch_size=8", f"train.output_dir={tmp_path / 'one'}")
    single = train(one)  # also builds the cache both runs read
    two = [*common, "data.batch_size=4", f"train.output_dir={tmp_path / 'two'}"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(HERE / "_distill_train_run.py"), str(tmp_path), str(corpus), str(teachers), *two]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-5000:]
    a, b = load_file(str(single.weights)), load_file(str(tmp_path / "two" / "final" / "model.safetensors"))
    assert set(a) == set(b)
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < 1e-5, worst
    loss_one = [r["loss"] for r in read_metrics(tmp_path / "one" / "metrics.jsonl") if "loss" in r]
    loss_two = [r["loss"] for r in read_metrics(tmp_path / "two" / "metrics.jsonl") if "loss" in r]
    torch.testing.assert_close(torch.tensor(loss_two), torch.tensor(loss_one), rtol=1e-5, atol=0)


@pytest.mark.slow
@pytest.mark.distributed
def test_deepspeed_zero1_bf16_run_trains_from_the_cache_and_exports(tmp_path, corpus, teachers):
    pytest.importorskip("deepspeed")
    env = dict(os.environ, OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu")
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    words = ["train.distributed.strategy=deepspeed", "train.distributed.precision=bf16", "eval.annotations=",
             "train.max_steps=3", f"train.output_dir={tmp_path / 'ds'}"]
    proc = subprocess.run([sys.executable, str(HERE / "_distill_train_run.py"), str(tmp_path), str(corpus),
                           str(teachers), *words], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-5000:]
    rows = [r for r in read_metrics(tmp_path / "ds" / "metrics.jsonl") if "loss" in r]
    assert len(rows) == 3 and all(r["skipped"] == 0 for r in rows) and rows[-1]["loss"] < rows[0]["loss"]
    assert (tmp_path / "ds" / "checkpoints" / "step_00000003" / "deepspeed").is_dir()
    encoder = create_model(pretrained=tmp_path / "ds" / "final" / "encoder")  # the export, heads dropped
    assert set(encoder.state_dict()) == set(load_file(str(tmp_path / "ds" / "final" / "model.safetensors")))
