"""Helpers the chat tests import by name (test modules cannot import conftest under --import-mode=importlib: in
the whole suite ``conftest`` is another package's)."""

import torch


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
