"""The public inference API used by the nodes, training, replay and evaluation.

`VLJepaRuntime` owns a loaded model, its device and precision, and the preprocessing. Every
call runs under `torch.inference_mode`; embeddings come back as ordinary fp32 CPU tensors,
L2-normalised, so callers can publish, cache, compare or train against them without caring where
the model runs.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Generic, TypeVar

import torch

from .checkpoint import DEFAULT_CHECKPOINT, checkpoint_id, load_checkpoint, read_answer_bank
from .errors import ModelError
from .grounding import AnswerBank
from .preprocess import FrameArray, Preprocessor
from .vljepa import VLJepa

DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}


def parse_device(device: torch.device | str) -> torch.device:
    """A torch device that exists here, or a ModelError saying why not."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ModelError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from exc
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelError(
                f"device {device!r} requested but CUDA is not available to torch "
                f"{torch.__version__}; use cpu"
            )
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ModelError(f"device {device!r}: only {torch.cuda.device_count()} CUDA devices")
    elif parsed.type != "cpu":
        raise ModelError(f"unsupported device {device!r}; use cpu, cuda or cuda:N")
    return parsed


def parse_dtype(name: str | torch.dtype) -> torch.dtype:
    """'fp32' | 'bf16' | 'fp16' (or a torch dtype) -> torch dtype."""
    if isinstance(name, torch.dtype):
        if name not in DTYPES.values():
            raise ModelError(f"unsupported dtype {name}; use one of {list(DTYPES)}")
        return name
    if name not in DTYPES:
        raise ModelError(f"unknown dtype {name!r}; use one of {list(DTYPES)}")
    return DTYPES[name]


@dataclass(frozen=True)
class Choice:
    """Best of a set of texts for one clip: its index, text, and every cosine score."""

    index: int
    text: str
    scores: torch.Tensor  # (N,) cosine similarities, fp32 CPU


@dataclass(frozen=True)
class Ranking:
    """Clips ordered best first for a text: indices and their cosine scores."""

    indices: list[int]
    scores: torch.Tensor  # (K,) cosine similarities in the same order


K = TypeVar("K")
V = TypeVar("V")


