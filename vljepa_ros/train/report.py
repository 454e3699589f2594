"""The evaluation report: Markdown, metrics.json and PNG plots.

The 2-D embedding map uses the overlay's fixed projection (`vljepa_ros.overlay.fit_projection`,
PCA of the label prompts), so the report and the live overlay draw the same map. Matplotlib (Agg
backend) is imported only by the plotting functions.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vljepa_ros.overlay import fit_projection, smoothed_trail

if TYPE_CHECKING:
    from vljepa_ros.train.evaluate import EpisodeRun, Evaluation
    from vljepa_ros.train.selective import SelectiveResult

UNKNOWN = "unknown"
UNKNOWN_COLOUR = "#c8c8c8"
NS = 1_000_000_000


# --------------------------------------------------------------------------- plots


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def label_colours(labels: Sequence[str]) -> dict[str, str]:
    """A fixed colour per label (tab10, then tab20), grey for "unknown"."""
    from matplotlib import colormaps

    tab10, tab20 = colormaps["tab10"], colormaps["tab20"]
    names = [tab10(i) for i in range(10)] + [tab20(i) for i in range(1, 20, 2)]
    out = {label: _hex(names[i % len(names)]) for i, label in enumerate(labels)}
    out[UNKNOWN] = UNKNOWN_COLOUR
    return out


def _hex(rgb: Sequence[float]) -> str:
    return "#" + "".join(f"{round(255 * c):02x}" for c in rgb[:3])


def plot_timeline(run: EpisodeRun, labels: Sequence[str], path: Path) -> Path:
    """Ground truth vs stabilised vs instant vs per-frame baseline labels over time."""
    from matplotlib.patches import Patch

    from vljepa_ros.train import metrics

    plt = _pyplot()
    colours = label_colours(labels)
    t = (run.stamps_ns - run.stamps_ns[0]) / NS
    step = float(np.median(np.diff(t))) if len(t) > 1 else 0.1
    edges = np.append(t, t[-1] + step)
    rows = [
        ("ground truth", run.truth),
        ("stabilised", run.stabilised),
        ("instant", run.instant),
        ("per-frame baseline", run.baseline),
    ]
    fig, ax = plt.subplots(figsize=(12, 3.2), dpi=110)
    for y, (_, sequence) in enumerate(rows):
        for r in metrics.runs(sequence):
            left = edges[r.start]
            ax.broken_barh(
                [(left, edges[r.end] - left)],
                (len(rows) - 1 - y - 0.4, 0.8),
                facecolors=colours.get(r.label, UNKNOWN_COLOUR),
            )
    ax.set_yticks(range(len(rows)), [name for name, _ in reversed(rows)])
    ax.set_xlim(0, edges[-1])
    ax.set_xlabel("time (s)")
    acc = metrics.accuracy(run.truth, run.stabilised)
    ax.set_title(f"{run.name}: robot state per step (stabilised accuracy {100 * acc:.1f}%)")
    present = [lab for lab in [*labels, UNKNOWN] if any(lab in s for _, s in rows)]
    ax.legend(
        handles=[Patch(color=colours[lab], label=lab) for lab in present],
        loc="upper center",
        bbox_to_anchor=(0.5, -0.28),
        ncol=min(8, len(present)),
        frameon=False,
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_embedding_map(
    run: EpisodeRun,
    labels: Sequence[str],
    label_matrix: np.ndarray,
    path: Path,
    smoothing: float = 0.4,
) -> Path:
    """The episode's embedding trajectory on the plane of the label prompts: prompts as named
    anchors, every step's embedding (instant guess) red, the smoothed embedding blue."""
    plt = _pyplot()
    projection = fit_projection(label_matrix)
    anchors = projection(label_matrix)
    instant = projection(run.embeddings)
    trail = projection(smoothed_trail(run.embeddings, smoothing))
    colours = label_colours(labels)
    fig, ax = plt.subplots(figsize=(7.5, 6.5), dpi=110)
    ax.scatter(instant[:, 0], instant[:, 1], s=9, c="tab:red", alpha=0.45, label="instant (step)")
    ax.plot(
        trail[:, 0],
        trail[:, 1],
        "-",
        color="tab:blue",
        lw=1.4,
        alpha=0.85,
        label="stabilised meaning (smoothed)",
    )
    ax.scatter(trail[-1, 0], trail[-1, 1], s=40, c="tab:blue", zorder=4)
    for label, (x, y) in zip(labels, anchors, strict=True):
        ax.scatter(x, y, marker="*", s=260, c=colours[label], edgecolors="black", zorder=5)
        ax.annotate(
            label, (x, y), xytext=(6, 6), textcoords="offset points", fontsize=10, weight="bold"
        )
    ax.set_xlabel("prompt PC 1")
    ax.set_ylabel("prompt PC 2")
    ax.set_title(f"{run.name}: embedding trajectory (PCA of the label prompts)")
    ax.legend(loc="best", fontsize=9)
    ax.set_aspect("equal", adjustable="datalim")
    ax.margins(0.15)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_confusion(
    matrix: np.ndarray, rows: Sequence[str], columns: Sequence[str], path: Path, title: str
) -> Path:
    """Row-normalised confusion matrix (percent of each ground-truth label) with counts."""
    plt = _pyplot()
    counts = np.asarray(matrix, dtype=np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(100 * counts, totals, out=np.zeros_like(counts), where=totals > 0)
    fig, ax = plt.subplots(figsize=(1.0 * len(columns) + 2.5, 0.8 * len(rows) + 2.0), dpi=110)
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=100)
    for i in range(share.shape[0]):
        for j in range(share.shape[1]):
            if counts[i, j]:
                colour = "white" if share[i, j] > 60 else "black"
                ax.text(
                    j,
                    i,
                    f"{share[i, j]:.0f}%\n{int(counts[i, j])}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color=colour,
                )
    ax.set_xticks(range(len(columns)), columns, rotation=35, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="% of ground-truth steps", fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_selective(result: SelectiveResult, path: Path) -> Path:
    """CIDEr-D against decodes per minute for every method, with the 1 Hz uniform reference."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    styles = {
        "uniform": "o-",
        "online": "s-",
        "online, shift only": "D--",
        "offline Ward": "^-",
        "true caption changes": "x:",
    }
    for family in dict.fromkeys(p.family for p in result.points):
        own = sorted(
            (p for p in result.points if p.family == family), key=lambda p: p.decodes_per_minute
        )
        red = result.reductions[family]
        suffix = "" if red.factor is None else f", {red.factor:.2f}x fewer"
        if red.lower_bound:
            suffix = suffix.replace(", ", ", >=")
        ax.plot(
            [p.decodes_per_minute for p in own],
            [100 * p.cider for p in own],
            styles.get(family, "o-"),
            label=f"{family}{suffix}",
            ms=5,
        )
    ref = result.reference
    ax.axhline(100 * ref.cider, color="grey", ls=":", lw=1)
    ax.axvline(ref.decodes_per_minute, color="grey", ls=":", lw=1)
    ax.annotate(
        f"uniform {ref.parameter:g} Hz",
        (ref.decodes_per_minute, 100 * ref.cider),
        xytext=(5, 5),
        textcoords="offset points",
        fontsize=8,
        color="grey",
    )
    ax.set_xscale("log")
    ax.set_xlabel("decodes per minute (log)")
    ax.set_ylabel("CIDEr-D x100 (matched to caption changes)")
    ax.set_title("Selective decoding: caption quality against decoder calls")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- markdown


def _pct(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{100 * value:.1f}%"


def _num(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if math.isinf(value):
        return "inf"
    return f"{value:.{digits}f}"


def _query(text: str) -> str:
    return f"{text!r}" if text else "'' (query-free)"


def _cell(text: str, limit: int = 90) -> str:
    """Text safe for a Markdown table cell, shortened to `limit` characters."""
    text = " ".join(text.split()).replace("|", "/")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def target_text(row: Mapping[str, Any]) -> tuple[str, str]:
    """A target row's value and bound as the report writes them (e.g. "90.0%", ">= 90.0%";
    "not reached" for a reduction no swept setting reached)."""
    shown = row.get("shown") or _in_unit(row["value"], row["unit"])
    return shown, f"{row['op']} {_in_unit(row['target'], row['unit'])}"


def _in_unit(value: float | None, unit: str) -> str:
    if value is None or math.isnan(value):
        return "not reached" if unit == "times" else "n/a"
    if unit == "fraction":
        return _pct(value)
    if unit == "times":
        return f"{value:.2f}x"
    if unit == "points":
        return f"{value:.1f} points"
    return _num(value, 1 if unit == "score" else 2)


def _tracker_line(tracker: Mapping[str, Any] | None) -> list[str]:
    """The report's line on the state tracker's settings (none in reports written before)."""
    if not tracker:
        return []
    lag = tracker["lag_steps"] if tracker["transitions"] else 0
    return [
        f"- state tracker: temperature {tracker['temperature']:g}, smoothing "
        f"{tracker['smoothing']:g}, enter {tracker['enter_threshold']:g}, exit "
        f"{tracker['exit_threshold']:g}, margin {tracker['switch_margin']:g}, dwell "
        f"{tracker['min_dwell']:g} s; transition model: {tracker['transitions']} rates, "
        f"{tracker['duration_shapes']} duration shapes; lag {lag} steps (each stabilised label "
        "scored on the step it is about)"
    ]


def _grounding_text(grounding: Mapping[str, Any] | None) -> str:
    """How the label prompts were grounded, as the end of the label prompts' line."""
    if not grounding:
        return ", each as it is (not grounded)"
    return (
        f", each grounded in the mean of its {grounding['neighbours']} nearest of the "
        f"checkpoint's {grounding['answers']:,} training answers (the node's ground_labels)"
    )


