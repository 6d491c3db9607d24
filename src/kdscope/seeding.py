"""Derived seeds: every random choice of a run is a pure function of (seed, purpose, epoch)."""

from __future__ import annotations

import hashlib


def derive_seed(*keys: object) -> int:
    """A 63-bit seed derived from ``keys`` (stable across processes and Python versions)."""
    digest = hashlib.sha256(repr(keys).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1
