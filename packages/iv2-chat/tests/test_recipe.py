"""The demo's stage 3 end to end: ``synthetic_config(..., quick=True)`` + ``train`` on a corpus written as the demo
writes it (256 clips, 8 frames, 64 px, 8 fps, seed 0; the last 64 held out)."""

import json

import pytest


@pytest.fixture(scope="module")
def corpus256(tmp_path_factory):
    from iv2_data import write_corpus

    root = tmp_path_factory.mktemp("corpus256")
    write_corpus(root, 256, num_frames=8, size=64, fps=8, seed=0, with_audio_track=False)
    return root


@pytest.fixture(scope="module")
def quick_run(corpus256, tmp_path_factory):
    from iv2_chat import synthetic_config, train

    root = tmp_path_factory.mktemp("stage3")
    cfg = synthetic_config(root, corpus=corpus256, quick=True)
    cfg.instruct.max_steps = 100  # the flavor's 1100 learn the held-out letters (tests/test_demo.py); 100 test the path
    cfg.train.logging.progress = "none"
    return cfg, train(cfg)


def test_synthetic_config_uses_the_given_corpus_and_holds_out_64_clips(corpus256, tmp_path):
    from iv2_chat import synthetic_config

    cfg = synthetic_config(tmp_path, corpus=corpus256, vision_init=tmp_path / "enc", quick=True)
    assert cfg.data.root == str(corpus256) and cfg.data.write_synthetic == 0  # used as it is, never rewritten
    assert cfg.data.held_out == 64 and cfg.model.vision_init == str(tmp_path / "enc")
    assert cfg.train.output_dir.startswith(str(tmp_path))
    own = synthetic_config(tmp_path)  # no corpus: the flavor writes its own under root
    assert own.data.root.startswith(str(tmp_path)) and own.data.write_synthetic > 64


def test_quick_train_reports_the_demo_metrics_and_its_loss_falls(quick_run):
    from iv2_chat.recipe import split_held_out

    cfg, result = quick_run
    m = result.metrics
    for key in ("mcqa_accuracy", "chance", "loss_first", "loss_last", "mcqa_accuracy_content"):
        assert isinstance(m[key], float)
    for task in ("motion", "colour", "count", "identity"):
        assert 0.0 <= m[f"mcqa_accuracy_{task}"] <= 1.0
    assert m["chance"] == pytest.approx(0.25)
    # every held-out item is asked: 64 clips x 4 questions, none of them seen in training
    from iv2_data import load_annotations

    _, held = split_held_out(load_annotations(f"{cfg.data.root}/mcqa.json"), 64)
    assert m["mcqa_items"] == len(held) == 256
    assert m["loss_last"] < 0.5 * m["loss_first"]
    assert json.loads(result.metrics_path.read_text()) == m
    rows = [json.loads(x) for x in result.history["instruct"].read_text().splitlines()]
    assert rows and all("loss" in r for r in rows)
    assert result.export.is_file()


def test_training_lifts_mcqa_accuracy_far_above_chance_on_the_items_it_learnt(tmp_path):
    """Tiny end to end, training → export → MC-QA: on 8 clips (32 items, fixed option order, one MVBench turn per
    conversation) 150 steps take the exported model's MC-QA accuracy on those items far above chance (25%;
    100% on this machine): the training strings, the answer letters and the official prompt / parsing of the
    evaluation fit together. Held-out accuracy at tiny size needs minutes (README, "Status")."""
    from iv2_chat import evaluate_mcqa, load_chat, load_chat_config, train
    from iv2_chat.evaluation import mcqa_read_config
    from iv2_data import MultipleChoiceQADataset, write_corpus

    corpus = tmp_path / "corpus"
    write_corpus(corpus, 8, num_frames=8, size=64, fps=8, seed=0, with_audio_track=False)
    cfg = load_chat_config("tiny-synthetic-quick", [
        f"data.root={corpus}", "data.write_synthetic=0", "data.held_out=0", "data.shuffle_options=false",
        "data.mcqa_per_conversation=1", f"train.output_dir={tmp_path / 'run'}", "instruct.max_steps=150",
        "instruct.lr=3e-3", "instruct.warmup_steps=10", "instruct.batch_size=16", "instruct.data=[mcqa]",
        "evaluation.enabled=false",
        "train.logging.progress=none", "train.logging.plots=false"])
    result = train(cfg)
    chat = load_chat(result.model_dir)
    items = MultipleChoiceQADataset(corpus / "mcqa.json", corpus, video=mcqa_read_config(chat))
    report = evaluate_mcqa(chat, items, batch_size=32, max_new_tokens=4, progress=False)
    assert report.total == 32 and report.chance == pytest.approx(0.25)
    assert report.accuracy_strict >= 0.75, report.table()


