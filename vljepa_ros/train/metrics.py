"""Evaluation metrics on label sequences, rankings and captions (pure numpy, no model).

Conventions used throughout (docs/evaluation.md):

- A prediction is any string. "unknown" (what the state tracker says when nothing is confident)
  is never a ground-truth label, so it always counts as wrong in `accuracy`; in the segmental
  metrics it is one more class: a run of "unknown" is a predicted segment like any other.
- `macro_f1` averages the per-class F1 over the classes present in the ground truth; predicted
  labels outside it ("unknown", a label the episode never shows) add false positives to no
  class but cost recall of the true one.
- Segmental edit score and F1@k follow Lea et al. (segmental edit distance, CVPR 2017) and the
  action-segmentation evaluation of MS-TCN (Farha and Gall, CVPR 2019): nothing is excluded as
  background.
- Flicker compares label switches per minute of the prediction with those of the ground truth.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

UNKNOWN = "unknown"
NS = 1_000_000_000


def _check_pair(truth: Sequence[str], pred: Sequence[str]) -> None:
    if len(truth) != len(pred):
        raise ValueError(f"{len(truth)} ground-truth labels but {len(pred)} predictions")


# --------------------------------------------------------------------------- frame-wise


def accuracy(truth: Sequence[str], pred: Sequence[str]) -> float:
    """Fraction of steps whose prediction equals the ground truth ("unknown" is wrong).

    Raises:
        ValueError: sequences of different lengths or empty ones.
    """
    _check_pair(truth, pred)
    if not truth:
        raise ValueError("accuracy of an empty sequence")
    return float(np.mean([t == p for t, p in zip(truth, pred, strict=True)]))


def per_class_f1(truth: Sequence[str], pred: Sequence[str]) -> dict[str, float]:
    """F1 of every class present in the ground truth, in first-seen order."""
    _check_pair(truth, pred)
    out: dict[str, float] = {}
    for label in dict.fromkeys(truth):
        tp = sum(t == label and p == label for t, p in zip(truth, pred, strict=True))
        fp = sum(t != label and p == label for t, p in zip(truth, pred, strict=True))
        fn = sum(t == label and p != label for t, p in zip(truth, pred, strict=True))
        out[label] = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    return out


def macro_f1(truth: Sequence[str], pred: Sequence[str]) -> float:
    """Mean F1 over the classes present in the ground truth.

    Raises:
        ValueError: sequences of different lengths or empty ones.
    """
    scores = per_class_f1(truth, pred)
    if not scores:
        raise ValueError("macro-F1 of an empty sequence")
    return float(np.mean(list(scores.values())))


def confusion_matrix(
    truth: Sequence[str], pred: Sequence[str], labels: Sequence[str]
) -> np.ndarray:
    """Counts (L, L + 1): rows ground-truth `labels`, columns `labels` then "unknown".

    A prediction outside `labels` is counted in the last column; a ground truth outside
    `labels` is not counted.
    """
    _check_pair(truth, pred)
    index = {label: i for i, label in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels) + 1), dtype=np.int64)
    for t, p in zip(truth, pred, strict=True):
        if t in index:
            matrix[index[t], index.get(p, len(labels))] += 1
    return matrix


# --------------------------------------------------------------------------- segmental


@dataclass(frozen=True)
class Run:
    """A maximal run of one label: steps [start, end)."""

    label: str
    start: int
    end: int


def runs(sequence: Sequence[str]) -> list[Run]:
    """The sequence cut into maximal runs of equal labels."""
    out: list[Run] = []
    start = 0
    for i in range(1, len(sequence) + 1):
        if i == len(sequence) or sequence[i] != sequence[start]:
            out.append(Run(sequence[start], start, i))
            start = i
    return out


def levenshtein(a: Sequence[str], b: Sequence[str]) -> int:
    """Edit distance (insertions, deletions, substitutions, each cost 1) between sequences."""
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        current = [i]
        for j, y in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def edit_score(truth: Sequence[str], pred: Sequence[str]) -> float:
    """Segmental edit score in [0, 100]: 100 * (1 - edit distance of the run label sequences
    normalised by the longer one). Over-segmentation (flicker) costs, durations do not.
    """
    _check_pair(truth, pred)
    a = [r.label for r in runs(pred)]
    b = [r.label for r in runs(truth)]
    if not a and not b:
        return 100.0
    return 100.0 * (1.0 - levenshtein(a, b) / max(len(a), len(b)))


@dataclass(frozen=True)
class SegmentCounts:
    """True positive, false positive and false negative segments at one IoU threshold."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    def __add__(self, other: SegmentCounts) -> SegmentCounts:
        return SegmentCounts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    @property
    def f1(self) -> float:
        """F1 in [0, 100] (0 when there is no true positive)."""
        if self.tp == 0:
            return 0.0
        precision = self.tp / (self.tp + self.fp)
        recall = self.tp / (self.tp + self.fn)
        return 100.0 * 2 * precision * recall / (precision + recall)


