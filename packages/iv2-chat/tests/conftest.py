import sys
from pathlib import Path

import pytest
import torch

# helper modules beside the tests (``_chat_*.py``) are imported by name
sys.path.insert(0, str(Path(__file__).parent))

from _chat_helpers import scramble_

from iv2_chat import VideoChatModel
from iv2_chat.tiny import tiny_chat_config, tiny_llm_tokenizer, tiny_qformer_tokenizer


def pytest_configure(config):
    # peft and transformers deprecation chatter from inside get_peft_model / save_pretrained
    config.addinivalue_line("filterwarnings", "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
    config.addinivalue_line("filterwarnings", "ignore:Setting `save_embedding_layers`:UserWarning")


@pytest.fixture(scope="session")
def llm_tokenizer():
    return tiny_llm_tokenizer()


@pytest.fixture(scope="session")
def qformer_tokenizer():
    return tiny_qformer_tokenizer()


@pytest.fixture
def make_model():
    """``make_model(seed=0, **config overrides)``: a scrambled tiny chat model in eval mode."""

    def build(seed: int = 0, **overrides):
        torch.manual_seed(seed)
        cfg = tiny_chat_config(**{k: overrides.pop(k) for k in ("lora", "num_frames", "img_size") if k in overrides})
        if overrides:
            cfg = cfg.replace(**overrides)
        return scramble_(VideoChatModel(cfg), seed).eval()

    return build
