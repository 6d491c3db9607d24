"""Three levels of teacher knowledge (Tang et al. 2020; docs/three_levels.md): a pure-numpy core.

Universe (label smoothing), domain (class relations in soft labels and logit geometry) and
instance-specific (gradient rescaling by the teacher's confidence) analyses, plus the teacher check::

    from kdscope import teacher_knowledge as tk

    r = tk.rescaling_factors(z, tk.softmax(v, tau), labels, tau, 1 - lam, lam)   # w, w_g per example
    S = tk.class_similarity(W)                                                  # centred cosines
    tk.hierarchy_score(S, superclass)
    tk.relational_mass(tk.softmax(v), labels, superclass)
    report = tk.teacher_check(v, labels, tau=4.0, lam=0.7, superclass=superclass)
"""

from kdscope.correlation import auroc, average_ranks, kendall_tau_b, pearson, spearman
from kdscope.teacher_knowledge.calibration import (
    brier,
    brier_per_example,
    calibration_summary,
    ece,
    ece_batched,
    mean_entropy,
    nll,
    reliability,
)
from kdscope.teacher_knowledge.class_geometry import (
    class_similarity,
    distance_order_agreement,
    hierarchy_correlation,
    hierarchy_score,
    mantel,
    upper,
)
from kdscope.teacher_knowledge.rescaling import (
    Rescaling,
    closed_form_w,
    decile_curve,
    rescaling_factors,
    softmax,
)
from kdscope.teacher_knowledge.soft_labels import (
    class_correlation,
    class_mean_matrix,
    non_gt_mass,
    offdiag_hierarchy,
    relational_mass,
    tail_concentration,
)
from kdscope.teacher_knowledge.teacher_check import (
    DEFAULT_THRESHOLDS,
    Thresholds,
    teacher_check,
)

__all__ = [
    "DEFAULT_THRESHOLDS",
    "Rescaling",
    "Thresholds",
    "auroc",
    "average_ranks",
    "brier",
    "brier_per_example",
    "calibration_summary",
    "class_correlation",
    "class_mean_matrix",
    "class_similarity",
    "closed_form_w",
    "decile_curve",
    "distance_order_agreement",
    "ece",
    "ece_batched",
    "hierarchy_correlation",
    "hierarchy_score",
    "kendall_tau_b",
    "mantel",
    "mean_entropy",
    "nll",
    "non_gt_mass",
    "offdiag_hierarchy",
    "pearson",
    "reliability",
    "relational_mass",
    "rescaling_factors",
    "softmax",
    "spearman",
    "tail_concentration",
    "teacher_check",
    "upper",
]
