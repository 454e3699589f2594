"""PerceptionPipeline with a real (micro, random-weight) VL-JEPA model over real MiniLM."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from vljepa_ros.model import VLJepa, VLJepaRuntime
from vljepa_ros.stream.clip_buffer import PushOutcome
from vljepa_ros.stream.pipeline import PerceptionPipeline, PipelineConfig

NS = 1_000_000_000
T0 = 1_700_000_000 * NS
LABELS = {
    "idle": "the robot arm is still",
    "reaching": "the robot arm reaches for an object",
    "lifting": "the robot arm lifts an object",
}


@pytest.fixture(scope="module")
def runtime(micro_minilm_config_module) -> VLJepaRuntime:
    torch.manual_seed(0)
    return VLJepaRuntime(VLJepa(micro_minilm_config_module).eval())


@pytest.fixture(scope="module")
def micro_minilm_config_module(bert_folder):
    """The micro config in MiniLM's 384-d space, once for the module."""
    from conftest import micro_minilm_dict

    from vljepa_ros.model import VLJepaConfig

    data = micro_minilm_dict(bert_folder)
    return VLJepaConfig.from_dict(data)


def _frames(n: int, seed: int, size: tuple[int, int] = (48, 64)) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(n)]


def _feed(pipe: PerceptionPipeline, camera: str, frames: list, hz: float, start: int) -> None:
    for i, frame in enumerate(frames):
        stamp = start + round(i * NS / hz)
        pipe.offer(camera, frame, stamp, stamp + 5_000_000)


