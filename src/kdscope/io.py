"""Atomic file writes: a reader never sees a half-written file, a crash never corrupts an old one."""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch


def _atomic_write(path: Path, write: Any, mode: str) -> None:
    """Write via ``write(fileobj)`` to a temporary file beside ``path``, fsync, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(
            fd, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": ""})
        ) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text(path: Path, text: str) -> None:
    _atomic_write(path, lambda f: f.write(text), "w")


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=True) + "\n")


def read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_csv(
    path: Path, rows: Sequence[Mapping[str, Any]], columns: Iterable[str] | None = None
) -> None:
    """Write dict rows as CSV; columns default to the union of keys in first-seen order."""
    if columns is None:
        columns = list(dict.fromkeys(k for row in rows for k in row))
    cols = list(columns)

    def write(f: Any) -> None:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="raise")
        w.writeheader()
        w.writerows(rows)

    _atomic_write(path, write, "w")


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def save_torch(path: Path, obj: Any) -> None:
    _atomic_write(path, lambda f: torch.save(obj, f), "wb")


def load_torch(path: Path) -> Any:
    return torch.load(path, map_location="cpu", weights_only=False)


def save_npz(path: Path, **arrays: Any) -> None:
    """Write numpy arrays to one ``.npz`` file atomically."""
    _atomic_write(path, lambda f: np.savez(f, **arrays), "wb")


def load_npz(path: Path) -> dict[str, Any]:
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}
