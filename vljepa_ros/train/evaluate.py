"""Evaluate a checkpoint on held-out episodes by replaying them through `PerceptionPipeline`.

Every episode (a rosbag2 folder with per-frame ground-truth state and caption, see
vljepa_ros/data/bag.py) is replayed frame by frame in stamp order through a fresh
`PerceptionPipeline`, the class the perception node runs, stepping at `step_hz` of capture time
with "now" equal to each frame's stamp (no latency, so no frame is dropped as stale). Each step
gives the embedding, the instant label and the stabilised label the node would publish; the
ground truth of a step is the state of its newest frame. From those steps:

- robot-state metrics of the stabilised and the instant label (accuracy, macro-F1, confusion,
  segmental edit score, F1@{10,25,50}, flicker), and of a per-frame baseline: the same model on
  one-frame clips (the newest frame, repeated to fill the clip), or a model of its own trained
  on one-frame clips, instant label, no smoothing;
- the same state readout with every label prompt replaced by a held-out rewording: a
  `StateTracker` stepped over the replay's embeddings with the reworded prompt matrix (exactly
  what the pipeline would compute: its embeddings do not depend on the labels);
- text-to-clip retrieval R@1/R@5 among up to 100 clips, one per distinct captioned moment
  across episodes (the step in the middle of a run of one caption), with the replay's query;
- caption CIDEr-D of the text decoded from each ground-truth caption run's average-pooled
  embedding (oracle segmentation), against that run's caption;
- selective decoding (vljepa_ros/train/selective.py).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from vljepa_ros.data.captions import HELDOUT_PROMPTS
from vljepa_ros.labels import LabelSet, read_label_set
from vljepa_ros.stream.state_tracker import UNKNOWN, StateTrackerConfig
from vljepa_ros.train import metrics, selective
from vljepa_ros.train.targets import frame_objects, parse_object
from vljepa_ros.train.tune import TUNED, LabelledStream, stabilised_labels, track

if TYPE_CHECKING:
    from vljepa_ros.data.bag import EpisodeData
    from vljepa_ros.model.api import VLJepaRuntime
    from vljepa_ros.stream.pipeline import PerceptionPipeline, StepResult

NS = 1_000_000_000
CAMERA = "camera"
OVERLAPS = (0.10, 0.25, 0.50)

# Figures the shipped model must reach (docs/evaluation.md).
TARGETS = {
    "stabilised_accuracy": 0.90,
    "macro_f1": 0.85,
    "edit": 85.0,
    "flicker": 1.5,
    "flicker_vs_baseline": 0.2,
    "reworded_drop_points": 5.0,
    "retrieval_r1": 0.50,
    "online_reduction": 2.85,
    "online_reduction_goal": 4.0,
}


class EvalError(ValueError):
    """Evaluation input that cannot be used (no bags, no ground truth, bad labels file)."""


# --------------------------------------------------------------------------- inputs


def load_label_set(path: str | Path | None = None) -> LabelSet:
    """The prompts and the state tracker's transition model of a labels file (default: the
    package's config/robot_states.yaml, the perception node's default).

    Raises:
        EvalError: unreadable or malformed file.
    """
    try:
        return read_label_set(path)
    except ValueError as exc:
        raise EvalError(str(exc)) from exc


def load_labels(path: str | Path | None = None) -> dict[str, str]:
    """label -> prompt of a labels file, as load_label_set."""
    return load_label_set(path).labels


def tracker_for(label_set: LabelSet) -> StateTrackerConfig:
    """The default tracker settings with the labels file's transition model."""
    return StateTrackerConfig(
        transitions=label_set.transitions, duration_shapes=label_set.duration_shapes
    )


def grounding_summary(runtime: VLJepaRuntime, config: EvalConfig) -> dict[str, Any] | None:
    """How the label prompts were grounded (`model.grounding`), None if they were not."""
    bank = runtime.label_bank(config.state_query(runtime), config.ground_labels)
    return None if bank is None else {"answers": len(bank.texts), "neighbours": bank.neighbours}


