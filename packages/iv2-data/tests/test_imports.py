"""Optional dependencies stay optional and the package graph points one way: importing every module of
iv2-data imports none of the extras' packages and no other iv2 package (DESIGN.md)."""

from __future__ import annotations

import subprocess
import sys

FORBIDDEN = (
    # extras, imported only where used
    "torchaudio",
    "webdataset",
    "scenedetect",
    "cv2",
    "transformers",
    # iv2-data depends on no other iv2 package
    "iv2_kernels",
    "iv2_encoders",
    "iv2_train",
    "iv2_distill",
    "iv2_align",
    "iv2_chat",
)


def test_import_pulls_in_no_optional_dependency_nor_other_iv2_package() -> None:
    code = (
        "import sys, importlib, pkgutil, iv2_data, iv2_data.cli\n"
        "for m in pkgutil.walk_packages(iv2_data.__path__, 'iv2_data.'):\n"
        "    importlib.import_module(m.name)\n"
        "iv2_data.cli.build_parser()\n"
        f"print(','.join(m for m in {FORBIDDEN!r} if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
