"""Reading safetensors weight folders (single file or sharded) and hashing them.

Only the requested tensors are read, so taking 8 layers out of a large sharded Llama checkpoint
does not load the rest. Every failure names the file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .errors import WeightsError

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"


def _weight_map(folder: Path) -> dict[str, Path]:
    """Tensor name -> the file holding it."""
    index = folder / INDEX_NAME
    if index.is_file():
        try:
            data = json.loads(index.read_text())
            return {name: folder / file for name, file in data["weight_map"].items()}
        except (OSError, json.JSONDecodeError, KeyError, AttributeError) as exc:
            raise WeightsError(f"corrupt safetensors index {index}: {exc}") from exc
    single = folder / SINGLE_NAME
    files = [single] if single.is_file() else sorted(folder.glob("*.safetensors"))
    if not files:
        raise WeightsError(f"no safetensors weights in {folder} (pickle files are not loaded)")
    mapping: dict[str, Path] = {}
    for file in files:
        for name in file_tensor_names(file):
            mapping[name] = file
    return mapping


def file_tensor_names(path: Path) -> list[str]:
    """Names of the tensors in one safetensors file."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            return list(handle.keys())
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"cannot read safetensors file {path}: {exc}") from exc


def tensor_names(folder: str | Path) -> list[str]:
    """All tensor names of a weight folder."""
    return sorted(_weight_map(Path(folder)))


def read_tensors(folder: str | Path, names: Iterable[str]) -> dict[str, torch.Tensor]:
    """Read the named tensors of a folder (any sharding), opening each file once."""
    mapping = _weight_map(Path(folder))
    by_file: dict[Path, list[str]] = {}
    for name in names:
        if name not in mapping:
            raise WeightsError(f"tensor {name!r} not found in {folder}")
        by_file.setdefault(mapping[name], []).append(name)
    out: dict[str, torch.Tensor] = {}
    for file, wanted in by_file.items():
        try:
            with safe_open(str(file), framework="pt") as handle:
                for name in wanted:
                    out[name] = handle.get_tensor(name)
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise WeightsError(f"cannot read safetensors file {file}: {exc}") from exc
    return out


def read_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of one safetensors file."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    out: dict[str, torch.Tensor] = {}
    try:
        with safe_open(str(path), framework="pt") as handle:
            for name in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
                out[name] = handle.get_tensor(name)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise WeightsError(f"cannot read safetensors file {path}: {exc}") from exc
    return out


def write_file(tensors: dict[str, torch.Tensor], path: str | Path) -> None:
    """Write tensors (made contiguous, moved to CPU) as one safetensors file."""
    plain = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    save_file(plain, str(path), metadata={"format": "pt"})


def weight_files(folder: str | Path) -> list[Path]:
    """The safetensors files that hold a folder's weights, sorted."""
    return sorted(set(_weight_map(Path(folder)).values()))


def sha256_files(paths: Iterable[Path]) -> str:
    """SHA-256 over the bytes of the files in the given order (one file: its plain digest)."""
    digest = hashlib.sha256()
    for path in paths:
        try:
            with open(path, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
        except OSError as exc:
            raise WeightsError(f"cannot read {path} to hash it: {exc}") from exc
    return digest.hexdigest()
