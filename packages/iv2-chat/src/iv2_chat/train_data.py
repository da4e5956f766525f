"""Training samples of the chat stages: iv2-data samples → tokenised conversations → LLM batches.

Three sample kinds of ``iv2_data`` feed the progressive recipe, each turned into one training conversation:

* ``video_text`` (alignment, VideoChat2 stage 2, ``videochat2_pt_mistral``): ``[BOS] [INST] <Video>`` + visual
  slots + ``</Video> {ALIGNMENT_PROMPT} [/INST]`` + ``{caption}</s>``; only the caption and ``</s>`` carry loss
  (the official prompt template ``[INST] {} [/INST]`` around the "describe concisely" prompts); the QFormer
  gets no instruction (the official alignment QFormer has no text input).
* ``instructions`` (VideoChat2 stage 3 and HD): the VideoChat2 training string of
  :func:`iv2_chat.training_conversation` with the record-level instruction ``QA[0]["i"]`` (also the QFormer's
  instruction), the turns shuffled (``random_shuffle``) and the time message after the media block
  (``add_second_msg``).
* ``mcqa`` (MVBench-style items): one turn in the MVBench evaluation format, so that training and
  :func:`iv2_chat.evaluate_mcqa` see the same text: instruction = the MVBench system prompt (also given to the
  QFormer), question = the question block + ``"\\nOnly give the best option."``, answer =
  ``"Best option:(B) …"`` (the ground truth after the pre-filled ``"Best option:"``). No time message: the
  MVBench prompt has none. (Ask-Anything's instruction data holds its multiple-choice sets as plain QA turns;
  this layout is our choice, documented in the README.)

:class:`ChatExamples` wraps any map-style dataset of those kinds (file datasets, shards, the synthetic corpus)
and :class:`ChatCollator` pads a list of examples into one batch for :class:`iv2_chat.ChatObjective`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .conversation import (
    ASSISTANT_END,
    HUMAN_END,
    HUMAN_START,
    IGNORE_INDEX,
    MEDIA_TOKENS,
    TokenizedConversation,
    collate_training,
    time_message,
    tokenize_training_conversation,
    training_conversation,
)
from .mcqa import ANSWER_PROMPT, MVBENCH_SYSTEM, QUESTION_PROMPT, mvbench_answer

ALIGNMENT_PROMPT = "Describe the following video concisely."
IMAGE_ALIGNMENT_PROMPT = "Describe the following image concisely."
SAMPLE_KINDS = ("video_text", "instructions", "mcqa")


# ------------------------------------------------------------------------------------------ conversations
def alignment_conversation(tokenizer: Any, caption: str, *, media: str = "video",
                           prompt: str | None = None) -> TokenizedConversation:
    """The alignment sample of ``videochat2_pt_mistral``: ``[INST] <Video>`` | slots |
    ``</Video> {prompt} [/INST]`` then ``{caption}</s>`` (each piece tokenised without special tokens; the
    batch prepends the BOS slot). Labels: the caption and ``</s>`` only."""
    start, end = MEDIA_TOKENS.get(media, (None, None))
    if start is None:
        raise ValueError(f"media must be 'video' or 'image', got {media!r}")
    if prompt is None:
        prompt = ALIGNMENT_PROMPT if media == "video" else IMAGE_ALIGNMENT_PROMPT
    before = _ids(tokenizer, f"{HUMAN_START} {start}")
    prompt_ids = _ids(tokenizer, f"{end} {prompt} {HUMAN_END}")
    answer = _ids(tokenizer, caption.strip() + ASSISTANT_END)
    return TokenizedConversation(before, prompt_ids + answer, [IGNORE_INDEX] * len(prompt_ids) + answer)


def mcqa_turns(question: str, candidates: Sequence[str], answer: str, *,
               system: str = MVBENCH_SYSTEM) -> list[dict[str, str]]:
    """A multiple-choice item as one VideoChat2 turn in the MVBench format (module docstring)."""
    from iv2_data import mcqa_prompt

    return [{"i": system.strip(), "q": mcqa_prompt(question, candidates) + QUESTION_PROMPT,
             "a": ANSWER_PROMPT.removesuffix("(") + mvbench_answer(candidates, answer)}]


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


# ------------------------------------------------------------------------------------------------ examples
@dataclass
class ChatExample:
    """One training example: the media tensor (``(3, T, H, W)``, or an HD clip), its tokenised conversation and
    the QFormer's instruction."""

    video: torch.Tensor
    conversation: TokenizedConversation
    instruction: str
    kind: str


