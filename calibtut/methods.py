"""The calibration methods calibtut trains and compares, by name.

One vocabulary for the command line (``--loss``), the training configuration, the run
directories (``runs/<dataset>/<method>/seed_<n>``), the reports and the figures: a new method is
added here once and every layer knows its name, title and colour. Importing this module loads
only the standard library, so ``calibtut --help`` lists the methods without loading PyTorch.

Two kinds of method:

* **training losses** (:data:`TRAINING_LOSSES`, ``calibtut train --loss``): the paper's three
  (:data:`LOSSES`: the Dice+CE baseline, + hard and + soft mL1-ACE), and the other calibration
  losses of the segmentation literature, each added to the same Dice+CE with the paper's weights;
* **post-hoc methods** (:data:`POSTHOC`, ``calibtut evaluate``), applied to a finished run of a
  training loss; the result is a run directory named ``<loss>+<post-hoc>``, e.g.
  ``baseline+temperature``, that every table, figure and explorer reads like the others.

Example:
    >>> from calibtut.methods import LOSSES, TRAINING_LOSSES, method
    >>> LOSSES
    ('baseline', 'hard', 'soft')
    >>> TRAINING_LOSSES[3:]
    ('focal', 'label_smoothing', 'nacl', 'svls', 'mbls', 'mdca')
    >>> method("soft").title, method("baseline+temperature").title
    ('+ soft mL1-ACE', 'Dice+CE, T-scaled')
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "Method",
    "METHODS",
    "LOSSES",
    "TRAINING_LOSSES",
    "POSTHOC",
    "BASELINE",
    "COMPARED_LOSSES",
    "method",
    "posthoc_name",
    "ordered",
]


@dataclass(frozen=True)
class Method:
    """One way of getting a calibrated segmentation network, as every layer names and draws it.

    Args:
        name: the key in run paths, ``config.json`` and ``--loss``.
        title: how legends and tables name it (what it adds to the Dice+CE baseline).
        colour: its colour in every figure that compares methods.
        description: one sentence for help texts and notebooks.
        kind: ``"loss"`` (a training loss) or ``"posthoc"`` (applied to a finished run).
        softmax_only: the loss is defined for a softmax over exclusive labels only.
        reference: where the method comes from.
        options: the loss's options and their defaults, as ``(name, value)`` pairs (a tuple, so
            that a method stays hashable): what ``--loss-option`` may change and ``config.json``
            records. They are the defaults of :data:`calibtut.losses.TERMS` (kept here too, so
            that the command line checks them without loading PyTorch).

    Example:
        >>> METHODS["hard"]
        Method(name='hard', title='+ hard mL1-ACE', colour='tab:blue', description=...)
        >>> [m.title for m in METHODS.values()][:3]
        ['Dice+CE', '+ hard mL1-ACE', '+ soft mL1-ACE']
    """

    name: str
    title: str
    colour: str
    description: str
    kind: str = "loss"
    softmax_only: bool = False
    reference: str = ""
    options: tuple[tuple[str, float], ...] = ()


BASELINE = "baseline"

_TRAINED = (
    Method(BASELINE, "Dice+CE", "0.55", "Dice + cross-entropy, the paper's baseline"),
    Method(
        "hard",
        "+ hard mL1-ACE",
        "tab:blue",
        "Dice+CE + mL1-ACE with hard bins (the paper's hL1-ACE)",
        reference="Barfoot et al., arXiv 2506.03942",
    ),
    Method(
        "soft",
        "+ soft mL1-ACE",
        "tab:orange",
        "Dice+CE + mL1-ACE with soft bins (the paper's sL1-ACE)",
        reference="Barfoot et al., arXiv 2506.03942",
    ),
    Method(
        "focal",
        "Dice + focal",
        "tab:green",
        "Dice + focal loss (gamma 3) in place of the cross-entropy",
        options=(("gamma", 3.0),),
        softmax_only=True,
        reference="Lin et al., ICCV 2017; Mukhoti et al., NeurIPS 2020",
    ),
    Method(
        "label_smoothing",
        "Dice + smoothed CE",
        "tab:red",
        "Dice + cross-entropy against labels smoothed by 0.1",
        options=(("smoothing", 0.1),),
        softmax_only=True,
        reference="Szegedy et al., CVPR 2016; Müller et al., NeurIPS 2019",
    ),
    Method(
        "nacl",
        "Dice + NACL",
        "tab:purple",
        "Dice + CE with a neighbour-aware penalty on the logits (3x3 mean, weight 0.1)",
        options=(("kernel_size", 3), ("alpha", 0.1)),
        softmax_only=True,
        reference="Murugesan et al., MICCAI 2023 / MedIA 2024",
    ),
    Method(
        "svls",
        "Dice + SVLS",
        "tab:brown",
        "Dice + CE against labels blurred by a Gaussian (sigma 1, 3x3(x3) kernel)",
        options=(("kernel_size", 3), ("sigma", 1.0)),
        softmax_only=True,
        reference="Islam and Glocker, IPMI 2021",
    ),
    Method(
        "mbls",
        "Dice + MbLS",
        "tab:pink",
        "Dice + CE with a penalty on logit margins above 10 (weight 0.1)",
        options=(("margin", 10.0), ("alpha", 0.1)),
        softmax_only=True,
        reference="Liu et al., CVPR 2022; Murugesan et al., MedIA 2023",
    ),
    Method(
        "mdca",
        "+ MDCA",
        "tab:olive",
        "Dice+CE + MDCA, which is mL1-ACE with a single bin",
        reference="Hebbalaguppe et al., CVPR 2022",
    ),
)
_POSTHOC = (
    Method(
        "temperature",
        "T-scaled",
        "tab:cyan",
        "one temperature dividing the logits, fitted by validation NLL",
        kind="posthoc",
        reference="Guo et al., ICML 2017",
    ),
    Method(
        "vector_temperature",
        "vector T-scaled",
        "#1b4f72",
        "one temperature per class, fitted by validation NLL",
        kind="posthoc",
        reference="Guo et al., ICML 2017",
    ),
    Method(
        "ensemble",
        "ensemble of seeds",
        "black",
        "the probabilities of several seeds' runs averaged",
        kind="posthoc",
        reference="Lakshminarayanan et al., NeurIPS 2017; Mehrtash et al., IEEE TMI 2020",
    ),
)

TRAINING_LOSSES: tuple[str, ...] = tuple(m.name for m in _TRAINED)
"""Every training loss (``calibtut train --loss``), the baseline first."""

LOSSES: tuple[str, ...] = TRAINING_LOSSES[:3]
"""The paper's three losses (baseline, hard, soft): what ``make demo`` and notebooks 00 and 03
train, and what the paper's published results hold."""

