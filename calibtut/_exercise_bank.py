"""The course's exercises (see :mod:`calibtut.exercises`): references in float64 NumPy, the usual
mistakes each one recognises, and the hidden test cases. The tests check every reference against
the package and every mistake against its message."""

from __future__ import annotations

import numpy as np
from scipy import stats

from calibtut.exercises import (
    ChoiceExercise,
    Exercise,
    FunctionExercise,
    Looks,
    OpenQuestion,
    ValueExercise,
)

# --- binning, as MONAI bins (float32 upper edges, a value on an edge in the lower bin) ---------


def _upper_edges(num_bins: int) -> np.ndarray:
    return np.linspace(0, 1 + np.finfo(np.float32).eps, num_bins + 1, dtype=np.float32)[1:]


def _monai_index(p: np.ndarray, num_bins: int) -> np.ndarray:
    upper = _upper_edges(num_bins)
    return np.minimum(np.searchsorted(upper, p.astype(np.float32), side="left"), num_bins - 1)


def _floor_index(p: np.ndarray, num_bins: int) -> np.ndarray:  # edges to the upper bin
    return np.minimum(np.floor(p * num_bins).astype(int), num_bins - 1)


def _unclamped_index(p: np.ndarray, num_bins: int) -> np.ndarray:  # 1.0 in a bin of its own
    return np.floor(p * num_bins).astype(int)


def _bins(p, y, num_bins, index=_monai_index):
    """Per bin: count, mean prediction, mean truth (NaN where empty)."""
    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    bin_of = index(p, num_bins)
    size = max(num_bins, int(bin_of.max()) + 1)
    count = np.bincount(bin_of, minlength=size).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(bin_of, weights=p, minlength=size) / count
        mean_y = np.bincount(bin_of, weights=y, minlength=size) / count
    return count, mean_p, mean_y


def _errors(p, y, num_bins, index=_monai_index):
    count, mean_p, mean_y = _bins(p, y, num_bins, index)
    occupied = count > 0
    gap = np.abs(mean_p - mean_y)[occupied]
    return {
        "ece": float((gap * count[occupied]).sum() / count.sum()),
        "ace": float(gap.mean()),
        "mce": float(gap.max()),
        "ace_all_bins": float(gap.sum() / num_bins),
        "signed_max": float((mean_p - mean_y)[occupied].max()),
        "ece_over_bins": float((gap * count[occupied]).sum() / num_bins),
    }


def _calibration_cases() -> list[tuple]:
    rng = np.random.default_rng(2026)
    cases = []
    for n, num_bins in ((400, 20), (250, 10), (60, 5)):
        p = rng.beta(0.7, 0.7, n)
        y = (rng.random(n) < p**1.5).astype(np.float64)  # overconfident where p is high
        cases.append((p, y, num_bins))
    # values exactly on edges: 0, 1 and interior edges belong to the lower bin
    edges = np.array([0.0, 0.0, 0.1, 0.1, 0.2, 0.5, 0.7, 0.9, 1.0, 1.0, 0.35, 0.6])
    cases.append((edges, np.array([0, 1, 0, 1, 1, 0, 1, 1, 1, 0, 0, 1.0]), 10))
    return cases


def _edge_mistakes(metric: str) -> list:
    return [
        (lambda p, y, n: _errors(p, y, n, _floor_index)[metric], "a value exactly on a bin edge "
         "belongs to the lower bin (bins are (e_{m-1}, e_m], MONAI's convention): with 10 bins "
         "0.1 is in bin 0 and 0.5 in bin 4, where floor(p * num_bins) puts them one bin up."),
        (lambda p, y, n: _errors(p, y, n, _unclamped_index)[metric], "a probability of exactly "
         "1 belongs to the last bin: floor(p * num_bins) gives it a bin of its own, number "
         "num_bins (and puts values on interior edges one bin up)."),
    ]  # fmt: skip


