"""HD post-training end to end at tiny size (REFERENCE l, o): the recipe from the tiny flavor through
instruct → hd (8 frames) → hd_f16 (16 frames) on a corpus of 64 px square clips with 28 px tiles, so that every
clip is cut into a 2 x 2 grid plus the global view. Checked: the HD batches are the official HD transform of the
raw frames (bicubic, unclamped, /255, ImageNet statistics; against a float64 recomputation here), every
sub-video goes through the tower and the QFormer with its sample's instruction, exactly the official HD
trainables (tower, QFormer + queries, ``project_up``, LoRA) change while the base LLM does not, instruction
tuning ran in fp16 with a GradScaler (the official stage-3 precision), an HD phase resumes exactly, and the
trained HD model is evaluated on MC-QA with HD inputs. One subprocess runs the official strategy per phase
(DDP fp16 for instruction tuning, DeepSpeed ZeRO-1 bf16 for HD) and resumes inside the DeepSpeed phase."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

HELD_OUT, TILE = 8, 28
# 64 px square frames, 28 px tiles: ratio 1 ties 1x1 with 2x2 (3x3 exceeds 6 tiles) and 64² > 0.5·28²·4, so the
# later grid wins (REFERENCE l): 2 x 2 tiles of the frames resized to 56 x 56, then the global view.
GRID, SUB_VIDEOS = (2, 2), 5


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from iv2_data import write_corpus

    root = tmp_path_factory.mktemp("hd-corpus")
    write_corpus(root, 72, num_frames=16, size=64, fps=8, seed=0, with_audio_track=False)
    return root


def hd_overrides(corpus, output, *extra: str) -> list[str]:
    return [f"data.root={corpus}", "data.write_synthetic=0", f"data.held_out={HELD_OUT}", f"data.size={TILE}",
            f"train.output_dir={output}", "instruct.max_steps=2", "instruct.batch_size=4",
            "hd.max_steps=2", "hd.batch_size=2", "hd.hd=true", "hd.num_frames=8", "hd.lr=1e-3",
            "hd_f16.max_steps=1", "hd_f16.batch_size=2", "hd_f16.hd=true", "hd_f16.num_frames=16", "hd_f16.lr=1e-3",
            "evaluation.limit=4", "evaluation.batch_size=4", "evaluation.max_new_tokens=4",
            "train.logging.progress=none", "train.logging.every_steps=1", "train.logging.plots=false", *extra]


@pytest.fixture(scope="module")
def hd_run(corpus, tmp_path_factory):
    """The run, with the training objectives (their models stay in memory), every HD transform and every
    sub-video cut recorded on the way."""
    import iv2_chat.model
    from iv2_chat import HDTransform, VideoChatModel, load_chat_config, recipe, train

    seen = {"objectives": [], "transforms": [], "sub_videos": [], "encodes": []}
    real_transform, real_subs, real_encode = HDTransform.__call__, iv2_chat.model.hd_sub_videos, \
        VideoChatModel.encode_video

    class Objective(recipe.ChatObjective):
        def __init__(self, model, **kwargs):
            super().__init__(model, **kwargs)
            seen["objectives"].append(self)

    def transform(self, frames, generator=None):
        clip = real_transform(self, frames, generator)
        if len(seen["transforms"]) < 3:
            seen["transforms"].append((frames.clone(), clip))
        return clip

    def sub_videos(video, size=224):
        subs = real_subs(video, size)
        seen["sub_videos"].append((tuple(video.shape), tuple(subs.shape), torch.is_grad_enabled()))
        return subs

    def encode(self, video, instruction_ids=None, instruction_mask=None):
        rows = None if instruction_ids is None else instruction_ids.shape[0]
        seen["encodes"].append((tuple(video.shape), rows, torch.is_grad_enabled()))
        return real_encode(self, video, instruction_ids, instruction_mask)

    output = tmp_path_factory.mktemp("hd-run")
    cfg = load_chat_config("tiny-synthetic-quick", hd_overrides(corpus, output, "instruct.precision=fp16"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(recipe, "ChatObjective", Objective)
        patch.setattr(HDTransform, "__call__", transform)
        patch.setattr(iv2_chat.model, "hd_sub_videos", sub_videos)
        patch.setattr(VideoChatModel, "encode_video", encode)
        result = train(cfg)
    return cfg, result, seen


def test_hd_batches_are_the_official_hd_transform_of_the_raw_frames(hd_run):
    _, _, seen = hd_run
    mean = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float64).view(3, 1, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float64).view(3, 1, 1, 1)
    for frames, clip in seen["transforms"]:
        assert frames.dtype == torch.uint8 and frames.shape == (8, 64, 64, 3)  # decoded as they are: no crop
        resized = torch.nn.functional.interpolate(frames.permute(0, 3, 1, 2).double(), size=(56, 56),
                                                  mode="bicubic", align_corners=False)  # 0-255, not clamped
        expected = (resized.permute(1, 0, 2, 3) / 255.0 - mean) / std  # (3, T, 56, 56)
        assert clip.shape == expected.shape and (clip.double() - expected).abs().max() < 1e-5


def test_hd_phases_cut_every_clip_into_tiles_and_a_global_view_at_8_then_16_frames(hd_run):
    _, result, seen = hd_run
    instruct, hd, hd_f16 = seen["objectives"]
    assert instruct.hd_size is None and hd.hd_size == hd_f16.hd_size == TILE
    training = [(clip, subs) for clip, subs, grad in seen["sub_videos"] if grad]
    frames = [clip[1] for clip, _ in training]
    clips = result.phases["hd"].step * 2 + result.phases["hd_f16"].step * 2  # batch 2 in both phases
    assert frames == [8] * (clips - 2) + [16] * 2  # hd at 8 frames, then hd_f16 at 16
    for clip, subs in training:
        t = clip[1]
        assert clip == (3, t, GRID[1] * TILE, GRID[0] * TILE) and subs == (SUB_VIDEOS, 3, t, TILE, TILE)
    # each HD step encodes both samples' 5 sub-videos at once, every one with its sample's instruction
    hd_encodes = [(shape, rows) for shape, rows, grad in seen["encodes"] if grad and shape[0] == 2 * SUB_VIDEOS]
    assert len(hd_encodes) == clips // 2 and all(rows == 2 * SUB_VIDEOS for _, rows in hd_encodes)
    # instruction tuning saw plain clips: 4 frames at the tile size, no sub-videos
    plain = [shape for shape, _, grad in seen["encodes"] if grad and shape[0] == 4]
    assert plain and all(shape == (4, 3, 4, TILE, TILE) for shape in plain)


def _groups(name: str) -> str | None:
    """The official HD trainables by key (REFERENCE l: ViT, QFormer, proj and LoRA), written out."""
    if name.startswith("vision_encoder.img_pos_embed") or name.startswith("project_down."):
        return None  # the image table is unused by video; project_down is unused altogether
    for prefix, group in (("vision_encoder.", "tower"), ("vision_layernorm.", "tower"), ("qformer.", "qformer"),
                          ("query_tokens", "qformer"), ("extra_query_tokens", "qformer"),
                          ("project_up.", "project_up")):
        if name.startswith(prefix):
            return group
    return "lora" if name.startswith("lm.") and "lora_" in name else None


def test_hd_phases_update_exactly_the_official_trainables_and_never_the_base_llm(hd_run):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    _, result, seen = hd_run
    out = result.model_dir.parent
    saved_llm = AutoModelForCausalLM.from_pretrained(result.model_dir / "llm").state_dict()
    for phase, before, objective in (("hd", "instruct", seen["objectives"][1]),
                                     ("hd_f16", "hd", seen["objectives"][2])):
        model = objective.model
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        assert trainable == {n for n, _ in model.named_parameters() if _groups(n)}, phase
        start = load_file(out / before / "final" / "model.safetensors")
        end = load_file(out / phase / "final" / "model.safetensors")
        assert start.keys() == end.keys()
        # the exports are in the InternVideo2-Chat layout (qformer.bert.*, bare ls1): the same prefixes
        changed = {k for k in start if not torch.equal(start[k], end[k])}
        assert {_groups(k) for k in changed} == {"tower", "qformer", "project_up", "lora"}, phase
        assert {"vision_encoder.img_pos_embed", "project_down.weight"} <= start.keys() - changed
        # the frozen base LLM (left out of checkpoints and exports) is the one saved with the run
        base = {k.replace(".base_layer", ""): v for k, v in model.base_lm.state_dict().items() if "lora_" not in k}
        assert base.keys() == saved_llm.keys()
        assert all(torch.equal(base[k], saved_llm[k]) for k in base), phase


def test_instruction_tuning_ran_in_fp16_with_a_grad_scaler(hd_run):
    _, result, _ = hd_run
    out = result.model_dir.parent
    instruct = torch.load(out / "instruct" / "checkpoints" / "step_00000002" / "trainer.pt", weights_only=False)
    hd = torch.load(out / "hd" / "checkpoints" / "step_00000002" / "trainer.pt", weights_only=False)
    assert instruct["scaler"]["scale"] > 1  # the fp16 loss scale was in use (REFERENCE o: stage 3)
    assert hd["scaler"] == {}  # fp32 here: no scaler
    rows = [json.loads(x) for x in (out / "instruct" / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped"] for r in rows] == [0, 0] and all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)


def test_the_hd_model_is_evaluated_with_hd_inputs(hd_run):
    from iv2_chat import load_chat

    _, result, seen = hd_run
    settings = load_chat(result.model_dir).settings
    assert settings["hd"] is True and settings["num_frames"] == 16 and settings["hd_max_tiles"] == 6
    assert result.mcqa["total"] == 4 and not result.mcqa["failed"]
    rows = [json.loads(x) for x in (result.mcqa_path.parent / "mcqa_predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(r["prediction"].startswith("(") for r in rows)
    # the four items in one batch: 16-frame HD clips, 5 sub-videos each, the system prompt for every sub-video
    evaluation = [(clip, subs) for clip, subs, grad in seen["sub_videos"] if not grad]
    assert evaluation == [((3, 16, 56, 56), (SUB_VIDEOS, 3, 16, TILE, TILE))] * 4
    assert [(shape, rows) for shape, rows, grad in seen["encodes"] if not grad] == \
        [((4 * SUB_VIDEOS, 3, 16, TILE, TILE), 4 * SUB_VIDEOS)]


def test_ask_and_batch_read_hd_clips_for_the_hd_model(hd_run, corpus, tmp_path):
    from iv2_chat import answer_file, load_chat, read_video

    _, result, _ = hd_run
    chat = load_chat(result.model_dir)
    video = corpus / "videos" / "000070.mp4"
    clip, msg = read_video(chat, video)
    assert clip.shape == (3, 16, 56, 56) and "16 frames" in msg
    slots = chat.model.num_visual_tokens * SUB_VIDEOS
    assert chat.encode([clip], hd=True)[0].shape == (slots, chat.model.project_up.out_features)
    chat.upload(clip, msg=msg, hd=True)
    answer = chat.chat("What moves?", do_sample=False, max_new_tokens=4)
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"video": str(video), "question": "What moves?", "id": "a"}) + "\n")
    report = answer_file(chat, questions, tmp_path / "a.jsonl", generation={"max_new_tokens": 4}, progress=False)
    row = json.loads((tmp_path / "a.jsonl").read_text())
    assert report.answered == 1 and row["status"] == "ok" and row["answer"] == answer


def test_evaluation_during_an_hd_phase_reads_hd_clips(corpus, monkeypatch):
    """``train.evaluation.every_steps``: the MC-QA check inside an HD phase asks the held-out items as the phase
    trains on them: HD clips cut into the phase's tiles, not centre crops of the tower's size."""
    from types import SimpleNamespace

    import iv2_chat.model
    from iv2_chat import VideoChatModel, load_chat_config
    from iv2_chat.recipe import _training_evaluation, build_chat_config, load_tokenizers

    cfg = load_chat_config("tiny-synthetic-quick", hd_overrides(corpus, "unused", "evaluation.during_training_limit=2"))
    chat_cfg = build_chat_config(cfg.model)
    evaluate = _training_evaluation(cfg, cfg.hd, chat_cfg, *load_tokenizers(cfg.model), None)
    cuts, real = [], iv2_chat.model.hd_sub_videos
    monkeypatch.setattr(iv2_chat.model, "hd_sub_videos",
                        lambda video, size=224: cuts.append((tuple(video.shape), size)) or real(video, size))
    model = VideoChatModel(chat_cfg)
    metrics = evaluate(SimpleNamespace(module=SimpleNamespace(model=model, train=model.train)))
    assert set(metrics) == {"mcqa_accuracy", "mcqa_accuracy_strict"}
    assert cuts == [((3, 8, GRID[1] * TILE, GRID[0] * TILE), TILE)] * 2


def test_an_hd_phase_resumes_exactly(corpus, tmp_path):
    """The hd phase killed after its step-2 checkpoint (its newer checkpoint, export and everything after it
    removed, as a kill leaves it) and started again gives the losses and weights of the uninterrupted run."""
    from safetensors.torch import load_file

    from iv2_chat import load_chat_config, train

    cfg = load_chat_config("tiny-synthetic-quick", hd_overrides(
        corpus, tmp_path / "run", "hd.max_steps=4", "hd_f16.max_steps=0", "evaluation.enabled=false",
        "train.checkpoint.every_steps=2", "train.checkpoint.keep_last=3"))
    whole = train(cfg)
    phase = tmp_path / "run" / "hd"
    uninterrupted = load_file(phase / "final" / "model.safetensors")
    losses = {r["step"]: r["loss"] for r in whole.phases["hd"].history}
    shutil.rmtree(phase / "final")
    shutil.rmtree(phase / "checkpoints" / "step_00000004")
    (tmp_path / "run" / "model" / "model.safetensors").unlink()
    resumed = train(cfg)
    again = {r["step"]: r["loss"] for r in resumed.phases["hd"].history}
    assert sorted(again) == [3, 4] and all(abs(again[s] - losses[s]) < 1e-6 for s in again)
    weights = load_file(phase / "final" / "model.safetensors")
    assert weights.keys() == uninterrupted.keys()
    assert all(torch.allclose(weights[k], uninterrupted[k], rtol=0, atol=1e-6) for k in weights)
    assert torch.equal(load_file(resumed.export)["project_up.weight"], weights["project_up.weight"])


def test_training_rows_are_cut_to_the_llm_context(corpus):
    """Bad input: conversations longer than the LLM's positions are cut to them in the recipe's batches,
    reported (the official cap, max_txt_len + visual slots, would let them run past the context)."""
    from iv2_chat import load_chat_config
    from iv2_chat.recipe import build_chat_config, load_tokenizers, phase_data

    cfg = load_chat_config("tiny-synthetic-quick", hd_overrides(corpus, "unused"))
    cfg.model.llm = {"max_position_embeddings": 96}
    cfg.instruct.data = ("mcqa",)  # four MC turns per conversation: the long rows
    data = phase_data(cfg, cfg.instruct, build_chat_config(cfg.model), *load_tokenizers(cfg.model))
    with pytest.warns(UserWarning, match=r"\(the LLM's context of 96 positions\) were cut at the end"):
        _, batch = next(iter(data))
    assert batch["input_ids"].shape[1] == 96 and batch["attention_mask"][:, -1].all()


@pytest.mark.slow
@pytest.mark.distributed
def test_official_strategies_ddp_fp16_then_deepspeed_zero1_bf16_hd_resume_exactly(corpus, tmp_path):
    """``iv2-chat train`` with the official strategy per phase (REFERENCE o): instruction tuning under DDP with
    fp16 autocast + GradScaler and the LLM loaded in fp16, HD under DeepSpeed ZeRO-1 with the whole model in
    bf16 (DS_ACCELERATOR=cpu, one process over gloo). Trains, checkpoints in DeepSpeed's format, evaluates the
    HD model, and a rerun after losing the last checkpoint resumes inside the DeepSpeed phase exactly.
    (DeepSpeed JIT-builds a CPU op on first use, ~1 min, cached in ~/.cache afterwards.)"""
    pytest.importorskip("deepspeed")
    from safetensors.torch import load_file

    out = tmp_path / "run"
    command = [sys.executable, "-m", "iv2_chat.cli", "train", "tiny-synthetic-quick", *hd_overrides(
        corpus, out, "model.llm_dtype=float16", "instruct.strategy=ddp", "instruct.precision=fp16",
        "hd.max_steps=4", "hd.strategy=deepspeed", "hd.zero_stage=1", "hd.precision=bf16", "hd_f16.max_steps=0",
        "train.checkpoint.every_steps=2", "train.checkpoint.keep_last=3")]
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}

    def run() -> str:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=500)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
        return done.stdout + done.stderr

    log = run()
    assert "ddp on 1 process(es), device cpu, fp16" in log and "deepspeed ZeRO-1 on 1 process(es), device cpu, bf16" in log
    phase = out / "hd"
    assert (phase / "checkpoints" / "step_00000004" / "deepspeed").is_dir()
    whole = load_file(phase / "final" / "model.safetensors")
    assert whole["project_up.weight"].dtype == torch.bfloat16  # the engine trained the bf16 model
    losses = [json.loads(x) for x in (phase / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in losses] == [1, 2, 3, 4] and not any(r["skipped"] for r in losses)
    assert json.loads((out / "eval" / "mcqa.json").read_text())["total"] == 4
    shutil.rmtree(phase / "final")
    shutil.rmtree(phase / "checkpoints" / "step_00000004")
    shutil.rmtree(out / "eval")
    (out / "model" / "model.safetensors").unlink()
    assert "resumed from" in run()
    again = [json.loads(x) for x in (phase / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["loss"]) for r in again[-2:]] == [(r["step"], r["loss"]) for r in losses[2:]]
    resumed = load_file(phase / "final" / "model.safetensors")
    assert resumed.keys() == whole.keys() and all(torch.equal(resumed[k], whole[k]) for k in whole)
