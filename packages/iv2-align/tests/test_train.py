"""Stage-2 training end to end on the synthetic corpus: it learns, resumes exactly, exports the official layout,
runs over 2 gloo processes like one process on the same global batch, and from a stage-1 encoder folder."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from iv2_align import load_align_config, load_stage2, train


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from iv2_data import write_corpus

    root = tmp_path_factory.mktemp("corpus")
    write_corpus(root, 96, num_frames=8, size=64)
    return root


def _overrides(corpus: Path, out: Path, *extra: str) -> list[str]:
    return [f"data.corpus={corpus}", f"train.output_dir={out}", "train.logging.progress=none",
            "train.logging.plots=false", *extra]


# A small, fast recipe for the mechanics tests: contrastive losses only where processes must agree exactly.
SMALL = ("data.held_out=16", "data.batch_size.video=8", "data.batch_size.image=8", "data.batch_size.audio=8",
         "data.batch_size.audio_video=8", "evaluation.k_test=4")


def _losses(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]


def test_quick_synthetic_config_learns_retrieval(tmp_path):
    """The demo's call (``synthetic_config(root, corpus=..., quick=True)`` on the demo's 256-clip corpus, then
    ``train``): the real path (corpus files, MetaLoader over image/video/audio-video, masked then unmasked, ITM
    re-ranking) ends well above chance on the 64 held-out clips, with the demo's metric names; a rerun returns
    the finished result without training."""
    from iv2_align import synthetic_config
    from iv2_data import write_corpus

    corpus = tmp_path / "corpus"
    write_corpus(corpus, 256, num_frames=8, size=64, fps=8, seed=0)
    cfg = synthetic_config(tmp_path / "demo", corpus=corpus, quick=True)
    cfg.train.logging.progress, cfg.train.logging.plots = "none", False
    assert cfg.train.output_dir == str(tmp_path / "demo" / "stage2-random-quick") and cfg.model.vision_init is None
    result = train(cfg)
    m = result.metrics
    assert 1.5 < m["chance_r1"] < 1.7, m  # 1/64, a little more where held-out clips share a caption
    assert m["t2v_r1"] >= 3 * m["chance_r1"] and m["v2t_r1"] >= 3 * m["chance_r1"], m
    assert m["t2v_r5"] >= 2 * 5 * m["chance_r1"], m
    assert m["a2t_r1"] == m["audio_v2t_r1"] and m["t2a_r1"] == m["audio_t2v_r1"] and "a2t_r5" in m, m
    assert m["loss_last"] < m["loss_first"], m
    assert json.loads(json.dumps(m)) == m and all(isinstance(v, float) for v in m.values())
    assert set(result.phases) == {"masked", "unmasked"}
    assert all(path.is_file() for path in result.metrics_files.values())
    assert (result.model_dir / "model.safetensors").is_file() and (result.encoder_dir / "config.json").is_file()
    saved = json.loads((Path(cfg.train.output_dir) / "eval" / "retrieval.json").read_text())
    assert saved["metrics"] == m and saved["phases"] == {"masked": cfg.masked.steps, "unmasked": cfg.unmasked.steps}
    again = train(cfg)
    assert again.train.history == [] and again.metrics == m


def test_a_run_folder_of_another_recipe_is_refused(tmp_path):
    from iv2_align import synthetic_config
    from iv2_align.training import check_same_run
    from iv2_train import ConfigError

    cfg = synthetic_config(tmp_path, corpus=tmp_path / "corpus", quick=True)
    other = synthetic_config(tmp_path, corpus=tmp_path / "corpus", vision_init=tmp_path / "stage1", quick=True)
    assert other.train.output_dir != cfg.train.output_dir  # the demo's two runs in one root never meet
    check_same_run(cfg, tmp_path / "run")
    check_same_run(other, tmp_path / "run")  # nothing trained there yet: a corrected config is welcome
    check_same_run(cfg, tmp_path / "run")
    (tmp_path / "run" / "masked" / "checkpoints").mkdir(parents=True)  # now a run of cfg's recipe is there
    cfg.train.logging.progress = "none"  # runtime settings may change on resume
    check_same_run(cfg, tmp_path / "run")
    with pytest.raises(ConfigError, match="model.vision_init"):
        check_same_run(other, tmp_path / "run")


def test_resume_is_exact_and_a_finished_run_trains_nothing(corpus, tmp_path, monkeypatch):
    import iv2_train.trainer

    args = [*SMALL, "masked.steps=4", "unmasked.steps=2", "train.checkpoint.every_steps=2", "train.logging.every_steps=1",
            "data.sources=[video,audio_video]"]
    straight = train(load_align_config("tiny-synthetic", _overrides(corpus, tmp_path / "a", *args)))
    original = iv2_train.trainer.Trainer.save_checkpoint

    def crash_after_step_2(self):
        original(self)
        if self.step == 2 and "masked" in str(self.output_dir) and "unmasked" not in str(self.output_dir):
            raise KeyboardInterrupt  # killed right after the step-2 checkpoint of the masked phase

    monkeypatch.setattr(iv2_train.trainer.Trainer, "save_checkpoint", crash_after_step_2)
    with pytest.raises(KeyboardInterrupt):
        train(load_align_config("tiny-synthetic", _overrides(corpus, tmp_path / "b", *args)))
    monkeypatch.setattr(iv2_train.trainer.Trainer, "save_checkpoint", original)
    resumed = train(load_align_config("tiny-synthetic", _overrides(corpus, tmp_path / "b", *args)))
    for phase in ("masked", "unmasked"):
        a, b = _losses(tmp_path / "a" / phase), _losses(tmp_path / "b" / phase)
        assert [r["step"] for r in a] == [r["step"] for r in b]
        for ra, rb in zip(a, b):
            assert abs(ra["loss"] - rb["loss"]) <= 1e-6, (phase, ra["step"], ra["loss"], rb["loss"])
    assert resumed.metrics == straight.metrics
    wa = load_stage2(straight.model_dir).model.state_dict()
    wb = load_stage2(resumed.model_dir).model.state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    again = train(load_align_config("tiny-synthetic", _overrides(corpus, tmp_path / "b", *args)))
    assert again.train.history == [] and again.metrics == straight.metrics  # nothing retrained, same report


def test_unmasked_phase_keeps_the_video_encoder_frozen_and_exports_chain(corpus, tmp_path):
    """The second phase freezes the video encoder (its weights leave the phase as they entered it); the exported
    vision encoder is a save_pretrained folder the next stage loads; a stage-1 folder initialises the tower,
    its 8-frame position table interpolated to 4 frames."""
    from iv2_encoders import create_model, read_state_dict, save_pretrained

    # a "stage-1" encoder: the tiny architecture at 8 frames, random weights
    torch.manual_seed(3)
    stage1 = create_model("internvideo2-tiny", num_frames=8)
    save_pretrained(stage1, tmp_path / "stage1")
    args = [*SMALL, "masked.steps=2", "unmasked.steps=2", "data.sources=[video]",
            f"model.vision_init={tmp_path / 'stage1'}"]
    result = train(load_align_config("tiny-synthetic", _overrides(corpus, tmp_path / "run", *args)))
    masked = read_state_dict(tmp_path / "run" / "masked" / "final" / "model.safetensors")
    unmasked = read_state_dict(tmp_path / "run" / "unmasked" / "final" / "model.safetensors")
    vision = [k for k in masked if k.startswith("vision_encoder.")]
    assert vision and all(torch.equal(masked[k], unmasked[k]) for k in vision)
    assert not torch.equal(masked["text_proj.weight"], unmasked["text_proj.weight"])
    # the stage-1 blocks went in (trained 2 masked steps since): the patch embedding is still close to them
    start = stage1.state_dict()["patch_embed.proj.weight"]
    assert (masked["vision_encoder.patch_embed.proj.weight"] - start).abs().max() < 0.05
    assert masked["vision_encoder.pos_embed"].shape[1] == 1 + 4 * 16
    encoder = create_model(pretrained=result.vision_encoder_dir)
    assert encoder.cfg.num_frames == 4 and encoder.pretrained_cfg.resize == "squash"
    assert torch.equal(encoder.state_dict()["blocks.0.attn.qkv.weight"], unmasked["vision_encoder.blocks.0.attn.qkv.weight"])


def test_eval_commands_on_the_trained_model(corpus, tmp_path, capsys):
    from iv2_align.cli import main

    result = train(load_align_config("tiny-synthetic", _overrides(corpus, tmp_path / "run", *SMALL, "masked.steps=2",
                                                                  "unmasked.steps=1", "data.sources=[video]")))
    records = json.loads((corpus / "video_text.json").read_text())[-16:]
    records.append({"video": "videos/missing.mp4", "caption": "a red circle moves left"})
    (tmp_path / "ann.json").write_text(json.dumps(records))
    code = main(["eval", "retrieval", str(tmp_path / "ann.json"), "--media-root", str(corpus), "--model",
                 str(result.model_dir), "--k-test", "4", "--merge-duplicate-captions", "--output",
                 str(tmp_path / "m.json")])
    assert code == 1  # one record's media is missing: skipped, counted, reported
    report = json.loads((tmp_path / "m.json").read_text())
    assert report["skipped"] == 1 and report["metrics"]["num_media"] == 16
    # the held-out numbers of training, recomputed by the command from the same files
    assert report["metrics"]["t2v_r1"] == result.metrics["t2v_r1"]
    capsys.readouterr()
    labels = json.loads((corpus / "video_label.json").read_text())[-8:]
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    assert main(["eval", "zero-shot", str(tmp_path / "labels.json"), "--media-root", str(corpus), "--classes",
                 "synthetic", "--model", str(result.model_dir)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["classes"] == 32 and 0 <= out["metrics"]["top1"] <= 100 and out["metrics"]["chance_top1"] == 3.12
    (tmp_path / "empty.json").write_text(json.dumps([{"video": "videos/000000.mp4", "caption": "..."}]))
    assert main(["eval", "retrieval", str(tmp_path / "empty.json"), "--model", str(result.model_dir)]) == 1
    assert "record 0: caption '...' is empty" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.distributed
def test_two_gloo_processes_equal_one_process_on_the_same_global_batch(corpus, tmp_path):
    """VTC/ATC/AVTC gather every rank's features (the official all_gather), so 2 ranks x 8 samples compute the
    loss of the 16-sample global batch a single process computes. Matching and MLM are local by definition and
    masks are random per rank, so they are off here. DDP averages the official local-slice gradients (half the
    single-process ones, the temperature's whole): AdamW without clipping and with eps -> 0 makes the same update.
    Captions are the first of each record: a random pick draws from each rank's own RNG."""
    common = [*SMALL, "masked.steps=3", "unmasked.steps=1", "data.sources=[video,audio_video]", "loss.vtm=0",
              "loss.mlm=0", "loss.avtm=0", "loss.avmlm=0", "loss.amlm=0", "masked.video_mask_type=none",
              "train.optimizer.grad_clip=0", "train.optimizer.eps=1e-16", "train.logging.every_steps=1",
              "data.caption_sampling=first",
              "evaluation.audio=false"]
    single = _overrides(corpus, tmp_path / "one", *common, "data.batch_size.video=16", "data.batch_size.audio_video=16")
    two = _overrides(corpus, tmp_path / "two", *common)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    done = subprocess.run([sys.executable, "-m", "iv2_align.cli", "train", "tiny-synthetic", *single], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                           str(_free_port()), "-m", "iv2_align.cli", "train", "tiny-synthetic", *two], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for phase in ("masked", "unmasked"):
        one, both = _losses(tmp_path / "one" / phase), _losses(tmp_path / "two" / phase)
        assert len(one) == len(both) > 0
        for a, b in zip(one, both):
            for key in ("loss", "loss_vtc", "loss_avtc", "loss_atc"):
                if key in a:
                    assert abs(a[key] - b[key]) <= 1e-5, (phase, a["step"], key, a[key], b[key])


@pytest.mark.slow
@pytest.mark.distributed
def test_deepspeed_launcher_zero2_bf16_gradient_checkpointing(corpus, tmp_path):
    """`iv2-align train` under the DeepSpeed launcher (ZeRO-2, bf16, gradient checkpointing, every media source):
    trains, checkpoints in DeepSpeed's format, exports a float32 model. (Resuming DeepSpeed checkpoints is
    iv2-train's, tested there; one launch here keeps this package's test time down.)"""
    pytest.importorskip("deepspeed")
    args = _overrides(corpus, tmp_path / "ds", *SMALL, "masked.steps=2", "unmasked.steps=1",
                      "data.sources=[image,video,audio_video,audio]", "train.distributed.strategy=deepspeed",
                      "train.distributed.zero_stage=2", "train.distributed.precision=bf16",
                      "model.grad_checkpointing=true", "train.checkpoint.every_steps=1", "train.logging.every_steps=1")
    launch = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", "1", "--master_port",
              str(_free_port()), "--module", "iv2_align.cli", "train", "tiny-synthetic", *args]
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(launch, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert (tmp_path / "ds" / "masked" / "checkpoints" / "step_00000002" / "deepspeed").is_dir()
    assert [r["step"] for r in _losses(tmp_path / "ds" / "masked")] == [1, 2]
    bundle = load_stage2(tmp_path / "ds" / "export" / "stage2")
    assert bundle.model.temp.dtype == torch.float32 and torch.isfinite(bundle.model.temp).all()