class ChatExamples(torch.utils.data.Dataset):
    """``dataset`` (map-style, samples of ``kind`` as ``iv2_data`` builds them) as :class:`ChatExample` s.

    An ``mcqa`` sample with a ``"group"`` (several items about its video: :class:`MCQAGroups`) becomes one
    multi-turn conversation, one turn per item (the VideoChat2 multi-turn layout, turns shuffled).

    ``time_message``: a callable ``sample -> str`` giving the time message of a video sample (None: no
    message); ``shuffle_turns``: shuffle multi-turn conversations (the official ``random_shuffle``), drawing
    from Python's ``random`` (restored exactly on resume by iv2-train); ``question_in_instruction``: the
    QFormer's instruction also holds the first question (the official ``return_question_instruction``);
    ``shuffle_options``: draw a new order of a multiple-choice item's options every time it is read (the
    answer letter moves with it), so that the letter must come from matching the options, not from the
    item."""

    def __init__(self, dataset: Any, kind: str, tokenizer: Any, *,
                 time_message: Callable[[Mapping[str, Any]], str] | None = None,
                 shuffle_turns: bool = True, question_in_instruction: bool = False,
                 shuffle_options: bool = False) -> None:
        if kind not in SAMPLE_KINDS:
            raise ValueError(f"kind must be one of {SAMPLE_KINDS}, got {kind!r}")
        self.dataset, self.kind, self.tokenizer = dataset, kind, tokenizer
        self.time_message = time_message
        self.shuffle_turns = shuffle_turns
        self.question_in_instruction = question_in_instruction
        self.shuffle_options = shuffle_options

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> ChatExample:
        sample = self.dataset[index]
        video = sample["video"]
        media = sample.get("media_type", "image" if getattr(video, "ndim", 4) == 4 and video.shape[1] == 1
                           else "video")
        if self.kind == "video_text":
            conversation = alignment_conversation(self.tokenizer, sample["caption"], media=media)
            return ChatExample(video, conversation, "", self.kind)
        if self.kind == "mcqa":
            qa = []
            for item in sample.get("group") or [sample]:
                candidates = list(item["candidates"])
                if self.shuffle_options:
                    random.shuffle(candidates)
                qa += mcqa_turns(item["question"], candidates, item["answer"])
            rng = random if self.shuffle_turns else None
            text, instruction = training_conversation(qa, media=media, rng=rng,
                                                      question_in_instruction=self.question_in_instruction)
        else:
            qa = [dict(turn) for turn in sample["qa"]]
            qa[0]["i"] = sample.get("instruction", "")
            msg = self.time_message(sample) if (self.time_message and media == "video") else ""
            rng = random if self.shuffle_turns else None
            text, instruction = training_conversation(qa, media=media, time_msg=msg, rng=rng,
                                                      question_in_instruction=self.question_in_instruction)
        return ChatExample(video, tokenize_training_conversation(self.tokenizer, text, media), instruction,
                           self.kind)


class MCQAGroups(torch.utils.data.Dataset):
    """Multiple-choice items about the same video, ``group_size`` at a time, as one sample: the first item's
    sample (its video read once) with ``"group"``: every item's ``question``, ``candidates``, ``answer``.
    ``dataset`` is an ``iv2_data.MultipleChoiceQADataset``; groups follow its records' order."""

    def __init__(self, dataset: Any, group_size: int) -> None:
        if group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {group_size}")
        self.dataset = dataset
        by_video: dict[str, list[int]] = {}
        for index, record in enumerate(dataset.records):
            by_video.setdefault(str(record["video"]), []).append(index)
        self.groups = [items[i:i + group_size] for items in by_video.values()
                       for i in range(0, len(items), group_size)]

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, index: int) -> dict[str, Any]:
        members = self.groups[index]
        sample = dict(self.dataset[members[0]])
        records = [self.dataset.records[i] for i in members]
        sample["group"] = [{"question": r["question"], "candidates": [str(c) for c in r["candidates"]],
                            "answer": str(r["answer"])} for r in records]
        return sample


