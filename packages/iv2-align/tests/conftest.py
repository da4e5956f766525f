import sys
from pathlib import Path

import pytest
import torch

# helper modules beside the tests (``_align_*.py``) are imported by name
sys.path.insert(0, str(Path(__file__).parent))

from _align_helpers import randomize_

# [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4, then words and pieces (ids 5..)
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "man", "is", "playing", "guitar", "the", "dog",
         "runs", "person", "cook", "##ing", "play", "##s", "on", "beach", "video", "of", "action", "photo",
         "picture", "human", "an", "this", "kind", "doing", "look", "can", "you", "recognize", "classification",
         "woman", "jump", "swim", "red", "car"]


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """This package's tests run tiny models: one intra-op thread is as fast on an idle machine and several times
    faster on a shared one (OpenMP threads of a loaded 2-core machine mostly wait for each other)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory):
    from transformers import BertTokenizer

    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(VOCAB) + "\n")
    return BertTokenizer(str(path), do_lower_case=True)


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