def notebook_01() -> dict[str, Exercise]:
    cases = _calibration_cases()
    return {
        "ece": FunctionExercise(
            key="01.ece",
            question="Write ece(p, y, num_bins): the Expected Calibration Error of probabilities "
            "p and outcomes y (1-D arrays) in num_bins equal-width bins.",
            hint_text="For every occupied bin, |mean p - mean y| times the bin's share of all "
            "cases |B_m|/N; sum over the bins.",
            solution_text=_solution("ece", "float((gap * count[occupied]).sum() / len(p))"),
            reference=lambda p, y, n: _errors(p, y, n)["ece"],
            cases=cases,
            mistakes=[
                (
                    lambda p, y, n: _errors(p, y, n)["ace"],
                    "your ECE weighs every occupied bin "
                    "the same: that is the ACE. The ECE weighs each bin by its share of the cases, "
                    "|B_m| / N.",
                ),
                (
                    lambda p, y, n: _errors(p, y, n)["ece_over_bins"],
                    "you divided by the number "
                    "of bins; the weights |B_m| / N divide by the number of cases N.",
                ),
                *_edge_mistakes("ece"),
            ],
        ),
        "ace": FunctionExercise(
            key="01.ace",
            question="Write ace(p, y, num_bins): the Average Calibration Error, the mean gap "
            "|mean p - mean y| over the occupied bins.",
            hint_text="Leave out the bins that hold no case: average the gaps of the occupied "
            "bins only.",
            solution_text=_solution("ace", "float(gap.mean())"),
            reference=lambda p, y, n: _errors(p, y, n)["ace"],
            cases=cases,
            mistakes=[
                (
                    lambda p, y, n: _errors(p, y, n)["ace_all_bins"],
                    "your ACE divides by all the "
                    "bins; the ACE averages only the occupied ones (an empty bin has no gap).",
                ),
                (
                    lambda p, y, n: _errors(p, y, n)["ece"],
                    "you weighed the bins by their counts: "
                    "that is the ECE. The ACE gives every occupied bin the same weight.",
                ),
                *_edge_mistakes("ace"),
            ],
        ),
        "mce": FunctionExercise(
            key="01.mce",
            question="Write mce(p, y, num_bins): the Maximum Calibration Error, the largest gap "
            "of an occupied bin.",
            hint_text="The largest |mean p - mean y| over the occupied bins: take the absolute "
            "value before the maximum.",
            solution_text=_solution("mce", "float(gap.max())"),
            reference=lambda p, y, n: _errors(p, y, n)["mce"],
            cases=cases,
            mistakes=[
                (
                    lambda p, y, n: _errors(p, y, n)["signed_max"],
                    "you took the largest signed "
                    "gap mean p - mean y; a bin can be off in either direction, take |gap|.",
                ),
                *_edge_mistakes("mce"),
            ],
        ),
        "direction": ChoiceExercise(
            key="01.direction",
            question="On the overconfident model's reliability diagram, the bars *below* a "
            "confidence of 0.5 lie 'above' or 'below' the diagonal?",
            hint_text="Overconfident means more extreme than the truth: a bin it calls 0.1 holds "
            "positives more often than 1 in 10.",
            solution_text="'above': below 0.5 the model is too sure that the class is absent, so "
            "the class is there more often than it says; above 0.5 it is too sure that it is "
            "present, and the bars fall below the diagonal.",
            choices=("above", "below"),
            answer="above",
            wrong={
                "below": "below 0.5 an overconfident model is too sure of the class's "
                "*absence*: the class is there more often than predicted, so the bars rise "
                "above the diagonal (below it is the underconfident model)."
            },
        ),
        "floor": OpenQuestion(
            key="01.floor",
            question="A perfectly calibrated model scores an ACE of about 0.13 on the 64 x 64 "
            "toy image. Why, and what would lower this floor?",
            hint_text="How many voxels does a middle bin hold? What is the sampling error of a "
            "fraction estimated from a handful of cases?",
            solution_text="A middle bin of one class holds a handful of voxels (3 to 12 here). "
            "Even if every voxel's label is drawn from its own probability, the fraction of "
            "positives in 5 voxels at p = 0.3 is 0, 0.2, 0.4, ..., never 0.3: its expected gap "
            "is about sqrt(p(1-p)/n), ~0.2. The ACE averages these gaps over the occupied bins, "
            "so it is far from zero. More voxels per bin lower it: larger images or longer "
            "boundaries (the 384 x 384 image), fewer bins, or pooling images (micro). Only the "
            "part of an ACE above its floor says something about the model.",
        ),
    }


