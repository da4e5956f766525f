"""Turn a release tag into the package to publish: ``iv2-encoders-v0.2.0`` -> ``iv2-encoders``.

    python ci/release_tag.py TAG      prints the distribution name; fails when the tag's version differs
                                      from the package's pyproject version or names no package
"""

from __future__ import annotations

import re
import sys

from _common import packages, version

TAG = re.compile(r"^(?P<name>iv2(?:-[a-z]+)?)-v(?P<version>\d+\.\d+\.\d+(?:[.-]?(?:a|b|rc|post|dev)\d+)?)$")


def package_for_tag(tag: str) -> str:
    match = TAG.match(tag.removeprefix("refs/tags/"))
    if not match:
        raise ValueError(f"tag {tag!r} is not of the form iv2-<name>-vX.Y.Z")
    name, wanted = match["name"], match["version"]
    if name not in packages():
        raise ValueError(f"tag {tag!r} names no package; known: {sorted(packages())}")
    if version(name) != wanted:
        raise ValueError(f"tag {tag!r} says {wanted} but {name}'s pyproject.toml says {version(name)}")
    return name


if __name__ == "__main__":
    try:
        print(package_for_tag(sys.argv[1]))
    except (IndexError, ValueError) as err:
        sys.exit(f"release_tag: {err}")
