"""Replaying held-out episode bags through PerceptionPipeline with the micro model (random
weights over the real MiniLM): the plumbing, not the quality, is under test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import micro_minilm_dict

from vljepa_ros.data.captions import HELDOUT_PROMPTS
from vljepa_ros.data.groundtruth import STATES
from vljepa_ros.labels import LabelSet
from vljepa_ros.stream.state_tracker import UNKNOWN
from vljepa_ros.train import evaluate, metrics, selective, tune
from vljepa_ros.train.targets import parse_object

NS = 1_000_000_000
TINY_SWEEP = selective.SelectiveConfig(
    uniform_hz=(1.0, 0.25), thresholds=(0.1,), ward_per_minute=(6.0,), shift_only=False
)


@pytest.fixture(scope="module")
def bags(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two short simulated episodes (48 px, about 9 s each) written as MCAP bags."""
    from vljepa_ros.data.bag import write_episode_bag
    from vljepa_ros.data.sim import SimConfig, generate_episode

    folder = tmp_path_factory.mktemp("heldout")
    config = SimConfig(image_size=48, max_duration_s=9.0, cycles=(1, 1), idle_s=(0.5, 1.0))
    return [
        write_episode_bag(folder / f"episode_{k:05d}", generate_episode(config, 900 + k))
        for k in range(2)
    ]


@pytest.fixture(scope="module")
def runtime(micro_checkpoint: Path):
    from vljepa_ros.model import VLJepaRuntime

    return VLJepaRuntime.load(micro_checkpoint)


@pytest.fixture(scope="module")
def episode(bags: list[Path]):
    from vljepa_ros.data.bag import read_episode

    return read_episode(bags[0])


@pytest.fixture(scope="module")
def run(runtime, episode) -> evaluate.EpisodeRun:
    return evaluate.replay_episode(runtime, episode, evaluate.EvalConfig(), name="ep0")


def test_replay_steps_once_per_frame_with_its_ground_truth(run, episode) -> None:
    """At 10 Hz steps over a 10 fps camera every frame makes a step; each step's truth,
    caption and stamp are those of its newest frame."""
    assert len(run.truth) == len(episode.stamps_ns)
    assert np.array_equal(run.stamps_ns, episode.stamps_ns)
    assert run.truth == episode.states
    assert run.captions == episode.captions
    assert run.embeddings.shape == (len(run.truth), 384)
    assert np.linalg.norm(run.embeddings, axis=1) == pytest.approx(1.0, abs=1e-5)


def test_replay_labels_come_from_the_label_set(run) -> None:
    """Stabilised labels are labels or unknown; instant and baseline labels are labels."""
    assert set(run.stabilised) <= {*STATES, UNKNOWN}
    assert set(run.instant) <= set(STATES)
    assert set(run.baseline) <= set(STATES)
    assert len(run.baseline) == len(run.instant) == len(run.truth)


def test_replay_is_what_the_pipeline_computes(runtime, episode, run) -> None:
    """Driving a PerceptionPipeline by hand (offer each frame, then step) gives the replay's
    embeddings and labels exactly: the evaluation describes what the node computes."""
    from vljepa_ros.stream.pipeline import PerceptionPipeline, PipelineConfig

    config = PipelineConfig(
        query=runtime.cfg.default_query,
        labels=evaluate.load_labels(),
        tracker=evaluate.default_tracker(),  # the node's: with the labels file's model
    )
    pipe = PerceptionPipeline(runtime, config)
    results = []
    for frame, stamp in zip(episode.frames, episode.stamps_ns, strict=True):
        pipe.offer("camera", frame, int(stamp), int(stamp))
        results += pipe.step()
    # with the tracker's lag a step's stabilised label comes with a later step, the last
    # steps' from the flush at the end of the episode
    assert tune.stabilised_labels([r.state for r in results] + pipe.flush("camera")) == (
        run.stabilised
    )
    assert [r.state.instant_label for r in results] == run.instant
    assert np.stack([r.embedding for r in results]) == pytest.approx(run.embeddings, abs=1e-6)