def _solution(name: str, result: str) -> str:
    return f"""\
import numpy as np
def {name}(p, y, num_bins):
    upper = np.linspace(0, 1 + np.finfo(np.float32).eps, num_bins + 1, dtype=np.float32)[1:]
    bin_of = np.minimum(np.searchsorted(upper, np.float32(p), side="left"), num_bins - 1)
    count = np.bincount(bin_of, minlength=num_bins)
    occupied = count > 0
    mean_p = np.bincount(bin_of, weights=p, minlength=num_bins)[occupied] / count[occupied]
    mean_y = np.bincount(bin_of, weights=y, minlength=num_bins)[occupied] / count[occupied]
    gap = np.abs(mean_p - mean_y)
    return {result}
"""


# --- notebook 02: soft weights and the hard gradient -----------------------------------------------


def _centres(num_bins: int) -> np.ndarray:
    width = (1 + float(np.finfo(np.float32).eps)) / num_bins
    return (np.arange(num_bins) + 0.5) * width, width


def _soft_weights(p: float, num_bins: int) -> np.ndarray:
    centres, width = _centres(num_bins)
    weights = np.clip(1 - np.abs(p - centres) / width, 0, 1)
    if p < centres[0]:
        weights[0] = 1.0
    if p > centres[-1]:
        weights[-1] = 1.0
    return weights


def _soft_unclamped(p: float, num_bins: int) -> np.ndarray:
    centres, width = _centres(num_bins)
    return np.clip(1 - np.abs(p - centres) / width, 0, 1)


def _soft_from_edges(p: float, num_bins: int) -> np.ndarray:
    edges = np.linspace(0, 1, num_bins + 1)[:-1]
    width = 1 / num_bins
    return np.clip(1 - np.abs(p - edges) / width, 0, 1)


def _all_one_hot(answers: list[np.ndarray]) -> bool:
    return all(np.isin(a, (0.0, 1.0)).all() and a.sum() == 1 for a in answers)


def _hard_gradient(mean_p, mean_y, count, occupied, images, classes):
    return np.sign(mean_p - mean_y) / (count * occupied * images * classes)


