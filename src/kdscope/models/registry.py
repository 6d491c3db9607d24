"""The model registry: ``@register_model(name)`` on a constructor ``f(num_classes, **kw) -> nn.Module``,
and the user's own constructors named by import path (``"package.module:function"``)."""

from __future__ import annotations

import importlib
import inspect
import re
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


_FACTORY = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def resolve_factory(path: str) -> Callable[..., nn.Module]:
    """The callable named by ``"package.module:attribute"`` (the module imported, the attribute
    looked up, dots in it followed); a user error naming the path when it is malformed, cannot
    be imported, or is not callable."""
    if not _FACTORY.fullmatch(path):
        raise KdscopeError(f"model factory {path!r}: write it as 'package.module:function'")
    module_name, attribute = path.split(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001  (the user's module may raise anything)
        raise KdscopeError(
            f"model factory {path!r}: cannot import {module_name!r}: {type(e).__name__}: "
            f"{' '.join(str(e).split())} (a module beside the study file is found; elsewhere, "
            "put its folder on PYTHONPATH)"
        ) from None
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise KdscopeError(f"model factory {path!r}: {module_name!r} has no {attribute!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise KdscopeError(f"model factory {path!r} is not callable")
    return obj


def build_factory(path: str, num_classes: int, **params: Any) -> nn.Module:
    """Call the user's constructor at ``path`` (:func:`resolve_factory`) with ``params``, and
    ``num_classes`` when it takes that argument; a user error unless it returns an
    ``nn.Module``."""
    ctor = resolve_factory(path)
    if "num_classes" in inspect.signature(ctor).parameters:
        params = {"num_classes": num_classes, **params}
    try:
        model = ctor(**params)
    except Exception as e:  # noqa: BLE001  (the user's constructor may raise anything)
        raise KdscopeError(f"model factory {path!r}: {type(e).__name__}: {e}") from None
    if not isinstance(model, nn.Module):
        raise KdscopeError(
            f"model factory {path!r} returned {type(model).__name__}, not a torch nn.Module"
        )
    return model


def list_models(pattern: str = "*") -> list[str]:
    return MODELS.names(pattern)
