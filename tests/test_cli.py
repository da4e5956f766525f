"""The umbrella command ``iv2`` as a new user meets it: one entry point delegating to the packages' command
lines, help that is fast (no torch), shows defaults and carries no markup, usage errors naming the command
typed, the stage commands delegated when installed and a clear message otherwise, and the README's job."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from iv2 import cli
from iv2.cli import COMMANDS, Command, main, versions

SHARED_VIDEO = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "example1_mpeg4_640x480.mp4"
IV2 = Path(sys.executable).with_name("iv2")

# every help page a user can reach through `iv2` for the packages of this repository
HELP_PAGES = [
    [], ["extract"], ["models"], ["data"], ["data", "shard"], ["data", "synth"], ["data", "curate"],
    ["train"], ["train", "show"], ["train", "plot"], ["train", "estimate"], ["versions"], ["demo"], ["distill"], ["align"], ["chat"],
]


def run(argv, **kwargs):
    try:
        return main(argv, **kwargs)
    except SystemExit as exit_:  # argparse's help and usage errors exit, as from the console script
        return exit_.code


def test_versions_lists_every_workspace_package(capsys):
    found = versions()
    assert all(found[name] == "0.1.0" for name in found), found
    assert main(["versions"]) == 0
    assert "iv2-encoders" in capsys.readouterr().out


def test_version_flag(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == "iv2 (iv2-suite) 0.1.0"


def test_models_lists_architectures_and_released_tags(capsys):
    assert main(["models"]) == 0
    words = capsys.readouterr().out.split()
    assert "internvideo2-1b" in words and "internvideo2-tiny" in words
    assert "internvideo2-1b.stage2-f4" in words and "internvideo2-s14.distill" in words


def test_unknown_command_is_a_usage_error_with_a_suggestion(capsys):
    assert main(["extrct"]) == 2
    err = capsys.readouterr().err
    assert "iv2: error: unknown command 'extrct'; did you mean 'extract'?" in err
    assert main([]) == 2 and "usage: iv2 COMMAND" in capsys.readouterr().err


def test_help_is_fast_loads_no_torch_and_every_page_shows_the_exit_codes():
    code = textwrap.dedent(f"""
        import contextlib, io, sys
        from iv2.cli import main
        for argv in {HELP_PAGES!r}:
            out = io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
                main([*argv, "--help"])
            print("=== " + " ".join(argv))
            print(out.getvalue())
        print("HEAVY:", sorted(m for m in ("torch", "av", "numpy", "safetensors", "deepspeed") if m in sys.modules))
    """)
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "HEAVY: []" in result.stdout
    assert "| torch" not in result.stderr  # python -X importtime lists every import on stderr
    pages = result.stdout.split("=== ")[1:]
    assert len(pages) == len(HELP_PAGES)
    for page in pages:
        title, _, text = page.partition("\n")
        assert "exit codes" in text and "130" in text, title


def test_help_texts_carry_no_markup_and_name_the_command_typed(capsys):
    for argv in HELP_PAGES:
        assert run([*argv, "--help"]) == 0
        text = capsys.readouterr().out
        for markup in ("``", ":func:", ":class:", ":mod:", "`"):
            assert markup not in text, (argv, markup)
        if argv:
            assert f"usage: iv2 {' '.join(argv)}" in text, argv


def test_help_shows_the_defaults(capsys):
    assert run(["extract", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "clips per forward pass (default: 8)" in text
    assert "decoding processes (0: decode in the main process) (default: " in text
    assert "--size SIZE frame size in pixels, a multiple of the patch size (default: the model's own size" in text
    assert "frames per clip (default: 8)" in text


@pytest.mark.parametrize(("argv", "expected"), [
    (["extract", "--batch-size", "0", "--model", "m", "-o", "o", "x.mp4"],
     "iv2 extract: error: argument --batch-size: must be >= 1, got 0"),
    (["extract", "--model", "internvideo2-tiyn", "-o", "o", "x.mp4"],
     "iv2 extract: error: --model: unknown model 'internvideo2-tiyn'; did you mean 'internvideo2-tiny'"),
    (["extract", "--stride", "2", "--model", "internvideo2-tiny", "-o", "o", "x.mp4"],
     "iv2 extract: error: --stride needs --window"),
    (["data", "shard", "a.json"], "iv2 data shard: error: the following arguments are required: --output/-o"),
    (["data", "synth", "-o", "x", "--num-samples", "0"], "iv2 data synth: error: argument --num-samples"),
    (["train", "show"], "iv2 train show: error: the following arguments are required: RUN"),
    (["train", "nope"], "iv2 train: error: argument COMMAND: invalid choice: 'nope'"),
    (["models", "--bad"], "iv2: error: unrecognized arguments: --bad"),
])
def test_usage_errors_name_the_command_typed(capsys, argv, expected):
    assert run(argv) == 2
    err = capsys.readouterr().err
    assert expected in err, err
    assert "iv2-encoders" not in err and "iv2-data" not in err and "iv2-train" not in err


def test_stage_commands_delegate_to_the_package_and_name_themselves_as_typed(tmp_path, monkeypatch, capsys):
    """``iv2 distill|align|chat ...`` hand over to ``iv2_<stage>.cli:main``: with ``prog=`` when it takes one,
    else through ``sys.argv[0]`` (argparse's default name)."""
    package = tmp_path / "iv2_fakestage"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "cli.py").write_text(textwrap.dedent("""
        import argparse

        def main(argv=None):
            parser = argparse.ArgumentParser(description="a stage")
            parser.add_argument("command", choices=["train"])
            parser.add_argument("--steps", type=int, required=True)
            args = parser.parse_args(argv)
            print(f"{parser.prog}: {args.command} for {args.steps} steps")
            return 3
    """))
    (package / "cli_prog.py").write_text(textwrap.dedent("""
        def main(argv=None, *, prog="iv2-fakestage"):
            print(f"{prog} got {argv}")
            return 0
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(COMMANDS, "fake", Command("iv2_fakestage.cli:main", "a fake stage", "iv2-fakestage"))
    monkeypatch.setitem(COMMANDS, "fakeprog", Command("iv2_fakestage.cli_prog:main", "x", "iv2-fakestage"))
    argv0 = sys.argv[0]
    assert main(["fake", "train", "--steps", "5"]) == 3
    assert capsys.readouterr().out == "iv2 fake: train for 5 steps\n"
    assert sys.argv[0] == argv0  # restored
    assert run(["fake", "train"]) == 2
    assert "iv2 fake: error: the following arguments are required: --steps" in capsys.readouterr().err
    assert main(["fakeprog", "train", "-x"]) == 0
    assert capsys.readouterr().out == "iv2 fakeprog got ['train', '-x']\n"


def test_stage_commands_say_clearly_when_they_are_not_available(monkeypatch, capsys):
    monkeypatch.setitem(COMMANDS, "ghost", Command("iv2_ghost.cli:main", "x", "iv2-ghost"))
    assert main(["ghost", "train"]) == 1
    assert capsys.readouterr().err.strip() == (
        "iv2 ghost: error: this command needs iv2-ghost, which is not installed (pip install iv2-ghost)")
    monkeypatch.setitem(COMMANDS, "nocli", Command("iv2_data.no_such_cli:main", "x", "iv2-data"))
    assert main(["nocli"]) == 1
    assert "iv2-data 0.1.0 is installed but has no command line yet (no module iv2_data.no_such_cli)" in (
        capsys.readouterr().err)


def test_every_command_of_the_table_resolves_or_says_why():
    for name, command in COMMANDS.items():
        found = cli.resolve(name, command)
        assert callable(found) or "no command line yet" in found or "not installed" in found, (name, found)
    for name in ("extract", "models", "data", "train", "versions"):
        assert callable(cli.resolve(name, COMMANDS[name])), name


def test_readme_main_job_extracts_features(tmp_path):
    """The README's main job: features of the shared sample video with the tiny encoder."""
    if not SHARED_VIDEO.is_file():
        pytest.skip(f"shared sample media not found at {SHARED_VIDEO} (../shared is absent)")
    result = subprocess.run([str(IV2), "extract", "--model", "internvideo2-tiny", "--num-frames", "4", "--quiet",
                             "--output", str(tmp_path), str(SHARED_VIDEO)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "manifest.jsonl").read_text().count('"status": "ok"') == 1
    assert (tmp_path / "example1_mpeg4_640x480.mp4.safetensors").is_file()  # at the top, not its whole path


def test_synthetic_videos_to_features_end_to_end(tmp_path, monkeypatch):
    """iv2 data synth writes a corpus, iv2 extract extracts features of all its videos (the README's
    fallback when ../shared is absent)."""
    import json

    from safetensors.torch import load_file

    monkeypatch.chdir(tmp_path)
    assert main(["data", "synth", "--output", "synth", "--num-samples", "3", "--quiet"]) == 0
    assert main(["extract", "--model", "internvideo2-tiny", "--num-frames", "4", "--quiet", "--workers", "0",
                 "--output", "out", "synth/videos"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(r["status"] == "ok" for r in rows)
    assert sorted(r["output"] for r in rows) == [f"out/00000{i}.mp4.safetensors" for i in range(3)]
    pooled = [load_file(r["output"])["pooled"] for r in rows]
    assert all(p.shape == (32,) for p in pooled)
    assert not torch.allclose(pooled[0], pooled[1])  # different videos, different features