def notebook_02() -> dict[str, Exercise]:
    soft_cases = [(p, n) for p in (0.01, 0.12, 0.37, 0.5, 0.63, 0.96, 0.999) for n in (5, 10, 20)]
    gradient_cases = [
        (0.82, 0.70, 12, 7, 2, 3),
        (0.12, 0.20, 40, 9, 1, 4),
        (0.47, 0.47 - 1e-3, 3, 4, 4, 2),
        (0.05, 0.01, 900, 15, 2, 2),
    ]
    return {
        "soft_weights": FunctionExercise(
            key="02.soft_weights",
            question="Write soft_weights(p, num_bins): the weight of one probability p in each "
            "of the num_bins soft bins (an array of num_bins values).",
            hint_text="Centres (m + 1/2) h with h = (1 + eps32) / num_bins; weight "
            "max(0, 1 - |p - c_m| / h); below the first centre or above the last, all of it "
            "goes to that end bin.",
            solution_text="""\
                import numpy as np
                def soft_weights(p, num_bins):
                    width = (1 + float(np.finfo(np.float32).eps)) / num_bins
                    centres = (np.arange(num_bins) + 0.5) * width
                    weights = np.clip(1 - np.abs(p - centres) / width, 0, 1)
                    if p < centres[0]:
                        weights[0] = 1.0
                    if p > centres[-1]:
                        weights[-1] = 1.0
                    return weights
            """,
            reference=_soft_weights,
            cases=soft_cases,
            mistakes=[
                (
                    Looks(_all_one_hot),
                    "that is hard binning: all of p in one bin. Soft binning "
                    "shares it between the two nearest bin centres.",
                ),
                (
                    _soft_unclamped,
                    "a value below the first centre (or above the last) belongs "
                    "wholly to that end bin: your weights there do not sum to 1.",
                ),
                (
                    _soft_from_edges,
                    "measure the distance to the bin *centres* (m + 1/2) h, not to the edges m h.",
                ),
            ],
        ),
        "hard_gradient": FunctionExercise(
            key="02.hard_gradient",
            question="Write hard_gradient(mean_p, mean_y, count, occupied, images, classes): the "
            "derivative of the hard mL1-ACE (averaged over images and classes) with respect to "
            "one voxel's probability, in a bin with mean prediction mean_p, accuracy mean_y and "
            "count voxels, of an image and class with `occupied` occupied bins.",
            hint_text="The ACE is (1/|M+|) sum_m |mean_p_m - mean_y_m| and mean_p_m is a mean "
            "over the bin's |B_m| voxels; the loss averages over images x classes.",
            solution_text="""\
                import numpy as np
                def hard_gradient(mean_p, mean_y, count, occupied, images, classes):
                    return np.sign(mean_p - mean_y) / (count * occupied * images * classes)
            """,
            reference=_hard_gradient,
            cases=gradient_cases,
            mistakes=[
                (
                    lambda mp, my, n, m, b, c: np.sign(mp - my) / (m * b * c),
                    "your gradient "
                    "lacks the 1/|B_m|: a voxel moves its bin's mean prediction by 1/|B_m| of its "
                    "own change.",
                ),
                (
                    lambda mp, my, n, m, b, c: -_hard_gradient(mp, my, n, m, b, c),
                    "the sign is "
                    "flipped: a bin whose mean prediction is above its accuracy has a positive "
                    "gradient (descent lowers its voxels).",
                ),
                (
                    lambda mp, my, n, m, b, c: np.sign(mp - my) / (n * b * c),
                    "you left out the 1/|M+|: the ACE averages the gaps of the occupied bins.",
                ),
                (
                    lambda mp, my, n, m, b, c: np.sign(mp - my) / (n * m),
                    "you left out the mean over images and classes (1/(B C)).",
                ),
            ],
        ),
        "sign": ChoiceExercise(
            key="02.sign",
            question="A voxel of the *lesion* channel has p = 0.1, in a bin whose mean "
            "prediction is 0.12 and whose voxels are lesion 20% of the time. Does one step of "
            "gradient descent on the hard mL1-ACE move its p 'up' or 'down'?",
            hint_text="Compare the bin's mean prediction with its accuracy: the gradient is the "
            "sign of mean p - mean y; descent moves against it.",
            solution_text="'up': mean p (0.12) is below mean y (0.20), the gradient is negative "
            "and descent raises p. Below 0.5 this bin was overconfident about the lesion's "
            "absence; pulling it up towards 0.2 makes it less so. One rule covers both sides of "
            "0.5: every probability moves towards its bin's accuracy.",
            choices=("up", "down"),
            answer="up",
            wrong={
                "down": "the bin's mean prediction (0.12) is *below* its accuracy (0.20): "
                "the gradient sign(mean p - mean y) is negative, and descent moves p up."
            },
        ),
        "soft_strength": OpenQuestion(
            key="02.soft_strength",
            question="Why might soft binning calibrate more strongly than hard binning, and why "
            "might it cost more Dice?",
            hint_text="What does the soft gradient contain that the hard one lacks, and which "
            "voxels does it reach?",
            solution_text="The hard gradient treats bin membership as fixed: a voxel only feels "
            "its own bin's gap. The soft gradient also carries the derivative of the weights, "
            "so a voxel between two centres is pushed towards the neighbour with the smaller "
            "gap, and every voxel near a bin boundary gets a signal: more voxels are moved, more "
            "freely. The same freedom lets the loss pull confident voxels back from 0 and 1 "
            "more readily, which blurs the argmax near boundaries and can cost Dice.",
        ),
    }


# --- notebook 03: the paper's statistics -----------------------------------------------------------


def _pct(baseline, loss):
    baseline, loss = np.asarray(baseline, float), np.asarray(loss, float)
    return float(np.mean((loss - baseline) / baseline * 100))


def _stats_cases() -> list[tuple]:
    rng = np.random.default_rng(3)
    cases = []
    for n in (20, 35):
        baseline = rng.uniform(0.02, 0.12, n)
        loss = baseline * rng.uniform(0.5, 1.05, n)
        cases.append((baseline, loss))
    skewed = np.array([0.01, 0.2, 0.05, 0.3]), np.array([0.02, 0.1, 0.04, 0.15])
    cases.append(skewed)  # the change of the means and the mean of the changes differ in sign
    return cases


