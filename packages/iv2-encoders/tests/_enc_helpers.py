"""Shared helpers of the iv2-encoders tests."""

import torch


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter a random value of a sensible scale, so that every weight matters in a test."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("gamma",)):
                p.copy_(0.5 + 0.1 * torch.randn(p.shape, generator=g))
            elif p.ndim == 1 and "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=g) / max(1, p.shape[-1]) ** 0.25)
    return model
