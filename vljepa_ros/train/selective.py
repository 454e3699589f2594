"""Selective decoding measured the way the VL-JEPA paper measures it, on held-out episodes.

Protocol (paper, section on selective decoding; docs/evaluation.md):

- A method cuts each episode's embedding stream (one embedding per perception step) into spans
  and decodes each span once, on its average-pooled embedding. Decoded outputs form a sequence
  of (time, text); an output is stamped with the first step of the span it describes.
- Every ground-truth caption change (the first caption of the episode included) is matched to
  the nearest decoded output in time; CIDEr-D (pycocoevalcap) is averaged over all matches of
  all episodes.
- Methods: uniform decoding swept from 2 Hz down to 0.05 Hz (one span per 1/f seconds); the
  online segmenter (`OnlineSegmenter`, what the decoder node runs) with its shift threshold
  swept; the paper's offline temporal Ward clustering with N swept (as segments per minute of
  stream, N = rate x episode minutes).
- For reference, the same protocol on spans cut exactly at the ground-truth caption changes
  (1 to 4 true segments per decode): what a segmenter that knew the truth would save, so the
  room any real segmenter has on these episodes.
- Quality is plotted against decodes per minute. The headline number of a method is how many
  times fewer decodes than 1 Hz uniform decoding it needs to reach the CIDEr-D of 1 Hz uniform
  decoding (the paper: 2.85x for offline clustering on EgoExo4D).

Everything here is pure: the decoder is a callable (embeddings -> texts), so tests use a fake
one and the bench can time the real one (`decoding_cost`).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from vljepa_ros.stream.segmenter import OnlineSegmenter, SegmenterConfig, temporal_ward_segments
from vljepa_ros.train.metrics import cider_d, nearest_indices

NS = 1_000_000_000
Decoder = Callable[[np.ndarray], list[str]]  # (B, D) float32 embeddings -> B texts
Span = tuple[int, int]  # steps [start, end) of one stream

UNIFORM = "uniform"
ONLINE = "online"
ONLINE_SHIFT = "online, shift only"
OFFLINE = "offline Ward"
ORACLE = "true caption changes"  # a reference, not a method: it reads the ground truth
FAMILIES = (UNIFORM, ONLINE, ONLINE_SHIFT, OFFLINE, ORACLE)
PARAMETER_NAMES = {
    UNIFORM: "Hz",
    ONLINE: "shift threshold",
    ONLINE_SHIFT: "shift threshold",
    OFFLINE: "segments/min",
    ORACLE: "true segments per decode",
}


@dataclass(frozen=True)
class Stream:
    """One episode's embedding stream with its ground-truth caption changes."""

    name: str
    stamps_ns: np.ndarray  # (N,) int64, increasing: capture stamp of each step
    embeddings: np.ndarray  # (N, D) float32, L2-normalised
    labels: Sequence[str]  # (N,) stabilised labels (the online segmenter's label_change trigger)
    annotations: Sequence[tuple[int, str]]  # (stamp_ns, caption) at every caption change

    def __post_init__(self) -> None:
        n = len(self.stamps_ns)
        if n == 0:
            raise ValueError(f"stream {self.name} has no steps")
        if self.embeddings.shape[0] != n or len(self.labels) != n:
            raise ValueError(
                f"stream {self.name}: {n} stamps, {self.embeddings.shape[0]} embeddings, "
                f"{len(self.labels)} labels"
            )
        if np.any(np.diff(self.stamps_ns) <= 0):
            raise ValueError(f"stream {self.name}: step stamps must increase")

    @property
    def minutes(self) -> float:
        return stream_minutes(self.stamps_ns)


def stream_minutes(stamps_ns: np.ndarray) -> float:
    """Length of a step stream: first to last step plus one typical (median) step period
    (1 s for a single step), in minutes."""
    stamps = np.asarray(stamps_ns, dtype=np.int64)
    period = int(np.median(np.diff(stamps))) if len(stamps) > 1 else NS
    return (int(stamps[-1] - stamps[0]) + period) / (60 * NS)


def caption_changes(
    stamps_ns: Sequence[int] | np.ndarray, captions: Sequence[str | None]
) -> list[tuple[int, str]]:
    """(stamp, caption) where the caption differs from the previous one (None skipped)."""
    out: list[tuple[int, str]] = []
    previous: str | None = None
    for stamp, text in zip(stamps_ns, captions, strict=True):
        if text is not None and text != previous:
            out.append((int(stamp), text))
        previous = text
    return out


# --------------------------------------------------------------------------- spans


def uniform_spans(stream: Stream, hz: float) -> list[Span]:
    """Windows of 1/hz seconds from the first step; each non-empty window is one span."""
    if hz <= 0:
        raise ValueError(f"hz must be > 0, got {hz}")
    window = (stream.stamps_ns - stream.stamps_ns[0]) * hz // NS
    return _runs_of(window.astype(np.int64))


