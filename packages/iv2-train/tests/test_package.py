from __future__ import annotations

import subprocess
import sys

import iv2_train


def test_public_api_is_exported() -> None:
    for name in iv2_train.__all__:
        assert hasattr(iv2_train, name), name
    for name in ("Trainer", "TrainConfig", "load_config", "all_gather_with_grad", "estimate_memory"):
        assert name in iv2_train.__all__


def test_import_stays_light() -> None:
    # DeepSpeed, matplotlib and rich are imported only on the paths that use them.
    code = (
        "import sys, iv2_train; "
        "print(','.join(m for m in ('deepspeed', 'matplotlib', 'rich', 'tensorboard') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""
