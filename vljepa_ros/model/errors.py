"""Error types of the model library; every message names the file or key at fault."""

from __future__ import annotations


class ModelError(ValueError):
    """Base class: something about a model, its weights or its inputs is wrong."""


class WeightsError(ModelError):
    """A weight folder or file is missing, unreadable, corrupt or of the wrong shape."""


class CheckpointError(ModelError):
    """A VL-JEPA checkpoint directory is missing, incomplete, corrupt or inconsistent."""


class YEncoderMismatchError(CheckpointError):
    """The Y-encoder found now differs from the one recorded in the checkpoint."""
