"""Selective-decoding protocol on synthetic streams with a fake decoder (no model)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from vljepa_ros.stream.segmenter import SegmenterConfig
from vljepa_ros.train import selective
from vljepa_ros.train.selective import (
    OFFLINE,
    ONLINE,
    ONLINE_SHIFT,
    ORACLE,
    UNIFORM,
    Method,
    SelectiveConfig,
    Stream,
    SweepPoint,
)

NS = 1_000_000_000
DIM = 8
CAPTIONS = [
    "the robot arm waits beside the red block",
    "the gripper moves toward the blue ball",
    "the fingers close around the green can",
    "the arm raises the yellow box upward",
    "the robot carries the purple brick across",
    "the arm lowers the white cube and lets go",
]
SMALL = SelectiveConfig(
    uniform_hz=(2.0, 1.0, 0.5, 0.25, 0.1),
    thresholds=(0.05, 0.2, 0.5),
    ward_per_minute=(60.0, 20.0, 8.0),
)


def make_stream(name: str, scenes: list[tuple[int, float]], hz: float = 10.0, seed: int = 0):
    """A stream of noisy one-hot embeddings: `scenes` is [(caption index, seconds)]."""
    rng = np.random.default_rng(seed)
    vectors, labels, captions = [], [], []
    for index, seconds in scenes:
        for _ in range(round(seconds * hz)):
            v = np.zeros(DIM)
            v[index] = 1.0
            vectors.append(v + 0.05 * rng.standard_normal(DIM))
            labels.append(f"s{index}")
            captions.append(CAPTIONS[index])
    emb = np.asarray(vectors, dtype=np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    stamps = 1_000 * NS + np.arange(len(emb), dtype=np.int64) * round(NS / hz)
    return Stream(name, stamps, emb, labels, selective.caption_changes(stamps, captions))


def fake_decode(vectors: np.ndarray) -> list[str]:
    """The caption of the strongest direction: a perfect decoder of pure embeddings."""
    return [CAPTIONS[int(np.argmax(v[: len(CAPTIONS)]))] for v in vectors]


@pytest.fixture(scope="module")
def streams() -> list[Stream]:
    rng = np.random.default_rng(7)
    out = []
    for k in range(4):
        scenes = [(int(i), float(rng.uniform(4.0, 9.0))) for i in rng.permutation(6)]
        out.append(make_stream(f"ep{k}", scenes, seed=k))
    return out


def test_caption_changes_keep_the_first_and_every_change() -> None:
    """(stamp, caption) at the first caption and wherever it changes; None is skipped."""
    changes = selective.caption_changes([0, 1, 2, 3, 4, 5], [None, "a", "a", "b", None, "b"])
    assert changes == [(1, "a"), (3, "b"), (5, "b")]


def test_stream_minutes_add_one_step_period() -> None:
    """600 steps at 10 Hz are one minute of stream."""
    stream = make_stream("x", [(0, 60.0)])
    assert stream.minutes == pytest.approx(1.0)


def test_stream_rejects_inconsistent_arrays() -> None:
    """Stamps, embeddings and labels must have one entry per step, stamps increasing."""
    with pytest.raises(ValueError, match="increase"):
        Stream("x", np.array([2, 1]), np.zeros((2, 3)), ["a", "a"], [])
    with pytest.raises(ValueError, match="labels"):
        Stream("x", np.array([1, 2]), np.zeros((2, 3)), ["a"], [])


@pytest.mark.parametrize(("hz", "spans"), [(1.0, 10), (0.5, 5), (0.1, 1), (2.0, 20)])
def test_uniform_spans_cut_fixed_windows(hz: float, spans: int) -> None:
    """10 s at 10 Hz cut into windows of 1/hz seconds."""
    stream = make_stream("x", [(0, 10.0)])
    out = selective.uniform_spans(stream, hz)
    assert len(out) == spans
    assert {e - s for s, e in out} == {round(10 / hz)}


def test_online_spans_cut_at_the_scene_change() -> None:
    """Two scenes: the online segmenter's spans are exactly the two scenes."""
    stream = make_stream("x", [(0, 3.0), (1, 2.0)])
    config = SegmenterConfig(shift_threshold=0.3, label_change=False)
    assert selective.online_spans(stream, config) == [(0, 30), (30, 50)]


