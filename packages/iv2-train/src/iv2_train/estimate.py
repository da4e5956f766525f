"""Memory and throughput estimates per GPU, so one can tell before launching whether a model fits.

Model-state bytes follow the ZeRO paper's accounting for Adam: with mixed precision each trainable
parameter costs 2 (16-bit weight) + 2 (16-bit gradient) + 12 (fp32 master weight, first and second moment)
bytes; in fp32, 4 + 4 + 8. ZeRO-1 splits the optimizer state over the data-parallel ranks, ZeRO-2 also the
gradients, ZeRO-3 also the weights. Frozen parameters cost their weights only.

Activation bytes follow the usual per-block count for a pre-norm transformer block with ``s`` tokens,
width ``h``, MLP ratio ``r`` in 16-bit: ``s·b·h·(18 + 4r)`` plus ``5·a·s²·b`` when the attention
probabilities are materialised (not with fused/flash attention). With activation checkpointing only each
block's input (``2·s·b·h``) is kept, plus one block's full activations during its recomputation.
Real use adds framework buffers, fragmentation and temporary tensors: treat the numbers as a lower bound.
Without the layer sizes (``num_layers``, ``hidden_size``, ``seq_len``) only the model state is estimated and
the activations are reported as not counted. The module imports torch only to count a model's parameters.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

_GIB = 1024**3


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameter elements (works on a model built on the meta device; shared tensors once)."""
    seen: set[int] = set()
    total = 0
    for param in model.parameters():
        if id(param) in seen or (trainable_only and not param.requires_grad):
            continue
        seen.add(id(param))
        total += param.numel()
    return total


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per GPU for one training configuration."""

    num_params: int
    trainable_params: int
    zero_stage: int
    world_size: int
    precision: str
    params_bytes: float
    grads_bytes: float
    optimizer_bytes: float
    activations_bytes: float | None  # None: not estimated (no layer sizes given)

    @property
    def model_state_bytes(self) -> float:
        return self.params_bytes + self.grads_bytes + self.optimizer_bytes

    @property
    def activations_counted(self) -> bool:
        return self.activations_bytes is not None

    @property
    def total_bytes(self) -> float:
        """Model state plus activations (model state alone when activations were not estimated)."""
        return self.model_state_bytes + (self.activations_bytes or 0.0)

    def fits(self, gpu_gib: float, headroom: float = 0.9) -> bool:
        """Whether the estimate stays under ``headroom`` of a GPU with ``gpu_gib`` GiB (check
        :attr:`activations_counted`: without layer sizes this is the model state alone)."""
        return self.total_bytes <= headroom * gpu_gib * _GIB

    def table(self) -> str:
        rows = [
            (
                "parameters",
                f"{self.num_params / 1e6:,.1f} M ({self.trainable_params / 1e6:,.1f} M trainable)",
            ),
            ("setup", f"ZeRO-{self.zero_stage}, {self.world_size} GPUs, {self.precision}"),
            ("weights", f"{self.params_bytes / _GIB:8.2f} GiB"),
            ("gradients", f"{self.grads_bytes / _GIB:8.2f} GiB"),
            ("optimizer state", f"{self.optimizer_bytes / _GIB:8.2f} GiB"),
            (
                "activations",
                f"{self.activations_bytes / _GIB:8.2f} GiB"
                if self.activations_bytes is not None
                else "     not estimated (no layer sizes given)",
            ),
            (
                "total per GPU" if self.activations_counted else "model state per GPU",
                f"{self.total_bytes / _GIB:8.2f} GiB",
            ),
        ]
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def activation_bytes(
    *,
    num_layers: int,
    hidden_size: int,
    seq_len: int,
    micro_batch_size: int,
    num_heads: int = 1,
    mlp_ratio: float = 4.0,
    precision: str = "bf16",
    activation_checkpointing: bool = False,
    materialized_attention: bool = False,
) -> float:
    """Activation bytes kept for the backward pass of ``num_layers`` transformer blocks (see module doc)."""
    s, b, h = seq_len, micro_batch_size, hidden_size
    per_block = s * b * h * (18 + 4 * mlp_ratio)
    if materialized_attention:
        per_block += 5 * num_heads * s * s * b
    if precision == "fp32":
        per_block *= 2  # the 16-bit count doubled (dropout masks stay 1 byte, ignored here)
    if not activation_checkpointing:
        return float(num_layers * per_block)
    kept_input = s * b * h * (2 if precision != "fp32" else 4)
    return float(num_layers * kept_input + per_block)


def estimate_memory(
    model_or_params: nn.Module | int,
    *,
    trainable_params: int | None = None,
    zero_stage: int = 1,
    world_size: int = 1,
    precision: str = "bf16",
    num_layers: int = 0,
    hidden_size: int = 0,
    seq_len: int = 0,
    micro_batch_size: int = 1,
    num_heads: int = 1,
    mlp_ratio: float = 4.0,
    activation_checkpointing: bool = False,
    materialized_attention: bool = False,
) -> MemoryEstimate:
    """Per-GPU memory of AdamW training; pass a (meta-device) model or a parameter count.

    Give all of ``num_layers``/``hidden_size``/``seq_len`` to count activations too; leave all three at 0 to
    count the model state only (``activations_bytes`` is then None). Some but not all is an error.
    """
    if zero_stage not in (0, 1, 2, 3):
        raise ValueError(f"zero_stage must be 0, 1, 2 or 3, got {zero_stage}")
    if precision not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"precision must be 'fp32', 'bf16' or 'fp16', got {precision!r}")
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    sizes = {"num_layers": num_layers, "hidden_size": hidden_size, "seq_len": seq_len}
    given = [name for name, value in sizes.items() if value]
    if given and len(given) < len(sizes):
        missing = [name for name in sizes if name not in given]
        raise ValueError(f"activations need {', '.join(sizes)}: {', '.join(missing)} missing (got {', '.join(given)})")
    if isinstance(model_or_params, (int, float)):
        num_params = int(model_or_params)
    else:  # an nn.Module (kept duck-typed so that this module imports without torch)
        num_params = count_parameters(model_or_params)
        if trainable_params is None:
            trainable_params = count_parameters(model_or_params, trainable_only=True)
    trainable = num_params if trainable_params is None else int(trainable_params)

    if precision == "fp32":
        weight_b, grad_b, optim_b = 4, 4, 8
    else:
        weight_b, grad_b, optim_b = 2, 2, 12
    params_bytes = float(num_params * weight_b)
    grads_bytes = float(trainable * grad_b)
    optimizer_bytes = float(trainable * optim_b)
    if zero_stage >= 1:
        optimizer_bytes /= world_size
    if zero_stage >= 2:
        grads_bytes /= world_size
    if zero_stage >= 3:
        params_bytes /= world_size

    acts = None
    if given:
        acts = activation_bytes(
            num_layers=num_layers,
            hidden_size=hidden_size,
            seq_len=seq_len,
            micro_batch_size=micro_batch_size,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            precision=precision,
            activation_checkpointing=activation_checkpointing,
            materialized_attention=materialized_attention,
        )
    return MemoryEstimate(
        num_params,
        trainable,
        zero_stage,
        world_size,
        precision,
        params_bytes,
        grads_bytes,
        optimizer_bytes,
        acts,
    )


def estimate_step_time(
    num_params: int,
    *,
    tokens_per_step: int,
    world_size: int,
    peak_tflops: float,
    utilization: float = 0.4,
    num_layers: int = 0,
    hidden_size: int = 0,
    seq_len: int = 0,
    activation_checkpointing: bool = False,
) -> dict[str, float]:
    """Rough optimizer-step time: 6·N FLOPs per token (+ attention), 8·N with checkpointing's recompute.

    ``tokens_per_step`` is the global token count of one step; ``peak_tflops`` one GPU's dense peak.
    """
    per_token = (8.0 if activation_checkpointing else 6.0) * num_params
    if num_layers and hidden_size and seq_len:
        per_token += (16.0 if activation_checkpointing else 12.0) * num_layers * hidden_size * seq_len
    flops = per_token * tokens_per_step
    seconds = flops / (world_size * peak_tflops * 1e12 * utilization)
    return {
        "flops_per_step": flops,
        "seconds_per_step": seconds,
        "tokens_per_second": tokens_per_step / seconds,
    }
