"""Annotation files in the official layouts, and the official caption cleaning (``pre_text``).

Layouts (one JSON list, or JSON Lines with one record per line; media paths relative to a media root):

- video-text: ``{"video": "a.mp4", "caption": "..."}``; several captions as ``"captions": [...]`` or a list
  under ``"caption"``;
- image-text: ``{"image": "a.jpg", "caption": ...}``; audio-text: ``{"audio": "a.wav", "caption": ...}``;
- video-audio-text: ``{"video": "a.mp4", "caption": "<fused caption>", "asr": "<transcript>"}`` with an optional
  ``"audio"`` file (else the video's own audio track is used);
- multiple-choice QA (MVBench): ``{"video", "question", "candidates": [...], "answer": "<one candidate>"}``;
- instructions (VideoChat2): ``{"video" or "image", "QA": [{"i": instruction, "q": question, "a": answer}]}``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

__all__ = ["AnnotationError", "get_captions", "load_annotations", "pre_text", "require_keys"]


class AnnotationError(ValueError):
    """An annotation file is missing, malformed, or a record lacks a key. The message names file and record."""


def load_annotations(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a ``.json`` (a list of records) or ``.jsonl`` (one record per line) annotation file."""
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"annotation file not found: {path}")
    text = path.read_text(encoding="utf-8-sig")  # a byte-order mark (files saved by Windows tools) is not JSON
    records: Any
    if path.suffix == ".jsonl":
        records = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise AnnotationError(f"{path}, line {number}: not valid JSON ({error.msg})") from error
    else:
        try:
            records = json.loads(text)
        except json.JSONDecodeError as error:
            raise AnnotationError(
                f"{path}: not valid JSON ({error.msg} at line {error.lineno}); use a .jsonl suffix for JSON Lines"
            ) from error
    if not isinstance(records, list):
        raise AnnotationError(f"{path}: expected a JSON list of records, got {type(records).__name__}")
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise AnnotationError(f"{path}, record {index}: expected an object, got {type(record).__name__}")
    return records


def require_keys(record: dict[str, Any], keys: tuple[str, ...], source: str, index: int) -> None:
    """Raise :class:`AnnotationError` naming ``source`` and ``index`` if ``record`` lacks one of ``keys``."""
    missing = [k for k in keys if k not in record]
    if missing:
        raise AnnotationError(f"{source}, record {index}: missing key(s) {missing}; it has {sorted(record)}")


def get_captions(record: dict[str, Any], source: str, index: int, key: str = "caption") -> list[str]:
    """All captions of a record: ``captions`` (list) if present, else ``key`` (a string or a list)."""
    value = record.get("captions", record.get(key)) if key == "caption" else record.get(key)
    if value is None:
        raise AnnotationError(f"{source}, record {index}: no caption (expected key {key!r} or 'captions')")
    captions = [value] if isinstance(value, str) else value
    if not isinstance(captions, list) or not captions or not all(isinstance(c, str) for c in captions):
        raise AnnotationError(
            f"{source}, record {index}: caption must be a string or a non-empty list of strings, got {value!r}"
        )
    return captions


_PUNCTUATION = re.compile(r"[,.'!?\"()*#:;~]")
_SPACES = re.compile(r"\s{2,}")


def pre_text(text: str, max_words: int | None = None) -> str:
    """The official caption cleaning: lowercase; drop ``,.'!?"()*#:;~``; ``-`` and ``/`` become spaces;
    ``<person>`` becomes ``person``; runs of whitespace collapse; optionally keep the first ``max_words``."""
    if not isinstance(text, str):
        raise TypeError(f"pre_text expects a string, got {type(text).__name__}")
    text = _PUNCTUATION.sub("", text.lower())
    text = text.replace("-", " ").replace("/", " ").replace("<person>", "person")
    text = _SPACES.sub(" ", text).rstrip("\n").strip(" ")
    if max_words:
        words = text.split(" ")
        if len(words) > max_words:
            text = " ".join(words[:max_words])
    return text
