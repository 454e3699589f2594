"""`vljepa train`: caption pretraining, query fine-tuning and the Y-decoder, from bags.

The training script reads top to bottom (setup, data, model, then one loop per stage) and takes
a typed `TrainConfig`. Layout of the output folder OUT:

    OUT/train_config.yaml   the resolved configuration
    OUT/train_log.csv       step, stage, loss, lr, clips/s, elapsed, temperature, val_acc
    OUT/cache/              decoded bags (see dataset.py)
    OUT/sim_data/           simulated episodes, when the config generates them
    OUT/last/               resume checkpoint, every `checkpoint_every` steps and at the end
    OUT/model/              the final checkpoint (VLJepaRuntime.load(OUT/model)), with
                            train_config.yaml and training.json (data, times, throughput)

Stages (paper, section "Training", at small scale):
1. `stage1`: query-free caption pretraining: clip -> embedding of its caption.
2. `stage2`: query-conditioned fine-tuning over several query kinds (targets.py), the X-encoder
   run once per clip and the predictor once per (clip, query).
3. `decoder`: the Y-decoder on (Y-encoder(text), text) for the answer texts of training, with
   noise on the conditioning; last, because it must learn the final (adapted) text space.

Under `torchrun --nproc_per_node=N` every process trains on its own batches (seeded by rank)
with DistributedDataParallel (gloo on CPU, nccl on GPUs); rank 0 decodes bags, logs and writes
checkpoints. The InfoNCE negatives are those of each process's own batch.
"""

from __future__ import annotations

import csv
import datetime
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from vljepa_ros.data.captions import HELDOUT_PROMPTS
from vljepa_ros.model import CheckpointError, Preprocessor, VLJepa, load_checkpoint
from vljepa_ros.model import save_checkpoint as save_model
from vljepa_ros.model.checkpoint import write_answer_bank
from vljepa_ros.model.grounding import AnswerBank
from vljepa_ros.train.config import (
    CONFIG_NAME,
    QUERY_KINDS,
    DecoderStageConfig,
    StageConfig,
    TrainConfig,
    read_labels,
)
from vljepa_ros.train.dataset import ClipSampler, Episode, augment, load_episodes
from vljepa_ros.train.objective import (
    ContrastiveStep,
    DecoderStep,
    clip_object_index,
    same_meaning,
)
from vljepa_ros.train.state import (
    Progress,
    find_state,
    load_objective,
    load_optimizer,
    objective_tensors,
    read_progress,
    save_state,
)
from vljepa_ros.train.targets import AnswerMaker, FrameLabel, text_key

LOG_NAME = "train_log.csv"
LOG_FIELDS = ("step", "stage", "loss", "lr", "clips_per_s", "elapsed_s", "temperature", "val_acc")
SUMMARY_NAME = "training.json"
# Keys that may differ between a run and its resumption (they change no result).
RESUMABLE_CHANGES = frozenset({"out", "progress", "threads", "log_every", "checkpoint_every"})
StepCallback = Callable[[int, str, float], None]


class TrainError(RuntimeError):
    """Training cannot start or continue; the message says why."""


@dataclass
class TrainResult:
    """What a finished run produced."""

    out: Path
    model_dir: Path
    steps: int
    losses: dict[str, list[float]] = field(default_factory=dict)  # per stage, one per step
    summary: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------ helpers


@dataclass(frozen=True)
class _Dist:
    rank: int
    world: int
    local_rank: int

    @property
    def main(self) -> bool:
        return self.rank == 0


