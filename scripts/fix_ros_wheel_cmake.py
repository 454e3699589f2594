"""Point the ROS 2 wheels' CMake configs at this interpreter's include directories.

The PyPI wheels of ROS 2 Kilted were built in a manylinux image, and some of their installed
CMake configs (under <prefix>/share) name that image's Python and numpy include directories
(/opt/python/cp311-cp311/...). Configuring a package that generates messages fails until those
paths exist. This rewrites them, in place and idempotently, to the include directories of the
interpreter running this script; it only touches files under the given prefix.

Usage: python scripts/fix_ros_wheel_cmake.py PREFIX
"""

from __future__ import annotations

import sys
import sysconfig
from pathlib import Path

import numpy

BUILD_IMAGE_PYTHON = "/opt/python/cp311-cp311/include/python3.11"
BUILD_IMAGE_NUMPY = "/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include"


def rewrite(prefix: Path) -> int:
    """Rewrite every CMake file under prefix/share; return how many files changed."""
    replacements = {
        BUILD_IMAGE_PYTHON: sysconfig.get_paths()["include"],
        BUILD_IMAGE_NUMPY: numpy.get_include(),
    }
    changed = 0
    for path in sorted((prefix / "share").rglob("*.cmake")):
        text = path.read_text(encoding="utf-8")
        new = text
        for old, repl in replacements.items():
            new = new.replace(old, repl)
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed += 1
    return changed


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    prefix = Path(sys.argv[1])
    if not (prefix / "share").is_dir():
        print(f"error: {prefix}/share does not exist; is {prefix} a ROS prefix?", file=sys.stderr)
        return 1
    changed = rewrite(prefix)
    print(f"fix_ros_wheel_cmake: rewrote build-image include paths in {changed} file(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
