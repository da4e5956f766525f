"""attention_pool against a float64 attention-pooling head written out here (einsum + softmax), output and
head-averaged attention weights, forward and backward."""

from __future__ import annotations

import pytest
import torch

from iv2_kernels import AttentionPoolParams, attention_pool

NAMES = ("q_weight", "q_bias", "k_weight", "k_bias", "v_weight", "v_bias", "proj_weight", "proj_bias")


def make_params(channels, inner, out_dim, with_bias=True, seed=0):
    gen = torch.Generator().manual_seed(seed)
    rand = lambda *shape: torch.randn(*shape, generator=gen, dtype=torch.float64)
    params = {
        "norm_q.weight": 1 + 0.2 * rand(channels), "norm_q.bias": 0.2 * rand(channels),
        "norm_k.weight": 1 + 0.2 * rand(channels), "norm_k.bias": 0.2 * rand(channels),
        "norm_v.weight": 1 + 0.2 * rand(channels), "norm_v.bias": 0.2 * rand(channels),
        "q_weight": rand(inner, channels) / channels**0.5, "k_weight": rand(inner, channels) / channels**0.5,
        "v_weight": rand(inner, channels) / channels**0.5, "proj_weight": rand(out_dim, inner) / inner**0.5,
        "proj_bias": 0.2 * rand(out_dim),
    }
    for name in ("q_bias", "k_bias", "v_bias"):
        params[name] = 0.2 * rand(inner) if with_bias else None
    return params


def bundle(num_heads, params, eps=1e-5):
    norms = [(params[f"{n}.weight"], params[f"{n}.bias"]) for n in ("norm_q", "norm_k", "norm_v")]
    return AttentionPoolParams(num_heads, *norms, *(params[n] for n in NAMES), eps=eps)


def call(x, num_heads, params, backend, eps=1e-5, return_weights=False):
    return attention_pool(x, bundle(num_heads, params, eps), backend=backend, return_weights=return_weights)


def float64_attention_pool(x, num_heads, p, eps=1e-5, return_weights=False):
    def layer_norm(t, name):
        mean = t.mean(-1, keepdim=True)
        var = ((t - mean) ** 2).mean(-1, keepdim=True)
        return (t - mean) / torch.sqrt(var + eps) * p[f"{name}.weight"] + p[f"{name}.bias"]

    def linear(t, name):
        out = t @ p[f"{name}_weight"].T
        return out + p[f"{name}_bias"] if p[f"{name}_bias"] is not None else out

    b, n, _ = x.shape
    q = linear(layer_norm(x.mean(1), "norm_q"), "q")  # (B, inner)
    k = linear(layer_norm(x, "norm_k"), "k")  # (B, N, inner)
    v = linear(layer_norm(x, "norm_v"), "v")
    head_dim = q.shape[-1] // num_heads
    q = q.view(b, num_heads, head_dim)
    k = k.view(b, n, num_heads, head_dim)
    v = v.view(b, n, num_heads, head_dim)
    attn = torch.softmax(torch.einsum("bhd,bnhd->bhn", q, k) / head_dim**0.5, dim=-1)
    pooled = torch.einsum("bhn,bnhd->bhd", attn, v).reshape(b, -1)
    out = linear(pooled, "proj")
    return (out, attn.mean(1)) if return_weights else out


CASES = [  # (batch, tokens, channels, heads, inner, out_dim, q/k/v biases)
    (2, 9, 96, 4, 96, 24, True),
    (2, 9, 96, 4, 96, 24, False),
    (1, 1, 40, 2, 32, 8, True),  # a single token
    (3, 37, 80, 16, 64, 16, False),  # tokens > one tile, channels not a multiple of the tile
    (1, 5, 1408, 16, 64, 8, True),  # the 1B model's width
]