class ChatCollator:
    """Pads :class:`ChatExample` s into one training batch (a dict of tensors the Trainer moves to the device):
    ``input_ids``, ``attention_mask``, ``visual_mask``, ``labels`` (right-padded, the official length cap
    ``max_txt_len`` + visual slots), ``bos_scalar_mask`` with ``bos_fill="scalar"``, ``video`` (stacked, or a
    list of HD clips), ``instruction_ids`` / ``instruction_mask`` (the QFormer tokenizer, left-padded; absent when
    no example has an instruction).

    ``num_visual_tokens``: LLM slots per clip; with ``hd_size`` every example is an HD clip of
    ``(3, T, rows·size, cols·size)`` and gets ``num_visual_tokens·(rows·cols + 1)`` slots. ``max_length``: the
    LLM's context; longer conversations are cut to it (reported as ``max_txt_len`` cuts are)."""

    def __init__(self, tokenizer: Any, qformer_tokenizer: Any, num_visual_tokens: int, *,
                 max_txt_len: int = 512, bos_fill: str = "embedding", hd_size: int | None = None,
                 max_instruction_tokens: int = 512, max_length: int | None = None) -> None:
        self.tokenizer, self.qformer_tokenizer = tokenizer, qformer_tokenizer
        self.num_visual_tokens = num_visual_tokens
        self.max_txt_len, self.bos_fill, self.hd_size = max_txt_len, bos_fill, hd_size
        self.max_length = max_length
        self.max_instruction_tokens = max_instruction_tokens

    def slots(self, video: torch.Tensor) -> int:
        if self.hd_size is None:
            return self.num_visual_tokens
        rows, cols = video.shape[-2] // self.hd_size, video.shape[-1] // self.hd_size
        return self.num_visual_tokens * (rows * cols + 1)

    def __call__(self, examples: Sequence[ChatExample]) -> dict[str, Any]:
        pad = self.tokenizer.pad_token_id
        pad = self.tokenizer.eos_token_id if pad is None else pad  # Mistral has no pad token: EOS, as official
        batch = collate_training([e.conversation for e in examples], [self.slots(e.video) for e in examples],
                                 bos_token_id=self.tokenizer.bos_token_id, pad_token_id=pad,
                                 max_txt_len=self.max_txt_len, bos_fill=self.bos_fill, max_length=self.max_length)
        out: dict[str, Any] = batch.model_inputs()
        videos = [e.video for e in examples]
        if self.hd_size is None:
            shapes = {tuple(v.shape) for v in videos}
            if len(shapes) != 1:
                raise ValueError(f"videos of one batch must have one shape, got {sorted(shapes)}")
            out["video"] = torch.stack(videos)
        else:
            out["video"] = videos
        instructions = [e.instruction for e in examples]
        if any(instructions):
            enc = self.qformer_tokenizer(instructions, padding="longest", truncation=True,
                                         max_length=self.max_instruction_tokens, return_tensors="pt")
            out["instruction_ids"], out["instruction_mask"] = enc["input_ids"], enc["attention_mask"]
        return out


# ------------------------------------------------------------------------------------------- time message
class TimeMessages:
    """The time message of a video sample (``"The video contains N frames sampled at … seconds."``), from the
    file's real frame count and rate (``iv2_data.probe_video``, once per file) and the segment-middle frames of
    ``num_frames`` (the evaluation reading; with random training reads the stamps are those of the segment
    middles). ``media_root`` resolves the samples' relative ``path``."""

    def __init__(self, media_root: str | Path, num_frames: int) -> None:
        self.media_root, self.num_frames = Path(media_root), num_frames
        self._cache: dict[str, str] = {}

    def __call__(self, sample: Mapping[str, Any]) -> str:
        path = str(sample["path"])
        if path not in self._cache:
            self._cache[path] = video_time_message(self.media_root / path, self.num_frames)
        return self._cache[path]


def video_time_message(path: str | Path, num_frames: int, sampling: str = "middle") -> str:
    """The official time message for ``num_frames`` frames of the video at ``path`` read with ``sampling``."""
    from iv2_data import probe_video, sample_frame_indices

    info = probe_video(path)
    fps = float(info.average_rate or 0) or 1.0
    indices = sample_frame_indices(info.num_frames, num_frames, sampling)
    return time_message([i / fps for i in indices])
