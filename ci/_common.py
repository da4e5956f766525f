"""Shared helpers of the ci/ scripts: where the packages are and how to call uv."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def uv() -> str:
    exe = os.environ.get("UV") or shutil.which("uv")
    if not exe:
        sys.exit("uv is not installed: pip install uv")
    return exe


def packages() -> dict[str, Path]:
    """Distribution name -> project folder, for the root project and every workspace member."""
    out = {"iv2-suite": ROOT}
    for pyproject in sorted((ROOT / "packages").glob("*/pyproject.toml")):
        out[tomllib.loads(pyproject.read_text())["project"]["name"]] = pyproject.parent
    return out


def module_name(name: str) -> str:
    """The importable top-level module a distribution ships (``iv2-suite`` ships ``iv2``)."""
    return "iv2" if name == "iv2-suite" else name.replace("-", "_")


def version(name: str) -> str:
    return tomllib.loads((packages()[name] / "pyproject.toml").read_text())["project"]["version"]


def run(*cmd: str, **kw) -> subprocess.CompletedProcess:
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd, check=True, **kw)
