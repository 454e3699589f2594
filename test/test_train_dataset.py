"""Training data from real simulated bags: discovery, frame cache, clips, answers, augmentation."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from vljepa_ros.data import captions
from vljepa_ros.data.bag import read_episode, write_episode_bag
from vljepa_ros.data.sim import SimConfig, generate_episode
from vljepa_ros.model import Preprocessor, XEncoderConfig
from vljepa_ros.train import dataset
from vljepa_ros.train.config import AugmentConfig, DataConfig, read_labels
from vljepa_ros.train.dataset import (
    PERMUTATIONS,
    SWAPPABLE,
    ClipSampler,
    augment,
    find_bags,
    load_episode,
    load_episodes,
    resize_crop,
    swap_colours,
)
from vljepa_ros.train.targets import AnswerMaker, FrameLabel, parse_object, recolour

SIZE = 32


@pytest.fixture(scope="module")
def bags(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with two short real simulated episodes as rosbag2 MCAP folders."""
    folder = tmp_path_factory.mktemp("bags")
    config = SimConfig(image_size=48, max_duration_s=10.0, cycles=(1, 1))
    for seed in (1, 2):
        write_episode_bag(folder / f"episode_{seed}", generate_episode(config, seed))
    return folder


def test_find_bags_takes_folders_files_and_searches(bags: Path, tmp_path: Path) -> None:
    """Bag folders, loose .mcap files and folders holding them are all found, once each."""
    loose = tmp_path / "loose.mcap"
    shutil.copy(next((bags / "episode_1").glob("*.mcap")), loose)
    found = find_bags([bags, bags / "episode_1", loose])
    assert found == sorted([bags / "episode_1", bags / "episode_2", loose])


@pytest.mark.parametrize("make", ["missing", "empty", "not_mcap"])
def test_find_bags_rejects_what_holds_no_bag(tmp_path: Path, make: str) -> None:
    """A missing path, a folder without bags, or another file type is FileNotFoundError."""
    path = tmp_path / "x"
    if make == "empty":
        path.mkdir()
    elif make == "not_mcap":
        path.write_text("x")
    with pytest.raises(FileNotFoundError):
        find_bags([path])


def test_resize_crop_matches_the_models_preprocessor() -> None:
    """Cached frames normalised equal what the Preprocessor makes of the original frames."""
    cfg = XEncoderConfig(crop_size=SIZE, patch_size=16, hidden_size=48, num_heads=2)
    frames = np.random.default_rng(0).integers(0, 256, (4, 40, 60, 3), dtype=np.uint8)
    cached = torch.from_numpy(resize_crop(frames, SIZE)).permute(0, 3, 1, 2).float() / 255
    prep = Preprocessor(cfg)
    expected = prep(frames)[0]  # (T, 3, S, S)
    assert torch.allclose((cached - prep.mean) / prep.std, expected, atol=0.03)


