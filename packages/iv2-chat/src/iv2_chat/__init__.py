"""iv2-chat: InternVideo2 stage 3: QFormer to LLM (+LoRA) video chat, HD sub-videos, MC-QA evaluation."""
