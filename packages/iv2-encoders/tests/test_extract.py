import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _enc_helpers import randomize_, write_video
from safetensors import safe_open
from safetensors.torch import load_file

from iv2_data.transforms import CenterCropTransform
from iv2_data.video import read_clip, read_frames
from iv2_encoders import create_model, save_checkpoint
from iv2_encoders.cli import main
from iv2_encoders.extract import output_path, window_starts

ARGS = ["--model", "internvideo2-tiny", "--num-frames", "4", "--quiet"]


@pytest.fixture
def videos(tmp_path, monkeypatch):
    """Two folders with the same file name, a broken file and a missing path; cwd = tmp_path."""
    monkeypatch.chdir(tmp_path)
    write_video(tmp_path / "data" / "a" / "clip.mp4", seed=1)
    write_video(tmp_path / "data" / "b" / "clip.mp4", seed=2, num_frames=3, width=48, height=64)
    (tmp_path / "data" / "b" / "broken.mp4").write_bytes(os.urandom(3000))
    (tmp_path / "data" / "notes.txt").write_text("not a video")  # not picked up from a folder
    return tmp_path


@pytest.fixture
def checkpoint(tmp_path):
    model = randomize_(create_model("internvideo2-tiny"), seed=7)
    save_checkpoint(model, tmp_path / "tiny.safetensors")
    return model.eval(), tmp_path / "tiny.safetensors"


def rows(out: Path) -> dict[str, dict]:
    lines = (out / "manifest.jsonl").read_text().splitlines()
    parsed = [json.loads(line) for line in lines]
    assert len({r["input"] for r in parsed}) == len(parsed), "one row per input"
    return {r["input"]: r for r in parsed}


def test_extract_records_every_input_and_goes_on_after_broken_ones(videos, checkpoint):
    model, ckpt = checkpoint
    code = main(["extract", *ARGS, "--checkpoint", str(ckpt), "--workers", "0", "--batch-size", "3",
                 "--output", "out", "data", "missing.mp4"])
    assert code == 1
    manifest = rows(Path("out"))
    assert set(manifest) == {"data/a/clip.mp4", "data/b/clip.mp4", "data/b/broken.mp4", "missing.mp4"}
    assert manifest["data/b/broken.mp4"]["status"] == "error"
    assert "broken.mp4" in manifest["data/b/broken.mp4"]["error"]
    assert manifest["missing.mp4"]["status"] == "error" and manifest["missing.mp4"]["output"] is None
    for name in ("data/a/clip.mp4", "data/b/clip.mp4"):
        row = manifest[name]
        assert row["status"] == "ok" and row["error"] is None
        # mirrored relative to the folder given ("data"), not with the folder's own path
        assert row["output"] == str(Path("out") / (name.removeprefix("data/") + ".safetensors"))
        feats = load_file(row["output"])
        expected = model(read_clip(name, 4, 56)[None]).pooled[0]
        torch.testing.assert_close(feats["pooled"], expected, rtol=1e-4, atol=1e-5)
        assert set(feats) == {"pooled"}


def test_rerun_skips_finished_outputs_without_rewriting(videos):
    assert main(["extract", *ARGS, "--workers", "0", "--output", "out", "data/a"]) == 0
    out = Path("out/clip.mp4.safetensors")
    before = (out.stat().st_mtime_ns, out.stat().st_ino)
    assert main(["extract", *ARGS, "--workers", "0", "--output", "out", "data/a", "data/b/broken.mp4"]) == 1
    assert (out.stat().st_mtime_ns, out.stat().st_ino) == before
    manifest = rows(Path("out"))
    assert manifest["data/a/clip.mp4"]["skipped"] is True and manifest["data/a/clip.mp4"]["status"] == "ok"
    assert manifest["data/b/broken.mp4"]["status"] == "error"


