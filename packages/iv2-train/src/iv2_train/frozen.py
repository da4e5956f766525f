"""Frozen parts of a training model: teachers, frozen towers, a frozen base LLM.

``freeze(module)`` is the one call a stage makes for such a part. It

- turns off ``requires_grad`` (so the part is not in the optimizer and is never changed);
- puts the part in ``eval()`` and keeps it there when the Trainer (or DDP, or DeepSpeed, or the user) calls
  ``model.train()``: a teacher's dropout and stochastic depth stay off, DINOv2-style;
- records whether the part's weights go into checkpoints and into the final export. A 6B teacher or a 7B
  base LLM is not copied into every checkpoint: the stage rebuilds it from its own source when it resumes.

Running the part under ``torch.no_grad()`` stays the stage's job, where it calls the teacher (DINOv2 habit:
the code says so where it happens); ``freeze`` does not wrap ``forward`` because a frozen base LLM with
LoRA adapters inside must still pass gradients through.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Mapping

import torch
from torch import nn

__all__ = ["FrozenSpec", "freeze", "frozen_spec", "left_out_keys", "state_without"]

_SPEC_ATTR = "_iv2_frozen"


@dataclasses.dataclass(frozen=True)
class FrozenSpec:
    """How a frozen module is treated; see :func:`freeze`."""

    checkpoint: bool
    export: bool
    eval_mode: bool


def freeze(
    module: nn.Module, *, checkpoint: bool = True, export: bool | None = None, eval_mode: bool = True
) -> nn.Module:
    """Freeze ``module`` (a submodule of the training model) and return it.

    Args:
        module: the part to freeze; every parameter it holds now has ``requires_grad=False``. Parameters
            added later (e.g. LoRA adapters that peft inserts into a frozen base LLM) keep their own flag and
            are trained, checkpointed and exported as usual.
        checkpoint: write the part's frozen tensors (parameters and buffers) into training checkpoints.
            ``False`` for teachers and base models that the stage loads again from their own source when it
            resumes: the checkpoint then holds everything else, and resuming checks that exactly the left-out
            keys are missing.
        export: write them into the final export (``final/model.safetensors``). Defaults to ``checkpoint``;
            ``checkpoint=False, export=True`` suits a frozen tower that is part of the product (stage 2's
            audio encoder) but needs no copy in every checkpoint.
        eval_mode: keep the part in ``eval()`` whatever ``train()`` calls reach it. ``False`` leaves train
            mode alone (e.g. a frozen base LLM whose LoRA dropout must act, or to reproduce the official
            stage-2 audio encoder, which stays in train mode: REFERENCE g).
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"freeze() takes an nn.Module, got {type(module).__name__}")
    module.requires_grad_(False)
    spec = FrozenSpec(checkpoint=checkpoint, export=checkpoint if export is None else export, eval_mode=eval_mode)
    object.__setattr__(module, _SPEC_ATTR, spec)
    if eval_mode:
        module.eval()
        # An instance-level train() shadows nn.Module.train, so the recursive model.train() of the Trainer, of
        # DDP and of the DeepSpeed engine leaves this part (and everything below it) in eval mode.
        object.__setattr__(module, "train", _StayInEval(module))
    elif "train" in vars(module):
        object.__delattr__(module, "train")  # a re-freeze with eval_mode=False undoes the earlier pinning
    return module


class _StayInEval:
    """The instance-level ``train`` of a frozen module: whatever mode is asked for, the module (and everything
    below it) goes to eval. A weak reference, so that the module and this object form no reference cycle
    (which kept a DDP reducer alive past the process group); rebuilt from the module when the model is pickled
    or deep-copied (a bound method would pickle as getattr(module, name) and not come back)."""

    def __init__(self, module: nn.Module) -> None:
        self._module = weakref.ref(module)

    @property
    def module(self) -> nn.Module:
        module = self._module()
        if module is None:
            raise ReferenceError("the frozen module is gone")
        return module

    def __call__(self, mode: bool = True) -> nn.Module:
        return nn.Module.train(self.module, False)

    def __reduce__(self) -> tuple[type, tuple[nn.Module]]:
        return (_StayInEval, (self.module,))


def frozen_spec(module: nn.Module) -> FrozenSpec | None:
    """The :class:`FrozenSpec` given to :func:`freeze` for this very module, or None."""
    return vars(module).get(_SPEC_ATTR)


def left_out_keys(model: nn.Module, purpose: str) -> set[str]:
    """State-dict keys of ``model`` that frozen parts keep out of ``purpose`` (``"checkpoint"`` or ``"export"``).

    A part frozen with ``checkpoint=False`` (or ``export=False``) leaves out its frozen parameters and its
    buffers; trainable parameters inside it (adapters) stay in.
    """
    if purpose not in ("checkpoint", "export"):
        raise ValueError(f"purpose must be 'checkpoint' or 'export', got {purpose!r}")
    prefixes = []
    for name, module in model.named_modules():
        spec = frozen_spec(module)
        if spec is not None and not getattr(spec, purpose):
            prefixes.append(f"{name}." if name else "")
    if not prefixes:
        return set()
    state = model.state_dict(keep_vars=True)
    return {
        key
        for key, tensor in state.items()
        if any(key.startswith(prefix) for prefix in prefixes)
        and not (isinstance(tensor, nn.Parameter) and tensor.requires_grad)
    }


def state_without(state: Mapping[str, torch.Tensor], left_out: set[str]) -> dict[str, torch.Tensor]:
    """``state`` minus the ``left_out`` keys."""
    return {key: value for key, value in state.items() if key not in left_out}


def check_loaded_keys(missing: list[str], unexpected: list[str], allowed_missing: set[str], source: str) -> None:
    """Raise naming ``source`` when a non-strict model load lacked keys other than ``allowed_missing`` (the
    frozen parts left out on purpose) or brought keys the model does not have."""
    bad_missing = sorted(set(missing) - allowed_missing)
    if bad_missing or unexpected:
        parts = []
        if bad_missing:
            parts.append(f"missing {_preview(bad_missing)}")
        if unexpected:
            parts.append(f"unexpected {_preview(sorted(unexpected))}")
        raise RuntimeError(f"{source} does not fit the model: {'; '.join(parts)}")


def _preview(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return f"{len(keys)} key(s): {shown}" + (", ..." if len(keys) > limit else "")
