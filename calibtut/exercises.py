"""Self-checking exercises for the course: ``check()``, ``hint()`` and ``solution()``.

Modelled on Kaggle's learntools. An exercise runs the student's answer on cases the student does
not see and compares it with calibtut's own computation (or a float64 formula). When the answer
is wrong it looks for the usual mistakes (an ACE over every bin, an unweighted ECE, a gradient
without its ``1/|B_m|``, a flipped sign, a value on a bin edge put in the wrong bin) and says
which one it is, rather than printing a bare number. Solutions stay hidden until asked for.

Example:
    >>> from calibtut import exercises
    >>> ex = exercises.notebook("01")
    >>> def my_ace(p, y, num_bins):
    ...     return 0.0
    >>> ex.ace.check(my_ace)  # doctest: +ELLIPSIS
    ✗ Not yet: ...
    False

In a notebook each exercise cell is the student's; ``use_solutions(True)`` (the notebooks'
``solutions`` parameter) makes every ``check`` use the model answer instead, which is how the
tests run the course both ways.

Taught in notebooks 01, 02, 03 and 08.
"""

from __future__ import annotations

import dis
import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "Exercise",
    "FunctionExercise",
    "ChoiceExercise",
    "ValueExercise",
    "OpenQuestion",
    "Notebook",
    "notebook",
    "use_solutions",
    "status",
]

_STATE: dict[str, Any] = {"solutions": False, "status": {}}


@dataclass(frozen=True)
class Looks:
    """A mistake recognised by the shape of the answers (e.g. every one one-hot), not by
    reproducing it: ``test(answers)`` gets the answer's outputs on all the cases."""

    test: Callable[[list[np.ndarray]], bool]


Mistake = tuple[Callable[..., Any] | Looks, str]  # (the mistake, what to tell the student)


def use_solutions(on: bool = True) -> None:
    """Make every ``check`` use the model answer (the course's tests run it both ways).

    Args:
        on: True to check the model answers instead of the student's.
    """
    _STATE["solutions"] = bool(on)


def status() -> dict[str, str]:
    """Each exercise checked so far: ``"correct"``, ``"incorrect"`` or ``"unanswered"``.

    Returns:
        ``{"<notebook>.<exercise>": status}``, in the order they were checked.
    """
    return dict(_STATE["status"])


def _unanswered(answer: Any) -> bool:
    return answer is None or answer is Ellipsis or (isinstance(answer, str) and not answer.strip())


@dataclass
class Exercise(ABC):
    """One exercise: a question, a hint, a model answer and a check.

    Args:
        key: ``"<notebook>.<name>"``, the name :func:`status` reports.
        question: what is asked (shown by :meth:`question_text`).
        hint_text: what :meth:`hint` prints.
        solution_text: the model answer, code or prose, printed by :meth:`solution`.
    """

    key: str
    question: str
    hint_text: str
    solution_text: str
    _correct = "✓ Correct."

    def check(self, answer: Any = None) -> bool:
        """Check ``answer``, print the verdict and what is wrong, and return whether it is right.

        Args:
            answer: the student's answer (a function, a value or a choice, as the question says).

        Returns:
            True when the answer is right.
        """
        if _STATE["solutions"]:
            answer = self.model_answer()
        if _unanswered(answer) or (callable(answer) and _returns_nothing(answer)):
            _STATE["status"][self.key] = "unanswered"
            print("… Not answered yet: write your answer where the cell says, then run it again.")
            return False
        try:
            message = self._verdict(answer)
        except Exception as err:  # the student's code raised: say so, not a traceback
            message = f"your answer raised {type(err).__name__}: {err}"
        _STATE["status"][self.key] = "correct" if message is None else "incorrect"
        print(self._correct if message is None else f"✗ Not yet: {message}")
        return message is None

    def hint(self) -> None:
        """Print the hint."""
        print(f"Hint: {self.hint_text}")

    def solution(self) -> None:
        """Print the model answer."""
        print(f"Solution:\n{inspect.cleandoc(self.solution_text)}")

    def question_text(self) -> str:
        """The question, for a notebook to show above the exercise cell.

        Returns:
            The question's text.
        """
        return self.question

    @abstractmethod
    def model_answer(self) -> Any:
        """The answer :meth:`check` uses with :func:`use_solutions` (each kind of exercise has its
        own: a function, a value, a choice, a text).

        Returns:
            The model answer.
        """

    @abstractmethod
    def _verdict(self, answer: Any) -> str | None:
        """None when ``answer`` is right, else what is wrong with it."""


def _returns_nothing(function: Callable[..., Any]) -> bool:
    """A function whose body is still the template's ``...``: it only returns None."""
    code = getattr(function, "__code__", None)
    if code is None:
        return False
    trivial = {"RESUME", "NOP", "LOAD_CONST", "RETURN_CONST", "RETURN_VALUE"}
    instructions = list(dis.get_instructions(code))
    return all(i.opname in trivial for i in instructions) and all(
        i.argval is None for i in instructions if i.opname in ("LOAD_CONST", "RETURN_CONST")
    )


