"""iv2-chat: InternVideo2 stage 3 — video → QFormer → LLM (+LoRA) chat, HD sub-videos, MC-QA evaluation.

>>> from iv2_chat import VideoChatModel, VideoChat, chat_config
>>> from iv2_chat.tiny import tiny_llm_tokenizer
>>> model = VideoChatModel(chat_config("tiny"))          # or "internvideo2-chat-8b" (the release shape)
>>> out = model.encode_video(video)                       # VisualOutput(vision_tokens, query_output, embeds)
>>> chat = VideoChat(model, tiny_llm_tokenizer())
>>> chat.upload(video[0]); chat.chat("What moves?", do_sample=False)
"""

from .chat import OFFICIAL_GENERATION, VideoChat
from .checkpoint import ChatLoadResult, checkpoint_key_map, export_state_dict, load_checkpoint, save_checkpoint
from .config import (
    BERT_BASE_QFORMER,
    MISTRAL_7B_V03,
    OFFICIAL_LORA,
    ChatConfig,
    chat_config,
    chat_vision_config,
    list_chat_configs,
)
from .conversation import (
    IGNORE_INDEX,
    IMAGE_PLACEHOLDER,
    VIDEO_PLACEHOLDER,
    ChatBatch,
    PromptTokens,
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
from .hd import hd_candidates, hd_grid, hd_preprocess, hd_sub_videos, hd_transform
from .mcqa import (
    MVBENCH_SYSTEM,
    MCQAPrompt,
    check_answer,
    check_answer_strict,
    mvbench_answer,
    mvbench_prediction,
    mvbench_prompt,
    predicted_letter,
)
from .model import VideoChatModel, VisualOutput, build_llm
from .qformer import QFormer, qformer_key_from_official, qformer_key_to_official
from .tiny import qformer_tokenizer_settings

__all__ = [
    "BERT_BASE_QFORMER",
    "IGNORE_INDEX",
    "IMAGE_PLACEHOLDER",
    "MISTRAL_7B_V03",
    "MVBENCH_SYSTEM",
    "OFFICIAL_GENERATION",
    "OFFICIAL_LORA",
    "VIDEO_PLACEHOLDER",
    "ChatBatch",
    "ChatConfig",
    "ChatLoadResult",
    "MCQAPrompt",
    "PromptTokens",
    "QFormer",
    "TokenizedConversation",
    "VideoChat",
    "VideoChatModel",
    "VisualOutput",
    "build_llm",
    "chat_config",
    "chat_template_prompt",
    "chat_vision_config",
    "check_answer",
    "check_answer_strict",
    "checkpoint_key_map",
    "collate_prompts",
    "collate_training",
    "export_state_dict",
    "frame_seconds",
    "hd_candidates",
    "hd_grid",
    "hd_preprocess",
    "hd_sub_videos",
    "hd_transform",
    "inference_prompt",
    "list_chat_configs",
    "load_checkpoint",
    "mvbench_answer",
    "mvbench_prediction",
    "mvbench_prompt",
    "predicted_letter",
    "qformer_key_from_official",
    "qformer_key_to_official",
    "qformer_tokenizer_settings",
    "save_checkpoint",
    "time_message",
    "tokenize_prompt",
    "tokenize_template_conversation",
    "tokenize_training_conversation",
    "training_conversation",
]

from importlib.metadata import version as _version

__version__ = _version("iv2-chat")