def _baseline_model(baseline: Mapping[str, Any] | None) -> str:
    """Which model the per-frame baseline ran, as the end of a sentence."""
    if not baseline:
        return "with the evaluated model."
    frames = baseline["clip_frames"]
    return (
        f"with a model of its own: `{baseline['checkpoint'] or baseline['model_id']}` "
        f"({frames}-frame clips{', the frame repeated' if frames > 1 else ''}), query "
        f"{_query(baseline['query'])}."
    )


def markdown(report: Mapping[str, Any], images: Mapping[str, str]) -> str:
    """The report as Markdown; `images` maps plot kinds to file names beside it."""
    model, data, state = report["model"], report["data"], report["state"]
    lines = [
        f"# Evaluation of `{model['model_id']}`",
        "",
        f"- checkpoint: `{model['checkpoint'] or model['model_id']}`; Y-encoder "
        f"`{model['y_encoder_id'][:60]}`",
        f"- {len(data['episodes'])} held-out episodes, {data['steps']} steps, "
        f"{data['minutes']:.1f} min of stream; steps at {data['step_hz']:g} Hz, clips of "
        f"{model['clip_frames']} frames sampled at {data['sample_hz']:g} Hz",
        f"- state query: {_query(model['query'])}; retrieval query: "
        f"{_query(model.get('retrieval_query', model['query']))}; "
        f"{len(data['labels'])} label prompts{_grounding_text(model.get('label_grounding'))}",
        *_tracker_line(report.get("tracker")),
        "- every episode replayed through `PerceptionPipeline`, the class the perception node "
        "runs (docs/evaluation.md)",
        "",
        "## Targets",
        "",
    ]
    lines += _table(
        ["figure", "value", "target", "met"],
        [
            [
                r["name"],
                *target_text(r),
                "yes" if r["met"] else "**no**",
            ]
            for r in report["targets"]
        ],
    )
    kinds = (
        ("stabilised", "stabilised"),
        ("instant", "instant"),
        ("baseline", "per-frame baseline"),
    )
    lines += ["", "## Robot state", ""]
    lines += [
        'Per step; the ground truth of a step is the state of its newest frame. "unknown" '
        "counts as wrong; macro-F1 averages the classes present in the ground truth; edit and "
        "F1@k are 0-100. Flicker = predicted label switches per minute / ground-truth switches "
        f"per minute (ground truth: {state['truth_switches_per_minute']:.1f} switches/min). The "
        "per-frame baseline embeds the newest frame alone (a one-frame clip), no smoothing, "
        + _baseline_model(model.get("baseline")),
        "",
    ]
    metric_rows = [
        ("accuracy", lambda m: _pct(m["accuracy"])),
        ("macro-F1", lambda m: _num(m["macro_f1"], 3)),
        ("edit score", lambda m: _num(m["edit"], 1)),
        ("F1@10", lambda m: _num(m["f1@10"], 1)),
        ("F1@25", lambda m: _num(m["f1@25"], 1)),
        ("F1@50", lambda m: _num(m["f1@50"], 1)),
        ("switches / min", lambda m: _num(m["switches_per_minute"], 1)),
        ("flicker", lambda m: _num(m["flicker"], 2)),
        ("unknown share", lambda m: _pct(m["unknown_fraction"])),
    ]
    lines += _table(
        ["", *(title for _, title in kinds)],
        [[name, *(fmt(state[key]) for key, _ in kinds)] for name, fmt in metric_rows],
    )
    labels = list(data["labels"])
    lines += ["", "F1 per class:", ""]
    lines += _table(
        ["", *labels],
        [
            [title, *(_num(state[key]["per_class_f1"].get(lab), 3) for lab in labels)]
            for key, title in kinds
        ],
    )
    lag = state["lag"]
    delayed = lag["delayed_truth_accuracy"]
    lines += ["", "Lag: the label reads a clip that ends at the step, so it can only follow a "
              "change after the change is seen. The ground truth itself, k steps late, "
              "would score " + " / ".join(_pct(delayed[k]) for k in delayed)
              + f" (k = {', '.join(delayed)}). Accuracy by steps since the true state "
              "changed:", ""]  # fmt: skip
    keys = list(lag["steps_since_change"])
    lines += _table(
        ["steps since the change", *keys],
        [
            ["share of steps", *(_pct(lag["steps_since_change"][k]) for k in keys)],
            ["stabilised", *(_pct(lag["stabilised"][k]) for k in keys)],
            ["instant", *(_pct(lag["instant"][k]) for k in keys)],
        ],
    )
    if "confusion" in images:
        lines += ["", f"![confusion matrix]({images['confusion']})"]
    if "embedding_map" in images:
        lines += ["", f"![embedding map]({images['embedding_map']})"]

    lines += ["", "## Reworded label prompts", ""]
    reworded = report.get("reworded")
    if reworded:
        lines += [
            "Every label prompt replaced by a held-out rewording never used in training "
            f"captions. Drop in stabilised accuracy: **{reworded['drop_points']:.1f} points** "
            f"({_pct(state['stabilised']['accuracy'])} -> {_pct(reworded['accuracy'])}).",
            "",
        ]
        lines += _table(
            ["prompt set", "stabilised accuracy", "instant accuracy", "macro-F1"],
            [
                [
                    "original",
                    _pct(state["stabilised"]["accuracy"]),
                    _pct(state["instant"]["accuracy"]),
                    _num(state["stabilised"]["macro_f1"], 3),
                ],
                *(
                    [
                        f"reworded {k + 1}",
                        _pct(v["accuracy"]),
                        _pct(v["instant_accuracy"]),
                        _num(v["macro_f1"], 3),
                    ]
                    for k, v in enumerate(reworded["variants"])
                ),
            ],
        )
    else:
        lines.append("Not measured: some label has no held-out rewording (see --reworded).")

    lines += ["", "## Text-to-clip retrieval", ""]
    retrieval = report.get("retrieval")
    if retrieval:
        lines.append(
            f"Among {retrieval['clips']} clips (one per distinct caption, the middle step of its "
            f"run), each caption ranks all clips: R@1 **{_pct(retrieval['r@1'])}**, "
            f"R@5 {_pct(retrieval['r@5'])}."
        )
        if "meaning_r@1" in retrieval:
            lines.append(
                "Some captions of the gallery mean the same thing (another wording of the same "
                "state and object, or no object named): a model that knew every caption's "
                "meaning but picked at random among the clips that fit it would reach R@1 "
                f"{_pct(retrieval['meaning_r@1'])}."
            )
        if "state_r@1" in retrieval:
            lines.append(
                "Picking the same way, a model that knew the state of every clip but not its "
                f"object would reach R@1 {_pct(retrieval['state_r@1'])}, and one that knew the "
                f"state and the object's colour but not its shape "
                f"{_pct(retrieval['state_colour_r@1'])}."
            )
    else:
        lines.append("Not measured: fewer than two captioned moments.")

    lines += ["", "## Captions", ""]
    captions = report.get("captions")
    if captions:
        lines += [
            f"CIDEr-D of the text decoded from each ground-truth caption run's average-pooled "
            f"embedding ({captions['segments']} runs): **{100 * captions['cider_d']:.1f}** "
            "(pycocoevalcap x100; tokens lower-cased, punctuation dropped).",
            "",
        ]
        lines += _table(
            ["ground truth", "decoded"],
            [[e["truth"], _cell(e["decoded"])] for e in captions["examples"][:5]],
        )
    else:
        lines.append("Not measured: no captions in the episodes.")

    lines += ["", "## Selective decoding", ""]
    sel = report.get("selective")
    if sel:
        ref = sel["reference"]
        lines += [
            "Each ground-truth caption change is matched to the nearest decoded output in time "
            "(an output is stamped with the start of the span it describes); CIDEr-D averaged "
            f"over {sel['matches']} matches. Reference: uniform {ref['parameter']:g} Hz, "
            f"{ref['decodes_per_minute']:.1f} decodes/min, CIDEr-D x100 "
            f"{100 * ref['cider']:.1f}. The paper reports 2.85x fewer decodes for offline "
            "clustering on EgoExo4D.",
            "",
        ]
        if ref["cider"] <= 0:
            lines += [
                "**The reference's CIDEr-D is 0, so no reduction is defined** (every method "
                "would match it).",
                "",
            ]
        rows = []
        for family, red in sel["reductions"].items():
            if red["factor"] is None:
                factor = "not reached" if ref["cider"] > 0 else "undefined"
            else:
                factor = (">= " if red["lower_bound"] else "") + f"{red['factor']:.2f}x"
            rate = red["decodes_per_minute"]
            point = red["operating_point"]
            rows.append([family, factor, _num(rate, 1), "n/a" if point is None else f"{point:g}"])
        lines += _table(
            [
                "method",
                "fewer decodes at reference CIDEr-D",
                "decodes/min needed",
                "cheapest swept setting reaching it",
            ],
            rows,
        )
        if "true caption changes" in sel["reductions"]:
            lines += [
                "",
                '"true caption changes" is not a method: its spans are cut where the '
                "ground-truth caption changes (1 to 4 true segments per decode), the room a "
                "segmenter that knew the truth would have on these episodes.",
            ]
        if sel.get("cost"):
            lines += [
                "",
                f"Decoder cost at matched quality over {sel['stream_minutes']:.1f} min of stream: "
                "every span decoded one call at a time with the real Y-decoder, as the decoder "
                "node does; the reference and, per method, its cheapest setting reaching the "
                "reference's CIDEr-D. CPU is the process's CPU time in the decoder.",
                "",
            ]
            lines += _table(
                ["method", "setting", "decodes/min", "decoder CPU s/min", "decoder wall s/min"],
                [
                    [c["family"], f"{c['parameter']:g}", _num(c["decodes_per_minute"], 1),
                     _num(c["cpu_s_per_minute"], 2), _num(c["wall_s_per_minute"], 2)]
                    for c in sel["cost"]
                ],
            )  # fmt: skip
        if "selective" in images:
            lines += ["", f"![selective decoding]({images['selective']})"]
        lines += ["", "<details><summary>every sweep point</summary>", ""]
        lines += _table(
            ["method", "setting", "decodes", "decodes/min", "CIDEr-D x100"],
            [
                [
                    p["family"],
                    f"{p['parameter']:g}",
                    str(p["decodes"]),
                    _num(p["decodes_per_minute"], 1),
                    _num(100 * p["cider"], 1),
                ]
                for p in sel["points"]
            ],
        )
        lines += ["", "</details>"]
    else:
        lines.append("Not measured: no caption changes in the episodes.")

    lines += ["", "## Episodes", ""]
    lines += _table(
        [
            "episode",
            "steps",
            "min",
            "accuracy",
            "instant",
            "baseline",
            "edit",
            "flicker",
            "baseline flicker",
        ],
        [
            [
                f"[{e['name']}]({images.get('timeline_' + e['name'], '')})"
                if "timeline_" + e["name"] in images
                else e["name"],
                str(e["steps"]),
                _num(e["minutes"], 2),
                _pct(e["accuracy"]),
                _pct(e["instant_accuracy"]),
                _pct(e["baseline_accuracy"]),
                _num(e["edit"], 1),
                _num(e["flicker"], 2),
                _num(e["baseline_flicker"], 2),
            ]
            for e in report["episodes"]
        ],
    )
    timing = report.get("timing", {})
    lines += [
        "",
        f"Replay {timing.get('replay_s', 0):.1f} s, decoding {timing.get('decode_s', 0):.1f} s.",
        "",
    ]
    return "\n".join(lines)


