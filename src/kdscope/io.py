"""Atomic file writes and checked reads.

Writes: a reader never sees a half-written file, a crash never corrupts an old one, and a new
file gets the mode a plain ``open()`` would give it (0666 less the umask). A write killed
midway leaves a ``.<name>.<random>.tmp`` file beside its target; :func:`clean_orphans` removes
them.

Reads never execute code (torch files load with ``weights_only=True``, ``.npz`` files without
pickles) and turn a missing, empty, truncated or garbage file into one :class:`DamagedFile`
line naming it.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import secrets
import signal
import sys
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdscope.errors import KdscopeError

#: the name of a temporary file of :func:`_atomic_write`: ``.<target name>.<random>.tmp``
_TMP_NAME = re.compile(r"\..+\.[0-9a-z_]+\.tmp")
_TMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)


class DamagedFile(KdscopeError):
    """A file kdscope wrote earlier cannot be used: missing, empty, truncated, garbage, holding
    code, or not what kdscope writes there."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path, self.reason = Path(path), reason
        super().__init__(
            f"{self.path} is damaged ({reason}); delete it and run the same command again"
        )

    def warn(self, action: str) -> None:
        """Say on one stderr line that the file is damaged and what kdscope does instead."""
        print(
            f"kdscope: warning: {self.path} is damaged ({self.reason}); {action}", file=sys.stderr
        )


#: the signals that interrupt a command (Ctrl-C, and SIGTERM, which the CLI turns into one)
_INTERRUPTS = {signal.SIGINT, signal.SIGTERM}


def _open_tmp(path: Path) -> tuple[int, Path]:
    """Create a new temporary file beside ``path``, as ``open(..., "x")`` would: the kernel
    applies the umask to mode 0666 (``tempfile.mkstemp`` would force 0600)."""
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            return os.open(tmp, _TMP_FLAGS, 0o666), tmp
        except FileExistsError:
            continue


def _atomic_write(path: Path, write: Any, mode: str) -> None:
    """Write via ``write(fileobj)`` to a temporary file beside ``path``, fsync, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Ctrl-C and SIGTERM raise wherever the process is: hold them while the temporary file is
    # created, so that an interruption always finds it named below and removes it.
    held = signal.pthread_sigmask(signal.SIG_BLOCK, _INTERRUPTS)
    try:
        fd, tmp = _open_tmp(path)
        try:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
            with os.fdopen(
                fd, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": ""})
            ) as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def clean_orphans(folder: Path) -> list[Path]:
    """Remove the temporary files that writes killed midway left anywhere under ``folder``;
    returns them. Only regular files named like :func:`_atomic_write`'s are touched."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    orphans = [
        p
        for p in folder.rglob(".*.tmp")
        if _TMP_NAME.fullmatch(p.name) and p.is_file() and not p.is_symlink()
    ]
    for p in orphans:
        p.unlink(missing_ok=True)
    return orphans


@contextmanager
def _reading(path: Path, what: str) -> Iterator[None]:
    """Turn any failure to read or parse ``path`` (expected to hold ``what``) into one
    :class:`DamagedFile` line."""
    try:
        yield
    except DamagedFile:
        raise
    except FileNotFoundError:
        raise DamagedFile(path, "missing") from None
    except PermissionError:  # the file may be fine: the user lacks the right to read it
        raise
    except Exception as e:  # whatever the parser raises, the file is not what kdscope wrote
        empty = path.is_file() and path.stat().st_size == 0
        raise DamagedFile(path, "empty" if empty else f"not {what}: {type(e).__name__}") from None


def write_text(path: Path, text: str) -> None:
    _atomic_write(path, lambda f: f.write(text), "w")


def strict_json(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float replaced by None, so that it is strict JSON
    (``json.dumps`` would write the bare ``NaN`` and ``Infinity`` that jq, ``JSON.parse`` and
    most readers reject). An undefined number reads as ``null``."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    return obj


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as strict JSON (undefined numbers as ``null``: :func:`strict_json`),
    atomically."""
    text = json.dumps(strict_json(obj), indent=2, sort_keys=False, allow_nan=False)
    write_text(path, text + "\n")


def read_json(path: Path) -> Any:
    """The JSON value in ``path``; :class:`DamagedFile` if it cannot be read or parsed."""
    path = Path(path)
    with _reading(path, "valid JSON"):
        return json.loads(path.read_text(encoding="utf-8"))


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
    """The rows of a CSV file written by :func:`write_csv`; :class:`DamagedFile` if it cannot be
    read, has no header, is cut (no final line end) or has a row of another length than its
    header."""
    path = Path(path)
    with _reading(path, "a CSV table"):
        text = path.read_text(encoding="utf-8")
        if not text.endswith("\n"):
            raise DamagedFile(
                path, "empty" if not text else "cut short: no line end after its last row"
            )
        reader = csv.DictReader(text.splitlines(keepends=True))
        rows = list(reader)
        if not reader.fieldnames:
            raise DamagedFile(path, "no header")
    width = len(reader.fieldnames)
    for i, row in enumerate(rows, start=2):
        if None in row or None in row.values():
            raise DamagedFile(path, f"line {i} does not have the header's {width} fields")
    return rows


def save_torch(path: Path, obj: Any) -> None:
    _atomic_write(path, lambda f: torch.save(obj, f), "wb")


def load_torch(path: Path) -> Any:
    """A torch file of tensors and plain data (numbers, strings, lists, dicts), loaded with
    ``weights_only=True``: a file holding anything else is refused without running it."""
    path = Path(path)
    with _reading(path, "a torch file of tensors and plain data"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns about the pickle protocol of odd files
        return torch.load(path, map_location="cpu", weights_only=True)


def save_npz(path: Path, **arrays: Any) -> None:
    """Write numpy arrays to one ``.npz`` file atomically."""
    _atomic_write(path, lambda f: np.savez(f, **arrays), "wb")


def load_npz(path: Path) -> dict[str, Any]:
    """The arrays of an ``.npz`` file, never unpickling; :class:`DamagedFile` if it cannot be
    read."""
    path = Path(path)
    with _reading(path, "an .npz file of plain arrays"), np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}
