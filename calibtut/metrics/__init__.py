"""Calibration metrics (ECE, ACE, MCE), Dice, per-image results, the noise floor, and the data
every reliability figure shows.

Everything is computed from :class:`calibtut.binning.BinStats`, so a metric, the loss that
optimises it and the plot that shows it all see the same bins. Conventions (DESIGN.md):

* ECE weights each bin's gap |mean prediction - mean target| by its count, ACE averages the
  occupied bins equally, MCE is the largest occupied-bin gap; NaN where nothing is occupied.
* Macro = per image and class, then averaged over images; micro = bins pooled over the dataset
  first, then one error per class.

    errors.py   ECE/ACE/MCE from bins, Dice, macro and micro summaries (equal to MONAI's)
    floor.py    the ACE and MCE noise floors
    figures.py  reliability diagrams' and dataset histograms' data, directions of miscalibration
    results.py  per-image results of a batch (what a run saves) and CumulativeCalibration
    scores.py   Brier score, NLL, and the ECE over equal-mass (adaptive) bins

Example:
    One class, four voxels: 0.2 twice (targets 0 and 1, gap 0.3) and 0.9 twice (targets 1 and 1,
    gap 0.1). ECE weights both bins by their two voxels, ACE averages them: both are 0.2.

    >>> import torch
    >>> from calibtut.metrics import calibration_error
    >>> p = torch.tensor([[[0.2, 0.2, 0.9, 0.9]]])
    >>> y = torch.tensor([[[0.0, 1.0, 1.0, 1.0]]])
    >>> [calibration_error(p, y, 10, r).item() for r in ("expected", "average", "maximum")]
    [0.2..., 0.2..., 0.3...]
"""

from calibtut.metrics.errors import (
    METRIC_TITLES,
    REDUCTIONS,
    CalibrationErrors,
    calibration_error,
    calibration_errors,
    dice,
    discretize,
    macro_average,
    macro_errors,
    micro_errors,
)
from calibtut.metrics.figures import (
    ConfidenceDirection,
    DatasetReliability,
    Reliability,
    confidence_direction,
    dataset_reliability,
    dataset_reliability_histogram,
    reliability,
)
from calibtut.metrics.floor import (
    FLOOR_DRAWS,
    FloorDraws,
    NoiseFloor,
    draw_floor_labels,
    noise_floor,
)
from calibtut.metrics.results import CumulativeCalibration, ImageResults, image_results
from calibtut.metrics.scores import (
    ImageScores,
    brier_score,
    equal_mass_ece,
    image_scores,
    negative_log_likelihood,
)

__all__ = [
    "REDUCTIONS",
    "METRIC_TITLES",
    "CalibrationErrors",
    "calibration_errors",
    "calibration_error",
    "discretize",
    "dice",
    "macro_average",
    "macro_errors",
    "micro_errors",
    "FLOOR_DRAWS",
    "FloorDraws",
    "NoiseFloor",
    "draw_floor_labels",
    "noise_floor",
    "ImageResults",
    "image_results",
    "Reliability",
    "reliability",
    "DatasetReliability",
    "dataset_reliability",
    "dataset_reliability_histogram",
    "ConfidenceDirection",
    "confidence_direction",
    "CumulativeCalibration",
    "brier_score",
    "negative_log_likelihood",
    "equal_mass_ece",
    "ImageScores",
    "image_scores",
]
