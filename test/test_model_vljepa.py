"""Tests of vljepa_ros.model.vljepa: the composed model's shapes, determinism, training API."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from vljepa_ros.model import ModelError, VLJepa, YDecoderConfig


def clip_batch(b: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, 4, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_predict_is_unit_norm_with_embed_dim(micro_model: VLJepa) -> None:
    """predict returns (B, embed_dim) L2-normalised fp32 vectors."""
    query, mask = micro_model.encode_query(["what is the arm doing?"] * 3)
    with torch.no_grad():
        out = micro_model.predict(clip_batch(), query, mask)
    assert out.shape == (3, 32)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(3))


def test_same_seed_same_model(micro_config) -> None:
    """Two models built under the same seed give identical outputs."""
    outs = []
    for _ in range(2):
        torch.manual_seed(7)
        model = VLJepa(micro_config).eval()
        query, mask = model.encode_query(["q"] * 3)
        with torch.no_grad():
            outs.append(model.predict(clip_batch(), query, mask))
    assert torch.equal(outs[0], outs[1])


def test_different_queries_give_different_predictions(micro_model: VLJepa) -> None:
    """The query steers the prediction for the same clip."""
    query, mask = micro_model.encode_query(["what is the arm holding?", "where is the cup?"])
    video = clip_batch(1).expand(2, -1, -1, -1, -1)
    with torch.no_grad():
        out = micro_model.predict(video, query, mask)
    assert (out[0] - out[1]).abs().max() > 1e-4


def test_y_encoder_base_weights_are_not_in_the_checkpoint_state(micro_model: VLJepa) -> None:
    """checkpoint_state_dict holds every component but the public Y-encoder backbone."""
    keys = micro_model.checkpoint_state_dict().keys()
    assert not any(k.startswith("y_encoder.backbone.") for k in keys)
    for prefix in ("x_encoder.", "predictor.", "y_decoder.", "loss_fn."):
        assert any(k.startswith(prefix) for k in keys)


def test_frozen_parts_have_no_gradients(micro_model: VLJepa) -> None:
    """With the default config only predictor, decoder and temperature are trainable."""
    trainable = {n.split(".")[0] for n, p in micro_model.named_parameters() if p.requires_grad}
    assert trainable == {"predictor", "y_decoder", "loss_fn"}


def test_param_groups_scale_the_y_encoder_rate(micro_config) -> None:
    """A trainable Y-encoder gets lr * lr_multiplier; everything else gets lr."""
    cfg = dataclasses.replace(
        micro_config, y_encoder=dataclasses.replace(micro_config.y_encoder, trainable=True)
    )
    model = VLJepa(cfg)
    groups = model.param_groups(1e-3)
    assert [g["lr"] for g in groups] == pytest.approx([1e-3, 1e-3 * 0.05])
    n_backbone = sum(1 for p in model.y_encoder.backbone.parameters())
    assert len(groups[1]["params"]) == n_backbone


def test_decoder_vocabulary_must_cover_the_tokenizer(micro_config) -> None:
    """A Y-decoder smaller than the tokenizer's vocabulary is refused."""
    cfg = dataclasses.replace(micro_config, y_decoder=YDecoderConfig(vocab_size=1000))
    with pytest.raises(ModelError, match="vocab_size"):
        VLJepa(cfg)


def test_decode_returns_text(micro_model: VLJepa) -> None:
    """decode maps (B, D) embeddings to B strings (untrained: any text)."""
    texts = micro_model.decode(torch.randn(2, 32), max_length=5)
    assert len(texts) == 2
    assert all(isinstance(t, str) for t in texts)


def test_from_public_loads_vjepa2_and_llama_layers(
    micro_config, vjepa2_folder: Path, llama_folder: Path
) -> None:
    """from_public takes shapes and weights from a V-JEPA 2 folder and the last Llama layers
    (of a LlamaForCausalLM folder), and the composed model runs."""
    from transformers import LlamaForCausalLM, VJEPA2Model

    model = VLJepa.from_public(micro_config, vjepa2=vjepa2_folder, llama=llama_folder).eval()
    assert model.cfg.x_encoder.hidden_size == 48
    assert model.cfg.predictor.rope.type == "llama3"
    ref_llama = LlamaForCausalLM.from_pretrained(llama_folder).model
    torch.testing.assert_close(
        model.predictor.blocks[0].self_attn.k_proj.weight,
        ref_llama.layers[2].self_attn.k_proj.weight,
    )
    video = clip_batch(2)
    ref_vjepa = VJEPA2Model.from_pretrained(vjepa2_folder).eval()
    with torch.no_grad():
        torch.testing.assert_close(
            model.x_encoder(video), ref_vjepa.get_vision_features(video), rtol=1e-5, atol=1e-5
        )
        query, mask = model.encode_query(["what?", "where?"])
        assert model.predict(video, query, mask).shape == (2, 32)
