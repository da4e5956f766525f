"""Build each package alone, as it will be published: ``uv build --package NAME --no-sources``.

    python ci/build.py [NAME ...] [--out-dir dist]

``--no-sources`` ignores the workspace's path sources, so a package that only builds thanks to its
neighbours' folders fails here instead of on PyPI.
"""

from __future__ import annotations

import argparse

from _common import ROOT, packages, run, uv


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", help="distribution names (default: all)")
    parser.add_argument("--out-dir", default=str(ROOT / "dist"))
    args = parser.parse_args(argv)
    known = packages()
    for name in args.names or list(known):
        if name not in known:
            parser.error(f"unknown package {name!r}; known: {sorted(known)}")
        run(uv(), "build", "--package", name, "--no-sources", "--out-dir", args.out_dir, cwd=ROOT)


if __name__ == "__main__":
    main()
