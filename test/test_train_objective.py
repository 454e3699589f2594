"""Masked InfoNCE: same-meaning answers are not negatives; the multi-query step runs."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from vljepa_ros.model import VLJepa, info_nce
from vljepa_ros.train.objective import (
    ContrastiveStep,
    clip_classification,
    clip_object_index,
    frozen_lower_layers,
    masked_info_nce,
    meaning_contrast,
    prompt_classification,
    same_meaning,
)


def test_same_meaning_pairs_equal_keys_or_texts() -> None:
    """Rows are paired when their keys match or their texts match, and always with themselves."""
    same = same_meaning([("a",), ("a",), ("b",), ("c",)], ["x", "y", "z", "x"])
    assert same.tolist() == [
        [True, True, False, True],
        [True, True, False, False],
        [False, False, True, False],
        [True, False, False, True],
    ]


def test_without_duplicates_it_is_the_models_info_nce() -> None:
    """With nothing masked the loss equals vljepa_ros.model.info_nce."""
    torch.manual_seed(0)
    pred, target = torch.randn(6, 8), torch.randn(6, 8)
    same = torch.eye(6, dtype=torch.bool)
    assert torch.allclose(masked_info_nce(pred, target, 0.1, same), info_nce(pred, target, 0.1))


def test_duplicate_targets_do_not_count_as_negatives() -> None:
    """Two rows with the same answer and perfect predictions give the minimum loss when masked;
    unmasked, each must pick its own copy among two identical ones (loss ln 2 at least)."""
    target = F.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), dim=-1)
    pred = target.clone()
    same = same_meaning([("a",), ("a",), ("b",)], ["t", "t", "u"])
    masked = float(masked_info_nce(pred, target, 0.01, same))
    plain = float(masked_info_nce(pred, target, 0.01, None))
    assert masked < 1e-3
    assert plain > math.log(2) * 2 / 3 - 1e-3


def test_contrastive_step_runs_one_encoding_per_clip(micro_config) -> None:
    """Three rows over two clips give a finite loss whose gradient reaches encoder and predictor."""
    x_encoder = dataclasses.replace(micro_config.x_encoder, frozen=False)
    torch.manual_seed(0)
    model = VLJepa(dataclasses.replace(micro_config, x_encoder=x_encoder)).train()
    cfg = model.cfg.x_encoder
    video = torch.randn(2, cfg.num_frames, 3, cfg.crop_size, cfg.crop_size)
    queries, query_mask = model.encode_query(["what is the robot doing?", ""])
    ids, mask = model.y_encoder.tokenize(["a red cube", "a blue ball", "no"])
    calls = []
    model.x_encoder.register_forward_hook(lambda *_: calls.append(1))
    loss = ContrastiveStep(model)(
        video,
        torch.tensor([0, 0, 1]),
        queries.detach(),
        query_mask,
        torch.tensor([0, 1, 0]),
        ids,
        mask,
        torch.tensor([0, 1, 2]),
        torch.eye(3, dtype=torch.bool),
    )
    loss.backward()
    assert math.isfinite(float(loss.detach()))
    assert len(calls) == 1
    grads = [p.grad for p in model.predictor.parameters()]
    assert all(g is not None for g in grads)
    assert any(p.grad is not None for p in model.x_encoder.parameters())


def test_label_prompts_are_extra_negatives_only_where_allowed() -> None:
    """Extra candidates change the clip-to-text side only where extra_negative allows them: with
    none allowed the loss is unchanged; a prompt that the prediction is close to raises it."""
    pred = F.normalize(torch.tensor([[1.0, 0.1], [0.0, 1.0]]), dim=-1)
    target = pred.clone()
    prompts = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # close to row 0's and row 1's answers
    base = float(masked_info_nce(pred, target, 0.1))
    none_allowed = torch.zeros(2, 2, dtype=torch.bool)
    assert float(masked_info_nce(pred, target, 0.1, None, prompts, none_allowed)) == base
    row0_against_prompt0 = torch.tensor([[True, False], [False, False]])
    assert float(masked_info_nce(pred, target, 0.1, None, prompts, row0_against_prompt0)) > base


def test_prompt_classification_scores_answers_against_their_own_prompt() -> None:
    """An answer next to its own prompt costs little, next to another state's prompt much; rows
    about no state (-1) are left out, and a batch without any gives zero that back-propagates."""
    prompts = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    answers = torch.tensor([[0.9, 0.1], [0.1, 0.9], [5.0, 5.0]])
    right = float(prompt_classification(answers, prompts, torch.tensor([0, 1, -1]), 0.1))
    wrong = float(prompt_classification(answers, prompts, torch.tensor([1, 0, -1]), 0.1))
    assert right < 1e-3 < 5.0 < wrong
    alone = float(prompt_classification(answers[:2], prompts, torch.tensor([0, 1]), 0.1))
    assert math.isclose(right, alone, rel_tol=1e-6)
    answers.requires_grad_(True)
    nothing = prompt_classification(answers, prompts, torch.tensor([-1, -1, -1]), 0.1)
    nothing.backward()
    assert float(nothing.detach()) == 0.0
    assert answers.grad is not None


def test_meaning_contrast_pulls_same_meanings_together_and_pushes_others_apart() -> None:
    """Known answer: two same-meaning texts at cosine 1, a third at 0, temperature 1: each of the
    pair has -log(e / (e + 1)); the third has no positive and is left out. Swapping which texts
    are positives costs more; no positive at all gives zero that back-propagates."""
    texts = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0]])
    pair = torch.tensor([[True, True, False], [True, True, False], [False, False, True]])
    loss = float(meaning_contrast(texts, pair, 1.0))
    assert math.isclose(loss, math.log1p(math.exp(-1.0)), rel_tol=1e-6)
    apart = torch.tensor([[True, False, True], [False, True, False], [True, False, True]])
    assert float(meaning_contrast(texts, apart, 1.0)) > loss + 0.5
    texts.requires_grad_(True)
    nothing = meaning_contrast(texts, torch.eye(3, dtype=torch.bool), 1.0)
    nothing.backward()
    assert float(nothing.detach()) == 0.0
    assert texts.grad is not None


def _two_clip_rows(model: VLJepa, answers: list[str]) -> tuple[torch.Tensor, ...]:
    """ContrastiveStep's first arguments for two random clips, one question each, answered by
    `answers` (distinct meanings): video, clip index, query states and mask, query index,
    answer ids and mask, answer index, same-meaning matrix."""
    cfg = model.cfg.x_encoder
    video = torch.randn(2, cfg.num_frames, 3, cfg.crop_size, cfg.crop_size)
    queries, query_mask = model.encode_query(["what is the robot doing?"])
    ids, mask = model.y_encoder.tokenize(answers)
    return (
        video,
        torch.tensor([0, 1]),
        queries.detach(),
        query_mask,
        torch.tensor([0, 0]),
        ids,
        mask,
        torch.tensor([0, 1]),
        torch.eye(2, dtype=torch.bool),
    )


def test_contrastive_step_adds_the_weighted_text_loss(micro_config) -> None:
    """With text_weight w the step's loss is the InfoNCE plus w times the prompt classification
    of the distinct answers, and that term's gradient reaches the trainable Y-encoder."""
    torch.manual_seed(0)
    y_encoder = dataclasses.replace(micro_config.y_encoder, trainable=True)
    model = VLJepa(dataclasses.replace(micro_config, y_encoder=y_encoder)).eval()
    rows = _two_clip_rows(model, ["the arm grabs the red cube", "no, it is empty"])
    ids, mask = rows[5], rows[6]
    prompt_ids, prompt_mask = model.y_encoder.tokenize(["grasping", "idle"])
    state = torch.tensor([0, -1])
    args = (*rows, prompt_ids, prompt_mask, torch.ones(2, 2, dtype=torch.bool), state)
    step = ContrastiveStep(model)
    base = step(*args, 0.0)
    weighted = step(*args, 2.0)
    with torch.no_grad():
        answers = model.y_encoder(ids, mask)
        prompts = model.y_encoder(prompt_ids, prompt_mask)
        text = prompt_classification(answers, prompts, state, model.loss_fn.temperature)
    assert torch.allclose(weighted - base, 2.0 * text, atol=1e-5)
    model.zero_grad()
    (weighted - base).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.y_encoder.parameters())


