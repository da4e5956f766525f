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


def write_video(path, num_frames: int = 12, width: int = 64, height: int = 48, fps: int = 10, seed: int = 0,
                codec: str = "libx264") -> None:
    """A small video whose frames differ (random blocks), written with PyAV."""
    import av
    import numpy as np

    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for _ in range(num_frames):
            blocks = rng.integers(0, 255, size=(height // 8, width // 8, 3), dtype=np.uint8)
            img = np.kron(blocks, np.ones((8, 8, 1), dtype=np.uint8))
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
