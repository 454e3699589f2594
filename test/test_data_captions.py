"""Tests of vljepa_ros.data.captions: paraphrases, object words, held-out prompts, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from ros_support import REPO

from vljepa_ros.data import captions
from vljepa_ros.data.groundtruth import STATES


def _all_training_sentences() -> set[str]:
    """Every caption the generator can produce (all templates x colours x shape nouns)."""
    out = set()
    for templates in captions.TRAIN_TEMPLATES.values():
        for template in templates:
            for colour in captions.COLOURS:
                for nouns in captions.SHAPE_NOUNS.values():
                    for noun in nouns:
                        out.add(template.format(obj=f"{colour} {noun}"))
    return out


def test_every_state_has_several_paraphrases_and_held_out_prompts() -> None:
    """Each of the seven states has at least four caption templates and two held-out prompts."""
    assert set(captions.TRAIN_TEMPLATES) == set(STATES)
    assert set(captions.HELDOUT_PROMPTS) == set(STATES)
    for state in STATES:
        assert len(set(captions.TRAIN_TEMPLATES[state])) >= 4, state
        assert len(set(captions.HELDOUT_PROMPTS[state])) >= 2, state


@pytest.mark.parametrize("state", [s for s in STATES if s != "idle"])
def test_action_captions_name_the_object(state: str) -> None:
    """Every template of an action state has the object slot (idle may omit it)."""
    for template in captions.TRAIN_TEMPLATES[state]:
        assert "{obj}" in template, template


def test_held_out_prompts_never_appear_in_training_text() -> None:
    """Held-out prompts differ from every caption and from the default label prompts."""
    training = _all_training_sentences()
    defaults = set(
        yaml.safe_load((REPO / "config" / "robot_states.yaml").read_text())["labels"].values()
    )
    for state, prompts in captions.HELDOUT_PROMPTS.items():
        for prompt in prompts:
            assert prompt not in training, (state, prompt)
            assert prompt not in defaults, (state, prompt)
    assert not training & defaults


@pytest.mark.parametrize(
    ("colour", "shape"),
    [("red", "cube"), ("blue", "ball"), ("black", "cylinder"), ("orange", "brick")],
)
def test_caption_uses_the_colour_and_a_noun_of_the_shape(colour: str, shape: str) -> None:
    """A grasping caption contains the colour word and one of the shape's nouns."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        text = captions.caption("grasping", colour, shape, rng)
        assert f"{colour} " in text
        assert any(noun in text for noun in captions.SHAPE_NOUNS[shape]), text


def test_captions_are_deterministic_under_a_seed_and_varied_across_draws() -> None:
    """The same seed gives the same captions; many draws give several different wordings."""
    draws_a = [
        captions.caption("lifting", "red", "cube", np.random.default_rng(7)) for _ in range(3)
    ]
    assert len(set(draws_a)) == 1
    rng = np.random.default_rng(1)
    assert len({captions.caption("lifting", "red", "cube", rng) for _ in range(60)}) >= 6


@pytest.mark.parametrize(
    ("state", "colour", "shape"),
    [("flying", "red", "cube"), ("idle", "pink", "cube"), ("idle", "red", "pyramid")],
)
def test_unknown_words_are_refused(state: str, colour: str, shape: str) -> None:
    """An unknown state, colour or shape raises ValueError naming the known ones."""
    with pytest.raises(ValueError, match="unknown"):
        captions.caption(state, colour, shape, np.random.default_rng(0))


def test_segment_captions_keep_one_wording_per_segment() -> None:
    """Frames of one segment (same state and object) share a caption; a new segment redraws."""
    states = ["idle"] * 3 + ["reaching"] * 4 + ["grasping"] * 2
    subjects = [("red", "cube")] * 9
    texts = captions.segment_captions(states, subjects, np.random.default_rng(3))
    assert len(set(texts[:3])) == len(set(texts[3:7])) == len(set(texts[7:])) == 1
    assert texts[2] != texts[3] != texts[7]


def test_segment_captions_refuse_lists_of_different_lengths() -> None:
    """States and subjects must be aligned one to one."""
    with pytest.raises(ValueError, match="2 states but 1 subjects"):
        captions.segment_captions(["idle", "idle"], [("red", "cube")], np.random.default_rng(0))
