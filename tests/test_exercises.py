"""The course's exercises: every reference equals the package, every printed solution passes, and
the typical wrong answers (written here, independently of the exercise bank) get their own hint."""

from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from calibtut import exercises
from calibtut.binning import hard_binning, soft_binning
from calibtut.losses import l1_ace_gradient
from calibtut.metrics import calibration_errors, confidence_direction

NOTEBOOKS = ("01", "02", "03", "08")


@pytest.fixture(autouse=True)
def student_mode():
    exercises.use_solutions(False)
    yield
    exercises.use_solutions(False)


def verdict(exercise, answer, capsys, *data) -> str:
    exercise.check(answer, *data)
    return capsys.readouterr().out.strip()


def by_package(p, y, num_bins):
    bins = hard_binning(
        torch.as_tensor(p, dtype=torch.float64).view(1, 1, -1),
        torch.as_tensor(y, dtype=torch.float64).view(1, 1, -1),
        num_bins,
    )
    errors = calibration_errors(bins)
    return {name: float(getattr(errors, name)[0, 0]) for name in ("ece", "ace", "mce")}


# --- the references are the package's ------------------------------------------------------------


def test_calibration_references_equal_the_package():
    ex = exercises.notebook("01")
    for case in ex.ace.cases:
        expected = by_package(*case)
        for name in ("ece", "ace", "mce"):
            assert getattr(ex, name).reference(*case) == pytest.approx(expected[name], abs=1e-9)


def test_soft_weights_reference_equals_soft_binning():
    exercise = exercises.notebook("02").soft_weights
    for p, num_bins in exercise.cases:
        probs = torch.tensor([[[p]]], dtype=torch.float64)
        counts = soft_binning(probs, torch.zeros_like(probs), num_bins).count[0, 0]
        np.testing.assert_allclose(exercise.reference(p, num_bins), counts.numpy(), atol=1e-12)


def test_hard_gradient_reference_equals_autograd():
    """Two images, two classes; the formula for one voxel against autograd through the loss."""
    g = torch.Generator().manual_seed(0)
    probs = torch.rand((2, 2, 50), generator=g, dtype=torch.float64)
    target = (torch.rand((2, 2, 50), generator=g) < probs).double()
    _, gradient = l1_ace_gradient(probs, target, "hard", num_bins=10)
    bins = hard_binning(probs, target, 10)
    mean_p, mean_y = bins.means()
    occupied = bins.occupied.sum(-1)
    index = (probs * 10).clamp(max=9).long()  # no value lies on an edge here
    reference = exercises.notebook("02").hard_gradient.reference
    for b, c, i in ((0, 0, 3), (1, 1, 17), (0, 1, 42)):
        m = int(index[b, c, i])
        expected = reference(
            float(mean_p[b, c, m]), float(mean_y[b, c, m]), float(bins.count[b, c, m]),
            int(occupied[b, c]), 2, 2,
        )  # fmt: skip
        assert float(gradient[b, c, i]) == pytest.approx(expected, rel=1e-9)


def test_over_share_reference_equals_confidence_direction():
    exercise = exercises.notebook("08").over_share
    for (histogram,) in exercise.cases:
        direction = confidence_direction(torch.as_tensor(histogram)[None])
        assert exercise.reference(histogram) == pytest.approx(float(direction.overconfident[0]))


def test_statistics_references():
    ex = exercises.notebook("03")
    for baseline, loss in ex.pct_change.cases:
        assert ex.pct_change.reference(baseline, loss) == pytest.approx(
            float(np.mean([(b2 - b1) / b1 * 100 for b1, b2 in zip(baseline, loss, strict=True)]))
        )
        assert ex.paired_test.reference(baseline, loss) == stats.ttest_rel(loss, baseline).pvalue


# --- every printed solution passes; solutions mode passes everything ------------------------------


@pytest.mark.parametrize("number", NOTEBOOKS)
def test_printed_solutions_pass(number, capsys):
    for exercise in exercises.notebook(number):
        if isinstance(exercise, exercises.FunctionExercise):
            namespace: dict = {}
            exec(textwrap.dedent(exercise.solution_text), namespace)  # noqa: S102 (our own code)
            function = next(v for k, v in namespace.items() if callable(v) and k != "np" and
                            getattr(v, "__module__", None) is None)  # fmt: skip
            assert verdict(exercise, function, capsys) == "✓ Correct.", exercise.key


def test_solutions_mode_checks_the_model_answers(capsys):
    exercises.use_solutions(True)
    table = pd.DataFrame({"baseline": [0.1, 0.2], "soft": [0.3, 0.1]}, index=["a", "b"])
    for number in NOTEBOOKS:
        for exercise in exercises.notebook(number):
            data = (table,) if isinstance(exercise, exercises.ValueExercise) else ()
            assert exercise.check(None, *data), exercise.key
    assert set(exercises.status().values()) == {"correct"}


# --- typical wrong answers get their own hint ------------------------------------------------------


