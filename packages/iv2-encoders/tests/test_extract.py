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
        assert row["output"] == str(Path("out") / (name + ".safetensors"))
        feats = load_file(row["output"])
        expected = model(read_clip(name, 4, 56)[None]).pooled[0]
        torch.testing.assert_close(feats["pooled"], expected, rtol=1e-4, atol=1e-5)
        assert set(feats) == {"pooled"}


def test_rerun_skips_finished_outputs_without_rewriting(videos):
    assert main(["extract", *ARGS, "--workers", "0", "--output", "out", "data/a"]) == 0
    out = Path("out/data/a/clip.mp4.safetensors")
    before = (out.stat().st_mtime_ns, out.stat().st_ino)
    assert main(["extract", *ARGS, "--workers", "0", "--output", "out", "data/a", "data/b/clip.mp4"]) == 0
    assert (out.stat().st_mtime_ns, out.stat().st_ino) == before
    manifest = rows(Path("out"))
    assert manifest["data/a/clip.mp4"]["skipped"] is True
    assert manifest["data/b/clip.mp4"]["status"] == "ok"
    # other settings into the same folder: an error row, the old output untouched
    assert main(["extract", *ARGS, "--workers", "0", "--output", "out", "--window", "2", "data/a"]) == 1
    assert (out.stat().st_mtime_ns, out.stat().st_ino) == before
    assert "other settings" in rows(Path("out"))["data/a/clip.mp4"]["error"]


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
    with pytest.raises(KeyboardInterrupt):
        main(["extract", *ARGS, "--workers", "0", "--output", "out", "data/a"])
    assert not Path("out/data/a/clip.mp4.safetensors").exists()
    assert [p.name for p in Path("out/data/a").iterdir()] == [f".clip.mp4.safetensors.tmp-{finished.pid}-0123abcd"]
    monkeypatch.setattr(ex, "write_features", real)
    assert main(["extract", *ARGS, "--workers", "0", "--output", "out", "data/a"]) == 0
    assert [p.name for p in Path("out/data/a").iterdir()] == ["clip.mp4.safetensors"]


def test_outputs_get_the_umask_permissions(videos):
    """safetensors writes through a 0o600 temporary file; outputs must get what the umask gives any new file."""
    old = os.umask(0o022)
    try:
        assert main(["extract", *ARGS, "--workers", "0", "--output", "out", "data/a"]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat("out/data/a/clip.mp4.safetensors").st_mode) == 0o644


def test_sliding_windows_and_tokens_with_worker_processes(videos, checkpoint):
    model, ckpt = checkpoint
    code = main(["extract", *ARGS, "--checkpoint", str(ckpt), "--workers", "2", "--batch-size", "2",
                 "--window", "5", "--stride", "3", "--tokens", "--output", "out", "data/a/clip.mp4"])
    assert code == 0
    feats = load_file("out/data/a/clip.mp4.safetensors")
    starts = window_starts(12, 5, 3)
    assert starts == [0, 3, 6, 7]  # the last window ends at the last frame (11): the tail is covered
    assert feats["window_frames"].tolist() == [[s, s + 5] for s in starts]
    assert feats["pooled"].shape == (4, 32) and feats["tokens"].shape == (4, 1 + 4 * 16, 64)
    # window 1 (frames 3..8) by hand: middle frame of 4 segments of 5 frames -> 3 + [0, 1, 2, 3]
    frames = read_frames("data/a/clip.mp4", indices=[3, 4, 5, 6])
    expected = model(CenterCropTransform(56)(frames)[None]).pooled[0]
    torch.testing.assert_close(feats["pooled"][1], expected, rtol=1e-4, atol=1e-5)
    with safe_open("out/data/a/clip.mp4.safetensors", "pt") as f:
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


def test_outputs_mirror_relative_and_absolute_paths(tmp_path):
    out = tmp_path / "o"
    assert output_path(out, Path("a/b/x.mp4")) == out / "a/b/x.mp4.safetensors"
    assert output_path(out, Path("a/x.webm")) != output_path(out, Path("a/x.mp4"))
    assert output_path(out, Path("/data/v/x.mp4")) == out / "data/v/x.mp4.safetensors"


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
    feats = load_file("out/data/b/clip.mp4.safetensors")
    clip = read_clip("data/b/clip.mp4", 4, 56, transform=ResizeTransform(56, mean=CLIP_MEAN, std=CLIP_STD))
    torch.testing.assert_close(feats["pooled"], model(clip[None]).pooled[0], rtol=1e-4, atol=1e-5)
    imagenet = model(read_clip("data/b/clip.mp4", 4, 56)[None]).pooled[0]
    assert not torch.allclose(feats["pooled"], imagenet, rtol=1e-3, atol=1e-4)  # the statistics mattered


def test_folders_are_searched_with_the_shared_rules_and_passed_over_links_reported(videos, capsys):
    """One suffix list for every tool (iv2_data.find_media); symlinked folders and dangling links are not read
    but said, so that a run that found nothing is not silent about why."""
    only = videos / "only"
    only.mkdir()
    os.symlink(videos / "data" / "a", only / "linked")
    os.symlink(videos / "gone.mp4", only / "dangling.mp4")
    (only / "song.m4a").write_bytes(b"not a video")  # audio: not an extraction input
    assert main(["extract", *ARGS, "--workers", "0", "--output", "out", "only"]) == 0
    err = capsys.readouterr().err
    assert "linked: a symbolic link to a folder" in err and "dangling.mp4: a dangling symbolic link" in err
    assert not Path("out/manifest.jsonl").read_text().strip()


def test_extract_opens_media_only_through_iv2_data():
    """iv2_data.open_media is the one place media is opened for reading; extraction decodes through it."""
    import inspect

    import iv2_encoders.extract as ex

    source = inspect.getsource(ex)
    assert "av.open" not in source and "import av" not in source and "decord" not in source