def test_a_rerun_with_other_settings_changes_nothing_and_says_what_differs(videos, capsys):
    """Other settings into the same folder: the run stops before any work (exit 2), naming the differences;
    the outputs and the manifest's ok rows stay as they were (they used to flip to error)."""
    assert main(["extract", *ARGS, "--workers", "0", "--output", "out", "data/a"]) == 0
    out = Path("out/clip.mp4.safetensors")
    before = (out.stat().st_mtime_ns, out.stat().st_ino, Path("out/manifest.jsonl").read_text())
    capsys.readouterr()
    assert main(["extract", *ARGS, "--workers", "0", "--output", "out", "--window", "2", "data/a"]) == 2
    err = capsys.readouterr().err
    assert "iv2-encoders extract: error: 1 output(s) in out were made with other settings" in err
    assert "window: None -> 2" in err and "stride: None -> 2" in err and "--overwrite" in err
    assert len([line for line in err.splitlines() if "error" in line]) == 1 and "Traceback" not in err
    assert (out.stat().st_mtime_ns, out.stat().st_ino, Path("out/manifest.jsonl").read_text()) == before
    assert main(["extract", *ARGS, "--workers", "0", "--output", "out", "--num-frames", "2", "data/a"]) == 2
    assert "num_frames: 4 -> 2" in capsys.readouterr().err
    # --overwrite recomputes them with the new settings
    assert main(["extract", *ARGS, "--workers", "0", "--output", "out", "--window", "2", "--overwrite",
                 "data/a"]) == 0
    assert load_file(out)["pooled"].shape == (6, 32)
    assert rows(Path("out"))["data/a/clip.mp4"]["status"] == "ok"


def test_rerun_asking_for_tokens_recomputes_instead_of_reporting_done(videos, capsys):
    """Adding --tokens used to print "skipped 1 finished" and keep files holding only "pooled"."""
    assert main(["extract", *ARGS, "--workers", "0", "--output", "out", "data/a"]) == 0
    assert set(load_file("out/clip.mp4.safetensors")) == {"pooled"}
    capsys.readouterr()
    assert main(["extract", *ARGS, "--workers", "0", "--output", "out", "--tokens", "data/a"]) == 0
    assert "extracted 1 (1 recomputed), skipped 0" in capsys.readouterr().err
    feats = load_file("out/clip.mp4.safetensors")
    assert set(feats) == {"pooled", "tokens"} and feats["tokens"].shape == (1 + 4 * 16, 64)
    # a file holding more than asked is done: a run without --tokens skips it
    assert main(["extract", *ARGS, "--workers", "0", "--output", "out", "data/a"]) == 0
    assert "skipped 1 done before" in capsys.readouterr().err
    assert set(load_file("out/clip.mp4.safetensors")) == {"pooled", "tokens"}


def test_the_checkpoint_is_identified_by_its_content_not_its_path(videos, checkpoint, capsys, monkeypatch, tmp_path):
    """Other weights written over the same checkpoint path used to be skipped as finished; the same file by
    another path spelling used to fail every input. The content hash decides, cached by (path, size, time)."""
    monkeypatch.setenv("IV2_CACHE_DIR", str(tmp_path / "cache"))
    _, ckpt = checkpoint
    run = lambda spelling, *extra: main(["extract", *ARGS, "--checkpoint", spelling, "--workers", "0",
                                         "--output", "out", *extra, "data/a"])  # fmt: skip
    assert run(str(ckpt)) == 0
    out = Path("out/clip.mp4.safetensors")
    stamp = (out.stat().st_mtime_ns, out.stat().st_ino)
    Path("link.safetensors").symlink_to(ckpt)
    for spelling in (os.path.relpath(ckpt), f"./{os.path.relpath(ckpt)}", "link.safetensors",
                     str(ckpt.parent / ".." / ckpt.parent.name / ckpt.name)):
        capsys.readouterr()
        assert run(spelling) == 0, capsys.readouterr().err
        assert "skipped 1 done before" in capsys.readouterr().err
    assert (out.stat().st_mtime_ns, out.stat().st_ino) == stamp
    assert os.path.realpath(ckpt) in json.loads((tmp_path / "cache" / "sha256.json").read_text())

    other = randomize_(create_model("internvideo2-tiny"), seed=8).eval()
    save_checkpoint(other, ckpt)  # other weights under the same path
    capsys.readouterr()
    assert run(str(ckpt)) == 2
    err = capsys.readouterr().err
    assert "weights: 'file-sha256:" in err and "other settings" in err
    assert rows(Path("out"))["data/a/clip.mp4"]["status"] == "ok"  # still valid for the old weights
    assert (out.stat().st_mtime_ns, out.stat().st_ino) == stamp
    assert run(str(ckpt), "--overwrite") == 0
    expected = other(read_clip("data/a/clip.mp4", 4, 56)[None]).pooled[0]
    torch.testing.assert_close(load_file(out)["pooled"], expected, rtol=1e-4, atol=1e-5)


