import sys
from pathlib import Path

import pytest
import torch

# helper modules beside the tests (``_chat_*.py``) are imported by name
sys.path.insert(0, str(Path(__file__).parent))

from iv2_chat import VideoChatModel
from iv2_chat.tiny import tiny_chat_config, tiny_llm_tokenizer, tiny_qformer_tokenizer


def pytest_configure(config):
    # peft and transformers deprecation chatter from inside get_peft_model / save_pretrained
    config.addinivalue_line("filterwarnings", "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
    config.addinivalue_line("filterwarnings", "ignore:Setting `save_embedding_layers`:UserWarning")


def scramble_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Replace every parameter by random values of a working scale (norm gains near 1, LayerScale near 0.5,
    matrices ~ 1/sqrt(fan-in), LoRA B non-zero), so that each weight changes the outputs a test compares."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=gen, dtype=torch.float64).to(param.dtype)
            low = name.lower()
            if name.endswith(".gamma"):
                param.copy_(0.5 + 0.1 * noise)
            elif param.ndim == 1 and "norm" in low and name.endswith("weight"):
                param.copy_(1.0 + 0.15 * noise)
            elif param.ndim == 1:
                param.copy_(0.1 * noise)
            else:
                fan_in = param[0].numel() if param.ndim > 1 else 1
                param.copy_(noise * (0.7 / fan_in**0.5 if "embed" not in low else 0.5))
    return model


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
