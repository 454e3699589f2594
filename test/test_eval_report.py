"""The evaluation report (Markdown, metrics.json, PNGs) and the 2-D embedding map, on
synthetic replay results (no model)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from vljepa_ros.stream.state_tracker import StateTrackerConfig
from vljepa_ros.train import evaluate, report, selective

NS = 1_000_000_000
LABELS = {"idle": "the arm is still", "reaching": "the arm reaches", "lifting": "the arm lifts"}
PNG = b"\x89PNG\r\n\x1a\n"


def synthetic_run(name: str, seed: int) -> evaluate.EpisodeRun:
    """A replay whose stabilised label lags the truth by 3 steps and whose instant label and
    baseline flicker; embeddings point at the true label's direction."""
    rng = np.random.default_rng(seed)
    names = list(LABELS)
    truth = [names[(k // 25) % 3] for k in range(150)]
    stabilised = ["unknown"] * 3 + truth[:-3]
    instant = [t if rng.random() > 0.2 else names[rng.integers(3)] for t in truth]
    baseline = [t if rng.random() > 0.4 else names[rng.integers(3)] for t in truth]
    emb = np.zeros((150, 6), dtype=np.float32)
    for k, t in enumerate(truth):
        emb[k, names.index(t)] = 1.0
    emb += 0.1 * rng.standard_normal(emb.shape).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    stamps = 10**18 + np.arange(150, dtype=np.int64) * NS // 10
    captions = [f"the robot arm is {t} near the block" for t in truth]
    return evaluate.EpisodeRun(
        name=name,
        stamps_ns=stamps,
        truth=truth,
        captions=list(captions),
        stabilised=stabilised,
        instant=instant,
        baseline=baseline,
        embeddings=emb,
        reworded=[(stabilised, instant)],
        annotations=selective.caption_changes(stamps, captions),
        moments=[],
    )


def fake_decode(vectors: np.ndarray) -> list[str]:
    names = list(LABELS)
    return [f"the robot arm is {names[int(np.argmax(v[:3]))]} near the block" for v in vectors]


@pytest.fixture(scope="module")
def evaluation() -> evaluate.Evaluation:
    runs = [synthetic_run("ep_a", 0), synthetic_run("ep_b", 1)]
    labels = list(LABELS)
    state = evaluate.state_metrics(runs, labels)
    config = selective.SelectiveConfig(
        uniform_hz=(2.0, 1.0, 0.25), thresholds=(0.2, 0.5), ward_per_minute=(30.0, 6.0)
    )
    result = selective.evaluate_selective(evaluate.streams_of(runs), fake_decode, config)
    data = {
        "model": {
            "checkpoint": "ckpt",
            "model_id": "synthetic",
            "y_encoder_id": "none@sha256:0",
            "query": "",
            "retrieval_query": "",
            "clip_frames": 8,
        },
        "data": {
            "episodes": [r.name for r in runs],
            "steps": 300,
            "minutes": sum(r.minutes for r in runs),
            "labels": LABELS,
            "step_hz": 10.0,
            "sample_hz": 10.0,
        },
        "tracker": evaluate.tracker_summary(evaluate.default_tracker()),
        "state": state,
        "reworded": evaluate.reworded_metrics(runs, [LABELS], state["stabilised"]["accuracy"]),
        "retrieval": {
            "clips": 100,
            "r@1": 0.42,
            "r@5": 0.9,
            "meaning_r@1": 0.73,
            "state_colour_r@1": 0.31,
            "state_r@1": 0.12,
        },
        "captions": evaluate.caption_metrics(runs, fake_decode),
        "selective": evaluate.selective_dict(result),
        "episodes": [evaluate.episode_row(r) for r in runs],
        "timing": {"replay_s": 1.0, "decode_s": 2.0},
    }
    data["targets"] = evaluate.targets(data)
    matrix = np.eye(3, 6, dtype=np.float32)
    return evaluate.Evaluation(data, runs, matrix, result)


def test_state_metrics_of_a_lagging_label(evaluation: evaluate.Evaluation) -> None:
    """A 3-step lag over 6 runs of 25 steps: 3 unknown steps and 3 late steps at each of the 5
    changes are wrong; the start adds one switch (unknown -> idle) and one segment."""
    stab = evaluation.report["state"]["stabilised"]
    assert stab["accuracy"] == pytest.approx(132 / 150)
    assert stab["unknown_fraction"] == pytest.approx(3 / 150)
    assert stab["flicker"] == pytest.approx(6 / 5)  # 6 switches (unknown->idle) against 5
    assert stab["edit"] == pytest.approx(100 * (1 - 1 / 7))  # one extra (unknown) segment
    assert np.asarray(stab["confusion"]).sum() == 300
    assert np.asarray(stab["confusion"])[:, -1].sum() == 6


def test_lag_metrics_show_a_3_step_lag(evaluation: evaluate.Evaluation) -> None:
    """The same lagging label: wrong for the first 3 steps after every true change (and the
    episode's start), right from the fourth on; the truth 3 steps late loses 3 steps per change
    only (it starts with the right label where the tracker says unknown)."""
    lag = evaluation.report["state"]["lag"]
    assert lag["delayed_truth_accuracy"] == pytest.approx(
        {"1": 145 / 150, "2": 140 / 150, "3": 135 / 150}
    )
    assert lag["stabilised"] == pytest.approx({"0": 0.0, "1": 0.0, "2": 0.0, "3": 1.0, "4+": 1.0})
    assert lag["steps_since_change"]["0"] == pytest.approx(6 / 150)  # start + 5 changes
    assert sum(lag["steps_since_change"].values()) == pytest.approx(1.0)
    text = report.markdown(evaluation.report, {})
    assert "would score 96.7% / 93.3% / 90.0% (k = 1, 2, 3)" in text


def test_report_names_the_tracker_settings(evaluation: evaluate.Evaluation) -> None:
    """The report says which tracker settings made the stabilised label: the node's defaults
    with the default labels file's transition model; without one the lag has no effect."""
    default = StateTrackerConfig()
    text = report.markdown(evaluation.report, {})
    assert (
        f"- state tracker: temperature {default.temperature:g}, smoothing {default.smoothing:g}"
        in text
    )
    assert f"transition model: 42 rates, 7 duration shapes; lag {default.lag_steps} steps" in text
    bare = {**evaluation.report, "tracker": evaluate.tracker_summary(StateTrackerConfig())}
    assert "transition model: 0 rates, 0 duration shapes; lag 0 steps" in report.markdown(bare, {})


def test_report_names_the_baseline_model(evaluation: evaluate.Evaluation) -> None:
    """The report says which model the per-frame baseline ran: the evaluated one, or one of
    its own with its clip length and query."""
    assert "no smoothing, with the evaluated model." in report.markdown(evaluation.report, {})
    own = {"checkpoint": "runs/frame/model", "model_id": "f", "query": "q?", "clip_frames": 1}
    data = {**evaluation.report, "model": {**evaluation.report["model"], "baseline": own}}
    text = report.markdown(data, {})
    assert "with a model of its own: `runs/frame/model` (1-frame clips), query 'q?'." in text
    own["clip_frames"] = 8
    assert "(8-frame clips, the frame repeated)" in report.markdown(data, {})


def test_target_text_writes_values_in_their_units() -> None:
    """A target's value and bound as the report and the command print them: a fraction in
    percent, a reduction no setting reached as "not reached" (not "nan")."""
    accuracy = evaluate._target(
        "stabilised accuracy", 0.9004, ">=", "stabilised_accuracy", "fraction"
    )
    assert report.target_text(accuracy) == ("90.0%", ">= 90.0%")
    reduction = evaluate._target("online", float("nan"), ">=", "online_reduction", "times")
    assert report.target_text(reduction) == ("not reached", ">= 2.85x")
    assert report.target_text({**reduction, "shown": "undefined"})[0] == "undefined"


def test_targets_rows_compare_values_with_bounds(evaluation: evaluate.Evaluation) -> None:
    """Every target row says whether its value meets its bound: accuracy 88% misses 90%,
    flicker 1.2 meets 1.5, R@1 42% misses 50%."""
    rows = {r["name"]: r for r in evaluation.report["targets"]}
    assert rows["stabilised accuracy"]["met"] is False
    assert rows["flicker (stabilised)"]["met"] is True
    assert rows["retrieval R@1 among 100 clips"]["met"] is False
    assert rows["reworded prompts: accuracy drop"]["value"] == pytest.approx(0.0)
    for row in rows.values():
        value, bound = row["value"], row["target"]
        if math.isfinite(value):
            assert row["met"] == (value >= bound if row["op"] == ">=" else value <= bound)


def test_write_report_writes_markdown_json_and_plots(
    evaluation: evaluate.Evaluation, tmp_path
) -> None:
    """report.md with every section, metrics.json that parses, and one PNG per plot."""
    path = report.write_report(evaluation, tmp_path / "out")
    out = tmp_path / "out"
    text = path.read_text()
    for heading in (
        "## Targets",
        "## Robot state",
        "## Reworded label prompts",
        "## Text-to-clip retrieval",
        "## Captions",
        "## Selective decoding",
        "## Episodes",
    ):
        assert heading in text
    assert "](timeline_ep_a.png)" in text
    assert "![selective decoding](selective_decoding.png)" in text
    names = [
        "confusion.png",
        "embedding_map.png",
        "selective_decoding.png",
        "timeline_ep_a.png",
        "timeline_ep_b.png",
    ]
    for name in names:
        assert (out / name).read_bytes()[:8] == PNG, name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["state"]["stabilised"]["accuracy"] == pytest.approx(132 / 150)
    assert metrics["selective"]["reference"]["parameter"] == 1.0


def test_markdown_marks_missed_targets_and_unmeasured_sections(
    evaluation: evaluate.Evaluation,
) -> None:
    """A missed target is bold "no"; absent reworded/retrieval/selective results say so."""
    data = dict(evaluation.report)
    text = report.markdown(data, {})
    assert "| retrieval R@1 among 100 clips | 42.0% | >= 50.0% | **no** |" in text
    assert "picked at random among the clips that fit it would reach R@1 73.0%" in text
    assert "knew the state of every clip but not its object would reach R@1 12.0%" in text
    assert "the object's colour but not its shape 31.0%" in text
    data.update(reworded=None, retrieval=None, selective=None, captions=None)
    text = report.markdown(data, {})
    assert "Not measured: some label has no held-out rewording" in text
    assert "Not measured: fewer than two captioned moments" in text
    assert "Not measured: no caption changes" in text


def test_timelines_can_be_limited(evaluation: evaluate.Evaluation, tmp_path) -> None:
    """`timelines=1` draws the first episode's timeline only."""
    report.write_report(evaluation, tmp_path, timelines=1)
    assert (tmp_path / "timeline_ep_a.png").is_file()
    assert not (tmp_path / "timeline_ep_b.png").exists()


def test_label_colours_are_distinct_and_unknown_is_grey() -> None:
    """Every label gets its own colour; unknown is grey."""
    colours = report.label_colours([f"l{i}" for i in range(12)])
    assert len(set(colours.values())) == 13
    assert colours["unknown"] == report.UNKNOWN_COLOUR


def test_zero_reference_quality_makes_the_reduction_undefined(
    evaluation: evaluate.Evaluation,
) -> None:
    """When 1 Hz uniform decoding scores CIDEr-D 0 the reduction target says "undefined"."""
    data = json.loads(json.dumps(evaluation.report))
    data["selective"]["reference"]["cider"] = 0.0
    data["targets"] = evaluate.targets(data)
    rows = [r for r in data["targets"] if r["name"].startswith("online segmenter")]
    assert len(rows) == 2
    assert all(r["shown"].startswith("undefined") for r in rows)
    assert "| undefined (reference CIDEr-D is 0) |" in report.markdown(data, {})


def test_metrics_json_writes_infinities_as_strings(
    evaluation: evaluate.Evaluation, tmp_path
) -> None:
    """JSON has no inf or nan: they are written as strings, the file stays standard JSON."""
    data = json.loads(json.dumps(evaluation.report))
    data["state"]["baseline"]["flicker"] = float("inf")
    broken = evaluate.Evaluation(data, evaluation.runs, evaluation.label_matrix, None)
    report.write_report(broken, tmp_path)
    text = (tmp_path / "metrics.json").read_text()
    assert "Infinity" not in text
    assert json.loads(text)["state"]["baseline"]["flicker"] == "inf"
    assert not (tmp_path / "selective_decoding.png").exists()
