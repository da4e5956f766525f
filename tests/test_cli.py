import subprocess
import sys
from pathlib import Path

import pytest

from iv2.cli import main, versions

SHARED_VIDEO = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "example1_mpeg4_640x480.mp4"


def test_versions_lists_every_workspace_package(capsys):
    found = versions()
    assert all(found[name] == "0.1.0" for name in found), found
    assert main(["versions"]) == 0
    assert "iv2-encoders" in capsys.readouterr().out


def test_models_lists_the_registry(capsys):
    assert main(["models"]) == 0
    assert "internvideo2-1b" in capsys.readouterr().out.split()


def test_unknown_command_is_an_error():
    with pytest.raises(SystemExit):
        main(["nope"])


def test_readme_main_job_extracts_features(tmp_path):
    """The README's main job: features of the shared sample video with the tiny encoder."""
    if not SHARED_VIDEO.is_file():
        pytest.skip(f"shared sample media not found at {SHARED_VIDEO} (../shared is absent)")
    exe = Path(sys.executable).with_name("iv2")
    result = subprocess.run([str(exe), "extract", "--model", "internvideo2-tiny", "--num-frames", "4", "--quiet",
                             "--output", str(tmp_path), str(SHARED_VIDEO)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "manifest.jsonl").read_text().count('"status": "ok"') == 1
