"""`vljepa bench model`: per-step latency of X-encoder + predictor for a preset on a device.

One step is what the perception node runs per frame: a preprocessed clip through the
X-encoder, then the predictor over [visual ; query] tokens to one embedding. Weights are
random (speed does not depend on them) and the query is a fixed number of token states, so no
text model is needed. FLOPs are counted once with `torch.utils.flop_counter`; on a GPU whose
peak is known the achieved fraction of peak is printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from .api import parse_dtype
from .config import ConfigError, VLJepaConfig, preset
from .predictor import Predictor
from .x_encoder import XEncoder

# Dense (no sparsity) tensor-core peaks in TFLOP/s by (device-name fragment, dtype), from the
# vendors' data sheets. Looked up in order, so more specific names come first.
PEAK_TFLOPS: list[tuple[str, str, float]] = [
    ("H100 PCIe", "bf16", 756.0),
    ("H100 PCIe", "fp16", 756.0),
    ("H100 NVL", "bf16", 835.0),
    ("H100 NVL", "fp16", 835.0),
    ("H100", "bf16", 989.0),
    ("H100", "fp16", 989.0),
    ("H200", "bf16", 989.0),
    ("H200", "fp16", 989.0),
    ("A100", "bf16", 312.0),
    ("A100", "fp16", 312.0),
    ("L40S", "bf16", 362.0),
    ("L4", "bf16", 121.0),
]


def peak_tflops(device_name: str, dtype: str) -> float | None:
    """Known dense peak of a device for a dtype, or None."""
    for fragment, kind, value in PEAK_TFLOPS:
        if fragment in device_name and kind == dtype:
            return value
    return None


@dataclass(frozen=True)
class BenchResult:
    """What one benchmark run measured."""

    preset: str
    device: str
    device_name: str
    dtype: str
    compiled: bool
    clip_shape: tuple[int, ...]  # (B, T, 3, S, S)
    visual_tokens: int
    query_tokens: int
    steps: int
    warmup: int
    p50_ms: float
    p99_ms: float
    mean_ms: float
    steps_per_s: float
    gflop_per_step: float
    tflops: float  # achieved at the p50 step time
    peak_tflops: float | None
    fraction_of_peak: float | None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def run_bench(
    preset_name: str = "tiny",
    device: str = "cpu",
    dtype: str = "fp32",
    steps: int = 100,
    warmup: int = 10,
    frames: int | None = None,
    size: int | None = None,
    batch: int = 1,
    compile: bool = False,
    query_tokens: int = 16,
    seed: int = 0,
) -> BenchResult:
    """Time `steps` steps after `warmup` steps; see the module docstring."""
    if steps < 1 or warmup < 0 or batch < 1 or query_tokens < 1:
        raise ValueError("steps and batch must be >= 1, warmup >= 0, query_tokens >= 1")
    cfg: VLJepaConfig = preset(preset_name)
    xcfg = dataclasses.replace(
        cfg.x_encoder,
        num_frames=frames or cfg.x_encoder.num_frames,
        crop_size=size or cfg.x_encoder.crop_size,
    )
    dev = torch.device(device)
    torch_dtype = parse_dtype(dtype)
    torch.manual_seed(seed)
    with dev:
        x_encoder = XEncoder(xcfg).to(torch_dtype).eval()
        predictor = (
            Predictor(cfg.predictor, xcfg.hidden_size, cfg.y_encoder.hidden_size, cfg.embed_dim)
            .to(torch_dtype)
            .eval()
        )
        video = torch.randn(
            batch, xcfg.num_frames, 3, xcfg.crop_size, xcfg.crop_size, dtype=torch_dtype
        )
        query = torch.randn(batch, query_tokens, cfg.y_encoder.hidden_size, dtype=torch_dtype)

    def step() -> torch.Tensor:  # one query per clip, no padding: as the perception node runs
        return predictor(x_encoder(video), query, None)

    run = torch.compile(step) if compile else step
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    times: list[float] = []
    with torch.inference_mode():
        with FlopCounterMode(display=False) as counter:
            step()
        flops = counter.get_total_flops()
        for i in range(warmup + steps):
            sync()
            start = time.perf_counter()
            run()
            sync()
            if i >= warmup:
                times.append(time.perf_counter() - start)
    p50 = _percentile(times, 50)
    name = _device_name(dev)
    achieved = flops / p50 / 1e12
    peak = peak_tflops(name, dtype) if dev.type == "cuda" else None
    return BenchResult(
        preset=preset_name,
        device=str(dev),
        device_name=name,
        dtype=dtype,
        compiled=compile,
        clip_shape=tuple(video.shape),
        visual_tokens=xcfg.tokens_per_clip,
        query_tokens=query_tokens,
        steps=steps,
        warmup=warmup,
        p50_ms=p50 * 1e3,
        p99_ms=_percentile(times, 99) * 1e3,
        mean_ms=statistics.fmean(times) * 1e3,
        steps_per_s=1.0 / statistics.fmean(times),
        gflop_per_step=flops / 1e9,
        tflops=achieved,
        peak_tflops=peak,
        fraction_of_peak=achieved / peak if peak else None,
    )


def format_result(r: BenchResult) -> str:
    """Human-readable report of a run."""
    lines = [
        f"preset {r.preset}  device {r.device} ({r.device_name})  dtype {r.dtype}"
        f"{'  compiled' if r.compiled else ''}",
        f"clip (B, T, C, H, W) = {r.clip_shape}  visual tokens {r.visual_tokens}  "
        f"query tokens {r.query_tokens}",
        f"steps {r.steps} after {r.warmup} warm-up: p50 {r.p50_ms:.2f} ms  p99 {r.p99_ms:.2f} ms  "
        f"mean {r.mean_ms:.2f} ms  {r.steps_per_s:.1f} steps/s",
        f"compute {r.gflop_per_step:.2f} GFLOP/step  achieved {r.tflops:.3f} TFLOP/s",
    ]
    if r.device.startswith("cuda"):
        if r.peak_tflops is None:
            lines.append("device peak unknown: fraction of peak not reported")
        else:
            lines.append(
                f"device peak {r.peak_tflops:.0f} TFLOP/s ({r.dtype} dense): "
                f"{100 * (r.fraction_of_peak or 0):.1f}% of peak"
            )
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    """Run the benchmark from parsed `vljepa bench model` arguments; prints the report."""
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("CUDA requested but not available on this machine", file=sys.stderr)
        return 2
    try:
        result = run_bench(
            args.preset,
            args.device,
            args.dtype,
            steps=args.steps,
            warmup=args.warmup,
            frames=args.frames,
            size=args.size,
            batch=args.batch,
            compile=args.compile,
            query_tokens=args.query_tokens,
        )
    except (ConfigError, ValueError) as exc:
        print(f"bench model: {exc}", file=sys.stderr)
        return 2
    print(format_result(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    return 0
