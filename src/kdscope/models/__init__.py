"""Model registry, built-in classifiers and layer hooks.

A user's own ``nn.Module`` can be registered with ``register_model`` (a constructor taking
``num_classes``) or passed directly to the analyses' Python API.
"""

from kdscope.models import cnn, mlp, pointnet, text, vector  # noqa: F401  (register the built-in models)
from kdscope.models.hooks import Outputs, capture, forward_with_features, get_module, resolve_layer
from kdscope.models.registry import (
    MODELS,
    build_factory,
    build_model,
    list_models,
    register_model,
    resolve_factory,
)

__all__ = [
    "MODELS",
    "Outputs",
    "build_factory",
    "build_model",
    "capture",
    "forward_with_features",
    "get_module",
    "list_models",
    "register_model",
    "resolve_factory",
    "resolve_layer",
]