def test_baseline_embeds_one_frame_clips(runtime, episode, run) -> None:
    """The per-frame baseline is the label nearest to the newest frame alone."""
    labels = evaluate.load_labels()
    k = len(run.truth) // 2
    vector = runtime.embed_clip(episode.frames[k]).numpy()
    scores = vector @ runtime.encode_texts(list(labels.values())).numpy().T
    assert run.baseline[k] == list(labels)[int(np.argmax(scores))]


@pytest.fixture(scope="module")
def one_frame_runtime(tmp_path_factory: pytest.TempPathFactory, bert_folder: Path):
    """A micro model of one-frame clips (random weights, another seed), saved and loaded as a
    real checkpoint: a per-frame baseline's model of its own."""
    import torch

    from vljepa_ros.model import VLJepa, VLJepaConfig, VLJepaRuntime, save_checkpoint

    data = micro_minilm_dict(bert_folder)
    data["default_query"] = "what is the arm doing?"
    data["x_encoder"].update(num_frames=1, tubelet_size=1)
    torch.manual_seed(5)
    path = tmp_path_factory.mktemp("ckpt") / "one_frame"
    save_checkpoint(VLJepa(VLJepaConfig.from_dict(data)), path)
    return VLJepaRuntime.load(path)


def test_baseline_of_its_own_model(runtime, one_frame_runtime, episode) -> None:
    """With a baseline model, the per-frame label is that model's prompt nearest to its
    embedding of the newest frame (as recorded, with its own query); nothing else changes.
    Random micro models rank prompts alike on most frames, so two prompts the models order
    differently on some frame are the labels: the two baselines must differ there."""
    from vljepa_ros.stream.state_tracker import StateTrackerConfig

    prompts = list(evaluate.load_labels().values())
    frames = np.stack(episode.frames)[:, None]
    own = one_frame_runtime.embed_clips(frames, "what is the arm doing?").numpy()
    own = own @ one_frame_runtime.encode_texts(prompts).numpy().T
    same = runtime.embed_clips(frames).numpy() @ runtime.encode_texts(prompts).numpy().T
    pairs = [
        (a, b)
        for a in range(len(prompts))
        for b in range(a)
        if np.any((own[:, a] > own[:, b]) != (same[:, a] > same[:, b]))
    ]
    assert pairs, "the two random models rank every pair of prompts alike"
    a, b = pairs[0]
    config = evaluate.EvalConfig(
        labels={"a": prompts[a], "b": prompts[b]}, tracker=StateTrackerConfig()
    )
    plain = evaluate.replay_episode(runtime, episode, config, name="ep0")
    with_own = evaluate.replay_episode(
        runtime, episode, config, name="ep0", baseline=one_frame_runtime
    )
    assert with_own.baseline == ["a" if x else "b" for x in own[:, a] > own[:, b]]
    assert plain.baseline == ["a" if x else "b" for x in same[:, a] > same[:, b]]
    assert with_own.baseline != plain.baseline
    assert with_own.instant == plain.instant
    assert with_own.stabilised == plain.stabilised
    assert with_own.embeddings == pytest.approx(plain.embeddings)