def check(case, backend, dtype=torch.float32, tol=1e-5, device="cpu"):
    b, n, c, heads, inner, out_dim, with_bias = case
    params = make_params(c, inner, out_dim, with_bias)
    params = {k: (v.to(dtype).double() if v is not None else None) for k, v in params.items()}  # same rounding
    x = 0.5 + 2 * torch.randn(b, n, c, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x = x.to(dtype).double()
    grad_out = torch.randn(b, out_dim, dtype=torch.float64)
    names = [k for k, v in params.items() if v is not None]

    ref_params = {k: (v.clone().requires_grad_() if v is not None else None) for k, v in params.items()}
    x_ref = x.clone().requires_grad_()
    y_ref = float64_attention_pool(x_ref, heads, ref_params)
    grads_ref = torch.autograd.grad((y_ref * grad_out).sum(), [x_ref] + [ref_params[k] for k in names])

    ours = {k: (v.to(device, dtype).requires_grad_() if v is not None else None) for k, v in params.items()}
    x_ours = x.to(device, dtype).requires_grad_()
    y = call(x_ours, heads, ours, backend)
    assert y.shape == (b, out_dim) and y.dtype == dtype
    torch.testing.assert_close(y.double().cpu(), y_ref.detach(), rtol=tol, atol=tol)
    grads = torch.autograd.grad((y * grad_out.to(device, dtype)).sum(), [x_ours] + [ours[k] for k in names],
                                allow_unused=True)
    for name, got, want in zip(["x", *names], grads, grads_ref):
        assert got is not None, f"no gradient for {name}"
        scale = want.abs().max().item()
        torch.testing.assert_close(got.double().cpu(), want, rtol=10 * tol, atol=tol * max(scale, 1.0), msg=name)


@pytest.mark.parametrize("case", CASES, ids=lambda c: "B{}N{}C{}H{}{}".format(*c[:4], "" if c[6] else "-nobias"))
def test_float32_matches_float64(case, backend):
    check(case, backend)


def test_float16_triton_matches_float64(triton_backend):
    params = make_params(48, 32, 8)
    x = torch.randn(2, 11, 48, dtype=torch.float64)
    y = call(x.half(), 4, {k: (v.half() if v is not None else None) for k, v in params.items()}, triton_backend)
    assert y.dtype == torch.float16
    halved = {k: (v.half().double() if v is not None else None) for k, v in params.items()}
    torch.testing.assert_close(y.double(), float64_attention_pool(x.half().double(), 4, halved),
                               rtol=1e-2, atol=1e-2)


def test_autocast_bfloat16_matches_float64(backend):
    # the encoder runs under autocast: float32 weights and tokens, bfloat16 matmuls; output in bfloat16
    case = CASES[0]
    params = make_params(*case[2:3], *case[4:6])
    x = torch.randn(2, 9, 96, dtype=torch.float64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = call(x.float(), case[3], {k: (v.float() if v is not None else None) for k, v in params.items()},
                 backend)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.double(), float64_attention_pool(x, case[3], params), rtol=3e-2, atol=3e-2)


def test_bad_input_raises_value_error(backend):
    params = {k: (v.float() if v is not None else None) for k, v in make_params(16, 16, 4).items()}
    x = torch.randn(2, 3, 16)
    with pytest.raises(ValueError, match=r"x must be \(B, N, C\), got shape \(3, 16\)"):
        call(x[0], 2, params, backend)
    with pytest.raises(ValueError, match=r"q_weight must have shape \(16, 12\)"):
        call(torch.randn(2, 3, 12), 2, params, backend)
    with pytest.raises(ValueError, match="not divisible by 3 heads"):
        call(x, 3, params, backend)
    with pytest.raises(ValueError, match="x must be floating point"):
        call(x.long(), 2, params, backend)
    with pytest.raises(ValueError, match="proj_bias is on meta"):
        call(x, 2, {**params, "proj_bias": params["proj_bias"].to("meta")}, backend)
    with pytest.raises(ValueError, match=r"norm_v.bias must have shape \(16,\)"):
        call(x, 2, {**params, "norm_v.bias": torch.zeros(15)}, backend)
    # both backends refuse mixed dtypes outside autocast (torch's F.linear failed deep inside, Triton promoted)
    with pytest.raises(ValueError, match="q_weight is torch.float32 but x is torch.float16"):
        call(x.half(), 2, params, backend)
    with pytest.raises(ValueError, match="proj_bias is torch.float64 but x is torch.float32"):
        call(x, 2, {**params, "proj_bias": params["proj_bias"].double()}, backend)


@pytest.mark.parametrize("case", CASES[:4], ids=lambda c: "B{}N{}C{}H{}".format(*c[:4]))
def test_attention_weights_match_float64(case, backend):
    """The head-averaged softmax over keys, in value and gradient (the weights feed a loss here), and the
    pooled output unchanged when the weights are asked for."""
    b, n, c, heads, inner, out_dim, with_bias = case
    params = {k: (v.float().double() if v is not None else None) for k, v in make_params(c, inner, out_dim,
                                                                                             with_bias).items()}
    x = (0.5 + 2 * torch.randn(b, n, c, generator=torch.Generator().manual_seed(2), dtype=torch.float64)).float()
    gen = torch.Generator().manual_seed(3)
    grad_out = torch.randn(b, out_dim, generator=gen, dtype=torch.float64)
    grad_w = torch.randn(b, n, generator=gen, dtype=torch.float64)
    names = [k for k, v in params.items() if v is not None]

    ref_params = {k: (v.clone().requires_grad_() if v is not None else None) for k, v in params.items()}
    x_ref = x.double().requires_grad_()
    y_ref, w_ref = float64_attention_pool(x_ref, heads, ref_params, return_weights=True)
    grads_ref = torch.autograd.grad((y_ref * grad_out).sum() + (w_ref * grad_w).sum(),
                                    [x_ref] + [ref_params[k] for k in names])

    ours = {k: (v.float().requires_grad_() if v is not None else None) for k, v in params.items()}
    x_ours = x.clone().requires_grad_()
    y, weights = call(x_ours, heads, ours, backend, return_weights=True)
    assert weights.shape == (b, n) and weights.dtype == torch.float32
    torch.testing.assert_close(weights.sum(1), torch.ones(b), rtol=0, atol=1e-6)
    torch.testing.assert_close(weights.double(), w_ref.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(y.double(), y_ref.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y, call(x, heads, {k: (v.detach() if v is not None else None)
                                                  for k, v in ours.items()}, backend), rtol=1e-6, atol=1e-6)
    grads = torch.autograd.grad((y.double() * grad_out).sum() + (weights.double() * grad_w).sum(),
                                [x_ours] + [ours[k] for k in names], allow_unused=True)
    for name, got, want in zip(["x", *names], grads, grads_ref):
        assert got is not None, f"no gradient for {name}"
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5 * max(want.abs().max().item(), 1.0),
                                   msg=name)


def test_params_may_be_an_object_providing_the_bundle(backend):
    params = {k: (v.float() if v is not None else None) for k, v in make_params(16, 16, 4).items()}

    class Head:  # e.g. the encoder's pooling head module
        def attention_pool_params(self):
            return bundle(2, params)

    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(attention_pool(x, Head(), backend=backend), call(x, 2, params, backend))
    with pytest.raises(TypeError, match="AttentionPoolParams"):
        attention_pool(x, (2, params), backend=backend)
