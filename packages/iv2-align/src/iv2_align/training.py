"""Stage-2 training on iv2-train: ``train(cfg)`` runs the paper's schedule and exports the products.

1. the tokenizer (``model.tokenizer``) and the data (``data``): one ``ResumableBatches`` per media source,
   mixed one source per step by ``iv2_train.MetaLoader`` (the official MetaLoader);
2. the model (``model``): a registered stage-2 size with overrides, its towers initialised from a stage-1
   encoder (save_pretrained folder or official checkpoint; position table interpolated to this model's
   frames), a pretrained BERT and a BEATs checkpoint, or a whole stage-2 checkpoint;
3. the phases (``masked``, ``unmasked``): each an ``iv2_train.Trainer`` run in ``output_dir/<phase>`` with
   its own steps, masks, frozen towers (``iv2_train.freeze``; frozen towers are left out of checkpoints, and
   rebuilt identically on resume from the same initialisation or the previous phase's export) and lr; the
   second phase starts from the first one's final weights. Killing a run and starting it again resumes the
   phase it was in; a finished phase trains nothing;
4. evaluation: held-out retrieval (``iv2_align.evaluate``) during each phase and after its last step;
5. the products in ``output_dir/export``: ``stage2/`` (the whole model in the official key layout, config and
   tokenizer: :func:`iv2_align.load_stage2`) and ``vision_encoder/`` (``iv2_encoders.save_pretrained``: the
   next stage's input).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .config import BEATsConfig, Stage2Config
from .data import (
    annotation_splits,
    broken_counts,
    build_tokenizer,
    media_geometry,
    training_sources,
)
from .evaluate import RETRIEVAL_SETS, RetrievalSet, evaluate_sets, headline, load_retrieval_set
from .model import Stage2Model, get_stage2_config
from .objective import Stage2Objective
from .pretrained import Preprocessing, save_stage2
from .train_config import SOURCE_KINDS, AlignConfig, DataSection, EvalSection, PhaseSection, phase_train_config

log = logging.getLogger("iv2_align")

EXPORT_DIR = "export"


@dataclass
class AlignResult:
    """What :func:`train` returns. ``metrics``: the final held-out retrieval (flat, see
    :mod:`iv2_align.evaluate`, plus the summary names of :func:`summary_metrics`; empty without held-out data);
    ``phases``: each phase's ``iv2_train.TrainResult``; ``metrics_files``: each phase's ``metrics.jsonl`` (every
    logged loss and evaluation, for curves); ``model_dir`` / ``vision_encoder_dir``: the exports (on rank 0, None
    elsewhere)."""

    output_dir: Path
    phases: dict[str, Any]
    metrics: dict[str, float]
    metrics_path: Path | None
    model_dir: Path | None
    vision_encoder_dir: Path | None
    broken_samples: dict[str, int] = field(default_factory=dict)
    metrics_files: dict[str, Path] = field(default_factory=dict)

    @property
    def train(self) -> Any:
        """The last phase's ``TrainResult``."""
        return list(self.phases.values())[-1]

    @property
    def encoder_dir(self) -> Path | None:
        """The stage-2 vision encoder (``iv2_encoders.save_pretrained`` folder): stage 3's input."""
        return self.vision_encoder_dir


# --------------------------------------------------------------------------------------------------- model
def _vision_init_config(path: str) -> Any:
    """The architecture of a ``save_pretrained`` folder, or None for a checkpoint file."""
    from iv2_encoders.pretrained import read_saved_config, saved_folder

    folder = saved_folder(path)
    return read_saved_config(folder)[0] if folder is not None else None


