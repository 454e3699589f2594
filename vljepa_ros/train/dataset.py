"""Training data: bags decoded once into a frame cache, clips sampled from it with answers.

Any rosbag2 folder or `.mcap` file with an image topic works (`data.bag.read_episode`).
Labels come from the bag's state topic; a bag without one gets labels derived from its
`/joint_states` (`derive.py`). Captions come from the caption topic; the object a frame is
about is parsed from its caption (`targets.frame_objects`).

Decoding a bag is slow next to a training step, so every bag is decoded once into
`CACHE/<key>.npy` (uint8 frames, already resized and centre-cropped exactly as the model's
`Preprocessor` does it, so no resize remains at training time) plus `CACHE/<key>.json` (stamps
and labels). The key hashes the bag's files (names, sizes, mtimes), the topics, the frame size
and the label rules, so a changed bag or setting is decoded again. The frames are memory-mapped
while training.

A clip of T frames ending at frame e takes every `stride`-th frame back from e (stride = bag
frame rate / `sample_hz`, as the perception node samples) and repeats the first frame of the
episode where the clip reaches before it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vljepa_ros.data.bag import BagReadError, EpisodeData, read_episode
from vljepa_ros.train.config import AugmentConfig, DataConfig
from vljepa_ros.train.derive import DeriveError, derive_labels
from vljepa_ros.train.targets import (
    AnswerMaker,
    FrameLabel,
    Key,
    frame_objects,
    recolour,
)

CACHE_VERSION = 1


def find_bags(paths: Iterable[str | Path]) -> list[Path]:
    """Bags under the given paths: rosbag2 folders (with metadata.yaml) and loose .mcap files.

    Raises:
        FileNotFoundError: a path that does not exist, or no bag at all.
    """
    found: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"data path {path} does not exist")
        if path.is_file():
            if path.suffix != ".mcap":
                raise FileNotFoundError(f"data path {path} is not a .mcap file or a bag folder")
            found.append(path)
        elif (path / "metadata.yaml").is_file():
            found.append(path)
        else:
            folders = sorted(p.parent for p in path.rglob("metadata.yaml"))
            loose = [
                p
                for p in sorted(path.rglob("*.mcap"))
                if not any(p.is_relative_to(f) for f in folders)
            ]
            found += folders + loose
    if not found:
        raise FileNotFoundError(f"no bag (rosbag2 folder or .mcap file) under {list(paths)}")
    return sorted(dict.fromkeys(found))


@dataclass
class Episode:
    """One decoded bag: cached frames and what is known about each frame."""

    name: str
    source: str
    frames: np.ndarray  # (N, S, S, 3) uint8, memory-mapped
    stamps_ns: np.ndarray  # (N,) int64
    labels: list[FrameLabel]
    stride: int  # frames between two clip frames
    derived: bool  # states derived from joint states, not annotated

    def clip_indices(self, end: int, length: int) -> np.ndarray:
        """Frame indices of the clip of `length` frames ending at `end`, oldest first."""
        return np.maximum(end - self.stride * np.arange(length - 1, -1, -1), 0)


def resize_crop(frames: np.ndarray, size: int, resize_scale: float = 1.0) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, size, size, 3) uint8 with the `Preprocessor`'s rule: shortest
    edge to int(size * resize_scale) (bilinear, antialiased), then a centre crop."""
    n, h, w, _ = frames.shape
    short = int(size * resize_scale)
    new_h, new_w = max(size, int(short * h / min(h, w))), max(size, int(short * w / min(h, w)))
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    for start in range(0, n, 256):
        x = torch.from_numpy(np.ascontiguousarray(frames[start : start + 256]))
        x = x.permute(0, 3, 1, 2).float()
        if (new_h, new_w) != (h, w):
            x = F.interpolate(
                x, size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False
            )
        x = x[..., top : top + size, left : left + size].round().clamp(0, 255)
        out[start : start + 256] = x.to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return out


def _fingerprint(bag: Path) -> list[tuple[str, int, int]]:
    files = [bag] if bag.is_file() else sorted(p for p in bag.iterdir() if p.is_file())
    return [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]