def test_lower_step_rate_halves_the_steps(runtime, episode) -> None:
    """Steps at 5 Hz over a 10 fps camera: one step every other frame (the last step may
    follow the one before by a single frame, when the final frame falls between steps)."""
    config = evaluate.EvalConfig(step_hz=5.0, rewordings={})
    half = evaluate.replay_episode(runtime, episode, config)
    assert len(half.truth) == pytest.approx(len(episode.stamps_ns) / 2, abs=1)
    assert np.all(np.diff(half.stamps_ns)[:-1] == NS // 5)
    assert half.stamps_ns[-1] == episode.stamps_ns[-1]


def test_clip_stride_replays_longer_clips_at_the_same_step_rate(runtime, episode, run) -> None:
    """clip_stride 2: still one step per frame, each clip every other frame back from the
    newest (the replay checks its clip bookkeeping against the clip buffer's), and the
    embeddings differ from stride 1 once a clip spans more than it did."""
    config = evaluate.EvalConfig(clip_stride=2, rewordings={})
    strided = evaluate.replay_episode(runtime, episode, config)
    assert len(strided.truth) == len(run.truth)
    assert np.array_equal(strided.stamps_ns, run.stamps_ns)
    assert not np.allclose(strided.embeddings[-1], run.embeddings[-1], atol=1e-4)


def test_reworded_replay_tracks_every_variant(run) -> None:
    """The held-out prompts give two reworded label sets, each tracked over every step."""
    assert len(run.reworded) == 2
    for stabilised, instant in run.reworded:
        assert len(stabilised) == len(instant) == len(run.truth)


@pytest.mark.parametrize(
    ("labels", "rewordings", "count"),
    [
        ({s: s for s in STATES}, None, 2),
        ({"idle": "x", "dancing": "y"}, None, 0),
        ({"a": "x", "b": "y"}, {"a": ["p", "q", "r"], "b": ["s"]}, 3),
    ],
)
def test_reworded_variants(labels: dict, rewordings, count: int) -> None:
    """One variant per rewording (cycling short lists); none when a label has none."""
    config = evaluate.EvalConfig(labels=labels, rewordings=rewordings)
    variants = config.reworded_variants()
    assert len(variants) == count
    for variant in variants:
        assert list(variant) == list(labels)
    if rewordings is None and count:
        assert variants[0]["idle"] == HELDOUT_PROMPTS["idle"][0]


def test_retrieval_moments_are_caption_runs(run) -> None:
    """One retrieval moment per caption run, embedded as its middle step, with the state and
    the object that step shows."""
    runs = metrics.runs(run.captions)
    assert [c for c, _, _ in run.moments] == [r.label for r in runs]
    middle = (runs[0].start + runs[0].end - 1) // 2
    assert run.moments[0][2] == pytest.approx(run.embeddings[middle])
    for (caption, shows, _), r in zip(run.moments, runs, strict=True):
        assert shows[0] == run.truth[(r.start + r.end - 1) // 2]
        named = parse_object(caption)
        assert named is None or shows[1:] == named


def test_oracle_fits_know_only_what_they_are_told() -> None:
    """Three captions against four clips: the state-only oracle fits every clip of the
    caption's state, the colour oracle also needs the colour, the full one the shape too; a
    caption that names no object fits every clip of its state whatever the oracle knows."""
    captions = [
        ("lifting", ("red", "cube")),
        ("lifting", ("blue", "ball")),
        ("idle", None),
    ]
    shown = [
        ("lifting", "red", "cube"),
        ("lifting", "blue", "ball"),
        ("idle", "red", "ball"),
        ("lifting", "red", "ball"),
    ]
    state = evaluate.oracle_fits(captions, shown, ())
    colour = evaluate.oracle_fits(captions, shown, ("colour",))
    full = evaluate.oracle_fits(captions, shown, ("colour", "shape"))
    assert state.tolist() == [[1, 1, 0, 1], [1, 1, 0, 1], [0, 0, 1, 0]]
    assert colour.tolist() == [[1, 0, 0, 1], [0, 1, 0, 0], [0, 0, 1, 0]]
    assert full.tolist() == [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]
    assert metrics.meaning_r1(state) < metrics.meaning_r1(colour) < metrics.meaning_r1(full)


def test_evaluate_reports_numbers_in_range(runtime, bags: list[Path]) -> None:
    """A full evaluation over two bags: every figure in its range, every target judged."""
    config = evaluate.EvalConfig(selective=TINY_SWEEP, max_text_length=4, retrieval_clips=5)
    result = evaluate.evaluate(runtime, bags, config, checkpoint="micro")
    report = result.report
    assert report["data"]["episodes"] == [b.name for b in bags]
    for kind in ("stabilised", "instant", "baseline"):
        state = report["state"][kind]
        assert 0 <= state["accuracy"] <= 1
        assert 0 <= state["macro_f1"] <= 1
        assert 0 <= state["edit"] <= 100
        assert all(0 <= state[f"f1@{k}"] <= 100 for k in (10, 25, 50))
        assert np.asarray(state["confusion"]).sum() == report["data"]["steps"]
    retrieval = report["retrieval"]
    assert retrieval["clips"] == 5
    assert 0 <= retrieval["r@1"] <= retrieval["r@5"] <= 1
    assert 1 / retrieval["clips"] <= retrieval["state_r@1"] <= retrieval["state_colour_r@1"]
    assert retrieval["state_colour_r@1"] <= retrieval["meaning_r@1"] <= 1
    assert report["captions"]["segments"] > 0
    assert report["captions"]["cider_d"] >= 0
    selective_points = report["selective"]["points"]
    assert len(selective_points) == len(TINY_SWEEP.methods())
    assert all(p["decodes"] > 0 for p in selective_points)
    cost = report["selective"]["cost"]  # the reference first, then each family's match
    assert cost[0]["family"] == selective.UNIFORM
    assert cost[0]["parameter"] == TINY_SWEEP.reference_hz
    assert all(c["decodes_per_minute"] > 0 and c["wall_s_per_minute"] > 0 for c in cost)
    assert report["selective"]["stream_minutes"] > 0
    assert all(isinstance(t["met"], bool) for t in report["targets"])
    assert len(result.runs) == 2
    assert result.label_matrix.shape == (7, 384)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("labels: {a: x}\n", None),
        ("labels: []\n", "must hold"),
        ("other: {a: x}\n", "must hold"),
        ("labels: {a: x\n", "not valid YAML"),
        ("labels: {a: x}\ntransitions: {}\n", None),
        ("labels: {a: x}\nextra: 1\n", "nothing else"),
        ("labels: {a: x}\ntransitions: [a]\n", "must be {from: {to: rate}}"),
        ("labels: {a: x}\ntransitions: {a: {b: 1.0}}\n", "names 'b', which is not one"),
        ("labels: {a: x}\ntransitions: {a: {a: 1.0}}\n", "from a label to itself"),
        ("labels: {a: x, b: y}\ntransitions: {a: {b: -1}}\n", "needs a rate >= 0"),
        ("labels: {a: x, b: y}\ntransitions: {a: {b: fast}}\n", "needs a rate >= 0"),
        ("labels: {a: x, b: y}\ntransitions: {a: b}\n", "transitions of 'a' must be"),
        ("labels: {a: x}\nduration_shapes: {a: 3}\n", "duration_shapes need transitions"),
        (
            "labels: {a: x, b: y}\ntransitions: {a: {b: 1}}\nduration_shapes: {c: 3}\n",
            "names 'c', which is not one",
        ),
        (
            "labels: {a: x, b: y}\ntransitions: {a: {b: 1}}\nduration_shapes: {a: 0.5}\n",
            "whole number of phases",
        ),
        (
            "labels: {a: x, b: y}\ntransitions: {a: {b: 1}}\nduration_shapes: [a]\n",
            "must be {label: phases}",
        ),
    ],
)
def test_load_labels(tmp_path: Path, content: str, message: str | None) -> None:
    """A labels file holds `labels: {label: prompt}` and optionally `transitions`; anything
    else is a clear error."""
    path = tmp_path / "labels.yaml"
    path.write_text(content)
    if message is None:
        assert evaluate.load_labels(path) == {"a": "x"}
        assert evaluate.load_label_set(path) == LabelSet({"a": "x"})
    else:
        with pytest.raises(evaluate.EvalError, match=message):
            evaluate.load_labels(path)


