"""Every package builds alone with complete metadata, and iv2-encoders installs and imports without the
heavy training dependencies (the checks the release workflow runs, see ci/)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UV = os.environ.get("UV") or shutil.which("uv")
pytestmark = pytest.mark.skipif(UV is None, reason="uv is not installed")


def ci(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "ci" / script), *args], capture_output=True, text=True,
                          timeout=600, cwd=ROOT)


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    result = ci("build.py", "--out-dir", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def test_every_package_builds_alone_with_complete_metadata(dist):
    wheels = sorted(p.name.split("-")[0] for p in dist.glob("*.whl"))
    assert wheels == sorted(["iv2_suite", "iv2_align", "iv2_chat", "iv2_data", "iv2_distill", "iv2_encoders",
                             "iv2_kernels", "iv2_train"])
    result = ci("check_dists.py", str(dist))
    assert result.returncode == 0, result.stdout


def test_metadata_check_catches_a_bad_wheel(dist, tmp_path):
    # a copy of a wheel with its version bumped in METADATA only must be reported
    import zipfile

    src = next(dist.glob("iv2_kernels-*.whl"))
    bad = tmp_path / src.name
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(bad, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename.endswith("METADATA"):
                data = data.replace(b"\nVersion: ", b"\nVersion: 9", 1)
            zout.writestr(item, data)
    result = ci("check_dists.py", str(tmp_path))
    assert result.returncode == 1 and "pyproject" in result.stdout


def test_encoders_install_alone_without_training_dependencies(dist):
    result = ci("check_isolation.py", str(dist))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "installed: [] imported: []" in result.stdout


def test_importing_encoders_imports_no_heavy_dependency():
    code = ("import sys, iv2_encoders, iv2_data, iv2_kernels; "
            "print(sorted(m for m in ('deepspeed', 'peft', 'transformers', 'flash_attn', 'webdataset', "
            "'torchaudio') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_release_tag_names_one_package_with_its_version():
    sys.path.insert(0, str(ROOT / "ci"))
    try:
        from release_tag import package_for_tag
    finally:
        sys.path.pop(0)
    assert package_for_tag("iv2-encoders-v0.1.0") == "iv2-encoders"
    assert package_for_tag("refs/tags/iv2-suite-v0.1.0") == "iv2-suite"
    with pytest.raises(ValueError, match="pyproject.toml says 0.1.0"):
        package_for_tag("iv2-kernels-v0.2.0")
    with pytest.raises(ValueError, match="names no package"):
        package_for_tag("iv2-video-v0.1.0")
    with pytest.raises(ValueError, match="names no package"):  # the PyPI name `iv2` is not ours
        package_for_tag("iv2-v0.1.0")
    with pytest.raises(ValueError, match="form"):
        package_for_tag("v0.1.0")


def test_release_workflow_builds_checks_and_publishes_the_tagged_package():
    import yaml

    wf = yaml.safe_load((ROOT / ".github" / "workflows" / "release.yml").read_text())
    assert (ROOT / "ci" / "release.yml").resolve() == (ROOT / ".github" / "workflows" / "release.yml").resolve()
    steps = " ".join(str(s.get("run", "")) for s in wf["jobs"]["publish"]["steps"])
    for needed in ("ci/release_tag.py", "ci/build.py", "ci/check_dists.py", "uv publish --trusted-publishing"):
        assert needed in steps
    assert wf["jobs"]["publish"]["permissions"]["id-token"] == "write"
    assert wf[True]["push"]["tags"]  # YAML reads the key `on` as True


def test_the_workspace_environment_holds_compiled_bytecode():
    # uv's compile-bytecode (pyproject.toml): without the .pyc files, a PYTHONDONTWRITEBYTECODE machine compiles
    # torch and transformers from source in every process (README, "Developing")
    import importlib.util

    import torch
    import transformers

    for module in (torch, transformers):
        cached = Path(importlib.util.cache_from_source(module.__file__))
        assert cached.is_file(), f"{cached} is missing: was the environment synced with compile-bytecode?"