def cache_key(bag: Path, config: DataConfig, size: int, resize_scale: float) -> str:
    """Hash of what the cached episode depends on."""
    what = {
        "version": CACHE_VERSION,
        "bag": str(bag.resolve()),
        "files": _fingerprint(bag),
        "topics": [config.image_topic, config.state_topic, config.caption_topic],
        "size": size,
        "resize_scale": resize_scale,
        "derive": asdict(config.derive),
    }
    digest = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]
    return f"{bag.stem if bag.is_file() else bag.name}-{digest}"


def _frame_rate(stamps_ns: np.ndarray) -> float:
    if len(stamps_ns) < 2:
        return 10.0
    period = float(np.median(np.diff(stamps_ns)))
    return 1e9 / period if period > 0 else 10.0


def _labels_of(data: EpisodeData, config: DataConfig) -> tuple[list[str | None], bool]:
    """Per-frame states: annotated if the bag has any, else derived from joints if possible."""
    if any(s is not None for s in data.states):
        return list(data.states), False
    try:
        return list(derive_labels(data, config.derive)), True
    except DeriveError:
        return [None] * len(data.frames), False


def _frame_labels(states: list[str | None], caption_list: list[str | None]) -> list[FrameLabel]:
    objects = frame_objects(caption_list)
    return [
        FrameLabel(state, caption, *(obj or (None, None)))
        for state, caption, obj in zip(states, caption_list, objects, strict=True)
    ]


def episode_labels(
    bag: Path, config: DataConfig, size: int, resize_scale: float, cache_dir: Path | None = None
) -> list[FrameLabel]:
    """What is known about each frame of a bag, as `load_episode` has it, without writing the
    frames to a cache: from the bag's entry in `cache_dir` if there is one, else from the bag
    itself (its frames decoded at a tiny size and dropped).

    Raises:
        BagReadError: the bag cannot be read (see `read_episode`).
    """
    if cache_dir is not None:
        meta_path = cache_dir / f"{cache_key(bag, config, size, resize_scale)}.json"
        if meta_path.is_file():
            meta = json.loads(meta_path.read_text())
            return _frame_labels(meta["states"], meta["captions"])
    data = read_episode(
        bag,
        image_topic=config.image_topic or None,
        state_topic=config.state_topic,
        caption_topic=config.caption_topic,
        size=8,
    )
    return _frame_labels(_labels_of(data, config)[0], data.captions)


def load_episode(
    bag: Path, config: DataConfig, size: int, resize_scale: float, cache_dir: Path
) -> Episode:
    """Decode a bag into the cache (or reuse its cache entry) and open it.

    Raises:
        BagReadError: the bag cannot be read (see `read_episode`).
    """
    key = cache_key(bag, config, size, resize_scale)
    frames_path, meta_path = cache_dir / f"{key}.npy", cache_dir / f"{key}.json"
    if not (frames_path.is_file() and meta_path.is_file()):
        data = read_episode(
            bag,
            image_topic=config.image_topic or None,
            state_topic=config.state_topic,
            caption_topic=config.caption_topic,
        )
        states, derived = _labels_of(data, config)
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = cache_dir / f"{key}.tmp.npy"
        np.save(tmp, resize_crop(data.frames, size, resize_scale))
        tmp.replace(frames_path)
        meta = {
            "source": str(bag),
            "image_topic": data.image_topic,
            "stamps_ns": data.stamps_ns.tolist(),
            "states": states,
            "captions": data.captions,
            "derived": derived,
        }
        meta_path.write_text(json.dumps(meta))
    meta = json.loads(meta_path.read_text())
    stamps = np.asarray(meta["stamps_ns"], dtype=np.int64)
    return Episode(
        name=key,
        source=meta["source"],
        frames=np.load(frames_path, mmap_mode="r"),
        stamps_ns=stamps,
        labels=_frame_labels(meta["states"], meta["captions"]),
        stride=max(1, round(_frame_rate(stamps) / config.sample_hz)),
        derived=bool(meta["derived"]),
    )


def load_episodes(
    paths: Sequence[str | Path],
    config: DataConfig,
    size: int,
    resize_scale: float,
    cache_dir: Path,
    progress: Callable[[Path], None] | None = None,
) -> list[Episode]:
    """Every bag under `paths`, decoded or from the cache.

    Raises:
        FileNotFoundError: see `find_bags`.
        BagReadError: a bag that cannot be read; the message names it.
    """
    episodes = []
    for bag in find_bags(paths):
        try:
            episodes.append(load_episode(bag, config, size, resize_scale, cache_dir))
        except BagReadError as exc:
            raise BagReadError(f"{bag}: {exc}") from exc
        if progress is not None:
            progress(bag)
    return episodes


