"""Answer texts per query kind: objects parsed from captions, keys, held-out prompts kept out."""

from __future__ import annotations

import numpy as np
import pytest

from vljepa_ros.data import captions
from vljepa_ros.train.config import QUERY_KINDS, read_labels
from vljepa_ros.train.objective import compatible
from vljepa_ros.train.targets import (
    WHERE_TEMPLATES,
    AnswerMaker,
    FrameLabel,
    frame_objects,
    parse_object,
    text_key,
)

LABELS = read_labels("config/robot_states.yaml")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("the arm grabs the red block", ("red", "cube")),
        ("the arm withdraws after dropping off the yellow long block", ("yellow", "brick")),
        ("the gripper approaches the purple can", ("purple", "cylinder")),
        ("the robot rests and holds nothing", None),
        (None, None),
    ],
)
def test_parse_object_finds_colour_and_shape(text: str | None, expected: object) -> None:
    """The first colour + shape noun of a caption names the object (synonyms mapped)."""
    assert parse_object(text) == expected


def test_frame_objects_fill_captions_without_an_object() -> None:
    """Frames whose caption names no object take the previous one's, or the next at the start."""
    got = frame_objects([None, "the robot rests", "the red ball", "x", "the blue can", None])
    assert got == [("red", "ball")] * 4 + [("blue", "cylinder")] * 2


def test_text_key_drops_the_object_a_text_does_not_name() -> None:
    """As a text, a state answer that names no object means the state about any object: it is
    compatible with the same state's answers about every object, not with other states'."""
    key = ("state", "idle", "red", "cube")
    said = text_key("the robot rests and holds nothing", key)
    assert said == ("state", "idle", "", "")
    assert compatible(said, ("state", "idle", "blue", "ball"))
    assert not compatible(said, ("state", "reaching", "", ""))
    assert text_key("the robot arm is idle next to the red box", key) == key
    holding = ("holding", "yes", "red", "cube")
    assert text_key("yes, it holds the red cube", holding) == holding
    assert text_key("no, the gripper is empty", ("holding", "no")) == ("holding", "no")


@pytest.mark.parametrize("state", list(LABELS))
def test_every_kind_answers_a_canonical_frame(state: str) -> None:
    """A frame with a canonical state and an object answers all five query kinds."""
    maker = AnswerMaker(LABELS)
    frame = FrameLabel(state, "the robot does something with the red cube", "red", "cube")
    assert maker.kinds(frame) == list(QUERY_KINDS)
    rng = np.random.default_rng(0)
    for kind in QUERY_KINDS:
        text, key = maker.answer(frame, kind, rng)
        assert text
        assert key


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("lifting", "yes, it holds the red "),
        ("grasping", "not yet, the gripper is closing on the red "),
        ("idle", "no, the gripper is empty"),
        ("retreating", "no, the gripper is empty"),
    ],
)
def test_holding_answers_follow_the_state(state: str, expected: str) -> None:
    """Held states answer yes with the object, grasping 'not yet', the rest 'no'."""
    text, _ = AnswerMaker(LABELS).answer(
        FrameLabel(state, None, "red", "cube"), "holding", np.random.default_rng(1)
    )
    assert text.startswith(expected)


def test_doing_answers_mix_prompts_and_paraphrases_with_one_key() -> None:
    """'doing' gives the label prompt or a training paraphrase: the paraphrases share the key
    of the state and object, the prompt's key names no object, and all of them are compatible
    (none is a negative of another)."""
    maker = AnswerMaker(LABELS, prompt_fraction=0.5)
    frame = FrameLabel("grasping", "the robot grasps the red cube", "red", "cube")
    rng = np.random.default_rng(2)
    answers = [maker.answer(frame, "doing", rng) for _ in range(40)]
    texts = {t for t, _ in answers}
    assert LABELS["grasping"] in texts
    assert len(texts) > 2
    keys = {k for _, k in answers}
    assert keys == {("state", "grasping", "red", "cube"), AnswerMaker.prompt_key("grasping")}
    assert all(compatible(a, b) for a in keys for b in keys)
    assert not compatible(AnswerMaker.prompt_key("grasping"), AnswerMaker.prompt_key("lifting"))
    assert not compatible(("state", "grasping", "red", "cube"), ("state", "grasping", "blue", ""))


def test_frames_without_annotations_answer_only_what_they_know() -> None:
    """A caption-only frame answers the caption query; an unlabelled one nothing."""
    maker = AnswerMaker(LABELS)
    assert maker.kinds(FrameLabel(None, "a person waves")) == ["caption"]
    assert maker.kinds(FrameLabel(None, None)) == []
    with pytest.raises(ValueError, match="cannot answer"):
        maker.answer(FrameLabel(None, "a person waves"), "doing", np.random.default_rng(0))


def test_no_training_answer_is_a_heldout_prompt() -> None:
    """Evaluation's reworded prompts never appear among the texts training can produce."""
    heldout = {p for prompts in captions.HELDOUT_PROMPTS.values() for p in prompts}
    maker = AnswerMaker(LABELS)
    rng = np.random.default_rng(3)
    produced = set()
    for state in LABELS:
        for colour in captions.COLOURS:
            for shape in captions.SHAPE_NOUNS:
                frame = FrameLabel(state, None, colour, shape)
                for kind in maker.kinds(frame):
                    produced |= {maker.answer(frame, kind, rng)[0] for _ in range(3)}
    assert not produced & heldout
    assert set(WHERE_TEMPLATES) == set(LABELS)


@pytest.mark.parametrize("fraction", [0.0, 0.5, 1.0])
@pytest.mark.parametrize(
    "frame",
    [
        FrameLabel("lifting", "the robot lifts the red cube", "red", "cube"),
        FrameLabel("idle", "the robot waits", None, None),
        FrameLabel("grasping", None, "blue", "brick"),
        FrameLabel("placing", None),
    ],
    ids=["object", "caption-only", "no-caption", "bare"],
)
def test_possible_answers_are_exactly_what_answer_can_draw(
    frame: FrameLabel, fraction: float
) -> None:
    """The answer bank's texts: every draw of `answer` is among `possible_answers`, and enough
    draws produce all of them (so the bank holds nothing the model was not trained on)."""
    maker = AnswerMaker(LABELS, prompt_fraction=fraction)
    rng = np.random.default_rng(0)
    for kind in maker.kinds(frame):
        possible = maker.possible_answers(frame, kind)
        drawn = {maker.answer(frame, kind, rng)[0] for _ in range(3000)}
        assert drawn == set(possible), kind
    with pytest.raises(ValueError, match="cannot answer"):
        maker.possible_answers(FrameLabel(None, None), "doing")
