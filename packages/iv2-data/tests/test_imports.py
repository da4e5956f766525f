"""Optional dependencies stay optional: importing iv2-data imports none of the extras' packages."""

from __future__ import annotations

import subprocess
import sys


def test_import_pulls_in_no_optional_dependency() -> None:
    code = (
        "import sys, iv2_data, iv2_data.shards, iv2_data.curate, iv2_data.cli\n"
        "iv2_data.cli.build_parser()\n"
        "print(','.join(m for m in ('torchaudio', 'webdataset', 'scenedetect', 'cv2', 'transformers')"
        " if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
