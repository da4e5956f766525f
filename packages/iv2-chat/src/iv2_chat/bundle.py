"""A chat model as a folder: what training writes and ``iv2-chat ask | batch | eval`` read.

::

    DIR/config.json            {"format": "iv2-chat", "chat_config": ChatConfig.to_dict(), "settings": {...}}
    DIR/model.safetensors      the trainable weights (tower, QFormer, queries, projections, LoRA) in the
                               InternVideo2-Chat layout; the base LLM comes from chat_config.llm
    DIR/llm/                   the base LLM (Hugging Face save_pretrained) when it was built from a config
                               (random weights: the tiny flavors); absent when chat_config.llm is a hub id / path
    DIR/tokenizer/             the LLM tokenizer (save_pretrained)
    DIR/qformer_tokenizer/     the QFormer's BERT tokenizer

``settings`` says how the model's inputs were made: frames, size, mean/std, whether the QFormer also reads the
question, HD. :func:`load_chat` returns a ready :class:`iv2_chat.VideoChat` (``chat.settings`` holds them).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from .config import ChatConfig

FORMAT = "iv2-chat"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def save_chat(directory: str | os.PathLike, cfg: ChatConfig, tokenizer: Any, qformer_tokenizer: Any, *,
              settings: dict[str, Any] | None = None) -> Path:
    """Write the chat folder's config, tokenizers and, when ``cfg.llm`` is a config (random weights), the base
    LLM built now (from the current torch seed). A folder written before from the same config is kept as it
    is (its base LLM is the one checkpoints were trained on); one from another config is an error."""
    from iv2_data import atomic_write

    directory = Path(directory)
    document = {"format": FORMAT, "chat_config": cfg.to_dict(), "settings": dict(settings or {})}
    path = directory / CONFIG_FILE
    if path.is_file():
        before = json.loads(path.read_text(encoding="utf-8"))
        if before.get("source_config", before.get("chat_config")) != document["chat_config"] or \
                before.get("settings") != document["settings"]:
            raise ValueError(f"{directory}: a chat folder of another model configuration is already there (its "
                             f"base LLM and weights would not fit); remove it or use another output_dir")
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(directory / "tokenizer")
    qformer_tokenizer.save_pretrained(directory / "qformer_tokenizer")
    stored = dict(document)
    if not isinstance(cfg.llm, str):
        from .model import build_llm

        plain = cfg.replace(lora=None)
        llm = build_llm(plain)
        llm.save_pretrained(directory / "llm")
        stored["source_config"] = document["chat_config"]
        stored["chat_config"] = {**document["chat_config"], "llm": "llm"}
    with atomic_write(path, "w", encoding="utf-8") as f:
        json.dump(stored, f, indent=1)
    return directory


def read_chat_config(directory: str | os.PathLike) -> ChatConfig:
    """The :class:`ChatConfig` of a chat folder, its ``llm`` resolved to the folder's saved LLM if it has one."""
    document = _document(directory)
    data = dict(document["chat_config"])
    if data.get("llm") == "llm":
        data["llm"] = str(Path(directory) / "llm")
    return ChatConfig.from_dict(data)


def _document(directory: str | os.PathLike) -> dict[str, Any]:
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{directory}: not a chat model folder (no {CONFIG_FILE}; a training run writes one "
                                f"in OUTPUT/model)")
    document = json.loads(path.read_text(encoding="utf-8"))
    if document.get("format") != FORMAT:
        raise ValueError(f"{path}: 'format' is {document.get('format')!r}, not {FORMAT!r}")
    return document


def write_chat_weights(directory: str | os.PathLike, weights: str | os.PathLike) -> Path:
    """Copy an export (trainable weights, InternVideo2-Chat layout) into the chat folder, atomically."""
    import shutil

    from iv2_data import atomic_write

    target = Path(directory) / WEIGHTS_FILE
    with atomic_write(target) as tmp:
        shutil.copyfile(weights, tmp)
    return target


def resolve_chat_dir(path: str | os.PathLike) -> Path:
    """A chat folder, or a training run's output folder (its ``model/``)."""
    path = Path(path)
    if (path / CONFIG_FILE).is_file():
        return path
    if (path / "model" / CONFIG_FILE).is_file():
        return path / "model"
    raise FileNotFoundError(f"{path}: neither a chat model folder nor a training run holding one (looked for "
                            f"{path / CONFIG_FILE} and {path / 'model' / CONFIG_FILE})")


def load_chat(directory: str | os.PathLike, *, device: str | torch.device | None = None,
              generation: dict[str, Any] | None = None):
    """A :class:`iv2_chat.VideoChat` over the chat folder (or training run) ``directory``: the model built from
    its config, its weights loaded (:func:`iv2_chat.load_checkpoint`, the base LLM from ``llm``), in eval mode
    on ``device`` (default CPU), with its tokenizers. ``chat.settings`` holds the input settings."""
    from transformers import AutoTokenizer

    from .chat import VideoChat
    from .checkpoint import load_checkpoint
    from .model import VideoChatModel
    from .tiny import qformer_tokenizer_settings

    directory = resolve_chat_dir(directory)
    document = _document(directory)
    cfg = read_chat_config(directory)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"{directory}: no {WEIGHTS_FILE} yet (training writes it after the last phase)")
    model = VideoChatModel(cfg)
    load_checkpoint(model, weights)
    model = model.to(device or "cpu").eval()
    tokenizer = AutoTokenizer.from_pretrained(directory / "tokenizer")
    qformer_tokenizer = qformer_tokenizer_settings(AutoTokenizer.from_pretrained(directory / "qformer_tokenizer"))
    chat = VideoChat(model, tokenizer, qformer_tokenizer, generation=generation)
    chat.settings = {"num_frames": cfg.vision.num_frames, "size": cfg.vision.img_size,
                     "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                     "question_in_instruction": False, "hd": False, "hd_max_tiles": 6,
                     **document.get("settings", {})}
    return chat
