"""The README's example runs as written."""

from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs(capsys):
    text = README.read_text()
    start = text.index("```python\n") + len("```python\n")
    code = text[start:text.index("```", start)]
    exec(compile(code, str(README), "exec"), {})
    out = capsys.readouterr().out
    assert "top1" in out and "torch.Size([2, 2])" in out
