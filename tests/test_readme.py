"""The root README works when followed literally: its `uv run iv2 ...` commands run (in a folder laid out like
a clone, with ../shared beside it), its Python blocks run after them and print what their comments say, the
commands it only shows parse, and its links stay inside the repository."""

from __future__ import annotations

import contextlib
import io
import re
import runpy
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
SHARED = ROOT.parent / "shared"
IV2 = Path(sys.executable).with_name("iv2")


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def commands(block: str) -> list[list[str]]:
    """The shell commands of a block: continuation lines joined, comments dropped."""
    joined = block.replace("\\\n", " ")
    return [shlex.split(line, comments=True) for line in joined.splitlines() if line.split("#")[0].strip()]


def iv2_commands() -> list[list[str]]:
    """Every `uv run iv2 ...` command of the README, in order, as the arguments after `iv2`."""
    return [cmd[3:] for block in blocks("bash") for cmd in commands(block) if cmd[:3] == ["uv", "run", "iv2"]]


def run_iv2(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    # the environment's own `iv2` (what `uv run iv2` runs once the environment exists)
    return subprocess.run([str(IV2), *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def run_python_block(code: str, cwd: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    monkeypatch.chdir(cwd)
    script = cwd / "readme_block.py"
    script.write_text(code)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        runpy.run_path(str(script), run_name="__main__")
    return out.getvalue().splitlines()


def promised_prints(code: str) -> list[str]:
    """What a block's `print(...)  # EXPECTED[: explanation]` lines say they print."""
    return [m.group(1) for m in re.finditer(r"^print\(.*\)\s+# (.*)$", code, flags=re.M)]


def assert_prints_as_promised(code: str, printed: list[str]) -> None:
    promised = promised_prints(code)
    assert len(printed) == len(promised), (printed, promised)
    for line, claim in zip(printed, promised):
        assert claim == line or claim.startswith(line + ":"), (line, claim)


def test_the_readme_starts_with_the_demo_then_the_tests():
    first = commands(blocks("bash")[0])
    assert first[:2] == [["uv", "run", "iv2", "demo"], ["uv", "run", "pytest"]]
    assert "docs/demo_summary.png" in README  # the measured demo's plot, embedded


def test_the_readme_has_the_commands_this_test_follows():
    cmds = iv2_commands()
    assert ["--help"] in cmds
    assert any(c[0] == "extract" and "../shared/data/example1_mpeg4_640x480.mp4" in c for c in cmds)
    assert any(c[:2] == ["data", "synth"] for c in cmds)
    assert len(blocks("python")) == 2


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """A folder laid out like a clone of the repository with the project's shared folder beside it."""
    if not (SHARED / "data" / "example1_mpeg4_640x480.mp4").is_file():
        pytest.skip(f"the shared sample video is not at {SHARED / 'data'} (../shared is absent in this checkout)")
    (tmp_path / "shared").symlink_to(SHARED)
    (tmp_path / "repo").mkdir()
    return tmp_path / "repo"


def test_followed_literally_with_the_shared_sample(clone: Path, monkeypatch: pytest.MonkeyPatch):
    for args in iv2_commands():
        if "../shared/data/example1_mpeg4_640x480.mp4" in args or args == ["--help"]:
            result = run_iv2(args, clone)
            assert result.returncode == 0, (args, result.stderr)
    assert sorted(p.name for p in (clone / "out").iterdir()) == ["example1_mpeg4_640x480.mp4.safetensors",
                                                                 "manifest.jsonl"]
    rerun = run_iv2(next(a for a in iv2_commands() if a[0] == "extract"), clone)
    assert rerun.returncode == 0 and "skipped 1 done before" in rerun.stderr  # "does nothing and says so"
    for code in blocks("python"):
        assert_prints_as_promised(code, run_python_block(code, clone, monkeypatch))


def test_followed_literally_without_the_shared_folder(tmp_path: Path):
    synth_flow = [a for a in iv2_commands() if a[:2] == ["data", "synth"] or (a[0] == "extract" and "synth/videos" in a)]
    assert len(synth_flow) == 2
    for args in synth_flow:
        result = run_iv2(args, tmp_path)
        assert result.returncode == 0, (args, result.stderr)
    assert len(list((tmp_path / "out").glob("*.mp4.safetensors"))) == 4


def test_commands_it_only_shows_parse():
    """The released-weights example needs a gated download: it is not run, but its options must exist."""
    from iv2_encoders.cli import build_parser

    shown = [a for a in iv2_commands() if a[0] == "extract" and "--checkpoint" in a]
    assert shown
    for args in shown:
        parsed = build_parser("iv2").parse_args(args)
        assert parsed.checkpoint and parsed.model == "internvideo2-1b.stage2-f4"


def test_links_stay_inside_the_repository():
    links = re.findall(r"\]\(([^)]+)\)", README)
    local = [link.split("#")[0] for link in links if not link.startswith(("http://", "https://"))]
    assert local
    for link in local:
        target = (ROOT / link).resolve()
        assert target.is_relative_to(ROOT), link
        assert target.exists(), link