def _runs_of(keys: np.ndarray) -> list[Span]:
    cuts = [0, *(np.flatnonzero(np.diff(keys)) + 1).tolist(), len(keys)]
    return list(itertools.pairwise(cuts))


def online_spans(stream: Stream, config: SegmenterConfig) -> list[Span]:
    """The spans the online segmenter closes over the stream (flushed at its end)."""
    segmenter = OnlineSegmenter(config)
    segments = []
    for seq, (vector, stamp, label) in enumerate(
        zip(stream.embeddings, stream.stamps_ns, stream.labels, strict=True)
    ):
        segments += segmenter.step(vector, int(stamp), seq, label)
    segments += segmenter.flush("shutdown")
    spans = []
    for segment in segments:
        start = int(np.searchsorted(stream.stamps_ns, segment.start_ns))
        end = int(np.searchsorted(stream.stamps_ns, segment.end_ns)) + 1
        spans.append((start, end))
    return spans


def ward_spans(stream: Stream, per_minute: float) -> list[Span]:
    """Temporal Ward clustering into round(per_minute x minutes) segments (at least 1)."""
    if per_minute <= 0:
        raise ValueError(f"per_minute must be > 0, got {per_minute}")
    n = len(stream.stamps_ns)
    segments = min(n, max(1, round(per_minute * stream.minutes)))
    return temporal_ward_segments(stream.embeddings, segments)


def true_spans(stream: Stream, per_decode: int) -> list[Span]:
    """Spans cut exactly where the ground-truth caption changes, `per_decode` consecutive
    true segments to a span: what a segmenter that knew the truth would decode."""
    if per_decode < 1:
        raise ValueError(f"per_decode must be >= 1, got {per_decode}")
    n = len(stream.stamps_ns)
    starts = np.searchsorted(stream.stamps_ns, [t for t, _ in stream.annotations])
    cuts = sorted({0, *(int(i) for i in starts if 0 < i < n)})
    cuts = [*cuts[::per_decode], n]
    return list(itertools.pairwise(cuts))


def pooled(embeddings: np.ndarray, span: Span) -> np.ndarray:
    """Average-pooled, L2-normalised embedding (D,) of steps [start, end)."""
    mean = np.asarray(embeddings[span[0] : span[1]], dtype=np.float64).mean(axis=0)
    norm = float(np.linalg.norm(mean))
    return (mean / norm if norm > 0 else mean).astype(np.float32)


@dataclass(frozen=True)
class Method:
    """One decoding schedule: a family and the value of its swept parameter."""

    family: str
    parameter: float
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)

    def spans(self, stream: Stream) -> list[Span]:
        """The spans this method decodes in a stream."""
        if self.family == UNIFORM:
            return uniform_spans(stream, self.parameter)
        if self.family in (ONLINE, ONLINE_SHIFT):
            config = dataclasses.replace(
                self.segmenter,
                shift_threshold=self.parameter,
                label_change=self.segmenter.label_change and self.family == ONLINE,
            )
            return online_spans(stream, config)
        if self.family == OFFLINE:
            return ward_spans(stream, self.parameter)
        if self.family == ORACLE:
            return true_spans(stream, round(self.parameter))
        raise ValueError(f"unknown method family '{self.family}' (one of {', '.join(FAMILIES)})")

    @property
    def title(self) -> str:
        return f"{self.family} ({PARAMETER_NAMES[self.family]} {self.parameter:g})"


@dataclass(frozen=True)
class SelectiveConfig:
    """The sweeps. The online segmenter's other settings are `segmenter` (the decoder node's
    defaults); `ONLINE` keeps its label_change trigger, `ONLINE_SHIFT` turns it off."""

    uniform_hz: tuple[float, ...] = (2.0, 1.5, 1.0, 0.7, 0.5, 0.35, 0.25, 0.15, 0.1, 0.07, 0.05)
    reference_hz: float = 1.0
    thresholds: tuple[float, ...] = (
        0.02,
        0.03,
        0.05,
        0.07,
        0.1,
        0.15,
        0.2,
        0.3,
        0.45,
        0.6,
        0.8,
    )
    ward_per_minute: tuple[float, ...] = (120.0, 90.0, 60.0, 42.0, 30.0, 21.0, 15.0, 9.0, 6.0, 3.0)
    # the reference curve of a segmenter that cuts exactly at the true caption changes
    true_per_decode: tuple[int, ...] = (1, 2, 3, 4)
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)
    shift_only: bool = True  # also sweep the online segmenter without its label_change trigger
    batch: int = 64  # embeddings per decoder call while sweeping

    def __post_init__(self) -> None:
        if self.reference_hz not in self.uniform_hz:
            raise ValueError(
                f"reference_hz {self.reference_hz} must be one of uniform_hz {self.uniform_hz}"
            )
        for name in ("uniform_hz", "thresholds", "ward_per_minute", "true_per_decode"):
            values = getattr(self, name)
            if not values or min(values) <= 0:
                raise ValueError(f"SelectiveConfig.{name} must be non-empty and positive")
        if self.batch < 1:
            raise ValueError(f"batch must be >= 1, got {self.batch}")

    def methods(self) -> list[Method]:
        """Every swept point, family by family."""
        out = [Method(UNIFORM, hz) for hz in self.uniform_hz]
        families = (ONLINE, ONLINE_SHIFT) if self.shift_only else (ONLINE,)
        for family in families:
            out += [Method(family, t, self.segmenter) for t in self.thresholds]
        out += [Method(OFFLINE, n) for n in self.ward_per_minute]
        out += [Method(ORACLE, k) for k in self.true_per_decode]
        return out


