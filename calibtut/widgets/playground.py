"""The binning playground: one probability's bins and the mL1-ACE gradient, hard or soft."""

from __future__ import annotations

import weakref
from typing import Any

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

from calibtut import views
from calibtut.widgets._common import (
    _close,
    _figure_output,
    _show,
    _tag_controls,
    _weak,
    enable_colab_widgets,
)


class BinningPlayground:
    """Which bins receive a probability, with what weight, and the mL1-ACE it feeds.

    Controls: ``value`` (the probability), ``num_bins``, ``binning`` ("hard"/"soft") and
    ``target`` (that voxel's ground truth). ``update()`` asks
    :func:`calibtut.views.binning_example` for the bin shares, the loss and its gradient on a
    small example, kept as ``weights``, ``loss`` and ``gradient``.
    """

    def __init__(
        self, value: float = 0.37, num_bins: int = 5, binning: str = "soft", target: int = 1
    ) -> None:
        enable_colab_widgets()
        # redrawn on release, not on every step of a drag (a redraw takes a few hundred ms, so
        # a drag would queue redraws and show the last one seconds late)
        self.value = widgets.FloatSlider(
            value=value,
            min=0.0,
            max=1.0,
            step=0.005,
            readout_format=".3f",
            description="p",
            continuous_update=False,
        )
        self.num_bins = widgets.IntSlider(
            value=num_bins, min=1, max=20, description="bins", continuous_update=False
        )
        self.binning = widgets.ToggleButtons(
            options=["hard", "soft"], value=binning, description="binning"
        )
        self.target = widgets.ToggleButtons(
            options=[("0", 0), ("1", 1)], value=target, description="target"
        )
        self.summary = widgets.HTML()
        self.output = widgets.Output()
        self.figure: Figure | None = None
        self.weights = torch.empty(0)
        self.gradient = torch.empty(0)
        self.loss = float("nan")
        self.widget = widgets.VBox(
            [widgets.HBox([self.value, self.num_bins]), widgets.HBox([self.binning, self.target]),
             self.summary, self.output]
        )  # fmt: skip
        self._controls = [self.value, self.num_bins, self.binning, self.target, self.summary,
                          self.output, *self.widget.children, self.widget]  # fmt: skip
        self._closer = weakref.finalize(self, _close, self._controls, [])
        for control in (self.value, self.num_bins, self.binning, self.target):
            control.observe(_weak(self, "update"), names="value")
        _tag_controls(self)
        self.update()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def close(self) -> None:
        """Close the widgets and the figure (also done when the playground is garbage-collected)."""
        if self.figure is not None:
            plt.close(self.figure)
            self.figure = None
        self._closer()

    def update(self) -> None:
        """Re-bin the value, re-evaluate loss and gradient, redraw."""
        example = views.binning_example(
            self.value.value, self.num_bins.value, self.binning.value, self.target.value
        )
        if self.figure is not None:
            plt.close(self.figure)
        self.figure, self.weights = example.figure, example.weights
        self.loss, self.gradient = example.loss, example.gradient
        shares = ", ".join(
            f"bin {k} ({w:.2f})" for k, w in enumerate(self.weights.tolist()) if w > 0
        )
        self.summary.value = (
            f"p = {self.value.value:.3f} goes to {shares}; mL1-ACE ({self.binning.value}) = "
            f"{self.loss:.4f}; ∂loss/∂p = {float(self.gradient[-1]):+.4f}"
        )
        _show(self.output, _figure_output(self.figure))


def binning_playground(
    value: float = 0.37, num_bins: int = 5, binning: str = "soft", target: int = 1
) -> widgets.Box:
    """The displayable binning playground (the box keeps it alive; ``box.close()`` ends both)."""
    playground = BinningPlayground(value, num_bins, binning, target)
    playground.widget._calibtut_explorer = playground  # type: ignore[attr-defined]
    return playground.widget
