"""Datasets: the paper's four (ACDC, AMOS, KiTS23, BraTS21) in their real layouts, and the
embedded synthetic default.

    from calibtut.data import spec
    s = spec("synthetic")                       # or "acdc", "amos", "kits", "brats", "synthetic3d"
    train = s.dataset(None, "train")            # a MONAI CacheDataset of transformed cases
    s.out_channels, s.activation, s.patch_size, s.val_window

    kits = spec("kits").replace(patch_size=(64, 64, 64))
    kits.dataset("/data/kits23/dataset", "val")

`write_phantom(name, root)` writes a small dataset in a real layout to try the loaders
without the data; data/README.md says where to get each dataset.
"""

from calibtut.data.catalog import DATASETS, spec
from calibtut.data.errors import InvalidCaseError
from calibtut.data.phantoms import write_phantom
from calibtut.data.spec import SPLITS, DatasetSpec, HUWindow, NiftiDatasetSpec, ZScore
from calibtut.data.synthetic import SyntheticImages, SyntheticSpec, generate

__all__ = [
    "DATASETS",
    "SPLITS",
    "DatasetSpec",
    "HUWindow",
    "InvalidCaseError",
    "NiftiDatasetSpec",
    "SyntheticImages",
    "SyntheticSpec",
    "ZScore",
    "generate",
    "spec",
    "write_phantom",
]
