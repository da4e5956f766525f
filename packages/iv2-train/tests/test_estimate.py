from __future__ import annotations

import pytest
import torch
from torch import nn

from iv2_train import activation_bytes, count_parameters, estimate_memory, estimate_step_time

GIB = 1024**3


def meta_transformer(depth: int, dim: int, heads: int, ffn: int) -> nn.Module:
    with torch.device("meta"):
        layer = nn.TransformerEncoderLayer(dim, heads, ffn, batch_first=True)
        return nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)


def test_parameter_count_of_meta_model_matches_formula() -> None:
    depth, dim, ffn = 4, 64, 256
    model = meta_transformer(depth, dim, 4, ffn)
    assert all(p.is_meta for p in model.parameters())
    per_layer = (3 * dim * dim + 3 * dim) + (dim * dim + dim) + (dim * ffn + ffn) + (ffn * dim + dim) + 4 * dim
    assert count_parameters(model) == depth * per_layer


def test_zero_stages_partition_model_state() -> None:
    model = meta_transformer(2, 32, 4, 128)
    n = count_parameters(model)
    by_stage = {s: estimate_memory(model, zero_stage=s, world_size=8, precision="bf16") for s in (0, 1, 2, 3)}
    assert by_stage[0].params_bytes == 2 * n and by_stage[0].grads_bytes == 2 * n
    assert by_stage[0].optimizer_bytes == 12 * n
    assert by_stage[1].optimizer_bytes == 12 * n / 8 and by_stage[1].grads_bytes == 2 * n
    assert by_stage[2].grads_bytes == 2 * n / 8 and by_stage[2].params_bytes == 2 * n
    assert by_stage[3].params_bytes == 2 * n / 8
    totals = [by_stage[s].total_bytes for s in (0, 1, 2, 3)]
    assert totals == sorted(totals, reverse=True)
    fp32 = estimate_memory(n, zero_stage=0, precision="fp32")
    assert fp32.model_state_bytes == 16 * n


def test_frozen_parameters_cost_weights_only() -> None:
    model = meta_transformer(2, 32, 4, 128)
    model.layers[0].requires_grad_(False)
    trainable = count_parameters(model, trainable_only=True)
    est = estimate_memory(model, zero_stage=0)
    assert est.trainable_params == trainable < est.num_params
    assert est.grads_bytes == 2 * trainable and est.optimizer_bytes == 12 * trainable
    assert est.params_bytes == 2 * est.num_params


def test_activations_with_and_without_checkpointing() -> None:
    kw = dict(num_layers=40, hidden_size=1408, seq_len=2049, micro_batch_size=8, num_heads=16)
    full = activation_bytes(**kw)
    ckpt = activation_bytes(**kw, activation_checkpointing=True)
    s, b, h = 2049, 8, 1408
    assert full == 40 * s * b * h * 34
    assert ckpt == 40 * 2 * s * b * h + s * b * h * 34
    assert ckpt < full / 5
    assert activation_bytes(**kw, materialized_attention=True) > full
    est = estimate_memory(1_000_000_000, world_size=128, **kw, activation_checkpointing=True)
    assert est.activations_bytes == ckpt
    assert est.fits(80) and not estimate_memory(6_000_000_000, zero_stage=0, world_size=1).fits(80)
    assert "total per GPU" in est.table()


def test_model_state_only_without_layer_sizes() -> None:
    est = estimate_memory(1_000_000, zero_stage=0)
    assert est.activations_bytes is None and not est.activations_counted
    assert est.total_bytes == est.model_state_bytes == 16 * 1_000_000
    assert "not estimated" in est.table() and "model state per GPU" in est.table()
    with pytest.raises(ValueError, match="hidden_size, seq_len missing"):
        estimate_memory(10, num_layers=4)


def test_step_time_estimate_and_bad_arguments() -> None:
    t = estimate_step_time(1e9, tokens_per_step=1e6, world_size=8, peak_tflops=100, utilization=0.5)
    assert t["flops_per_step"] == 6e15
    assert t["seconds_per_step"] == pytest.approx(6e15 / (8 * 100e12 * 0.5))
    with pytest.raises(ValueError, match="zero_stage"):
        estimate_memory(10, zero_stage=4)
    with pytest.raises(ValueError, match="precision"):
        estimate_memory(10, precision="fp8")


def test_estimate_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    from iv2_train.cli import main

    assert main(["estimate", "--params", "6e9", "--zero", "0", "--gpus", "1", "--gpu-gib", "80"]) == 0
    out = capsys.readouterr().out
    assert "ZeRO-0, 1 GPUs, bf16" in out and "does NOT fit in 80 GiB" in out
    # no layer sizes: said plainly to be the model state alone, never "activations 0.00 GiB ... fits"
    assert "not estimated" in out and "model state alone does NOT fit" in out and "activations NOT counted" in out
    assert "0.00 GiB" not in out.split("activations", 1)[1].splitlines()[0]
    assert main(["estimate", "--params", "1e8"]) == 0
    assert "model state alone fits in 80 GiB" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:  # some layer sizes but not all: a usage error naming the rest
        main(["estimate", "--params", "1e9", "--layers", "40"])
    assert exit_info.value.code == 2
    assert "--hidden, --seq-len missing" in capsys.readouterr().err
    main(["estimate", "--params", "1e9", "--gpus", "128", "--layers", "40", "--hidden", "1408", "--heads", "16",
          "--seq-len", "2049", "--micro-batch", "32", "--checkpointing", "--peak-tflops", "989"])  # fmt: skip
    out = capsys.readouterr().out
    assert "fits in 80 GiB" in out and "s per step" in out
