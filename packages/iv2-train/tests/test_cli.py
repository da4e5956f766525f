"""The iv2-train command: help without torch, show / plot on a real run folder, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from iv2_train import ResumableBatches, TrainConfig, Trainer, load_config
from iv2_train.cli import main


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run")
    cfg = load_config(TrainConfig, "tiny-cpu", [
        f"output_dir={out}", "max_steps=4", "checkpoint.every_steps=2", "logging.progress=none",
        "logging.plots=false", "evaluation.every_steps=2"])  # fmt: skip
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    data = ResumableBatches([(torch.randn(3), torch.randn(())) for _ in range(16)], batch_size=4)

    class Wrapped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = model

        def forward(self, batch):
            x, y = batch
            return nn.functional.mse_loss(self.lin(x).squeeze(-1), y)

    Trainer(Wrapped(), data, cfg, evaluate=lambda t: {"score": float(t.step)}).fit()
    return out


def test_help_is_fast_shows_defaults_and_loads_no_torch() -> None:
    code = (
        "import sys\n"
        "from iv2_train.cli import main\n"
        "for argv in (['--help'], ['estimate', '--help'], ['show', '--help'], ['plot', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print('TORCH_LOADED' if 'torch' in sys.modules else 'NO_TORCH')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("NO_TORCH")
    assert "(default: bf16)" in out and "(default: 80.0)" in out and "(default: RUN/plots)" in out
    assert "show" in out and "plot" in out and "estimate" in out
    assert "``" not in out  # no raw markup


def test_python_dash_m_runs_the_same_command() -> None:
    out = subprocess.run([sys.executable, "-m", "iv2_train", "estimate", "--params", "1e9"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "model state alone fits in 80 GiB" in out


def test_show_reports_step_checkpoints_and_last_metrics(finished_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", str(finished_run)]) == 0
    out = capsys.readouterr().out
    assert "4 checkpointed, 4 logged, of 4" in out
    assert "step_00000002" in out and "step_00000004" in out
    assert "final/model.safetensors" in out
    assert "last eval        step 4: eval/score 4" in out
    assert main(["show", str(finished_run), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["checkpoint_step"] == 4 and summary["max_steps"] == 4
    assert [c["step"] for c in summary["checkpoints"]] == [2, 4] and summary["checkpoints"][0]["bytes"] > 0
    assert summary["last_metrics"]["step"] == 4 and "loss" in summary["last_metrics"]
    assert summary["last_eval"] == {"step": 4, "eval/score": 4.0}


def test_plot_redraws_the_run(finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plot", str(finished_run), "--output", str(tmp_path / "png")]) == 0
    names = sorted(p.name for p in (tmp_path / "png").glob("*.png"))
    assert {"loss.png", "lr.png", "eval_score.png"} <= set(names)
    assert "wrote" in capsys.readouterr().out


def test_missing_run_and_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", str(tmp_path / "nowhere")]) == 1
    assert "run folder not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["plot", str(tmp_path / "empty")]) == 1
    assert "metrics.jsonl not found" in capsys.readouterr().err
    assert main(["show", str(tmp_path / "empty")]) == 0  # an empty run folder is shown as such
    assert "checkpoint       none" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["estimate"])
    assert exit_info.value.code == 2 and "--params" in capsys.readouterr().err
