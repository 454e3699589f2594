"""Tests of vljepa_ros.model.y_encoder: parity with transformers and sentence-transformers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import copy_tokenizer
from transformers import AutoModel, Gemma3TextConfig, Gemma3TextModel

from vljepa_ros.model import ModelError, TextEncoder, WeightsError, YEncoderConfig
from vljepa_ros.model.y_encoder import mean_pool

TEXTS = [
    "a robotic arm grasping a mug",
    "the robot arm picks up a cup",
    "a recipe for chocolate cake",
    "idle",
]


@pytest.fixture(scope="module")
def gemma_folder(tmp_path_factory: pytest.TempPathFactory, minilm_folder: Path) -> Path:
    """A small random bidirectional Gemma3 text model (EmbeddingGemma's architecture)."""
    torch.manual_seed(0)
    config = Gemma3TextConfig(
        vocab_size=30522,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        sliding_window=4,
        layer_types=["sliding_attention", "full_attention"],
        use_bidirectional_attention=True,
        max_position_embeddings=128,
    )
    folder = tmp_path_factory.mktemp("gemma3")
    Gemma3TextModel(config).save_pretrained(folder)
    copy_tokenizer(minilm_folder, folder)
    return folder


def reference_mean_pool(folder: Path, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    ref = AutoModel.from_pretrained(folder, attn_implementation="eager").eval()
    with torch.no_grad():
        states = ref(input_ids=ids, attention_mask=mask.long()).last_hidden_state
    return F.normalize(mean_pool(states, mask), dim=-1)


@pytest.mark.parametrize("which", ["bert", "gemma3"])
def test_parity_with_transformers(which: str, bert_folder: Path, gemma_folder: Path) -> None:
    """Mean-pooled embeddings equal transformers' reference forward (fp32, tight)."""
    folder = bert_folder if which == "bert" else gemma_folder
    enc = TextEncoder(YEncoderConfig(source=str(folder), hidden_size=32, embedding_size=32), 32)
    ids, mask = enc.tokenize(TEXTS)
    assert not mask.all()  # the batch really is padded
    with torch.no_grad():
        got = enc(ids, mask)
    torch.testing.assert_close(got, reference_mean_pool(folder, ids, mask), rtol=1e-5, atol=1e-5)


def test_pad_tokens_do_not_change_an_embedding(bert_folder: Path) -> None:
    """A text embedded alone or inside a padded batch gives the same vector."""
    enc = TextEncoder(
        YEncoderConfig(source=str(bert_folder), hidden_size=32, embedding_size=32), 32
    )
    with torch.no_grad():
        batch = enc.encode(TEXTS)
        alone = enc.encode([TEXTS[3]])
    torch.testing.assert_close(batch[3:], alone, rtol=1e-5, atol=1e-5)


def test_sentence_transformers_dense_modules_are_applied(tmp_path: Path, bert_folder: Path) -> None:
    """A folder with sentence-transformers Pooling + Dense + Normalize matches ST's encode."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import (
        Dense,
        Normalize,
        Pooling,
        Transformer,
    )

    torch.manual_seed(0)
    modules = [
        Transformer(str(bert_folder)),
        Pooling(32, pooling_mode="mean"),
        Dense(32, 16, activation_function=torch.nn.Identity()),
        Normalize(),
    ]
    SentenceTransformer(modules=modules, device="cpu").save(str(tmp_path))
    expected = SentenceTransformer(str(tmp_path), device="cpu").encode(
        TEXTS, convert_to_tensor=True
    )
    cfg = YEncoderConfig(source=str(tmp_path), hidden_size=32, embedding_size=16)
    with torch.no_grad():
        got = TextEncoder(cfg, 16).encode(TEXTS)
    torch.testing.assert_close(got, expected.cpu(), rtol=1e-5, atol=1e-5)


def test_projection_head_maps_into_the_shared_space(bert_folder: Path) -> None:
    """With projection, embeddings have the shared width and unit norm."""
    cfg = YEncoderConfig(
        source=str(bert_folder), hidden_size=32, embedding_size=32, projection=True
    )
    with torch.no_grad():
        out = TextEncoder(cfg, 48).encode(TEXTS)
    assert out.shape == (4, 48)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(4))


def test_wrong_declared_width_is_refused(bert_folder: Path) -> None:
    """A config whose widths disagree with the folder is refused, naming both."""
    with pytest.raises(WeightsError, match="hidden size 32"):
        TextEncoder(YEncoderConfig(source=str(bert_folder)), 384)


def test_fp16_is_refused_for_gemma(gemma_folder: Path) -> None:
    """Gemma3 text encoders refuse fp16 (EmbeddingGemma overflows); bf16 is allowed."""
    enc = TextEncoder(
        YEncoderConfig(source=str(gemma_folder), hidden_size=32, embedding_size=32), 32
    )
    with pytest.raises(ModelError, match="fp16"):
        enc.check_dtype(torch.float16)
    enc.check_dtype(torch.bfloat16)


def test_unknown_source_says_nothing_is_downloaded() -> None:
    """A source that is not local fails with the searched places, without downloading."""
    with pytest.raises(WeightsError, match="nothing is downloaded"):
        TextEncoder(YEncoderConfig(source="nobody/no-such-model"), 384)


def test_real_minilm_matches_sentence_transformers(minilm_folder: Path) -> None:
    """The shipped MiniLM loads offline and equals sentence-transformers' encoding (cos > 0.999)."""
    from sentence_transformers import SentenceTransformer

    enc = TextEncoder(YEncoderConfig(), 384)
    assert enc.folder == minilm_folder
    with torch.inference_mode():
        ours = enc.encode(TEXTS)
    st = SentenceTransformer(str(minilm_folder), device="cpu")
    theirs = st.encode(TEXTS, convert_to_tensor=True, normalize_embeddings=True).cpu()
    assert (ours * theirs).sum(-1).min() > 0.999
    sim = ours @ ours.T
    assert sim[0, 1] > sim[0, 2]  # arm grasping mug ~ arm picks up cup, not cake
    assert sim[0, 1] > sim[1, 2]
    assert len(enc.sha256) == 64
