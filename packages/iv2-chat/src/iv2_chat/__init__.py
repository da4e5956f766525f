"""iv2-chat: InternVideo2 stage 3 — video → QFormer → LLM (+LoRA) chat, HD sub-videos, training, MC-QA evaluation.

>>> from iv2_chat import VideoChatModel, VideoChat, chat_config
>>> from iv2_chat.tiny import tiny_llm_tokenizer
>>> model = VideoChatModel(chat_config("tiny"))          # or "internvideo2-chat-8b" (the release shape)
>>> out = model.encode_video(video)                       # VisualOutput(vision_tokens, query_output, embeds)
>>> chat = VideoChat(model, tiny_llm_tokenizer())
>>> chat.upload(video[0]); chat.chat("What moves?", do_sample=False)

Training: ``train(load_chat_config("tiny-synthetic"))`` or ``train(synthetic_config(root, corpus=...,
vision_init=..., quick=...))`` (the demo's stage 3; ``result.metrics``) (or ``iv2-chat train
tiny-synthetic``); a trained model: ``load_chat(run_dir)``, :func:`evaluate_mcqa`, :func:`answer_file`.

The names below are imported on first use (PEP 562), so that ``iv2-chat --help`` does not load torch.
"""

from __future__ import annotations

from importlib.metadata import version as _version
from typing import TYPE_CHECKING

from iv2_data.lazy import lazy_exports

__version__ = _version("iv2-chat")

# public name -> submodule that defines it
_EXPORTS: dict[str, str] = {
    # the model
    "ChatConfig": "config",
    "BERT_BASE_QFORMER": "config",
    "MISTRAL_7B_V03": "config",
    "OFFICIAL_LORA": "config",
    "chat_config": "config",
    "chat_vision_config": "config",
    "list_chat_configs": "config",
    "VideoChatModel": "model",
    "VisualOutput": "model",
    "build_llm": "model",
    "QFormer": "qformer",
    "qformer_key_from_official": "qformer",
    "qformer_key_to_official": "qformer",
    "qformer_tokenizer_settings": "tiny",
    # checkpoints and chat folders
    "ChatLoadResult": "checkpoint",
    "checkpoint_key_map": "checkpoint",
    "export_state_dict": "checkpoint",
    "load_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "load_chat": "bundle",
    "read_chat_config": "bundle",
    "save_chat": "bundle",
    # HD
    "HDTransform": "hd",
    "hd_candidates": "hd",
    "hd_grid": "hd",
    "hd_preprocess": "hd",
    "hd_sub_videos": "hd",
    "hd_transform": "hd",
    # conversations
    "IGNORE_INDEX": "conversation",
    "IMAGE_PLACEHOLDER": "conversation",
    "VIDEO_PLACEHOLDER": "conversation",
    "ChatBatch": "conversation",
    "PromptTokens": "conversation",
    "PromptTooLongError": "conversation",
    "TokenizedConversation": "conversation",
    "chat_template_prompt": "conversation",
    "collate_prompts": "conversation",
    "collate_training": "conversation",
    "frame_seconds": "conversation",
    "inference_prompt": "conversation",
    "time_message": "conversation",
    "tokenize_prompt": "conversation",
    "tokenize_template_conversation": "conversation",
    "tokenize_training_conversation": "conversation",
    "training_conversation": "conversation",
    # MC-QA
    "MVBENCH_SYSTEM": "mcqa",
    "MCQAPrompt": "mcqa",
    "check_answer": "mcqa",
    "check_answer_strict": "mcqa",
    "mvbench_answer": "mcqa",
    "mvbench_prediction": "mcqa",
    "mvbench_prompt": "mcqa",
    "predicted_letter": "mcqa",
    # chatting and using a trained model
    "OFFICIAL_GENERATION": "chat",
    "VideoChat": "chat",
    "BatchReport": "evaluation",
    "MCQAReport": "evaluation",
    "answer_file": "evaluation",
    "evaluate_mcqa": "evaluation",
    "read_video": "evaluation",
    # training
    "ALIGNMENT_PROMPT": "train_data",
    "ChatCollator": "train_data",
    "ChatExample": "train_data",
    "ChatExamples": "train_data",
    "alignment_conversation": "train_data",
    "mcqa_turns": "train_data",
    "video_time_message": "train_data",
    "CHAT_FLAVORS": "recipe_config",
    "ChatDataConfig": "recipe_config",
    "ChatEvalConfig": "recipe_config",
    "ChatModelSpec": "recipe_config",
    "ChatTrainConfig": "recipe_config",
    "PhaseConfig": "recipe_config",
    "load_chat_config": "recipe_config",
    "synthetic_config": "recipe_config",
    "CachedVideoReader": "recipe",
    "ChatObjective": "recipe",
    "ChatTrainResult": "recipe",
    "build_chat_config": "recipe",
    "load_vision_init": "recipe",
    "split_held_out": "recipe",
    "train": "recipe",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


if TYPE_CHECKING:  # what static analysis and IDEs see; the table above is what runs
    from .bundle import load_chat, read_chat_config, save_chat  # noqa: F401
    from .chat import OFFICIAL_GENERATION, VideoChat  # noqa: F401
    from .checkpoint import (  # noqa: F401
        ChatLoadResult,
        checkpoint_key_map,
        export_state_dict,
        load_checkpoint,
        save_checkpoint,
    )
    from .config import (  # noqa: F401
        BERT_BASE_QFORMER,
        MISTRAL_7B_V03,
        OFFICIAL_LORA,
        ChatConfig,
        chat_config,
        chat_vision_config,
        list_chat_configs,
    )
    from .conversation import (  # noqa: F401
        IGNORE_INDEX,
        IMAGE_PLACEHOLDER,
        VIDEO_PLACEHOLDER,
        ChatBatch,
        PromptTokens,
        PromptTooLongError,
        TokenizedConversation,
        chat_template_prompt,
        collate_prompts,
        collate_training,
        frame_seconds,
        inference_prompt,
        time_message,
        tokenize_prompt,
        tokenize_template_conversation,
        tokenize_training_conversation,
        training_conversation,
    )
    from .evaluation import BatchReport, MCQAReport, answer_file, evaluate_mcqa, read_video  # noqa: F401
    from .hd import HDTransform, hd_candidates, hd_grid, hd_preprocess, hd_sub_videos, hd_transform  # noqa: F401
    from .mcqa import (  # noqa: F401
        MVBENCH_SYSTEM,
        MCQAPrompt,
        check_answer,
        check_answer_strict,
        mvbench_answer,
        mvbench_prediction,
        mvbench_prompt,
        predicted_letter,
    )
    from .model import VideoChatModel, VisualOutput, build_llm  # noqa: F401
    from .qformer import QFormer, qformer_key_from_official, qformer_key_to_official  # noqa: F401
    from .recipe import (  # noqa: F401
        CachedVideoReader,
        ChatObjective,
        ChatTrainResult,
        build_chat_config,
        load_vision_init,
        split_held_out,
        train,
    )
    from .recipe_config import (  # noqa: F401
        CHAT_FLAVORS,
        ChatDataConfig,
        ChatEvalConfig,
        ChatModelSpec,
        ChatTrainConfig,
        PhaseConfig,
        load_chat_config,
        synthetic_config,
    )
    from .tiny import qformer_tokenizer_settings  # noqa: F401
    from .train_data import (  # noqa: F401
        ALIGNMENT_PROMPT,
        ChatCollator,
        ChatExample,
        ChatExamples,
        alignment_conversation,
        mcqa_turns,
        video_time_message,
    )