# Colours whose paint (data.captions.COLOURS) is one strong channel, or all or none: a
# permutation of the RGB channels turns each into another of them (or itself).
CHANNEL_COLOURS = ("red", "green", "blue")
SWAPPABLE = (*CHANNEL_COLOURS, "white", "black")
PERMUTATIONS = ((0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))  # all but the identity


def swap_colours(
    clip: np.ndarray, label: FrameLabel, permutation: Sequence[int]
) -> tuple[np.ndarray, FrameLabel]:
    """Permute the RGB channels of a (T, S, S, 3) clip (new channel c = old channel
    permutation[c]) and name the object's colour as it now looks: red, green and blue follow
    their channel, white and black stay.

    Raises:
        ValueError: the label is about another colour (it has no name after the swap).
    """
    if label.colour not in SWAPPABLE:
        raise ValueError(f"colour {label.colour!r} has no name after a channel swap")
    swapped = clip[..., list(permutation)]
    if label.colour in CHANNEL_COLOURS:
        channel = list(permutation).index(CHANNEL_COLOURS.index(label.colour))
        label = recolour(label, CHANNEL_COLOURS[channel])
    return swapped, label


@dataclass
class Batch:
    """Clips and the (clip, query, answer) rows of one step."""

    video: np.ndarray  # (B, T, S, S, 3) uint8
    states: list[str | None]  # (B,) state of each clip's last frame
    clip_index: list[int]  # (N,) row -> clip
    kinds: list[str]  # (N,) query kind of each row
    texts: list[str]  # (N,) answer text
    keys: list[Key]  # (N,) meaning key of each answer
    objects: list[tuple[str, str] | None]  # (B,) (colour, shape) of each clip's last frame


class ClipSampler:
    """Draws clips (ending at frames that can answer the wanted queries) and their answers.

    End frames are drawn with weight count(state) ** -balance, so balance=0 samples frames
    uniformly and balance=1 samples every state equally often (short states such as grasping
    would otherwise be rare). A share `colour_swap` of the clips about a red, green, blue, white
    or black object get their colour channels permuted and their answers the colour the object
    then has (`swap_colours`).
    """

    def __init__(
        self,
        episodes: Sequence[Episode],
        maker: AnswerMaker,
        clip_frames: int,
        balance: float = 0.5,
        colour_swap: float = 0.0,
    ) -> None:
        self.episodes = list(episodes)
        self.colour_swap = colour_swap
        self.maker = maker
        self.clip_frames = clip_frames
        refs = [(e, i) for e, ep in enumerate(self.episodes) for i in range(len(ep.labels))]
        self.kinds = [maker.kinds(self.episodes[e].labels[i]) for e, i in refs]
        usable = [k for k, kinds in enumerate(self.kinds) if kinds]
        if not usable:
            raise ValueError(
                "no frame has a usable annotation: the bags need a state or caption topic, or "
                "/joint_states with gripper joints to derive states from"
            )
        self.refs = np.array([refs[k] for k in usable], dtype=np.int64).reshape(-1, 2)
        self.kinds = [self.kinds[k] for k in usable]
        states = [self.episodes[e].labels[i].state or "" for e, i in self.refs]
        counts: dict[str, int] = {}
        for s in states:
            counts[s] = counts.get(s, 0) + 1
        weights = np.array([counts[s] ** -balance for s in states], dtype=np.float64)
        self.weights = weights / weights.sum()

    @property
    def frames(self) -> int:
        return len(self.refs)

    def clip(self, episode: int, end: int) -> np.ndarray:
        """(T, S, S, 3) uint8 clip ending at frame `end` of episode `episode`."""
        ep = self.episodes[episode]
        return np.asarray(ep.frames[ep.clip_indices(end, self.clip_frames)])

    def sample(
        self,
        rng: np.random.Generator,
        batch_size: int,
        kinds: Sequence[str],
        per_clip: int,
    ) -> Batch:
        """`batch_size` clips, each with up to `per_clip` distinct query kinds among `kinds`."""
        picks = rng.choice(len(self.refs), size=batch_size, p=self.weights)
        video, states, clip_index, row_kinds, texts, keys = [], [], [], [], [], []
        objects: list[tuple[str, str] | None] = []
        for b, pick in enumerate(picks):
            e, i = (int(v) for v in self.refs[pick])
            label = self.episodes[e].labels[i]
            clip = self.clip(e, i)
            if self.colour_swap and label.colour in SWAPPABLE and rng.random() < self.colour_swap:
                permutation = PERMUTATIONS[int(rng.integers(len(PERMUTATIONS)))]
                clip, label = swap_colours(clip, label, permutation)
            video.append(clip)
            states.append(label.state)
            colour, shape = label.colour, label.shape
            objects.append((colour, shape) if colour is not None and shape is not None else None)
            allowed = [k for k in kinds if k in self.kinds[pick]] or self.kinds[pick][:1]
            chosen = rng.choice(len(allowed), size=min(per_clip, len(allowed)), replace=False)
            for c in sorted(int(v) for v in chosen):
                text, key = self.maker.answer(label, allowed[c], rng)
                clip_index.append(b)
                row_kinds.append(allowed[c])
                texts.append(text)
                keys.append(key)
        return Batch(np.stack(video), states, clip_index, row_kinds, texts, keys, objects)

    def sample_texts(self, rng: np.random.Generator, count: int) -> list[str]:
        """Answer texts of random frames and query kinds (what the Y-decoder learns to write)."""
        out = []
        for pick in rng.choice(len(self.refs), size=count, p=self.weights):
            e, i = (int(v) for v in self.refs[pick])
            kinds = self.kinds[pick]
            kind = kinds[int(rng.integers(len(kinds)))]
            out.append(self.maker.answer(self.episodes[e].labels[i], kind, rng)[0])
        return out

    def evenly_spaced(self, count: int) -> list[tuple[int, int]]:
        """`count` (episode, end frame) pairs spread evenly over the usable frames that have a
        state (the fixed validation clips)."""
        with_state = [k for k, kinds in enumerate(self.kinds) if "doing" in kinds]
        if not with_state:
            return []
        step = max(1, math.ceil(len(with_state) / count))
        return [(int(self.refs[k][0]), int(self.refs[k][1])) for k in with_state[::step]][:count]


