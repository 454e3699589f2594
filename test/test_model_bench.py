"""Tests of vljepa_ros.model.bench and the `vljepa bench model` command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vljepa_ros.cli import main
from vljepa_ros.model.bench import format_result, peak_tflops, run_bench


def test_run_bench_reports_shape_latency_and_flops() -> None:
    """A short CPU run reports the clip shape, ordered percentiles and a positive FLOP count."""
    result = run_bench("tiny", steps=3, warmup=1, frames=2, size=64)
    assert result.clip_shape == (1, 2, 3, 64, 64)
    assert result.visual_tokens == 16
    assert 0 < result.p50_ms <= result.p99_ms
    assert result.steps_per_s > 0
    assert result.gflop_per_step > 0
    assert result.peak_tflops is None
    assert "TFLOP/s" in format_result(result)


@pytest.mark.parametrize(
    ("name", "dtype", "peak"),
    [
        ("NVIDIA H100 80GB HBM3", "bf16", 989.0),
        ("NVIDIA H100 PCIe", "bf16", 756.0),
        ("NVIDIA H200", "bf16", 989.0),
        ("NVIDIA GeForce GTX 1080", "bf16", None),
        ("NVIDIA H100 80GB HBM3", "fp32", None),
    ],
)
def test_peak_lookup(name: str, dtype: str, peak: float | None) -> None:
    """Known devices map to their dense peak; unknown ones to None ('unknown')."""
    assert peak_tflops(name, dtype) == peak


def test_cli_prints_percentiles_and_writes_json(tmp_path: Path, capsys) -> None:
    """`vljepa bench model` prints p50/p99, steps/s and the clip shape, and writes JSON."""
    out = tmp_path / "bench.json"
    argv = ["bench", "model", "--preset", "tiny", "--frames", "2", "--size", "32"]
    assert main([*argv, "--steps", "50", "--warmup", "1", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    for fragment in ("p50", "p99", "steps/s", "(1, 2, 3, 32, 32)"):
        assert fragment in text
    assert json.loads(out.read_text())["steps"] == 50


def test_cli_refuses_too_few_steps() -> None:
    """Fewer than 50 timed steps is a usage error."""
    with pytest.raises(SystemExit):
        main(["bench", "model", "--steps", "10"])


def test_cli_unknown_preset_is_an_error(capsys) -> None:
    """An unknown preset exits with status 2 and lists the known presets."""
    assert main(["bench", "model", "--preset", "huge", "--steps", "50"]) == 2
    assert "tiny" in capsys.readouterr().err