def stage2_config(cfg: AlignConfig, vocab_size: int) -> Stage2Config:
    """The model's :class:`Stage2Config`: the registered size, its vision tower's architecture taken from a
    ``vision_init`` folder (frames, size and image-table rule stay this model's), ``model.*`` overrides, the BEATs
    cfg of ``audio_init``, and the tokenizer's vocabulary size."""
    base = get_stage2_config(cfg.model.name)
    vision = base.vision
    if cfg.model.vision_init:
        saved = _vision_init_config(cfg.model.vision_init)
        if saved is not None:
            vision = saved.replace(num_frames=vision.num_frames, img_size=vision.img_size,
                                   sep_image_video_pos_embed=vision.sep_image_video_pos_embed,
                                   interpolate_pos_embed_at_runtime=False, grad_checkpointing=False)
    vision = vision.replace(**cfg.model.vision)
    text = {**(base.text if isinstance(base.text, dict) else base.text.to_diff_dict()), **cfg.model.text,
            "vocab_size": vocab_size}
    audio = base.audio
    if cfg.model.audio_init:
        from .beats import read_beats_checkpoint

        audio = read_beats_checkpoint(cfg.model.audio_init)[0]
    if cfg.model.audio:
        if audio is None:
            raise ValueError(f"model.audio overrides need an audio-visual model; {cfg.model.name} has no audio encoder")
        audio = BEATsConfig(**{**audio.to_dict(), **cfg.model.audio})
    pick = lambda own, default: own if own is not None else default
    return Stage2Config(vision=vision, text=text, fusion_layer=pick(cfg.model.fusion_layer, base.fusion_layer),
                        embed_dim=pick(cfg.model.embed_dim, base.embed_dim), audio=audio,
                        av_concat_dim=pick(cfg.model.av_concat_dim, base.av_concat_dim) if audio else None,
                        temp=pick(cfg.model.temp, base.temp))


def load_vision_init(model: Stage2Model, path: str, num_frames: int | None = None) -> None:
    """The stage-1 video encoder into ``model.vision_encoder``: a ``save_pretrained`` folder or any released
    checkpoint layout (distillation heads dropped); the position table is interpolated from the file's frames.
    Only the image position table may be missing (a stage-1 encoder has none; it keeps its sin-cos init)."""
    from iv2_encoders import CheckpointError
    from iv2_encoders import load_checkpoint as load_vision_checkpoint
    from iv2_encoders.pretrained import WEIGHTS_FILE, saved_folder

    folder = saved_folder(path)
    if folder is not None and num_frames is None:
        num_frames = _vision_init_config(path).num_frames
    file = folder / WEIGHTS_FILE if folder is not None else path
    result = load_vision_checkpoint(model.vision_encoder, file, num_frames=num_frames, strict=False)
    fatal = [k for k in result.missing if k != "img_pos_embed"]
    if fatal:
        raise CheckpointError(f"{path}: the video encoder lacks {len(fatal)} weight(s) the model needs: {fatal[:8]}")
    log.info("video encoder from %s (%d frames -> %d)%s", path, result.num_frames or -1,
             model.cfg.vision.num_frames, f"; dropped {len(result.dropped)} keys" if result.dropped else "")


def build_model(cfg: AlignConfig, model_cfg: Stage2Config, *, initialise: bool = True) -> Stage2Model:
    """A fresh :class:`Stage2Model` (seed the RNG first: every rank and every resume must build the same
    weights), initialised as ``model.*`` says when ``initialise``."""
    from iv2_encoders import load_state_dict_checked

    from .checkpoint import load_checkpoint

    model = Stage2Model(model_cfg)
    if initialise:
        spec = cfg.model
        if spec.init:
            if spec.vision_init or spec.text_init or spec.audio_init:
                raise ValueError("model.init gives every weight; leave model.vision_init/text_init/audio_init unset")
            load_checkpoint(model, spec.init)
        if spec.vision_init:
            load_vision_init(model, spec.vision_init, spec.vision_init_num_frames)
        if spec.text_init:
            missing, _ = model.text_encoder.load_pretrained_bert(spec.text_init)
            log.info("text encoder from %s; %d fresh tensors (cross-attention)", spec.text_init, len(missing))
        if spec.audio_init:
            from .beats import read_beats_checkpoint

            load_state_dict_checked(model.audio_encoder, read_beats_checkpoint(spec.audio_init)[1],
                                    source=spec.audio_init)
    model.set_grad_checkpointing(cfg.model.grad_checkpointing)
    return model


