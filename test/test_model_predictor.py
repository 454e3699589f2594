"""Tests of vljepa_ros.model.predictor: bidirectional attention, padding, Llama parity."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaModel
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

from vljepa_ros.model import PredictorConfig, WeightsError
from vljepa_ros.model.predictor import (
    Predictor,
    config_from_llama_folder,
    load_llama_layers,
    rope_inv_freq,
)

CFG = PredictorConfig(
    hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8, intermediate_size=64
)
LLAMA3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 500000.0,
    "factor": 32.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 64,
}


def make_predictor(seed: int = 0) -> Predictor:
    torch.manual_seed(seed)
    return Predictor(CFG, visual_dim=24, query_dim=16, out_dim=12).eval()


def inputs(b: int = 2, n: int = 6, lq: int = 5, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, n, 24, generator=g), torch.randn(b, lq, 16, generator=g)


def test_output_shape() -> None:
    """(B, N, Dv) + (B, Lq, Dq) -> (B, out_dim)."""
    visual, query = inputs()
    out = make_predictor()(visual, query, torch.ones(2, 5, dtype=torch.bool))
    assert out.shape == (2, 12)


def test_visual_tokens_see_the_query() -> None:
    """Changing only the query changes the visual positions' states: attention is bidirectional."""
    pred = make_predictor()
    visual, query = inputs()
    mask = torch.ones(2, 5, dtype=torch.bool)
    other = query.clone()
    other[:, -1] += 1.0  # only the last query token differs
    with torch.no_grad():
        hidden_a, _ = pred.forward_tokens(visual, query, mask)
        hidden_b, _ = pred.forward_tokens(visual, other, mask)
        out_a, out_b = pred(visual, query, mask), pred(visual, other, mask)
    first_visual_change = (hidden_a[:, 0] - hidden_b[:, 0]).abs().max()
    assert first_visual_change > 1e-3
    assert (out_a - out_b).abs().max() > 1e-4


@pytest.mark.parametrize("pad", [1, 4, 9])
def test_padding_does_not_change_the_output(pad: int) -> None:
    """Appending masked pad tokens (any values) leaves the output unchanged."""
    pred = make_predictor()
    visual, query = inputs()
    mask = torch.ones(2, 5, dtype=torch.bool)
    padded = torch.cat([query, 100 * torch.randn(2, pad, 16)], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(2, pad, dtype=torch.bool)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(pred(visual, padded, padded_mask), pred(visual, query, mask))


def test_no_mask_equals_an_all_true_mask() -> None:
    """query_mask=None (no padding, unmasked fast path) equals an all-True mask."""
    pred = make_predictor()
    visual, query = inputs()
    with torch.no_grad():
        full = pred(visual, query, torch.ones(2, 5, dtype=torch.bool))
        torch.testing.assert_close(pred(visual, query, None), full)


def test_batched_queries_of_different_lengths_match_single_runs() -> None:
    """A short query padded inside a batch gives the same output as alone."""
    pred = make_predictor()
    visual, query = inputs(b=2, lq=5)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]], dtype=torch.bool)
    with torch.no_grad():
        batched = pred(visual, query, mask)
        alone = pred(visual[1:], query[1:, :2], mask[1:, :2])
    torch.testing.assert_close(batched[1:], alone)


def build_llama(folder: Path, rope: dict | None, layers: int = 4, shard: str | None = None) -> None:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=128,
        rope_parameters=rope or {"rope_type": "default", "rope_theta": 10000.0},
    )
    model = LlamaModel(config)
    with torch.no_grad():  # non-trivial norm weights so the norms are really compared
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    kwargs = {"max_shard_size": "20KB"} if shard else {}
    model.save_pretrained(folder, **kwargs)


@pytest.mark.parametrize("rope", [None, LLAMA3_ROPE], ids=["default", "llama3"])
def test_inv_freq_matches_llama_rotary(tmp_path: Path, rope: dict | None) -> None:
    """Rotary frequencies equal transformers' LlamaRotaryEmbedding (default and llama3)."""
    build_llama(tmp_path, rope)
    cfg = config_from_llama_folder(tmp_path, num_layers=2)
    ref = LlamaRotaryEmbedding(LlamaConfig.from_pretrained(tmp_path))
    torch.testing.assert_close(rope_inv_freq(cfg.rope, cfg.head_dim), ref.inv_freq)


@pytest.mark.parametrize("rope", [None, LLAMA3_ROPE], ids=["default", "llama3"])
@pytest.mark.parametrize("shard", [None, "sharded"])
def test_block_parity_with_llama_decoder_layer(tmp_path: Path, rope: dict | None, shard) -> None:
    """A loaded block equals LlamaDecoderLayer run non-causally with padding masked out."""
    build_llama(tmp_path, rope, layers=4, shard=shard)
    if shard:
        assert (tmp_path / "model.safetensors.index.json").is_file()
    cfg = config_from_llama_folder(tmp_path, num_layers=2)
    pred = Predictor(cfg, visual_dim=24, query_dim=16, out_dim=12).eval()
    load_llama_layers(pred, tmp_path)  # default: the last 2 of 4 layers
    ref = LlamaModel.from_pretrained(tmp_path, attn_implementation="eager").eval()

    torch.manual_seed(2)
    b, length = 2, 7
    x = torch.randn(b, length, 32)
    key_mask = torch.ones(b, length, dtype=torch.bool)
    key_mask[1, 5:] = False
    additive = torch.zeros(b, 1, length, length)
    additive.masked_fill_(~key_mask[:, None, None, :], torch.finfo(torch.float32).min)
    position_ids = torch.arange(length)[None].expand(b, -1)
    with torch.no_grad():
        cos, sin = ref.rotary_emb(x, position_ids)
        for ours_index, ref_index in enumerate([2, 3]):
            expected = ref.layers[ref_index](
                x, attention_mask=additive, position_embeddings=(cos, sin)
            )
            got = pred.blocks[ours_index](x, pred.rotary(length, x.device, x.dtype), key_mask)
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(pred.norm(x), ref.norm(x))


def test_explicit_layer_selection(tmp_path: Path) -> None:
    """Chosen layers land in order; the final norm comes from model.norm."""
    build_llama(tmp_path, None, layers=4)
    cfg = config_from_llama_folder(tmp_path, num_layers=2)
    pred = load_llama_layers(Predictor(cfg, 24, 16, 12), tmp_path, layers=[0, 2])
    ref = LlamaModel.from_pretrained(tmp_path)
    torch.testing.assert_close(pred.blocks[1].mlp.up_proj.weight, ref.layers[2].mlp.up_proj.weight)
    torch.testing.assert_close(pred.norm.weight, ref.norm.weight)


@pytest.mark.parametrize("layers", [[0], [0, 7], [-1, 0]])
def test_bad_layer_selection_is_refused(tmp_path: Path, layers: list[int]) -> None:
    """Selections of the wrong count or out of range raise WeightsError."""
    build_llama(tmp_path, None, layers=4)
    cfg = config_from_llama_folder(tmp_path, num_layers=2)
    with pytest.raises(WeightsError, match="layers"):
        load_llama_layers(Predictor(cfg, 24, 16, 12), tmp_path, layers=layers)


def test_unsupported_rope_scaling_is_refused(tmp_path: Path) -> None:
    """A Llama folder with a rope scaling other than default/llama3 is refused by name."""
    build_llama(tmp_path, None)
    data = json.loads((tmp_path / "config.json").read_text())
    data["rope_parameters"] = {"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0}
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(WeightsError, match="linear"):
        config_from_llama_folder(tmp_path, num_layers=2)
