import math
import sys
from pathlib import Path

import pytest
import torch

# helper modules beside the tests (``_align_*.py``) are imported by name
sys.path.insert(0, str(Path(__file__).parent))

# [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4, then words and pieces (ids 5..)
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "man", "is", "playing", "guitar", "the", "dog",
         "runs", "person", "cook", "##ing", "play", "##s", "on", "beach", "video", "of", "action", "photo",
         "picture", "human", "an", "this", "kind", "doing", "look", "can", "you", "recognize", "classification",
         "woman", "jump", "swim", "red", "car"]


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory):
    from transformers import BertTokenizer

    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(VOCAB) + "\n")
    return BertTokenizer(str(path), do_lower_case=True)


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
        elif "original0" in name or leaf == "grep_a":
            value = 1.0 + 0.2 * noise.abs()
        elif leaf == "temp":
            value = torch.full(p.shape, 0.07, dtype=torch.float64)
        elif p.dim() >= 2:
            value = scale * noise / math.sqrt(p[0].numel())
        else:
            value = 0.1 * noise
        p.copy_(value.to(p.dtype))
    return model


@pytest.fixture
def tiny_model():
    from iv2_align import create_stage2_model

    torch.manual_seed(0)
    return randomize_(create_stage2_model("internvideo2-stage2-tiny"), seed=1).eval()


@pytest.fixture
def tiny_av_model():
    from iv2_align import create_stage2_model

    torch.manual_seed(0)
    return randomize_(create_stage2_model("internvideo2-stage2-tiny-av"), seed=2).eval()
