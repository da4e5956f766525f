"""The configuration of the chat training recipe (no torch: ``iv2-chat --help`` reads it).

``ChatTrainConfig`` = what the model is built from (:class:`ChatModelSpec`), where the data is
(:class:`ChatDataConfig`), the four phases of the progressive recipe (:class:`PhaseConfig`: ``align``,
``instruct``, ``hd``, ``hd_f16``; a phase with ``max_steps: 0`` is skipped), the MC-QA evaluation
(:class:`ChatEvalConfig`) and the shared runtime (``train``: ``iv2_train.TrainConfig``; each phase runs with
it, its own steps / learning rate / schedule / precision / strategy replacing the shared ones).

Flavors (:data:`CHAT_FLAVORS`): ``tiny-synthetic`` (the demo: the synthetic corpus, a tiny tower, QFormer and
random Mistral-architecture LLM, CPU), ``tiny-synthetic-quick`` (the same path in seconds) and
``internvideo2-chat-8b`` (the release shape with the official optimisation per phase; steps are
placeholders to set for your data).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from iv2_train.config import (
    CheckpointConfig,
    ConfigError,
    DistributedConfig,
    EvaluationConfig,
    LoggingConfig,
    OptimizerConfig,
    ScheduleConfig,
    TrainConfig,
    load_config,
)

PHASES = ("align", "instruct", "hd", "hd_f16")


@dataclass
class ChatModelSpec:
    """What the chat model is built from: a named architecture (``iv2_chat.chat_config``) plus overrides."""

    # iv2_chat.chat_config name: "tiny-synthetic" (demo), "tiny" (tests), "internvideo2-chat-8b" (release)
    name: str = "tiny-synthetic"
    # The vision tower's weights: a stage-2 encoder (an iv2_encoders.save_pretrained folder, whose config
    # also defines the tower: depth - 1 blocks, every token) or a checkpoint file of any released layout.
    vision_init: str | None = None
    # Which block of that encoder feeds the QFormer, counted from its end: -2 (official x_vis_return_idx=-2:
    # the tower keeps depth - 1 blocks) or -1 (every block; the demo's 2-block encoder would keep only one).
    vision_return_index: int = -2
    # Frames the vision_init weights were trained with (None: the folder's config, or inferred from the file).
    vision_init_num_frames: int | None = None
    # A chat checkpoint (any layout iv2_chat.load_checkpoint reads) loaded before the first phase.
    init: str | None = None
    # Overrides of the tower (VideoEncoderConfig fields, e.g. num_frames), the QFormer (BERT config fields),
    # the LLM (config fields; or a local path / hub id of a pretrained causal LM) and LoRA (peft options;
    # null: no LoRA).
    vision: dict[str, Any] = field(default_factory=dict)
    qformer: dict[str, Any] = field(default_factory=dict)
    llm: dict[str, Any] | str = field(default_factory=dict)
    lora: dict[str, Any] | None = field(default_factory=dict)
    num_query_tokens: int | None = None
    extra_num_query_tokens: int | None = None
    llm_dtype: str | None = None
    # The LLM's tokenizer and the QFormer's BERT tokenizer: local path or hub id; null: the offline tiny ones.
    tokenizer: str | None = None
    qformer_tokenizer: str | None = None
    local_files_only: bool = False

    def __post_init__(self) -> None:
        if self.vision_return_index >= 0:
            raise ConfigError(f"model.vision_return_index counts blocks from the end (-1 the last, -2 the official "
                              f"second-to-last), got {self.vision_return_index}")


@dataclass
class ChatDataConfig:
    """Where the annotation files are and how they are read and split."""

    # Folder of the annotation files (media paths inside them are relative to it).
    root: str = "runs/synthetic-corpus"
    # > 0: write the iv2-data synthetic corpus of this many clips into `root` first (kept when present).
    write_synthetic: int = 0
    synthetic_seed: int = 0
    # Annotation files (relative to root) per sample kind; "" = none.
    video_text: str = "video_text.json"
    instructions: str = "instructions.json"
    mcqa: str = "mcqa.json"
    # The last `held_out` videos (sorted paths) of each file are kept out of training; evaluation uses them.
    held_out: int = 0
    # Decode every clip once and keep it in memory (evaluation-style "middle" frames, no augmentation): for
    # small corpora such as the synthetic one. Off: each step decodes with random segment sampling.
    cache_videos: bool = False
    # The official time message after the media block of instruction conversations ("add_second_msg").
    time_message: bool = True
    # Append the question to the QFormer's instruction (the official dataset's return_question_instruction);
    # evaluation then passes the MC question to the QFormer too.
    question_in_instruction: bool = False
    # Shuffle the options of multiple-choice training items every time they are read (an augmentation: the
    # answer letter then has to come from matching the options).
    shuffle_options: bool = False
    # Multiple-choice items about one video per training conversation (one turn each, shuffled); 1: the
    # MVBench single-question layout. Several share the media block and system prompt: cheaper per item.
    mcqa_per_conversation: int = 1
    # Frame size; null: the tower's img_size.
    size: int | None = None
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    def __post_init__(self) -> None:
        if self.held_out < 0 or self.write_synthetic < 0 or self.mcqa_per_conversation < 1:
            raise ConfigError("data.held_out and data.write_synthetic must be >= 0, data.mcqa_per_conversation >= 1")


@dataclass
class PhaseConfig:
    """One phase of the progressive recipe; unset fields (null) take the shared ``train`` values."""

    max_steps: int = 0  # 0: the phase is skipped
    lr: float | None = None
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    batch_size: int = 4
    grad_accum_steps: int | None = None
    # Frames per clip (null: the tower's).
    num_frames: int | None = None
    # Sample kinds feeding the phase (one source per step, in proportion to their batches: the MetaLoader).
    data: tuple[str, ...] = ("instructions", "mcqa")
    train_vision: bool = True
    train_qformer: bool = True
    train_lora: bool = True
    # HD inputs (hd_transform tiles + global view, the same instruction for every sub-video).
    hd: bool = False
    hd_max_tiles: int = 6
    # Longest text after the visual slots (the official max_txt_l); longer conversations are cut, reported.
    max_txt_len: int = 512
    # BOS slot fill: "embedding" (HD trainer) or "scalar" (the stage-3 trainer's quirk: the BOS id in every
    # channel).
    bos_fill: Literal["embedding", "scalar"] = "embedding"
    precision: Literal["fp32", "bf16", "fp16"] | None = None
    strategy: Literal["auto", "ddp", "deepspeed"] | None = None
    zero_stage: Literal[0, 1, 2, 3] | None = None

    def __post_init__(self) -> None:
        if self.max_steps < 0 or self.batch_size < 1:
            raise ConfigError(f"a phase needs max_steps >= 0 and batch_size >= 1, got {self.max_steps}, "
                              f"{self.batch_size}")
        unknown = sorted(set(self.data) - {"video_text", "instructions", "mcqa"})
        if unknown or not self.data:
            raise ConfigError(f"a phase's data must name sample kinds among video_text, instructions, mcqa; got "
                              f"{list(self.data)}")


@dataclass
class ChatEvalConfig:
    """MC-QA evaluation on the held-out items after the last phase (MVBench style: greedy, the official
    prompt with "Best option:(" pre-filled, official and strict scoring)."""

    enabled: bool = True
    # Frames per clip (null: the last phase's; MVBench uses 16).
    num_frames: int | None = None
    batch_size: int = 16
    max_new_tokens: int = 100
    # 0: every held-out item; else the first N.
    limit: int = 0
    # Items used by the evaluation during training (train.evaluation.every_steps > 0).
    during_training_limit: int = 64


@dataclass
class ChatTrainConfig:
    """The whole stage-3 run; see the module docstring."""

    model: ChatModelSpec = field(default_factory=ChatModelSpec)
    data: ChatDataConfig = field(default_factory=ChatDataConfig)
    align: PhaseConfig = field(default_factory=PhaseConfig)
    instruct: PhaseConfig = field(default_factory=PhaseConfig)
    hd: PhaseConfig = field(default_factory=PhaseConfig)
    hd_f16: PhaseConfig = field(default_factory=PhaseConfig)
    evaluation: ChatEvalConfig = field(default_factory=ChatEvalConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    # CPU threads of torch in this process (0: torch's default), at most its share of the CPUs it may use. The
    # tiny flavor uses 1: on a busy machine a second thread waiting at every parallel region made steps 5-10x
    # slower (README); the quick one uses 2, which its 2-minute budget needs (1.2-1.3x on 2 idle cores).
    torch_threads: int = 0

    def __post_init__(self) -> None:
        if not any(getattr(self, p).max_steps for p in PHASES):
            raise ConfigError(f"every phase has max_steps 0: set one of {', '.join(p + '.max_steps' for p in PHASES)}")

    def phases(self) -> list[tuple[str, PhaseConfig]]:
        """The phases that run, in order."""
        return [(name, getattr(self, name)) for name in PHASES if getattr(self, name).max_steps > 0]


# ------------------------------------------------------------------------------------------------- flavors
# The demo's two sizes (issue 16): the corpus written when none is given, steps, warmup and lr of the one phase.
# The default: 5000 steps at 2e-3, 64.1% held-out MC-QA in the demo, 467 s (README: seeds 1 and 2 gave 62.5% and
# 65.2%; at 3000 steps 53-62%: held-out accuracy keeps rising after the training loss is low); quick: 1100 steps
# at 2e-3 on the MC items alone, 33.6% in the quick demo (seed 1: 32.4%), 54 s.
_SYNTHETIC_SIZES: dict[str, dict[str, float]] = {
    "default": {"clips": 768, "steps": 5000, "warmup": 30, "lr": 2e-3},
    "quick": {"clips": 256, "steps": 1100, "warmup": 10, "lr": 2e-3},
}


def _runtime(output_dir: str, **distributed: Any) -> TrainConfig:
    # AdamW (0.9, 0.999), weight decay 0.02, no clipping: every official VideoChat2 stage (REFERENCE k).
    return TrainConfig(
        output_dir=output_dir,
        max_steps=1,  # each phase sets its own
        optimizer=OptimizerConfig(lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.02, grad_clip=0.0),
        schedule=ScheduleConfig(kind="cosine", min_lr_mode="clamp"),
        distributed=DistributedConfig(**distributed),
        checkpoint=CheckpointConfig(every_steps=1000, keep_last=2),
        logging=LoggingConfig(every_steps=10, progress="tqdm", tensorboard=False),
        evaluation=EvaluationConfig(every_steps=0),
    )


def _tiny_synthetic() -> ChatTrainConfig:
    """The demo: the synthetic corpus, the tiny model, CPU, a few minutes. Instruction tuning on the training
    clips' conversations and multiple-choice items (four per conversation, options in the corpus' order: the
    random LLM learns the video long before it learns to point from a shuffled option to its letter), one
    thread. Two choices for the 2-block tiny encoder (README, "Status of the demo target"): the tower keeps both
    blocks (``vision_return_index`` -1; the official -2 would leave one) and stays frozen (``train_vision``
    off): the QFormer learns to read the stage-2 features instead of the tower drifting under a 2e-3 rate
    (held-out MC-QA 55.5% frozen vs 50.4% trained with one block, 59.0% frozen with both)."""
    size = _SYNTHETIC_SIZES["default"]
    cfg = ChatTrainConfig(
        model=ChatModelSpec(name="tiny-synthetic", vision_return_index=-1),
        data=ChatDataConfig(root="runs/synthetic-corpus", write_synthetic=int(size["clips"]), held_out=64,
                            cache_videos=True, question_in_instruction=True, shuffle_options=False,
                            mcqa_per_conversation=4),
        align=PhaseConfig(max_steps=0, lr=1e-3, data=("video_text",), train_lora=False, batch_size=16),
        instruct=PhaseConfig(max_steps=int(size["steps"]), lr=size["lr"], warmup_steps=int(size["warmup"]),
                             min_lr_ratio=0.1, train_vision=False,
                             batch_size=16, data=("mcqa", "instructions")),
        evaluation=ChatEvalConfig(batch_size=64, max_new_tokens=8),
        train=_runtime("runs/chat-tiny-synthetic", precision="fp32"),
        torch_threads=1,
    )
    cfg.train.checkpoint.every_steps = 250
    cfg.train.logging.every_steps = 25
    return cfg


def _tiny_synthetic_quick() -> ChatTrainConfig:
    """The demo's ``--quick`` stage 3: the 256-clip corpus, instruction tuning on its multiple-choice items alone
    (no conversations), 8 groups of four per step, 1100 steps: on the mix, only half the steps train the answer
    letter, and at this budget the letter is what is missing (held-out MC-QA after 1100 steps: 41 % on the MC
    items alone vs 27 % on the mix; iv2-chat README). Two threads: 1100 steps take ~55 s on 2 idle cores
    instead of ~70 s, which the demo's 2 minutes need (a second job on those cores makes them 5-10x slower)."""
    size = _SYNTHETIC_SIZES["quick"]
    cfg = _tiny_synthetic()
    cfg.data.write_synthetic = int(size["clips"])
    cfg.instruct.max_steps = int(size["steps"])
    cfg.instruct.warmup_steps = int(size["warmup"])
    cfg.instruct.lr = size["lr"]
    cfg.instruct.data = ("mcqa",)
    cfg.instruct.batch_size = 8
    cfg.torch_threads = 2
    cfg.train.logging.every_steps = 10
    cfg.train.output_dir = "runs/chat-tiny-synthetic-quick"
    return cfg