def augment(video: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Per-clip random shift, horizontal flip and colour jitter of (B, T, 3, S, S) in [0, 1].

    The shift repeats the edge pixels (as replicate padding would). Flip and shift are one
    gather; brightness, contrast (about the clip's mean) and saturation (about each pixel's
    grey) are affine per clip, so they are folded into one pass.
    """
    b, t, c, h, w = video.shape
    device = video.device

    def uniform(low: float, high: float) -> torch.Tensor:
        return (low + (high - low) * torch.rand(b, 1, 1, 1, 1, generator=generator)).to(device)

    rows = torch.arange(h).expand(b, h)
    cols = torch.arange(w).expand(b, w)
    flip = torch.rand(b, generator=generator) < 0.5 if config.hflip else None
    if config.shift_px > 0:
        p = config.shift_px
        offsets = torch.randint(0, 2 * p + 1, (b, 2), generator=generator) - p
        rows = (rows + offsets[:, :1]).clamp(0, h - 1)
        cols = (cols + offsets[:, 1:]).clamp(0, w - 1)
    if flip is not None:
        cols = torch.where(flip[:, None], (w - 1) - cols, cols)  # flipped, then shifted
    # out[i, ..., y, x] = video[i, ..., rows[i, y], cols[i, x]]
    index = (rows[:, :, None] * w + cols[:, None, :]).reshape(b, 1, h * w).to(device)
    flat = video.reshape(b, t * c, h * w)
    video = torch.gather(flat, 2, index.expand(b, t * c, h * w)).view(b, t, c, h, w)
    scale = torch.ones(b, 1, 1, 1, 1, device=device)
    offset = torch.zeros(b, 1, 1, 1, 1, device=device)
    if config.brightness > 0:
        scale = uniform(1 - config.brightness, 1 + config.brightness)
    if config.contrast > 0:
        factor = uniform(1 - config.contrast, 1 + config.contrast)
        offset = video.mean(dim=(1, 2, 3, 4), keepdim=True) * scale * (1 - factor)
        scale = scale * factor
    if config.saturation > 0:
        factor = uniform(1 - config.saturation, 1 + config.saturation)
        video = torch.lerp(video.mean(dim=2, keepdim=True), video, factor)
    return (video * scale + offset).clamp_(0, 1)
