"""Tests of vljepa_ros.model.api: the public runtime used by nodes, training and evaluation."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vljepa_ros.model import (
    ModelError,
    VLJepa,
    VLJepaRuntime,
    checkpoint_id,
    parse_dtype,
    save_checkpoint,
)

LABELS = ["idle", "reaching", "grasping", "lifting"]


def clips(b: int, t: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (b, t, 40, 56, 3), dtype=np.uint8)


@pytest.fixture
def runtime(micro_model: VLJepa) -> VLJepaRuntime:
    """A CPU fp32 runtime over the micro model."""
    return VLJepaRuntime(micro_model)


def test_embed_clip_is_a_unit_vector(runtime: VLJepaRuntime) -> None:
    """embed_clip: (T, H, W, 3) uint8 + query -> (D,) fp32 CPU unit vector."""
    emb = runtime.embed_clip(clips(1)[0], "what is happening?")
    assert emb.shape == (runtime.embed_dim,)
    assert emb.dtype == torch.float32
    assert emb.device.type == "cpu"
    assert emb.norm().item() == pytest.approx(1.0, abs=1e-5)


def test_embed_clip_is_deterministic(runtime: VLJepaRuntime) -> None:
    """The same clip and query give bit-identical embeddings."""
    frames = clips(1)[0]
    assert torch.equal(runtime.embed_clip(frames, "q"), runtime.embed_clip(frames, "q"))


def test_batch_equals_single_calls(runtime: VLJepaRuntime) -> None:
    """embed_clips over a batch with queries of different lengths equals one call per clip."""
    batch = clips(3)
    queries = ["what?", "what is the robot arm doing with the red cube now?", "where?"]
    together = runtime.embed_clips(batch, queries)
    alone = torch.stack([runtime.embed_clip(c, q) for c, q in zip(batch, queries, strict=True)])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)


def test_image_is_accepted_as_a_clip(runtime: VLJepaRuntime) -> None:
    """A single (H, W, 3) image is embedded (repeated to fill a clip)."""
    image = clips(1)[0, 0]
    assert runtime.embed_clip(image).shape == (runtime.embed_dim,)


def test_encode_texts_are_unit_vectors(runtime: VLJepaRuntime) -> None:
    """encode_texts: N texts -> (N, D) unit vectors."""
    out = runtime.encode_texts(LABELS)
    assert out.shape == (4, runtime.embed_dim)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(4))


def test_classify_picks_the_most_similar_label(runtime: VLJepaRuntime) -> None:
    """classify returns the argmax of cosine scores between the clip and label embeddings."""
    frames = clips(1)[0]
    choice = runtime.classify(frames, LABELS)
    expected = runtime.encode_texts(LABELS) @ runtime.embed_clip(frames)
    torch.testing.assert_close(choice.scores, expected)
    assert choice.index == int(expected.argmax())
    assert choice.text == LABELS[choice.index]
    assert [c.index for c in runtime.classify_clips(clips(1), LABELS)] == [choice.index]


def test_answer_uses_the_question_as_query(runtime: VLJepaRuntime) -> None:
    """answer scores candidates against the embedding predicted for the question."""
    frames, question = clips(1)[0], "what is the gripper holding?"
    choice = runtime.answer(frames, question, ["a cup", "nothing", "a cube"])
    expected = runtime.encode_texts(["a cup", "nothing", "a cube"]) @ runtime.embed_clip(
        frames, question
    )
    torch.testing.assert_close(choice.scores, expected)


def test_retrieve_ranks_clips_by_similarity(runtime: VLJepaRuntime) -> None:
    """retrieve orders clips best first, from frames or from precomputed embeddings."""
    batch = clips(5)
    ranking = runtime.retrieve("the arm grasps the cup", batch)
    assert sorted(ranking.indices) == list(range(5))
    assert torch.all(ranking.scores[:-1] >= ranking.scores[1:])
    again = runtime.retrieve("the arm grasps the cup", runtime.embed_clips(batch), top_k=2)
    assert again.indices == ranking.indices[:2]


def test_decode_returns_a_string(runtime: VLJepaRuntime) -> None:
    """decode turns one embedding into text; decode_batch handles many."""
    emb = runtime.embed_clip(clips(1)[0])
    assert isinstance(runtime.decode(emb, max_length=4), str)
    assert len(runtime.decode_batch(torch.stack([emb, emb]), max_length=4)) == 2


def test_load_by_path_matches_the_saved_model(tmp_path: Path, micro_model: VLJepa) -> None:
    """VLJepaRuntime.load(path) reproduces the saved model's embeddings."""
    path = save_checkpoint(micro_model, tmp_path / "ckpt")
    frames = clips(1)[0]
    expected = VLJepaRuntime(micro_model).embed_clip(frames, "q")
    loaded = VLJepaRuntime.load(path)
    assert torch.equal(loaded.embed_clip(frames, "q"), expected)
    assert loaded.y_encoder_id.endswith(micro_model.y_encoder.sha256)
    name, _, digest = loaded.model_id.partition("@")
    assert name == "ckpt"
    assert re.fullmatch(r"[0-9a-f]{8}", digest)


