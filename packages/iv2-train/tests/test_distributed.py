"""Multi-process tests: two CPU processes under torchrun with gloo (and one DeepSpeed ZeRO run)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from iv2_train import list_checkpoints, read_metrics, read_safetensors

HERE = Path(__file__).parent
pytestmark = [pytest.mark.distributed, pytest.mark.slow]


def torchrun(script: str, *args: str) -> list[str]:
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        str(HERE / script), *args,
    ]  # fmt: skip


def run_env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    return env


def run_ok(cmd: list[str], timeout: float = 240, env: dict[str, str] | None = None) -> str:
    """Run ``cmd`` in its own session; on timeout kill the whole group (torchrun's workers included)."""
    proc = subprocess.Popen(
        cmd, env=env or run_env(), cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"{' '.join(cmd)} timed out after {timeout} s:\n{stderr[-4000:]}")
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{stdout[-3000:]}\n{stderr[-6000:]}"
    return stdout


def test_collectives_two_processes() -> None:
    out = run_ok(torchrun("collectives_run.py"))
    assert out.count(": ok") == 2


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path: Path) -> None:
    # tiny_run's model has a frozen teacher with dropout (left out of checkpoints) that must stay in eval mode
    # (the run fails otherwise) and a frozen tower kept in checkpoints; it evaluates every 4 steps.
    common = ["max_steps=12", "checkpoint.every_steps=3", "checkpoint.keep_last=2", "logging.progress=none",
              "evaluation.every_steps=4"]  # fmt: skip
    straight, broken = tmp_path / "straight", tmp_path / "broken"

    run_ok(torchrun("tiny_run.py", f"output_dir={straight}", *common))

    # Start the same run, let rank 0 hang after step 7 (checkpoint at 6 is on disk), then SIGKILL everything.
    proc = subprocess.Popen(
        torchrun("tiny_run.py", "--pause-at", "7", f"output_dir={broken}", *common),
        env=run_env(), cwd=HERE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not (broken / "paused").exists():
            assert proc.poll() is None, f"run exited early:\n{proc.stderr.read().decode()[-4000:]}"  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "run never reached the pause point"
            time.sleep(0.2)
        # SIGKILL the two workers (torchrun starts each in its own session), then the launcher.
        pids = [int(f.read_text()) for f in sorted((broken / "pids").glob("rank*"))]
        deadline = time.monotonic() + 60
        while len(pids) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
            pids = [int(f.read_text()) for f in sorted((broken / "pids").glob("rank*"))]
        assert len(pids) == 2, "both workers should have reached the pause point"
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert [step for step, _ in list_checkpoints(broken)] == [3, 6]
    assert not (broken / "final").exists()
    assert max(r["step"] for r in read_metrics(broken / "metrics.jsonl")) == 7  # step 7 was lost

    out = run_ok(torchrun("tiny_run.py", f"output_dir={broken}", *common))
    assert "done step=12" in out

    expected = read_metrics(straight / "metrics.jsonl")
    resumed = read_metrics(broken / "metrics.jsonl")
    rows = [(r["step"], "eval/loss" in r) for r in resumed]
    assert rows == [(r["step"], "eval/loss" in r) for r in expected]
    # one row per step and per evaluation (after steps 4, 8, 12): the evaluation of step 8 ran after the resume, once
    assert rows == [(s, e) for s in range(1, 13) for e in ((False, True) if s % 4 == 0 else (False,))]
    for a, b in zip(expected, resumed):
        if "eval/loss" in a:
            assert abs(a["eval/loss"] - b["eval/loss"]) <= 1e-6 and abs(a["eval/mse"] - b["eval/mse"]) <= 1e-6
            continue
        assert abs(a["loss"] - b["loss"]) <= 1e-6, (a["step"], a["loss"], b["loss"])
        assert a["lr"] == b["lr"]
    # Different batches on the two ranks, or the curve would not depend on the data split at all.
    assert len({round(r["loss"], 6) for r in expected if "loss" in r}) == 12
    w_expected = read_safetensors(straight / "final" / "model.safetensors")
    w_resumed = read_safetensors(broken / "final" / "model.safetensors")
    # the teacher is in neither checkpoints nor the export; the frozen tower is in both
    for path in [p / "model.safetensors" for _, p in list_checkpoints(broken)] + [
        broken / "final" / "model.safetensors"
    ]:
        keys = set(read_safetensors(path))
        assert "embed.weight" in keys and "net.0.weight" in keys and not any(k.startswith("teacher.") for k in keys), (
            path
        )
    for name, tensor in w_expected.items():
        assert (tensor - w_resumed[name]).abs().max() <= 1e-6, name
    assert [step for step, _ in list_checkpoints(broken)] == [9, 12]  # keep_last=2


def test_deepspeed_launcher_zero2_cpu_trains_and_resumes(tmp_path: Path) -> None:
    pytest.importorskip("deepspeed")
    env = run_env()
    env["DS_ACCELERATOR"] = "cpu"
    with socket.socket() as sock:  # the launcher's default port may be taken by a neighbour's run
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    launcher = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", "2", "--master_port", port]
    out = run_ok([*launcher, str(HERE / "ds_zero_run.py"), str(tmp_path / "ds"), "2"], timeout=400, env=env)
    assert "ok losses=" in out
    assert (tmp_path / "ds" / "checkpoints" / "step_00000002" / "deepspeed").is_dir()


def test_deepspeed_nonfinite_step_changes_nothing(tmp_path: Path) -> None:
    # ZeRO 1/2/3 in one CPU process: the skipped step leaves weights and AdamW state as they were.
    pytest.importorskip("deepspeed")
    env = run_env()
    env["DS_ACCELERATOR"] = "cpu"
    out = run_ok([sys.executable, str(HERE / "ds_nan_run.py"), str(tmp_path)], timeout=300, env=env)
    assert out.strip().endswith("ok")


def test_usable_cpus_counts_the_affinity_mask_not_the_machine(monkeypatch):
    from iv2_train import usable_cpus

    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {2, 5, 7}, raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.delenv("LOCAL_SIZE", raising=False)
    assert usable_cpus() == usable_cpus(per_process=True) == 3  # e.g. `taskset -c 2,5,7` on a 64-CPU machine
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # torchrun --nproc-per-node 2
    assert usable_cpus() == 3 and usable_cpus(per_process=True) == 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert usable_cpus(per_process=True) == 1  # never 0
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)  # macOS, Windows
    assert usable_cpus() == 64 and usable_cpus(per_process=True) == 16
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    monkeypatch.setenv("LOCAL_SIZE", "8")  # the DeepSpeed launcher's name for it
    assert usable_cpus(per_process=True) == 8