def _distributed(device_name: str) -> _Dist:
    """Join the process group when started by torchrun (or when the caller made one)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        cuda = device_name != "cpu" and torch.cuda.is_available()
        dist.init_process_group("nccl" if cuda else "gloo")
    if dist.is_initialized():
        local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
        return _Dist(dist.get_rank(), dist.get_world_size(), local)
    return _Dist(0, 1, 0)


def _device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _barrier(ctx: _Dist) -> None:
    if ctx.world > 1 or dist.is_initialized():
        dist.barrier()


def _step_seed(seed: int, rank: int, step: int) -> int:
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1)[0])


def lr_at(stage: StageConfig | DecoderStageConfig, step: int) -> float:
    """Learning rate at `step` (0-based) of a stage: linear warmup, then constant or cosine."""
    if stage.warmup_steps and step < stage.warmup_steps:
        return stage.lr * (step + 1) / stage.warmup_steps
    if stage.schedule == "constant":
        return stage.lr
    span = max(1, stage.steps - stage.warmup_steps)
    progress = min(1.0, (step - stage.warmup_steps) / span)
    low = stage.lr * stage.min_lr_ratio
    return low + 0.5 * (stage.lr - low) * (1 + math.cos(math.pi * progress))


def freeze_y_encoder_layers(model: VLJepa, layers: int) -> None:
    """Leave only the top `layers` transformer layers of the Y-encoder backbone trainable
    (-1: all; 0: none). The embeddings and lower layers stay the public weights, so the
    checkpoint's y_encoder_delta.safetensors stores just the fine-tuned layers."""
    encoder = model.y_encoder
    if layers == -1:
        encoder.backbone.requires_grad_(True)
        return
    encoder.backbone.requires_grad_(False)
    encoder.dense.requires_grad_(False)
    if layers == 0:
        return
    count = int(encoder.backbone.config.num_hidden_layers)
    stacks = [m for m in encoder.backbone.modules() if isinstance(m, nn.ModuleList)]
    stack = next((m for m in stacks if len(m) == count), None)
    if stack is None:
        raise TrainError(f"cannot find the {count} transformer layers of {encoder.folder}")
    for layer in list(stack)[-layers:]:
        layer.requires_grad_(True)
    encoder.dense.requires_grad_(True)


def _param_groups(
    modules: Sequence[nn.Module], lr: float, weight_decay: float, slow: set[int], mult: float
) -> list[dict[str, Any]]:
    """AdamW groups: decay on matrices only; the Y-encoder's own weights at lr * mult."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    seen: set[int] = set()
    for module in modules:
        for p in module.parameters():
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            groups.setdefault((id(p) in slow, p.dim() >= 2), []).append(p)
    out = []
    for (is_slow, decay), params in sorted(groups.items()):
        out.append(
            {
                "params": params,
                "lr": lr * (mult if is_slow else 1.0),
                "lr_scale": mult if is_slow else 1.0,
                "weight_decay": weight_decay if decay else 0.0,
            }
        )
    return out


def _contrastive_modules(model: VLJepa) -> list[nn.Module]:
    return [model.x_encoder, model.predictor, model.y_encoder, model.loss_fn]


def _wrap(module: nn.Module, ctx: _Dist, device: torch.device) -> nn.Module:
    if not dist.is_initialized():
        return module
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids, find_unused_parameters=True)


class _Log:
    """CSV log (rank 0 only), appended to across resumptions."""

    def __init__(self, path: Path, enabled: bool) -> None:
        self.path = path
        self.enabled = enabled
        if enabled and not path.exists():
            with path.open("w", newline="") as handle:
                csv.writer(handle).writerow(LOG_FIELDS)

    def row(self, **values: Any) -> None:
        if not self.enabled:
            return
        with self.path.open("a", newline="") as handle:
            csv.writer(handle).writerow([values.get(k, "") for k in LOG_FIELDS])


@contextmanager
def _eval_mode(model: VLJepa) -> Iterator[None]:
    model.eval()
    try:
        yield
    finally:
        model.train()
        model.y_encoder.backbone.eval()  # no dropout in the text encoder, frozen or not


def _query_states(
    model: VLJepa, queries: Sequence[str], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token states (Q, Lq, H) and mask (Q, Lq) of distinct queries, without gradients: the
    queries are conditioning, and the Y-encoder is adapted through the answers only."""
    with torch.no_grad():
        states, mask = model.encode_query(list(queries))
    return states.to(device), mask.to(device)