def _gaps(p, y, num_bins, binning="monai"):
    """Occupied bins' (count, gap), with MONAI's bins or a student's floor(p * num_bins)."""
    if binning == "monai":
        upper = np.linspace(0, 1 + np.finfo(np.float32).eps, num_bins + 1, dtype=np.float32)[1:]
        index = np.minimum(np.searchsorted(upper, p.astype(np.float32)), num_bins - 1)
    else:
        index = np.floor(p * num_bins).astype(int)
        if binning == "floor, clamped":
            index = np.minimum(index, num_bins - 1)
    rows = []
    for m in range(index.max() + 1):
        inside = index == m
        if inside.any():
            rows.append((inside.sum(), abs(p[inside].mean() - y[inside].mean())))
    return np.array(rows)


def ace_right(p, y, num_bins):
    return _gaps(p, y, num_bins)[:, 1].mean()


def ace_over_all_bins(p, y, num_bins):
    return _gaps(p, y, num_bins)[:, 1].sum() / num_bins


def unweighted_ece(p, y, num_bins):
    return _gaps(p, y, num_bins)[:, 1].mean()


def ace_with_floor_bins(p, y, num_bins):  # a value on an interior edge one bin up
    return _gaps(p, y, num_bins, "floor, clamped")[:, 1].mean()


def ace_with_unclamped_bins(p, y, num_bins):  # 1.0 in a bin of its own
    return _gaps(p, y, num_bins, "floor")[:, 1].mean()


@pytest.mark.parametrize(
    ("name", "answer", "message"),
    [
        ("ace", ace_right, "✓ Correct."),
        ("ace", ace_over_all_bins, "your ACE divides by all the bins"),
        ("ece", unweighted_ece, "your ECE weighs every occupied bin the same: that is the ACE"),
        ("ace", ace_with_floor_bins, "a value exactly on a bin edge belongs to the lower bin"),
        ("ace", ace_with_unclamped_bins, "a probability of exactly 1 belongs to the last bin"),
        ("direction", "below", "too sure of the class's *absence*"),
    ],
)
def test_calibration_mistakes_are_named(name, answer, message, capsys):
    assert message in verdict(getattr(exercises.notebook("01"), name), answer, capsys)


def gradient_without_count(mean_p, mean_y, count, occupied, images, classes):
    return np.sign(mean_p - mean_y) / (occupied * images * classes)


def gradient_flipped(mean_p, mean_y, count, occupied, images, classes):
    return (mean_y > mean_p) * 2.0 / (count * occupied * images * classes) - 1 / (
        count * occupied * images * classes
    )


@pytest.mark.parametrize(
    ("name", "answer", "message"),
    [
        ("hard_gradient", gradient_without_count, "lacks the 1/|B_m|"),
        ("hard_gradient", gradient_flipped, "the sign is flipped"),
        ("sign", "down", "is *below* its accuracy"),
        ("soft_weights", lambda p, n: np.eye(n)[min(int(p * n), n - 1)], "that is hard binning"),
    ],
)
def test_binning_mistakes_are_named(name, answer, message, capsys):
    assert message in verdict(getattr(exercises.notebook("02"), name), answer, capsys)


def test_statistics_mistakes_are_named(capsys):
    ex = exercises.notebook("03")
    change_of_means = lambda b, x: (x.mean() - b.mean()) / b.mean() * 100  # noqa: E731
    assert "that is the change of the means" in verdict(ex.pct_change, change_of_means, capsys)
    unpaired = lambda b, x: stats.ttest_ind(b, x).pvalue  # noqa: E731
    assert "that is the unpaired t-test" in verdict(ex.paired_test, unpaired, capsys)
    no_floor = lambda b, x, f: 1 - x / b  # noqa: E731
    assert "divide by baseline - floor" in verdict(ex.removed, no_floor, capsys)


def test_reading_mistakes_are_named(capsys):
    ex = exercises.notebook("08")
    table = pd.DataFrame({"baseline": [0.1, 0.5, 0.3], "soft": [0.3, 0.1, 0.35]}, index=list("abc"))
    assert verdict(ex.worse_image, "a", capsys, table) == "✓ Correct."
    assert "changed most, either way" in verdict(ex.worse_image, "b", capsys, table)
    counted_below = lambda h: np.triu(h, 1).sum() / h.sum()  # noqa: E731 (truth j < confidence k)
    assert "Left of the middle" in verdict(ex.over_share, counted_below, capsys)
    assert "four bins below it" in verdict(ex.cell, "calibrated", capsys)


# --- the student's side ----------------------------------------------------------------------------


def test_an_unanswered_template_is_not_an_error(capsys):
    ex = exercises.notebook("01")

    def ace(p, y, num_bins): ...  # your code here

    assert not ex.ace.check(ace)
    assert "Not answered yet" in capsys.readouterr().out
    assert exercises.status()["01.ace"] == "unanswered"
    assert "Not answered yet" in verdict(ex.floor, "   ", capsys)


def test_a_raising_answer_is_one_line(capsys):
    def ace(p, y, num_bins):
        return p / 0 + undefined  # noqa: F821

    assert "your answer raised NameError" in verdict(exercises.notebook("01").ace, ace, capsys)


def test_hints_and_solutions_print_and_unknown_notebooks_fail(capsys):
    ex = exercises.notebook("02")
    ex.sign.hint()
    ex.sign.solution()
    out = capsys.readouterr().out
    assert out.startswith("Hint: ") and "Solution:\n'up'" in out
    with pytest.raises(ValueError, match="notebooks with exercises: 01, 02, 03, 08"):
        exercises.notebook("05")