def test_contrastive_step_adds_the_weighted_meaning_loss(micro_config) -> None:
    """With meaning_weight w the step's loss is the InfoNCE plus w times the supervised
    contrastive loss over the distinct answers followed by the prompts, and its gradient
    reaches the trainable Y-encoder."""
    torch.manual_seed(0)
    y_encoder = dataclasses.replace(micro_config.y_encoder, trainable=True)
    model = VLJepa(dataclasses.replace(micro_config, y_encoder=y_encoder)).eval()
    rows = _two_clip_rows(model, ["the arm grabs the red cube", "the arm grabs the blue cube"])
    ids, mask = rows[5], rows[6]
    prompt_ids, prompt_mask = model.y_encoder.tokenize(["grasping", "idle"])
    # each answer means the same as prompt 2 (grasping), not as the other answer (another
    # object); prompt 3 (idle) matches nothing else
    positive = torch.tensor(
        [
            [True, False, True, False],
            [False, True, True, False],
            [True, True, True, False],
            [False, False, False, True],
        ]
    )
    args = (*rows, prompt_ids, prompt_mask, torch.ones(2, 2, dtype=torch.bool))
    step = ContrastiveStep(model)
    base = step(*args)
    weighted = step(*args, text_positive=positive, meaning_weight=0.5)
    with torch.no_grad():
        texts = torch.cat([model.y_encoder(ids, mask), model.y_encoder(prompt_ids, prompt_mask)])
        meaning = meaning_contrast(texts, positive, model.loss_fn.temperature)
    assert float(meaning) > 0
    assert torch.allclose(weighted - base, 0.5 * meaning, atol=1e-5)
    model.zero_grad()
    (weighted - base).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.y_encoder.parameters())