def freeze_for_phase(model: Stage2Model, phase: PhaseSection) -> list[str]:
    """Freeze the towers the phase freezes (``iv2_train.freeze``: no gradients, eval mode, left out of checkpoints
    but kept in the export). Returns their names."""
    from iv2_train import freeze

    frozen = []
    towers = {"vision_encoder": phase.freeze_vision, "text_encoder": phase.freeze_text,
              "audio_encoder": phase.freeze_audio and model.cfg.is_audio_visual}
    for name, wanted in towers.items():
        if wanted:
            freeze(getattr(model, name), checkpoint=False, export=True)
            frozen.append(name)
    return frozen


# ----------------------------------------------------------------------------------------------- evaluation
class HeldOutEvaluator:
    """The Trainer's ``evaluate`` hook: held-out retrieval computed on rank 0 (sets read once, lazily) and
    broadcast, so every rank returns the same numbers."""

    def __init__(self, evaluation: EvalSection, data: DataSection, splits: Mapping[str, Any], tokenizer: Any, *,
                 num_frames: int, size: int, max_text_length: int, audio_visual: bool) -> None:
        self.evaluation, self.data, self.splits, self.tokenizer = evaluation, data, splits, tokenizer
        self.num_frames, self.size, self.max_text_length = num_frames, size, max_text_length
        names = ["video"] + (["audio", "audio_video"] if audio_visual and evaluation.audio else [])
        self.names = [n for n in names if RETRIEVAL_SETS[n][0] in splits and splits[RETRIEVAL_SETS[n][0]].held_out]
        self._sets: list[RetrievalSet] | None = None

    def __bool__(self) -> bool:
        return bool(self.names)

    def sets(self) -> list[RetrievalSet]:
        if self._sets is None:
            ev = self.evaluation
            self._sets = [load_retrieval_set(name, self.splits[RETRIEVAL_SETS[name][0]],
                                             self.splits[RETRIEVAL_SETS[name][0]].held_out, self.data,
                                             self.tokenizer, num_frames=self.num_frames, size=self.size,
                                             max_length=self.max_text_length, all_captions=ev.all_captions,
                                             merge_duplicates=ev.merge_duplicate_captions)
                          for name in self.names]
        return self._sets

    def __call__(self, trainer: Any) -> dict[str, float]:
        """Every number goes to ``<run>/eval/retrieval_step_N.json``; the headline ones are returned (logged and
        plotted by the Trainer)."""
        from iv2_train import broadcast_object

        metrics = None
        if trainer.env.is_main:
            metrics = evaluate_sets(trainer.module, self.sets(), k_test=self.evaluation.k_test,
                                    batch_size=self.evaluation.batch_size, prepare=trainer.prepare_batch)
            _write_json(trainer.output_dir / "eval" / f"retrieval_step_{trainer.step:06d}.json",
                        {"step": trainer.step, "metrics": metrics})
            metrics = headline(metrics)
        return broadcast_object(metrics)


def latest_evaluation(run_dir: Path, step: int) -> dict[str, float]:
    """Every number of the held-out evaluation of a phase run at ``step`` (``{}`` if there is none: a file of
    another step is another run's, never reported for this one)."""
    path = run_dir / "eval" / f"retrieval_step_{step:06d}.json"
    return json.loads(path.read_text(encoding="utf-8"))["metrics"] if path.is_file() else {}


# -------------------------------------------------------------------------------------------------- train
def _phase_objective(cfg: AlignConfig, phase: PhaseSection, tokenizer: Any) -> Stage2Objective:
    return Stage2Objective.for_tokenizer(
        tokenizer, weights=cfg.loss, video_mask_type=phase.video_mask_type, video_mask_ratio=phase.video_mask_ratio,
        image_mask_type=phase.image_mask_type, image_mask_ratio=phase.image_mask_ratio)


def train(cfg: AlignConfig) -> AlignResult:
    """Run the stage-2 schedule of ``cfg`` (see the module docstring) and return :class:`AlignResult`.

    Runs single-process, under ``torchrun --nproc-per-node N`` and under the DeepSpeed launcher
    (``train.distributed.strategy=deepspeed``); the process group stays up afterwards (call
    ``iv2_train.shutdown_distributed()`` at the very end). Rerunning a finished run trains nothing and returns
    the same result in seconds; a run folder that holds another recipe's run is refused (:func:`check_same_run`).
    """
    threads = torch.get_num_threads()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    try:
        return _train(cfg)
    finally:
        torch.set_num_threads(threads)


