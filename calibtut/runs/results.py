"""A run's test results: the schema of ``per_image.csv``, the results read once, and the paper's
per-image means."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from calibtut.binning import BinStats

if TYPE_CHECKING:
    from calibtut.metrics import FloorDraws, ImageResults

__all__ = [
    "PER_IMAGE_COLUMNS",
    "FLOOR_COLUMNS",
    "SCORE_COLUMNS",
    "IMAGE_METRICS",
    "RunResults",
    "image_means",
    "per_image_table",
    "read_results",
]

PER_IMAGE_COLUMNS = ("image_id", "class_index", "class_name", "dice", "ece", "ace", "mce", "empty")
"""The columns every ``per_image.csv`` has: the one definition of its schema."""
FLOOR_COLUMNS = ("ace_floor", "mce_floor")
"""The noise-floor columns evaluation adds (:func:`calibtut.metrics.noise_floor`)."""
SCORE_COLUMNS = ("brier", "nll", "equal_mass_ece")
"""The bin-free scores evaluation adds (:func:`calibtut.metrics.image_scores`): Brier score,
NLL and the ECE over equal-mass bins. Runs evaluated before calibtut saved them lack the
columns; readers treat them as missing (reports say "n/a"), never as NaN values."""

IMAGE_METRICS = ("dice", "ece", "ace", "mce")
"""The per-image metrics of ``per_image.csv``, in the order tables show them."""


@dataclass(frozen=True)
class RunResults:
    """An evaluated run's test results, read once: what every table, figure and explorer uses.

    Args:
        bins: per image and scored class bins ``(images, classes, num_bins)``.
        image_ids: the images along the bins' first axis.
        class_names: the scored classes along the bins' class axis.
        class_indices: each scored class's output channel (``per_image.csv``'s ``class_index``).
        per_image: ``per_image.csv`` (:data:`PER_IMAGE_COLUMNS`, :data:`FLOOR_COLUMNS` when
            the run was evaluated with noise floors, :data:`SCORE_COLUMNS` when with scores).
        draws: the label draws behind the noise floors (None without them).

    Results are shared by everyone who reads the run (they are cached): treat them as read-only.

    Example:
        >>> results = RunDir("runs/demo/synthetic/soft/seed_0").results()   # doctest: +SKIP
        >>> results.rebinned(10).num_bins, results.class_names               # doctest: +SKIP
        (10, ['organ', 'ring', 'lesion'])

    Taught in notebooks/08_exploring_reliability.
    """

    bins: BinStats
    image_ids: list[str]
    class_names: list[str]
    class_indices: list[int]
    per_image: pd.DataFrame
    draws: FloorDraws | None = None
    _rebinned: dict[int, BinStats] = field(default_factory=dict, repr=False, compare=False)

    def image(self, image_id: str) -> int:
        """The position of ``image_id`` along the bins' image axis.

        Args:
            image_id: a test image of the run.

        Returns:
            Its index into :attr:`image_ids` (and the bins' first axis).

        Raises:
            ValueError: the run has no such test image.
        """
        try:
            return self.image_ids.index(image_id)
        except ValueError:
            raise ValueError(f"no test image {image_id!r} in these results") from None

    def rebinned(self, num_bins: int | None) -> BinStats:
        """The bins merged to ``num_bins`` (a divisor of the saved number; None: as saved).

        Re-binned bins are cached with the results.

        Args:
            num_bins: the coarser number of bins, or None.

        Returns:
            :class:`~calibtut.binning.BinStats` ``(images, classes, num_bins)``.

        Raises:
            ValueError: ``num_bins`` does not divide the saved number of bins.
        """
        if num_bins is None or num_bins == self.bins.num_bins:
            return self.bins
        if num_bins not in self._rebinned:
            self._rebinned[num_bins] = self.bins.rebinned(num_bins)
        return self._rebinned[num_bins]

    def rebinned_draws(self, num_bins: int | None) -> FloorDraws | None:
        """The floor's label draws merged to ``num_bins`` (None: as saved; None without draws).

        Args:
            num_bins: the coarser number of bins, or None.

        Returns:
            :class:`~calibtut.metrics.FloorDraws`, or None when the run saved no floors.

        Raises:
            ValueError: ``num_bins`` does not divide the saved number of bins.
        """
        if self.draws is None or num_bins is None or num_bins == self.bins.num_bins:
            return self.draws
        return self.draws.rebinned(num_bins)

    def image_means(self) -> pd.DataFrame:
        """Per test image the paper's class means of each metric (see :func:`image_means`).

        Returns:
            One row per image (index ``image_id``), one column per metric.

        Taught in notebooks/08_exploring_reliability.
        """
        return image_means(self.per_image)


def image_means(per_image: pd.DataFrame) -> pd.DataFrame:
    """Per image, each metric averaged over classes as the paper does: the one home of it.

    Calibration errors are defined for every class, so ECE/ACE/MCE (and their noise floors)
    average all scored classes, those absent from the image included; Dice averages the classes
    present (not ``empty``). NaN values are skipped in both.

    Args:
        per_image: a ``per_image.csv`` table.

    Returns:
        One row per image (index ``image_id``, in the table's order), one column per metric.

    Example:
        Image a holds both classes, image b only the first: b's Dice is its first class's alone,
        while its ACE averages both classes.

        >>> import pandas as pd
        >>> table = pd.DataFrame({
        ...     "image_id": ["a", "a", "b", "b"], "class_index": [1, 2, 1, 2],
        ...     "class_name": ["x", "y", "x", "y"], "dice": [0.8, 0.6, 0.9, float("nan")],
        ...     "ace": [0.1, 0.3, 0.2, 0.4], "empty": [False, False, False, True],
        ... })
        >>> image_means(table).round(2)
                  dice  ace
        image_id
        a          0.7  0.2
        b          0.9  0.3

    Taught in notebooks/08_exploring_reliability.
    """
    empty = per_image["empty"].astype(bool)
    metrics = [
        m for m in per_image.columns if m not in ("image_id", "class_index", "class_name", "empty")
    ]
    by_image = per_image.groupby("image_id", sort=False)
    means = by_image[[m for m in metrics if m != "dice"]].mean()
    means.insert(
        0, "dice", per_image["dice"].where(~empty).groupby(per_image["image_id"], sort=False).mean()
    )
    return means


def per_image_table(
    results: ImageResults,
    image_ids: list[str],
    class_names: list[str],
    class_indices: list[int],
) -> pd.DataFrame:
    """``per_image.csv`` of some images' results: one row per image and scored class.

    Args:
        results: the images' results, ``(images, scored classes)``.
        image_ids: one id per image.
        class_names: the scored classes, in the order of the results' class axis.
        class_indices: their output channels.

    Returns:
        The table: :data:`PER_IMAGE_COLUMNS`, then :data:`FLOOR_COLUMNS` when the results
        hold noise floors, then :data:`SCORE_COLUMNS` when they hold scores.

    Raises:
        ValueError: the ids, names or channels do not fit the results.
    """
    B, C = results.dice.shape
    if len(image_ids) != B or len(class_names) != C or len(class_indices) != C:
        raise ValueError(
            f"Need {B} image ids and {C} class names and channels, got {len(image_ids)}, "
            f"{len(class_names)} and {len(class_indices)}."
        )
    columns = {
        "dice": results.dice,
        "ece": results.errors.ece,
        "ace": results.errors.ace,
        "mce": results.errors.mce,
    }
    if results.floor is not None:
        columns.update(ace_floor=results.floor.ace, mce_floor=results.floor.mce)
    if results.scores is not None:
        columns.update({k: getattr(results.scores, k) for k in SCORE_COLUMNS})
    values = {k: v.detach().double().cpu().numpy().ravel() for k, v in columns.items()}
    return pd.DataFrame(
        {
            "image_id": np.repeat(np.asarray(image_ids, dtype=object), C),
            "class_index": np.tile(np.asarray(class_indices, dtype=np.int64), B),
            "class_name": np.tile(np.asarray(class_names, dtype=object), B),
            **{k: values[k] for k in ("dice", "ece", "ace", "mce")},
            "empty": results.empty.detach().cpu().numpy().ravel().astype(bool),
            **{k: values[k] for k in (*FLOOR_COLUMNS, *SCORE_COLUMNS) if k in values},
        }
    )


@lru_cache(maxsize=64)
def read_results(path: str, _stamps: tuple) -> RunResults:
    """The results of the run at ``path``, cached by the result files' times and sizes.

    Args:
        path: the run directory (resolved).
        _stamps: the result files' modification times and sizes (the cache key).

    Returns:
        :class:`RunResults`.

    Raises:
        ValueError: the files are damaged or do not belong together.
    """
    from calibtut.runs.rundir import RunDir

    run = RunDir(path)
    run_id = run.run_id
    arrays = _read_bins(run)
    if str(arrays.get("run_id", "")) != run_id:
        raise ValueError(
            f"{run.bins_path} belongs to another run (run_id {arrays.get('run_id', 'missing')}, "
            f"while {run.config_path} is run {run_id}): evaluate the run again"
        )
    bins = BinStats(*(torch.from_numpy(arrays[k]) for k in ("pred_sum", "target_sum", "count")))
    image_ids = [str(i) for i in arrays["image_ids"]]
    class_names = [str(c) for c in arrays["class_names"]]
    class_indices = [int(i) for i in arrays["class_indices"]]
    draws = None
    if "floor_target_sums" in arrays:
        from calibtut.metrics import FloorDraws

        draws = FloorDraws(torch.from_numpy(arrays["floor_target_sums"]))
    _check_bins(run, bins, image_ids, class_names, class_indices, draws)
    per_image = _read_per_image(run, bins, image_ids, class_names)
    return RunResults(bins, image_ids, class_names, class_indices, per_image, draws)


_BIN_ARRAYS = ("pred_sum", "target_sum", "count", "image_ids", "class_names", "class_indices")


def _read_bins(run) -> dict[str, np.ndarray]:
    """Every array of ``bins.npz``, or one error naming the file (a truncated or foreign file)."""
    try:
        with np.load(run.bins_path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as err:  # BadZipFile, zlib.error, EOFError, ValueError (pickles), ...
        raise ValueError(
            f"{run.bins_path} is not a readable bins file ({type(err).__name__}: {err}): "
            "evaluate the run again"
        ) from err
    missing = [k for k in _BIN_ARRAYS if k not in arrays]
    if missing:
        raise ValueError(f"{run.bins_path} lacks arrays {missing}: evaluate the run again")
    return arrays


def _check_bins(run, bins, image_ids, class_names, class_indices, draws) -> None:
    """The bins are sums of probabilities and labels over counted voxels, and fit the run."""
    where = run.bins_path
    shape = tuple(bins.count.shape)
    if len(shape) != 3 or shape[:2] != (len(image_ids), len(class_names)):
        raise ValueError(
            f"{where}: bins of shape {shape} do not fit {len(image_ids)} images and "
            f"{len(class_names)} classes"
        )
    if any(tuple(a.shape) != shape for a in (bins.pred_sum, bins.target_sum)):
        raise ValueError(f"{where}: pred_sum, target_sum and count differ in shape")
    if not torch.isfinite(bins.count).all() or (bins.count < 0).any():
        raise ValueError(f"{where}: count holds negative or non-finite values")
    for name, values in (("pred_sum", bins.pred_sum), ("target_sum", bins.target_sum)):
        slack = 1e-6 * bins.count.double() + 1e-6
        if (
            not torch.isfinite(values).all()
            or (values < -slack).any()
            or (values.double() > bins.count.double() + slack).any()
        ):
            raise ValueError(f"{where}: {name} holds values outside [0, count] (or NaN)")
    if len(set(image_ids)) != len(image_ids) or len(set(class_names)) != len(class_names):
        raise ValueError(f"{where}: image_ids and class_names must be distinct")
    if len(class_indices) != len(class_names):
        raise ValueError(
            f"{where} holds {len(class_indices)} class_indices for {len(class_names)} classes."
        )
    channels = run.config.get("class_names")
    for index, name in zip(class_indices, class_names, strict=True):
        if channels is not None and (index >= len(channels) or channels[index] != name):
            raise ValueError(
                f"{where} puts class {name!r} at output channel {index}, but "
                f"{run.config_path} names the channels {channels}."
            )
    sums = None if draws is None else tuple(draws.target_sums.shape)
    if sums is not None and (len(sums) != 4 or sums[:2] + sums[3:] != shape):
        raise ValueError(f"{where}: floor_target_sums do not fit the bins {shape}")


def _read_per_image(run, bins, image_ids, class_names) -> pd.DataFrame:
    """``per_image.csv``, checked: its columns, its numbers, and one row per image and class of
    the bins it was written with."""
    where = run.per_image_path
    try:
        per_image = pd.read_csv(where, dtype={"image_id": str, "class_name": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(
            f"{where} is not a readable table ({err}): evaluate the run again"
        ) from err
    missing = [c for c in PER_IMAGE_COLUMNS if c not in per_image.columns]
    if missing:
        raise ValueError(f"{where} lacks columns {missing}; expected {PER_IMAGE_COLUMNS}.")
    for column in [*IMAGE_METRICS, "class_index", *FLOOR_COLUMNS, *SCORE_COLUMNS]:
        if column in per_image.columns and not pd.api.types.is_numeric_dtype(per_image[column]):
            bad = (
                pd.to_numeric(per_image[column], errors="coerce").isna() & per_image[column].notna()
            )
            row = int(np.flatnonzero(bad.to_numpy())[0]) + 2 if bad.any() else "?"
            raise ValueError(f"{where}: column {column!r} holds text (line {row})")
    if per_image["empty"].dtype != bool:
        raise ValueError(f"{where}: column 'empty' must hold True/False")
    expected = pd.MultiIndex.from_product([image_ids, class_names])
    found = pd.MultiIndex.from_frame(per_image[["image_id", "class_name"]])
    if len(per_image) != len(expected) or not found.sort_values().equals(expected.sort_values()):
        raise ValueError(
            f"{where} does not hold one row per image and class of {run.bins_path} "
            f"({len(per_image)} rows for {len(image_ids)} images x {len(class_names)} classes)"
        )
    return per_image