def test_clip_classification_reads_the_mean_visual_token() -> None:
    """The head sees the mean of a clip's visual tokens: a head that reads the state off it
    costs little, the wrong states cost much, clips without a state (-1) are left out, and a
    batch without any gives zero that back-propagates."""
    head = torch.nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        head.weight.copy_(10 * torch.eye(2))
    # (B=3, V=2, H=2): the clips' token means are (1, 0), (0, 1) and (1, 1)
    visual = torch.tensor([[[2.0, 0.0], [0.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]], [[1.0, 1.0]] * 2])
    with torch.no_grad():
        right = float(clip_classification(head, visual, torch.tensor([0, 1, -1])))
        wrong = float(clip_classification(head, visual, torch.tensor([1, 0, -1])))
    assert right < 1e-3 < 5.0 < wrong
    visual.requires_grad_(True)
    nothing = clip_classification(head, visual, torch.tensor([-1, -1, -1]))
    nothing.backward()
    assert float(nothing.detach()) == 0.0
    assert visual.grad is not None


def test_contrastive_step_adds_the_weighted_state_loss(micro_config) -> None:
    """With state_weight w the step's loss is the InfoNCE plus w times the state head's
    cross-entropy; its gradient reaches the X-encoder, and the head is not the model's."""
    torch.manual_seed(0)
    x_encoder = dataclasses.replace(micro_config.x_encoder, frozen=False)
    model = VLJepa(dataclasses.replace(micro_config, x_encoder=x_encoder)).eval()
    args = _two_clip_rows(model, ["the arm grabs the red cube", "the arm is still"])
    video = args[0]
    step = ContrastiveStep(model, state_classes=7)
    assert step.state_head is not None
    clip_state = torch.tensor([2, -1])
    base = step(*args)
    weighted = step(*args, clip_state=clip_state, state_weight=2.0)
    with torch.no_grad():
        expected = clip_classification(step.state_head, model.x_encoder(video), clip_state)
    assert torch.allclose(weighted - base, 2.0 * expected, atol=1e-5)
    model.zero_grad()
    (weighted - base).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.x_encoder.parameters())
    assert not any(k.startswith("state_head") for k in model.state_dict())


