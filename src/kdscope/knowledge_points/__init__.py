"""Knowledge points (Cheng et al. 2020; Zhang et al. 2022): information discarding per input
unit, knowledge points on the foreground and background, learning speed and stability.

Works on any ``nn.Module``, layer path, inputs and unit map, without a study::

    from kdscope import knowledge_points as kp

    units = kp.image_grid(x.shape[1:], grid=16)              # 2x2-pixel cells of 32x32 images
    maps = kp.estimate(model, "conv", x, units)              # fast mode; mode="reference" too
    traj = kp.entropy_trajectory(checkpoints, "conv", x, masks, units, epochs, distances)
    m = kp.network_metrics(traj)                              # n_fg, n_bg, quality, d, rho
    rows, inputs = kp.compare(student_traj, baseline_traj)   # paired, on common inputs
    one = kp.single(model, "conv", x, masks, units)          # one network: no checkpoints

and the weight path of a training loop of your own (:class:`WeightPathLogger`, or
:func:`from_checkpoints` when only checkpoints were saved) for the learning speed.
"""

from kdscope.correlation import spearman
from kdscope.knowledge_points.diagnosis import (
    ABSENT,
    EXPECTED,
    HYPOTHESES,
    EntropyTrajectory,
    NetworkPoints,
    compare,
    entropy_trajectory,
    image_units,
    network_metrics,
    single,
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
from kdscope.knowledge_points.weight_path import (
    WeightPathLogger,
    from_checkpoints,
    read_distances,
)

__all__ = [
    "ABSENT",
    "EXPECTED",
    "HYPOTHESES",
    "UNIT_MAPS",
    "Discarding",
    "EntropyTrajectory",
    "EstimatorSettings",
    "NetworkPoints",
    "UnitMap",
    "WeightPathLogger",
    "background_level",
    "compare",
    "entropy_trajectory",
    "estimate",
    "from_checkpoints",
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
    "read_distances",
    "register_unit_map",
    "single",
    "token_units",
    "spearman",
    "stability",
    "unit_sensitivity",
]