def _internvideo2_chat_8b() -> ChatTrainConfig:
    """The release shape: IV2-1B tower (39 blocks), bert-base QFormer, Mistral-7B-Instruct-v0.3 with the
    official LoRA; the official optimisation per phase (Ask-Anything videochat_mistral configs, REFERENCE k, o):
    alignment lr 1e-4 (warmup 0.2 epoch, floor 0.01), instruction tuning lr 2e-5 (warmup 0.6 epoch, floor 0.25)
    under DDP fp16 with a GradScaler, HD lr 1e-5 (no warmup, floor 0.01) under DeepSpeed ZeRO-1 bf16. Step
    counts stand for the official epochs: set them (and data.root, model.vision_init) for your data."""
    return ChatTrainConfig(
        model=ChatModelSpec(name="internvideo2-chat-8b", llm="mistralai/Mistral-7B-Instruct-v0.3",
                            llm_dtype="float16", tokenizer="mistralai/Mistral-7B-Instruct-v0.3",
                            qformer_tokenizer="google-bert/bert-base-uncased"),
        data=ChatDataConfig(root="data/videochat2", held_out=0),
        align=PhaseConfig(max_steps=10_000, lr=1e-4, warmup_steps=2_000, min_lr_ratio=0.01, batch_size=16,
                          num_frames=4, data=("video_text",), train_lora=False, max_txt_len=32, bos_fill="embedding",
                          precision="fp16", strategy="ddp"),
        instruct=PhaseConfig(max_steps=30_000, lr=2e-5, warmup_steps=6_000, min_lr_ratio=0.25, batch_size=4,
                             num_frames=8, max_txt_len=512, bos_fill="scalar", precision="fp16", strategy="ddp"),
        hd=PhaseConfig(max_steps=10_000, lr=1e-5, warmup_steps=0, min_lr_ratio=0.01, batch_size=3, num_frames=8,
                       hd=True, max_txt_len=512, precision="bf16", strategy="deepspeed", zero_stage=1),
        hd_f16=PhaseConfig(max_steps=0, lr=1e-5, warmup_steps=0, min_lr_ratio=0.01, batch_size=3, num_frames=16,
                           hd=True, max_txt_len=512, precision="bf16", strategy="deepspeed", zero_stage=1),
        evaluation=ChatEvalConfig(num_frames=16, batch_size=8, max_new_tokens=100),
        train=_runtime("runs/chat-8b"),
    )