def test_interrupted_write_leaves_no_partial_output(videos, monkeypatch):
    """A write killed midway (kill -9) leaves only atomic_write's temporary folder, with safetensors' own hidden
    temporary file inside: no output. The next run removes that leftover and writes the file."""
    import iv2_encoders.extract as ex

    real = ex.write_features
    finished = subprocess.Popen([sys.executable, "-c", ""])
    finished.wait()  # its pid names a writer that is no longer running

    def killed(path, tensors, metadata):
        leftover = path.parent / f".{path.name}.tmp-{finished.pid}-0123abcd"
        leftover.mkdir(parents=True)
        (leftover / ".tmpq1w2e3").write_bytes(b"half")  # what safetensors itself leaves when killed
        raise KeyboardInterrupt

    monkeypatch.setattr(ex, "write_features", killed)
    assert main(["extract", *ARGS, "--workers", "0", "--output", "out", "data/a"]) == 130
    assert not Path("out/clip.mp4.safetensors").exists()
    leftover = f".clip.mp4.safetensors.tmp-{finished.pid}-0123abcd"
    assert sorted(p.name for p in Path("out").iterdir()) == [leftover, "manifest.jsonl"]
    monkeypatch.setattr(ex, "write_features", real)
    assert main(["extract", *ARGS, "--workers", "0", "--output", "out", "data/a"]) == 0
    assert sorted(p.name for p in Path("out").iterdir()) == ["clip.mp4.safetensors", "manifest.jsonl"]


def test_outputs_get_the_umask_permissions(videos):
    """safetensors writes through a 0o600 temporary file; outputs must get what the umask gives any new file."""
    old = os.umask(0o022)
    try:
        assert main(["extract", *ARGS, "--workers", "0", "--output", "out", "data/a"]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat("out/clip.mp4.safetensors").st_mode) == 0o644


def test_sliding_windows_and_tokens_with_worker_processes(videos, checkpoint):
    model, ckpt = checkpoint
    code = main(["extract", *ARGS, "--checkpoint", str(ckpt), "--workers", "2", "--batch-size", "2",
                 "--window", "5", "--stride", "3", "--tokens", "--output", "out", "data/a/clip.mp4"])
    assert code == 0
    feats = load_file("out/clip.mp4.safetensors")
    starts = window_starts(12, 5, 3)
    assert starts == [0, 3, 6, 7]  # the last window ends at the last frame (11): the tail is covered
    assert feats["window_frames"].tolist() == [[s, s + 5] for s in starts]
    assert feats["pooled"].shape == (4, 32) and feats["tokens"].shape == (4, 1 + 4 * 16, 64)
    # window 1 (frames 3..8) by hand: middle frame of 4 segments of 5 frames -> 3 + [0, 1, 2, 3]
    frames = read_frames("data/a/clip.mp4", indices=[3, 4, 5, 6])
    expected = model(CenterCropTransform(56)(frames)[None]).pooled[0]
    torch.testing.assert_close(feats["pooled"][1], expected, rtol=1e-4, atol=1e-5)
    with safe_open("out/clip.mp4.safetensors", "pt") as f:
        assert f.metadata()["window"] == "5" and f.metadata()["stride"] == "3"


def test_short_video_gets_one_window_over_all_frames():
    assert window_starts(3, 16, 8) == [0]
    assert window_starts(16, 16, 8) == [0]
    assert window_starts(24, 16, 8) == [0, 8]


def test_windows_cover_the_tail():
    """--window 3 --stride 2 on 8 frames used to stop at frames 4..6 and never read frame 7."""
    assert window_starts(8, 3, 2) == [0, 2, 4, 5]
    assert window_starts(17, 16, 8) == [0, 1]  # frame 16 is in a window
    for total, window, stride in [(8, 3, 2), (17, 16, 8), (100, 16, 5), (31, 8, 8), (9, 4, 1)]:
        covered = {f for s in window_starts(total, window, stride) for f in range(s, s + window)}
        assert covered == set(range(total)), (total, window, stride)