def test_default_labels_are_the_robot_states() -> None:
    """Without a file, the package's robot_states.yaml gives the seven canonical states, with
    a rate for every change between them, and the evaluation's default tracker uses them."""
    label_set = evaluate.load_label_set()
    labels, transitions = label_set.labels, label_set.transitions
    assert list(labels) == list(STATES)
    assert len(transitions) == len(STATES) * (len(STATES) - 1)
    rates = {(a, b): rate for a, b, rate in transitions}
    for before, after in zip(STATES, [*STATES[1:], STATES[0]], strict=True):
        # the pick-and-place cycle is far likelier than any other change out of a state
        assert rates[(before, after)] == max(r for (a, _), r in rates.items() if a == before)
    assert {label for label, _ in label_set.duration_shapes} == set(STATES)
    assert all(shape > 1 for _, shape in label_set.duration_shapes)  # regular, not memoryless
    tracker = evaluate.EvalConfig().tracker
    assert tracker.transitions == transitions
    assert tracker.duration_shapes == label_set.duration_shapes


def test_load_rewordings_accepts_lists_and_strings(tmp_path: Path) -> None:
    """Each label maps to a list of prompts or to one prompt."""
    path = tmp_path / "reworded.yaml"
    path.write_text("labels:\n  a: [p, q]\n  b: r\n")
    assert evaluate.load_rewordings(path) == {"a": ("p", "q"), "b": ("r",)}
    path.write_text("labels:\n  a: []\n")
    with pytest.raises(evaluate.EvalError, match="non-empty"):
        evaluate.load_rewordings(path)


