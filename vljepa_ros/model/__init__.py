"""VL-JEPA model library: pure PyTorch, no ROS imports.

Public API (see README): `VLJepaRuntime` for inference, `load_checkpoint`/`save_checkpoint`
for checkpoint directories, `VLJepa` and its components for training, configs and presets.
"""

from .api import Choice, Ranking, VLJepaRuntime, parse_dtype
from .checkpoint import (
    DEFAULT_CHECKPOINT,
    checkpoint_bytes,
    checkpoint_id,
    load_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
    shipped_checkpoints,
)
from .config import (
    PRESETS,
    ConfigError,
    LossConfig,
    PredictorConfig,
    RopeConfig,
    VLJepaConfig,
    XEncoderConfig,
    YDecoderConfig,
    YEncoderConfig,
    apply_dotlist,
    load_config,
    preset,
    tiny,
    vitl,
)
from .errors import CheckpointError, ModelError, WeightsError, YEncoderMismatchError
from .losses import InfoNCELoss, info_nce
from .predictor import Predictor, config_from_llama_folder, load_llama_layers
from .preprocess import Preprocessor
from .vljepa import VLJepa
from .x_encoder import XEncoder, config_from_vjepa2_folder, load_vjepa2_encoder
from .y_decoder import YDecoder
from .y_encoder import TextEncoder

__all__ = [
    "DEFAULT_CHECKPOINT",
    "PRESETS",
    "CheckpointError",
    "Choice",
    "ConfigError",
    "InfoNCELoss",
    "LossConfig",
    "ModelError",
    "Predictor",
    "PredictorConfig",
    "Preprocessor",
    "Ranking",
    "RopeConfig",
    "TextEncoder",
    "VLJepa",
    "VLJepaConfig",
    "VLJepaRuntime",
    "WeightsError",
    "XEncoder",
    "XEncoderConfig",
    "YDecoder",
    "YDecoderConfig",
    "YEncoderConfig",
    "YEncoderMismatchError",
    "apply_dotlist",
    "checkpoint_bytes",
    "checkpoint_id",
    "config_from_llama_folder",
    "config_from_vjepa2_folder",
    "info_nce",
    "load_checkpoint",
    "load_config",
    "load_llama_layers",
    "load_vjepa2_encoder",
    "parse_dtype",
    "preset",
    "resolve_checkpoint",
    "save_checkpoint",
    "shipped_checkpoints",
    "tiny",
    "vitl",
]
