"""Where a run keeps its checkpoints: pure path logic, importable without torch (the CLI uses it)."""

from __future__ import annotations

import re
from pathlib import Path

_STEP_DIR = re.compile(r"^step_(\d+)$")


def checkpoint_dir(output_dir: str | Path, step: int) -> Path:
    """``OUTPUT/checkpoints/step_XXXXXXXX`` for ``step``."""
    return Path(output_dir) / "checkpoints" / f"step_{step:08d}"


def checkpoint_step(path: str | Path) -> int | None:
    """The step a ``step_XXXXXXXX`` directory holds, or None for another name."""
    match = _STEP_DIR.match(Path(path).name)
    return int(match.group(1)) if match else None


def list_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``output_dir/checkpoints``, oldest first."""
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(step, p) for p in root.iterdir() if p.is_dir() and (step := checkpoint_step(p)) is not None]
    return sorted(found)


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint, or None."""
    found = list_checkpoints(output_dir)
    return found[-1][1] if found else None
