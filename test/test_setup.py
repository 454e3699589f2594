"""scripts/setup.sh is idempotent: run again on a set-up checkout it checks and changes nothing."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from ros_support import REPO

VENV = Path(sys.prefix)


def _snapshot() -> dict[str, str]:
    """SHA-256 of every file the package's build installs into the venv prefix."""
    roots = [
        VENV / "share" / "vljepa_ros",
        VENV / "include" / "vljepa_ros",
        *VENV.glob("lib/libvljepa_ros*"),
        *VENV.glob("lib/python3.11/site-packages/vljepa_ros*"),
    ]
    files = [p for root in roots for p in ([root] if root.is_file() else root.rglob("*"))]
    return {
        str(p.relative_to(VENV)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in files
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_second_setup_run_changes_nothing() -> None:
    """A re-run installs no package and leaves every installed file of the package identical."""
    before = _snapshot()
    assert any(name.endswith("msg/_semantic_embedding.py") for name in before)
    result = subprocess.run(
        ["bash", "scripts/setup.sh"], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "[setup] dependencies up to date" in out, out
    assert "rewrote build-image include paths in 0 file(s)" in out, out
    assert "installing vljepa_ros (editable)" not in out, out
    after = _snapshot()
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, changed[:10]


def test_ros_extra_requirements_match_the_lock() -> None:
    """The pins a ROS workspace installs by hand are the versions the lock file tested."""
    lock = {
        line.split("==")[0]: line
        for line in (REPO / "requirements" / "lock.txt").read_text().splitlines()
        if "==" in line
    }
    extra = [
        line
        for line in (REPO / "requirements" / "ros-extra.txt").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert extra
    for pin in extra:
        assert lock.get(pin.split("==")[0]) == pin, pin
