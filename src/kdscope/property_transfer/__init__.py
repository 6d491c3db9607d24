"""Property transfer (Ojha et al. 2023): does a distilled student localise, fail and represent
like its teacher? The functional core on any ``nn.Module``: Grad-CAM maps and win rates
(:mod:`.localisation`), linear CKA, biased and debiased (:mod:`.cka`), and teacher-crafted
attacks (:mod:`.attacks`)."""

from kdscope.property_transfer.adversarial import (
    calibrate_eps,
    fooled,
    fooling_rate,
    ifgsm,
    predict_labels,
    transfer_rates,
)
from kdscope.property_transfer.localisation import (
    foreground_energy,
    gradcam_maps,
    map_cosine,
    win_grid,
)
from kdscope.property_transfer.representation_similarity import (
    cka_matrix,
    debiased_cka,
    gram_cka,
    linear_cka,
)

__all__ = [
    "calibrate_eps",
    "cka_matrix",
    "debiased_cka",
    "fooled",
    "fooling_rate",
    "foreground_energy",
    "gradcam_maps",
    "gram_cka",
    "ifgsm",
    "linear_cka",
    "map_cosine",
    "predict_labels",
    "transfer_rates",
    "win_grid",
]
