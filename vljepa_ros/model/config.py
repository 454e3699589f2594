"""Typed, validated configuration for every model component and named presets.

One frozen dataclass per component, composed into `VLJepaConfig`. Invariants are checked on
construction (`ConfigError`, a `ValueError`). Loading is strict: defaults in code, a YAML or
JSON mapping over them, `key.sub=value` overrides last; unknown keys and wrong types are
errors that name the key.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ATTN_IMPLEMENTATIONS = ("sdpa", "eager")
ROPE_TYPES = ("default", "llama3")
STEMS = ("patch", "conv")


class ConfigError(ValueError):
    """A configuration value, key or type is invalid; the message names the key."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _positive(obj: object, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        _require(value > 0, f"{type(obj).__name__}.{name} must be > 0, got {value!r}")


@dataclass(frozen=True)
class XEncoderConfig:
    """Video ViT with 3-D tubelet patches (V-JEPA 2 family, `transformers.VJEPA2Model` encoder)."""

    hidden_size: int = 192
    num_layers: int = 6
    num_heads: int = 3
    mlp_ratio: float = 4.0
    patch_size: int = 16
    tubelet_size: int = 2
    crop_size: int = 128  # frames are resized and cropped to crop_size x crop_size
    num_frames: int = 8  # default clip length; any multiple of tubelet_size runs
    layer_norm_eps: float = 1e-6
    qkv_bias: bool = True
    attn_implementation: str = "sdpa"
    frozen: bool = True
    # "patch": V-JEPA 2's linear tubelet embedding (what public checkpoints hold); "conv": a
    # convolutional stem (see x_encoder.ConvStem), for encoders trained from scratch.
    stem: str = "patch"
    # Conv stem only: channels of its first stage, doubled every stage up to hidden_size (0: the
    # first shipped stem's widths, hidden_size / 2**(stages-1) and up), and residual 3x3 blocks
    # after each stage's stride-2 convolution.
    stem_width: int = 0
    stem_blocks: int = 0
    # Conv stem only: a second branch of the same convolutions on the newest frame of each
    # tubelet alone (3 channels), concatenated with the stacked-frames branch before `proj`:
    # the object's appearance without the motion mixed into the same first-layer channels.
    # Same tokens (count, grid, order), so the transformer and its cost are unchanged.
    stem_frame_branch: bool = False
    resize_scale: float = 1.0  # shortest edge -> crop_size * resize_scale before centre crop
    image_mean: tuple[float, ...] = IMAGENET_MEAN
    image_std: tuple[float, ...] = IMAGENET_STD

    def __post_init__(self) -> None:
        _positive(self, "hidden_size", "num_layers", "num_heads", "patch_size", "tubelet_size")
        _positive(self, "crop_size", "num_frames", "mlp_ratio", "layer_norm_eps")
        _require(
            self.hidden_size % self.num_heads == 0,
            f"XEncoderConfig.hidden_size ({self.hidden_size}) must be divisible by num_heads "
            f"({self.num_heads})",
        )
        _require(
            self.hidden_size // self.num_heads >= 6,
            "XEncoderConfig: head dim (hidden_size / num_heads) must be >= 6 for 3-D rotary "
            "positions",
        )
        _require(
            self.crop_size % self.patch_size == 0,
            f"XEncoderConfig.crop_size ({self.crop_size}) must be a multiple of patch_size "
            f"({self.patch_size})",
        )
        _require(
            self.num_frames % self.tubelet_size == 0,
            f"XEncoderConfig.num_frames ({self.num_frames}) must be a multiple of tubelet_size "
            f"({self.tubelet_size})",
        )
        _require(
            self.attn_implementation in ATTN_IMPLEMENTATIONS,
            f"XEncoderConfig.attn_implementation must be one of {ATTN_IMPLEMENTATIONS}, "
            f"got {self.attn_implementation!r}",
        )
        _require(self.resize_scale >= 1.0, "XEncoderConfig.resize_scale must be >= 1.0")
        _require(
            self.stem in STEMS, f"XEncoderConfig.stem must be one of {STEMS}, got {self.stem!r}"
        )
        _require(
            self.stem != "conv" or (self.patch_size & (self.patch_size - 1) == 0),
            f"XEncoderConfig: a conv stem needs a power-of-two patch_size, got {self.patch_size}",
        )
        _require(
            self.stem_width >= 0 and self.stem_blocks >= 0,
            f"XEncoderConfig: stem_width and stem_blocks must be >= 0, got {self.stem_width} "
            f"and {self.stem_blocks}",
        )
        _require(
            self.stem == "conv"
            or (self.stem_width == 0 and self.stem_blocks == 0 and not self.stem_frame_branch),
            "XEncoderConfig: stem_width, stem_blocks and stem_frame_branch apply to stem: conv "
            "only",
        )
        _require(
            len(self.image_mean) == 3 and len(self.image_std) == 3,
            "XEncoderConfig.image_mean and image_std must have 3 values (RGB)",
        )
        _require(all(s > 0 for s in self.image_std), "XEncoderConfig.image_std must be > 0")

    @property
    def tokens_per_clip(self) -> int:
        """Visual tokens produced for a clip of `num_frames` frames."""
        grid = self.crop_size // self.patch_size
        return (self.num_frames // self.tubelet_size) * grid * grid


@dataclass(frozen=True)
class RopeConfig:
    """Rotary position embedding of the predictor (Llama conventions)."""

    type: str = "default"
    theta: float = 10000.0
    factor: float = 1.0  # llama3 scaling only
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position: int = 8192

    def __post_init__(self) -> None:
        _require(
            self.type in ROPE_TYPES,
            f"RopeConfig.type must be one of {ROPE_TYPES} (other Hugging Face rope scalings are "
            f"not supported), got {self.type!r}",
        )
        _positive(self, "theta", "factor", "low_freq_factor", "original_max_position")
        _require(
            self.high_freq_factor > self.low_freq_factor,
            "RopeConfig.high_freq_factor must be > low_freq_factor",
        )


@dataclass(frozen=True)
class PredictorConfig:
    """Llama-style bidirectional transformer over [visual tokens ; query tokens]."""

    hidden_size: int = 256
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 4
    head_dim: int = 64
    intermediate_size: int = 768
    rms_norm_eps: float = 1e-5
    attention_bias: bool = False
    mlp_bias: bool = False
    max_query_tokens: int = 32
    rope: RopeConfig = field(default_factory=RopeConfig)

    def __post_init__(self) -> None:
        _positive(self, "hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim")
        _positive(self, "intermediate_size", "rms_norm_eps", "max_query_tokens")
        _require(
            self.num_heads % self.num_kv_heads == 0,
            f"PredictorConfig.num_heads ({self.num_heads}) must be a multiple of num_kv_heads "
            f"({self.num_kv_heads})",
        )
        _require(self.head_dim % 2 == 0, "PredictorConfig.head_dim must be even (rotary)")


@dataclass(frozen=True)
class YEncoderConfig:
    """Sentence-embedding text model (any local Hugging Face encoder folder); defines targets."""

    source: str = "all-minilm-l6-v2"  # shipped name, folder path, or repo id in the local HF cache
    hidden_size: int = 384  # token width of the backbone (query tokens for the predictor)
    embedding_size: int = 384  # sentence embedding width after pooling and any Dense modules
    projection: bool = False  # linear head from embedding_size into the shared space
    max_length: int = 64
    trainable: bool = False
    lr_multiplier: float = 0.05  # read by training when trainable
    text_prefix: str = ""  # prepended to every text (e.g. an EmbeddingGemma task prompt)

    def __post_init__(self) -> None:
        _require(bool(self.source), "YEncoderConfig.source must not be empty")
        _positive(self, "hidden_size", "embedding_size", "max_length", "lr_multiplier")


@dataclass(frozen=True)
class YDecoderConfig:
    """Small autoregressive text decoder conditioned on one embedding through prefix tokens."""

    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 384
    num_prefix_tokens: int = 4
    max_length: int = 32  # text tokens, specials included
    vocab_size: int = 30522  # must equal the Y-encoder tokenizer's vocabulary
    noise_std: float = 0.3  # training noise on the unit conditioning: noise norm ~ noise_std
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0

    def __post_init__(self) -> None:
        _positive(self, "hidden_size", "num_layers", "num_heads", "intermediate_size")
        _positive(self, "num_prefix_tokens", "max_length", "vocab_size", "rms_norm_eps")
        _require(
            self.hidden_size % self.num_heads == 0
            and (self.hidden_size // self.num_heads) % 2 == 0,
            f"YDecoderConfig.hidden_size ({self.hidden_size}) / num_heads ({self.num_heads}) "
            "must be an even integer",
        )
        _require(self.noise_std >= 0, "YDecoderConfig.noise_std must be >= 0")


@dataclass(frozen=True)
class LossConfig:
    """Bidirectional InfoNCE temperature (log-parameterised, clamped)."""

    temperature: float = 0.07
    learnable_temperature: bool = True
    min_temperature: float = 0.01
    max_temperature: float = 1.0

    def __post_init__(self) -> None:
        _require(
            0 < self.min_temperature <= self.temperature <= self.max_temperature,
            "LossConfig needs 0 < min_temperature <= temperature <= max_temperature, got "
            f"{self.min_temperature}, {self.temperature}, {self.max_temperature}",
        )


@dataclass(frozen=True)
class VLJepaConfig:
    """The whole model: X-encoder, predictor, Y-encoder, Y-decoder and loss in one space."""

    name: str = "tiny"
    embed_dim: int = 384  # shared embedding space
    default_query: str = ""  # query used when a caller gives none (query-free captioning)
    x_encoder: XEncoderConfig = field(default_factory=XEncoderConfig)
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    y_encoder: YEncoderConfig = field(default_factory=YEncoderConfig)
    y_decoder: YDecoderConfig = field(default_factory=YDecoderConfig)
    loss: LossConfig = field(default_factory=LossConfig)

    def __post_init__(self) -> None:
        _positive(self, "embed_dim")
        _require(
            self.y_encoder.projection or self.y_encoder.embedding_size == self.embed_dim,
            f"VLJepaConfig.embed_dim ({self.embed_dim}) must equal y_encoder.embedding_size "
            f"({self.y_encoder.embedding_size}) unless y_encoder.projection is true",
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (JSON/YAML-safe); tuples become lists."""
        return _to_plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VLJepaConfig:
        """Strict construction: unknown keys and wrong types raise `ConfigError` naming the key."""
        return _build(cls, data, prefix="")

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_json(cls, path: str | Path) -> VLJepaConfig:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read model config {path}: {exc}") from exc
        return cls.from_dict(data)


# --------------------------------------------------------------------------------- presets


def tiny() -> VLJepaConfig:
    """CPU real-time default: 8 x 128 x 128 clip, 256 visual tokens, MiniLM 384-d space."""
    return VLJepaConfig()


def vitl() -> VLJepaConfig:
    """Paper scale: V-JEPA 2 ViT-L, 8 Llama-3.2-1B-shaped layers, EmbeddingGemma, 1536-d."""
    return VLJepaConfig(
        name="vitl",
        embed_dim=1536,
        x_encoder=XEncoderConfig(
            hidden_size=1024,
            num_layers=24,
            num_heads=16,
            crop_size=256,
            num_frames=16,
            resize_scale=256 / 224,
        ),
        predictor=PredictorConfig(
            hidden_size=2048,
            num_layers=8,
            num_heads=32,
            num_kv_heads=8,
            head_dim=64,
            intermediate_size=8192,
            rms_norm_eps=1e-5,
            max_query_tokens=512,
            rope=RopeConfig(
                type="llama3",
                theta=500000.0,
                factor=32.0,
                low_freq_factor=1.0,
                high_freq_factor=4.0,
                original_max_position=8192,
            ),
        ),
        y_encoder=YEncoderConfig(
            source="google/embeddinggemma-300m",
            hidden_size=768,
            embedding_size=768,
            projection=True,
            max_length=512,
            trainable=True,
            text_prefix="",
        ),
        y_decoder=YDecoderConfig(
            hidden_size=512, num_layers=4, num_heads=8, intermediate_size=1536, vocab_size=262144
        ),
    )


def vitl_minilm() -> VLJepaConfig:
    """`vitl` with the offline MiniLM (384-d) as Y-encoder, projected into the 1536-d space."""
    base = vitl()
    return dataclasses.replace(
        base,
        name="vitl_minilm",
        y_encoder=YEncoderConfig(projection=True, trainable=True),
        y_decoder=dataclasses.replace(base.y_decoder, vocab_size=30522),
    )


PRESETS: dict[str, Callable[[], VLJepaConfig]] = {
    "tiny": tiny,
    "vitl": vitl,
    "vitl_minilm": vitl_minilm,
}


def preset(name: str) -> VLJepaConfig:
    """Config of a named preset; unknown names list the known ones."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; known presets: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]()


# ---------------------------------------------------------------------- loading and overrides


def merge(config: VLJepaConfig, overrides: Mapping[str, Any]) -> VLJepaConfig:
    """Apply a nested mapping of overrides over `config` (strict: unknown keys are errors)."""
    return VLJepaConfig.from_dict(_deep_merge(config.to_dict(), overrides, prefix=""))


def apply_dotlist(config: VLJepaConfig, items: Sequence[str]) -> VLJepaConfig:
    """Apply `section.key=value` overrides (values parsed as YAML scalars/lists)."""
    nested: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key.sub=value")
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(raw)
    return merge(config, nested)


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> VLJepaConfig:
    """Read a YAML/JSON model config: optional `preset: NAME`, then keys over that preset."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read model config {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"model config {path} must be a mapping, got {type(data).__name__}")
    base = preset(str(data.pop("preset", "tiny")))
    return apply_dotlist(merge(base, data), overrides)


# ---------------------------------------------------------------------------- internals

T = TypeVar("T")


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


def _deep_merge(base: dict[str, Any], over: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if key not in base:
            raise ConfigError(f"unknown config key {prefix + str(key)!r}")
        if isinstance(base[key], dict) and isinstance(value, Mapping):
            out[key] = _deep_merge(base[key], value, prefix=f"{prefix}{key}.")
        else:
            out[key] = value
    return out


def _convert(hint: Any, value: Any, key: str) -> Any:
    """Check `value` against the annotation `hint`; return it in the field's type."""
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key {key!r} must be a mapping, got {type(value).__name__}")
        return _build(hint, value, prefix=key + ".")
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key {key!r} must be a bool, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key {key!r} must be an int, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key {key!r} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"config key {key!r} must be finite, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key {key!r} must be a string, got {value!r}")
        return value
    if typing.get_origin(hint) is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key!r} must be a list, got {value!r}")
        (item_hint, _ellipsis) = typing.get_args(hint)
        return tuple(_convert(item_hint, v, f"{key}[{i}]") for i, v in enumerate(value))
    raise ConfigError(f"config key {key!r} has an unsupported annotation {hint!r}")


def _build(cls: type[T], data: Mapping[str, Any], prefix: str) -> T:
    if not isinstance(data, Mapping):
        raise ConfigError(f"config section {prefix or '<root>'!r} must be a mapping")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {[prefix + str(k) for k in unknown]}; "
            f"known keys of {cls.__name__}: {sorted(names)}"
        )
    kwargs = {k: _convert(hints[k], v, prefix + k) for k, v in data.items()}
    return cls(**kwargs)
