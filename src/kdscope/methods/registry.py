"""The registry of distillation methods: ``register_method``, ``build_method`` and the
distillation weight a method declares."""

from __future__ import annotations

import inspect
from typing import Any

from kdscope.errors import KdscopeError
from kdscope.methods.base import Method
from kdscope.registry import Registry

METHODS: Registry[type[Method]] = Registry("method")


def register_method(name: str):  # noqa: ANN201
    """Class decorator registering a :class:`Method` subclass under ``name`` (sets ``cls.name``)."""

    def add(cls: type[Method]) -> type[Method]:
        cls.name = name
        return METHODS.register(name)(cls)

    return add


def build_method(name: str, **params: Any) -> Method:
    """Construct the registered method ``name``; unknown or bad parameters are a user error."""
    cls = METHODS.get(name)
    try:
        return cls(**params)
    except (TypeError, ValueError) as e:
        raise KdscopeError(f"method {name!r}: {e}") from None


def distillation_weight(method: str, params: dict[str, Any]) -> tuple[str, float]:
    """The name and value (the given setting, else the constructor's default) of the argument
    that scales ``method``'s distillation term; a user error if the method has none."""
    cls = METHODS.get(method)
    key = cls.distill_weight
    if key is None:
        raise KdscopeError(f"method {method!r} has no single distillation weight to scale")
    default = inspect.signature(cls.__init__).parameters[key].default
    return key, float(params.get(key, default))
