"""The iv2-data command line as a user meets it: help without torch and without markup, the command typed
named in errors, one exit-code convention (iv2_data.command_line), one-line errors, Ctrl-C, zero-work runs."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from iv2_data import command_line
from iv2_data.cli import build_parser, main


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices) if actions else {}


def test_help_imports_no_torch_and_shows_defaults() -> None:
    code = (
        "import sys, contextlib, io\n"
        "from iv2_data.cli import main\n"
        "for argv in (['--help'], ['shard', '--help'], ['synth', '--help'], ['curate', '--help']):\n"
        "    out = io.StringIO()\n"
        "    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):\n"
        "        main(argv)\n"
        "    print(out.getvalue())\n"
        "print('HEAVY:', sorted(m for m in ('torch', 'av', 'numpy', 'webdataset') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "HEAVY: []" in result.stdout
    assert "--samples-per-shard SAMPLES_PER_SHARD\n" in result.stdout
    assert "records per tar file (default: 1000)" in result.stdout
    assert "exit codes:" in result.stdout and "130" in result.stdout


def test_help_texts_carry_no_markup() -> None:
    parser = build_parser()
    texts = [parser.format_help()] + [sub.format_help() for sub in subparsers(parser).values()]
    for text in texts:
        for markup in ("``", ":func:", ":class:", ":mod:", "`"):
            assert markup not in text, (markup, text[:200])


def test_usage_errors_name_the_command_typed(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        main(["shard", "ann.json", "--samples-per-shard", "0", "--output", "o"], prog="iv2 data")
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert "iv2 data shard: error: argument --samples-per-shard: must be >= 1, got 0" in err
    assert "usage: iv2 data shard" in err


def test_failures_are_one_line_messages_with_exit_code_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["shard", str(tmp_path / "missing.json"), "--output", str(tmp_path / "o"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "missing.json" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert err.startswith("iv2-data shard: error: ")


def test_nothing_to_do_is_said_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("webdataset", reason="the shards extra (webdataset) is not installed")
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    assert main(["shard", str(empty), "--output", str(tmp_path / "o"), "--quiet"]) == 1
    assert "nothing to do" in capsys.readouterr().err


def test_curate_on_a_folder_without_videos_warns_and_exits_1(tmp_path: Path, capsys) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.txt").write_text("no video here")
    code = main(["curate", str(tmp_path / "in"), "--output", str(tmp_path / "o"), "--detector", "none", "--quiet"])
    assert code == 1
    captured = capsys.readouterr()
    assert "no video files found (1 files with other suffixes)" in captured.err
    assert json.loads(captured.out)["inputs"] == 0


def test_shard_skipping_records_exits_1_and_lists_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("webdataset", reason="the shards extra (webdataset) is not installed")
    (tmp_path / "fake.mp4").write_text("not a video, only text\n" * 10)
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps([{"video": "fake.mp4", "caption": "x"}]))
    assert main(["shard", str(ann), "--output", str(tmp_path / "o"), "--quiet"]) == 1
    captured = capsys.readouterr()
    assert "0 samples, 1 skipped" in captured.out
    assert "skipped record 0: cannot read video" in captured.err and "fake.mp4" in captured.err


def test_settings_conflict_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("webdataset", reason="the shards extra (webdataset) is not installed")
    from iv2_data.synthetic import write_corpus

    corpus = write_corpus(tmp_path / "c", 2, num_frames=2, size=16, fps=4)
    args = ["shard", str(corpus["video_text"]), "--output", str(tmp_path / "o"), "--quiet"]
    assert main(args) == 0
    capsys.readouterr()
    assert main([*args, "--samples-per-shard", "1"]) == 2
    err = capsys.readouterr().err
    assert "samples_per_shard was 1000, now 1" in err and len(err.strip().splitlines()) == 1


def test_ctrl_c_is_one_line_with_exit_130(tmp_path: Path, monkeypatch, capsys) -> None:
    pytest.importorskip("webdataset", reason="the shards extra (webdataset) is not installed")
    import iv2_data.shards as shards
    from iv2_data.synthetic import write_corpus

    corpus = write_corpus(tmp_path / "c", 3, num_frames=2, size=16, fps=4)
    real = shards._pack

    def interrupted_at_record_2(record, index, root, keys):
        if index == 2:
            raise KeyboardInterrupt
        return real(record, index, root, keys)

    monkeypatch.setattr(shards, "_pack", interrupted_at_record_2)
    args = ["shard", str(corpus["video_text"]), "--output", str(tmp_path / "o"), "--samples-per-shard", "1"]
    assert main([*args, "--quiet"]) == command_line.EXIT_INTERRUPTED == 130
    err = capsys.readouterr().err
    assert err.strip() == (f"iv2-data shard: interrupted, 2 of 3 shards done (listed in {tmp_path / 'o' / 'manifest.json'}); "
                           "rerun the same command to resume")
    monkeypatch.setattr(shards, "_pack", real)
    assert main([*args, "--quiet"]) == 0


def test_run_command_maps_errors_to_codes(capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    def denied() -> int:
        raise PermissionError(13, "Permission denied", "/out/x")

    assert command_line.run_command("tool", denied) == 1
    assert capsys.readouterr().err == "tool: error: /out/x: Permission denied\n"

    def usage() -> int:
        raise command_line.CommandError("bad\nthing", code=2)

    assert command_line.run_command("tool", usage) == 2
    assert capsys.readouterr().err == "tool: error: bad thing\n"
    monkeypatch.setenv("IV2_TRACEBACK", "1")
    with pytest.raises(PermissionError):
        command_line.run_command("tool", denied)
