"""The reference docstrings: their examples run, every public object documents its arguments and
what it returns (the core also shows an example), and each "Taught in" names a real notebook."""

from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import calibtut.metrics
import calibtut.plots
import calibtut.runs

ROOT = Path(__file__).resolve().parents[1]

CORE = ["calibtut.binning", "calibtut.losses", "calibtut.metrics"]
"""The core: every public function and class there shows a running example."""

DOCTESTED = [
    "calibtut.binning",
    "calibtut.losses",
    "calibtut.metrics",
    *(f"calibtut.metrics.{m.name}" for m in pkgutil.iter_modules(calibtut.metrics.__path__)),
    "calibtut.methods",
    "calibtut.train.config",
]
"""Modules whose examples must run (every submodule of metrics, found, not listed)."""

ALSO_DOCTESTED = [
    "calibtut.views",
    *(f"calibtut.runs.{m.name}" for m in pkgutil.iter_modules(calibtut.runs.__path__)),
    *(f"calibtut.plots.{m.name}" for m in pkgutil.iter_modules(calibtut.plots.__path__)),
]
"""Modules whose examples need files or runs (mostly ``+SKIP``): what runs must pass."""

DOCUMENTED = [*CORE, "calibtut.methods", "calibtut.runs", "calibtut.views", "calibtut.plots"]
"""Modules whose public functions and classes (``__all__``) need Args/Returns sections."""

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


@pytest.mark.parametrize("name", DOCTESTED)
def test_doctests_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=FLAGS)  # failures are printed (pytest shows them)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {name} failed"
    assert result.attempted >= 1, f"{name} has no example (>>>) to run"


@pytest.mark.parametrize("name", ALSO_DOCTESTED)
def test_other_examples_that_run_pass(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=FLAGS)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {name} failed"


def _section(doc: str, *names: str) -> bool:
    return any(re.search(rf"^\s*{name}:\s*$", doc, re.MULTILINE) for name in names)


def _parameters(function) -> list[str]:
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):  # a builtin without a signature
        return []
    return [p for p in parameters if p not in ("self", "cls")]


def _returns_something(function) -> bool:
    annotation = inspect.signature(function).return_annotation
    return annotation not in (None, "None")  # a missing annotation counts as returning something


def _problems(doc: str | None, function, is_function: bool) -> list[str]:
    doc = inspect.cleandoc(doc or "")
    if not doc:
        return ["no docstring"]
    problems = []
    if _parameters(function) and not _section(doc, "Args"):
        problems.append("no Args: section")
    if is_function and _returns_something(function) and not _section(doc, "Returns", "Yields"):
        problems.append("no Returns: section")
    return problems


def _has_example(doc: str | None) -> bool:
    doc = inspect.cleandoc(doc or "")
    return _section(doc, "Example", "Examples") and ">>>" in doc


def _public_methods(cls) -> dict[str, object]:
    """Public methods defined by ``cls`` or its calibtut base classes (``forward`` included)."""
    methods: dict[str, object] = {}
    for base in cls.__mro__:
        if not base.__module__.startswith("calibtut"):
            continue
        for name, raw in vars(base).items():
            if name.startswith("_") or name in methods or isinstance(raw, property):
                continue
            if isinstance(raw, staticmethod | classmethod) or inspect.isfunction(raw):
                methods[name] = getattr(cls, name)
    return methods


def _offenders(module_name: str) -> list[str]:
    module = importlib.import_module(module_name)
    core = module_name in CORE
    found = []
    for name in module.__all__:
        obj = getattr(module, name)
        where = f"{module_name}.{name}"
        if inspect.isfunction(obj):
            problems = _problems(obj.__doc__, obj, is_function=True)
        elif inspect.isclass(obj):
            init = vars(obj).get("__init__")
            doc = "\n".join(d for d in (obj.__doc__, getattr(init, "__doc__", None)) if d)
            problems = _problems(doc, obj, is_function=False)
            for method_name, method in _public_methods(obj).items():
                found += [
                    f"{where}.{method_name}: {p}"
                    for p in _problems(method.__doc__, method, is_function=True)
                ]
        else:
            continue  # constants and type aliases
        if core and not _has_example(obj.__doc__):
            problems.append("no Example: section with >>> lines")
        found += [f"{where}: {p}" for p in problems]
    return found


def test_public_objects_have_reference_docstrings():
    offenders = [line for module in DOCUMENTED for line in _offenders(module)]
    assert not offenders, "docstrings missing sections:\n  " + "\n  ".join(offenders)


def test_taught_in_names_real_notebooks():
    notebooks = {p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.py")}
    assert notebooks, "no notebooks found"
    unknown = []
    for path in sorted((ROOT / "calibtut").rglob("*.py")):
        for sentence in re.findall(r"Taught in notebooks/(.*?)\.(?:\s|$)", path.read_text(), re.S):
            for name in re.findall(r"\b\d\d_[a-z_]+[a-z]", sentence):
                if name not in notebooks:
                    unknown.append(f"{path.relative_to(ROOT)}: {name}")
    assert not unknown, "Taught in names notebooks that do not exist:\n  " + "\n  ".join(unknown)
