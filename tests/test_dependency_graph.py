"""The package graph of DESIGN.md, read from the installed distributions' metadata: dependencies point one
way, stage packages never depend on each other, and every package's __version__ matches its metadata."""

import importlib
import importlib.metadata as md
import re

import pytest

ALLOWED = {  # iv2 packages each package may depend on (DESIGN.md)
    "iv2-kernels": set(),
    "iv2-data": set(),
    "iv2-encoders": {"iv2-data", "iv2-kernels"},
    "iv2-train": {"iv2-data"},  # its atomic writes and JSONL logs: iv2_data.files
    "iv2-distill": {"iv2-encoders", "iv2-data", "iv2-kernels", "iv2-train"},
    "iv2-align": {"iv2-encoders", "iv2-data", "iv2-kernels", "iv2-train"},
    "iv2-chat": {"iv2-encoders", "iv2-data", "iv2-kernels", "iv2-train"},
}
HEAVY_ONLY_IN = {  # third-party packages that only these may require
    "deepspeed": {"iv2-train"},
    "transformers": {"iv2-distill", "iv2-align", "iv2-chat"},
    "peft": {"iv2-chat"},
    "flash-attn": set(),  # never a required dependency, only the `flash` extra
}


def requirements(dist: str) -> dict[str, set[str]]:
    """name -> extras-markers it is required under ('' = always)."""
    out: dict[str, set[str]] = {}
    for req in md.requires(dist) or []:
        name = re.split(r"[\s\[<>=!~;(]", req, maxsplit=1)[0].lower().replace("_", "-")
        marker = req.split(";", 1)[1] if ";" in req else ""
        out.setdefault(name, set()).add("extra" if "extra ==" in marker else "")
    return out


@pytest.mark.parametrize("dist", sorted(ALLOWED))
def test_iv2_dependencies_point_one_way(dist):
    always = {n for n, where in requirements(dist).items() if "" in where and n.startswith("iv2")}
    assert always <= ALLOWED[dist], f"{dist} depends on {sorted(always - ALLOWED[dist])}"


@pytest.mark.parametrize("dist", sorted(ALLOWED))
def test_heavy_dependencies_stay_where_they_are_needed(dist):
    always = {n for n, where in requirements(dist).items() if "" in where}
    for heavy, owners in HEAVY_ONLY_IN.items():
        if dist not in owners:
            assert heavy not in always, f"{dist} must not require {heavy}"


def test_flash_attn_is_only_an_extra_of_the_encoders():
    assert requirements("iv2-encoders").get("flash-attn") == {"extra"}


def test_root_project_depends_on_every_package():
    assert set(ALLOWED) <= set(requirements("iv2-suite"))


@pytest.mark.parametrize("dist", sorted(ALLOWED))
def test_version_attribute_comes_from_metadata(dist):
    module = importlib.import_module(dist.replace("-", "_"))
    assert module.__version__ == md.version(dist)
