"""Tests of vljepa_ros.model.losses: bidirectional InfoNCE, temperature, fp32, learning."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vljepa_ros.model import InfoNCELoss, LossConfig, VLJepa, info_nce

CAPTIONS = [
    "the arm reaches for the cube",
    "the gripper closes on the mug",
    "the arm lifts the bottle",
    "the robot moves the box sideways",
    "the cup is placed on the shelf",
    "the arm retreats from the table",
    "nothing moves",
    "the gripper opens and releases the ball",
]


def test_perfect_alignment_gives_a_low_loss() -> None:
    """Identical, well separated embeddings give a loss far below ln(B)."""
    x = torch.eye(8, 16)
    assert info_nce(x, x, 0.05).item() < 1e-3


def test_both_directions_are_averaged() -> None:
    """The loss is the mean of the pred->target and target->pred cross-entropies."""
    torch.manual_seed(0)
    p, t = F.normalize(torch.randn(6, 8), dim=-1), F.normalize(torch.randn(6, 8), dim=-1)
    logits = p @ t.T / 0.1
    labels = torch.arange(6)
    expected = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    torch.testing.assert_close(info_nce(p, t, 0.1), expected)
    torch.testing.assert_close(info_nce(p, t, 0.1), info_nce(t, p, 0.1))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_computed_in_fp32_from_low_precision_inputs(dtype: torch.dtype) -> None:
    """Low-precision inputs give an fp32 loss equal to the fp32 computation on the same values."""
    torch.manual_seed(0)
    p, t = torch.randn(16, 32).to(dtype), torch.randn(16, 32).to(dtype)
    loss = info_nce(p, t, 0.07)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, info_nce(p.float(), t.float(), 0.07))


@pytest.mark.parametrize(("init", "target"), [(0.07, 0.07), (0.001, 0.01), (5.0, 1.0)])
def test_temperature_is_clamped(init: float, target: float) -> None:
    """The learnable log-temperature is clamped to [min, max] when used."""
    loss = InfoNCELoss(LossConfig())
    with torch.no_grad():
        loss.log_temperature.fill_(math.log(init))
    assert loss.temperature.item() == pytest.approx(target, rel=1e-5)


def test_fixed_temperature_is_not_trained() -> None:
    """learnable_temperature=False freezes the temperature."""
    assert not InfoNCELoss(LossConfig(learnable_temperature=False)).log_temperature.requires_grad


def test_loss_is_about_ln_b_at_initialisation(micro_minilm_config, minilm_encoder) -> None:
    """Untrained, the model's InfoNCE on 16 clip-caption pairs is within 10% of ln(16)."""
    losses = []
    for seed in range(3):
        torch.manual_seed(seed)
        model = VLJepa(micro_minilm_config, minilm_encoder).eval()
        video = torch.randn(16, 4, 3, 32, 32)
        with torch.no_grad():
            query, mask = model.encode_query(["what is happening?"] * 16)
            pred = model.predict(video, query, mask)
            target = model.encode_text(CAPTIONS + [c.replace("the", "a") for c in CAPTIONS])
            losses.append(model.loss_fn(pred, target).item())
    mean = sum(losses) / len(losses)
    assert abs(mean - math.log(16)) < 0.1 * math.log(16), losses


def test_micro_model_overfits_eight_pairs(micro_minilm_config, minilm_encoder) -> None:
    """A micro model (frozen X- and Y-encoder) drives InfoNCE on 8 clip-text pairs below 0.1
    within 60 AdamW steps."""
    torch.manual_seed(0)
    model = VLJepa(micro_minilm_config, minilm_encoder)
    video = torch.randn(8, 4, 3, 32, 32)
    with torch.no_grad():
        query, qmask = model.encode_query(["what is happening?"] * 8)
    ids, tmask = model.y_encoder.tokenize(CAPTIONS)
    opt = torch.optim.AdamW(model.param_groups(3e-3))
    model.train()
    for _ in range(60):
        opt.zero_grad()
        loss = model.loss(video, query, qmask, ids, tmask)
        loss.backward()
        opt.step()
    assert loss.item() < 0.1
    model.eval()
    with torch.no_grad():
        pred = model.predict(video, query, qmask)
        target = model.encode_text(CAPTIONS)
    assert torch.equal((pred @ target.T).argmax(1), torch.arange(8))
