"""The training objectives: multi-query InfoNCE over clips, and the Y-decoder's cross-entropy.

`ContrastiveStep` runs the X-encoder once per clip and the predictor once per (clip, query)
row, so several questions about the same clip cost one video encoding. The loss is the
model's bidirectional InfoNCE with one change, `masked_info_nce`: a batch holds many answers
that mean the same thing (every "no, the gripper is empty", two paraphrases of "the arm grabs
the red block", a label prompt and a caption of the same state). Treating those as negatives
would ask the model to tell apart texts that only differ in wording, which no clip can do, and
would push the prompt of a state away from the clips of that state. So pairs with the same
meaning key (`targets.AnswerMaker`) or the same text are removed from each row's negatives; the
positive of row i stays its own answer. Keys may leave fields unspecified (a label prompt names
no object) and then match any value there (`compatible`).

A batch rarely holds every robot state, so the rows about a state (`doing` and `caption`
answers) also get every label prompt of another state as a negative (`extra`): each such row is
a classification among all the prompts as well as a match among the batch's answers, which is
what the perception node does with the prediction.

Optionally (`text_weight`), a text-side term adapts the Y-encoder itself: every distinct answer
about a state must be nearest its own state's label prompt among all the prompts
(`prompt_classification`), so the many wordings of one state stay together and apart from the
other states' in the target space. It uses the embeddings the step computes anyway.

Optionally (`meaning_weight`), a second text-side term shapes the target space by meaning
(`meaning_contrast`): among the batch's distinct answers and the label prompts, texts with
compatible meaning keys (other wordings of the same state and object, a state's prompt and its
captions) are pulled together and texts of other meanings, other objects of the same state
included, are pushed apart (supervised contrastive). Without it the adapted MiniLM places two
captions that differ only in the object's colour closer than two wordings of one caption, so a
target says little about the object (docs/training.md, "Seventh round").

Optionally (`state_weight`), a training aid for an X-encoder learned from scratch: a linear
head reads the clip's robot state from the mean of its visual tokens (`clip_classification`).
The paper's X-encoder is a frozen, pretrained V-JEPA 2; without such weights the encoder has to
learn the arm's pose and motion from the contrastive loss alone, through the predictor and the
text space, which is slow. The head gives it a direct signal; it is not part of the model (the
node still classifies by cosine to the label prompts) and only resume checkpoints keep it.
`object_weight` does the same for the object the arm works on: two linear heads read its colour
and its shape (`data.captions.COLOURS`, `SHAPE_NOUNS`) from the same mean.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vljepa_ros.data import captions
from vljepa_ros.model import VLJepa
from vljepa_ros.model.y_encoder import TextEncoder
from vljepa_ros.train.targets import Key


def compatible(a: Key, b: Key) -> bool:
    """Two meaning keys can describe the same clip: equal length, and every field equal or
    unspecified ("") in one of them. A label prompt ("state", "reaching", "", "") says nothing
    about the object, so it is compatible with every reaching answer about any object."""
    return len(a) == len(b) and all(x == y or x == "" or y == "" for x, y in zip(a, b, strict=True))


def same_meaning(
    keys: Sequence[Key],
    texts: Sequence[str],
    other_keys: Sequence[Key] | None = None,
    other_texts: Sequence[str] | None = None,
) -> torch.Tensor:
    """(N, M) bool: row i and candidate j have compatible meaning keys or equal texts.

    Candidates default to the rows themselves (N, N).
    """
    other_keys = keys if other_keys is None else other_keys
    other_texts = texts if other_texts is None else other_texts
    return torch.tensor(
        [
            [compatible(a, b) or s == t for b, t in zip(other_keys, other_texts, strict=True)]
            for a, s in zip(keys, texts, strict=True)
        ],
        dtype=torch.bool,
    ).reshape(len(keys), len(other_keys))


def masked_info_nce(
    pred: torch.Tensor,
    target: torch.Tensor,
    temperature: torch.Tensor | float,
    same: torch.Tensor | None = None,
    extra: torch.Tensor | None = None,
    extra_negative: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE where `same[i, j]` (i != j) removes j from row i's negatives.

    pred, target: (N, D), normalised here; same: (N, N) bool or None. `extra` (K, D) are
    further candidate answers for the clip-to-text direction, a negative of row i where
    `extra_negative[i, k]` (N, K) bool. fp32 scalar.
    """
    with torch.autocast(device_type=pred.device.type, enabled=False):
        p = F.normalize(pred.float(), dim=-1)
        t = F.normalize(target.float(), dim=-1)
        temp = torch.as_tensor(temperature, dtype=torch.float32, device=p.device)
        logits = p @ t.T / temp
        if same is not None:
            eye = torch.eye(len(p), dtype=torch.bool, device=p.device)
            logits = logits.masked_fill(same.to(p.device) & ~eye, float("-inf"))
        labels = torch.arange(len(p), device=p.device)
        to_text = logits
        if extra is not None and extra_negative is not None:
            e = F.normalize(extra.float(), dim=-1)
            extra_logits = (p @ e.T / temp).masked_fill(~extra_negative.to(p.device), float("-inf"))
            to_text = torch.cat([logits, extra_logits], dim=1)
        return 0.5 * (F.cross_entropy(to_text, labels) + F.cross_entropy(logits.T, labels))


