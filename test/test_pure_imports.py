"""The pure-Python library imports with ROS made unimportable (nodes are the only ROS users)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from ros_support import REPO, python_env

# Everything under vljepa_ros/ except the ROS adapters in nodes/.
PURE = sorted(
    p.relative_to(REPO).with_suffix("").as_posix().replace("/", ".").removesuffix(".__init__")
    for p in (REPO / "vljepa_ros").rglob("*.py")
    if "nodes" not in p.relative_to(REPO / "vljepa_ros").parts
)
GROUPS = sorted({".".join(name.split(".")[:2]) for name in PURE})

BLOCKER = """
import importlib.abc, sys

class BlockRos(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if (top in {"rclpy", "rosidl_runtime_py", "builtin_interfaces", "launch", "launch_ros"}
                or top.endswith("_msgs") or name == "vljepa_ros.msg"):
            raise ImportError(f"{name} is blocked: the pure library must not import ROS")
        return None

sys.meta_path.insert(0, BlockRos())
for name in sys.argv[1:]:
    __import__(name)
leaked = sorted(m for m in sys.modules if m.split(".")[0] == "rclpy" or m.endswith("_msgs"))
assert not leaked, leaked
print("imported", len(sys.argv) - 1, "modules")
"""


def test_blocker_really_blocks_rclpy() -> None:
    """The import blocker used below makes `import rclpy` fail (so the checks can fail)."""
    result = subprocess.run(
        [sys.executable, "-c", BLOCKER, "rclpy"],
        env=python_env(),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode != 0
    assert "rclpy is blocked" in result.stderr


@pytest.mark.parametrize("group", GROUPS)
def test_pure_modules_import_without_ros(group: str) -> None:
    """Every module of the group imports while rclpy and all *_msgs packages are unimportable."""
    modules = [m for m in PURE if ".".join(m.split(".")[:2]) == group]
    result = subprocess.run(
        [sys.executable, "-c", BLOCKER, *modules],
        env=python_env(),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"imported {len(modules)} modules" in result.stdout
