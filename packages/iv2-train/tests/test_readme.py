"""The README's Python blocks run as written; the main example also runs a second time (a rerun of a finished
run resumes at max_steps, trains nothing and must still report its metrics)."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import pytest

README = Path(__file__).parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["toy.py"])
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_the_example_runs_and_runs_again(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "class Distill" in BLOCKS[0]
    script = workdir / "toy.py"
    script.write_text(BLOCKS[0])
    runpy.run_path(str(script), run_name="__main__")
    first = capsys.readouterr().out
    runpy.run_path(str(script), run_name="__main__")
    again = capsys.readouterr().out
    assert re.fullmatch(r"step 40: loss \d+\.\d+, eval mse \d+\.\d+\n", first), first
    assert again == first
    run_dir = workdir / "runs" / "toy"
    assert (run_dir / "final" / "model.safetensors").is_file() and (run_dir / "plots" / "eval_mse.png").is_file()


@pytest.mark.parametrize("index", range(1, len(BLOCKS)))
def test_the_other_blocks_run(workdir: Path, index: int) -> None:
    script = workdir / f"block{index}.py"
    script.write_text(BLOCKS[index])
    runpy.run_path(str(script), run_name="__main__")