def prompt_classification(
    answers: torch.Tensor,
    prompts: torch.Tensor,
    state_index: torch.Tensor,
    temperature: torch.Tensor | float,
) -> torch.Tensor:
    """Cross-entropy of answers (U, D) among label prompts (K, D): answer u belongs to prompt
    `state_index[u]` (U,), -1 for answers about no state (left out). fp32 scalar (0 if none)."""
    with torch.autocast(device_type=answers.device.type, enabled=False):
        keep = state_index >= 0
        if not bool(keep.any()):
            return answers.float().sum() * 0.0
        a = F.normalize(answers[keep].float(), dim=-1)
        p = F.normalize(prompts.float(), dim=-1)
        temp = torch.as_tensor(temperature, dtype=torch.float32, device=a.device)
        return F.cross_entropy(a @ p.T / temp, state_index[keep])


def meaning_contrast(
    texts: torch.Tensor, positive: torch.Tensor, temperature: torch.Tensor | float
) -> torch.Tensor:
    """Supervised contrastive loss of text embeddings (M, D): for each text i, the mean over its
    positives j (`positive[i, j]`, (M, M) bool, the diagonal ignored) of -log softmax over all
    the other texts of the cosine / temperature. Texts without a positive are left out. fp32
    scalar (0 if no text has a positive)."""
    with torch.autocast(device_type=texts.device.type, enabled=False):
        z = F.normalize(texts.float(), dim=-1)
        eye = torch.eye(len(z), dtype=torch.bool, device=z.device)
        pos = positive.to(z.device) & ~eye
        keep = pos.any(1)
        if not bool(keep.any()):
            return texts.float().sum() * 0.0
        temp = torch.as_tensor(temperature, dtype=torch.float32, device=z.device)
        log_prob = (z @ z.T / temp).masked_fill(eye, float("-inf")).log_softmax(1)
        per_text = log_prob.masked_fill(~pos, 0.0).sum(1)[keep] / pos.sum(1)[keep]
        return -per_text.mean()


def clip_classification(
    head: nn.Module, visual: torch.Tensor, clip_class: torch.Tensor
) -> torch.Tensor:
    """Cross-entropy of the clips' classes (B,) (a robot state, an object's colour or shape;
    -1: unknown, left out) read by `head` from the mean of their visual tokens (B, V, H). fp32
    scalar (0 if no clip has a class)."""
    with torch.autocast(device_type=visual.device.type, enabled=False):
        keep = clip_class >= 0
        if not bool(keep.any()):
            return visual.float().sum() * 0.0
        logits = head(visual[keep].float().mean(1))  # (K, classes)
        return F.cross_entropy(logits, clip_class[keep])