def test_model_id_tells_apart_checkpoints_with_the_same_name(
    tmp_path: Path, micro_model: VLJepa, micro_config
) -> None:
    """Two `model/` directories with other weights get other ids; a copy gets the same id."""
    first = save_checkpoint(micro_model, tmp_path / "a" / "model")
    copy = save_checkpoint(micro_model, tmp_path / "b" / "model")
    torch.manual_seed(1)
    other = save_checkpoint(VLJepa(micro_config), tmp_path / "c" / "model")
    ids = [checkpoint_id(path) for path in (first, copy, other)]
    assert ids[0] == ids[1]
    assert ids[0].startswith("model@")
    assert ids[2].startswith("model@")
    assert ids[2] != ids[0]


def test_bf16_runtime_is_close_to_fp32(micro_config) -> None:
    """A bf16 runtime gives nearly the same embedding as fp32 (cosine > 0.98)."""
    frames = clips(1)[0]
    outs = []
    for dtype in ("fp32", "bf16"):
        torch.manual_seed(0)
        outs.append(VLJepaRuntime(VLJepa(micro_config), dtype=dtype).embed_clip(frames, "q"))
    assert torch.dot(outs[0], outs[1]).item() > 0.98


@pytest.mark.parametrize("name", ["fp8", "float64"])
def test_unknown_dtype_is_refused(name: str) -> None:
    """Only fp32, bf16 and fp16 are accepted."""
    with pytest.raises(ModelError):
        parse_dtype(name)


@pytest.mark.parametrize(
    ("device", "reason"),
    [("tpu", "device"), ("cuda:99", "cuda"), ("not a device", "unknown device")],
)
def test_unusable_device_is_refused_with_the_reason(device: str, reason: str) -> None:
    """A device torch cannot use here is a ModelError naming it, not a torch traceback."""
    from vljepa_ros.model.api import parse_device

    with pytest.raises(ModelError, match=reason):
        parse_device(device)


def test_mismatched_query_count_is_refused(runtime: VLJepaRuntime) -> None:
    """Giving a different number of queries than clips is an error."""
    with pytest.raises(ModelError, match="queries"):
        runtime.embed_clips(clips(2), ["a", "b", "c"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu(micro_config) -> None:
    """The same model on CUDA gives the CPU embedding (fp32, cosine > 0.9999)."""
    frames = clips(1)[0]
    torch.manual_seed(0)
    cpu = VLJepaRuntime(VLJepa(micro_config)).embed_clip(frames, "q")
    torch.manual_seed(0)
    gpu = VLJepaRuntime(VLJepa(micro_config), device="cuda").embed_clip(frames, "q")
    assert torch.dot(cpu, gpu).item() > 0.9999


def test_library_imports_no_ros() -> None:
    """Importing the model library (API and bench included) loads no rclpy or *_msgs module."""
    code = (
        "import sys, vljepa_ros.model, vljepa_ros.model.bench\n"
        "bad = [m for m in sys.modules if m.split('.')[0] == 'rclpy' or '_msgs' in m]\n"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
