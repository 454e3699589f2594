"""`vljepa bench e2e` runs its three processes and reports every figure (values not judged)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from ros_support import python_env


def test_e2e_bench_reports_its_figures(micro_checkpoint: Path, tmp_path: Path) -> None:
    """A short run with a small camera writes JSON with steps counted and no seq lost."""
    vljepa = Path(sys.executable).parent / "vljepa"
    out = tmp_path / "e2e.json"
    result = subprocess.run(
        [str(vljepa), "bench", "e2e", "--checkpoint", str(micro_checkpoint), "--duration", "6",
         "--warmup", "2", "--hz", "15", "--width", "160", "--height", "120", "--json", str(out)],
        env=python_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    (figures,) = json.loads(out.read_text())
    for key in (
        "latency_p50_ms",
        "latency_p99_ms",
        "node_model_p50_ms",
        "model_only_paced_p50_ms",
        "model_only_back_to_back_p50_ms",
        "overhead_ratio",
        "overhead_ratio_vs_paced",
        "overhead_ratio_vs_back_to_back",
        "steps_per_s_per_camera",
        "perception_cpu_percent",
        "perception_peak_rss_mb",
    ):
        assert key in figures, key  # fmt: skip
    assert figures["steps_per_s_per_camera"] > 0
    assert figures["seq_not_received"] == 0
    assert figures["bad_frames"] == 0
    assert "latency_p50_ms" in result.stdout
    # the node's split of its latency comes through, and the model-only figure used its threads
    (split,) = figures["node_p50_ms"]
    assert all(split[key] > 0 for key in ("arrival_delay", "convert", "step", "latency")), split
    assert figures["torch_threads"] >= 1
    # the model call is part of the step, and the ratio is taken over it
    assert 0 < split["model"] <= split["step"], split
    ratio = figures["latency_p50_ms"] / figures["node_model_p50_ms"]
    assert figures["overhead_ratio"] == pytest.approx(ratio, rel=0.05)