class _Cache(Generic[K, V]):
    """Small LRU cache (query token states, label embeddings)."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self.items: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K, make: Callable[[], V]) -> V:
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key]
        value = make()
        self.items[key] = value
        if len(self.items) > self.size:
            self.items.popitem(last=False)
        return value


def _nearest(embedding: torch.Tensor, labels: Sequence[str], matrix: torch.Tensor) -> Choice:
    """The label whose row of `matrix` (L, D) is nearest the embedding (D,) by cosine."""
    scores = embedding.float().cpu() @ matrix.T
    index = int(scores.argmax())
    return Choice(index, labels[index], scores)


class VLJepaRuntime:
    """A VL-JEPA model ready for inference on one device and precision."""

    def __init__(
        self,
        model: VLJepa,
        device: torch.device | str = "cpu",
        dtype: str | torch.dtype = "fp32",
        compile: bool = False,
        model_id: str | None = None,
        answer_bank: AnswerBank | None = None,
    ) -> None:
        self.model_id = model_id or model.cfg.name  # checkpoint_id(), for logs and messages
        self.answer_bank = answer_bank  # grounds label prompts (`label_embeddings`)
        self.device = torch.device(device)
        self.dtype = parse_dtype(dtype)
        model.y_encoder.check_dtype(self.dtype)
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self.cfg = model.cfg
        self.preprocess = Preprocessor(self.cfg.x_encoder, self.device, self.dtype)
        self._predict: Callable[..., torch.Tensor] = self.model.predict
        if compile:
            self._predict = torch.compile(self.model.predict)
        self._queries: _Cache[str, tuple[torch.Tensor, torch.Tensor]] = _Cache()
        self._texts: _Cache[tuple[str, ...], torch.Tensor] = _Cache()

    @classmethod
    def load(
        cls,
        path_or_name: str | Path = DEFAULT_CHECKPOINT,
        device: torch.device | str = "cpu",
        dtype: str | torch.dtype = "fp32",
        compile: bool = False,
    ) -> VLJepaRuntime:
        """Load a checkpoint directory, or a shipped checkpoint by name."""
        device = parse_device(device)
        model = load_checkpoint(path_or_name, device=device, dtype=parse_dtype(dtype))
        bank = read_answer_bank(path_or_name, model.cfg.embed_dim)
        return cls(model, device, dtype, compile, checkpoint_id(path_or_name), bank)

    @property
    def embed_dim(self) -> int:
        return self.cfg.embed_dim

    @property
    def y_encoder_id(self) -> str:
        """`name@sha256:<hex>` of the Y-encoder weights that define the embedding space."""
        identity = self.model.y_encoder.identity()
        return f"{identity['name']}@sha256:{identity['sha256']}"

    # ----------------------------------------------------------------------- clips

    def _query_states(self, queries: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Token states of the queries (cached per text), padded; mask None when no padding."""
        states: list[torch.Tensor] = []
        masks: list[torch.Tensor] = []
        for q in queries:
            s, m = self._queries.get(q, partial(self.model.encode_query, [q]))
            states.append(s[0])
            masks.append(m[0])
        length = max(s.shape[0] for s in states)
        width = states[0].shape[-1]
        batch = states[0].new_zeros(len(states), length, width)
        mask = torch.zeros(len(states), length, dtype=torch.bool, device=batch.device)
        for i, (s, m) in enumerate(zip(states, masks, strict=True)):
            batch[i, : s.shape[0]] = s
            mask[i, : m.shape[0]] = m
        # Each query was tokenised alone, so it has no padding of its own.
        no_padding = all(m.shape[0] == length for m in masks)
        return batch, None if no_padding else mask

    def embed_clips(
        self,
        clips: FrameArray | Sequence[FrameArray],
        queries: str | Sequence[str] | None = None,
    ) -> torch.Tensor:
        """Clips (B, T, H, W, 3) uint8 (array or sequence of (T, H, W, 3)) -> (B, D).

        `queries`: one query for all clips, one per clip, or None for the config's default.
        """
        with torch.inference_mode():
            video = self.preprocess(clips if not isinstance(clips, (list, tuple)) else list(clips))
            b = video.shape[0]
            if queries is None or isinstance(queries, str):
                queries = [self.cfg.default_query if queries is None else queries] * b
            if len(queries) != b:
                raise ModelError(f"{len(queries)} queries for {b} clips")
            query, mask = self._query_states(list(queries))
            out = self._predict(video, query, mask).float().cpu()
        return out.clone()  # a normal tensor: callers may use it with autograd

    def embed_clip(self, frames: FrameArray, query: str | None = None) -> torch.Tensor:
        """One clip (T, H, W, 3) uint8 (or one image (H, W, 3)) + query -> (D,) unit vector."""
        if frames.ndim == 3:
            frames = frames[None]
        return self.embed_clips(frames[None], query)[0]

    # ----------------------------------------------------------------------- texts

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Texts -> (N, D) unit vectors in the target space (cached per tuple of texts)."""
        key = tuple(texts)
        with torch.inference_mode():
            out = self._texts.get(key, lambda: self.model.encode_text(list(key)).float().cpu())
        return out.clone()

    def label_bank(self, query: str | None = None, grounded: bool = True) -> AnswerBank | None:
        """The answer bank that grounds label prompts for embeddings predicted for `query`
        (None: the default query): the checkpoint's, if it has one for that query and
        `grounded`; else None."""
        bank = self.answer_bank
        if not grounded or bank is None or (query or self.cfg.default_query) != bank.query:
            return None
        return bank

    def label_embeddings(
        self, prompts: Sequence[str], query: str | None = None, grounded: bool = True
    ) -> torch.Tensor:
        """Label prompts -> (N, D) unit vectors to classify embeddings predicted for `query`
        against: grounded in `label_bank(query, grounded)` (`grounding`), or without one the
        prompts' own embeddings."""
        emb = self.encode_texts(prompts)
        bank = self.label_bank(query, grounded)
        return emb if bank is None else bank.ground(emb)

    def similarities(self, embeddings: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        """Cosine scores (B, N) of embeddings (B, D) or (D,) against texts."""
        emb = embeddings.float().cpu()
        emb = emb[None] if emb.dim() == 1 else emb
        return emb @ self.encode_texts(texts).T

    def classify_embedding(
        self, embedding: torch.Tensor, labels: Sequence[str], query: str | None = None
    ) -> Choice:
        """Nearest label prompt to an embedding (D,) predicted for `query` (None: the default
        query), by `label_embeddings`."""
        return _nearest(embedding, labels, self.label_embeddings(labels, query))

    def classify(
        self, frames: FrameArray, labels: Sequence[str], query: str | None = None
    ) -> Choice:
        """Open-vocabulary classification of one clip against label prompts."""
        return self.classify_embedding(self.embed_clip(frames, query), labels, query)

    def classify_clips(
        self,
        clips: FrameArray | Sequence[FrameArray],
        labels: Sequence[str],
        query: str | None = None,
    ) -> list[Choice]:
        """Batch version of `classify` (the label embeddings made once for the batch)."""
        matrix = self.label_embeddings(labels, query)
        return [_nearest(e, labels, matrix) for e in self.embed_clips(clips, query)]

    def answer(self, frames: FrameArray, question: str, candidates: Sequence[str]) -> Choice:
        """Discriminative VQA: the candidate answer nearest to the predicted answer embedding."""
        return self.classify(frames, candidates, query=question)

    def retrieve(
        self,
        text: str,
        clips: FrameArray | Sequence[FrameArray] | torch.Tensor,
        top_k: int | None = None,
        query: str | None = None,
    ) -> Ranking:
        """Rank clips (uint8 clips, or precomputed (B, D) float embeddings) for a text."""
        if isinstance(clips, torch.Tensor) and clips.is_floating_point():
            emb = clips
        else:
            emb = self.embed_clips(clips, query)
        scores = self.similarities(emb, [text])[:, 0]
        order = scores.argsort(descending=True)[: top_k or len(scores)]
        return Ranking(order.tolist(), scores[order])

    # ----------------------------------------------------------------------- text out

    @torch.inference_mode()
    def decode_batch(self, embeddings: torch.Tensor, max_length: int | None = None) -> list[str]:
        """(B, D) embeddings -> texts with the Y-decoder (greedy)."""
        emb = embeddings.to(self.device, self.dtype)
        return self.model.decode(emb[None] if emb.dim() == 1 else emb, max_length)

    def decode(self, embedding: torch.Tensor, max_length: int | None = None) -> str:
        """One embedding (D,) -> text."""
        return self.decode_batch(embedding.reshape(1, -1), max_length)[0]