def clip_object_index(objects: Sequence[tuple[str, str] | None]) -> list[list[int]]:
    """(B, 2) classes of `ContrastiveStep`'s colour and shape heads for each clip's (colour,
    shape), [-1, -1] for a clip with no known object."""
    colours, shapes = list(captions.COLOURS), list(captions.SHAPE_NOUNS)
    return [[-1, -1] if o is None else [colours.index(o[0]), shapes.index(o[1])] for o in objects]


class LowerStates:
    """Token states of texts after the Y-encoder's lower `count` layers, computed once per text
    (keyed by its token ids) and reused. Only for layers that do not train: the answers of a
    run repeat (a few thousand distinct texts), so the frozen part of the text encoder, most of
    its cost, runs once per text instead of once per step. At most `limit` texts are kept."""

    def __init__(self, encoder: TextEncoder, count: int, limit: int = 50_000) -> None:
        self.encoder, self.count, self.limit = encoder, count, limit
        self.cache: dict[tuple[int, ...], torch.Tensor] = {}

    def __call__(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # (B, L) ids, (B, L) mask -> (B, L, hidden), zeros at padded positions
        keys = [tuple(row[m].tolist()) for row, m in zip(ids, mask, strict=True)]
        missing = list({key: k for k, key in enumerate(keys) if key not in self.cache}.values())
        if missing:
            if len(self.cache) + len(missing) > self.limit:
                self.cache.clear()
            with torch.no_grad():
                states = self.encoder.hidden_after(ids[missing], mask[missing], self.count)
            for j, k in enumerate(missing):
                self.cache[keys[k]] = states[j][mask[k]].detach().clone()
        first = self.cache[keys[0]]
        out = first.new_zeros(*ids.shape, first.shape[-1])
        for k, key in enumerate(keys):
            out[k][mask[k]] = self.cache[key]
        return out


def frozen_lower_layers(encoder: TextEncoder) -> int:
    """How many lower Y-encoder layers do not train and can be cached (`LowerStates`): the
    layers below the first trainable one, or all of them when none train (then the backbone,
    with its embeddings, must be frozen too); 0 when the backbone cannot run from cached states."""
    layers = encoder.layer_stack()
    if layers is None:
        return 0
    embeddings_train = any(p.requires_grad for p in encoder.backbone.embeddings.parameters())
    if embeddings_train:
        return 0
    trainable = [any(p.requires_grad for p in layer.parameters()) for layer in layers]
    return trainable.index(True) if any(trainable) else len(layers)


class ContrastiveStep(nn.Module):
    """Loss of one batch of (clip, query, answer) rows; wraps the model for DDP.

    With `cache_lower_text_layers` the Y-encoder's frozen lower layers run once per distinct
    text (`LowerStates`) and only the layers that train run every step; the loss is the same.
    With `state_classes` > 0 it owns the linear `state_head` of `clip_classification`; with
    `object_heads` the `colour_head` and `shape_head` (one class per entry of `COLOURS` and
    `SHAPE_NOUNS`).
    """

    def __init__(
        self,
        model: VLJepa,
        cache_lower_text_layers: bool = False,
        state_classes: int = 0,
        object_heads: bool = False,
    ) -> None:
        super().__init__()
        self.model = model
        count = frozen_lower_layers(model.y_encoder) if cache_lower_text_layers else 0
        self.lower = LowerStates(model.y_encoder, count) if count else None
        hidden, device = model.cfg.x_encoder.hidden_size, model.loss_fn.log_temperature.device
        self.state_head = nn.Linear(hidden, state_classes, device=device) if state_classes else None
        self.colour_head = self.shape_head = None
        if object_heads:
            self.colour_head = nn.Linear(hidden, len(captions.COLOURS), device=device)
            self.shape_head = nn.Linear(hidden, len(captions.SHAPE_NOUNS), device=device)

    def _texts(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # (U, L) ids, (U, L) mask -> (U, D) L2-normalised answer embeddings
        if self.lower is None:
            return self.model.y_encoder(ids, mask)
        return self.model.y_encoder.embed_from(self.lower(ids, mask), mask, self.lower.count)

    def forward(
        self,
        video: torch.Tensor,
        clip_index: torch.Tensor,
        query_states: torch.Tensor,
        query_mask: torch.Tensor,
        query_index: torch.Tensor,
        text_ids: torch.Tensor,
        text_mask: torch.Tensor,
        text_index: torch.Tensor,
        same: torch.Tensor,
        extra_ids: torch.Tensor | None = None,
        extra_mask: torch.Tensor | None = None,
        extra_negative: torch.Tensor | None = None,
        text_state: torch.Tensor | None = None,
        text_weight: float = 0.0,
        clip_state: torch.Tensor | None = None,
        state_weight: float = 0.0,
        clip_object: torch.Tensor | None = None,
        object_weight: float = 0.0,
        text_positive: torch.Tensor | None = None,
        meaning_weight: float = 0.0,
    ) -> torch.Tensor:
        # video (B, T, 3, S, S); clip_index (N,) row -> clip
        # query_states (Q, Lq, Hq) and query_mask (Q, Lq) of the distinct queries, query_index (N,)
        # text_ids, text_mask (U, L) of the distinct answers, text_index (N,); same (N, N)
        # extra_ids, extra_mask (K, L): label prompts, further negatives where extra_negative
        # text_state (U,): the prompt each distinct answer is about (-1: none), for text_weight
        # clip_state (B,): each clip's robot state index (-1: none), for state_weight
        # clip_object (B, 2): each clip's object colour and shape index (-1: none), object_weight
        # text_positive (U + K, U + K): same meaning among the answers then the prompts, for
        # meaning_weight
        visual = self.model.x_encoder(video)  # (B, V, Hx)
        pred = self.model.predictor(
            visual[clip_index], query_states[query_index], query_mask[query_index]
        )  # (N, D)
        answers = self._texts(text_ids, text_mask)  # (U, D)
        extra = None
        if extra_ids is not None and extra_mask is not None and extra_negative is not None:
            extra = self._texts(extra_ids, extra_mask)  # (K, D)
        loss = masked_info_nce(
            pred,
            answers[text_index],
            self.model.loss_fn.temperature,
            same.to(pred.device),
            extra,
            extra_negative,
        )
        if text_weight > 0 and extra is not None and text_state is not None:
            temperature = self.model.loss_fn.temperature
            text = prompt_classification(answers, extra, text_state, temperature)
            loss = loss + text_weight * text
        if state_weight > 0 and self.state_head is not None and clip_state is not None:
            loss = loss + state_weight * clip_classification(self.state_head, visual, clip_state)
        if object_weight > 0 and self.colour_head is not None and self.shape_head is not None:
            assert clip_object is not None, "object_weight needs clip_object"
            colour = clip_classification(self.colour_head, visual, clip_object[:, 0])
            shape = clip_classification(self.shape_head, visual, clip_object[:, 1])
            loss = loss + object_weight * (colour + shape)
        if meaning_weight > 0 and extra is not None:
            assert text_positive is not None, "meaning_weight needs text_positive"
            temperature = self.model.loss_fn.temperature
            meaning = meaning_contrast(torch.cat([answers, extra]), text_positive, temperature)
            loss = loss + meaning_weight * meaning
        return loss


class DecoderStep(nn.Module):
    """Next-token loss of the Y-decoder on (Y-encoder(text), text), with conditioning noise."""

    def __init__(self, model: VLJepa) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, embedding: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        # embedding (B, D) unit vectors; ids, mask (B, L) = [bos, text, eos, pad...]
        return self.model.y_decoder.loss(embedding, ids, mask)