def validate(
    model: VLJepa,
    sampler: ClipSampler,
    clips: Sequence[tuple[int, int]],
    labels: dict[str, str],
    preprocess: Preprocessor,
    heads: Mapping[str, nn.Module] | None = None,
    batch_size: int = 32,
) -> tuple[float, dict[str, float]]:
    """State accuracy of fixed clips: their embedding (default query) nearest label prompt.

    With `heads` (the objective's training aids by name: "state", "colour", "shape"), also each
    head's accuracy on the same clips' mean visual token, over the clips whose class is known: a
    head that is right on training clips and not here learned the training episodes, not the
    thing it names (docs/training.md, "Seventh round").
    """
    names = list(labels)
    correct = 0
    right = dict.fromkeys(heads or {}, 0)
    known = dict.fromkeys(heads or {}, 0)
    with _eval_mode(model), torch.inference_mode():
        prompts = model.encode_text([labels[n] for n in names])
        query, mask = model.encode_query([model.cfg.default_query])
        for start in range(0, len(clips), batch_size):
            chunk = clips[start : start + batch_size]
            video = preprocess(np.stack([sampler.clip(e, i) for e, i in chunk]))
            b = video.shape[0]
            visual = model.x_encoder(video)  # (b, V, Hx)
            pred = model.predictor(visual, query.expand(b, -1, -1), mask.expand(b, -1))
            best = (pred.float() @ prompts.T.float()).argmax(-1).tolist()
            frames = [sampler.episodes[e].labels[i] for e, i in chunk]
            correct += sum(names[k] == f.state for k, f in zip(best, frames, strict=True))
            if not heads:
                continue
            objects = clip_object_index(
                [(f.colour or "", f.shape or "") if f.has_object else None for f in frames]
            )
            truth = {
                "state": [names.index(f.state) if f.state in labels else -1 for f in frames],
                "colour": [o[0] for o in objects],
                "shape": [o[1] for o in objects],
            }
            mean = visual.float().mean(1)
            for name, head in heads.items():
                target = torch.tensor(truth[name], device=mean.device)
                keep = target >= 0
                right[name] += int((head(mean).argmax(-1) == target)[keep].sum())
                known[name] += int(keep.sum())
    head_accuracy = {name: right[name] / known[name] for name in right if known[name]}
    return correct / max(1, len(clips)), head_accuracy


def text_probe(model: VLJepa, labels: dict[str, str]) -> float | None:
    """Share of the held-out rewordings (captions.HELDOUT_PROMPTS, never trained on) whose
    nearest label prompt in the Y-encoder space is their own state's: a diagnostic of the text
    space (None when the label set is not the canonical one)."""
    if not set(HELDOUT_PROMPTS) <= set(labels):
        return None
    names = list(labels)
    pairs = [(state, text) for state, texts in HELDOUT_PROMPTS.items() for text in texts]
    with torch.inference_mode():
        prompts = model.encode_text([labels[n] for n in names])
        rewordings = model.encode_text([text for _, text in pairs])
    best = (rewordings @ prompts.T).argmax(-1).tolist()
    return sum(names[k] == s for k, (s, _) in zip(best, pairs, strict=True)) / len(pairs)


def write_bank(
    model: VLJepa,
    model_dir: Path,
    config: TrainConfig,
    frame_labels: Iterable[FrameLabel],
    labels: dict[str, str],
) -> AnswerBank | None:
    """Write the answer bank of a saved checkpoint (`model.grounding`): every answer the
    training could draw for the model's default query about these frames. None (and nothing
    written) when the default query is none of the configured queries."""
    query = config.model.default_query
    kind = next((k for k in QUERY_KINDS if getattr(config.queries, k) == query), None)
    if kind is None:
        return None
    maker = AnswerMaker(labels, config.stage2.prompt_fraction)
    frames = set(frame_labels)
    texts = {
        text
        for frame in frames
        if kind in maker.kinds(frame)
        for text in maker.possible_answers(frame, kind)
    }
    if not texts:
        return None
    return write_answer_bank(model, model_dir, sorted(texts), query, len(labels))


def _generate(config: TrainConfig, out: Path, ctx: _Dist) -> list[str]:
    """Simulated episodes for a run without data paths (rank 0 generates, the rest wait)."""
    from vljepa_ros.data.generate import MANIFEST, generate_dataset
    from vljepa_ros.data.sim import SimConfig

    gen = config.data.generate
    folder = out / "sim_data"
    if ctx.main and not (folder / MANIFEST).is_file():
        sim = SimConfig(
            image_size=gen.image_size,
            max_duration_s=gen.max_duration_s,
            cycles=(gen.cycles_min, gen.cycles_max),
        )
        generate_dataset(folder, gen.episodes, seed=gen.seed, config=sim, workers=gen.workers)
    _barrier(ctx)
    return [str(folder)]


def _check_resume(saved: Path, config: TrainConfig) -> None:
    from vljepa_ros.train.config import load_train_config

    previous = load_train_config(saved).to_dict()
    current = config.to_dict()
    changed = sorted(k for k in current if k not in RESUMABLE_CHANGES and current[k] != previous[k])
    if changed:
        raise TrainError(
            f"cannot resume: the configuration differs from the checkpoint's ({saved}) in "
            f"{changed}; resume with the same config, or start a new run in another --out"
        )


# ------------------------------------------------------------------------------ the script


