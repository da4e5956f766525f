import subprocess
import sys
from pathlib import Path

import pytest
import torch

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


def test_synthetic_videos_to_features_end_to_end(tmp_path, monkeypatch):
    """iv2-data writes a corpus, the umbrella CLI extracts features of all its videos (the README's
    fallback when ../shared is absent)."""
    import json

    from safetensors.torch import load_file

    from iv2_data.cli import main as data_main

    monkeypatch.chdir(tmp_path)
    assert data_main(["synth", "--output", "synth", "--num-samples", "3", "--quiet"]) == 0
    assert main(["extract", "--model", "internvideo2-tiny", "--num-frames", "4", "--quiet", "--workers", "0",
                 "--output", "out", "synth/videos"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(r["status"] == "ok" for r in rows)
    pooled = [load_file(r["output"])["pooled"] for r in rows]
    assert all(p.shape == (32,) for p in pooled)
    assert not torch.allclose(pooled[0], pooled[1])  # different videos, different features
