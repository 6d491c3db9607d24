"""Knowledge points (Cheng et al. 2020; Zhang et al. 2022): information discarding per input
unit, knowledge points on the foreground and background, learning speed and stability.

Works on any ``nn.Module``, layer path, inputs and unit map, without a study::

    from kdscope import knowledge_points as kp

    units = kp.image_grid(x.shape[1:], grid=16)              # 2x2-pixel cells of 32x32 images
    maps = kp.estimate(model, "conv", x, units)              # fast mode; mode="reference" too
    traj = kp.entropy_trajectory(checkpoints, "conv", x, masks, units, epochs, distances)
    m = kp.network_metrics(traj)                              # n_fg, n_bg, quality, d, rho
    rows, inputs = kp.compare(student_traj, baseline_traj)   # paired, on common inputs
"""

from kdscope.correlation import spearman
from kdscope.knowledge_points.diagnosis import (
    EXPECTED,
    HYPOTHESES,
    EntropyTrajectory,
    compare,
    entropy_trajectory,
    image_units,
    network_metrics,
)
from kdscope.knowledge_points.estimator import (
    Discarding,
    EstimatorSettings,
    estimate,
    layer_probe,
    unit_sensitivity,
)
from kdscope.knowledge_points.metrics import (
    background_level,
    knowledge_points,
    learning_speed,
    point_counts,
    stability,
)
from kdscope.knowledge_points.modalities import UNIT_MAPS, register_unit_map
from kdscope.knowledge_points.units import (
    UnitMap,
    image_grid,
    per_element,
    per_row,
    point_units,
    token_units,
)

__all__ = [
    "EXPECTED",
    "HYPOTHESES",
    "UNIT_MAPS",
    "Discarding",
    "EntropyTrajectory",
    "EstimatorSettings",
    "UnitMap",
    "background_level",
    "compare",
    "entropy_trajectory",
    "estimate",
    "image_grid",
    "image_units",
    "knowledge_points",
    "layer_probe",
    "learning_speed",
    "network_metrics",
    "per_element",
    "per_row",
    "point_counts",
    "point_units",
    "register_unit_map",
    "token_units",
    "spearman",
    "stability",
    "unit_sensitivity",
]
