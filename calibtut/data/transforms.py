"""The two dictionary transforms calibtut needs that MONAI does not provide.

Everything else in the pipelines (loading, orientation, resampling, intensity, crops,
augmentation) is MONAI's own; see `DatasetSpec.transforms`.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from functools import reduce

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform
from monai.utils import convert_to_tensor

from calibtut.data.errors import InvalidCaseError, describe


class LabelToRegionsd(MapTransform):
    """Label map `(1, *spatial)` -> one binary channel per region, `(len(regions), *spatial)`.

    A region is a set of label values, so regions may overlap: BraTS's enhancing tumour ⊂
    tumour core ⊂ whole tumour, KiTS's tumour ⊂ masses ⊂ kidney and masses. MONAI ships
    this only for BraTS (`ConvertToMultiChannelBasedOnBratsClassesd`, in a fixed order);
    here the regions come from the dataset spec, in the spec's channel order.
    """

    def __init__(
        self,
        keys: KeysCollection,
        regions: Sequence[Sequence[int]],
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if not regions or any(len(values) == 0 for values in regions):
            raise ValueError(f"every region needs at least one label value, got {regions!r}")
        self.regions = tuple(tuple(int(v) for v in values) for values in regions)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            label = d[key]
            if label.shape[0] != 1:
                raise ValueError(
                    f"LabelToRegionsd expects a label map with one channel, got shape "
                    f"{tuple(label.shape)} for key {key!r}"
                )
            label = label[0]
            channels = [
                reduce(torch.logical_or, (label == v for v in values)) for values in self.regions
            ]
            d[key] = torch.stack(channels, dim=0)
        return d


class CheckLabelValuesd(MapTransform):
    """Refuse a label holding a value the dataset does not define (e.g. BraTS 3, AMOS 16).

    Checked where the label is first loaded, because an unknown value would otherwise be
    silently trained on as a class index or dropped by the region conversion.
    """

    def __init__(
        self,
        keys: KeysCollection,
        allowed: Sequence[int],
        dataset: str,
        layout: str,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.allowed = tuple(sorted(int(v) for v in allowed))
        self.dataset = dataset
        self.layout = layout

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            label = convert_to_tensor(d[key], track_meta=False)
            allowed = torch.tensor(self.allowed, dtype=label.dtype, device=label.device)
            unknown = ~torch.isin(label, allowed)
            if bool(unknown.any()):
                values = [f"{v:g}" for v in torch.unique(label[unknown])[:10].tolist()]
                source = getattr(d[key], "meta", {}).get("filename_or_obj", f"key {key!r}")
                raise InvalidCaseError(
                    describe(
                        self.dataset,
                        f"label {source} holds value(s) {', '.join(values)} "
                        f"({int(unknown.sum())} voxels); the dataset's label values are "
                        f"{list(self.allowed)}",
                        self.layout,
                    )
                )
        return d