def test_rerun_of_a_finished_run_returns_the_same_result_without_training_and_leaves_torch_threads(quick_run):
    import time

    import torch

    from iv2_chat import train

    cfg, result = quick_run
    assert cfg.torch_threads == 2
    caller = torch.get_num_threads()
    torch.set_num_threads(caller + 1)  # a caller's setting other than the config's
    try:
        started = time.perf_counter()
        again = train(cfg)
        assert torch.get_num_threads() == caller + 1  # torch_threads held only while train() ran
    finally:
        torch.set_num_threads(caller)
    assert again.metrics == result.metrics
    assert again.phases["instruct"].step == cfg.instruct.max_steps
    assert time.perf_counter() - started < 0.5 * sum(result.seconds.values()) + 5


def assert_tower_is_the_encoder(tower, source):
    """Every tensor of the chat ``tower`` state dict but the image position table equals the stage-2 encoder's
    (``source``; its LayerScale keys end in ``.gamma``, the tower's are bare)."""
    import torch

    compared = 0
    for key, value in tower.items():
        name = key.replace(".ls1", ".ls1.gamma").replace(".ls2", ".ls2.gamma") if ".ls" in key else key
        if name in source and not key.startswith("img_pos_embed"):
            assert torch.equal(value, source[name]), key
            compared += 1
    assert compared >= len(tower) - 1  # every tensor but the image position table


def test_a_stage2_encoder_folder_becomes_the_chat_tower(tmp_path):
    """``model.vision_init``: a stage-2 ``save_pretrained`` folder; the chat tower is its first depth - 1
    blocks with the same weights (the official chat tower drops the last block and the pooling head)."""
    import torch

    from iv2_chat import ChatModelSpec, VideoChatModel
    from iv2_chat.recipe import build_chat_config, load_vision_init
    from iv2_encoders import create_model, save_pretrained

    torch.manual_seed(3)
    encoder = create_model("internvideo2-tiny", num_frames=4)
    save_pretrained(encoder, tmp_path / "vision")
    cfg = build_chat_config(ChatModelSpec(name="tiny-synthetic", vision_init=str(tmp_path / "vision")))
    assert cfg.vision.depth == encoder.cfg.depth - 1 and cfg.vision.embed_dim == encoder.cfg.embed_dim
    torch.manual_seed(4)
    model = VideoChatModel(cfg)
    load_vision_init(model, tmp_path / "vision")
    tower = model.vision_encoder.state_dict()
    assert_tower_is_the_encoder(tower, encoder.state_dict())
    assert not any(k.startswith(f"blocks.{encoder.cfg.depth - 1}.") for k in tower)


def test_vision_return_index_minus_one_keeps_every_block_of_the_stage2_encoder(tmp_path):
    """``model.vision_return_index: -1``: the QFormer reads the last block's output, so the tower is the whole
    stage-2 encoder (every block, the same weights; only the pooling head is dropped); out-of-range or
    non-negative indices are refused naming the key."""
    import pytest
    import torch

    from iv2_chat import ChatModelSpec, VideoChatModel
    from iv2_chat.recipe import build_chat_config, load_vision_init
    from iv2_encoders import create_model, save_pretrained
    from iv2_train import ConfigError

    torch.manual_seed(5)
    encoder = create_model("internvideo2-tiny", num_frames=4)
    save_pretrained(encoder, tmp_path / "vision")
    spec = ChatModelSpec(name="tiny-synthetic", vision_init=str(tmp_path / "vision"), vision_return_index=-1)
    cfg = build_chat_config(spec)
    assert cfg.vision.depth == encoder.cfg.depth and not cfg.vision.pool_head
    model = VideoChatModel(cfg)
    load_vision_init(model, tmp_path / "vision")
    tower = model.vision_encoder.state_dict()
    assert any(k.startswith(f"blocks.{encoder.cfg.depth - 1}.") for k in tower)
    assert_tower_is_the_encoder(tower, encoder.state_dict())
    # without a folder the named tower (depth - 1 blocks of its encoder) grows by the same rule
    named = build_chat_config(ChatModelSpec(name="tiny-synthetic"))
    assert build_chat_config(ChatModelSpec(name="tiny-synthetic", vision_return_index=-1)).vision.depth == \
        named.vision.depth + 1
    with pytest.raises(ValueError, match="model.vision_return_index"):
        build_chat_config(ChatModelSpec(name="tiny-synthetic", vision_init=str(tmp_path / "vision"),
                                        vision_return_index=-(encoder.cfg.depth + 1)))
    with pytest.raises(ConfigError, match="model.vision_return_index"):
        ChatModelSpec(vision_return_index=0)


def test_the_demo_flavor_trains_on_a_frozen_tower_of_every_stage2_block(corpus256, tmp_path):
    """``synthetic_config`` (the demo's stage 3) with a stage-2 folder: the exported chat weights hold the whole
    encoder (both blocks) unchanged after training."""
    import torch
    from safetensors.torch import load_file

    from iv2_chat import synthetic_config, train
    from iv2_encoders import create_model, save_pretrained

    torch.manual_seed(6)
    encoder = create_model("internvideo2-tiny", num_frames=4)
    save_pretrained(encoder, tmp_path / "enc")
    cfg = synthetic_config(tmp_path, corpus=corpus256, vision_init=tmp_path / "enc", quick=True)
    assert cfg.model.vision_return_index == -1 and not cfg.instruct.train_vision
    cfg.instruct.max_steps, cfg.instruct.batch_size, cfg.evaluation.enabled = 4, 4, False
    cfg.train.logging.progress = "none"
    result = train(cfg)
    weights = load_file(str(result.export))
    tower = {k[len("vision_encoder."):]: v for k, v in weights.items() if k.startswith("vision_encoder.")}
    assert any(k.startswith(f"blocks.{encoder.cfg.depth - 1}.") for k in tower)
    assert_tower_is_the_encoder(tower, encoder.state_dict())


