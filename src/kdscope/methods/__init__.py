"""Distillation methods: a registry of loss modules (see :mod:`kdscope.methods.base`).

``build_method(name, **params)`` constructs one; each built-in lives in its own file and
registers itself with ``@register_method`` (:mod:`kdscope.methods.registry`); this package
imports them all.
"""

from kdscope.methods import (  # noqa: F401  (register the built-in methods)
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
from kdscope.methods.base import ANALYSIS_ROLES, BindContext, Method, Phase, probe
from kdscope.methods.registry import METHODS, build_method, distillation_weight, register_method

__all__ = [
    "ANALYSIS_ROLES",
    "METHODS",
    "BindContext",
    "Method",
    "Phase",
    "build_method",
    "distillation_weight",
    "probe",
    "register_method",
]