def test_find_bags(bags: list[Path], tmp_path: Path) -> None:
    """A folder of bags lists them sorted; a bag folder is itself; no bag is an error."""
    assert evaluate.find_bags(bags[0].parent) == bags
    assert evaluate.find_bags(bags[1]) == [bags[1]]
    with pytest.raises(evaluate.EvalError, match="no rosbag2 folder"):
        evaluate.find_bags(tmp_path)


@pytest.fixture(scope="module")
def banked_runtime(micro_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory):
    """The micro checkpoint with an answer bank of caption paraphrases for its default query."""
    import shutil

    from vljepa_ros.data.captions import TRAIN_TEMPLATES
    from vljepa_ros.model import VLJepaRuntime, load_checkpoint
    from vljepa_ros.model.checkpoint import write_answer_bank

    folder = tmp_path_factory.mktemp("banked") / "micro"
    shutil.copytree(micro_checkpoint, folder)
    model = load_checkpoint(folder)
    texts = [t.format(obj="red cube") for ts in TRAIN_TEMPLATES.values() for t in ts]
    write_answer_bank(model, folder, texts, model.cfg.default_query, labels=len(STATES))
    return VLJepaRuntime.load(folder)


@pytest.mark.parametrize("grounded", [True, False])
def test_prompts_are_grounded_as_the_node_grounds_them(banked_runtime, episode, grounded) -> None:
    """With ground_labels, the original and the reworded prompts are grounded in the answer
    bank (the report says so); without, they are the prompts' own embeddings."""
    config = evaluate.EvalConfig(ground_labels=grounded)
    prompts = list(config.labels.values())
    own = banked_runtime.encode_texts(prompts).numpy()
    assert np.allclose(config.label_matrix(banked_runtime, prompts), own) != grounded
    run = evaluate.replay_episode(banked_runtime, episode, config, name="ep0")
    for variant, labelled in zip(config.reworded_variants(), run.reworded, strict=True):
        matrix = banked_runtime.label_embeddings(list(variant.values()), grounded=grounded)
        expected = tune.track(
            list(config.labels), matrix.numpy(), config.tracker, run.embeddings, run.stamps_ns
        )
        assert labelled == expected
    bank = banked_runtime.answer_bank
    expected_summary = {"answers": len(bank.texts), "neighbours": bank.neighbours}
    assert evaluate.grounding_summary(banked_runtime, config) == (
        expected_summary if grounded else None
    )