def _top_layer_model(micro_config, layers: int) -> VLJepa:
    from vljepa_ros.train.trainer import freeze_y_encoder_layers

    torch.manual_seed(0)
    model = VLJepa(micro_config).eval()
    freeze_y_encoder_layers(model, layers)
    return model


@pytest.mark.parametrize(("layers", "frozen"), [(1, 1), (0, 2), (-1, 0)])
def test_frozen_lower_layers_counts_the_layers_below_the_first_trainable_one(
    micro_config, layers: int, frozen: int
) -> None:
    """With the top layer of a 2-layer Y-encoder training, 1 layer can be cached; with none
    training, both; with the whole backbone training (embeddings too), none."""
    assert frozen_lower_layers(_top_layer_model(micro_config, layers).y_encoder) == frozen


def test_cached_lower_text_layers_give_the_same_loss_and_gradients(micro_config) -> None:
    """The step with the frozen lower Y-encoder layer cached per text gives the loss and the
    gradients of the plain step, also on a later step that reuses cached texts in another
    batch (other padding length), and runs the lower layer once per distinct text."""
    model = _top_layer_model(micro_config, 1)
    cfg = model.cfg.x_encoder
    video = torch.randn(2, cfg.num_frames, 3, cfg.crop_size, cfg.crop_size)
    queries, query_mask = model.encode_query(["what is the robot doing?"])
    plain, cached = ContrastiveStep(model), ContrastiveStep(model, True)
    assert cached.lower is not None
    top = model.y_encoder.layer_stack()[-1]
    lower_calls = []
    model.y_encoder.layer_stack()[0].register_forward_hook(
        lambda m, i, o: lower_calls.append(len(i[0]))
    )
    for texts in (["the arm grabs the red cube", "no"], ["no", "the arm lifts a very long bar"]):
        ids, mask = model.y_encoder.tokenize(texts)
        args = (
            video,
            torch.tensor([0, 1]),
            queries.detach(),
            query_mask,
            torch.tensor([0, 0]),
            ids,
            mask,
            torch.tensor([0, 1]),
            torch.eye(2, dtype=torch.bool),
        )
        grads = []
        for step in (plain, cached):
            model.zero_grad()
            loss = step(*args)
            loss.backward()
            grads.append((float(loss.detach()), [p.grad.clone() for p in top.parameters()]))
        assert math.isclose(grads[0][0], grads[1][0], rel_tol=1e-5)
        for a, b in zip(grads[0][1], grads[1][1], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert len(cached.lower.cache) == 3
    # texts through the lower layer: plain 2 and 2; cached 2, then only the new one
    assert sum(lower_calls) == 2 + 2 + 2 + 1


def test_contrastive_step_adds_the_weighted_object_loss(micro_config) -> None:
    """With object_weight w the step's loss is the InfoNCE plus w times the colour and shape
    heads' cross-entropies; clips without an object are left out; the gradient reaches the
    X-encoder, and the heads are not the model's."""
    torch.manual_seed(0)
    x_encoder = dataclasses.replace(micro_config.x_encoder, frozen=False)
    model = VLJepa(dataclasses.replace(micro_config, x_encoder=x_encoder)).eval()
    args = _two_clip_rows(model, ["the arm grabs the red cube", "the arm is still"])
    step = ContrastiveStep(model, object_heads=True)
    assert step.colour_head is not None
    assert step.shape_head is not None
    assert step.state_head is None
    clip_object = torch.tensor(clip_object_index([("blue", "brick"), None]))
    assert clip_object.tolist() == [[2, 3], [-1, -1]]  # COLOURS and SHAPE_NOUNS order
    base = step(*args)
    weighted = step(*args, clip_object=clip_object, object_weight=0.5)
    with torch.no_grad():
        visual = model.x_encoder(args[0])
        colour = F.cross_entropy(step.colour_head(visual[:1].mean(1)), torch.tensor([2]))
        shape = F.cross_entropy(step.shape_head(visual[:1].mean(1)), torch.tensor([3]))
    assert torch.allclose(weighted - base, 0.5 * (colour + shape), atol=1e-5)
    model.zero_grad()
    (weighted - base).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.x_encoder.parameters())
    assert not any(k.split(".")[0] in ("colour_head", "shape_head") for k in model.state_dict())