# sections and keys that decide what a run computes; the rest (logging, checkpoints, launcher) may change on resume
_RECIPE_RUNTIME_KEYS = ("seed", "optimizer", "schedule", "precision")


def run_recipe(cfg: AlignConfig) -> dict[str, Any]:
    """What a run computes, as JSON values: every section but the runtime's logging, checkpoint and launcher
    settings and the data loader's worker count."""
    import dataclasses

    document = json.loads(json.dumps(dataclasses.asdict(cfg), default=str))
    document["data"].pop("num_workers", None)
    train_section = document.pop("train")
    document["train"] = {k: train_section.get(k) for k in _RECIPE_RUNTIME_KEYS if k in train_section}
    document["train"]["precision"] = train_section.get("distributed", {}).get("precision")
    document.pop("threads", None)
    return document


def check_same_run(cfg: AlignConfig, root: Path) -> None:
    """Refuse a run folder that holds a run of another recipe (resuming or returning it would report that
    run's work as this one's); record the recipe in ``root/recipe.json`` for the next call."""
    from iv2_train import ConfigError, get_rank

    path = root / "recipe.json"
    recipe = run_recipe(cfg)
    trained = any((root / phase / sub).is_dir() for phase in ("masked", "unmasked") for sub in ("checkpoints", "final"))
    if path.is_file() and trained:
        previous = json.loads(path.read_text(encoding="utf-8"))
        changed = sorted(_differences(previous, recipe))
        if changed:
            raise ConfigError(f"train.output_dir {root} holds a run of another recipe (differs in "
                              f"{', '.join(changed[:8])}{' ...' if len(changed) > 8 else ''}); use another "
                              f"output_dir or delete that folder")
    elif get_rank() == 0:  # nothing trained yet (or a folder from before recipes were recorded): this recipe's
        _write_json(path, recipe)


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += _differences(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def summary_metrics(metrics: Mapping[str, float], metrics_files: Mapping[str, Path]) -> dict[str, float]:
    """The demo's names beside the full report: ``a2t_r1`` / ``t2a_r1`` / ``a2t_r5`` / ``t2a_r5`` (audio-text
    retrieval: audio -> caption is the audio set's ``v2t``), and ``loss_first`` / ``loss_last``: the contrastive
    loss (``loss_vtc``, the same task on every image, video and audio-video step) at the first and the last logged
    step of the schedule."""
    from iv2_train import read_metrics

    out = {}
    for ours, theirs in (("a2t", "v2t"), ("t2a", "t2v")):
        for k in ("r1", "r5", "r10"):
            if f"audio_{theirs}_{k}" in metrics:
                out[f"{ours}_{k}"] = metrics[f"audio_{theirs}_{k}"]
    rows = [r for path in metrics_files.values() if path.is_file() for r in read_metrics(path) if "loss_vtc" in r]
    if rows:
        out["loss_first"], out["loss_last"] = float(rows[0]["loss_vtc"]), float(rows[-1]["loss_vtc"])
    return out


def _train(cfg: AlignConfig) -> AlignResult:
    from iv2_train import MetaLoader, Trainer, barrier, check_config, get_rank

    check_config(cfg)
    if not cfg.train.checkpoint.export_final:
        raise ValueError("train.checkpoint.export_final must stay true: each phase starts from the previous one's "
                         "export and the products are made from the last one")
    root = Path(cfg.train.output_dir)
    check_same_run(cfg, root)
    tokenizer = build_tokenizer(cfg.model.tokenizer, root / "tokenizer")
    model_cfg = stage2_config(cfg, len(tokenizer))
    num_frames, size = media_geometry(cfg.data, model_cfg.vision.num_frames, model_cfg.vision.img_size)
    kinds = {SOURCE_KINDS[s] for s in cfg.data.sources} | {"video_text"}
    if model_cfg.is_audio_visual and cfg.evaluation.audio:
        kinds |= {"audio_text", "video_audio_text"}
    splits = annotation_splits(cfg.data, sorted(kinds), required={SOURCE_KINDS[s] for s in cfg.data.sources})
    evaluator = HeldOutEvaluator(cfg.evaluation, cfg.data, splits, tokenizer, num_frames=num_frames, size=size,
                                 max_text_length=cfg.model.max_text_length, audio_visual=model_cfg.is_audio_visual)

    results: dict[str, Any] = {}
    previous: Path | None = None
    broken: dict[str, int] = {}
    for name, phase in cfg.phases():
        torch.manual_seed(cfg.train.seed)  # the same initial weights on every rank and on every resume
        model = build_model(cfg, model_cfg, initialise=previous is None)
        if previous is not None:
            from .checkpoint import load_checkpoint

            load_checkpoint(model, previous)
        model.objective = _phase_objective(cfg, phase, tokenizer)
        frozen = freeze_for_phase(model, phase)
        sources = training_sources(cfg.data, splits, tokenizer, num_frames=num_frames, size=size,
                                   max_text_length=cfg.model.max_text_length, seed=cfg.train.seed)
        phase_cfg = phase_train_config(cfg, name, phase)
        if get_rank() == 0:
            log.info("phase %s: %d steps, video masks %s %.2f, frozen: %s", name, phase.steps, phase.video_mask_type,
                     phase.video_mask_ratio, ", ".join(frozen) or "nothing")
        trainer = Trainer(model, MetaLoader(sources, seed=cfg.train.seed), phase_cfg, run_config=cfg,
                          evaluate=evaluator if evaluator else None)
        results[name] = trainer.fit()
        for source, count in broken_counts(sources).items():
            broken[source] = broken.get(source, 0) + count
        previous = Path(phase_cfg.output_dir) / "final" / "model.safetensors"

    metrics = latest_evaluation(results[name].output_dir, results[name].step) or {
        k.removeprefix("eval/"): float(v) for k, v in results[name].eval_metrics.items() if k != "step"}
    metrics_files = {n: r.output_dir / "metrics.jsonl" for n, r in results.items()}
    if metrics:
        metrics.update(summary_metrics(metrics, metrics_files))
    model_dir = vision_dir = metrics_path = None
    if get_rank() == 0:
        model_dir, vision_dir = export_products(cfg, model_cfg, tokenizer, previous, root / EXPORT_DIR,
                                                Preprocessing(num_frames=num_frames, img_size=size,
                                                              max_text_length=cfg.model.max_text_length,
                                                              audio_seconds=cfg.data.audio_seconds))
        metrics_path = root / "eval" / "retrieval.json"
        _write_json(metrics_path, {"metrics": metrics, "broken_samples": broken,
                                   "phases": {n: r.step for n, r in results.items()}})
        if any(broken.values()):
            log.warning("unreadable samples skipped during training: %s", broken)
    barrier()
    return AlignResult(root, results, metrics, metrics_path, model_dir, vision_dir, broken, metrics_files)


def export_products(cfg: AlignConfig, model_cfg: Stage2Config, tokenizer: Any, weights: Path, directory: Path,
                    preprocessing: Preprocessing) -> tuple[Path, Path]:
    """``directory/stage2`` (the whole model, :func:`iv2_align.load_stage2`) and ``directory/vision_encoder``
    (``iv2_encoders.save_pretrained``) from the last phase's final weights."""
    from iv2_encoders import PretrainedCfg, save_pretrained

    from .checkpoint import load_checkpoint

    model = Stage2Model(model_cfg)  # float32: a bf16 run's export is widened here, once
    load_checkpoint(model, weights, num_frames=model_cfg.vision.num_frames)
    model_dir = save_stage2(model, tokenizer, directory / "stage2", preprocessing)
    model.vision_encoder.pretrained_cfg = PretrainedCfg(
        num_frames=model_cfg.vision.num_frames, img_size=model_cfg.vision.img_size, resize="squash",
        description=f"iv2-align stage 2 ({cfg.model.name}), trained in {cfg.train.output_dir}")
    vision_dir = save_pretrained(model.vision_encoder, directory / "vision_encoder")
    return model_dir, vision_dir


def _write_json(path: Path, document: dict[str, Any]) -> None:
    from iv2_data import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w", encoding="utf-8") as f:
        json.dump(document, f, indent=2)
        f.write("\n")

