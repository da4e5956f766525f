"""Check built distributions before publishing: every wheel and sdist of ``DIST_DIR`` has complete
metadata (name, version matching its pyproject, summary, README as long description, license,
Requires-Python), pins no local paths, carries its own top-level module and nothing else, and its
workspace dependencies are plain names that resolve on PyPI.

    python ci/check_dists.py [DIST_DIR]
"""

from __future__ import annotations

import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

from _common import ROOT, module_name, packages, version


def wheel_metadata(path: Path) -> tuple[dict, list[str]]:
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        meta_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        msg = Parser().parsestr(zf.read(meta_name).decode())
    return msg, names


def check_wheel(path: Path) -> list[str]:
    problems = []
    msg, names = wheel_metadata(path)
    name = msg["Name"]
    where = f"{path.name}"
    if name not in packages():
        return [f"{where}: unknown distribution name {name!r}"]
    if msg["Version"] != version(name):
        problems.append(f"{where}: version {msg['Version']} != pyproject {version(name)}")
    for field in ("Summary", "Requires-Python", "License-Expression"):
        if not msg.get(field):
            problems.append(f"{where}: metadata field {field} is missing")
    if msg.get("Description-Content-Type") != "text/markdown" or len(msg.get_payload() or "") < 50:
        problems.append(f"{where}: README is not the long description")
    for req in msg.get_all("Requires-Dist") or []:
        if "file:" in req or " @ " in req:
            problems.append(f"{where}: requirement pins a local path or URL: {req}")
    module = module_name(name)
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    if tops != {module}:
        problems.append(f"{where}: top-level entries {sorted(tops)}, expected only {module!r}")
    if not any(n.startswith(f"{module}/__init__.py") for n in names):
        problems.append(f"{where}: {module}/__init__.py missing")
    if any("/tests/" in n or n.startswith("tests/") for n in names):
        problems.append(f"{where}: tests are packaged")
    return problems


def check_sdist(path: Path) -> list[str]:
    with tarfile.open(path) as tf:
        names = tf.getnames()
    if not any(n.endswith("/pyproject.toml") and n.count("/") == 1 for n in names):
        return [f"{path.name}: no pyproject.toml at the top"]
    return []


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    dist = Path(argv[0]) if argv else ROOT / "dist"
    wheels, sdists = sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))
    problems = [p for w in wheels for p in check_wheel(w)] + [p for s in sdists for p in check_sdist(s)]
    built = {wheel_metadata(w)[0]["Name"] for w in wheels}
    if not wheels:
        problems.append(f"no wheels in {dist}")
    for line in problems:
        print("FAIL", line)
    print(f"checked {len(wheels)} wheels and {len(sdists)} sdists ({', '.join(sorted(built))}): "
          f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
