"""Tests of vljepa_ros.model.y_decoder: shapes, loss masking, overfitting and regeneration."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer

from vljepa_ros.model import YDecoder, YDecoderConfig

SENTENCES = ["the arm lifts the red cube", "the gripper opens", "robot idle near the table"]


@pytest.fixture(scope="module")
def tokenizer(minilm_folder: Path):
    """MiniLM's WordPiece tokenizer (the Y-encoder vocabulary)."""
    return AutoTokenizer.from_pretrained(minilm_folder)


def make_decoder(noise_std: float = 0.3, seed: int = 0) -> YDecoder:
    torch.manual_seed(seed)
    cfg = YDecoderConfig(
        hidden_size=32,
        num_layers=2,
        num_heads=2,
        intermediate_size=64,
        max_length=16,
        noise_std=noise_std,
    )
    return YDecoder(cfg, embed_dim=32, bos_id=101, eos_id=102, pad_id=0)


def test_targets_and_logits_shapes(tokenizer) -> None:
    """Targets are [bos, tokens, eos, pad...]; logits are (B, L, vocab)."""
    dec = make_decoder()
    ids, mask = dec.targets(tokenizer, SENTENCES)
    assert ids[:, 0].eq(101).all()
    lengths = mask.sum(1)
    assert all(ids[i, lengths[i] - 1] == 102 for i in range(len(SENTENCES)))
    assert ids[~mask].eq(0).all()
    logits = dec(torch.randn(3, 32), ids, mask)
    assert logits.shape == (*ids.shape, 30522)


def test_padding_does_not_change_the_loss(tokenizer) -> None:
    """Extra pad positions are ignored by the loss (in eval mode, no noise)."""
    dec = make_decoder().eval()
    emb = torch.randn(1, 32)
    ids, mask = dec.targets(tokenizer, SENTENCES[:1])
    pad_ids = torch.cat([ids, torch.zeros(1, 5, dtype=torch.long)], 1)
    pad_mask = torch.cat([mask, torch.zeros(1, 5, dtype=torch.bool)], 1)
    with torch.no_grad():
        torch.testing.assert_close(dec.loss(emb, pad_ids, pad_mask), dec.loss(emb, ids, mask))


def test_noise_only_in_training_mode() -> None:
    """Conditioning noise is applied while training and never at inference."""
    dec = make_decoder(noise_std=0.5)
    emb = torch.randn(2, 32)
    ids = torch.full((2, 3), 101)
    mask = torch.ones(2, 3, dtype=torch.bool)
    dec.eval()
    with torch.no_grad():
        torch.testing.assert_close(dec(emb, ids, mask), dec(emb, ids, mask))
        dec.train()
        assert not torch.allclose(dec(emb, ids, mask), dec(emb, ids, mask))


def test_overfits_sentences_and_regenerates_them(tokenizer) -> None:
    """Trained 80 steps on 3 (embedding, text) pairs with noise, the loss is below 0.05 and greedy
    decoding returns the exact texts, also from a perturbed embedding (cosine > 0.9)."""
    dec = make_decoder(noise_std=0.3)
    emb = F.normalize(torch.randn(3, 32), dim=-1)
    ids, mask = dec.targets(tokenizer, SENTENCES)
    opt = torch.optim.Adam(dec.parameters(), lr=1e-2)
    dec.train()
    for _ in range(80):
        opt.zero_grad()
        loss = dec.loss(emb, ids, mask)
        loss.backward()
        opt.step()
    assert loss.item() < 0.05
    dec.eval()
    noisy = F.normalize(emb + 0.3 * torch.randn(3, 32) / 32**0.5, dim=-1)
    assert (noisy * emb).sum(-1).min() > 0.9
    for cond in (emb, noisy):
        texts = [tokenizer.decode(r, skip_special_tokens=True) for r in dec.generate(cond)]
        assert texts == SENTENCES
