"""The model registry: ``@register_model(name)`` on a constructor ``f(num_classes, **kw) -> nn.Module``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from kdscope.errors import KdscopeError
from kdscope.registry import Registry

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")
register_model = MODELS.register


def build_model(name: str, num_classes: int, **params: Any) -> nn.Module:
    """Construct the registered model ``name``; bad parameters are a user error."""
    ctor = MODELS.get(name)
    try:
        return ctor(num_classes=num_classes, **params)
    except (TypeError, ValueError, RuntimeError) as e:
        raise KdscopeError(f"model {name!r}: {e}") from None


def list_models(pattern: str = "*") -> list[str]:
    return MODELS.names(pattern)