def test_step_embeds_the_newest_clip_with_its_stamps(runtime: VLJepaRuntime) -> None:
    """A step gives a unit embedding stamped with the newest sampled frame, seq 0 then 1."""
    pipe = PerceptionPipeline(runtime, PipelineConfig(query="what?", labels=LABELS))
    frames = _frames(12, seed=1)
    _feed(pipe, "camera", frames, hz=10, start=T0)
    (first,) = pipe.step()
    assert first.seq == 0
    assert first.stamp_ns == T0 + 11 * NS // 10
    assert first.clip_start_ns == T0 + (11 - pipe.clip_frames + 1) * NS // 10
    assert np.linalg.norm(first.embedding) == pytest.approx(1.0, abs=1e-5)
    assert first.novelty == 0.0
    assert pipe.step() == []  # no new frame: no second step of the same clip
    _feed(pipe, "camera", _frames(1, seed=2), hz=10, start=T0 + 12 * NS // 10)
    (second,) = pipe.step()
    assert second.seq == 1
    assert second.novelty > 0


def test_clip_stride_from_the_parameters_spans_longer_clips(runtime: VLJepaRuntime) -> None:
    """The clip_stride parameter reaches the clip buffer: a 2-stride clip starts twice as far
    back, and changing it at run time rebuilds the buffers."""
    from vljepa_ros.params import PERCEPTION, pipeline_config

    values = {p.name: p.default for p in PERCEPTION} | {"clip_stride": 2}
    config = pipeline_config(values, "what?")
    assert config.clip_stride == 2
    pipe = PerceptionPipeline(runtime, config)
    span = 2 * (pipe.clip_frames - 1) + 1
    _feed(pipe, "camera", _frames(span + 3, seed=4), hz=10, start=T0)
    (result,) = pipe.step()
    assert result.stamp_ns - result.clip_start_ns == 2 * (pipe.clip_frames - 1) * NS // 10
    pipe.reconfigure(pipeline_config(values | {"clip_stride": 1}, "what?"))
    assert pipe.cameras["camera"].buffer.config.stride == 1


def test_step_equals_the_runtime_on_the_same_clip(runtime: VLJepaRuntime) -> None:
    """The pipeline's embedding is the runtime's embedding of the last T sampled frames."""
    pipe = PerceptionPipeline(runtime, PipelineConfig(query="what?", labels=LABELS))
    frames = _frames(8, seed=3)
    _feed(pipe, "camera", frames, hz=10, start=T0)
    (result,) = pipe.step()
    clip = np.stack([pipe.shrink(f) for f in frames[-pipe.clip_frames :]])
    expected = runtime.embed_clip(clip, "what?").numpy()
    np.testing.assert_allclose(result.embedding, expected, atol=1e-5)


def test_two_cameras_are_batched_and_kept_apart(runtime: VLJepaRuntime) -> None:
    """Two cameras stepped together give each its own embedding, seq and stamps; both carry
    the time of the one model call that embedded them."""
    pipe = PerceptionPipeline(
        runtime, PipelineConfig(query="what?", labels=LABELS), cameras=["left", "right"]
    )
    _feed(pipe, "left", _frames(8, seed=4), hz=10, start=T0)
    _feed(pipe, "right", _frames(8, seed=5), hz=10, start=T0 + 50_000_000)
    results = {r.camera: r for r in pipe.step()}
    assert set(results) == {"left", "right"}
    assert results["right"].stamp_ns - results["left"].stamp_ns == 50_000_000
    assert results["left"].model_ms == results["right"].model_ms > 0
    alone = PerceptionPipeline(runtime, PipelineConfig(query="what?", labels=LABELS))
    _feed(alone, "camera", _frames(8, seed=5), hz=10, start=T0 + 50_000_000)
    np.testing.assert_allclose(results["right"].embedding, alone.step()[0].embedding, atol=1e-5)


def test_labels_are_embedded_with_the_text_encoder(runtime: VLJepaRuntime) -> None:
    """The label matrix holds the Y-encoder's unit embeddings of the prompts, in label order."""
    pipe = PerceptionPipeline(runtime, PipelineConfig(query="what?", labels=LABELS))
    expected = runtime.encode_texts(list(LABELS.values())).numpy()
    np.testing.assert_allclose(pipe.label_matrix, expected, atol=1e-6)
    _feed(pipe, "camera", _frames(8, seed=6), 10, T0)
    (result,) = pipe.step()
    assert result.state.candidates[0] in LABELS


def test_labels_are_grounded_in_the_answer_bank_for_its_query(
    micro_minilm_config_module, tmp_path
) -> None:
    """With a checkpoint's answer bank, the label matrix is the runtime's grounded label
    embeddings for the bank's query; switching ground_labels off, or another query, re-embeds
    the prompts as they are, and the trackers follow."""
    from dataclasses import replace

    from vljepa_ros.model import save_checkpoint
    from vljepa_ros.model.checkpoint import write_answer_bank

    torch.manual_seed(0)
    model = VLJepa(micro_minilm_config_module).eval()
    folder = save_checkpoint(model, tmp_path / "banked")
    answers = ["the arm is still", "the arm reaches for a cup", "the arm lifts a cup up"]
    write_answer_bank(model, folder, answers, "what?", labels=len(LABELS))
    runtime = VLJepaRuntime.load(folder)
    prompts = list(LABELS.values())
    own = runtime.encode_texts(prompts).numpy()
    pipe = PerceptionPipeline(runtime, PipelineConfig(query="what?", labels=LABELS))
    grounded = runtime.label_embeddings(prompts, "what?").numpy()
    np.testing.assert_allclose(pipe.label_matrix, grounded, atol=1e-6)
    assert not np.allclose(grounded, own, atol=1e-3)
    pipe.reconfigure(replace(pipe.config, ground_labels=False))
    np.testing.assert_allclose(pipe.label_matrix, own, atol=1e-6)
    _feed(pipe, "camera", _frames(8, seed=6), 10, T0)
    (result,) = pipe.step()
    ranked = [list(LABELS)[i] for i in np.argsort(-(own @ result.embedding))]
    assert result.state.candidates == ranked[: len(result.state.candidates)]
    pipe.reconfigure(replace(pipe.config, ground_labels=True, query="where?"))
    np.testing.assert_allclose(pipe.label_matrix, own, atol=1e-6)


def test_reconfigure_swaps_labels_and_a_bad_config_changes_nothing(runtime: VLJepaRuntime) -> None:
    """New labels take effect without reloading; an empty label set is refused up front."""
    pipe = PerceptionPipeline(runtime, PipelineConfig(query="what?", labels=LABELS))
    new = {"holding": "the gripper holds an object", "empty": "the gripper is empty"}
    pipe.reconfigure(PipelineConfig(query="what?", labels=new))
    assert pipe.label_matrix.shape[0] == 2
    _feed(pipe, "camera", _frames(8, seed=7), 10, T0)
    assert set(pipe.step()[0].state.candidates) == set(new)
    with pytest.raises(ValueError, match="labels is empty"):
        pipe.reconfigure(PipelineConfig(query="what?", labels={}))
    assert list(pipe.config.labels) == list(new)


def test_stamp_going_back_resets_the_stream(runtime: VLJepaRuntime) -> None:
    """After a bag loop the first step has novelty 0 again and the label starts over."""
    pipe = PerceptionPipeline(runtime, PipelineConfig(query="what?", labels=LABELS))
    _feed(pipe, "camera", _frames(8, seed=8), 10, T0)
    pipe.step()
    assert pipe.offer("camera", _frames(1, seed=9)[0], T0 - NS, T0 - NS) is PushOutcome.RESET
    (after,) = pipe.step()
    assert after.novelty == 0.0
    assert after.seq == 1  # seq keeps counting within a run


def test_frames_are_shrunk_on_arrival(runtime: VLJepaRuntime) -> None:
    """A 480x640 frame is stored at the short edge the preprocessing uses."""
    pipe = PerceptionPipeline(runtime, PipelineConfig(query="what?", labels=LABELS))
    small = pipe.shrink(np.zeros((480, 640, 3), np.uint8))
    crop = runtime.cfg.x_encoder.crop_size
    assert min(small.shape[:2]) == int(crop * runtime.cfg.x_encoder.resize_scale)
    assert small.shape[1] / small.shape[0] == pytest.approx(640 / 480, rel=0.02)


def test_shrinking_by_halves_first_matches_a_direct_area_resize(runtime: VLJepaRuntime) -> None:
    """Large frames are halved before the final area resize (faster); the pixels stay within a
    grey level or two of resizing in one go, and frames under 4x the target (like the
    simulator's 160x160 for the shipped model's 64) take the one-step path unchanged."""
    pipe = PerceptionPipeline(runtime, PipelineConfig(query="what?", labels=LABELS))
    y, x = np.mgrid[0:480, 0:640]
    frame = np.stack([x * 255 // 639, y * 255 // 479, (x + y) % 256], axis=-1).astype(np.uint8)
    small = pipe.shrink(frame)
    direct = cv2.resize(frame, small.shape[1::-1], interpolation=cv2.INTER_AREA)
    diff = np.abs(small.astype(int) - direct.astype(int))
    assert diff[..., :2].max() <= 2  # the smooth channels
    assert diff.mean() < 4.0  # the sawtooth channel averages differently at its wrap-arounds
    edge = int(runtime.cfg.x_encoder.crop_size * runtime.cfg.x_encoder.resize_scale)
    sim = np.ascontiguousarray(frame[: edge * 4 - 1, : edge * 4 - 1])
    direct = cv2.resize(sim, pipe.shrink(sim).shape[1::-1], interpolation=cv2.INTER_AREA)
    assert np.array_equal(pipe.shrink(sim), direct)


def test_a_step_is_wanted_once_per_step_period_of_capture_time(runtime: VLJepaRuntime) -> None:
    """At step_hz 5 over frames sampled at 10 Hz (with 3 ms of stamp jitter) every second
    sampled frame asks for a step; at step_hz 10 every one does; never before a first frame, and
    never again for the frame just stepped."""
    pipe = PerceptionPipeline(runtime, PipelineConfig(query="what?", labels=LABELS))
    assert not pipe.wants_step("camera", 5.0)
    wanted = []
    for i, frame in enumerate(_frames(12, seed=10)):
        stamp = T0 + i * NS // 10 + (3_000_000 if i % 2 else -3_000_000)
        pipe.offer("camera", frame, stamp, stamp + 5_000_000)
        wanted.append(pipe.wants_step("camera", 5.0))
        if wanted[-1]:
            pipe.step(["camera"])
            assert not pipe.wants_step("camera", 5.0)
    assert wanted == [True, False] * 6
    pipe.step(["camera"])
    every = []
    for i, frame in enumerate(_frames(4, seed=11), start=12):
        stamp = T0 + i * NS // 10 + (3_000_000 if i % 2 else -3_000_000)
        pipe.offer("camera", frame, stamp, stamp)
        every.append(pipe.wants_step("camera", 10.0))
        pipe.step(["camera"])
    assert every == [True] * 4
