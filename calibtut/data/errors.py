"""Errors about a dataset on disk.

Every message names the dataset, the offending file or folder, the layout calibtut
expects and where to read how to get the data, so a user can fix their folder without
reading the loader's code.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

README = "data/README.md"


class InvalidCaseError(ValueError):
    """A case whose files exist but contradict the dataset: shape, affine or label values."""


def describe(dataset: str, problem: str, layout: str) -> str:
    """The full message for `problem` in `dataset`, with its expected layout and the README."""
    return (
        f"{dataset}: {problem}\n"
        f"Expected layout of {dataset}:\n{textwrap.indent(layout.strip(), '    ')}\n"
        f"See {README} (section '{dataset}') for where to get the data and how to lay it out."
    )


def check_pairs(
    problem: Callable[[str], str],
    images: dict[str, Path],
    labels: dict[str, Path],
    expected_label: Callable[[str], Path],
) -> None:
    """Every image (by key) has its label and every label its image, else a FileNotFoundError
    naming the first offending file (and, for a missing label, where it was looked for)."""
    unlabelled = sorted(images.keys() - labels.keys())
    if unlabelled:
        key = unlabelled[0]
        raise FileNotFoundError(
            problem(f"image without its label: {images[key]} (expected {expected_label(key)})")
        )
    orphans = sorted(labels.keys() - images.keys())
    if orphans:
        raise FileNotFoundError(problem(f"label without its image: {labels[orphans[0]]}"))
