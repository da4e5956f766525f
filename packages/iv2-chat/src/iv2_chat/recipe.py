"""The progressive training recipe of InternVideo2-Chat on iv2-train: :func:`train`.

Phases (each an ``iv2_train.Trainer`` run in ``{train.output_dir}/{phase}``; a phase with ``max_steps: 0`` is
skipped), after the official VideoChat2 / InternVideo2-Chat recipe (REFERENCE k, l, o):

1. ``align``: the QFormer (+ queries, ``project_up``) and the tower learn captions with the LLM frozen and no
   LoRA (``videochat2_pt_mistral``);
2. ``instruct``: instruction tuning, LoRA added (``videochat2_it_mistral``; DDP, fp16 + GradScaler);
3. ``hd``/``hd_f16``: HD post-training on ``hd_transform`` sub-videos at 8 then 16 frames, updating tower,
   QFormer and LoRA (``videochat2_it_hd_mistral``; DeepSpeed ZeRO-1, bf16).

The base LLM is frozen with ``iv2_train.freeze(llm, checkpoint=False, eval_mode=False)``: it never enters
a checkpoint (resuming rebuilds it from ``cfg.llm``); LoRA adapters inside it train and are checkpointed.
A random base LLM (a config, as in the tiny flavors) is built once from the run's seed and saved with the
tokenizers as the run's chat folder ``{output_dir}/model`` (:func:`iv2_chat.save_chat`), so that every phase,
every resume and inference load the very same weights. Each phase starts from the previous phase's export
(``final/model.safetensors``: the trainable weights in the InternVideo2-Chat layout), loaded with
:func:`iv2_chat.load_checkpoint`; the last export is copied into the chat folder. After the last phase the
MC-QA evaluation runs on the held-out items (:func:`iv2_chat.evaluate_mcqa`) and writes
``{output_dir}/eval/mcqa.json``.

A rerun with the same config finds finished phases and the finished evaluation and does not redo them; a
killed run continues from the newest checkpoint of the phase it was in (iv2-train's exact resume). A phase
whose starting weights changed since it began (an earlier phase was retrained) is refused rather than mixed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import load_checkpoint
from .config import ChatConfig, chat_config, chat_vision_config
from .model import VideoChatModel
from .recipe_config import ChatModelSpec, ChatTrainConfig, PhaseConfig, phase_train_config
from .train_data import ChatCollator, ChatExamples, MCQAGroups, TimeMessages

log = logging.getLogger("iv2_chat")

ANNOTATION_KINDS = ("video_text", "instructions", "mcqa")


# --------------------------------------------------------------------------------------------- model build
def build_chat_config(spec: ChatModelSpec, *, llm: str | None = None) -> ChatConfig:
    """The :class:`ChatConfig` of ``spec``: the named architecture, the tower of a stage-2 ``vision_init``
    folder when given (depth − 1 blocks, every token: :func:`chat_vision_config`; ``vision_return_index`` -1
    keeps every block), then the overrides.
    ``llm`` (a saved base LLM folder) replaces the LLM config."""
    from iv2_encoders.pretrained import read_saved_config, saved_folder

    base = chat_config(spec.name)
    vision = base.vision  # built with the official return index -2: depth - 1 blocks of its encoder
    folder = saved_folder(spec.vision_init) if spec.vision_init else None
    encoder, overrides = None, {}
    if folder is not None:
        encoder, _ = read_saved_config(folder)
        overrides = {"num_frames": base.vision.num_frames}
    elif spec.vision_return_index != -2:
        encoder = vision.replace(depth=vision.depth + 1)  # the named tower's encoder
    if encoder is not None:
        try:
            vision = chat_vision_config(encoder, return_index=spec.vision_return_index, **overrides)
        except ValueError as error:
            raise ValueError(f"model.vision_return_index for {folder or spec.name}: {error}") from None
    if spec.vision:
        vision = vision.replace(**spec.vision)
    qformer = {**base.qformer_dict(), "encoder_width": vision.embed_dim, **spec.qformer}
    if llm is not None:
        llm_cfg: Any = llm
    elif isinstance(spec.llm, str):
        llm_cfg = spec.llm
    else:
        raw = base.llm if isinstance(base.llm, (dict, str)) else base.llm.to_dict()
        if isinstance(raw, str):
            if spec.llm:
                raise ValueError(f"model.llm overrides {sorted(spec.llm)} need an LLM config, but {spec.name!r} "
                                 f"loads {raw!r}; give model.llm as a path / hub id instead")
            llm_cfg = raw
        else:
            llm_cfg = {**raw, **spec.llm}
    lora = None if spec.lora is None else ({**(base.lora or {}), **spec.lora} or None)
    return ChatConfig(
        vision=vision, qformer=qformer,
        num_query_tokens=spec.num_query_tokens or base.num_query_tokens,
        extra_num_query_tokens=(base.extra_num_query_tokens if spec.extra_num_query_tokens is None
                                else spec.extra_num_query_tokens),
        llm=llm_cfg, lora=lora, llm_dtype=spec.llm_dtype or base.llm_dtype,
        local_files_only=spec.local_files_only, project_down=base.project_down,
    )


def load_tokenizers(spec: ChatModelSpec) -> tuple[Any, Any]:
    """The LLM tokenizer and the QFormer's BERT tokenizer (official settings: ``[DEC]`` BOS, left padding and
    truncation) named by ``spec``; the offline tiny ones when unnamed."""
    from .tiny import qformer_tokenizer_settings, tiny_llm_tokenizer, tiny_qformer_tokenizer

    if spec.tokenizer:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(spec.tokenizer, local_files_only=spec.local_files_only)
    else:
        tokenizer = tiny_llm_tokenizer()
    if spec.qformer_tokenizer:
        from transformers import AutoTokenizer

        qformer_tokenizer = qformer_tokenizer_settings(
            AutoTokenizer.from_pretrained(spec.qformer_tokenizer, local_files_only=spec.local_files_only))
    else:
        qformer_tokenizer = tiny_qformer_tokenizer()
    return tokenizer, qformer_tokenizer


def load_vision_init(model: VideoChatModel, path: str | os.PathLike, num_frames: int | None = None) -> None:
    """Load a stage-2 vision encoder into the chat tower: an ``iv2_encoders.save_pretrained`` folder or a
    checkpoint file of any layout ``iv2_encoders.load_checkpoint`` reads (its last block, pooling head and
    other towers are dropped and reported; position tables resampled to the tower's frames). A tower without
    an image position table (the 6B / tiny stage-2 encoders) fills the chat tower's ``img_pos_embed`` with the
    image rule it used: the class row and the time-average of the video table."""
    from iv2_encoders import load_checkpoint as load_encoder
    from iv2_encoders import read_state_dict
    from iv2_encoders.pretrained import read_saved_config, saved_folder

    folder = saved_folder(path)
    if folder is not None and num_frames is None:
        num_frames = read_saved_config(folder)[0].num_frames
    tower = model.vision_encoder
    result = load_encoder(tower, read_state_dict(path), num_frames=num_frames, strict=False, source=str(path))
    missing = [k for k in result.missing if k != "img_pos_embed"]
    if missing:
        from iv2_encoders import CheckpointError

        raise CheckpointError(f"{path}: the vision tower lacks {missing[:8]} (the chat tower needs every block "
                              f"but the last of the stage-2 encoder)")
    if "img_pos_embed" in result.missing and tower.img_pos_embed is not None:
        with torch.no_grad():
            t, h, w = tower.cfg.grid_size
            video = tower.pos_embed[:, 1:].reshape(1, t, h * w, -1).mean(dim=1)
            tower.img_pos_embed.copy_(torch.cat([tower.pos_embed[:, :1], video], dim=1))
    log.info("vision tower from %s (%d frames); dropped %d key(s): %s", path, result.num_frames or 0,
             len(result.dropped), ", ".join(result.dropped[:6]) + (" ..." if len(result.dropped) > 6 else ""))


def set_trainable(model: VideoChatModel, phase: PhaseConfig) -> None:
    """What a phase trains: the tower + ``vision_layernorm``, the QFormer + queries, ``project_up`` (always) and
    the LoRA adapters, each as the phase says. The base LLM and ``project_down`` stay frozen."""
    model.vision_encoder.requires_grad_(phase.train_vision)
    model.vision_layernorm.requires_grad_(phase.train_vision)
    model.qformer.requires_grad_(phase.train_qformer)
    model.query_tokens.requires_grad_(phase.train_qformer)
    if model.extra_query_tokens is not None:
        model.extra_query_tokens.requires_grad_(phase.train_qformer)
    model.project_up.requires_grad_(True)
    for name, param in model.lm.named_parameters():
        param.requires_grad_(phase.train_lora and "lora_" in name)
    # the unused img_pos_embed of a video-only phase gets no gradient: keep it out of DDP's bookkeeping
    if model.vision_encoder.img_pos_embed is not None:
        model.vision_encoder.img_pos_embed.requires_grad_(False)


# --------------------------------------------------------------------------------------------- objective
class ChatObjective(nn.Module):
    """The training step of every chat phase (iv2-train's model contract): a batch of
    :class:`iv2_chat.ChatCollator` (or ``(source, batch)`` from the MetaLoader) → ``{"loss", "loss_<source>"}``.
    The loss is the LLM's mean over the batch's supervised (answer) tokens. ``hd_size``: the batch holds HD
    clips, encoded sub-video by sub-video. The chat model is ``self.model`` (checkpoint keys ``model.*``; the
    export drops the prefix)."""

    def __init__(self, model: VideoChatModel, *, hd_size: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.hd_size = hd_size

    def forward(self, batch: Any) -> dict[str, torch.Tensor]:
        source, batch = batch if isinstance(batch, tuple) else ("", batch)
        chat = self.model
        ids, mask = batch.get("instruction_ids"), batch.get("instruction_mask")
        if self.hd_size is not None:
            visual: Any = chat.encode_hd_video(batch["video"], self.hd_size, ids, mask)
        else:
            visual = chat.encode_video(batch["video"], ids, mask).embeds
        out = chat(batch["input_ids"], batch["attention_mask"], batch["visual_mask"], visual_embeds=visual,
                   labels=batch["labels"], bos_scalar_mask=batch.get("bos_scalar_mask"))
        losses = {"loss": out.loss}
        if source:
            losses[f"loss_{source}"] = out.loss.detach()
        return losses


def trainable_export(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The Trainer's export: the chat model's weights in the InternVideo2-Chat layout without the frozen base
    LLM (which ``freeze(..., checkpoint=False)`` already keeps out): tower, QFormer, queries, projections, LoRA
    — what Ask-Anything saves, plus the frozen ``project_down`` / image table so that the layout is complete."""
    return {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}


# ------------------------------------------------------------------------------------------------- data
class CachedVideoReader:
    """A ``VideoReadConfig.reader`` that decodes each (file, frames, size, sampling) once and keeps the clip:
    for small corpora read every step. Deterministic reads only (random sampling would be frozen)."""

    def __init__(self) -> None:
        self._clips: dict[tuple, torch.Tensor] = {}

    def __call__(self, source: Any, num_frames: int, size: int, sampling: str, **options: Any) -> torch.Tensor:
        from iv2_data import read_clip

        transform = options.get("transform")
        key = (str(source), num_frames, size, sampling, repr(transform), tuple(options.get("indices") or ()))
        if key not in self._clips:
            options.pop("generator", None)
            self._clips[key] = read_clip(source, num_frames, size, sampling, threads=1, **options)
        return self._clips[key]


def split_held_out(records: Sequence[Mapping[str, Any]], held_out: int) -> tuple[list[dict], list[dict]]:
    """``(train, held-out)`` records: the last ``held_out`` media files (sorted paths) are held out, with
    every record about them (the synthetic corpus writes ``videos/000000.mp4`` ...: the last clips)."""
    def media(record: Mapping[str, Any]) -> str:
        return str(record.get("video") or record.get("image") or "")

    paths = sorted({media(r) for r in records})
    held = set(paths[len(paths) - held_out:]) if held_out else set()
    return [dict(r) for r in records if media(r) not in held], [dict(r) for r in records if media(r) in held]


def ensure_corpus(cfg: ChatTrainConfig) -> Path:
    """The annotation folder; with ``data.write_synthetic`` the iv2-data synthetic corpus is written there first
    (resumable: finished files are kept)."""
    root = Path(cfg.data.root)
    if cfg.data.write_synthetic:
        from iv2_data.synthetic import corpus_is_current, write_corpus
        from iv2_train import barrier, get_rank

        if get_rank() == 0 and not (corpus_is_current(root) and _corpus_matches(root / "corpus.json", cfg)):
            log.info("writing the synthetic corpus (%d clips) to %s", cfg.data.write_synthetic, root)
            write_corpus(root, cfg.data.write_synthetic, seed=cfg.data.synthetic_seed, progress=True)
        barrier()
    return root


def _corpus_matches(marker: Path, cfg: ChatTrainConfig) -> bool:
    try:
        meta = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return meta.get("num_samples") == cfg.data.write_synthetic and meta.get("seed") == cfg.data.synthetic_seed


def read_records(cfg: ChatTrainConfig, kind: str) -> tuple[list[dict], list[dict]]:
    """``(train, held-out)`` records of one annotation kind."""
    from iv2_data import load_annotations

    name = getattr(cfg.data, kind)
    if not name:
        raise ValueError(f"data.{kind} is empty but a phase uses {kind!r} samples")
    return split_held_out(load_annotations(Path(cfg.data.root) / name), cfg.data.held_out)


def video_read_config(cfg: ChatTrainConfig, model_cfg: ChatConfig, num_frames: int, *, train: bool,
                      hd_max_tiles: int | None = None, reader: Any = None):
    """How a phase reads video: ``num_frames`` at the tower's size, ImageNet statistics (the official
    VideoChat2 / InternVideo2-Chat training), no augmentation (``random_aug`` off): random segment frames when
    training (the official ``rand``; ``middle`` with the decode cache), HD tiles for ``hd_max_tiles``."""
    from iv2_data import VideoReadConfig

    from .hd import HDTransform

    size = cfg.data.size or model_cfg.vision.img_size
    cached = reader is not None
    sampling = "middle" if (cached or not train) else "random"
    transform = None
    if hd_max_tiles is not None:
        transform = HDTransform(size, hd_max_tiles, tuple(cfg.data.mean), tuple(cfg.data.std))
    else:
        from iv2_data import CenterCropTransform

        transform = CenterCropTransform(size, mean=tuple(cfg.data.mean), std=tuple(cfg.data.std))
    return VideoReadConfig(num_frames=num_frames, size=size, sampling=sampling, train=False, transform=transform,
                           reader=reader, mean=tuple(cfg.data.mean), std=tuple(cfg.data.std))


_DATASETS = {"video_text": "VideoTextDataset", "instructions": "InstructionDataset",
             "mcqa": "MultipleChoiceQADataset"}


def phase_data(cfg: ChatTrainConfig, phase: PhaseConfig, model_cfg: ChatConfig, tokenizer: Any,
               qformer_tokenizer: Any, reader: Any = None):
    """The phase's training data: one ``ResumableBatches`` per sample kind, mixed by ``iv2_train.MetaLoader``."""
    import iv2_data
    from iv2_train import MetaLoader, ResumableBatches

    num_frames = phase.num_frames or model_cfg.vision.num_frames
    video = video_read_config(cfg, model_cfg, num_frames, train=True,
                              hd_max_tiles=phase.hd_max_tiles if phase.hd else None, reader=reader)
    collator = ChatCollator(tokenizer, qformer_tokenizer, model_cfg.num_visual_tokens, max_txt_len=phase.max_txt_len,
                            bos_fill=phase.bos_fill, hd_size=video.size if phase.hd else None,
                            max_instruction_tokens=_qformer_positions(model_cfg),
                            max_length=llm_context(model_cfg))
    sources = {}
    for kind in phase.data:
        train_records, _ = read_records(cfg, kind)
        if not train_records:
            raise ValueError(f"{Path(cfg.data.root) / getattr(cfg.data, kind)}: no training records left after "
                             f"holding out the last {cfg.data.held_out} videos")
        options = {"caption_sampling": "random"} if kind == "video_text" else {}
        dataset = getattr(iv2_data, _DATASETS[kind])(train_records, cfg.data.root, video=video, **options)
        if kind == "mcqa" and cfg.data.mcqa_per_conversation > 1:
            dataset = MCQAGroups(dataset, cfg.data.mcqa_per_conversation)
        timing = TimeMessages(cfg.data.root, num_frames) if cfg.data.time_message else None
        examples = ChatExamples(dataset, kind, tokenizer, time_message=timing,
                                question_in_instruction=cfg.data.question_in_instruction,
                                shuffle_options=cfg.data.shuffle_options)
        if len(examples) < phase.batch_size:
            raise ValueError(f"{kind}: {len(examples)} training records, fewer than one batch of {phase.batch_size}")
        sources[kind] = ResumableBatches(examples, phase.batch_size, seed=cfg.train.seed, collate_fn=collator)
    return MetaLoader(sources, seed=cfg.train.seed)


def llm_context(model_cfg: ChatConfig) -> int | None:
    """The LLM's context (``max_position_embeddings``; None when its config does not say): training rows are cut
    to it, reported."""
    value = getattr(model_cfg.llm_hf_config(), "max_position_embeddings", None)
    return int(value) if value else None


def _qformer_positions(model_cfg: ChatConfig) -> int:
    # text positions 0..L-1 of the QFormer's instruction must fit its position table
    return min(512, int(model_cfg.qformer_dict().get("max_position_embeddings", 512)))


# --------------------------------------------------------------------------------------------------- train
@dataclass
class ChatTrainResult:
    """What :func:`train` did: ``result`` (the last phase's ``iv2_train.TrainResult``), ``phases`` (every
    phase's), ``model_dir`` (the chat folder: :func:`iv2_chat.load_chat` reads it), ``export`` (its
    ``model.safetensors``: the trainable weights in the InternVideo2-Chat layout), ``mcqa`` (the held-out MC-QA
    report as a dict, or None) and ``mcqa_path`` (where it is written).

    ``metrics``: a flat dict of floats (also ``metrics_path``, ``{output_dir}/metrics.json``): ``loss_first`` /
    ``loss_last`` (first logged loss of the first phase, last of the last), and with the evaluation
    ``mcqa_accuracy``, ``mcqa_accuracy_strict``, ``chance`` (1 / options: 0.25), ``mcqa_accuracy_<task>``
    (motion, colour, count, identity) and ``mcqa_items``. ``history``: each phase's iv2-train
    ``metrics.jsonl`` (one row per logged step: loss, ``loss_<source>``, lr, grad_norm), the loss curves."""

    result: Any
    phases: dict[str, Any]
    model_dir: Path
    export: Path
    mcqa: dict[str, Any] | None = None
    mcqa_path: Path | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    metrics_path: Path | None = None
    history: dict[str, Path] = field(default_factory=dict)


def train(cfg: ChatTrainConfig) -> ChatTrainResult:
    """Run the recipe of ``cfg`` (module docstring): every phase with ``max_steps > 0`` in order, then the
    MC-QA evaluation on the held-out items. Works in one process, under ``torchrun`` and under the DeepSpeed
    launcher (per-phase strategies); resumes exactly. ``cfg.torch_threads`` holds while it runs, at most this
    process's share of the CPUs it may use (``iv2_train.usable_cpus(per_process=True)``: the processes a
    launcher started on this node share them); the caller's setting comes back afterwards."""
    from iv2_train import usable_cpus

    threads = torch.get_num_threads()
    if cfg.torch_threads:
        torch.set_num_threads(min(cfg.torch_threads, usable_cpus(per_process=True)))
    try:
        return _train(cfg)
    finally:
        torch.set_num_threads(threads)


def _train(cfg: ChatTrainConfig) -> ChatTrainResult:
    import time

    from iv2_train import barrier, get_rank, init_distributed

    from .bundle import save_chat, write_chat_weights

    output = Path(cfg.train.output_dir)
    init_distributed(cfg.train.distributed)
    ensure_corpus(cfg)
    tokenizer, qformer_tokenizer = load_tokenizers(cfg.model)
    model_dir = output / "model"
    base_cfg = build_chat_config(cfg.model)
    if get_rank() == 0:
        # the chat folder: config, tokenizers and (for a random LLM) the base LLM's weights, built once
        torch.manual_seed(cfg.train.seed)
        save_chat(model_dir, base_cfg, tokenizer, qformer_tokenizer, settings=_inference_settings(cfg, base_cfg))
    barrier()
    from .bundle import read_chat_config

    chat_cfg = read_chat_config(model_dir)
    reader = None
    if cfg.data.cache_videos:
        reader = CachedVideoReader()
    results: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    previous: Path | None = None
    last_result = None
    for name, phase in cfg.phases():
        started = time.perf_counter()
        last_result, previous = _run_phase(cfg, name, phase, chat_cfg, tokenizer, qformer_tokenizer, previous,
                                           reader)
        results[name] = last_result
        seconds[name] = time.perf_counter() - started
    assert previous is not None  # ChatTrainConfig refuses a config without phases
    if get_rank() == 0:
        write_chat_weights(model_dir, previous)
    barrier()
    report = report_path = None
    if cfg.evaluation.enabled and cfg.data.mcqa and cfg.data.held_out:
        started = time.perf_counter()
        report_path = output / "eval" / "mcqa.json"
        if get_rank() == 0:
            report = _final_mcqa(cfg, model_dir, report_path, reader)
        barrier()
        if report is None and report_path.is_file():
            report = json.loads(report_path.read_text(encoding="utf-8"))
        seconds["evaluation"] = time.perf_counter() - started
    history = {name: output / name / "metrics.jsonl" for name, _ in cfg.phases()}
    metrics = run_metrics(history, report)
    metrics_path = output / "metrics.json"
    if get_rank() == 0:
        from iv2_data import atomic_write

        with atomic_write(metrics_path, "w", encoding="utf-8") as f:
            json.dump(metrics, f, indent=1)
    return ChatTrainResult(last_result, results, model_dir, model_dir / "model.safetensors", report, report_path,
                           seconds, metrics, metrics_path, history)


def run_metrics(history: Mapping[str, Path], report: Mapping[str, Any] | None) -> dict[str, float]:
    """The flat metrics of a run (:class:`ChatTrainResult`): first / last logged loss over the phases'
    ``metrics.jsonl`` (in phase order) and the MC-QA report's accuracies."""
    losses: list[float] = []
    for path in history.values():
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                row = json.loads(line) if line.strip() else {}
                if "loss" in row:
                    losses.append(float(row["loss"]))
    metrics: dict[str, float] = {}
    if losses:
        metrics["loss_first"], metrics["loss_last"] = losses[0], losses[-1]
    if report:
        metrics.update(mcqa_accuracy=float(report["accuracy"]), mcqa_accuracy_strict=float(report["accuracy_strict"]),
                       mcqa_accuracy_content=float(report.get("accuracy_content", 0.0)),
                       chance=float(report["chance"]), mcqa_items=float(report["total"]))
        for task, row in report["tasks"].items():
            metrics[f"mcqa_accuracy_{task}"] = float(row["accuracy"])
            metrics[f"mcqa_accuracy_strict_{task}"] = float(row["accuracy_strict"])
            metrics[f"mcqa_accuracy_content_{task}"] = float(row.get("accuracy_content", 0.0))
    return metrics


def _inference_settings(cfg: ChatTrainConfig, model_cfg: ChatConfig) -> dict[str, Any]:
    last = cfg.phases()[-1][1]
    return {
        "num_frames": last.num_frames or model_cfg.vision.num_frames,
        "size": cfg.data.size or model_cfg.vision.img_size,
        "mean": list(cfg.data.mean), "std": list(cfg.data.std),
        "question_in_instruction": cfg.data.question_in_instruction,
        "hd": bool(last.hd), "hd_max_tiles": last.hd_max_tiles,
    }


def _file_digest(path: Path | None) -> str | None:
    if path is None:
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _run_phase(cfg: ChatTrainConfig, name: str, phase: PhaseConfig, chat_cfg: ChatConfig, tokenizer: Any,
               qformer_tokenizer: Any, previous: Path | None, reader: Any) -> tuple[Any, Path]:
    from iv2_train import Trainer, barrier, freeze, get_rank

    train_cfg = phase_train_config(cfg, name)
    phase_dir = Path(train_cfg.output_dir)
    start = {"init": str(previous) if previous else None, "sha256": _file_digest(previous),
             "vision_init": cfg.model.vision_init, "model_init": cfg.model.init}
    _check_phase_start(phase_dir, name, start)

    torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank and every resume
    model = VideoChatModel(chat_cfg)
    freeze(model.base_lm, checkpoint=False, eval_mode=False)  # base LLM: frozen, never in checkpoints
    if previous is None:
        if cfg.model.vision_init:
            load_vision_init(model, cfg.model.vision_init, cfg.model.vision_init_num_frames)
        if cfg.model.init:
            result = load_checkpoint(model, cfg.model.init, strict=False)
            log.info("model.init %s: missing %d, dropped %d", cfg.model.init, len(result.missing), len(result.dropped))
    else:
        load_checkpoint(model, previous, strict=True)
    set_trainable(model, phase)
    objective = ChatObjective(model, hd_size=(cfg.data.size or chat_cfg.vision.img_size) if phase.hd else None)
    data = phase_data(cfg, phase, chat_cfg, tokenizer, qformer_tokenizer, reader)
    evaluate = None
    if train_cfg.evaluation.every_steps and cfg.data.held_out and cfg.data.mcqa:
        evaluate = _training_evaluation(cfg, phase, chat_cfg, tokenizer, qformer_tokenizer, reader)
    if get_rank() == 0:
        phase_dir.mkdir(parents=True, exist_ok=True)
        (phase_dir / "start.json").write_text(json.dumps(start, indent=1) + "\n", encoding="utf-8")
    barrier()
    trainer = Trainer(objective, data, train_cfg, run_config=cfg, evaluate=evaluate, export=trainable_export)
    result = trainer.fit()
    return result, phase_dir / "final" / "model.safetensors"


def _check_phase_start(phase_dir: Path, name: str, start: dict[str, Any]) -> None:
    recorded = phase_dir / "start.json"
    if not recorded.is_file():
        return
    before = json.loads(recorded.read_text(encoding="utf-8"))
    if before != start:
        changed = sorted(k for k in start if before.get(k) != start[k])
        raise RuntimeError(f"{phase_dir}: phase {name!r} was started from other weights ({', '.join(changed)} "
                           f"changed since); its checkpoints would mix two runs. Remove {phase_dir} (and the "
                           f"phases after it) or use another train.output_dir")


def _training_evaluation(cfg: ChatTrainConfig, phase: PhaseConfig, chat_cfg: ChatConfig, tokenizer: Any,
                         qformer_tokenizer: Any, reader: Any) -> Callable[[Any], dict[str, float]]:
    """``evaluate`` for the Trainer: MC-QA accuracy on the first ``evaluation.during_training_limit`` held-out
    items (every rank computes the same numbers)."""
    from .chat import VideoChat
    from .evaluation import evaluate_mcqa

    hd_max_tiles = phase.hd_max_tiles if phase.hd else None
    dataset = _held_out_mcqa(cfg, chat_cfg, phase.num_frames or chat_cfg.vision.num_frames, reader,
                             limit=cfg.evaluation.during_training_limit, hd_max_tiles=hd_max_tiles)

    def evaluate(trainer: Any) -> dict[str, float]:
        chat = VideoChat(trainer.module.model, tokenizer, qformer_tokenizer)
        chat.settings = {"size": cfg.data.size or chat_cfg.vision.img_size}  # the phase's tile size (HD)
        report = evaluate_mcqa(chat, dataset, batch_size=cfg.evaluation.batch_size,
                               max_new_tokens=cfg.evaluation.max_new_tokens,
                               question_in_instruction=cfg.data.question_in_instruction, progress=False,
                               hd_max_tiles=hd_max_tiles)
        trainer.module.train()
        return {"mcqa_accuracy": report.accuracy, "mcqa_accuracy_strict": report.accuracy_strict}

    return evaluate


def _held_out_mcqa(cfg: ChatTrainConfig, chat_cfg: ChatConfig, num_frames: int, reader: Any, limit: int = 0,
                   hd_max_tiles: int | None = None):
    from iv2_data import MultipleChoiceQADataset

    _, held = read_records(cfg, "mcqa")
    if limit:
        held = held[:limit]
    video = video_read_config(cfg, chat_cfg, num_frames, train=False, reader=reader, hd_max_tiles=hd_max_tiles)
    return MultipleChoiceQADataset(held, cfg.data.root, video=video)


def _final_mcqa(cfg: ChatTrainConfig, model_dir: Path, report_path: Path, reader: Any) -> dict[str, Any]:
    from iv2_data import MultipleChoiceQADataset, atomic_write

    from .bundle import load_chat
    from .evaluation import evaluate_mcqa, mcqa_read_config

    chat = load_chat(model_dir)
    settings = chat.settings
    _, held = read_records(cfg, "mcqa")
    if cfg.evaluation.limit:
        held = held[: cfg.evaluation.limit]
    video = mcqa_read_config(chat, cfg.evaluation.num_frames, reader=reader)
    dataset = MultipleChoiceQADataset(held, cfg.data.root, video=video)
    report = evaluate_mcqa(chat, dataset, batch_size=cfg.evaluation.batch_size,
                           max_new_tokens=cfg.evaluation.max_new_tokens,
                           question_in_instruction=settings["question_in_instruction"],
                           predictions=report_path.with_name("mcqa_predictions.jsonl"),
                           hd_max_tiles=settings["hd_max_tiles"] if settings["hd"] else None)
    out = report.to_dict()
    report_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(report_path, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1)
    return out


def chat_train_summary(result: ChatTrainResult) -> str:
    """A few lines for the command line."""
    lines = [f"chat model: {result.model_dir}"]
    for name, res in result.phases.items():
        loss = res.metrics.get("loss") if res.metrics else None
        lines.append(f"  {name}: {res.step} steps" + (f", last loss {loss:.4f}" if loss is not None else "")
                     + (f" ({result.seconds[name]:.0f} s)" if name in result.seconds else ""))
    if result.mcqa:
        m = result.mcqa
        lines.append(f"MC-QA on {m['total']} held-out items: {100 * m['accuracy']:.1f}% (strict "
                     f"{100 * m['accuracy_strict']:.1f}%, option text {100 * m.get('accuracy_content', 0):.1f}%, "
                     f"chance {100 * m['chance']:.0f}%)")
        for task, row in m["tasks"].items():
            lines.append(f"  {task}: {100 * row['accuracy']:.1f}% (strict {100 * row['accuracy_strict']:.1f}%, "
                         f"option text {100 * row.get('accuracy_content', 0):.1f}%, {row['total']} items)")
        lines.append(f"report: {result.mcqa_path}")
    return "\n".join(lines)


__all__ = [
    "CachedVideoReader", "ChatObjective", "ChatTrainResult", "build_chat_config", "chat_train_summary",
    "load_tokenizers", "load_vision_init", "run_metrics", "set_trainable", "split_held_out", "train",
    "trainable_export",
]