def tracker_summary(tracker: StateTrackerConfig) -> dict[str, Any]:
    """The state tracker's settings as a report records them (the transition model counted)."""
    return {
        **{name: getattr(tracker, name) for name in (*TUNED, "lag_steps")},
        "transitions": len(tracker.transitions),
        "duration_shapes": len(tracker.duration_shapes),
    }


def default_tracker() -> StateTrackerConfig:
    """The perception node's default tracker: the default labels file's transition model."""
    return tracker_for(load_label_set())


def load_rewordings(path: str | Path) -> dict[str, tuple[str, ...]]:
    """label -> rewordings from YAML `labels: {label: [prompt, ...]}` (or one string each).

    Raises:
        EvalError: unreadable or malformed file.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise EvalError(f"rewordings file {path} cannot be read: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("labels"), dict):
        raise EvalError(f"rewordings file {path} must hold `labels: {{label: [prompt, ...]}}`")
    out: dict[str, tuple[str, ...]] = {}
    for label, value in data["labels"].items():
        prompts = (value,) if isinstance(value, str) else tuple(value or ())
        if not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
            raise EvalError(f"rewordings file {path}: label '{label}' needs non-empty prompts")
        out[str(label)] = prompts
    return out


def find_bags(folder: str | Path) -> list[Path]:
    """The rosbag2 folders (holding metadata.yaml) in `folder`, sorted; or `folder` itself.

    Raises:
        EvalError: no bag there.
    """
    folder = Path(folder)
    if (folder / "metadata.yaml").is_file():
        return [folder]
    bags = (
        sorted(p for p in folder.iterdir() if (p / "metadata.yaml").is_file())
        if (folder.is_dir())
        else []
    )
    if not bags:
        raise EvalError(f"no rosbag2 folder (with metadata.yaml) in {folder}")
    return bags


@dataclass(frozen=True)
class EvalConfig:
    """What is evaluated and how; defaults match the perception and decoder nodes."""

    labels: Mapping[str, str] = field(default_factory=load_labels)
    query: str | None = None  # state readout; None: the model's default, as the node
    retrieval_query: str | None = None  # None: the model's default query
    rewordings: Mapping[str, Sequence[str]] | None = None  # None: the held-out prompts
    step_hz: float = 10.0
    sample_hz: float = 10.0
    clip_stride: int = 1
    tracker: StateTrackerConfig = field(default_factory=default_tracker)
    ground_labels: bool = True  # as the node's ground_labels
    retrieval_clips: int = 100
    max_text_length: int = 32
    frame_size: int | None = None  # resize frames to size x size while reading (memory bound)
    seed: int = 0
    baseline_batch: int = 32
    selective: selective.SelectiveConfig = field(default_factory=selective.SelectiveConfig)

    def __post_init__(self) -> None:
        if not 0 < self.step_hz <= 120:
            raise ValueError(f"step_hz must be in (0, 120], got {self.step_hz}")
        if self.retrieval_clips < 2:
            raise ValueError(f"retrieval_clips must be >= 2, got {self.retrieval_clips}")
        if self.clip_stride < 1:
            raise ValueError(f"clip_stride must be >= 1, got {self.clip_stride}")
        if self.baseline_batch < 1:
            raise ValueError(f"baseline_batch must be >= 1, got {self.baseline_batch}")

    def state_query(self, runtime: VLJepaRuntime) -> str:
        """The query the replay conditions on."""
        return runtime.cfg.default_query if self.query is None else self.query

    def label_matrix(self, runtime: VLJepaRuntime, prompts: Sequence[str]) -> np.ndarray:
        """(L, D) label embeddings of `prompts` for the state query, as the node has them."""
        query = self.state_query(runtime)
        return runtime.label_embeddings(list(prompts), query, self.ground_labels).numpy()

    def retrieval_query_for(self, runtime: VLJepaRuntime) -> str:
        """The query retrieval clips are embedded with."""
        return runtime.cfg.default_query if self.retrieval_query is None else self.retrieval_query

    def reworded_variants(self) -> list[dict[str, str]]:
        """Label sets with every prompt reworded (variant k takes each label's k-th rewording,
        cycling); empty when a label has no rewording."""
        source = self.rewordings if self.rewordings is not None else HELDOUT_PROMPTS
        if not all(source.get(label) for label in self.labels):
            return []
        count = max(len(source[label]) for label in self.labels)
        return [
            {label: source[label][k % len(source[label])] for label in self.labels}
            for k in range(count)
        ]


# --------------------------------------------------------------------------- replay


@dataclass
class EpisodeRun:
    """One replayed episode: per-step outputs and ground truth (steps with truth only)."""

    name: str
    stamps_ns: np.ndarray  # (S,) newest frame of each step's clip
    truth: list[str]
    captions: list[str | None]
    stabilised: list[str]  # each step's stabilised label (with a lag, reported by a later step)
    instant: list[str]
    baseline: list[str]
    embeddings: np.ndarray  # (S, D)
    reworded: list[tuple[list[str], list[str]]]  # per variant: (stabilised, instant)
    annotations: list[tuple[int, str]]  # frame-level caption changes
    # per caption run, at its middle step: caption, what the frame shows (state, and the colour
    # and shape of the object its episode's captions name there, "" if none), retrieval embedding
    moments: list[tuple[str, tuple[str, str, str], np.ndarray]]

    @property
    def minutes(self) -> float:
        return selective.stream_minutes(self.stamps_ns)


def _replay(
    pipe: PerceptionPipeline, episode: EpisodeData, step_hz: float
) -> tuple[list[StepResult], list[list[int]]]:
    """Offer every frame in stamp order, stepping every 1/step_hz of capture time; returns the
    step results and, per step, the frame indices of its clip (oldest first, padded as the
    clip buffer pads)."""
    from vljepa_ros.stream.clip_buffer import PushOutcome, clip_indices

    stamps = np.asarray(episode.stamps_ns, dtype=np.int64)
    period = round(NS / step_hz)
    clip_cfg = pipe.cameras[CAMERA].buffer.config
    sampled: deque[int] = deque(maxlen=clip_cfg.span)
    results: list[StepResult] = []
    clips: list[list[int]] = []
    next_frame, step_time = 0, int(stamps[0])
    while next_frame < len(stamps):
        while next_frame < len(stamps) and stamps[next_frame] <= step_time:
            stamp = int(stamps[next_frame])
            outcome = pipe.offer(CAMERA, episode.frames[next_frame], stamp, stamp)
            if outcome is PushOutcome.RESET:
                sampled.clear()
            if outcome in (PushOutcome.SAMPLED, PushOutcome.RESET):
                sampled.append(next_frame)
            next_frame += 1
        for result in pipe.step():
            picked = clip_indices(len(sampled), clip_cfg.frames, clip_cfg.stride)
            clip = [sampled[i] for i in picked]
            if (stamps[clip[0]], stamps[clip[-1]]) != (result.clip_start_ns, result.stamp_ns):
                raise RuntimeError("replay lost track of the clip buffer's frames")
            results.append(result)
            clips.append(clip)
        step_time += period
    return results, clips


def _replay_labelled(
    runtime: VLJepaRuntime, episode: EpisodeData, config: EvalConfig, name: str
) -> tuple[PerceptionPipeline, list[StepResult], list[list[int]], list[str]]:
    """Replay through a fresh PerceptionPipeline; the steps whose newest frame has a
    ground-truth state, with their clips' frame indices and their stabilised labels.

    Raises:
        EvalError: the episode has no ground-truth state on any step.
    """
    from vljepa_ros.stream.pipeline import PerceptionPipeline, PipelineConfig

    query = config.state_query(runtime)
    pipe = PerceptionPipeline(
        runtime,
        PipelineConfig(
            query=query,
            labels=dict(config.labels),
            ground_labels=config.ground_labels,
            sample_hz=config.sample_hz,
            clip_stride=config.clip_stride,
            tracker=config.tracker,
        ),
        cameras=(CAMERA,),
    )
    results, clips = _replay(pipe, episode, config.step_hz)
    # each step's stabilised label (with the tracker's lag, reported by a later step)
    stabilised = dict(zip(
        [r.stamp_ns for r in results],
        stabilised_labels([r.state for r in results] + pipe.flush(CAMERA)),
        strict=True,
    ))  # fmt: skip
    truth = [episode.states[clip[-1]] for clip in clips]
    keep = [t is not None for t in truth]
    if not any(keep):
        raise EvalError(f"{name}: no step has a ground-truth state")
    results = [r for r, k in zip(results, keep, strict=True) if k]
    clips = [c for c, k in zip(clips, keep, strict=True) if k]
    return pipe, results, clips, [stabilised[r.stamp_ns] for r in results]


def labelled_stream(
    runtime: VLJepaRuntime, episode: EpisodeData, config: EvalConfig, name: str = "episode"
) -> LabelledStream:
    """The replay's embeddings with the ground-truth state of each step (for tuning).

    Raises:
        EvalError: the episode has no ground-truth state on any step.
    """
    _, results, clips, _ = _replay_labelled(runtime, episode, config, name)
    return LabelledStream(
        stamps_ns=np.array([r.stamp_ns for r in results], dtype=np.int64),
        embeddings=np.stack([r.embedding for r in results]).astype(np.float32),
        truth=[str(episode.states[clip[-1]]) for clip in clips],
    )


def replay_episode(
    runtime: VLJepaRuntime,
    episode: EpisodeData,
    config: EvalConfig,
    name: str = "episode",
    baseline: VLJepaRuntime | None = None,
) -> EpisodeRun:
    """Replay one episode through a fresh PerceptionPipeline; see the module docstring.
    `baseline`: the model of the per-frame baseline (default: `runtime` itself).

    Raises:
        EvalError: the episode has no ground-truth state on any step.
    """
    pipe, results, clips, stabilised = _replay_labelled(runtime, episode, config, name)
    query = config.state_query(runtime)
    newest = [clip[-1] for clip in clips]
    stamps = np.array([r.stamp_ns for r in results], dtype=np.int64)
    embeddings = np.stack([r.embedding for r in results]).astype(np.float32)
    captions = [episode.captions[i] for i in newest]

    def embed(
        frame_lists: Sequence[Sequence[int]], text: str, model: VLJepaRuntime = runtime
    ) -> np.ndarray:
        """Embeddings of clips given as frame indices, in batches (frames shrunk as the
        pipeline shrinks them; another model's preprocessing gets them as recorded)."""
        frame = pipe.shrink if model is runtime else (lambda f: f)
        out = []
        for k in range(0, len(frame_lists), config.baseline_batch):
            chunk = frame_lists[k : k + config.baseline_batch]
            batch = np.stack([np.stack([frame(episode.frames[i]) for i in c]) for c in chunk])
            out.append(model.embed_clips(batch, text).numpy())  # (B, T, H, W, 3) -> (B, D)
        return np.concatenate(out).astype(np.float32)

    # Per-frame baseline: the newest frame alone, instant label, no smoothing; by this model
    # or by a model of its own (trained on one-frame clips), with its own prompt embeddings.
    labels = list(config.labels)
    if baseline is None:
        single, matrix = embed([[i] for i in newest], query), pipe.label_matrix
    else:
        single = embed([[i] for i in newest], config.state_query(baseline), baseline)
        matrix = config.label_matrix(baseline, list(config.labels.values()))
    per_frame = [labels[j] for j in np.argmax(single @ matrix.T, axis=1)]

    reworded = []
    for variant in config.reworded_variants():
        matrix = config.label_matrix(runtime, list(variant.values()))
        reworded.append(track(labels, matrix, config.tracker, embeddings, stamps))

    # Retrieval moments: the middle step of every caption run, embedded with the retrieval
    # query (the replay's embedding when the queries agree).
    middles = [
        ((r.start + r.end - 1) // 2, r.label)
        for r in metrics.runs([c or "" for c in captions])
        if r.label
    ]
    objects = frame_objects(list(episode.captions))
    retrieval_query = config.retrieval_query_for(runtime)
    if retrieval_query == query or not middles:
        vectors = embeddings[[m for m, _ in middles]] if middles else embeddings[:0]
    else:
        vectors = embed([clips[m] for m, _ in middles], retrieval_query)
    return EpisodeRun(
        name=name,
        stamps_ns=stamps,
        truth=[str(episode.states[i]) for i in newest],
        captions=captions,
        stabilised=stabilised,
        instant=[r.state.instant_label for r in results],
        baseline=per_frame,
        embeddings=embeddings,
        reworded=reworded,
        annotations=selective.caption_changes(episode.stamps_ns, episode.captions),
        moments=[
            (c, (str(episode.states[newest[m]]), *(objects[newest[m]] or ("", ""))), v)
            for (m, c), v in zip(middles, vectors, strict=True)
        ],
    )


# --------------------------------------------------------------------------- metrics


def label_metrics(runs: Sequence[EpisodeRun], attr: str, labels: Sequence[str]) -> dict[str, Any]:
    """State metrics of one prediction stream (`stabilised`, `instant` or `baseline`) over
    all runs: frame-wise pooled, edit score averaged over episodes, F1@k from pooled segment
    counts, flicker from pooled switches and minutes."""
    truth = [t for run in runs for t in run.truth]
    pred = [p for run in runs for p in getattr(run, attr)]
    minutes = sum(run.minutes for run in runs)
    pred_switches = sum(metrics.switches(getattr(run, attr)) for run in runs)
    truth_switches = sum(metrics.switches(run.truth) for run in runs)
    out: dict[str, Any] = {
        "accuracy": metrics.accuracy(truth, pred),
        "macro_f1": metrics.macro_f1(truth, pred),
        "per_class_f1": metrics.per_class_f1(truth, pred),
        "unknown_fraction": float(np.mean([p == UNKNOWN for p in pred])),
        "edit": float(np.mean([metrics.edit_score(r.truth, getattr(r, attr)) for r in runs])),
    }
    for overlap in OVERLAPS:
        counts = metrics.SegmentCounts()
        for run in runs:
            counts = counts + metrics.segment_counts(run.truth, getattr(run, attr), overlap)
        out[f"f1@{round(overlap * 100)}"] = counts.f1
    out["switches_per_minute"] = pred_switches / minutes
    out["flicker"] = metrics.flicker_ratio(pred_switches, truth_switches, minutes)
    out["confusion"] = metrics.confusion_matrix(truth, pred, labels).tolist()
    return out


LAG_STEPS = (1, 2, 3)  # the delays of the "truth, k steps late" reference
AFTER_CHANGE = ("0", "1", "2", "3", "4+")  # steps since the true state changed


def lag_metrics(runs: Sequence[EpisodeRun]) -> dict[str, Any]:
    """How much of the error is lag: accuracy of the truth itself delayed by 1-3 steps (what
    a label right everywhere but late would score), and accuracy by steps since the true
    state changed (the first state of an episode counts as a change at its start)."""
    truth = [t for run in runs for t in run.truth]
    delayed = {
        str(k): metrics.accuracy(truth, [d for r in runs for d in metrics.delayed(r.truth, k)])
        for k in LAG_STEPS
    }
    since = np.concatenate([metrics.steps_since_change(r.truth) for r in runs])
    bins = np.minimum(since, len(AFTER_CHANGE) - 1)
    out: dict[str, Any] = {
        "delayed_truth_accuracy": delayed,
        "steps_since_change": {
            key: float(np.mean(bins == b)) for b, key in enumerate(AFTER_CHANGE)
        },
    }
    for attr in ("stabilised", "instant"):
        pred = [p for r in runs for p in getattr(r, attr)]
        right = np.array([p == t for p, t in zip(pred, truth, strict=True)])
        out[attr] = {
            key: float(right[bins == b].mean()) if np.any(bins == b) else None
            for b, key in enumerate(AFTER_CHANGE)
        }
    return out


def state_metrics(runs: Sequence[EpisodeRun], labels: Sequence[str]) -> dict[str, Any]:
    """State metrics of the stabilised label, the instant label and the per-frame baseline,
    and how much of their error is lag."""
    return {
        "stabilised": label_metrics(runs, "stabilised", labels),
        "instant": label_metrics(runs, "instant", labels),
        "baseline": label_metrics(runs, "baseline", labels),
        "truth_switches_per_minute": sum(metrics.switches(r.truth) for r in runs)
        / sum(r.minutes for r in runs),
        "confusion_columns": [*labels, UNKNOWN],
        "lag": lag_metrics(runs),
    }


def streams_of(runs: Sequence[EpisodeRun]) -> list[selective.Stream]:
    """The selective-decoding streams of the runs that have caption changes."""
    return [
        selective.Stream(r.name, r.stamps_ns, r.embeddings, r.stabilised, r.annotations)
        for r in runs
        if r.annotations
    ]


def episode_row(run: EpisodeRun) -> dict[str, Any]:
    """Per-episode summary for the report's table."""
    minutes = run.minutes
    truth_switches = metrics.switches(run.truth)
    return {
        "name": run.name,
        "steps": len(run.truth),
        "minutes": minutes,
        "accuracy": metrics.accuracy(run.truth, run.stabilised),
        "instant_accuracy": metrics.accuracy(run.truth, run.instant),
        "baseline_accuracy": metrics.accuracy(run.truth, run.baseline),
        "edit": metrics.edit_score(run.truth, run.stabilised),
        "flicker": metrics.flicker_ratio(metrics.switches(run.stabilised), truth_switches, minutes),
        "baseline_flicker": metrics.flicker_ratio(
            metrics.switches(run.baseline), truth_switches, minutes
        ),
    }


def reworded_metrics(
    runs: Sequence[EpisodeRun], variants: Sequence[Mapping[str, str]], original: float
) -> dict[str, Any] | None:
    """Accuracy per reworded prompt set and the mean drop (points) from `original`."""
    if not variants:
        return None
    truth = [t for run in runs for t in run.truth]
    rows = []
    for k, variant in enumerate(variants):
        stabilised = [p for run in runs for p in run.reworded[k][0]]
        instant = [p for run in runs for p in run.reworded[k][1]]
        rows.append(
            {
                "prompts": dict(variant),
                "accuracy": metrics.accuracy(truth, stabilised),
                "instant_accuracy": metrics.accuracy(truth, instant),
                "macro_f1": metrics.macro_f1(truth, stabilised),
            }
        )
    mean = float(np.mean([r["accuracy"] for r in rows]))
    return {
        "variants": rows,
        "accuracy": mean,
        "instant_accuracy": float(np.mean([r["instant_accuracy"] for r in rows])),
        "drop_points": 100.0 * (original - mean),
    }


def retrieval_metrics(
    runtime: VLJepaRuntime, runs: Sequence[EpisodeRun], clips: int, seed: int
) -> dict[str, Any] | None:
    """R@1/R@5 text-to-clip among up to `clips` clips: a seeded sample of the captioned
    moments of all runs, one per distinct caption (so every text has one clip of its own).
    `meaning_r@1`: what a model that knows each caption's meaning (state, and the object's
    colour and shape when it names one) but not which fitting clip is its own would score;
    `state_colour_r@1` the same for a model blind to the shape, `state_r@1` for one that
    knows the state alone (blind to the object)."""
    moments = [m for run in runs for m in run.moments]
    order = np.random.default_rng(seed).permutation(len(moments))
    chosen: dict[str, tuple[tuple[str, str, str], np.ndarray]] = {}
    for k in order:
        caption, shows, vector = moments[k]
        chosen.setdefault(caption, (shows, vector))
        if len(chosen) == clips:
            break
    if len(chosen) < 2:
        return None
    text_emb = runtime.encode_texts(list(chosen)).numpy()
    recall = metrics.recall_at_k(text_emb @ np.stack([v for _, v in chosen.values()]).T, (1, 5))
    captions = [(shows[0], parse_object(c)) for c, (shows, _) in chosen.items()]
    shown = [shows for shows, _ in chosen.values()]
    return {
        "clips": len(chosen),
        "r@1": recall[1],
        "r@5": recall[5],
        "meaning_r@1": metrics.meaning_r1(oracle_fits(captions, shown, ("colour", "shape"))),
        "state_colour_r@1": metrics.meaning_r1(oracle_fits(captions, shown, ("colour",))),
        "state_r@1": metrics.meaning_r1(oracle_fits(captions, shown, ())),
    }


def oracle_fits(
    captions: Sequence[tuple[str, tuple[str, str] | None]],
    shown: Sequence[tuple[str, str, str]],
    knows: Sequence[str],
) -> np.ndarray:
    """(Q, C) bool: which clips fit each caption for a model that knows the state and the
    object `knows` ("colour", "shape") of what it sees. `captions`: each caption's state and
    named (colour, shape), None when it names no object; `shown`: each clip's (state, colour,
    shape). A caption that names no object fits every clip of its state."""
    index = {"colour": 0, "shape": 1}
    fields = [index[k] for k in knows]
    return np.array(
        [
            [
                clip[0] == state and (named is None or all(named[f] == clip[1 + f] for f in fields))
                for clip in shown
            ]
            for state, named in captions
        ],
        dtype=bool,
    )


def _decoder(runtime: VLJepaRuntime, max_length: int) -> selective.Decoder:
    import torch

    def decode(vectors: np.ndarray) -> list[str]:
        return runtime.decode_batch(torch.from_numpy(np.asarray(vectors, np.float32)), max_length)

    return decode


def caption_metrics(
    runs: Sequence[EpisodeRun], decode: selective.Decoder, batch: int = 64
) -> dict[str, Any] | None:
    """CIDEr-D of text decoded from every ground-truth caption run's pooled embedding."""
    items: list[tuple[str, np.ndarray]] = []
    for run in runs:
        for r in metrics.runs([c or "" for c in run.captions]):
            if r.label:
                items.append((r.label, selective.pooled(run.embeddings, (r.start, r.end))))
    if not items:
        return None
    texts: list[str] = []
    for k in range(0, len(items), batch):
        texts += decode(np.stack([v for _, v in items[k : k + batch]]))
    score, _ = metrics.cider_d([[c] for c, _ in items], texts)
    examples = [{"truth": c, "decoded": t} for (c, _), t in zip(items[:8], texts, strict=False)]
    return {"segments": len(items), "cider_d": score, "examples": examples}


def selective_dict(result: selective.SelectiveResult) -> dict[str, Any]:
    """JSON form of a selective-decoding result."""
    return {
        "matches": result.matches,
        "reference": {
            **asdict(result.reference),
            "decodes_per_minute": result.reference.decodes_per_minute,
        },
        "points": [
            {**asdict(p), "decodes_per_minute": p.decodes_per_minute} for p in result.points
        ],
        "reductions": {k: asdict(v) for k, v in result.reductions.items()},
        "examples": [{"truth": t, "decoded": d} for t, d in result.examples],
    }


def targets(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The figures the shipped model must reach: name, value, comparison, bound, unit
    ("fraction", "score", "ratio", "points" or "times"), whether it is met, and optionally
    "shown", a text that replaces the value in the report."""
    state = report["state"]
    stab, base = state["stabilised"], state["baseline"]
    relative = stab["flicker"] / base["flicker"] if base["flicker"] > 0 else float("inf")
    rows = [
        _target("stabilised accuracy", stab["accuracy"], ">=", "stabilised_accuracy", "fraction"),
        _target("macro-F1 (stabilised)", stab["macro_f1"], ">=", "macro_f1", "ratio"),
        _target("edit score (stabilised)", stab["edit"], ">=", "edit", "score"),
        _target("flicker (stabilised)", stab["flicker"], "<=", "flicker", "ratio"),
        _target("flicker / per-frame baseline's", relative, "<=", "flicker_vs_baseline", "ratio"),
    ]
    if report.get("reworded"):
        drop = report["reworded"]["drop_points"]
        rows.append(
            _target("reworded prompts: accuracy drop", drop, "<=", "reworded_drop_points", "points")
        )
    if report.get("retrieval"):
        name = f"retrieval R@1 among {report['retrieval']['clips']} clips"
        rows.append(_target(name, report["retrieval"]["r@1"], ">=", "retrieval_r1", "fraction"))
    if report.get("selective"):
        factor = report["selective"]["reductions"].get(selective.ONLINE, {}).get("factor")
        value = float("nan") if factor is None else factor
        reference = report["selective"]["reference"]
        name = f"online segmenter: fewer decodes than {reference['parameter']:g} Hz uniform"
        for suffix, key in (("", "online_reduction"), (" (goal)", "online_reduction_goal")):
            row = _target(name + suffix, value, ">=", key, "times")
            if reference["cider"] <= 0:
                row["shown"] = "undefined (reference CIDEr-D is 0)"
            rows.append(row)
    return rows


def _target(name: str, value: float, op: str, key: str, unit: str) -> dict[str, Any]:
    bound = TARGETS[key]
    met = bool(value >= bound if op == ">=" else value <= bound) if np.isfinite(value) else False
    return {"name": name, "value": value, "op": op, "target": bound, "unit": unit, "met": met}


# --------------------------------------------------------------------------- driver


@dataclass
class Evaluation:
    """Everything `evaluate` computed: the JSON report and the runs for plotting."""

    report: dict[str, Any]
    runs: list[EpisodeRun]
    label_matrix: np.ndarray  # (L, D) embeddings of the label prompts
    selective: selective.SelectiveResult | None


def evaluate(
    runtime: VLJepaRuntime,
    bags: Sequence[str | Path],
    config: EvalConfig | None = None,
    progress: Callable[[str], None] | None = None,
    checkpoint: str = "",
    baseline: VLJepaRuntime | None = None,
    baseline_checkpoint: str = "",
) -> Evaluation:
    """Replay `bags` and compute every metric; see the module docstring. `baseline`: the
    per-frame baseline's own model (default: `runtime` on one-frame clips).

    Raises:
        EvalError: no bags, or no step with ground truth.
    """
    from vljepa_ros.data.bag import read_episode

    config = config or EvalConfig()
    if not bags:
        raise EvalError("no episodes to evaluate")
    say = progress or (lambda _: None)
    timing: dict[str, float] = {}
    start = time.perf_counter()
    runs: list[EpisodeRun] = []
    for path in bags:
        path = Path(path)
        say(f"replaying {path.name}")
        episode = read_episode(path, size=config.frame_size)
        runs.append(replay_episode(runtime, episode, config, path.name, baseline))
    timing["replay_s"] = time.perf_counter() - start

    labels = list(config.labels)
    query = config.state_query(runtime)
    state = state_metrics(runs, labels)
    variants = config.reworded_variants()
    report: dict[str, Any] = {
        "model": {
            "checkpoint": checkpoint,
            "model_id": runtime.model_id,
            "y_encoder_id": runtime.y_encoder_id,
            "query": query,
            "retrieval_query": config.retrieval_query_for(runtime),
            "clip_frames": runtime.cfg.x_encoder.num_frames,
            "label_grounding": grounding_summary(runtime, config),
            "baseline": None
            if baseline is None
            else {
                "checkpoint": baseline_checkpoint,
                "model_id": baseline.model_id,
                "query": config.state_query(baseline),
                "clip_frames": baseline.cfg.x_encoder.num_frames,
            },
        },
        "data": {
            "episodes": [r.name for r in runs],
            "steps": sum(len(r.truth) for r in runs),
            "minutes": sum(r.minutes for r in runs),
            "labels": dict(config.labels),
            "step_hz": config.step_hz,
            "sample_hz": config.sample_hz,
        },
        "tracker": tracker_summary(config.tracker),
        "state": state,
        "reworded": reworded_metrics(runs, variants, state["stabilised"]["accuracy"]),
        "retrieval": retrieval_metrics(runtime, runs, config.retrieval_clips, config.seed),
        "episodes": [episode_row(r) for r in runs],
    }

    start = time.perf_counter()
    say("decoding captions")
    decode = _decoder(runtime, config.max_text_length)
    report["captions"] = caption_metrics(runs, decode, config.selective.batch)
    streams = streams_of(runs)
    result = None
    if streams:
        result = selective.evaluate_selective(
            streams, decode, config.selective, lambda m: say(f"selective decoding: {m}")
        )
        report["selective"] = selective_dict(result)
        say("timing the decoder at matched quality")
        methods = selective.matched_methods(result, config.selective)
        report["selective"]["cost"] = [
            asdict(c) for c in selective.decoding_cost(streams, decode, methods)
        ]
        report["selective"]["stream_minutes"] = sum(s.minutes for s in streams)
    else:
        report["selective"] = None
    timing["decode_s"] = time.perf_counter() - start
    report["timing"] = timing
    report["targets"] = targets(report)
    matrix = config.label_matrix(runtime, list(config.labels.values()))
    return Evaluation(report, runs, matrix, result)