def test_cache_is_written_once_and_reused(
    bags: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first load decodes the bag into the cache; the second reads only the cache."""
    bag = bags / "episode_1"
    first = load_episode(bag, DataConfig(), SIZE, 1.0, tmp_path)
    assert first.frames.shape[1:] == (SIZE, SIZE, 3)
    assert first.frames.dtype == np.uint8
    assert len(list(tmp_path.glob("*.npy"))) == 1

    def no_read(*args: object, **kwargs: object) -> None:
        raise AssertionError("the bag was read again")

    monkeypatch.setattr(dataset, "read_episode", no_read)
    again = load_episode(bag, DataConfig(), SIZE, 1.0, tmp_path)
    assert np.array_equal(np.asarray(again.frames), np.asarray(first.frames))
    assert again.labels == first.labels


def test_annotated_states_are_used_and_missing_ones_derived(bags: Path, tmp_path: Path) -> None:
    """A bag's state topic gives the labels; without it they are derived from the joints."""
    bag = bags / "episode_2"
    truth = read_episode(bag).states
    annotated = load_episode(bag, DataConfig(), SIZE, 1.0, tmp_path)
    assert [f.state for f in annotated.labels] == truth
    assert not annotated.derived
    blind = load_episode(bag, DataConfig(state_topic="/no/such/topic"), SIZE, 1.0, tmp_path)
    assert blind.derived
    agree = np.mean([f.state == t for f, t in zip(blind.labels, truth, strict=True)])
    assert agree > 0.8


@pytest.mark.parametrize(("sample_hz", "stride"), [(10.0, 1), (5.0, 2), (2.5, 4)])
def test_clip_stride_follows_the_sample_rate(
    bags: Path, tmp_path: Path, sample_hz: float, stride: int
) -> None:
    """Clips take every (bag fps / sample_hz)-th frame and repeat frame 0 before the start."""
    episode = load_episode(bags / "episode_1", DataConfig(sample_hz=sample_hz), SIZE, 1.0, tmp_path)
    assert episode.stride == stride
    expected = [20 - 3 * stride, 20 - 2 * stride, 20 - stride, 20]
    assert episode.clip_indices(20, 4).tolist() == expected
    assert episode.clip_indices(1, 4).tolist() == [0, 0, 0, 1]


@pytest.fixture
def sampler(bags: Path, tmp_path: Path) -> ClipSampler:
    """A fully balanced sampler of 4-frame clips over both episodes."""
    episodes = load_episodes([bags], DataConfig(), SIZE, 1.0, tmp_path)
    return ClipSampler(episodes, AnswerMaker(read_labels("config/robot_states.yaml")), 4, 1.0)


@pytest.mark.parametrize("per_clip", [1, 2, 3])
def test_sampled_batches_hold_clips_and_rows(sampler: ClipSampler, per_clip: int) -> None:
    """A batch has B clips of T frames and up to per_clip rows per clip, of the wanted kinds."""
    kinds = ("doing", "object", "holding")
    batch = sampler.sample(np.random.default_rng(0), 6, kinds, per_clip)
    assert batch.video.shape == (6, 4, SIZE, SIZE, 3)
    assert len(batch.texts) == len(batch.keys) == len(batch.kinds) == len(batch.clip_index)
    counts = np.bincount(batch.clip_index, minlength=6)
    assert counts.max() <= per_clip
    assert counts.min() >= 1
    assert set(batch.kinds) <= set(kinds)


def test_a_batch_names_each_clips_object(sampler: ClipSampler) -> None:
    """Each clip's (colour, shape) is its last frame's, the object its `object` answer names
    (what the objective's object heads learn from)."""
    batch = sampler.sample(np.random.default_rng(3), 8, ("object",), 1)
    assert batch.clip_index == list(range(8))
    assert batch.objects == [parse_object(text) for text in batch.texts]
    assert all(obj is not None for obj in batch.objects)


def _nearest_paint(rgb: np.ndarray) -> str:
    """The colour word whose paint (captions.COLOURS) is nearest an RGB value in [0, 255]."""
    paints = {name: np.array(v[:3]) * 255 for name, v in captions.COLOURS.items()}
    return min(paints, key=lambda name: float(np.linalg.norm(paints[name] - rgb)))


@pytest.mark.parametrize("colour", SWAPPABLE)
@pytest.mark.parametrize("permutation", PERMUTATIONS)
def test_a_colour_swap_names_the_colour_the_object_then_has(
    colour: str, permutation: tuple[int, int, int]
) -> None:
    """After the channel swap the object's pixels are nearest the paint of the colour the label
    now names, and the caption names it too; the rest of the caption is kept."""
    clip = np.zeros((2, 8, 8, 3), dtype=np.uint8)
    clip[:] = np.round(np.array(captions.COLOURS[colour][:3]) * 255).astype(np.uint8)
    label = FrameLabel("lifting", f"the robot lifts the {colour} ball", colour, "ball")
    swapped, named = swap_colours(clip, label, permutation)
    assert swapped.shape == clip.shape
    assert named.colour == _nearest_paint(swapped[1, 4, 4].astype(float))
    assert named.caption == f"the robot lifts the {named.colour} ball"
    assert (named.state, named.shape) == ("lifting", "ball")


def test_the_swaps_turn_each_channel_colour_into_every_other() -> None:
    """Over the five non-identity permutations red, green and blue each become all three (and
    change in four of the five); white and black never change."""
    clip = np.zeros((1, 2, 2, 3), dtype=np.uint8)
    for colour in SWAPPABLE:
        names = [
            swap_colours(clip, FrameLabel("idle", None, colour, "cube"), p)[1].colour
            for p in PERMUTATIONS
        ]
        if colour in ("white", "black"):
            assert set(names) == {colour}
        else:
            assert set(names) == {"red", "green", "blue"}
            assert sum(name != colour for name in names) == 4


def test_a_colour_without_a_swapped_name_is_refused() -> None:
    """Orange, yellow and purple turn into colours no caption names: swap_colours refuses them."""
    clip = np.zeros((1, 4, 4, 3), dtype=np.uint8)
    for colour in set(captions.COLOURS) - set(SWAPPABLE):
        with pytest.raises(ValueError, match=colour):
            swap_colours(clip, FrameLabel("idle", None, colour, "cube"), PERMUTATIONS[0])


def test_recolour_changes_the_objects_colour_word_only() -> None:
    """Only the object phrase naming the frame's colour changes (not a word that merely looks
    like a colour), and a frame without a caption keeps none."""
    frame = FrameLabel("grasping", "the red arm grabs the red long block", "red", "brick")
    assert recolour(frame, "blue").caption == "the red arm grabs the blue long block"
    assert recolour(FrameLabel("idle", None, "red", "cube"), "green") == FrameLabel(
        "idle", None, "green", "cube"
    )


def test_colour_swapped_batches_stay_consistent(bags: Path, tmp_path: Path) -> None:
    """With colour_swap=1 every clip about a swappable colour is swapped: its answers name the
    colour it now shows (objects and answers agree), and some name a colour its episode lacks."""
    episodes = load_episodes([bags], DataConfig(), SIZE, 1.0, tmp_path)
    maker = AnswerMaker(read_labels("config/robot_states.yaml"))
    swapping = ClipSampler(episodes, maker, 4, 1.0, colour_swap=1.0)
    shown = {label.colour for ep in episodes for label in ep.labels}
    assert shown & set(SWAPPABLE) - {"white", "black"}  # the test needs one to swap
    objects = []
    for seed in range(4):
        batch = swapping.sample(np.random.default_rng(seed), 8, ("object",), 1)
        assert batch.objects == [parse_object(text) for text in batch.texts]
        objects += batch.objects
    assert {obj[0] for obj in objects if obj} - shown


def test_sampling_is_a_function_of_the_seed(sampler: ClipSampler) -> None:
    """The same rng seed gives the same batch (what makes resumed runs exact)."""
    a = sampler.sample(np.random.default_rng(5), 4, ("caption", "doing"), 2)
    b = sampler.sample(np.random.default_rng(5), 4, ("caption", "doing"), 2)
    assert np.array_equal(a.video, b.video)
    assert a.texts == b.texts


def test_full_balance_weights_every_state_equally(sampler: ClipSampler) -> None:
    """With balance=1 the sampling weight of each state sums to the same share."""
    states = [sampler.episodes[e].labels[i].state for e, i in sampler.refs]
    shares = {s: sampler.weights[[x == s for x in states]].sum() for s in set(states)}
    assert np.allclose(list(shares.values()), 1 / len(shares))


def test_augment_keeps_shape_and_range_and_is_seeded() -> None:
    """Augmentation keeps (B, T, 3, S, S) in [0, 1], repeats under a seed, and is off at zero."""
    video = torch.rand(3, 4, 3, SIZE, SIZE)
    config = AugmentConfig()
    a = augment(video, config, torch.Generator().manual_seed(0))
    b = augment(video, config, torch.Generator().manual_seed(0))
    assert a.shape == video.shape
    assert torch.equal(a, b)
    assert float(a.min()) >= 0
    assert float(a.max()) <= 1
    assert not torch.equal(a, video)
    off = AugmentConfig(shift_px=0, hflip=False, brightness=0, contrast=0, saturation=0)
    assert torch.equal(augment(video, off, torch.Generator().manual_seed(0)), video)


def _reference_augment(video: torch.Tensor, config: AugmentConfig, seed: int) -> torch.Tensor:
    """Augmentation written step by step: flip, replicate-pad and crop, then each jitter."""
    generator = torch.Generator().manual_seed(seed)
    b, t, c, h, w = video.shape
    flip = torch.rand(b, generator=generator) < 0.5
    video = torch.where(flip.view(b, 1, 1, 1, 1), video.flip(-1), video)
    p = config.shift_px
    padded = torch.nn.functional.pad(video.reshape(b, t * c, h, w), (p, p, p, p), mode="replicate")
    offsets = torch.randint(0, 2 * p + 1, (b, 2), generator=generator).tolist()
    video = torch.stack([padded[i, :, y : y + h, x : x + w] for i, (y, x) in enumerate(offsets)])
    video = video.view(b, t, c, h, w)

    def factor(amount: float) -> torch.Tensor:
        return 1 - amount + 2 * amount * torch.rand(b, 1, 1, 1, 1, generator=generator)

    video = video * factor(config.brightness)
    mean = video.mean(dim=(1, 2, 3, 4), keepdim=True)
    video = (video - mean) * factor(config.contrast) + mean
    grey = video.mean(dim=2, keepdim=True)
    video = (video - grey) * factor(config.saturation) + grey
    return video.clamp(0, 1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_augment_matches_the_step_by_step_definition(seed: int) -> None:
    """The one-gather, one-pass augmentation equals flip, replicate-pad-and-crop, brightness,
    contrast and saturation applied one after the other with the same random draws."""
    video = torch.rand(6, 4, 3, SIZE, SIZE)
    config = AugmentConfig(shift_px=5, hflip=True, brightness=0.3, contrast=0.3, saturation=0.3)
    fast = augment(video, config, torch.Generator().manual_seed(seed))
    assert torch.allclose(fast, _reference_augment(video, config, seed), atol=1e-5)