CHAT_FLAVORS: dict[str, Callable[[], ChatTrainConfig]] = {
    "tiny-synthetic": _tiny_synthetic,
    "tiny-synthetic-quick": _tiny_synthetic_quick,
    "internvideo2-chat-8b": _internvideo2_chat_8b,
}


SYNTHETIC_HELD_OUT = 64  # the demo holds out the last 64 clips in every stage


def synthetic_config(root: str | os.PathLike = "runs/chat-synthetic", *, corpus: str | os.PathLike | None = None,
                     vision_init: str | os.PathLike | None = None, quick: bool = False) -> ChatTrainConfig:
    """The CPU demo's stage 3 (the ``tiny-synthetic`` flavor, or ``-quick``), every path under ``root``.

    ``corpus``: an ``iv2_data.write_corpus`` folder, used as it is (it needs more than 64 clips); None: one is
    written to ``root/corpus`` (768 clips; 256 with ``quick``: 8 frames, 64 px, 8 fps, seed 0). The last 64
    clips are held out: the MC-QA evaluation asks their questions. ``vision_init``: the stage-2 vision encoder
    (an ``iv2_encoders.save_pretrained`` folder; all its blocks become the chat tower, frozen), None: a random
    tower. The run goes to ``root/stage3`` (``root/stage3-quick``)."""
    size = _SYNTHETIC_SIZES["quick" if quick else "default"]
    cfg = _tiny_synthetic_quick() if quick else _tiny_synthetic()
    root = os.fspath(root)
    suffix = "-quick" if quick else ""
    if corpus is None:
        cfg.data.root, cfg.data.write_synthetic = os.path.join(root, f"corpus{suffix}"), int(size["clips"])
    else:
        cfg.data.root, cfg.data.write_synthetic = os.fspath(corpus), 0
    cfg.data.held_out = SYNTHETIC_HELD_OUT
    cfg.model.vision_init = None if vision_init is None else os.fspath(vision_init)
    cfg.train.output_dir = os.path.join(root, f"stage3{suffix}")
    return cfg