QUICK = SelectiveConfig(
    uniform_hz=(2.0, 1.0, 0.5, 0.25, 0.1, 0.05),
    thresholds=(0.03, 0.07, 0.15, 0.3, 0.6),
    ward_per_minute=(120.0, 60.0, 30.0, 15.0, 6.0),
    true_per_decode=(1, 2),
)


# --------------------------------------------------------------------------- protocol


@dataclass(frozen=True)
class SweepPoint:
    """Quality and cost of one method over all streams."""

    family: str
    parameter: float
    decodes: int
    minutes: float
    cider: float  # CIDEr-D (pycocoevalcap) averaged over the matched caption changes

    @property
    def decodes_per_minute(self) -> float:
        return self.decodes / self.minutes


@dataclass(frozen=True)
class Reduction:
    """How many times fewer decodes than the reference a method needs at the reference CIDEr.

    `factor` is None when the method never reaches the reference CIDEr-D in the sweep; when
    it reaches it already at its cheapest point, `lower_bound` is True and the factor is a
    lower bound. `operating_point` is the cheapest swept parameter that reaches it.
    """

    family: str
    factor: float | None
    lower_bound: bool
    decodes_per_minute: float | None
    operating_point: float | None


@dataclass(frozen=True)
class SelectiveResult:
    """Every sweep point, the reference (uniform at reference_hz) and each family's reduction."""

    points: list[SweepPoint]
    reference: SweepPoint
    reductions: dict[str, Reduction]
    matches: int  # caption changes matched per method
    examples: list[tuple[str, str]]  # (ground truth, decoded) at the reference, first few


def _texts_for(
    streams: Sequence[Stream],
    spans: list[list[Span]],
    decode: Decoder,
    cache: dict[tuple[int, int, int], str],
    batch: int,
) -> None:
    """Decode every span not in the cache (batched); fills the cache."""
    todo = sorted(
        {(i, s, e) for i, stream_spans in enumerate(spans) for s, e in stream_spans} - set(cache)
    )
    for k in range(0, len(todo), batch):
        keys = todo[k : k + batch]
        vectors = np.stack([pooled(streams[i].embeddings, (s, e)) for i, s, e in keys])
        texts = decode(vectors)
        if len(texts) != len(keys):
            raise ValueError(f"the decoder returned {len(texts)} texts for {len(keys)} inputs")
        cache.update(zip(keys, texts, strict=True))


def matched_pairs(
    streams: Sequence[Stream], spans: list[list[Span]], texts: Callable[[int, Span], str]
) -> list[tuple[str, str]]:
    """(ground-truth caption, decoded text) for every caption change of every stream."""
    pairs: list[tuple[str, str]] = []
    for i, (stream, stream_spans) in enumerate(zip(streams, spans, strict=True)):
        if not stream.annotations:
            continue
        times = [int(stream.stamps_ns[s]) for s, _ in stream_spans]
        nearest = nearest_indices(times, [t for t, _ in stream.annotations])
        for (_, caption), j in zip(stream.annotations, nearest, strict=True):
            pairs.append((caption, texts(i, stream_spans[int(j)])))
    return pairs


def evaluate_method(
    method: Method,
    streams: Sequence[Stream],
    decode: Decoder,
    cache: dict[tuple[int, int, int], str] | None = None,
    batch: int = 64,
) -> tuple[SweepPoint, list[tuple[str, str]]]:
    """One sweep point and its matched (ground truth, decoded) pairs.

    Raises:
        ValueError: no stream has a caption change to match.
    """
    cache = {} if cache is None else cache
    spans = [method.spans(stream) for stream in streams]
    _texts_for(streams, spans, decode, cache, batch)
    pairs = matched_pairs(streams, spans, lambda i, span: cache[(i, *span)])
    if not pairs:
        raise ValueError("no ground-truth caption change to match decoded text against")
    score, _ = cider_d([[truth] for truth, _ in pairs], [text for _, text in pairs])
    point = SweepPoint(
        family=method.family,
        parameter=method.parameter,
        decodes=sum(len(s) for s in spans),
        minutes=sum(stream.minutes for stream in streams),
        cider=score,
    )
    return point, pairs