POSTHOC: tuple[str, ...] = tuple(m.name for m in _POSTHOC)
"""The post-hoc methods, applied to a finished run of a training loss."""


def posthoc_name(loss: str, posthoc: str) -> str:
    """The name of a post-hoc method applied to a run of ``loss``: ``<loss>+<posthoc>``.

    Args:
        loss: one of :data:`TRAINING_LOSSES`.
        posthoc: one of :data:`POSTHOC`.

    Returns:
        The method's name (its run directories' ``<method>`` folder).

    Raises:
        ValueError: an unknown loss or post-hoc method.

    Example:
        >>> posthoc_name("hard", "ensemble")
        'hard+ensemble'
    """
    if loss not in TRAINING_LOSSES:
        raise ValueError(f"unknown loss {loss!r}; expected one of {', '.join(TRAINING_LOSSES)}")
    if posthoc not in POSTHOC:
        raise ValueError(
            f"unknown post-hoc method {posthoc!r}; expected one of {', '.join(POSTHOC)}"
        )
    return f"{loss}+{posthoc}"


def _combined(loss: Method, posthoc: Method) -> Method:
    return Method(
        posthoc_name(loss.name, posthoc.name),
        f"{loss.title}, {posthoc.title}",
        posthoc.colour,
        f"{posthoc.description}, applied to {loss.name} runs",
        kind="posthoc",
        softmax_only=loss.softmax_only,
        reference=posthoc.reference,
    )


METHODS: dict[str, Method] = {
    m.name: m for m in (*_TRAINED, *(_combined(loss, p) for p in _POSTHOC for loss in _TRAINED))
}
"""Every method, in the order tables and legends list them: the training losses (the baseline
first), then every post-hoc method applied to each of them."""

COMPARED_LOSSES: tuple[str, ...] = tuple(name for name in METHODS if name != BASELINE)
"""The methods compared with the baseline in reports (percentage changes and p-values)."""


def method(name: str) -> Method:
    """The method called ``name``.

    Args:
        name: one of :data:`METHODS`: a training loss, or ``<loss>+<post-hoc>``.

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
        ValueError: unknown method 'medium'; expected a loss (baseline, hard, soft, focal, label_smoothing, nacl, svls, mbls, mdca) or <loss>+<post-hoc> (temperature, vector_temperature, ensemble)
    """
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown method {name!r}; expected a loss ({', '.join(TRAINING_LOSSES)}) or "
            f"<loss>+<post-hoc> ({', '.join(POSTHOC)})"
        ) from None


def ordered(names: Iterable[str]) -> list[str]:
    """``names`` (once each) in the order of :data:`METHODS`, any other name after them.

    The one order of methods in tables and legends.

    Args:
        names: method names, in any order, repeats allowed.

    Returns:
        The distinct names, known methods first in :data:`METHODS` order.

    Example:
        >>> ordered(["baseline+temperature", "soft", "mine", "baseline", "soft"])
        ['baseline', 'soft', 'baseline+temperature', 'mine']
    """
    distinct = list(dict.fromkeys(names))
    rank = {name: i for i, name in enumerate(METHODS)}
    return sorted(distinct, key=lambda n: (rank.get(n, len(rank)), distinct.index(n)))
