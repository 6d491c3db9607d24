"""Distillation methods: a registry of loss modules (see :mod:`kdscope.methods.base`).

``build_method(name, **params)`` constructs one; each built-in lives in its own file and
registers itself with ``@register_method``.
"""

from __future__ import annotations

import inspect
from typing import Any

from kdscope.errors import KdscopeError
from kdscope.methods.base import BindContext, Method, Phase, probe
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


from kdscope.methods import (  # noqa: E402,F401  (register the built-in methods)
    attention,
    ce,
    crd,
    feature_mimic,
    hint,
    kd,
    kd_pt,
    kd_sim,
    kd_topk,
    label_smoothing,
    ls_matched,
    soft_label,
)

__all__ = [
    "METHODS",
    "BindContext",
    "Method",
    "Phase",
    "build_method",
    "distillation_weight",
    "probe",
    "register_method",
]
