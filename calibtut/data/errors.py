"""Errors about a dataset on disk.

Every message names the dataset, the offending file or folder, the layout calibtut
expects and where to read how to get the data, so a user can fix their folder without
reading the loader's code.
"""

from __future__ import annotations

import textwrap

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
