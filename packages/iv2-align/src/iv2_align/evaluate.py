"""Retrieval evaluation on annotation records: load a set once, score a model on it, name the numbers.

Used by training (held-out clips, every evaluation) and by ``iv2-align eval retrieval``. A set is read with the
official evaluation reads (middle frames, the whole frame resized) into memory; unreadable media are skipped
and counted (the set then holds the readable records only). Metrics are flattened for logs and reports:
``t2v_r1`` ... are the re-ranked (``match``) numbers where the model can re-rank, ``sim_*`` / ``dsl_*`` the ITC
variants; audio-text numbers carry an ``audio_`` prefix, audio+video-text numbers ``av_``. ``chance_r1`` is the
R@1 of a random ranking (averaged over queries: ground truths / candidates).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .data import AnnotationSplit, make_dataset
from .retrieval import evaluate_retrieval
from .text import tokenize
from .train_config import DataSection

log = logging.getLogger("iv2_align")

# set name -> (sample kind, retrieval media, metric prefix)
RETRIEVAL_SETS = {"video": ("video_text", "video", ""), "audio": ("audio_text", "audio", "audio_"),
                  "audio_video": ("video_audio_text", "audio_video", "av_")}


@dataclass
class RetrievalSet:
    """Media in memory and their captions, tokenised: ``media`` (videos ``(N, 3, T, H, W)``, or filter banks
    for ``audio``), ``fbank`` (audio_video), ``text_to_video[t]`` = the media indices text ``t`` describes."""

    name: str
    media: torch.Tensor
    fbank: torch.Tensor | None
    texts: list[str]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    text_to_video: list[list[int]]
    skipped: int = 0

    @property
    def retrieval_media(self) -> str:
        return RETRIEVAL_SETS[self.name][1]

    def chance(self) -> dict[str, float]:
        """R@1 of a random ranking in %, per direction."""
        num_media, num_texts = self.media.shape[0], len(self.texts)
        per_media = [0] * num_media
        for videos in self.text_to_video:
            for v in videos:
                per_media[v] += 1
        t2v = sum(len(v) for v in self.text_to_video) / len(self.text_to_video) / num_media
        v2t = sum(per_media) / num_media / num_texts
        return {"t2v_r1": 100.0 * t2v, "v2t_r1": 100.0 * v2t}


def load_retrieval_set(name: str, split: AnnotationSplit, records: Sequence[Mapping[str, Any]], data: DataSection,
                       tokenizer: Any, *, num_frames: int, size: int, max_length: int, all_captions: bool = True,
                       merge_duplicates: bool = False) -> RetrievalSet:
    """Read ``records`` (of ``split``'s kind) for retrieval ``name`` (``video``, ``audio`` or ``audio_video``)."""
    kind, media_kind, _ = RETRIEVAL_SETS[name]
    if split.kind != kind:
        raise ValueError(f"retrieval set {name!r} reads {kind} records, got {split.kind}")
    dataset = make_dataset(split, list(records), data, num_frames, size, train=False, caption_sampling="first")
    media, fbanks, captions, skipped = [], [], [], 0
    for index, record in enumerate(dataset.records):
        try:
            sample = dataset.sample(record, index, dataset.media_paths(record))
        except OSError as error:  # unreadable media: skipped and counted, as training does
            dataset.record_failure(str(record.get("video") or record.get("audio")), error)
            skipped += 1
            continue
        media.append(sample["audio"] if media_kind == "audio" else sample["video"])
        if media_kind == "audio_video":
            fbanks.append(sample["audio"])
        texts = dataset.captions(index)
        captions.append(texts if all_captions else texts[:1])
    if not media:
        raise ValueError(f"{split.source}: no readable media for retrieval ({skipped} skipped)")
    texts, text_to_video = [], []
    position: dict[str, int] = {}
    for video, video_captions in enumerate(captions):
        for text in video_captions:
            if merge_duplicates and text in position:
                if video not in text_to_video[position[text]]:
                    text_to_video[position[text]].append(video)
                continue
            position[text] = len(texts)
            texts.append(text)
            text_to_video.append([video])
    input_ids, attention_mask = tokenize(tokenizer, texts, max_length)
    return RetrievalSet(name, torch.stack(media), torch.stack(fbanks) if fbanks else None, texts, input_ids,
                        attention_mask, text_to_video, skipped)


def flatten_metrics(result_metrics: Mapping[str, Mapping[str, float]], prefix: str) -> dict[str, float]:
    """``{"match": {"t2v_r1": ...}, "sim": ..., "dsl": ...}`` -> ``{prefix + "t2v_r1": match-or-sim, prefix +
    "sim_t2v_r1": ..., prefix + "dsl_t2v_r1": ...}``."""
    main = result_metrics.get("match", result_metrics["sim"])
    out = {prefix + key: value for key, value in main.items()}
    for variant in ("sim", "dsl"):
        out.update({f"{prefix}{variant}_{key}": value for key, value in result_metrics[variant].items()})
    return out


HEADLINE_KEYS = ("t2v_r1", "t2v_r5", "t2v_r10", "v2t_r1", "v2t_r5", "v2t_r10", "r_mean", "sim_t2v_r1", "sim_v2t_r1",
                 "chance_r1")


def headline(metrics: dict[str, float]) -> dict[str, float]:
    """The numbers worth a curve (training logs plot every logged key): per set, R@1/5/10 both ways, the mean,
    the ITC R@1 and chance."""
    prefixes = {prefix for _, _, prefix in RETRIEVAL_SETS.values()}
    return {p + k: metrics[p + k] for p in sorted(prefixes) for k in HEADLINE_KEYS if p + k in metrics}


@torch.no_grad()
def evaluate_sets(model: nn.Module, sets: Sequence[RetrievalSet], *, k_test: int = 128, batch_size: int = 32,
                  prepare: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[str, float]:
    """Retrieval on every set; flat metrics (module docstring). ``prepare`` moves/casts the media for the model
    (the Trainer's ``prepare_batch`` under DeepSpeed bf16)."""
    prepare = prepare or (lambda x: x)
    out: dict[str, float] = {}
    for item in sets:
        prefix = RETRIEVAL_SETS[item.name][2]
        fbank = prepare(item.fbank) if item.fbank is not None else None
        result = evaluate_retrieval(model, prepare(item.media), item.input_ids, item.attention_mask,
                                    text_to_video=item.text_to_video, k_test=k_test, fbank=fbank,
                                    media=item.retrieval_media, batch_size=batch_size, itm_batch_size=256,
                                    keep_scores=False)
        out.update(flatten_metrics(result.metrics, prefix))
        chance = item.chance()
        out[prefix + "chance_r1"] = round((chance["t2v_r1"] + chance["v2t_r1"]) / 2, 2)
        out[prefix + "chance_t2v_r1"] = round(chance["t2v_r1"], 2)
        out[prefix + "chance_v2t_r1"] = round(chance["v2t_r1"], 2)
        out[prefix + "num_media"] = float(item.media.shape[0])
        out[prefix + "num_texts"] = float(len(item.texts))
    return out