def train(
    config: TrainConfig,
    resume: bool = False,
    on_step: StepCallback | None = None,
) -> TrainResult:
    """Run (or resume) the training described by `config`; returns where the model went.

    `on_step(step, stage, loss)` is called after every optimizer step (tests use it to watch
    the loss or to interrupt a run).

    Raises:
        TrainError: nothing to resume, an incompatible resume, or unusable data.
        FileNotFoundError, BagReadError: missing or unreadable bags.
    """
    start_time = time.perf_counter()
    ctx = _distributed(config.device)
    device = _device(config.device, ctx.local_rank)
    if config.threads:
        torch.set_num_threads(config.threads)
    out = Path(config.out)
    last_dir = out / "last"
    if ctx.main:
        out.mkdir(parents=True, exist_ok=True)
    _barrier(ctx)

    # Resume: the last checkpoint's progress, after checking the config is the same run's.
    progress = Progress(0, "stage1", 0.0)
    optimizer_plain: Any = None
    state_dir = find_state(last_dir) if resume else None
    if resume:
        if state_dir is None:
            raise TrainError(f"--resume: no checkpoint to resume in {last_dir}")
        _check_resume(state_dir / CONFIG_NAME, config)
        progress, optimizer_plain = read_progress(state_dir)
    elif ctx.main and find_state(last_dir) is not None:
        raise TrainError(
            f"{out} holds a run already ({last_dir}); pass --resume to continue it or choose "
            "another --out"
        )
    if ctx.main:
        config.to_yaml(out / CONFIG_NAME)

    # Data: decode every bag once into the cache (rank 0 first; the others then read it).
    labels = read_labels(config.data.labels_file)
    paths = list(config.data.paths)
    if not paths:
        if config.data.generate.episodes == 0:
            raise TrainError("no data: give data.paths (--data) or data.generate.episodes")
        paths = _generate(config, out, ctx)
    cache = Path(config.data.cache_dir) if config.data.cache_dir else out / "cache"
    size = config.model.x_encoder.crop_size
    scale = config.model.x_encoder.resize_scale

    def episodes_of(where: Sequence[str]) -> list[Episode]:
        if ctx.main:
            load_episodes(where, config.data, size, scale, cache)
        _barrier(ctx)
        return load_episodes(where, config.data, size, scale, cache)

    episodes = episodes_of(paths)
    maker = AnswerMaker(labels, config.stage2.prompt_fraction)
    frames_per_clip = config.model.x_encoder.num_frames
    sampler = ClipSampler(
        episodes, maker, frames_per_clip, config.data.balance, config.augment.colour_swap
    )
    val_sampler = val_clips = None
    if config.data.val_paths:
        val_sampler = ClipSampler(episodes_of(config.data.val_paths), maker, frames_per_clip, 0.0)
        val_clips = val_sampler.evenly_spaced(config.val_clips)

    # Model: fresh (seeded), or the resume checkpoint's weights.
    torch.manual_seed(config.seed)
    if state_dir is not None:
        try:
            model = load_checkpoint(state_dir, device=device)
        except CheckpointError as exc:
            raise TrainError(f"cannot resume from {state_dir}: {exc}") from exc
    else:
        model = VLJepa(config.model).to(device)
    freeze_y_encoder_layers(model, config.y_encoder_layers)
    model.train()
    model.y_encoder.backbone.eval()
    preprocess = Preprocessor(config.model.x_encoder, device)
    slow = {id(p) for p in model.y_encoder.backbone.parameters()}
    slow |= {id(p) for p in model.y_encoder.dense.parameters()}
    mult = config.model.y_encoder.lr_multiplier
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16)
        if config.precision == "bf16"
        else nullcontext()
    )
    text_probe_before = text_probe(model, labels) if ctx.main and state_dir is None else None

    log = _Log(out / LOG_NAME, ctx.main)
    stages: list[tuple[str, StageConfig | DecoderStageConfig]] = [
        ("stage1", config.stage1),
        ("stage2", config.stage2),
        ("decoder", config.decoder),
    ]
    losses: dict[str, list[float]] = {name: [] for name, _ in stages}
    stage_times: dict[str, float] = {}
    elapsed_before = progress.elapsed_s
    step = progress.step
    stage_end = 0  # global step at which the current stage ends
    val_acc: float | None = None
    val_history: list[tuple[int, float, dict[str, float]]] = []
    bar = tqdm(
        total=config.total_steps,
        initial=step,
        disable=not (config.progress and ctx.main),
        dynamic_ncols=True,
        unit="step",
    )

    def elapsed() -> float:
        return elapsed_before + time.perf_counter() - start_time

    def checkpoint(
        stage_name: str, optimizer: torch.optim.Optimizer | None, objective: nn.Module
    ) -> None:
        if ctx.main:
            state = Progress(step, stage_name, elapsed())
            save_state(last_dir, model, optimizer, state, config, objective_tensors(objective))
        _barrier(ctx)

    for stage_name, stage in stages:
        stage_begin, stage_end = stage_end, stage_end + stage.steps
        if step >= stage_end or stage.steps == 0:
            continue
        stage_start = time.perf_counter()
        contrastive = isinstance(stage, StageConfig)
        modules: list[nn.Module]
        step_module: ContrastiveStep | DecoderStep
        if isinstance(stage, StageConfig):
            sampler.maker = AnswerMaker(labels, stage.prompt_fraction)
            heads = len(labels) if stage.state_weight > 0 else 0
            step_module = ContrastiveStep(model, True, heads, stage.object_weight > 0)
            aids = {
                "state": step_module.state_head,
                "colour": step_module.colour_head,
                "shape": step_module.shape_head,
            }
            aid_heads: dict[str, nn.Module] = {
                name: head for name, head in aids.items() if head is not None
            }
            modules = _contrastive_modules(model) + list(aid_heads.values())
        else:
            step_module = DecoderStep(model)
            modules = [model.y_decoder]
            aid_heads = {}
        resuming = progress.stage == stage_name and step > stage_begin
        if resuming and isinstance(step_module, ContrastiveStep):
            load_objective(state_dir or last_dir, step_module)
        optimizer = torch.optim.AdamW(
            _param_groups(modules, stage.lr, config.weight_decay, slow, mult),
            lr=stage.lr,
            betas=(0.9, 0.95),
        )
        if optimizer_plain is not None and resuming:
            load_optimizer(state_dir or last_dir, optimizer, optimizer_plain)
        params = [p for g in optimizer.param_groups for p in g["params"]]
        runner = _wrap(step_module, ctx, device)
        text_cache: dict[str, torch.Tensor] = {}
        # Label prompts: further negatives of every row about a state (objective.py).
        prompt_texts = list(labels.values())
        prompt_keys = [AnswerMaker.prompt_key(name) for name in labels]
        prompt_of_state = {name: k for k, name in enumerate(labels)}
        prompt_ids, prompt_mask = model.y_encoder.tokenize(prompt_texts)
        bar.set_description(stage_name)

        while step < stage_end:
            t0 = time.perf_counter()
            local = step - stage_begin
            lr = lr_at(stage, local)
            for group in optimizer.param_groups:
                group["lr"] = lr * group["lr_scale"]
            seed = _step_seed(config.seed, ctx.rank, step)
            rng = np.random.default_rng(seed)
            torch.manual_seed(seed)
            if isinstance(stage, StageConfig):
                batch = sampler.sample(rng, stage.batch_size, stage.queries, stage.queries_per_clip)
                video = torch.from_numpy(batch.video).to(device)  # (B, T, S, S, 3) uint8
                video = video.permute(0, 1, 4, 2, 3).float().div_(255)  # (B, T, 3, S, S)
                generator = torch.Generator().manual_seed(seed)
                video = augment(video, config.augment, generator)
                video = (video - preprocess.mean) / preprocess.std
                query_texts = [getattr(config.queries, k) for k in batch.kinds]
                distinct_queries = list(dict.fromkeys(query_texts))
                query_states, query_mask = _query_states(model, distinct_queries, device)
                distinct_texts = list(dict.fromkeys(batch.texts))
                text_ids, text_mask = model.y_encoder.tokenize(distinct_texts)
                query_index = [distinct_queries.index(q) for q in query_texts]
                text_index = [distinct_texts.index(t) for t in batch.texts]
                about_state = torch.tensor([key[0] == "state" for key in batch.keys])
                prompt_negative = about_state[:, None] & ~same_meaning(
                    batch.keys, batch.texts, prompt_keys, prompt_texts
                )
                text_positive = None
                if stage.meaning_weight > 0:
                    said = dict(zip(batch.texts, batch.keys, strict=True))
                    meaning_keys = [text_key(t, said[t]) for t in distinct_texts] + prompt_keys
                    text_positive = same_meaning(meaning_keys, distinct_texts + prompt_texts)
                text_state = [-1] * len(distinct_texts)
                clip_state = [-1] * len(batch.video)
                for text, key, clip in zip(batch.texts, batch.keys, batch.clip_index, strict=True):
                    if key[0] == "state" and key[1] in prompt_of_state:
                        text_state[distinct_texts.index(text)] = prompt_of_state[key[1]]
                        clip_state[clip] = prompt_of_state[key[1]]
                with autocast:
                    loss = runner(
                        video,
                        torch.tensor(batch.clip_index, device=device),
                        query_states,
                        query_mask,
                        torch.tensor(query_index, device=device),
                        text_ids,
                        text_mask,
                        torch.tensor(text_index, device=device),
                        same_meaning(batch.keys, batch.texts),
                        prompt_ids,
                        prompt_mask,
                        prompt_negative.to(device),
                        torch.tensor(text_state, device=device),
                        stage.text_weight,
                        torch.tensor(clip_state, device=device),
                        stage.state_weight,
                        torch.tensor(clip_object_index(batch.objects), device=device),
                        stage.object_weight,
                        text_positive,
                        stage.meaning_weight,
                    )
                clips = len(batch.video)
            else:
                texts = sampler.sample_texts(rng, stage.batch_size)
                missing = [t for t in dict.fromkeys(texts) if t not in text_cache]
                if missing:
                    with torch.no_grad():
                        for text, emb in zip(missing, model.encode_text(missing), strict=True):
                            text_cache[text] = emb
                embedding = torch.stack([text_cache[t] for t in texts])
                ids, mask = model.y_decoder.targets(model.y_encoder.tokenizer, texts)
                with autocast:
                    loss = runner(embedding, ids, mask)
                clips = len(texts)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            optimizer.step()
            step += 1
            value = float(loss.detach())
            if not math.isfinite(value):
                raise TrainError(f"loss is {value} at step {step} ({stage_name}); lower the lr")
            losses[stage_name].append(value)
            rate = clips * ctx.world / max(time.perf_counter() - t0, 1e-9)
            bar.update(1)
            bar.set_postfix(loss=f"{value:.3f}", clips_s=f"{rate:.1f}", refresh=False)
            if config.data.val_paths and val_sampler is not None and val_clips:
                due = config.val_every and step % config.val_every == 0
                if (due or step == stage_end) and contrastive and ctx.main:
                    val_acc, head_acc = validate(
                        model, val_sampler, val_clips, labels, preprocess, aid_heads
                    )
                    val_history.append((step, val_acc, head_acc))
            if step % config.log_every == 0 or step == stage_end:
                log.row(
                    step=step,
                    stage=stage_name,
                    loss=f"{value:.5f}",
                    lr=f"{lr:.3e}",
                    clips_per_s=f"{rate:.2f}",
                    elapsed_s=f"{elapsed():.1f}",
                    temperature=f"{float(model.loss_fn.temperature.detach()):.4f}",
                    val_acc="" if val_acc is None else f"{val_acc:.4f}",
                )
                val_acc = None
            if step % config.checkpoint_every == 0 or step == stage_end:
                checkpoint(stage_name, optimizer, step_module)
            if on_step is not None:
                on_step(step, stage_name, value)
        stage_times[stage_name] = time.perf_counter() - stage_start
        del runner
    bar.close()

    # The final model, with its training record.
    model_dir = out / "model"
    summary = {
        "steps": step,
        "world_size": ctx.world,
        "distributed": dist.is_initialized(),
        "wall_s_this_session": round(time.perf_counter() - start_time, 1),
        "train_s_total": round(elapsed(), 1),
        "stage_s_this_session": {k: round(v, 1) for k, v in stage_times.items()},
        "episodes": len(episodes),
        "frames": int(sum(len(e.labels) for e in episodes)),
        "episodes_with_derived_labels": sum(e.derived for e in episodes),
        "clip_frames": frames_per_clip,
        "val_state_accuracy": [{"step": s, "accuracy": round(a, 4)} for s, a, _ in val_history],
        # the objective's heads (training aids) on the same validation clips, where there are any
        "val_head_accuracy": [
            {"step": s, **{k: round(v, 4) for k, v in acc.items()}}
            for s, _, acc in val_history
            if acc
        ],
        "text_probe_heldout_prompts": {
            "before": text_probe_before,
            "after": text_probe(model, labels) if ctx.main else None,
        },
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if ctx.main:
        save_model(model, model_dir)
        write_bank(model, model_dir, config, (f for e in episodes for f in e.labels), labels)
        config.to_yaml(model_dir / CONFIG_NAME)
        (model_dir / SUMMARY_NAME).write_text(json.dumps(summary, indent=1) + "\n")
    _barrier(ctx)
    return TrainResult(out, model_dir, step, losses, summary)