def reduction(points: Sequence[SweepPoint], reference: SweepPoint, family: str) -> Reduction:
    """Decodes needed by `family` to reach the reference CIDEr-D, relative to the reference.

    The family's points are ordered by decodes per minute; the first one at or above the
    reference quality, linearly interpolated (in log decodes per minute) with the point before
    it, gives the rate needed. Undefined (factor None) when the reference CIDEr-D is 0.
    """
    own = sorted((p for p in points if p.family == family), key=lambda p: p.decodes_per_minute)
    target = reference.cider
    if target <= 0:  # every method "matches" a reference of zero quality: nothing to measure
        return Reduction(family, None, False, None, None)
    for i, point in enumerate(own):
        if point.cider < target:
            continue
        rate = point.decodes_per_minute
        if i > 0:
            before = own[i - 1]
            lo, hi = math.log(before.decodes_per_minute), math.log(rate)
            share = (target - before.cider) / (point.cider - before.cider)
            rate = math.exp(lo + share * (hi - lo))
        return Reduction(
            family=family,
            factor=reference.decodes_per_minute / rate,
            lower_bound=i == 0,
            decodes_per_minute=rate,
            operating_point=point.parameter,
        )
    return Reduction(family, None, False, None, None)


def evaluate_selective(
    streams: Sequence[Stream],
    decode: Decoder,
    config: SelectiveConfig | None = None,
    progress: Callable[[str], None] | None = None,
) -> SelectiveResult:
    """Run every method of the sweep over the streams; see the module docstring.

    Raises:
        ValueError: no streams, or none with a caption change.
    """
    config = config or SelectiveConfig()
    if not streams:
        raise ValueError("no streams to evaluate")
    cache: dict[tuple[int, int, int], str] = {}
    points: list[SweepPoint] = []
    examples: list[tuple[str, str]] = []
    for method in config.methods():
        if progress:
            progress(method.title)
        point, pairs = evaluate_method(method, streams, decode, cache, config.batch)
        points.append(point)
        if method == Method(UNIFORM, config.reference_hz):
            examples = pairs[:8]
    reference = next(
        p for p in points if p.family == UNIFORM and p.parameter == config.reference_hz
    )
    families = dict.fromkeys(p.family for p in points)
    reductions = {f: reduction(points, reference, f) for f in families}
    matches = sum(len(s.annotations) for s in streams)
    return SelectiveResult(points, reference, reductions, matches, examples)


# --------------------------------------------------------------------------- cost (bench)


@dataclass(frozen=True)
class DecodeCost:
    """What a method costs on the decoder: calls and time per minute of stream."""

    family: str
    parameter: float
    decodes_per_minute: float
    cpu_s_per_minute: float  # process CPU time (all threads) spent in the decoder
    wall_s_per_minute: float


def decoding_cost(
    streams: Sequence[Stream], decode: Decoder, methods: Sequence[Method]
) -> list[DecodeCost]:
    """Decode every span of every method one call at a time, as the decoder node does, and
    time it (no cache): decoder calls, CPU seconds and wall seconds per minute of stream.

    For "at matched caption quality", pass the `Method`s of each family's
    `Reduction.operating_point` (see `matched_methods`).
    """
    minutes = sum(stream.minutes for stream in streams)
    out = []
    for method in methods:
        calls = 0
        cpu = wall = 0.0
        for stream in streams:
            for span in method.spans(stream):
                vector = pooled(stream.embeddings, span)[None]
                c0, w0 = time.process_time(), time.perf_counter()
                decode(vector)
                cpu += time.process_time() - c0
                wall += time.perf_counter() - w0
                calls += 1
        out.append(
            DecodeCost(
                method.family, method.parameter, calls / minutes, cpu / minutes, wall / minutes
            )
        )
    return out


def matched_methods(result: SelectiveResult, config: SelectiveConfig) -> list[Method]:
    """The reference method and, per family that a node can run (not the ground-truth
    reference), the cheapest swept method reaching its quality."""
    out = [Method(UNIFORM, config.reference_hz)]
    for family, red in result.reductions.items():
        if red.operating_point is not None and family not in (UNIFORM, ORACLE):
            out.append(Method(family, red.operating_point, config.segmenter))
    return out