def notebook_03() -> dict[str, Exercise]:
    cases = _stats_cases()
    return {
        "pct_change": FunctionExercise(
            key="03.pct_change",
            question="Write pct_change(baseline, loss): the paper's Δ% from per-image values "
            "(two arrays, one value per test image, same order).",
            hint_text="Each image's own change (loss - baseline) / baseline * 100 first, then "
            "the mean over images.",
            solution_text="""\
                import numpy as np
                def pct_change(baseline, loss):
                    return float(np.mean((loss - baseline) / baseline * 100))
            """,
            reference=_pct,
            cases=cases,
            mistakes=[
                (
                    lambda b, x: (np.mean(x) - np.mean(b)) / np.mean(b) * 100,
                    "that is the change "
                    "of the means. The paper's Δ% is the mean of per-image changes: each image "
                    "counts once, however large its baseline value.",
                ),
                (lambda b, x: _pct(b, x) / 100, "a percentage: multiply by 100."),
                (
                    lambda b, x: -_pct(b, x),
                    "the sign is flipped: (loss - baseline) / baseline, "
                    "negative when the loss lowered the metric.",
                ),
            ],
        ),
        "removed": FunctionExercise(
            key="03.removed",
            question="Write removed(baseline, loss, floor): the share of the baseline's "
            "*removable* ACE (the part above its noise floor) that a loss removed.",
            hint_text="Removable: baseline - floor. Removed: baseline - loss.",
            solution_text="""\
                def removed(baseline, loss, floor):
                    return (baseline - loss) / (baseline - floor)
            """,
            reference=lambda b, x, f: (b - x) / (b - f),
            cases=[(0.058, 0.038, 0.013), (0.12, 0.10, 0.06), (0.05, 0.049, 0.02)],
            mistakes=[
                (
                    lambda b, x, f: (b - x) / b,
                    "that is the share of the whole ACE; the floor "
                    "cannot be removed by any loss, so divide by baseline - floor.",
                ),
                (
                    lambda b, x, f: (x - f) / (b - f),
                    "that is the share that *remains* above the "
                    "floor; the question asks for the share removed.",
                ),
            ],
        ),
        "paired_test": FunctionExercise(
            key="03.paired_test",
            question="Write p_value(baseline, loss): the paper's test of a loss against the "
            "baseline on the same images, the two-sided paired t-test's p-value.",
            hint_text="scipy.stats has a t-test for related samples: the images are the pairs.",
            solution_text="""\
                from scipy import stats
                def p_value(baseline, loss):
                    return stats.ttest_rel(loss, baseline).pvalue
            """,
            reference=lambda b, x: stats.ttest_rel(x, b).pvalue,
            cases=cases[:2],
            rtol=1e-6,
            mistakes=[
                (
                    lambda b, x: stats.ttest_ind(x, b).pvalue,
                    "that is the unpaired t-test: it "
                    "ignores that both values come from the same image. Use the paired test.",
                ),
                (
                    lambda b, x: stats.wilcoxon(x, b).pvalue,
                    "that is the Wilcoxon signed-rank "
                    "test (the report's p_W); the paper's test is the paired t-test.",
                ),
                (
                    lambda b, x: stats.ttest_rel(x, b, alternative="less").pvalue,
                    "that is a one-sided test; the paper's is two-sided.",
                ),
            ],
        ),
        "micro_macro": OpenQuestion(
            key="03.micro_macro",
            question="In the report the micro ACE falls by about twice as much as the macro "
            "(per-image) ACE. Give two reasons.",
            hint_text="What does pooling do to the voxel count of a bin, and so to the noise "
            "floor? What happens to gaps of opposite sign in different images?",
            solution_text="(1) Pooling 20 scans puts 20 times more voxels in each bin, so the "
            "micro floor is tiny (0.003 against 0.013 per scan): nearly all of the micro ACE is "
            "systematic miscalibration, which the losses reduce, while each per-scan ACE keeps "
            "its floor, which no loss can lower, so the same improvement is a smaller "
            "percentage of it. (2) Pooling mixes images before comparing: one image's "
            "overconfident bins and another's underconfident ones partly cancel, and images "
            "with more voxels in a bin weigh more.",
        ),
    }


# --- notebook 08: reading dataset reliability histograms -------------------------------------------


def _over_share(histogram) -> float:
    counts = np.asarray(histogram, dtype=np.float64)
    n = counts.shape[-1]
    truth, confidence = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    upper = confidence >= n // 2
    over = ((truth < confidence) & upper) | ((truth > confidence) & ~upper)
    return float((counts * over).sum() / counts.sum())


def _over_upper_only(histogram) -> float:
    counts = np.asarray(histogram, dtype=np.float64)
    n = counts.shape[-1]
    truth, confidence = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    return float((counts * (truth < confidence)).sum() / counts.sum())


def _over_with_diagonal(histogram) -> float:
    counts = np.asarray(histogram, dtype=np.float64)
    return _over_share(counts) + float(np.trace(counts) / counts.sum())