def load_chat_config(source: str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> ChatTrainConfig:
    """``ChatTrainConfig`` from a flavor name or YAML file (``flavor: NAME`` inside starts from one) and dotted
    ``key=value`` overrides; errors (``iv2_train.ConfigError``) name the key or file."""
    return load_config(ChatTrainConfig, source, list(overrides), flavors=CHAT_FLAVORS)


def phase_train_config(cfg: ChatTrainConfig, name: str) -> TrainConfig:
    """The runtime config of phase ``name``: ``cfg.train`` with the phase's steps, learning rate, schedule,
    precision and strategy, writing into ``{train.output_dir}/{name}``."""
    phase: PhaseConfig = getattr(cfg, name)
    base = cfg.train
    optimizer = dataclasses.replace(base.optimizer, lr=phase.lr if phase.lr is not None else base.optimizer.lr)
    schedule = dataclasses.replace(base.schedule, warmup_steps=phase.warmup_steps, min_lr_ratio=phase.min_lr_ratio)
    distributed = dataclasses.replace(
        base.distributed,
        precision=phase.precision or base.distributed.precision,
        strategy=phase.strategy or base.distributed.strategy,
        zero_stage=base.distributed.zero_stage if phase.zero_stage is None else phase.zero_stage,
    )
    return dataclasses.replace(
        base, output_dir=os.path.join(base.output_dir, name), max_steps=phase.max_steps,
        grad_accum_steps=phase.grad_accum_steps or base.grad_accum_steps, optimizer=optimizer, schedule=schedule,
        distributed=distributed, checkpoint=dataclasses.replace(base.checkpoint),
        logging=dataclasses.replace(base.logging), evaluation=dataclasses.replace(base.evaluation),
    )