@dataclass
class FunctionExercise(Exercise):
    """The answer is a function; it is called on hidden cases and compared with the reference.

    Args:
        reference: the correct function (the model answer).
        cases: the argument tuples to call both on.
        mistakes: ``(function, message)`` pairs: when the answer agrees with a mistake's function
            on every case (or a :class:`Looks` test accepts its outputs), the message says what
            is wrong.
        rtol: relative tolerance of the comparison.
    """

    reference: Callable[..., Any] = None  # type: ignore[assignment]
    cases: Sequence[tuple] = ()
    mistakes: Sequence[Mistake] = ()
    rtol: float = 1e-6

    def model_answer(self) -> Callable[..., Any]:
        return self.reference

    def _verdict(self, answer: Callable[..., Any]) -> str | None:
        if not callable(answer):
            return f"the answer should be a function, got {type(answer).__name__}"
        got = [np.asarray(answer(*case), dtype=np.float64) for case in self.cases]
        if _agrees(got, [self.reference(*case) for case in self.cases], self.rtol):
            return None
        for mistake, message in self.mistakes:
            if isinstance(mistake, Looks):
                if mistake.test(got):
                    return message
            elif _agrees(got, [mistake(*case) for case in self.cases], self.rtol):
                return message
        case, value, expected = next(
            (c, g, self.reference(*c))
            for c, g in zip(self.cases, got, strict=True)
            if not _agrees([g], [self.reference(*c)], self.rtol)
        )
        return (
            f"on one of the test cases your function returns {np.round(value, 4).tolist()}, the "
            f"answer is {np.round(np.asarray(expected, dtype=float), 4).tolist()}. Try .hint()."
        )


def _agrees(got: Sequence[Any], expected: Sequence[Any], rtol: float) -> bool:
    for g, e in zip(got, expected, strict=True):
        g, e = np.asarray(g, dtype=np.float64), np.asarray(e, dtype=np.float64)
        if g.shape != e.shape or not np.allclose(g, e, rtol=rtol, atol=1e-9, equal_nan=True):
            return False
    return True


@dataclass
class ChoiceExercise(Exercise):
    """The answer is one of a few words.

    Args:
        choices: the allowed answers.
        answer: the right one.
        wrong: per wrong choice, what to tell the student.
    """

    choices: Sequence[str] = ()
    answer: str = ""
    wrong: Mapping[str, str] = field(default_factory=dict)

    def model_answer(self) -> str:
        return self.answer

    def _verdict(self, answer: str) -> str | None:
        given = str(answer).strip().lower()
        if given not in self.choices:
            return f"answer one of {', '.join(repr(c) for c in self.choices)}, got {answer!r}"
        if given == self.answer:
            return None
        return self.wrong.get(given, "that is not it. Try .hint().")


@dataclass
class ValueExercise(Exercise):
    """The answer is a value computed from data the notebook shows (given to :meth:`check`).

    Args:
        reference: computes the right value from the data.
        mistakes: ``(function, message)`` pairs, as :class:`FunctionExercise`'s.
    """

    reference: Callable[[Any], Any] = None  # type: ignore[assignment]
    mistakes: Sequence[Mistake] = ()
    data: Any = None

    def check(self, answer: Any = None, data: Any = None) -> bool:  # noqa: D417 (documented below)
        """Check ``answer`` against the value computed from ``data``.

        Args:
            answer: the student's value.
            data: what the notebook computed it from.

        Returns:
            True when the answer is right.
        """
        self.data = data
        return super().check(answer)

    def model_answer(self) -> Any:
        return self.reference(self.data)

    def _verdict(self, answer: Any) -> str | None:
        if answer == self.reference(self.data):
            return None
        for mistake, message in self.mistakes:
            if answer == mistake(self.data):
                return message
        return "that is not it. Try .hint()."


@dataclass
class OpenQuestion(Exercise):
    """A question with no single answer: any written answer counts, and :meth:`solution` shows a
    model answer to compare with."""

    _correct = "✓ Noted. Compare your answer with the model answer: .solution()"

    def model_answer(self) -> str:
        return self.solution_text

    def _verdict(self, answer: str) -> str | None:
        return None


class Notebook:
    """One notebook's exercises, as attributes (``ex.ace.check(...)``)."""

    def __init__(self, exercises: Mapping[str, Exercise]) -> None:
        self._exercises = dict(exercises)
        for name, exercise in self._exercises.items():
            setattr(self, name, exercise)

    def __iter__(self):
        return iter(self._exercises.values())

    def __repr__(self) -> str:
        return f"Notebook({', '.join(self._exercises)})"


def notebook(number: str) -> Notebook:
    """The exercises of notebook ``number`` ("01", "02", "03" or "08").

    Args:
        number: the notebook's two digits.

    Returns:
        Its exercises.

    Raises:
        ValueError: no exercises for that notebook.
    """
    from calibtut import _exercise_bank

    makers = {"01": _exercise_bank.notebook_01, "02": _exercise_bank.notebook_02,
              "03": _exercise_bank.notebook_03, "08": _exercise_bank.notebook_08}  # fmt: skip
    if number not in makers:
        raise ValueError(f"notebooks with exercises: {', '.join(makers)}; got {number!r}")
    return Notebook(makers[number]())
