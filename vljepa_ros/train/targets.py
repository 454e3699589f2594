"""Answer texts for each query kind, made from a frame's annotations.

A frame of a training episode carries a robot state (annotated or derived), a caption (if the
bag has one) and the object the arm works on (parsed from the caption: a colour word and a
shape noun of `data.captions`). From these, each query kind has its answer:

- caption (query ""): the annotated caption, else the state's label prompt.
- doing ("what is the robot doing?"): the state's label prompt (a share `prompt_fraction` of
  the time), else a freshly drawn training paraphrase about the object ("the arm grabs the red
  block"), else the caption.
- object ("what object is involved?"): "the red block" (any noun of the shape).
- where ("where is the gripper?"): a location phrase per state (`WHERE_TEMPLATES`), e.g. "the
  gripper is at the red block, on the table".
- holding ("is the robot holding something?"): "yes, it holds the red block" (lifting,
  transporting, placing), "not yet, the gripper is closing on the red block" (grasping), else
  "no, the gripper is empty".

Every answer also has a *meaning key*: answers with equal keys say the same thing in other
words (two paraphrases of "grasping the red cube", a prompt and a caption of the same state and
object), so the contrastive loss does not push them apart (see `objective.masked_info_nce`); a
label prompt's key leaves the object unspecified, so it matches the state about any object.
The held-out rewordings of `captions.HELDOUT_PROMPTS` are never produced here.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from vljepa_ros.data import captions
from vljepa_ros.data.groundtruth import HELD_STATES

Key = tuple[str, ...]

WHERE_TEMPLATES: dict[str, str] = {
    "idle": "the gripper is still, away from the {obj}",
    "reaching": "the gripper is above the table, moving toward the {obj}",
    "grasping": "the gripper is at the {obj}, on the table",
    "lifting": "the gripper is rising above the table with the {obj}",
    "transporting": "the gripper is in the air above the table with the {obj}",
    "placing": "the gripper is down at the table, setting the {obj} down",
    "retreating": "the gripper is moving up and away from the {obj}",
}
HOLDING_YES = "yes, it holds the {obj}"
HOLDING_CLOSING = "not yet, the gripper is closing on the {obj}"
HOLDING_NO = "no, the gripper is empty"

_NOUN_SHAPE = {noun: shape for shape, nouns in captions.SHAPE_NOUNS.items() for noun in nouns}
_OBJECT_RE = re.compile(
    r"\b({})\s+({})\b".format(
        "|".join(captions.COLOURS),
        "|".join(sorted(_NOUN_SHAPE, key=len, reverse=True)),  # "long block" before "block"
    )
)


@dataclass(frozen=True)
class FrameLabel:
    """What is known about one frame: any field may be missing (None)."""

    state: str | None
    caption: str | None
    colour: str | None = None
    shape: str | None = None

    @property
    def has_object(self) -> bool:
        return self.colour is not None and self.shape is not None


def parse_object(text: str | None) -> tuple[str, str] | None:
    """(colour, shape) of the first 'colour noun' phrase in a caption, e.g. 'red block'."""
    if not text:
        return None
    match = _OBJECT_RE.search(text.lower())
    if match is None:
        return None
    return match.group(1), _NOUN_SHAPE[match.group(2)]


def recolour(frame: FrameLabel, colour: str) -> FrameLabel:
    """The same frame about an object of another colour: the colour field and the colour word of
    the caption's object phrase (the first one naming the frame's colour) change."""
    caption = frame.caption
    if caption and frame.colour is not None:
        for match in _OBJECT_RE.finditer(caption.lower()):
            if match.group(1) == frame.colour:
                caption = caption[: match.start(1)] + colour + caption[match.end(1) :]
                break
    return dataclasses.replace(frame, colour=colour, caption=caption)


def frame_objects(caption_list: list[str | None]) -> list[tuple[str, str] | None]:
    """The object of every frame: parsed from its caption, else the previous frame's object,
    else (at the start of an episode) the next one's."""
    parsed = [parse_object(c) for c in caption_list]
    out: list[tuple[str, str] | None] = []
    last: tuple[str, str] | None = None
    for obj in parsed:
        last = obj or last
        out.append(last)
    upcoming: tuple[str, str] | None = None
    for i in range(len(out) - 1, -1, -1):
        if parsed[i] is not None:
            upcoming = parsed[i]
        if out[i] is None:
            out[i] = upcoming
    return out