def test_true_spans_cut_at_the_caption_changes() -> None:
    """Spans start where the ground-truth caption changes; k true segments per decode merge
    k consecutive scenes; a perfect decoder then scores every change with one decode each."""
    stream = make_stream("x", [(0, 2.0), (1, 3.0), (2, 1.0), (3, 2.5)])
    assert selective.true_spans(stream, 1) == [(0, 20), (20, 50), (50, 60), (60, 85)]
    assert selective.true_spans(stream, 2) == [(0, 50), (50, 85)]
    assert selective.true_spans(stream, 9) == [(0, 85)]
    point, pairs = selective.evaluate_method(Method(ORACLE, 1), [stream], fake_decode)
    assert point.decodes == len(stream.annotations) == 4
    assert all(truth == text for truth, text in pairs)
    with pytest.raises(ValueError, match="per_decode"):
        selective.true_spans(stream, 0)


@pytest.mark.parametrize(("per_minute", "count"), [(60.0, 30), (6.0, 3), (0.1, 1), (1e4, 300)])
def test_ward_spans_count_follows_the_rate(per_minute: float, count: int) -> None:
    """N = round(rate x minutes), at least one and at most one per step."""
    stream = make_stream("x", [(0, 10.0), (1, 10.0), (2, 10.0)])
    assert len(selective.ward_spans(stream, per_minute)) == count


@pytest.mark.parametrize("method", SMALL.methods(), ids=lambda m: m.title)
def test_every_method_partitions_the_stream(method: Method, streams: list[Stream]) -> None:
    """Spans of every method are contiguous, in order, and cover every step once."""
    for stream in streams:
        spans = method.spans(stream)
        assert spans[0][0] == 0
        assert spans[-1][1] == len(stream.stamps_ns)
        assert all(a[1] == b[0] and a[0] < a[1] for a, b in itertools.pairwise(spans))


def test_pooled_is_the_normalised_mean() -> None:
    """The pooled embedding of a span is the L2-normalised mean of its steps."""
    emb = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], dtype=np.float32)
    assert selective.pooled(emb, (0, 2)) == pytest.approx(np.array([1, 1]) / math.sqrt(2))


def test_matched_pairs_use_the_nearest_output_in_time() -> None:
    """Each caption change takes the text of the span starting nearest to it."""
    stream = make_stream("x", [(0, 2.0), (1, 3.0)])  # change at step 20
    spans = [[(0, 5), (5, 18), (18, 50)]]  # outputs at steps 0, 5, 18
    pairs = selective.matched_pairs([stream], spans, lambda i, span: f"span{span[0]}")
    assert pairs == [(CAPTIONS[0], "span0"), (CAPTIONS[1], "span18")]


def test_evaluate_method_counts_decodes_and_scores(streams: list[Stream]) -> None:
    """A sweep point counts one decode per span; a perfect segmentation scores highest."""
    calls: list[int] = []

    def counting(vectors: np.ndarray) -> list[str]:
        calls.append(len(vectors))
        return fake_decode(vectors)

    point, pairs = selective.evaluate_method(Method(UNIFORM, 1.0), streams, counting, batch=16)
    spans = sum(len(selective.uniform_spans(s, 1.0)) for s in streams)
    assert point.decodes == sum(calls) == spans
    assert max(calls) <= 16
    assert len(pairs) == sum(len(s.annotations) for s in streams)
    assert point.cider > 0
    online, _ = selective.evaluate_method(
        Method(ONLINE_SHIFT, 0.3, SegmenterConfig(label_change=False)), streams, fake_decode
    )
    assert online.cider > point.cider
    assert online.decodes < point.decodes


def _points(family: str, values: list[tuple[float, float]]) -> list[SweepPoint]:
    return [
        SweepPoint(family, i, round(rate), 1.0, cider) for i, (rate, cider) in enumerate(values)
    ]


REFERENCE = SweepPoint(UNIFORM, 1.0, 60, 1.0, 1.0)


