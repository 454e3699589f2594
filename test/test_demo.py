"""`vljepa demo`: the graph on the simulated camera, recorded to a video and a summary."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
from ros_support import python_env


def test_demo_writes_a_video_a_summary_and_the_events(
    micro_checkpoint: Path, tmp_path: Path
) -> None:
    """A short demo exits 0 and leaves a playable overlay video, a summary PNG and events."""
    out = tmp_path / "demo"
    vljepa = Path(sys.executable).parent / "vljepa"
    result = subprocess.run(
        [str(vljepa), "demo", "--duration", "30", "--checkpoint", str(micro_checkpoint),
         "--out", str(out)],
        cwd=tmp_path, env=python_env(), capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    video = cv2.VideoCapture(str(out / "overlay.mp4"))
    frames = int(video.get(cv2.CAP_PROP_FRAME_COUNT))
    ok, frame = video.read()
    video.release()
    assert ok
    assert frames >= 20
    assert frame.shape[1] == 640
    summary = cv2.imread(str(out / "summary.png"))
    assert summary is not None
    assert summary.shape[1] > 1000
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert events, "not even the shutdown event was recorded"
    assert events[-1]["trigger"] == "shutdown"
    assert "text events" in result.stdout