def _json_ready(value: Any) -> Any:
    """inf/nan to strings (JSON has neither), numpy scalars to Python."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def write_report(evaluation: Evaluation, out: str | Path, timelines: int | None = None) -> Path:
    """Write report.md, metrics.json and the PNGs into `out` (created); returns report.md.

    `timelines` limits how many episodes get a timeline plot (None: all).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report = evaluation.report
    labels = list(report["data"]["labels"])
    columns = report["state"]["confusion_columns"]
    images: dict[str, str] = {}
    plot_confusion(
        np.asarray(report["state"]["stabilised"]["confusion"]),
        labels,
        columns,
        out / "confusion.png",
        "Stabilised label: confusion matrix",
    )
    images["confusion"] = "confusion.png"
    runs = evaluation.runs
    if runs:
        plot_embedding_map(runs[0], labels, evaluation.label_matrix, out / "embedding_map.png")
        images["embedding_map"] = "embedding_map.png"
    for run in runs[:timelines]:
        name = f"timeline_{run.name}.png"
        plot_timeline(run, labels, out / name)
        images[f"timeline_{run.name}"] = name
    if evaluation.selective is not None:
        plot_selective(evaluation.selective, out / "selective_decoding.png")
        images["selective"] = "selective_decoding.png"
    (out / "metrics.json").write_text(json.dumps(_json_ready(report), indent=1) + "\n")
    path = out / "report.md"
    path.write_text(markdown(report, images))
    return path