def test_output_layout_mirrors_paths_relative_to_the_folder_given(videos, capsys):
    """Absolute and ``..`` inputs used to be copied whole under the output folder (the README's first command
    wrote out/<its absolute path>.safetensors); the same video given twice was computed twice."""
    absolute = str(videos / "data" / "a" / "clip.mp4")
    Path("work").mkdir()
    code = main(["extract", *ARGS, "--workers", "0", "--output", "out", "data", absolute, "data/a/clip.mp4",
                 "work/../data/a/clip.mp4"])
    assert code == 1  # data/b/broken.mp4 fails
    written = sorted(str(p.relative_to("out")) for p in Path("out").rglob("*.safetensors"))
    assert written == ["a/clip.mp4.safetensors", "b/clip.mp4.safetensors"]  # no copy of an absolute path
    assert set(rows(Path("out"))) == {"data/a/clip.mp4", "data/b/clip.mp4", "data/b/broken.mp4"}  # once
    assert "3 videos: extracted 2" in capsys.readouterr().err
    # a file given alone goes at the top, whatever its spelling
    for spelling, name in [(absolute, "clip.mp4"), ("../" + videos.name + "/data/b/clip.mp4", "clip.mp4")]:
        target = Path("single") / spelling.replace("/", "_")
        assert main(["extract", *ARGS, "--workers", "0", "--output", str(target), spelling]) == 0
        assert sorted(p.name for p in target.iterdir()) == [name + ".safetensors", "manifest.jsonl"]
    # a folder given by an absolute path or with ".." mirrors what is inside it
    assert main(["extract", *ARGS, "--workers", "0", "--output", "abs", str(videos / "data" / "a")]) == 0
    assert main(["extract", *ARGS, "--workers", "0", "--output", "dots", "work/../data/a"]) == 0
    assert [p.name for p in Path("abs").glob("*.safetensors")] == [p.name for p in Path("dots").glob("*.safetensors")]
    assert [p.name for p in Path("abs").glob("*.safetensors")] == ["clip.mp4.safetensors"]


def test_two_inputs_mapping_to_one_output_are_an_error_naming_both(videos, capsys):
    assert main(["extract", *ARGS, "--workers", "0", "--output", "out", "data/a", "data/b"]) == 2
    err = capsys.readouterr().err
    assert "data/a/clip.mp4 and data/b/clip.mp4 would both be written to out/clip.mp4.safetensors" in err
    assert not Path("out").exists()  # nothing was done


def test_output_paths_never_leave_the_output_folder(tmp_path):
    from iv2_encoders.extract import relative_output

    out = tmp_path / "o"
    assert output_path(out, relative_output(Path("/data/v/x.mp4"), None)) == out / "x.mp4.safetensors"
    assert output_path(out, relative_output(Path("../x.webm"), None)) == out / "x.webm.safetensors"
    assert output_path(out, relative_output(Path("/d/a/b/x.mp4"), Path("/d"))) == out / "a/b/x.mp4.safetensors"
    assert output_path(out, relative_output(Path("../d/a/x.mp4"), Path("../d"))) == out / "a/x.mp4.safetensors"


def test_bad_arguments_are_rejected(capsys):
    with pytest.raises(SystemExit):
        main(["extract", *ARGS, "--output", "o", "--stride", "2", "x.mp4"])
    assert "--stride needs --window" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["extract", *ARGS, "--output", "o", "--batch-size", "0", "x.mp4"])


