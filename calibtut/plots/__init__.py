"""Figures: reliability diagrams, dataset reliability histograms, image overlays, training and
paper figures, in one house style.

Plots draw what :mod:`calibtut.metrics` prepares (reliability, dataset histograms) and what
:mod:`calibtut.views` and :mod:`calibtut.paper` hand them (frames, saved arrays); they compute no
calibration and read no run directory (the run-aware figures are :mod:`calibtut.views`). Every
function returns a :class:`matplotlib.figure.Figure`, takes ``fig=`` (or ``ax=`` for one panel)
so that figures compose, and never calls ``plt.show()``; :func:`save_figure` writes PNG and PDF.

    style.py        the house style, colours, layouts, save_figure
    reliability.py  per-image reliability diagrams, dataset reliability histograms
    overlays.py     image, ground truth, prediction, confidence and errors
    training.py     learning curves, Dice vs ACE, per-image distributions and paired changes
    losses.py       the binning figure and gradient maps
    differences.py  a loss against its baseline: per-bin gap changes, per-image distributions
"""

from calibtut.plots.differences import (
    draw_gap_changes,
    plot_gap_changes,
    plot_image_distribution,
)
from calibtut.plots.losses import binning_figure, plot_gradient_maps
from calibtut.plots.overlays import (
    OVERLAY_KEYS,
    busiest_slice,
    compare_image_overlays,
    image_overlay,
    overlay_layout,
    slice_count,
    slice_shape,
)
from calibtut.plots.reliability import (
    compare_dataset_reliability_histograms,
    compare_reliability_diagrams,
    dataset_reliability_histograms,
    draw_dataset_histogram,
    draw_reliability,
    reliability_diagram,
)
from calibtut.plots.style import (
    CLASS_COLOURS,
    COLOURS,
    HISTOGRAM_NORMS,
    LOSS_COLOURS,
    LOSS_TITLES,
    STYLE,
    new_figure,
    save_figure,
    style,
    styled,
)
from calibtut.plots.training import (
    plot_dice_vs_ace,
    plot_learning_curves,
    plot_paired_changes,
    plot_per_image_distributions,
)

__all__ = [
    "STYLE",
    "COLOURS",
    "CLASS_COLOURS",
    "LOSS_COLOURS",
    "LOSS_TITLES",
    "HISTOGRAM_NORMS",
    "OVERLAY_KEYS",
    "style",
    "styled",
    "new_figure",
    "save_figure",
    "reliability_diagram",
    "compare_reliability_diagrams",
    "draw_reliability",
    "dataset_reliability_histograms",
    "compare_dataset_reliability_histograms",
    "draw_dataset_histogram",
    "overlay_layout",
    "slice_count",
    "slice_shape",
    "busiest_slice",
    "image_overlay",
    "compare_image_overlays",
    "binning_figure",
    "plot_gradient_maps",
    "plot_learning_curves",
    "plot_dice_vs_ace",
    "plot_per_image_distributions",
    "plot_paired_changes",
    "plot_gap_changes",
    "draw_gap_changes",
    "plot_image_distribution",
]