def segment_counts(truth: Sequence[str], pred: Sequence[str], overlap: float) -> SegmentCounts:
    """Match predicted runs to ground-truth runs at IoU >= `overlap` (a fraction in (0, 1]).

    Each predicted run, in time order, takes the ground-truth run of the same label with which
    it has the highest IoU; it is a true positive if that IoU reaches `overlap` and the
    ground-truth run was not taken before, else a false positive. Ground-truth runs never
    taken are false negatives.

    Raises:
        ValueError: sequences of different lengths or `overlap` outside (0, 1].
    """
    _check_pair(truth, pred)
    if not 0 < overlap <= 1:
        raise ValueError(f"overlap must be in (0, 1], got {overlap}")
    gt_runs = runs(truth)
    taken = [False] * len(gt_runs)
    tp = fp = 0
    for p in runs(pred):
        best, best_iou = -1, 0.0
        for j, g in enumerate(gt_runs):
            if g.label != p.label:
                continue
            inter = min(p.end, g.end) - max(p.start, g.start)
            if inter <= 0:
                continue
            iou = inter / (max(p.end, g.end) - min(p.start, g.start))
            if iou > best_iou:
                best, best_iou = j, iou
        if best >= 0 and best_iou >= overlap and not taken[best]:
            taken[best] = True
            tp += 1
        else:
            fp += 1
    return SegmentCounts(tp, fp, len(gt_runs) - sum(taken))


def f1_at(truth: Sequence[str], pred: Sequence[str], overlap: float) -> float:
    """Segmental F1@overlap in [0, 100] of one sequence (see `segment_counts`)."""
    return segment_counts(truth, pred, overlap).f1


def switches(sequence: Sequence[str]) -> int:
    """Number of label changes between consecutive steps."""
    return sum(a != b for a, b in itertools.pairwise(sequence))


def delayed(sequence: Sequence[str], steps: int) -> list[str]:
    """The sequence `steps` steps late: what a label that is right everywhere but always
    `steps` late would say (the first `steps` take the first value)."""
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if not sequence or steps == 0:
        return list(sequence)
    return [sequence[0]] * min(steps, len(sequence)) + list(sequence[: len(sequence) - steps])


def steps_since_change(truth: Sequence[str]) -> np.ndarray:
    """For each step, the steps since the truth last changed (its first run counts from 0 at
    the start of the sequence, as if it had just changed)."""
    out = np.zeros(len(truth), dtype=np.int64)
    for i in range(1, len(truth)):
        out[i] = 0 if truth[i] != truth[i - 1] else out[i - 1] + 1
    return out


def flicker_ratio(pred_switches: int, truth_switches: int, minutes: float) -> float:
    """(predicted switches per minute) / (ground-truth switches per minute).

    1 means the prediction changes exactly as often as the truth; inf when the truth never
    changes but the prediction does, 1 when neither changes.

    Raises:
        ValueError: minutes <= 0 or negative counts.
    """
    if minutes <= 0:
        raise ValueError(f"minutes must be > 0, got {minutes}")
    if pred_switches < 0 or truth_switches < 0:
        raise ValueError("switch counts must be >= 0")
    if truth_switches == 0:
        return 1.0 if pred_switches == 0 else float("inf")
    return (pred_switches / minutes) / (truth_switches / minutes)


# --------------------------------------------------------------------------- retrieval


