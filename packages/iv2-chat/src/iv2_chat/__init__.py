"""iv2-chat: InternVideo2 stage 3: QFormer to LLM (+LoRA) video chat, HD sub-videos, MC-QA evaluation."""


from importlib.metadata import version as _version

__version__ = _version("iv2-chat")
