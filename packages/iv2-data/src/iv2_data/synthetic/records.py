"""The annotation records of the synthetic corpus, one list per sample kind, in the official layouts.

:func:`clip_records` is the single description of what each clip contributes to each kind: :func:`write_corpus`
writes these records to the annotation files, and the in-memory :class:`SyntheticDataset` feeds the very same
records to the sample builders, so both yield identical samples. Video-bearing records carry ``"flip": false``:
captions, questions and labels name directions, which a horizontal flip would contradict.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import numpy as np

from iv2_data.synthetic.render import COLOURS, DIRECTIONS, NUMBER_WORDS, OBJECTS, SyntheticClip, clip_spec

__all__ = [
    "ANNOTATION_FILES", "CORPUS_VERSION", "MCQA_TASKS", "SYNTHETIC_CLASSES", "clip_records", "corpus_words",
    "media_paths",
]

MCQA_TASKS = ("motion", "colour", "count", "identity")

# The version of the annotation records, written to corpus.json: raised whenever the records of the same
# (seed, index) change, so that a folder written before can be told apart (and rewritten: media are kept).
# 2: MC options listed in the attribute order (1: shuffled).
CORPUS_VERSION = 2

# video_label classes: object × direction (32), fixed, so that every split and corpus size agrees on them.
SYNTHETIC_CLASSES = tuple(f"{obj} moving {direction}" for obj in OBJECTS for direction in DIRECTIONS)

ANNOTATION_FILES = {
    "video_text": "video_text.json",
    "image_text": "image_text.json",
    "audio_text": "audio_text.json",
    "video_audio_text": "video_audio_text.json",
    "mcqa": "mcqa.json",
    "instructions": "instructions.json",
    "video_label": "video_label.json",
}


def media_paths(index: int) -> dict[str, str]:
    """Where clip ``index``'s files live, relative to the corpus folder."""
    name = f"{index:06d}"
    return {"video": f"videos/{name}.mp4", "audio": f"audio/{name}.wav", "image": f"images/{name}.png"}


def clip_records(spec: SyntheticClip, seed: int) -> dict[str, list[dict[str, Any]]]:
    """The records clip ``spec`` (of the corpus with ``seed``) contributes to each kind (:data:`ANNOTATION_FILES`)."""
    paths = media_paths(spec.index)
    video, no_flip = paths["video"], {"flip": False}
    label = OBJECTS.index(spec.object) * len(DIRECTIONS) + DIRECTIONS.index(spec.direction)
    return {
        "video_text": [{"video": video, "captions": spec.captions(), **no_flip}],
        "image_text": [{"image": paths["image"], "caption": spec.captions()[0], **no_flip}],
        "audio_text": [{"audio": paths["audio"], "caption": spec.audio_caption()}],
        "video_audio_text": [
            {
                "video": video,
                "caption": spec.avs_caption(),
                "visual_caption": spec.captions()[0],
                "audio_caption": spec.audio_caption(),
                "asr": spec.transcript(),
                **no_flip,
            }
        ],
        "mcqa": [
            {"video": video, **item, **no_flip}
            for item in mcqa_items(spec, np.random.default_rng([seed, spec.index, 0xA5]))
        ],
        "instructions": [{"video": video, "QA": conversation(spec), **no_flip}],
        "video_label": [
            {
                "video": video,
                "label": label,
                "label_name": SYNTHETIC_CLASSES[label],
                "object": spec.object,
                "direction": spec.direction,
                "colour": spec.colour,
                **no_flip,
            }
        ],
    }


def mcqa_items(spec: SyntheticClip, rng: np.random.Generator) -> list[dict[str, Any]]:
    """Four MVBench-style items: question, four candidates, the answer (one of the candidates), task.

    The three distractors are drawn at random; the four options are listed in the attribute's own order
    (directions left, right, up, down; counts one to four; colours and objects as :mod:`render` lists them), so
    an option's letter follows from its text and the other options, as in a question whose options are ordered
    by their values. Every letter still answers some items. Why not shuffled: the demo's LLM starts from random
    weights, and learning to point from a shuffled option's text to its letter took it far longer than learning
    the video (issue 16: 40.6% held-out accuracy by letter against 60.5% by option text, 3000 steps).
    ``iv2-chat`` can still reshuffle options during training (``data.shuffle_options``)."""

    def options(correct: str, pool: list[str]) -> list[str]:
        others = [p for p in pool if p != correct]
        chosen = [correct, *[others[i] for i in rng.permutation(len(others))[:3]]]
        rng.permutation(len(chosen))  # version 1's shuffle, still drawn: every item keeps version 1's distractors
        return sorted(chosen, key=pool.index)

    thing = f"the digit {spec.object}" if spec.is_digit else spec.object
    plural = f"digits {spec.object}" if spec.is_digit else spec.noun(plural=True)
    identities = [f"the digit {o}" if o.isdigit() else f"a {o}" for o in OBJECTS]
    return [
        {
            "task": "motion",
            "question": f"In which direction does the {spec.colour} {thing.removeprefix('the ')} move?",
            "candidates": options(spec.direction, list(DIRECTIONS)),
            "answer": spec.direction,
        },
        {
            "task": "colour",
            "question": f"What colour is the moving {thing.removeprefix('the ')}?",
            "candidates": options(spec.colour, list(COLOURS)),
            "answer": spec.colour,
        },
        {
            "task": "count",
            "question": f"How many {plural} are there?",
            "candidates": options(NUMBER_WORDS[spec.count], list(NUMBER_WORDS.values())),
            "answer": NUMBER_WORDS[spec.count],
        },
        {
            "task": "identity",
            "question": f"Which object moves {spec.direction}?",
            "candidates": options(spec.identity_name(), identities),
            "answer": spec.identity_name(),
        },
    ]


def conversation(spec: SyntheticClip) -> list[dict[str, str]]:
    """A VideoChat2-style conversation: ``[{"i", "q", "a"}, ...]``."""
    instruction = "Carefully watch the video and describe what moves and where it goes."
    return [
        {"i": instruction, "q": "Describe the video briefly.", "a": spec.captions()[0] + "."},
        {"i": instruction, "q": "Where does it move?", "a": f"It moves {spec.direction}."},
    ]


def corpus_words(seed: int = 0, num_samples: int = 512) -> list[str]:
    """Every word (lower-cased) and punctuation mark that the texts of the corpus use — captions, audio captions,
    transcripts, questions, candidates, answers, instructions, class names — in first-seen order.

    A tiny text model's vocabulary (a BERT ``vocab.txt``, a word-level LLM tokenizer) built from it has no
    unknown token on the corpus. The texts are templates over a few attribute values, so the first
    ``num_samples`` clips already use every word (tested against the attribute lists)."""
    seen: dict[str, None] = {}
    for index in range(num_samples):
        for records in clip_records(clip_spec(index, seed), seed).values():
            for text in _texts(records):
                seen.update(dict.fromkeys(re.findall(r"\w+|[^\w\s]", text.lower())))
    for name in SYNTHETIC_CLASSES:
        seen.update(dict.fromkeys(name.split()))
    return list(seen)


def _texts(value: Any) -> Iterator[str]:
    """The natural-language strings in a record (media paths and other file names left out)."""
    if isinstance(value, str):
        if not value.endswith((".mp4", ".wav", ".png")):
            yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _texts(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _texts(item)
