"""The encoder's norms and pooling go through iv2_kernels: the Triton path (run on CPU under
TRITON_INTERPRET=1, in a fresh process so the flag is read before triton loads) gives the torch path's
outputs and gradients."""

import json
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import json, sys, torch
    sys.path.insert(0, sys.argv[1])
    from _enc_helpers import randomize_
    from iv2_encoders import VideoEncoder, VideoEncoderConfig

    cfg = dict(img_size=28, patch_size=14, num_frames=2, embed_dim=48, depth=2, num_heads=4,
               attn_pool_num_heads=4, clip_embed_dim=24)
    video = torch.randn(2, 3, 2, 28, 28, generator=torch.Generator().manual_seed(0))
    result = {}
    for backend in ("torch", "triton"):
        model = randomize_(VideoEncoder(VideoEncoderConfig(**cfg, kernel_backend=backend)), seed=1)
        out = model(video)
        (out.pooled.square().sum() + out.tokens.sum()).backward()
        result[backend] = {"pooled": out.pooled.tolist(),
                           "grads": {k: p.grad.flatten().tolist() for k, p in model.named_parameters()}}
    print(json.dumps(result))
""")


def test_triton_backend_matches_torch_backend_in_value_and_gradient():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    env.pop("IV2_KERNELS", None)
    proc = subprocess.run([sys.executable, "-c", SCRIPT, os.path.dirname(__file__)], capture_output=True,
                          text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    torch_, triton_ = result["torch"], result["triton"]
    flat = lambda rows: [x for row in rows for x in row]
    assert max(abs(a - b) for a, b in zip(flat(torch_["pooled"]), flat(triton_["pooled"]))) < 1e-5
    assert set(torch_["grads"]) == set(triton_["grads"])
    for name, grad in torch_["grads"].items():
        other = triton_["grads"][name]
        scale = max(1.0, max(abs(g) for g in grad))
        assert max(abs(a - b) for a, b in zip(grad, other)) < 1e-4 * scale, name
