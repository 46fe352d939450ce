"""The calibration methods calibtut trains and compares, by name.

One vocabulary for the command line (``--loss``), the training configuration, the run
directories (``runs/<dataset>/<loss>/seed_<n>``), the reports and the figures: a new method is
added here once and every layer knows its name, title and colour. Importing this module loads
only the standard library, so ``calibtut --help`` lists the methods without loading PyTorch.

Example:
    >>> from calibtut.methods import LOSSES, method
    >>> LOSSES
    ('baseline', 'hard', 'soft')
    >>> method("soft").title
    '+ soft mL1-ACE'
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Method", "METHODS", "LOSSES", "BASELINE", "COMPARED_LOSSES", "method"]


@dataclass(frozen=True)
class Method:
    """One way of training a segmentation network, as every layer names and draws it.

    Args:
        name: the key in run paths, ``config.json`` and ``--loss``.
        title: how legends and tables name it (what it adds to the Dice+CE baseline).
        colour: its colour in every figure that compares methods.
        description: one sentence for help texts and notebooks.

    Example:
        >>> METHODS["hard"]
        Method(name='hard', title='+ hard mL1-ACE', colour='tab:blue', description=...)
        >>> [m.title for m in METHODS.values()]
        ['Dice+CE', '+ hard mL1-ACE', '+ soft mL1-ACE']
    """

    name: str
    title: str
    colour: str
    description: str


BASELINE = "baseline"

METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(BASELINE, "Dice+CE", "0.55", "Dice + cross-entropy, the paper's baseline"),
        Method(
            "hard",
            "+ hard mL1-ACE",
            "tab:blue",
            "Dice+CE + mL1-ACE with hard bins (the paper's hL1-ACE)",
        ),
        Method(
            "soft",
            "+ soft mL1-ACE",
            "tab:orange",
            "Dice+CE + mL1-ACE with soft bins (the paper's sL1-ACE)",
        ),
    )
}
"""Every method, in the order tables and legends list them (the baseline first)."""

LOSSES: tuple[str, ...] = tuple(METHODS)
"""The names of the training losses (``--loss``), baseline first."""

COMPARED_LOSSES: tuple[str, ...] = tuple(name for name in LOSSES if name != BASELINE)
"""The losses compared with the baseline in reports (percentage changes and p-values)."""


def method(name: str) -> Method:
    """The method called ``name``.

    Args:
        name: one of :data:`LOSSES`.

    Returns:
        Its :class:`Method`.

    Raises:
        ValueError: an unknown name (the message lists the known ones).

    Example:
        >>> method("baseline").title, method("hard").colour
        ('Dice+CE', 'tab:blue')
        >>> method("medium")
        Traceback (most recent call last):
        ...
        ValueError: unknown loss 'medium'; expected one of baseline, hard, soft
    """
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown loss {name!r}; expected one of {', '.join(LOSSES)}") from None