def test_console_script_on_the_shared_sample(tmp_path, shared_video):
    exe = Path(sys.executable).with_name("iv2-encoders")
    result = subprocess.run([str(exe), "extract", *ARGS, "--output", str(tmp_path / "o"), str(shared_video)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    (row,) = rows(tmp_path / "o").values()
    assert row["status"] == "ok"
    pooled = load_file(row["output"])["pooled"]
    assert pooled.shape == (32,) and torch.isfinite(pooled).all()


def test_extract_preprocesses_as_the_weights_pretrained_cfg_says(videos):
    """A saved model whose pretrained_cfg asks for CLIP statistics and the squash resize: extract follows it
    (it used to hard-code ImageNet statistics and the centre crop)."""
    from iv2_data.transforms import CLIP_MEAN, CLIP_STD, ResizeTransform
    from iv2_encoders import save_pretrained

    model = randomize_(create_model("internvideo2-tiny"), seed=5).eval()
    model.pretrained_cfg = model.pretrained_cfg.replace(mean=CLIP_MEAN, std=CLIP_STD, resize="squash")
    save_pretrained(model, Path("weights"))
    assert main(["extract", *ARGS, "--checkpoint", "weights", "--workers", "0", "--output", "out",
                 "data/b/clip.mp4"]) == 0
    feats = load_file("out/clip.mp4.safetensors")
    clip = read_clip("data/b/clip.mp4", 4, 56, transform=ResizeTransform(56, mean=CLIP_MEAN, std=CLIP_STD))
    torch.testing.assert_close(feats["pooled"], model(clip[None]).pooled[0], rtol=1e-4, atol=1e-5)
    imagenet = model(read_clip("data/b/clip.mp4", 4, 56)[None]).pooled[0]
    assert not torch.allclose(feats["pooled"], imagenet, rtol=1e-3, atol=1e-4)  # the statistics mattered


def test_folders_are_searched_with_the_shared_rules_and_passed_over_links_reported(videos, capsys):
    """One suffix list for every tool (iv2_data.find_media); symlinked folders and dangling links are not read
    but said, and a run that found nothing says so and exits 1 (it used to exit 0 silently)."""
    only = videos / "only"
    only.mkdir()
    os.symlink(videos / "data" / "a", only / "linked")
    os.symlink(videos / "gone.mp4", only / "dangling.mp4")
    (only / "song.m4a").write_bytes(b"not a video")  # audio: not an extraction input
    assert main(["extract", *ARGS, "--workers", "0", "--output", "out", "only"]) == 1
    err = capsys.readouterr().err
    assert "linked: a symbolic link to a folder" in err and "dangling.mp4: a dangling symbolic link" in err
    assert "warning: no video files found (1 files with other suffixes)" in err
    assert "nothing to do: no input video" in err
    assert not Path("out").exists()  # nothing written, not even an empty manifest
    # an empty folder too
    (videos / "empty").mkdir()
    assert main(["extract", *ARGS, "--workers", "0", "--output", "out", "empty"]) == 1
    assert "nothing to do" in capsys.readouterr().err


def test_a_rerun_with_everything_done_says_so_and_exits_0(videos, capsys):
    assert main(["extract", *ARGS, "--workers", "0", "--output", "out", "data/a"]) == 0
    capsys.readouterr()
    assert main(["extract", *ARGS, "--workers", "0", "--output", "out", "data/a"]) == 0
    assert "1 video: extracted 0, skipped 1 done before, failed 0" in capsys.readouterr().err


def test_extract_opens_media_only_through_iv2_data():
    """iv2_data.open_media is the one place media is opened for reading; extraction decodes through it."""
    import inspect

    import iv2_encoders.extract as ex

    source = inspect.getsource(ex)
    assert "av.open" not in source and "import av" not in source and "decord" not in source


# ------------------------------------------------------------------------------------- errors as messages
def one_line_error(capsys, code_expected, argv):
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's usage errors exit, as from the console script
        code = exit_.code
    err = capsys.readouterr().err
    assert code == code_expected, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert len(errors) == 1, err
    return errors[0]


def test_unknown_model_name_suggests_the_closest(capsys):
    line = one_line_error(capsys, 2, ["extract", "--model", "internvideo2-tiyn", "--output", "o", "x.mp4"])
    assert line.startswith("iv2-encoders extract: error: --model: unknown model 'internvideo2-tiyn'")
    assert "did you mean 'internvideo2-tiny'" in line
    line = one_line_error(capsys, 2, ["extract", "--model", "internvideo2-1b.stage2", "--output", "o", "x.mp4"])
    assert "did you mean 'internvideo2-1b.stage2-f4'" in line


@pytest.mark.parametrize(("name", "content", "expected"), [
    ("missing.pt", None, "checkpoint not found: weights/missing.pt"),
    ("random.safetensors", os.urandom(4000), "weights/random.safetensors: not a readable safetensors file"),
    ("empty.pt", b"", "weights/empty.pt: the file is empty (0 bytes), not a checkpoint"),
    ("hostile.pt", "pickle", "weights/hostile.pt: cannot be read as a torch checkpoint: it holds a Python object"),
])
def test_unreadable_checkpoints_are_one_line_errors_naming_the_file(videos, capsys, name, content, expected):
    Path("weights").mkdir()
    if content == "pickle":
        import argparse

        torch.save({"model": create_model("internvideo2-tiny").state_dict(), "args": argparse.Namespace(a=1)},
                   "weights/hostile.pt")
    elif content is not None:
        Path("weights", name).write_bytes(content)
    line = one_line_error(capsys, 1, ["extract", *ARGS, "--checkpoint", f"weights/{name}", "--workers", "0",
                                      "--output", "out", "data/a"])
    assert line.startswith("iv2-encoders extract: error: ") and expected in line
    assert "weights_only=False" not in line and "weights_only` set to `False" not in line
    assert not Path("out").exists()


def test_a_folder_as_checkpoint_is_a_message_unless_save_pretrained_wrote_it(videos, capsys):
    Path("weights").mkdir()
    (Path("weights") / "notes.txt").write_text("x")
    line = one_line_error(capsys, 1, ["extract", *ARGS, "--checkpoint", "weights", "--output", "out", "data/a"])
    assert "weights: no checkpoint in this folder (looked for model.safetensors" in line and "notes.txt" in line


def test_a_checkpoint_of_another_size_and_resolution_reports_the_size_first(videos, capsys):
    """A wider model saved at another resolution used to be reported as an ambiguous frame count asking for
    num_frames= (the command line's flag is --checkpoint-frames)."""
    other = create_model("internvideo2-tiny", embed_dim=96, num_heads=4, img_size=84)
    save_checkpoint(other, Path("wide84.safetensors"))
    line = one_line_error(capsys, 1, ["extract", *ARGS, "--checkpoint", "wide84.safetensors", "--output", "out",
                                      "data/a"])
    assert "wide84.safetensors: key " in line and "has shape (96" in line and "expects (64" in line
    assert "another model size" in line and "num_frames" not in line


def test_an_ambiguous_frame_count_names_the_command_line_flag(videos, capsys):
    save_checkpoint(create_model("internvideo2-tiny", img_size=112), Path("f4s112.safetensors"))
    line = one_line_error(capsys, 1, ["extract", *ARGS, "--checkpoint", "f4s112.safetensors", "--output", "out",
                                      "data/a"])
    assert "--checkpoint-frames" in line
    assert main(["extract", *ARGS, "--checkpoint", "f4s112.safetensors", "--checkpoint-frames", "4",
                 "--workers", "0", "--output", "out", "data/a"]) == 0


def test_device_and_size_mistakes_are_usage_errors(videos, capsys):
    line = one_line_error(capsys, 2, ["extract", *ARGS, "--size", "60", "--output", "out", "data/a"])
    assert "--size 60 is not a multiple of the patch size 14 of internvideo2-tiny (try 56 or 70)" in line
    line = one_line_error(capsys, 2, ["extract", *ARGS, "--device", "gpu", "--output", "out", "data/a"])
    assert "--device 'gpu' is not a device name" in line
    if not torch.cuda.is_available():
        line = one_line_error(capsys, 2, ["extract", *ARGS, "--device", "cuda", "--output", "out", "data/a"])
        assert "--device cuda: no CUDA GPU is available here" in line
    assert not Path("out").exists()


def test_a_read_only_output_folder_is_a_message(videos, capsys, monkeypatch):
    Path("ro").mkdir()
    Path("ro").chmod(0o555)
    if os.geteuid() == 0:  # root writes anywhere: the OS refusal is simulated where the folder is probed
        import tempfile

        def refused(*args, dir=None, **kwargs):
            raise PermissionError(13, "Permission denied", os.path.join(str(dir), "tmpab12"))

        monkeypatch.setattr(tempfile, "TemporaryFile", refused)
    line = one_line_error(capsys, 1, ["extract", *ARGS, "--workers", "0", "--output", "ro/out", "data/a"])
    assert line == "iv2-encoders extract: error: cannot write to the output folder ro/out: Permission denied"


def test_ctrl_c_is_one_line_saying_what_is_done_and_a_rerun_resumes(videos, capsys, monkeypatch):
    import iv2_encoders.extract as ex

    real = ex.write_features
    calls = []

    def interrupted_on_the_second(path, tensors, metadata):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real(path, tensors, metadata)

    monkeypatch.setattr(ex, "write_features", interrupted_on_the_second)
    write_video(videos / "more" / "x" / "one.mp4", seed=3)
    write_video(videos / "more" / "y" / "two.mp4", seed=4)
    assert main(["extract", *ARGS, "--workers", "0", "--batch-size", "1", "--output", "out", "more"]) == 130
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == ("iv2-encoders extract: interrupted, 1 of 2 videos done this run (0 done before), recorded in "
                   "out/manifest.jsonl; rerun the same command to resume")
    monkeypatch.setattr(ex, "write_features", real)
    assert main(["extract", *ARGS, "--workers", "0", "--output", "out", "more"]) == 0
    assert "2 videos: extracted 1, skipped 1 done before" in capsys.readouterr().err


def test_the_progress_bar_counts_the_clips_of_a_windowed_video(videos, monkeypatch):
    """One long windowed video showed 0/1 until its end; the bar now counts its windows as they are done."""
    import tqdm.auto

    seen = []

    class Recording(tqdm.auto.tqdm):
        def update(self, n=1):
            super().update(n)
            seen.append((self.n, self.total))

    monkeypatch.setattr(tqdm.auto, "tqdm", Recording)
    assert main(["extract", "--model", "internvideo2-tiny", "--num-frames", "2", "--workers", "0",
                 "--batch-size", "2", "--window", "2", "--output", "out", "data/a/clip.mp4"]) == 0
    assert seen == [(2, 6), (4, 6), (6, 6)]  # 12 frames: 6 windows, in batches of 2


def test_a_tag_without_checkpoint_loads_its_released_weights(videos, monkeypatch, tmp_path, capsys):
    """--model NAME.TAG without --checkpoint used to give random weights; it fetches the tag's file (through
    huggingface_hub, faked here) and identifies the outputs by its content."""
    import huggingface_hub

    from iv2_encoders import MODEL_CONFIGS, get_pretrained_cfg

    # the S14 architecture at a few blocks of small width and 56 px (the tag and its loading are unchanged)
    small = MODEL_CONFIGS["internvideo2-s14"].replace(embed_dim=48, depth=2, img_size=56, clip_embed_dim=16)
    monkeypatch.setitem(MODEL_CONFIGS, "internvideo2-s14", small)
    source = randomize_(create_model("internvideo2-s14.distill"), seed=11).eval()
    (file,) = get_pretrained_cfg("internvideo2-s14.distill").hub_files
    local = tmp_path / "hub" / file.repo_id / file.filename
    local.parent.mkdir(parents=True)
    torch.save(source.state_dict(), local)
    fetched = []
    monkeypatch.setattr(huggingface_hub, "hf_hub_download",
                        lambda repo_id, filename, **kw: fetched.append(filename) or str(local))
    monkeypatch.setenv("IV2_CACHE_DIR", str(tmp_path / "cache"))
    argv = ["extract", "--model", "internvideo2-s14.distill", "--num-frames", "8", "--workers", "0", "--quiet",
            "--output", "out", "data/b/clip.mp4"]
    assert main(argv) == 0, capsys.readouterr().err
    assert fetched and fetched[0] == file.filename
    expected = source(read_clip("data/b/clip.mp4", 8, 56)[None]).pooled[0]
    torch.testing.assert_close(load_file("out/clip.mp4.safetensors")["pooled"], expected, rtol=1e-4, atol=1e-5)
    with safe_open("out/clip.mp4.safetensors", "pt") as f:
        assert json.loads(f.metadata()["iv2_settings"])["weights"].startswith("file-sha256:")
