"""Caption templates for simulated episodes and held-out rewordings of the robot-state prompts.

Two disjoint text sets live here:

- `TRAIN_TEMPLATES`: several paraphrases per robot state, each with an `{obj}` slot filled by a
  colour word and a shape synonym ("the red block"). The generator draws one per segment of
  an episode, so the model sees many wordings of the same meaning.
- `HELDOUT_PROMPTS`: different rewordings of each state's label prompt, never used in any
  caption, for measuring classification under prompts the model was not trained on.

The canonical prompts of the default model are in config/robot_states.yaml; they are neither
captions nor held-out prompts (a test checks that the three sets do not overlap).
"""

from __future__ import annotations

import numpy as np

from vljepa_ros.data.groundtruth import STATES

# Colour words and the RGBA the simulator paints them with (chosen to stay recognisable under
# the randomised lights: saturated, mid-bright).
COLOURS: dict[str, tuple[float, float, float, float]] = {
    "red": (0.85, 0.10, 0.10, 1.0),
    "green": (0.10, 0.70, 0.15, 1.0),
    "blue": (0.10, 0.25, 0.90, 1.0),
    "yellow": (0.95, 0.85, 0.10, 1.0),
    "orange": (0.98, 0.50, 0.05, 1.0),
    "purple": (0.55, 0.15, 0.75, 1.0),
    "white": (0.95, 0.95, 0.95, 1.0),
    "black": (0.06, 0.06, 0.06, 1.0),
}

# Shape names used by the simulator, each with the nouns a caption may use for it.
SHAPE_NOUNS: dict[str, tuple[str, ...]] = {
    "cube": ("cube", "block", "box"),
    "ball": ("ball", "sphere"),
    "cylinder": ("cylinder", "can", "tube"),
    "brick": ("brick", "bar", "long block"),
}

TRAIN_TEMPLATES: dict[str, tuple[str, ...]] = {
    "idle": (
        "the robot arm is idle next to the {obj}",
        "the arm stays still with an empty gripper",
        "nothing moves; the robot waits near the {obj}",
        "the robot rests and holds nothing",
        "the manipulator pauses beside the {obj}",
    ),
    "reaching": (
        "the robot arm reaches toward the {obj}",
        "the arm moves its open gripper to the {obj}",
        "the gripper approaches the {obj}",
        "the robot extends its arm to get the {obj}",
        "the arm heads for the {obj} with the gripper open",
    ),
    "grasping": (
        "the robot grasps the {obj}",
        "the gripper closes on the {obj}",
        "the fingers clamp around the {obj}",
        "the arm grabs the {obj}",
        "the robot takes hold of the {obj}",
    ),
    "lifting": (
        "the robot lifts the {obj}",
        "the arm raises the {obj} off the table",
        "the gripper picks up the {obj}",
        "the {obj} is lifted upward by the robot",
        "the robot pulls the {obj} up into the air",
    ),
    "transporting": (
        "the robot carries the {obj} across the table",
        "the arm moves the {obj} sideways",
        "the {obj} is transported by the gripper",
        "the robot moves the held {obj} to a new spot",
        "the arm swings over with the {obj} in its gripper",
    ),
    "placing": (
        "the robot places the {obj} on the table",
        "the arm lowers the {obj} and lets go",
        "the gripper sets the {obj} down",
        "the robot puts down the {obj}",
        "the {obj} is released onto the table",
    ),
    "retreating": (
        "the robot arm moves away from the {obj}",
        "the empty gripper pulls back from the {obj}",
        "the arm withdraws after dropping off the {obj}",
        "the robot backs off, leaving the {obj} behind",
        "the arm returns from the {obj} with nothing in its gripper",
    ),
}

HELDOUT_PROMPTS: dict[str, tuple[str, ...]] = {
    "idle": (
        "a motionless robot with nothing in its hand",
        "the machine is waiting and not doing anything",
    ),
    "reaching": (
        "the robot's hand travels to an item it wants to pick",
        "an open claw goes toward a thing on the table",
    ),
    "grasping": (
        "the claw shuts to seize an item",
        "the robot's fingers squeeze an object",
    ),
    "lifting": (
        "an item rises in the robot's hand",
        "the robot hoists something it has caught",
    ),
    "transporting": (
        "the robot hauls an item horizontally",
        "something held by the robot travels over the workspace",
    ),
    "placing": (
        "the robot sets an item down and opens its hand",
        "a held thing is lowered and dropped off",
    ),
    "retreating": (
        "the robot's empty hand withdraws",
        "having let go, the machine pulls its hand back",
    ),
}


def object_phrase(colour: str, shape: str, rng: np.random.Generator) -> str:
    """'the'-less noun phrase for an object, e.g. 'red block', with a random shape synonym.

    Raises:
        ValueError: an unknown colour or shape.
    """
    if colour not in COLOURS:
        raise ValueError(f"unknown colour '{colour}' (known: {', '.join(COLOURS)})")
    if shape not in SHAPE_NOUNS:
        raise ValueError(f"unknown shape '{shape}' (known: {', '.join(SHAPE_NOUNS)})")
    nouns = SHAPE_NOUNS[shape]
    return f"{colour} {nouns[int(rng.integers(len(nouns)))]}"


def caption(state: str, colour: str, shape: str, rng: np.random.Generator) -> str:
    """One training caption for `state` about the object, drawn with `rng` (deterministic).

    Raises:
        ValueError: an unknown state, colour or shape.
    """
    if state not in TRAIN_TEMPLATES:
        raise ValueError(f"unknown state '{state}' (known: {', '.join(STATES)})")
    templates = TRAIN_TEMPLATES[state]
    template = templates[int(rng.integers(len(templates)))]
    return template.format(obj=object_phrase(colour, shape, rng))


def segment_captions(
    states: list[str], subjects: list[tuple[str, str]], rng: np.random.Generator
) -> list[str]:
    """Per-frame captions: one paraphrase drawn per segment (a run of equal state and subject).

    `subjects[i]` is the (colour, shape) of the object frame i is about. Keeping the wording
    fixed within a segment makes the captions read like annotations of actions, not noise.

    Raises:
        ValueError: lists of different lengths, or an unknown state, colour or shape.
    """
    if len(states) != len(subjects):
        raise ValueError(f"{len(states)} states but {len(subjects)} subjects")
    out: list[str] = []
    for i, (state, subject) in enumerate(zip(states, subjects, strict=True)):
        if i and state == states[i - 1] and subject == subjects[i - 1]:
            out.append(out[-1])
        else:
            out.append(caption(state, subject[0], subject[1], rng))
    return out
