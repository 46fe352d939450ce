"""calibtut: calibration-aware training for medical image segmentation, taught in notebooks.

The core (``binning``, ``losses``, ``metrics``) imports only torch and MONAI; plots, widgets,
datasets and training live in their own modules and are imported on demand.
"""

from calibtut.binning import BinStats, hard_binning, soft_binning
from calibtut.losses import ACEDiceCELoss, HardL1ACELoss, SoftL1ACELoss
from calibtut.metrics import CumulativeCalibration, calibration_error, dataset_reliability_histogram

__version__ = "0.1.0"

__all__ = [
    "BinStats",
    "hard_binning",
    "soft_binning",
    "HardL1ACELoss",
    "SoftL1ACELoss",
    "ACEDiceCELoss",
    "calibration_error",
    "dataset_reliability_histogram",
    "CumulativeCalibration",
]
