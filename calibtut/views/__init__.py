"""Run-aware figures and tables: run directories -> prepared data -> plots.

What notebooks and explorers call to show saved runs. Each function reads the runs' results
(:meth:`calibtut.runs.RunDir.results`, cached), asks :mod:`calibtut.metrics` to prepare them
(re-binning, reliability, histograms, macro and micro errors) and hands the result to
:mod:`calibtut.plots`. Runs are given as a mapping ``{label: RunDir}`` (a loss name as label
picks that loss's colour and legend), or as a list of runs, labelled by what differs between them.

Example:
    >>> from calibtut import views
    >>> from calibtut.runs import resolve_runs
    >>> runs = views.by_loss(resolve_runs("runs/demo/synthetic"))   # doctest: +SKIP
    >>> views.dataset_histograms(runs, classes=["lesion"])           # doctest: +SKIP
"""

from __future__ import annotations

from calibtut.views._runs import Runs, by_loss, labelled, shared_classes
from calibtut.views.differences import (
    ImageDistribution,
    bin_gap_changes,
    distribution_figure,
    gap_change_figure,
    image_distribution,
)
from calibtut.views.figures import (
    dataset_histograms,
    dice_vs_ace,
    learning_curves,
    overlays,
    paired_changes,
    reliability_diagrams,
)
from calibtut.views.finding import (
    RANKINGS,
    baseline_of,
    cell_images,
    histogram_cells,
    image_ranking,
    image_values,
)
from calibtut.views.tables import class_summary, confidence_directions, image_metrics, typical_image
from calibtut.views.teaching import (
    EXAMPLE_PROBS,
    EXAMPLE_TARGETS,
    BinningExample,
    binning_example,
    floor_table,
)

__all__ = [
    "Runs",
    "by_loss",
    "labelled",
    "shared_classes",
    "learning_curves",
    "dice_vs_ace",
    "reliability_diagrams",
    "dataset_histograms",
    "overlays",
    "paired_changes",
    "typical_image",
    "class_summary",
    "confidence_directions",
    "image_metrics",
    "image_values",
    "RANKINGS",
    "image_ranking",
    "baseline_of",
    "histogram_cells",
    "cell_images",
    "floor_table",
    "bin_gap_changes",
    "gap_change_figure",
    "ImageDistribution",
    "image_distribution",
    "distribution_figure",
    "BinningExample",
    "binning_example",
    "EXAMPLE_PROBS",
    "EXAMPLE_TARGETS",
]
