"""Zero-shot classification from class names, as the official action-recognition evaluation
(``ImgTxtRetEvalDataset.build_data_act_rec`` + ``evaluation_wrapper`` with ``num_prompts``).

Each class name is put into the 16 ``kinetics_templates_action_clip`` prompts (the ActionCLIP templates;
dataset/text_prompt.py), every prompt is cleaned with ``pre_text`` and encoded; texts are ordered class-major
(prompt ``p`` of class ``c`` is text ``c * 16 + p``). Stage-2 model: softmax of the video-text cosines over
all class x prompt texts, then the mean over each class's prompts. CLIP model: the raw cosines averaged.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .retrieval import _is_fusion_model, encode_media, encode_texts, ground_truth_ranks
from .text import tokenize

KINETICS_TEMPLATES: tuple[str, ...] = (
    "a photo of action {}",
    "a picture of action {}",
    "Human action of {}",
    "{}, an action",
    "{} this is an action",
    "{}, a video of action",
    "Playing action of {}",
    "{}",
    "Playing a kind of action, {}",
    "Doing a kind of action, {}",
    "Look, the human is {}",
    "Can you recognize the action of {}?",
    "Video classification of {}",
    "A video of {}",
    "The man is {}",
    "The woman is {}",
)


@dataclass
class ZeroShotResult:
    """``scores`` ``(num_videos, num_classes)``; ``metrics`` ``{"top1", "top5"}`` in % (2 decimals, ties in
    descending class order as the official ranking) when labels were given, else empty."""

    scores: torch.Tensor
    metrics: dict[str, float]


def class_prompts(class_names: Sequence[str], templates: Sequence[str] = KINETICS_TEMPLATES) -> list[str]:
    """Every template filled with every class name, class-major."""
    if not class_names:
        raise ValueError("class_names is empty")
    return [t.format(name) for name in class_names for t in templates]


def zero_shot_scores(video_text: torch.Tensor, num_classes: int, num_prompts: int, softmax: bool) -> torch.Tensor:
    """``(N, classes * prompts)`` video-text cosines -> ``(N, classes)`` class scores (official rule)."""
    scores = video_text.float().softmax(dim=1) if softmax else video_text.float()
    return scores.reshape(scores.shape[0], num_classes, num_prompts).mean(dim=-1)


@torch.no_grad()
def zero_shot_classify(
    model: nn.Module,
    videos: torch.Tensor | Iterable[torch.Tensor],
    class_names: Sequence[str],
    tokenizer,
    *,
    labels: Sequence[int] | torch.Tensor | None = None,
    templates: Sequence[str] = KINETICS_TEMPLATES,
    max_length: int = 32,
    batch_size: int = 32,
    progress: bool = False,
) -> ZeroShotResult:
    """Classify ``videos`` (``(N, 3, T, H, W)`` or batches) into ``class_names`` with prompt ensembles. Works
    with :class:`~iv2_align.Stage2Model` (softmax rule) and :class:`~iv2_align.VideoCLIPModel` (raw
    average); ``labels`` (class index per video) give top-1/top-5 accuracy."""
    was_training = model.training
    model.eval()
    try:
        input_ids, attention_mask = tokenize(tokenizer, class_prompts(class_names, templates), max_length)
        text_feat, _ = encode_texts(model, input_ids, attention_mask, keep_tokens=False, progress=progress)
        media_feat, _ = encode_media(model, videos, batch_size=batch_size, keep_tokens=False, progress=progress)
    finally:
        model.train(was_training)
    scores = zero_shot_scores(media_feat @ text_feat.T, len(class_names), len(templates),
                              softmax=_is_fusion_model(model))
    metrics: dict[str, float] = {}
    if labels is not None:
        labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
        if labels.numel() != scores.shape[0] or bool(((labels < 0) | (labels >= len(class_names))).any()):
            raise ValueError(f"labels must be {scores.shape[0]} class indices in [0, {len(class_names)}), "
                             f"got {labels.tolist()[:10]}")
        ranks = ground_truth_ranks(scores, [[int(c)] for c in labels])
        metrics = {f"top{k}": round(100.0 * int((ranks < k).sum()) / ranks.numel(), 2) for k in (1, 5)}
    return ZeroShotResult(scores=scores, metrics=metrics)
