"""The standard ROS flow: `colcon build` of this package against a ROS 2 prefix installs the
messages, the Python package, the launch/config/rviz files and the node executables."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ros_support import REPO

VENV = Path(sys.prefix)


def _declared_nodes() -> list[str]:
    """Node executables that CMakeLists.txt installs (its VLJEPA_NODES list)."""
    match = re.search(r"set\(VLJEPA_NODES([^)]*)\)", (REPO / "CMakeLists.txt").read_text())
    assert match, "CMakeLists.txt has no set(VLJEPA_NODES ...)"
    return match.group(1).split()


@pytest.fixture(scope="module")
def colcon_install(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A colcon workspace holding this package as src/vljepa_ros, built once for the module."""
    colcon = shutil.which("colcon", path=str(VENV / "bin"))
    if colcon is None:
        pytest.fail(f"colcon is not installed in {VENV}; run scripts/setup.sh")
    ws = tmp_path_factory.mktemp("colcon_ws")
    (ws / "src").mkdir()
    (ws / "src" / "vljepa_ros").symlink_to(REPO, target_is_directory=True)
    env = dict(os.environ)
    env["AMENT_PREFIX_PATH"] = str(VENV)
    env["CMAKE_PREFIX_PATH"] = str(VENV)
    result = subprocess.run(
        [
            colcon,
            "build",
            "--packages-select",
            "vljepa_ros",
            "--event-handlers",
            "console_direct-",
            "--cmake-args",
            f"-DPython3_EXECUTABLE={VENV / 'bin' / 'python'}",
            "-DBUILD_TESTING=OFF",
        ],
        cwd=ws,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return ws / "install"


def test_colcon_installs_messages_and_python_package(colcon_install: Path) -> None:
    """Generated message modules and the package's own modules sit side by side."""
    site = colcon_install / "vljepa_ros" / "lib" / "python3.11" / "site-packages" / "vljepa_ros"
    for name in ("semantic_embedding", "state_label", "text_event", "embedding_info"):
        assert (site / "msg" / f"_{name}.py").is_file(), name
    for module in (
        "__init__.py",
        "cli.py",
        "model/__init__.py",
        "stream/__init__.py",
        "nodes/__init__.py",
    ):
        assert (site / module).is_file(), module
    share = colcon_install / "vljepa_ros" / "share" / "vljepa_ros"
    for name in ("SemanticEmbedding", "StateLabel", "TextEvent", "EmbeddingInfo"):
        assert (share / "msg" / f"{name}.msg").is_file(), name
    assert (share / "package.xml").is_file()


def test_colcon_installs_launch_config_and_rviz(colcon_install: Path) -> None:
    """Every file under launch/, config/ and rviz/ is installed under share/vljepa_ros."""
    share = colcon_install / "vljepa_ros" / "share" / "vljepa_ros"
    for folder in ("launch", "config", "rviz"):
        for src in (REPO / folder).rglob("*"):
            if src.is_file():
                assert (share / src.relative_to(REPO)).is_file(), src


def test_colcon_installs_node_executables(colcon_install: Path) -> None:
    """Each node named in CMakeLists.txt is an executable under lib/vljepa_ros (ros2 run)."""
    for node in _declared_nodes():
        exe = colcon_install / "vljepa_ros" / "lib" / "vljepa_ros" / node
        assert exe.is_file(), exe
        assert os.access(exe, os.X_OK), exe
        assert (REPO / "vljepa_ros" / "nodes" / f"{node}.py").is_file(), node


def test_sourced_workspace_imports_messages_from_install(colcon_install: Path) -> None:
    """After `source install/setup.bash`, Python finds vljepa_ros.msg in the install space."""
    script = (
        f"source {colcon_install / 'setup.bash'} && "
        f"{VENV / 'bin' / 'python'} -c 'import vljepa_ros.msg as m, vljepa_ros.cli; "
        "print(m.__file__); print(m.SemanticEmbedding().embedding.typecode)'"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AMENT_", "COLCON_"))}
    env.pop("PYTHONPATH", None)
    result = subprocess.run(
        ["bash", "-c", script], cwd="/", env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    msg_file, typecode = result.stdout.split()[-2:]
    assert msg_file.startswith(str(colcon_install)), msg_file
    assert typecode == "f"


def test_installed_node_executable_runs_from_the_sourced_workspace(colcon_install: Path) -> None:
    """`ros2 run`'s target starts with the build's Python and reports a bad checkpoint."""
    exe = colcon_install / "vljepa_ros" / "lib" / "vljepa_ros" / "perception_node"
    script = (
        f"source {colcon_install / 'setup.bash'} && "
        f"{exe} --ros-args -p checkpoint:=/no/such/checkpoint"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AMENT_", "COLCON_"))}
    env.pop("PYTHONPATH", None)
    result = subprocess.run(
        ["bash", "-c", script], cwd="/", env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 2, (result.stdout + result.stderr)[-3000:]
    assert "/no/such/checkpoint" in result.stderr
