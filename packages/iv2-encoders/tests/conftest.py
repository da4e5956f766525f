import sys
from pathlib import Path

import pytest

# helper modules beside the tests (``_enc_*.py``) are imported by name
sys.path.insert(0, str(Path(__file__).parent))

REPO_ROOT = Path(__file__).resolve().parents[3]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture
def shared_video() -> Path:
    path = SHARED_DATA / "example1_mpeg4_640x480.mp4"
    if not path.is_file():
        pytest.skip(f"shared sample media not found at {path} (../shared is absent in this checkout)")
    return path