def _histogram_cases() -> list[tuple]:
    rng = np.random.default_rng(8)
    cases = []
    for n in (20, 10, 5):
        h = rng.poisson(2.0, (n, n)).astype(np.float64)
        h[np.arange(n), np.arange(n)] += 5
        cases.append((h,))
    return cases


def notebook_08() -> dict[str, Exercise]:
    return {
        "cell": ChoiceExercise(
            key="08.cell",
            question="In a lesion panel with 20 bins, a count at confidence bin 16 (0.80-0.85) "
            "and ground-truth bin 12 (0.60-0.65) is 'overconfident', 'underconfident' or "
            "'calibrated'?",
            hint_text="Above 0.5: is the truth below the confidence (more extreme prediction) or "
            "above it?",
            solution_text="'overconfident': the model said about 0.83 and the voxels of that bin "
            "were lesion only about 62% of the time. The count comes from one test image: one of "
            "its bins put mass there.",
            choices=("overconfident", "underconfident", "calibrated"),
            answer="overconfident",
            wrong={
                "underconfident": "above 0.5 a truth *below* the confidence means the prediction "
                "was more extreme than the truth: overconfidence.",
                "calibrated": "calibrated counts lie on the diagonal (the same truth and "
                "confidence bin); this one is four bins below it.",
            },
        ),
        "over_share": FunctionExercise(
            key="08.over_share",
            question="Write over_share(histogram): the share of a (truth bin x confidence bin) "
            "count matrix that is overconfident (calibtut.metrics.confidence_direction's rule).",
            hint_text="At confidence bins k >= n/2 truth below (j < k) is overconfident; below "
            "n/2 truth above (j > k) is: too sure of the class's absence. Diagonal counts are "
            "neither.",
            solution_text="""\
                import numpy as np
                def over_share(histogram):
                    n = histogram.shape[-1]
                    truth, confidence = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
                    upper = confidence >= n // 2
                    over = ((truth < confidence) & upper) | ((truth > confidence) & ~upper)
                    return (histogram * over).sum() / histogram.sum()
            """,
            reference=_over_share,
            cases=_histogram_cases(),
            mistakes=[
                (
                    _over_upper_only,
                    "you counted every count below the diagonal. Left of the "
                    "middle, overconfidence is *above* it: too sure that the class is absent.",
                ),
                (
                    _over_with_diagonal,
                    "the diagonal is calibrated, neither over- nor underconfident: leave it out.",
                ),
            ],
        ),
        "worse_image": ValueExercise(
            key="08.worse_image",
            question="From ace_per_image (a table: one row per test image, a column per loss), "
            "which image did the soft loss make *worse* by the most (the largest increase of "
            "its ACE over the baseline)? Answer its id, and check(answer, ace_per_image).",
            hint_text="(soft - baseline) per image, then the largest: pandas' idxmax.",
            solution_text="(ace_per_image['soft'] - ace_per_image['baseline']).idxmax()",
            reference=lambda table: (table["soft"] - table["baseline"]).idxmax(),
            mistakes=[
                (
                    lambda t: (t["soft"] - t["baseline"]).abs().idxmax(),
                    "that is the image the "
                    "soft loss changed most, either way; the question asks which it made worse.",
                ),
                (
                    lambda t: (t["soft"] - t["baseline"]).idxmin(),
                    "that is the image it improved most: worse means a larger ACE.",
                ),
                (
                    lambda t: t["soft"].idxmax(),
                    "that is the image with the largest soft ACE; the "
                    "question asks for the largest *change* from the baseline.",
                ),
            ],
        ),
        "ring": OpenQuestion(
            key="08.ring",
            question="Why do the baseline's top ring bins (0.85 and above) lie below the "
            "diagonal, and why do the calibration losses help there most?",
            hint_text="How far is a ring voxel from a boundary? What do Dice and cross-entropy "
            "reward at a voxel the network thinks is ring?",
            solution_text="The ring is 4 to 6 pixels across: every one of its voxels is within "
            "two or three pixels of a boundary, where the annotation strays by about two "
            "pixels, so no voxel is ring with certainty. Dice and cross-entropy reward pushing "
            "a voxel the network believes in towards 1, so the network says 0.9 where the rater "
            "draws ring three or four times in five: overconfidence. The calibration losses "
            "penalise exactly the gap between those bins' confidence and their accuracy, and "
            "the ring's bins are full of such voxels.",
        ),
    }