def text_key(text: str, key: Key) -> Key:
    """The meaning key of what a text itself says: an answer about a state whose text names no
    object ("the arm stays still with an empty gripper") carries the frame's object in its key
    (it answers about that clip), but as a text it means the state about any object."""
    if key[:1] == ("state",) and len(key) == 4 and parse_object(text) is None:
        return (*key[:2], "", "")
    return key


class AnswerMaker:
    """Answer text and meaning key of a (frame, query kind) pair, drawn with a numpy rng."""

    def __init__(self, labels: Mapping[str, str], prompt_fraction: float = 0.5) -> None:
        self.labels = dict(labels)
        self.prompt_fraction = prompt_fraction

    def _phrase(self, frame: FrameLabel, rng: np.random.Generator) -> str:
        return captions.object_phrase(frame.colour or "", frame.shape or "", rng)

    def _state_key(self, frame: FrameLabel) -> Key:
        return ("state", frame.state or "", frame.colour or "", frame.shape or "")

    @staticmethod
    def prompt_key(state: str) -> Key:
        """Key of a state's label prompt: it names no object, so it matches any ("" fields)."""
        return ("state", state, "", "")

    def kinds(self, frame: FrameLabel) -> list[str]:
        """The query kinds this frame can answer."""
        out = []
        if frame.caption or frame.state in self.labels:
            out.append("caption")
        if frame.state in self.labels:
            out.append("doing")
        if frame.has_object:
            out.append("object")
            if frame.state in WHERE_TEMPLATES:
                out += ["where", "holding"]
        return out

    def answer(self, frame: FrameLabel, kind: str, rng: np.random.Generator) -> tuple[str, Key]:
        """(text, meaning key) of the answer; `kind` must be one of `kinds(frame)`.

        Raises:
            ValueError: the frame cannot answer this kind of query.
        """
        if kind not in self.kinds(frame):
            raise ValueError(f"frame {frame} cannot answer a {kind!r} query")
        state = frame.state or ""
        if kind == "caption":
            if frame.caption:
                key = self._state_key(frame) if frame.state else ("text", frame.caption)
                return frame.caption, key
            return self.labels[state], self.prompt_key(state)
        if kind == "doing":
            use_prompt = rng.random() < self.prompt_fraction
            if not use_prompt and frame.has_object and state in captions.TRAIN_TEMPLATES:
                text = captions.caption(state, frame.colour or "", frame.shape or "", rng)
                return text, self._state_key(frame)
            if not use_prompt and frame.caption:
                return frame.caption, self._state_key(frame)
            return self.labels[state], self.prompt_key(state)
        phrase = self._phrase(frame, rng)
        obj_key = (frame.colour or "", frame.shape or "")
        if kind == "object":
            return f"the {phrase}", ("object", *obj_key)
        if kind == "where":
            return WHERE_TEMPLATES[state].format(obj=phrase), ("where", state, *obj_key)
        if state in HELD_STATES:
            return HOLDING_YES.format(obj=phrase), ("holding", "yes", *obj_key)
        if state == "grasping":
            return HOLDING_CLOSING.format(obj=phrase), ("holding", "closing", *obj_key)
        return HOLDING_NO, ("holding", "no")

    def possible_answers(self, frame: FrameLabel, kind: str) -> list[str]:
        """Every text `answer(frame, kind, rng)` can return, whatever the rng draws (the
        answer bank of `model.grounding` is made of them).

        Raises:
            ValueError: the frame cannot answer this kind of query.
        """
        if kind not in self.kinds(frame):
            raise ValueError(f"frame {frame} cannot answer a {kind!r} query")
        state = frame.state or ""
        nouns = captions.SHAPE_NOUNS.get(frame.shape or "", ())
        phrases = [f"{frame.colour} {noun}" for noun in nouns] if frame.has_object else []
        if kind == "caption":
            return [frame.caption or self.labels[state]]
        if kind == "doing":
            drawn = (
                [t.format(obj=p) for t in captions.TRAIN_TEMPLATES[state] for p in phrases]
                if phrases and state in captions.TRAIN_TEMPLATES
                else [frame.caption]
                if frame.caption
                else []
            )
            prompt = [self.labels[state]] if self.prompt_fraction > 0 or not drawn else []
            return [*(drawn if self.prompt_fraction < 1 else []), *prompt]
        if kind == "object":
            return [f"the {p}" for p in phrases]
        if kind == "where":
            return [WHERE_TEMPLATES[state].format(obj=p) for p in phrases]
        if state in HELD_STATES:
            return [HOLDING_YES.format(obj=p) for p in phrases]
        if state == "grasping":
            return [HOLDING_CLOSING.format(obj=p) for p in phrases]
        return [HOLDING_NO]
