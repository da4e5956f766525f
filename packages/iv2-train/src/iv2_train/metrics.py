"""Metrics (JSONL, TensorBoard when installed), progress bars on rank 0 and PNG plots of the curves."""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger("iv2_train")


EVAL_PREFIX = "eval/"


class MetricsLogger:
    """Appends one JSON object per logged step to ``output_dir/metrics.jsonl`` (rank 0 only), through
    :class:`iv2_data.JsonlManifest`: each row is flushed as it is logged, and a line cut short by a killed run
    is skipped on reading and never glued to the next row.

    A logger only appends: several loggers on one folder (the Trainer's, a stage's evaluation script's)
    share the file. With ``resume_step`` the records after that step (written by a run that died after its
    last checkpoint) are dropped first, by an atomic rewrite, so the file reads as one uninterrupted run; the
    Trainer passes the step it resumes from (0 for a fresh start).
    """

    def __init__(
        self,
        output_dir: str | Path,
        *,
        enabled: bool = True,
        tensorboard: bool = True,
        resume_step: int | None = None,
    ) -> None:
        self.enabled = enabled
        self.path = Path(output_dir) / "metrics.jsonl"
        self._tb: Any = None
        self._rows: Any = None
        if not enabled:
            return
        from iv2_data.files import JsonlManifest, remove_leftovers

        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_leftovers(self.path.parent, self.path.name)  # a rewrite killed midway
        self._rows = JsonlManifest(self.path)
        if resume_step is not None and self.path.exists():
            self._rows.rewrite([r for r in self._rows.rows if _step(r) <= resume_step])
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional: JSONL and plots still work
                log.info("tensorboard is not installed; metrics go to %s only", self.path)
            else:
                purge = None if resume_step is None else resume_step + 1
                self._tb = SummaryWriter(log_dir=str(Path(output_dir) / "tensorboard"), purge_step=purge)

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        record = {"step": int(step), **{k: _jsonable(v) for k, v in metrics.items()}}
        self._rows.append(record)
        if self._tb is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._tb.add_scalar(key, value, step)

    def close(self) -> None:
        if self._rows is not None:
            self._rows.close()
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _step(record: Mapping[str, Any]) -> int:
    try:
        return int(record.get("step", 0))
    except (TypeError, ValueError):
        return 0


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf; keep them visible as strings
    return value


def is_eval_record(record: Mapping[str, Any]) -> bool:
    """A row written by the Trainer's evaluation (its keys start with ``eval/``)."""
    return any(key.startswith(EVAL_PREFIX) for key in record)


def is_train_record(record: Mapping[str, Any]) -> bool:
    """A row written for an optimizer step (it has ``loss`` and ``lr``)."""
    return "loss" in record and "lr" in record


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file (a torn line from a killed run is skipped)."""
    from iv2_data.files import JsonlManifest

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"metrics file not found: {path}")
    return JsonlManifest(path).rows


class Progress:
    """A progress bar over optimizer steps on stderr, shown on rank 0 only: rich, tqdm, or nothing."""

    def __init__(self, total: int, initial: int = 0, *, kind: str = "rich", enabled: bool = True) -> None:
        self.kind = kind if enabled else "none"
        self._bar: Any = None
        self._task: Any = None
        if self.kind == "rich":
            try:
                from rich.console import Console
                from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
                from rich.progress import Progress as RichProgress
            except ImportError:
                self.kind = "tqdm"
            else:
                self._bar = RichProgress(
                    TextColumn("train"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TimeRemainingColumn(),
                    TextColumn("{task.fields[info]}"),
                    transient=False,
                    console=Console(stderr=True),  # stdout stays the program's own (as tqdm's bar)
                )
                self._task = self._bar.add_task("train", total=total, completed=initial, info="")
                self._bar.start()
        if self.kind == "tqdm":
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=initial, desc="train", dynamic_ncols=True, file=sys.stderr)

    def update(self, step: int, info: Mapping[str, float] | None = None) -> None:
        text = "  ".join(f"{k} {v:.4g}" for k, v in (info or {}).items() if isinstance(v, (int, float)))
        if self.kind == "rich":
            self._bar.update(self._task, completed=step, info=text)
        elif self.kind == "tqdm":
            self._bar.n = step
            self._bar.set_postfix_str(text, refresh=False)
            self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop() if self.kind == "rich" else self._bar.close()
            self._bar = None


def _metric_series(metrics_path: str | Path) -> dict[str, tuple[list[float], list[float]]]:
    """Every numeric metric of ``metrics.jsonl``: its steps and values (what a plot draws)."""
    series: dict[str, tuple[list[float], list[float]]] = {}
    for record in read_metrics(metrics_path):
        for key, value in record.items():
            if key == "step" or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            xs, ys = series.setdefault(key, ([], []))
            xs.append(record["step"])
            ys.append(value)
    return series


def plot_metrics(metrics_path: str | Path, output_dir: str | Path) -> list[Path]:
    """One PNG per numeric metric in ``metrics.jsonl`` (against step); returns the files written."""
    import matplotlib

    matplotlib.use("Agg")  # no display on training nodes
    import matplotlib.pyplot as plt

    series = _metric_series(metrics_path)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    # One figure and one line, given each metric's points in turn, with fixed margins and title place: a new
    # figure per metric with tight_layout (an extra draw to measure the labels) took 46 ms a plot against 18 ms
    # (benchmarks/train_plots.py), most of the demo's report time; fresh ticks and the title's automatic
    # placement were most of the rest.
    fig, ax = plt.subplots(figsize=(6, 3.5))
    fig.subplots_adjust(left=0.13, right=0.97, bottom=0.14, top=0.9)
    (line,) = ax.plot([], [], lw=1.2, markersize=3)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    try:
        for key, (xs, ys) in sorted(series.items()):
            line.set_data(xs, ys)
            # Evaluations are few points: mark them, or a single one would not show at all.
            line.set_marker("o" if len(xs) <= 50 else "None")
            log_scale = key.startswith("loss") and min(ys) > 0 and max(ys) / max(min(ys), 1e-12) > 100
            ax.set_yscale("log" if log_scale else "linear")
            ax.relim()
            ax.autoscale_view()
            ax.set_title(key, y=1.02)
            path = out / (key.replace("/", "_") + ".png")
            fig.savefig(path, dpi=100)
            written.append(path)
    finally:
        plt.close(fig)
    return written