def test_resume_from_a_checkpoint_is_exact(corpus256, tmp_path):
    """A run stopped after its step-8 checkpoint (its newer checkpoint and final export removed, as a kill
    leaves it) and started again ends with the very weights of an uninterrupted run."""
    import shutil

    from safetensors.torch import load_file

    from iv2_chat import synthetic_config, train

    def config(root):
        cfg = synthetic_config(root, corpus=corpus256, quick=True)
        cfg.instruct.max_steps, cfg.instruct.batch_size = 12, 4
        cfg.train.checkpoint.every_steps, cfg.train.checkpoint.keep_last = 4, 3
        cfg.train.logging.progress, cfg.train.logging.every_steps = "none", 1
        cfg.evaluation.enabled = False
        return cfg

    whole = train(config(tmp_path / "whole"))
    cut_cfg = config(tmp_path / "cut")
    train(cut_cfg)
    phase = tmp_path / "cut" / "stage3-quick" / "instruct"
    shutil.rmtree(phase / "final")
    newest = sorted((phase / "checkpoints").glob("step_*"))[-1]
    assert newest.name.endswith("12")
    shutil.rmtree(newest)
    resumed = train(cut_cfg)
    assert resumed.phases["instruct"].step == 12
    # it went on from step 8 (not from scratch) and its losses are the uninterrupted run's
    again = {r["step"]: r["loss"] for r in resumed.phases["instruct"].history}
    assert sorted(again) == [9, 10, 11, 12]
    first = {r["step"]: r["loss"] for r in whole.phases["instruct"].history}
    assert all(abs(again[s] - first[s]) < 1e-6 for s in again)
    a = load_file(tmp_path / "whole" / "stage3-quick" / "instruct" / "final" / "model.safetensors")
    b = load_file(phase / "final" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch_equal(a[key], b[key]), key


def test_train_runs_on_its_threads_within_this_process_share_of_the_cpus(monkeypatch):
    import os

    import torch

    import iv2_chat.recipe
    from iv2_chat import load_chat_config

    seen = []
    monkeypatch.setattr(iv2_chat.recipe, "_train", lambda cfg: seen.append(torch.get_num_threads()))
    cfg = load_chat_config("tiny-synthetic-quick")
    assert cfg.torch_threads == 2 and load_chat_config("tiny-synthetic").torch_threads == 1
    caller = torch.get_num_threads()

    def threads_with(cpus: int, local_world_size: str | None, torch_threads: int = 2) -> int:
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)), raising=False)
        monkeypatch.delenv("LOCAL_SIZE", raising=False)
        if local_world_size is None:
            monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
        else:
            monkeypatch.setenv("LOCAL_WORLD_SIZE", local_world_size)
        cfg.torch_threads = torch_threads
        iv2_chat.recipe.train(cfg)
        assert torch.get_num_threads() == caller
        return seen.pop()

    assert threads_with(16, None) == 2  # the flavor's 2, not every CPU
    assert threads_with(1, None) == 1  # never more threads than CPUs
    assert threads_with(4, "4") == 1  # torchrun's 4 processes on 4 CPUs: one each
    assert threads_with(8, "2", torch_threads=8) == 4
    assert threads_with(8, None, torch_threads=0) == caller  # 0: the caller's setting


def torch_equal(x, y) -> bool:
    import torch

    return torch.allclose(x, y, rtol=0, atol=1e-6)


@pytest.mark.slow
@pytest.mark.distributed
def test_two_process_gloo_run_trains_and_exports(corpus256, tmp_path):
    """``torchrun --nproc-per-node 2 -m iv2_chat.cli train``: DDP over gloo on CPU, every rank in step (a rank
    that fell out of step would hang or fail the collective), one export and one evaluation by rank 0."""
    import os
    import subprocess
    import sys

    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
           "iv2_chat.cli", "train", "tiny-synthetic-quick", f"data.root={corpus256}", "data.write_synthetic=0",
           f"train.output_dir={out}", "instruct.max_steps=6", "instruct.batch_size=4", "evaluation.limit=8",
           "train.logging.every_steps=1", "train.logging.progress=none", "train.distributed.strategy=ddp"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = [json.loads(x) for x in (out / "instruct" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6] and all(r["skipped"] == 0 for r in rows)
    assert (out / "model" / "model.safetensors").is_file()
    report = json.loads((out / "eval" / "mcqa.json").read_text())
    assert report["total"] == 8
    assert "2 process" in proc.stdout + proc.stderr
