"""Interactive explorers (ipywidgets 8) over run directories, and a binning playground.

Widgets hold no maths and never train: they resolve runs with :mod:`calibtut.runs`, ask
:mod:`calibtut.views` for every figure and table, and show them. Figures are rendered to PNG into
:class:`ipywidgets.Output` areas, so they need no front-end extension beyond ipywidgets' own and
work in JupyterLab, Notebook, Binder and (after :func:`enable_colab_widgets`) Colab.

Each explorer is a small class whose controls are attributes and whose ``update()`` redraws, so
code (and tests) can drive it; its ``widget`` is the box to display (or display the explorer
itself). Each control carries the CSS class ``calibtut-<attribute>`` (``calibtut-sort``,
``calibtut-zoom-rows``...), what the browser test finds them by. Rendered images of the last few control states are kept (as PNG bytes, not figures), so
moving a control back costs nothing; :meth:`close` releases everything, and so does dropping the
explorer (running its notebook cell again): widget callbacks hold it only weakly.
"""

from __future__ import annotations

from calibtut.widgets._common import ALL_CLASSES, enable_colab_widgets
from calibtut.widgets.dataset import DatasetExplorer, dataset_explorer
from calibtut.widgets.images import ImageExplorer, image_explorer
from calibtut.widgets.playground import BinningPlayground, binning_playground

__all__ = [
    "enable_colab_widgets",
    "BinningPlayground",
    "ImageExplorer",
    "DatasetExplorer",
    "binning_playground",
    "image_explorer",
    "dataset_explorer",
    "ALL_CLASSES",
]