def recall_at_k(similarity: np.ndarray, ks: Sequence[int] = (1, 5)) -> dict[int, float]:
    """Text-to-clip recall@k from a (Q, C) similarity matrix whose correct clip for query i is i.

    Ties count against the query: the correct clip's rank is 1 + the number of clips scored at
    least as high, other than itself.

    Raises:
        ValueError: not a 2-D matrix with at least as many columns as rows.
    """
    sim = np.asarray(similarity, dtype=np.float64)
    if sim.ndim != 2 or sim.shape[1] < sim.shape[0] or sim.shape[0] == 0:
        raise ValueError(f"similarity must be (Q, C) with 0 < Q <= C, got {sim.shape}")
    q = sim.shape[0]
    correct = sim[np.arange(q), np.arange(q)]
    rank = (sim >= correct[:, None]).sum(axis=1)  # includes the correct clip itself
    return {k: float(np.mean(rank <= k)) for k in ks}


def meaning_r1(matches: np.ndarray) -> float:
    """Expected R@1 of a ranker that knows what every text means but not which of the clips
    that fit it is the text's own: (Q, C) bool, `matches[i, j]` when clip j fits query i's
    meaning, clip i being query i's own; it ranks the fitting clips first, in random order.

    Raises:
        ValueError: not a 2-D matrix with at least as many columns as rows, or a query whose
            own clip does not fit it.
    """
    fit = np.asarray(matches, dtype=bool)
    if fit.ndim != 2 or fit.shape[1] < fit.shape[0] or fit.shape[0] == 0:
        raise ValueError(f"matches must be (Q, C) with 0 < Q <= C, got {fit.shape}")
    if not fit[np.arange(fit.shape[0]), np.arange(fit.shape[0])].all():
        raise ValueError("every query's own clip must fit its meaning")
    return float(np.mean(1.0 / fit.sum(axis=1)))


# --------------------------------------------------------------------------- captions


def nearest_indices(output_times: Sequence[int], query_times: Sequence[int]) -> np.ndarray:
    """For each query time, the index of the nearest output time (the earlier one on a tie).

    Raises:
        ValueError: no output times, or output times not sorted.
    """
    times = np.asarray(output_times, dtype=np.int64)
    queries = np.asarray(query_times, dtype=np.int64)
    if times.size == 0:
        raise ValueError("no output times to match against")
    if np.any(np.diff(times) < 0):
        raise ValueError("output times must be sorted")
    right = np.clip(np.searchsorted(times, queries, side="left"), 0, len(times) - 1)
    left = np.clip(right - 1, 0, len(times) - 1)
    use_left = np.abs(queries - times[left]) <= np.abs(times[right] - queries)
    return np.where(use_left, left, right)


_TOKEN = re.compile(r"[a-z0-9]+|'[a-z]+")


def tokenize(text: str) -> str:
    """Lower-case, split punctuation off and drop it; space-joined tokens.

    Stands in for pycocoevalcap's PTB tokenizer (which runs Java): "The robot's arm, lifting."
    -> "the robot 's arm lifting".
    """
    return " ".join(_TOKEN.findall(text.lower()))


def cider_d(
    references: Sequence[Sequence[str]], candidates: Sequence[str]
) -> tuple[float, list[float]]:
    """CIDEr-D (pycocoevalcap) of candidates against their references; (mean, per item).

    Scores are pycocoevalcap's (about 0-10; papers often print them x100). The IDF comes from
    the references of this call, so compare scores computed over the same references only.

    Raises:
        ValueError: lists of different lengths, nothing to score, or an item without reference.
    """
    from pycocoevalcap.cider.cider import Cider

    if len(references) != len(candidates):
        raise ValueError(f"{len(references)} reference sets but {len(candidates)} candidates")
    if not candidates:
        raise ValueError("no candidates to score")
    if any(len(refs) == 0 for refs in references):
        raise ValueError("every candidate needs at least one reference")
    gts = {i: [tokenize(r) for r in refs] for i, refs in enumerate(references)}
    res = {i: [tokenize(c)] for i, c in enumerate(candidates)}
    mean, scores = Cider().compute_score(gts, res)
    return float(mean), [float(s) for s in scores]
