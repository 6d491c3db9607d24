"""Report section of the knowledge-point analysis (placeholder while written)."""

from __future__ import annotations

from typing import Any


def render(result: dict[str, Any], study: Any) -> str:
    return "<p>TODO</p>"
