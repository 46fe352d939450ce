"""Runs given as a mapping or a list, labelled; the results they share."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from calibtut.methods import LOSSES
from calibtut.runs import RunDir, RunResults, resolve_runs

Runs = Mapping[str, RunDir] | Iterable[RunDir | str]


def labelled(runs: Runs) -> dict[str, RunDir]:
    """``{label: RunDir}``: a mapping as given, or a list of runs (or paths to resolve) labelled
    by the dataset/loss/seed parts that differ between them.

    Runs of one dataset and seed are labelled by their loss, so they get the loss's colour and
    legend; where the parts cannot tell two runs apart, their paths label them.

    Args:
        runs: ``{label: RunDir}``, or runs, paths of runs or folders of runs
            (:func:`calibtut.runs.resolve_runs`).

    Returns:
        ``{label: RunDir}`` in the order given.

    Raises:
        ValueError: no runs, or a path that is not an evaluated run.
        FileNotFoundError: a path that is neither a run nor a folder of runs.

    Example:
        >>> list(labelled("runs/demo/synthetic"))                 # doctest: +SKIP
        ['baseline', 'hard', 'soft']
    """
    if isinstance(runs, Mapping):
        if not runs:
            raise ValueError("runs must not be empty.")
        return {str(label): _as_run(run) for label, run in runs.items()}
    found = resolve_runs(list(runs) if not isinstance(runs, RunDir | str) else runs)
    parts = [
        (str(c.get("dataset", "?")), str(c.get("loss", "?")), f"seed_{c.get('seed', '?')}")
        for c in (run.config for run in found)
    ]
    varying = [i for i in range(3) if len({p[i] for p in parts}) > 1] or [1]
    labels = ["/".join(p[i] for i in varying) for p in parts]
    if len(set(labels)) < len(labels):
        labels = [str(run.path) for run in found]
    return dict(zip(labels, found, strict=True))


def by_loss(runs: Iterable[RunDir], seed: int | None = None) -> dict[str, RunDir]:
    """The runs keyed by loss, in the methods' order (the lowest seed of each, or ``seed``).

    Args:
        runs: the runs to choose from.
        seed: take each loss's run of this seed (None: its lowest seed).

    Returns:
        ``{loss: RunDir}``, baseline first (:data:`calibtut.methods.LOSSES`).

    Example:
        >>> from calibtut.runs import find_runs
        >>> by_loss(find_runs("runs/demo"), seed=0)               # doctest: +SKIP
        {'baseline': RunDir('runs/demo/synthetic/baseline/seed_0'), ...}

    Taught in notebooks/08_exploring_reliability.
    """
    chosen: dict[str, RunDir] = {}
    for run in sorted(runs, key=lambda r: int(r.config.get("seed", 0))):
        config = run.config
        if seed is None or int(config.get("seed", -1)) == seed:
            chosen.setdefault(str(config["loss"]), run)
    order = [n for n in LOSSES if n in chosen] + [n for n in chosen if n not in LOSSES]
    return {loss: chosen[loss] for loss in order}


def _as_run(run: RunDir | str) -> RunDir:
    return run if isinstance(run, RunDir) else RunDir(run)


def _results(runs: Runs) -> dict[str, RunResults]:
    return {label: run.results() for label, run in labelled(runs).items()}


def shared_classes(results: Mapping[str, RunResults]) -> list[str]:
    """The scored classes of runs shown together; they must score the same ones.

    Args:
        results: ``{label: RunResults}`` of the runs.

    Returns:
        The class names, in the order of the bins' class axis.

    Raises:
        ValueError: the runs score different classes.
    """
    names = {label: tuple(r.class_names) for label, r in results.items()}
    if len(set(names.values())) != 1:
        raise ValueError(f"runs shown together must score the same classes, got {names}.")
    return list(next(iter(names.values())))


def _class_positions(classes: Sequence[str] | None, names: Sequence[str]) -> list[int] | None:
    if classes is None:
        return None
    if isinstance(classes, str):
        classes = [classes]
    unknown = [c for c in classes if c not in names]
    if unknown:
        raise ValueError(f"classes {unknown} are not among the scored classes {list(names)}.")
    return [list(names).index(c) for c in classes]
