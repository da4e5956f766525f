"""atomic_write (complete or absent, umask permissions, recognisable leftovers, kill -9) and JsonlManifest."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from iv2_data import files as files_module
from iv2_data.files import JsonlManifest, atomic_write, remove_leftovers


@pytest.fixture
def dead_pid() -> int:
    """The pid of a process that has exited (a writer killed long ago)."""
    process = subprocess.Popen([sys.executable, "-c", ""])
    process.wait()
    return process.pid


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def with_umask(mask: int, action):
    old = os.umask(mask)
    try:
        return action()
    finally:
        os.umask(old)


def test_file_object_write_is_complete_and_has_the_umask_permissions(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.json"
    for mask, expected in ((0o022, 0o644), (0o077, 0o600), (0o002, 0o664)):
        target.unlink(missing_ok=True)

        def write() -> None:
            with atomic_write(target, "w", encoding="utf-8") as sink:
                json.dump({"a": 1}, sink)

        with_umask(mask, write)
        assert json.loads(target.read_text()) == {"a": 1}
        assert mode_of(target) == expected, oct(mode_of(target))
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.json"]


def test_failed_write_keeps_the_previous_file_and_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"previous")
    with pytest.raises(RuntimeError, match="writer failed"), atomic_write(target, "wb") as sink:
        sink.write(b"half of the new")
        raise RuntimeError("writer failed")
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_path_writers_safetensors_and_torch_save(tmp_path: Path) -> None:
    """Writers that want a path: the temporary path keeps the target's name (suffix-sensitive writers work),
    safetensors' 0o600 temporary file ends up with the umask's permissions."""
    from safetensors.torch import load_file, save_file

    weights = tmp_path / "model.safetensors"

    def write() -> None:
        with atomic_write(weights) as partial:
            assert partial.name == "model.safetensors" and partial.parent != tmp_path
            save_file({"w": torch.arange(4.0)}, str(partial))
        with atomic_write(tmp_path / "state.pt") as partial:
            torch.save({"step": 3}, partial)

    with_umask(0o022, write)
    assert torch.equal(load_file(str(weights))["w"], torch.arange(4.0))
    assert torch.load(tmp_path / "state.pt", weights_only=True) == {"step": 3}
    assert mode_of(weights) == 0o644 and mode_of(tmp_path / "state.pt") == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors", "state.pt"]
    with pytest.raises(FileNotFoundError, match="wrote nothing"), atomic_write(tmp_path / "never.pt"):
        pass
    assert not (tmp_path / "never.pt").exists()


def test_directory_replaced_as_a_whole(tmp_path: Path) -> None:
    target = tmp_path / "step_00000010"
    with atomic_write(target, directory=True) as folder:
        (folder / "model.safetensors").write_bytes(b"first")
        (folder / "old_only.pt").write_bytes(b"x")
    with pytest.raises(KeyboardInterrupt), atomic_write(target, directory=True) as folder:
        (folder / "model.safetensors").write_bytes(b"broken")
        raise KeyboardInterrupt
    assert (target / "model.safetensors").read_bytes() == b"first"  # a failed write changes nothing
    with atomic_write(target, directory=True) as folder:
        (folder / "model.safetensors").write_bytes(b"second")
    assert sorted(p.name for p in target.iterdir()) == ["model.safetensors"]
    assert (target / "model.safetensors").read_bytes() == b"second"
    assert [p.name for p in tmp_path.iterdir()] == ["step_00000010"]


def test_leftovers_of_dead_writers_are_removed_live_ones_kept(tmp_path: Path, dead_pid: int) -> None:
    (tmp_path / "a.safetensors").write_bytes(b"done")
    dead_file = tmp_path / f".a.safetensors.tmp-{dead_pid}-0123abcd"
    dead_file.write_bytes(b"half")
    dead_folder = tmp_path / f".b.mp4.tmp-{dead_pid}-89abcdef"
    dead_folder.mkdir()
    (dead_folder / ".tmpXYZ").write_bytes(b"safetensors' own")
    live = tmp_path / f".c.json.tmp-{os.getpid()}-00000000"  # a write in progress in this process
    live.write_bytes(b"{")
    unrelated = tmp_path / ".hidden.tmp-notes"
    unrelated.write_text("mine")
    # a directory swap cut between its two renames: the previous version must come back
    previous = tmp_path / f".step_5.old-{dead_pid}-11111111"
    previous.mkdir()
    (previous / "model.safetensors").write_bytes(b"complete")
    assert remove_leftovers(tmp_path, "a.safetensors") == [dead_file]
    assert dead_folder.exists()
    removed = remove_leftovers(tmp_path)
    assert set(removed) == {dead_folder, previous}
    assert (tmp_path / "step_5" / "model.safetensors").read_bytes() == b"complete"
    assert live.exists() and unrelated.exists() and (tmp_path / "a.safetensors").read_bytes() == b"done"


def test_kill_9_mid_write_leaves_no_target_and_a_removable_leftover(tmp_path: Path) -> None:
    target = tmp_path / "features.safetensors"
    # files.py is loaded on its own (it imports nothing of iv2_data): the package would import torch, slowly.
    code = (
        "import importlib.util, sys, time\n"
        "spec = importlib.util.spec_from_file_location('files', sys.argv[2])\n"
        "files = importlib.util.module_from_spec(spec); spec.loader.exec_module(files)\n"
        "with files.atomic_write(sys.argv[1], 'wb') as sink:\n"
        "    sink.write(b'x' * 100000); sink.flush()\n"
        "    print('writing', flush=True)\n"
        "    time.sleep(120)\n"
    )
    module = Path(files_module.__file__)
    writer = subprocess.Popen([sys.executable, "-c", code, str(target), str(module)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "writing"
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
    finally:
        writer.kill()
    assert not target.exists()
    (leftover,) = tmp_path.iterdir()
    assert leftover.name.startswith(".features.safetensors.tmp-")
    assert remove_leftovers(tmp_path) == [leftover] and not list(tmp_path.iterdir())


def test_jsonl_manifest_keyed_rows_latest_wins_and_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "manifest.jsonl"
    with JsonlManifest(path, key="input") as manifest:
        manifest.append({"input": "a.mp4", "status": "error"})
        manifest.append({"input": "b.mp4", "status": "ok"})
        manifest.append({"input": "a.mp4", "status": "ok"})
    again = JsonlManifest(path, key="input")
    assert "a.mp4" in again and again.get("a.mp4")["status"] == "ok" and len(again) == 2
    assert [r["input"] for r in again] == ["a.mp4", "b.mp4"]
    again.compact()
    assert [json.loads(line) for line in path.read_text().splitlines()] == [
        {"input": "a.mp4", "status": "ok"},
        {"input": "b.mp4", "status": "ok"},
    ]
    with pytest.raises(KeyError, match="input"):
        again.append({"status": "ok"})


def test_a_torn_last_line_is_skipped_and_never_glued_to_the_next_row(tmp_path: Path) -> None:
    """A kill cuts the last line short; the next row must start on its own line, or both are lost."""
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo')
    log = JsonlManifest(path)
    assert log.rows == [{"step": 1, "loss": 2.0}] and log.unreadable_lines == 1
    log.append({"step": 2, "loss": 1.5})
    log.close()
    reread = JsonlManifest(path)
    assert reread.rows == [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}] and reread.unreadable_lines == 1
    reread.rewrite([r for r in reread.rows if r["step"] <= 1])  # e.g. resuming at step 1
    assert JsonlManifest(path).rows == [{"step": 1, "loss": 2.0}]
    assert path.read_text() == '{"step": 1, "loss": 2.0}\n'


def test_rows_holding_unicode_line_separators_stay_one_row(tmp_path: Path) -> None:
    path = tmp_path / "captions.jsonl"
    with JsonlManifest(path, key="clip") as manifest:
        manifest.append({"clip": "a.mp4", "caption": "line\u2028separator and caf\u00e9"})
    assert JsonlManifest(path, key="clip").get("a.mp4")["caption"] == "line\u2028separator and caf\u00e9"


def test_file_sha256_is_the_content_hash_remembered_by_path_size_and_time(tmp_path: Path, monkeypatch) -> None:
    import hashlib

    from iv2_data.files import file_sha256

    monkeypatch.setenv("IV2_CACHE_DIR", str(tmp_path / "cache"))
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"first weights" * 1000)
    assert file_sha256(weights) == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert (tmp_path / "cache" / "sha256.json").is_file()

    reads = []
    real_open = open

    def counting_open(file, *args, **kwargs):
        if os.fspath(file) == os.path.realpath(weights):
            reads.append(file)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", counting_open)
    link = tmp_path / "other-spelling.bin"
    link.symlink_to(weights)
    assert file_sha256(link) == file_sha256(tmp_path / "." / "w.bin") == hashlib.sha256(b"first weights" * 1000).hexdigest()
    assert reads == []  # another spelling of an unchanged file: not read again

    weights.write_bytes(b"other weights" * 1000)  # same size, rewritten in place: a new time
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    assert file_sha256(weights) == hashlib.sha256(b"other weights" * 1000).hexdigest()
    assert len(reads) == 1
    monkeypatch.setenv("IV2_CACHE_DIR", str(weights))  # a cache that cannot be written is ignored
    assert file_sha256(weights, cache=True) == hashlib.sha256(b"other weights" * 1000).hexdigest()