@pytest.mark.parametrize(
    ("values", "factor", "lower_bound"),
    [
        # reaches 1.0 halfway between 10 and 20 decodes/min in log rate: sqrt(200)
        ([(10, 0.5), (20, 1.5), (40, 2.0)], 60 / math.sqrt(200), False),
        ([(5, 1.2), (10, 1.5)], 12.0, True),
        ([(10, 0.2), (60, 0.9)], None, False),
        ([(30, 0.8), (20, 1.0), (10, 0.5)], 3.0, False),  # exactly at a swept point
    ],
)
def test_reduction_interpolates_the_rate_needed(values, factor, lower_bound) -> None:
    """The first point reaching the reference CIDEr-D, interpolated in log rate, sets the
    factor; none reaching it gives None; the cheapest point already reaching it a bound."""
    red = selective.reduction(_points(ONLINE, values), REFERENCE, ONLINE)
    if factor is None:
        assert red.factor is None
        assert red.operating_point is None
    else:
        assert red.factor == pytest.approx(factor)
        assert red.lower_bound is lower_bound
        assert red.operating_point is not None


def test_reduction_is_undefined_against_a_zero_reference() -> None:
    """A reference of CIDEr-D 0 is matched by anything: no factor is reported."""
    zero = SweepPoint(UNIFORM, 1.0, 60, 1.0, 0.0)
    assert selective.reduction(_points(ONLINE, [(5, 0.0)]), zero, ONLINE).factor is None


def test_evaluate_selective_finds_fewer_decodes_for_segmenters(streams: list[Stream]) -> None:
    """On clean scene changes the segmenters match 1 Hz uniform quality with far fewer
    decodes (about one decode per scene, ~10 per minute, against 60)."""
    result = selective.evaluate_selective(streams, fake_decode, SMALL)
    assert result.reference.family == UNIFORM
    assert result.reference.parameter == 1.0
    assert len(result.points) == len(SMALL.methods())
    assert result.matches == sum(len(s.annotations) for s in streams)
    for family in (ONLINE, ONLINE_SHIFT, OFFLINE):
        factor = result.reductions[family].factor
        assert factor is not None
        assert factor > 2.85, family
    assert result.examples
    assert all(truth == text for truth, text in result.examples[:3])


def test_decoding_cost_reports_calls_and_time_per_minute(streams: list[Stream]) -> None:
    """Decoder calls per minute equal the spans per minute; CPU and wall time are measured."""
    calls: list[int] = []

    def one_at_a_time(vectors: np.ndarray) -> list[str]:
        calls.append(len(vectors))
        return fake_decode(vectors)

    minutes = sum(s.minutes for s in streams)
    (cost,) = selective.decoding_cost(streams, one_at_a_time, [Method(UNIFORM, 0.5)])
    spans = sum(len(selective.uniform_spans(s, 0.5)) for s in streams)
    assert cost.decodes_per_minute == pytest.approx(spans / minutes)
    assert set(calls) == {1}
    assert len(calls) == spans
    assert cost.cpu_s_per_minute >= 0
    assert cost.wall_s_per_minute > 0


def test_matched_methods_take_each_family_operating_point(streams: list[Stream]) -> None:
    """The bench's methods: the reference and every family's cheapest matching setting."""
    result = selective.evaluate_selective(streams, fake_decode, SMALL)
    methods = selective.matched_methods(result, SMALL)
    assert methods[0] == Method(UNIFORM, 1.0)
    assert {m.family for m in methods[1:]} == {ONLINE, ONLINE_SHIFT, OFFLINE}
    for m in methods[1:]:
        assert m.parameter == result.reductions[m.family].operating_point


@pytest.mark.parametrize(
    "kwargs",
    [
        {"reference_hz": 0.3},
        {"thresholds": ()},
        {"ward_per_minute": (0.0,)},
        {"batch": 0},
    ],
)
def test_selective_config_is_validated(kwargs: dict) -> None:
    """The reference rate must be swept; sweeps non-empty and positive; batch >= 1."""
    with pytest.raises(ValueError):  # noqa: PT011 - the messages differ per case
        SelectiveConfig(**kwargs)


def test_unknown_family_is_refused(streams: list[Stream]) -> None:
    """A method of an unknown family names the known ones."""
    with pytest.raises(ValueError, match="uniform"):
        Method("random", 1.0).spans(streams[0])
