"""Helpers the iv2-align tests import by name (a uniquely named module: every package has a conftest)."""

import math

import torch


@torch.no_grad()
def randomize_(model: torch.nn.Module, seed: int = 0, scale: float = 1.0) -> torch.nn.Module:
    """Give every parameter random values (matrices ``scale / sqrt(fan_in)``, biases 0.1, norm weights around 1,
    LayerScale around 0.5, positive weight-norm magnitudes) so that no term of the maths is invisible in a
    comparison while activations stay O(1)."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        noise = torch.randn(p.shape, generator=g, dtype=torch.float64)
        leaf = name.rsplit(".", 1)[-1]
        if "norm" in name.lower() and leaf in ("weight", "bias") and p.dim() == 1:
            value = 1.0 + 0.1 * noise if leaf == "weight" else 0.1 * noise
        elif leaf == "gamma" or name.endswith("ls1") or name.endswith("ls2"):
            value = 0.5 + 0.1 * noise
        elif leaf in ("weight_g", "grep_a"):
            value = 1.0 + 0.2 * noise.abs()
        elif leaf == "temp":
            value = torch.full(p.shape, 0.07, dtype=torch.float64)
        elif p.dim() >= 2:
            value = scale * noise / math.sqrt(p[0].numel())
        else:
            value = 0.1 * noise
        p.copy_(value.to(p.dtype))
    return model
