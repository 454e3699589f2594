"""Typed training configuration: defaults in code, a YAML file over them, `--set` overrides last.

Loading is strict, as for the model config: an unknown key or a value of the wrong type is a
`ConfigError` naming the key. The `model:` section is a model preset (`preset: tiny`) plus any
`VLJepaConfig` keys over it. The resolved configuration (every value, the model in full) is
written as `train_config.yaml` next to each checkpoint, and loading that file gives back the
same `TrainConfig`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vljepa_ros.labels import read_labels_file
from vljepa_ros.model.config import (
    ConfigError,
    VLJepaConfig,
    _build,
    merge,
    preset,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_NAME = "train_config.yaml"
QUERY_KINDS = ("caption", "doing", "object", "where", "holding")
SCHEDULES = ("constant", "cosine")
PRECISIONS = ("fp32", "bf16")
_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass(frozen=True)
class DeriveConfig:
    """Thresholds of the rules that label a bag without annotations from its joint states."""

    gripper_joints: str = "finger"  # joints whose name contains this make up the gripper
    width_scale: float = 1.0  # gripper width = width_scale * sum of the gripper joint positions
    still_speed: float = 0.15  # rad/s: arm joint speed below this is still
    split_speed: float = 0.15  # rad/s: a dip below this splits motions into separate moves
    width_speed: float = 0.03  # m/s: gripper opening/closing faster than this is moving
    empty_width: float = 0.003  # m: a closed gripper narrower than this holds nothing
    open_margin: float = 0.005  # m: narrower than the widest opening minus this is not open
    min_idle_s: float = 0.45  # s: shorter still runs are absorbed by their neighbours

    def __post_init__(self) -> None:
        _check(bool(self.gripper_joints), "data.derive.gripper_joints must not be empty")
        for name in ("width_scale", "still_speed", "split_speed", "width_speed", "empty_width"):
            _check(getattr(self, name) > 0, f"data.derive.{name} must be > 0")
        _check(self.open_margin >= 0 and self.min_idle_s >= 0, "data.derive margins must be >= 0")


@dataclass(frozen=True)
class GenerateConfig:
    """Simulated episodes generated into OUT/sim_data when no data path is given."""

    episodes: int = 0  # 0: never generate, a data path is required
    seed: int = 0
    image_size: int = 160
    max_duration_s: float = 60.0
    cycles_min: int = 1
    cycles_max: int = 3
    workers: int = 1

    def __post_init__(self) -> None:
        _check(self.episodes >= 0, "data.generate.episodes must be >= 0")
        _check(self.seed >= 0 and self.workers >= 1, "data.generate: seed >= 0, workers >= 1")
        _check(1 <= self.cycles_min <= self.cycles_max, "data.generate: 1 <= cycles_min <= max")


@dataclass(frozen=True)
class DataConfig:
    """Which bags to read, which topics hold the labels, and how clips are cut."""

    paths: tuple[str, ...] = ()  # rosbag2 folders, .mcap files, or folders searched for them
    val_paths: tuple[str, ...] = ()  # held-out bags for the validation accuracy in the log
    image_topic: str = ""  # "": the first Image/CompressedImage topic (/camera/image_raw first)
    state_topic: str = "/ground_truth/state"
    caption_topic: str = "/ground_truth/caption"
    labels_file: str = "config/robot_states.yaml"  # label -> prompt (relative: to the repo)
    sample_hz: float = 10.0  # clip frame rate, as the perception node samples
    balance: float = 0.5  # end frames drawn with weight count(state) ** -balance
    cache_dir: str = ""  # decoded frames; "": OUT/cache
    derive: DeriveConfig = field(default_factory=DeriveConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)

    def __post_init__(self) -> None:
        _check(self.sample_hz > 0, "data.sample_hz must be > 0")
        _check(0 <= self.balance <= 1, "data.balance must be in [0, 1]")
        _check(bool(self.state_topic and self.caption_topic), "data topics must not be empty")


@dataclass(frozen=True)
class AugmentConfig:
    """Cheap per-clip augmentation (the same for every frame of a clip)."""

    shift_px: int = 8  # random translation by up to this many pixels (edge padding)
    hflip: bool = True  # captions and labels never say left or right
    brightness: float = 0.25  # multiply by 1 +- this
    contrast: float = 0.25
    saturation: float = 0.25
    # Share of clips about a red, green, blue, white or black object whose colour channels are
    # permuted, the object's colour word in the answers following (red <-> green <-> blue), so
    # that an episode's scene stops telling the object's colour (dataset.swap_colours).
    colour_swap: float = 0.0

    def __post_init__(self) -> None:
        _check(self.shift_px >= 0, "augment.shift_px must be >= 0")
        for name in ("brightness", "contrast", "saturation"):
            _check(0 <= getattr(self, name) < 1, f"augment.{name} must be in [0, 1)")
        _check(0 <= self.colour_swap <= 1, "augment.colour_swap must be in [0, 1]")


@dataclass(frozen=True)
class QueriesConfig:
    """The query text of each query kind (the kinds decide how the answer text is made)."""

    caption: str = ""  # query-free captioning: the annotated caption
    doing: str = "what is the robot doing?"  # the state's prompt or a paraphrase
    object: str = "what object is involved?"  # "the red block"
    where: str = "where is the gripper?"  # "the gripper is at the red block, on the table"
    holding: str = "is the robot holding something?"  # "yes, it holds the red block"


@dataclass(frozen=True)
class StageConfig:
    """One contrastive stage: clips with queries against Y-encoded answer texts."""

    steps: int = 1000
    batch_size: int = 48  # clips per step and process
    lr: float = 3e-4
    warmup_steps: int = 100
    schedule: str = "cosine"  # or constant
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    queries: tuple[str, ...] = ("caption",)  # kinds, see QUERY_KINDS
    queries_per_clip: int = 1  # kinds drawn per clip; the X-encoder runs once per clip
    prompt_fraction: float = 0.5  # `doing`: share of answers that are the label prompt
    # Text-side loss (objective.prompt_classification): every answer about a state, nearest its
    # own state's label prompt among all prompts; adapts the Y-encoder's wording of states.
    text_weight: float = 0.0
    # Training aid for an X-encoder learned from scratch (objective.ContrastiveStep): a linear
    # head on the mean of the visual tokens classifies the clip's robot state (cross-entropy,
    # this weight); it trains the encoder directly and is not part of the model checkpoint.
    state_weight: float = 0.0
    # The same for the object the clip's answers are about: two linear heads classify its colour
    # and its shape (objective.ContrastiveStep); a training aid, not part of the model.
    object_weight: float = 0.0
    # Text-side loss (objective.meaning_contrast): the batch's answers and the label prompts
    # pulled together where they mean the same and apart where not (other objects included).
    meaning_weight: float = 0.0

    def __post_init__(self) -> None:
        _check(self.steps >= 0, "stage steps must be >= 0")
        _check(self.batch_size >= 2, "stage batch_size must be >= 2 (InfoNCE needs negatives)")
        _check(self.lr > 0 and self.warmup_steps >= 0, "stage lr > 0 and warmup_steps >= 0")
        _check(self.schedule in SCHEDULES, f"stage schedule must be one of {SCHEDULES}")
        _check(0 <= self.min_lr_ratio <= 1, "stage min_lr_ratio must be in [0, 1]")
        unknown = sorted(set(self.queries) - set(QUERY_KINDS))
        _check(bool(self.queries) and not unknown, f"stage queries must be among {QUERY_KINDS}")
        _check(
            1 <= self.queries_per_clip <= len(self.queries),
            "stage queries_per_clip must be between 1 and the number of queries",
        )
        _check(0 <= self.prompt_fraction <= 1, "stage prompt_fraction must be in [0, 1]")
        _check(self.text_weight >= 0, "stage text_weight must be >= 0")
        _check(self.state_weight >= 0, "stage state_weight must be >= 0")
        _check(self.object_weight >= 0, "stage object_weight must be >= 0")
        _check(self.meaning_weight >= 0, "stage meaning_weight must be >= 0")


@dataclass(frozen=True)
class DecoderStageConfig:
    """The Y-decoder stage: (Y-encoder(text), text) pairs over the answer texts of training."""

    steps: int = 500
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 50
    schedule: str = "cosine"
    min_lr_ratio: float = 0.1

    def __post_init__(self) -> None:
        _check(self.steps >= 0 and self.batch_size >= 1, "decoder steps >= 0, batch_size >= 1")
        _check(self.lr > 0 and self.warmup_steps >= 0, "decoder lr > 0 and warmup_steps >= 0")
        _check(self.schedule in SCHEDULES, f"decoder schedule must be one of {SCHEDULES}")
        _check(0 <= self.min_lr_ratio <= 1, "decoder min_lr_ratio must be in [0, 1]")


@dataclass(frozen=True)
class TrainConfig:
    """Everything `vljepa train` does, resolved."""

    seed: int = 0
    out: str = "runs/train"
    model: VLJepaConfig = field(default_factory=VLJepaConfig)
    y_encoder_layers: int = 0  # top Y-encoder layers fine-tuned (lr x lr_multiplier); -1: all
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    queries: QueriesConfig = field(default_factory=QueriesConfig)
    stage1: StageConfig = field(default_factory=StageConfig)
    stage2: StageConfig = field(
        default_factory=lambda: StageConfig(queries=QUERY_KINDS, queries_per_clip=2)
    )
    decoder: DecoderStageConfig = field(default_factory=DecoderStageConfig)
    weight_decay: float = 0.05
    grad_clip: float = 1.0  # max gradient norm; 0: no clipping
    precision: str = "bf16"  # autocast of the X-encoder and predictor; weights stay fp32
    device: str = "auto"  # auto: cuda (cuda:LOCAL_RANK under torchrun) if available, else cpu
    threads: int = 0  # torch intra-op threads; 0: torch's default
    checkpoint_every: int = 200  # steps between resume checkpoints (OUT/last)
    log_every: int = 10  # steps between CSV rows
    val_every: int = 0  # steps between validations (val_paths); 0: at the end of each stage
    val_clips: int = 128
    progress: bool = True  # tqdm progress bar

    def __post_init__(self) -> None:
        _check(self.seed >= 0, "seed must be >= 0")
        _check(bool(self.out), "out must not be empty")
        _check(self.y_encoder_layers >= -1, "y_encoder_layers must be >= -1")
        _check(
            self.model.y_encoder.trainable == (self.y_encoder_layers != 0),
            "model.y_encoder.trainable must be true exactly when y_encoder_layers != 0 "
            "(load_train_config sets it)",
        )
        _check(self.weight_decay >= 0 and self.grad_clip >= 0, "weight_decay, grad_clip >= 0")
        _check(self.precision in PRECISIONS, f"precision must be one of {PRECISIONS}")
        _check(self.threads >= 0, "threads must be >= 0")
        _check(self.checkpoint_every >= 1 and self.log_every >= 1, "intervals must be >= 1")
        _check(self.val_every >= 0 and self.val_clips >= 1, "val_every >= 0, val_clips >= 1")

    @property
    def total_steps(self) -> int:
        return self.stage1.steps + self.stage2.steps + self.decoder.steps

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML-safe; tuples become lists)."""
        data = dataclasses.asdict(self)
        data["model"] = self.model.to_dict()
        return _plain(data)

    def to_yaml(self, path: str | Path) -> None:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False)
        Path(path).write_text("# resolved training configuration (vljepa train)\n" + text)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _model_config(data: Any, y_encoder_layers: int) -> VLJepaConfig:
    """`model:` section -> VLJepaConfig: a preset, keys over it, trainable Y-encoder set."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"config key 'model' must be a mapping, got {type(data).__name__}")
    data = dict(data)
    name = data.pop("preset", "tiny")
    if not isinstance(name, str):
        raise ConfigError(f"config key 'model.preset' must be a string, got {name!r}")
    y_over = dict(data.get("y_encoder") or {})
    y_over["trainable"] = y_encoder_layers != 0
    data["y_encoder"] = y_over
    try:
        return merge(preset(name), data)
    except ConfigError as exc:
        raise ConfigError(f"model: {exc}") from exc


def _set_dotted(tree: dict[str, Any], item: str) -> None:
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} is not of the form key.sub=value")
    parts = key.strip().split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {item!r}: {part!r} is not a section")
        node = child
    value = yaml.safe_load(raw)
    if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
        value = float(value)  # YAML 1.1 reads "5e-4" (no dot) as a string
    node[parts[-1]] = value


def config_from_dict(data: Mapping[str, Any], overrides: Sequence[str] = ()) -> TrainConfig:
    """Strict construction from a nested mapping plus `key.sub=value` overrides."""
    tree: dict[str, Any] = dict(data)
    for item in overrides:
        _set_dotted(tree, item)
    layers = tree.get("y_encoder_layers", 0)
    if isinstance(layers, bool) or not isinstance(layers, int):
        raise ConfigError(f"config key 'y_encoder_layers' must be an int, got {layers!r}")
    model = _model_config(tree.pop("model", None), layers)
    config: TrainConfig = _build(TrainConfig, {**tree, "model": model.to_dict()}, prefix="")
    return config


def load_train_config(path: str | Path | None, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a training YAML (None: the defaults in code) and apply `key.sub=value` overrides."""
    data: Any = {}
    if path is not None:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read training config {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"training config {path} must be a mapping")
    return config_from_dict(data, overrides)


def resolve_path(path: str | Path) -> Path:
    """A path as given if it exists (or is absolute), else relative to the repository root."""
    path = Path(path).expanduser()
    if path.is_absolute() or path.exists():
        return path
    candidate = REPO_ROOT / path
    return candidate if candidate.exists() else path


def read_labels(path: str | Path) -> dict[str, str]:
    """`labels: {label: prompt}` of a robot-states file, in file order.

    Raises:
        ConfigError: unreadable file, another layout, or an empty label or prompt.
    """
    try:
        return read_labels_file(resolve_path(path))
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
