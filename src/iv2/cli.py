"""``iv2``: the umbrella command line. Sub-commands hand over to the package command lines.

    iv2 extract ...     = iv2-encoders extract ...   (video features)
    iv2 models          = iv2-encoders list          (registered encoder names)
    iv2 versions        installed iv2 package versions
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import sys

PACKAGES = ("iv2-suite", "iv2-kernels", "iv2-data", "iv2-encoders", "iv2-train", "iv2-distill", "iv2-align", "iv2-chat")


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="iv2", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["extract", "models", "versions"])
    parser.add_argument("args", nargs=argparse.REMAINDER)
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if argv else 2
    ns = parser.parse_args(argv[:1])
    rest = argv[1:]
    if ns.command in ("extract", "models"):
        from iv2_encoders.cli import main as encoders_main

        return encoders_main(["extract", *rest] if ns.command == "extract" else ["list"])
    for name, version in versions().items():
        print(f"{name:14s} {version or 'not installed'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
