# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/calibtut/calibtut/blob/main/notebooks/01_what_is_calibration.ipynb)
#
# # 01 · What is calibration?
#
# A model that outputs probabilities makes two kinds of promise. It promises an answer (the
# class with the largest probability) and it promises how often that answer is right. The first
# promise is measured by accuracy or Dice. This notebook is about the second.
#
# A binary classifier with predicted probability $\hat p$ is **calibrated** when, among all the
# cases it gives a probability $p$, a fraction $p$ are positive:
#
# $$P(Y = 1 \mid \hat p = p) = p \quad \text{for every } p \in [0, 1].$$
#
# We will measure how far a model is from this, first on a toy classifier, by hand, then on a
# segmentation, where one image holds thousands of such predictions and where the usual
# summary number is misleading.
#
# **You will learn to**
#
# * compute the ECE, ACE and MCE of a set of predictions by hand, and say what each weighs;
# * read a reliability diagram, and tell over- from underconfidence on both sides of 0.5;
# * explain why a segmentation's ECE looks small, and why the paper reports the ACE;
# * estimate how much of an image's ACE is sampling noise (its noise floor);
# * tell per-image (macro) from pooled (micro) calibration errors.
#
# The exercises check themselves: run `ex.<name>.check(answer)`; `ex.<name>.hint()` helps and
# `ex.<name>.solution()` shows a model answer. Terms are defined in the
# [glossary](https://github.com/calibtut/calibtut/blob/main/notebooks/glossary.md).

# %%
# Colab only: install calibtut and turn on Colab's widget manager (elsewhere this does nothing).
import sys

if "google.colab" in sys.modules:
    import subprocess

    requirement = "calibtut @ git+https://github.com/calibtut/calibtut"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", requirement], check=True)
    from calibtut.course import enable_colab

    enable_colab()

# %% tags=["parameters"]
smoke = False  # nothing trains here, so smoke mode changes nothing
data_dir = None  # not used: the data is made up below
device = None  # not used: everything here is small enough for the CPU
epochs = None  # not used: nothing trains
overwrite = False  # not used: nothing trains
run_root = "../runs"  # the repository's runs/ folder, shared by make demo and every notebook
num_bins = 20  # bins of the reliability diagrams and calibration errors (the paper's 20)
solutions = False  # True: every exercise checks its model answer (what the tests also run)

# %% [markdown]
# ## A toy classifier, three ways
#
# Five thousand cases each have a true probability of being positive, and an outcome drawn
# from it. A perfect probabilistic model would predict the true probability itself: it is
# calibrated by construction. Two other models see the same cases but distort the true
# probability's log-odds by a *temperature* $T$, $\hat p = \sigma(\operatorname{logit}(p) / T)$:
# with $T < 1$ every probability is pushed towards 0 or 1 (an **overconfident** model), with
# $T > 1$ towards 0.5 (an **underconfident** one). All three rank the cases identically, so
# they have the same accuracy; only their calibration differs.

# %%
import numpy as np
import pandas as pd
import torch
from IPython.display import display

from calibtut import course, exercises, plots, views
from calibtut.binning import hard_binning
from calibtut.data import toy_segmentation
from calibtut.metrics import (
    calibration_error,
    calibration_errors,
    macro_average,
    micro_errors,
    reliability,
)

rng = np.random.default_rng(0)
true_probability = rng.beta(2, 2, size=5000).astype(np.float32)
outcome = (rng.random(5000) < true_probability).astype(np.float32)


def with_temperature(p: np.ndarray, temperature: float) -> np.ndarray:
    logit = np.log(p) - np.log1p(-p)
    return (1 / (1 + np.exp(-logit / temperature))).astype(np.float32)


exercises.use_solutions(solutions)
ex = exercises.notebook("01")

models = {
    "calibrated": true_probability,
    "overconfident (T = 0.5)": with_temperature(true_probability, 0.5),
    "underconfident (T = 2)": with_temperature(true_probability, 2.0),
}

# %% [markdown]
# ## Binning, and three calibration errors by hand
#
# $P(Y = 1 \mid \hat p = p)$ cannot be estimated at a single $p$: no two cases share a
# probability exactly. So we group them: $M$ equal-width bins over $[0, 1]$, bin $B_m$ holding
# the cases whose $\hat p$ falls in it. In each occupied bin we compare the mean prediction (the
# *confidence*) with the fraction of positives (the *accuracy* of that bin):
#
# $$\bar p_m = \frac{1}{|B_m|} \sum_{i \in B_m} \hat p_i, \qquad
#   \bar y_m = \frac{1}{|B_m|} \sum_{i \in B_m} y_i.$$
#
# A calibrated model has $\bar p_m \approx \bar y_m$ in every bin. Three ways to summarise the
# gaps $|\bar p_m - \bar y_m|$ over the $N$ cases, where $M^+$ is the set of occupied bins:
#
# $$\text{ECE} = \sum_{m \in M^+} \frac{|B_m|}{N}\, |\bar p_m - \bar y_m|, \qquad
#   \text{ACE} = \frac{1}{|M^+|} \sum_{m \in M^+} |\bar p_m - \bar y_m|, \qquad
#   \text{MCE} = \max_{m \in M^+} |\bar p_m - \bar y_m|.$$
#
# The **Expected** Calibration Error weighs each bin by how many cases it holds; the **Average**
# Calibration Error weighs every occupied bin the same; the **Maximum** Calibration Error is the
# worst bin. (A different "ACE", the *adaptive* calibration error of Nixon et al. 2019, uses
# bins of equal counts; in this course ACE is always the *average* one, the paper's.)
#
# ### Exercise 1 · The three errors by hand
#
# Before reading our version below, write each as a function of `p`, `y` (1-D NumPy arrays) and
# `num_bins`, and check it: the check runs it on cases you do not see and compares it with
# calibtut. The bins are MONAI's: upper edges `np.linspace(0, 1 + eps, num_bins + 1)` in
# float32 (`eps` the float32 machine epsilon), and a value exactly on an edge belongs to the
# lower bin, so bins are $(e_{m-1}, e_m]$ and 0 and 1 belong to the first and last bins.


# %%
def ece(p, y, num_bins):
    # your code here: return the Expected Calibration Error
    ...


ex.ece.check(ece)


# %%
def ace(p, y, num_bins):
    # your code here: return the Average Calibration Error
    ...


ex.ace.check(ace)


# %%
def mce(p, y, num_bins):
    # your code here: return the Maximum Calibration Error
    ...


ex.mce.check(mce)

# %% [markdown]
# Our version, written out in NumPy:


# %%
def calibration_by_hand(p: np.ndarray, y: np.ndarray, num_bins: int) -> dict[str, float]:
    upper_edges = torch.linspace(0, 1 + torch.finfo(torch.float32).eps, num_bins + 1)[1:].numpy()
    bin_of = np.searchsorted(upper_edges, p, side="left")  # first upper edge >= p
    count = np.bincount(bin_of, minlength=num_bins)
    occupied = count > 0
    mean_p = np.bincount(bin_of, weights=p, minlength=num_bins)[occupied] / count[occupied]
    mean_y = np.bincount(bin_of, weights=y, minlength=num_bins)[occupied] / count[occupied]
    gap = np.abs(mean_p - mean_y)
    return {
        "ECE": float((gap * count[occupied]).sum() / count.sum()),
        "ACE": float(gap.mean()),
        "MCE": float(gap.max()),
    }


by_hand = {name: calibration_by_hand(p, outcome, num_bins) for name, p in models.items()}
display(pd.DataFrame(by_hand).T)

# %% [markdown]
# calibtut computes the same from its bin statistics. `hard_binning` takes tensors shaped like
# a segmentation, `(images, classes, *spatial)`, and bins every class channel on its own, so
# the three models can sit side by side as three "classes" of one "image" of 5000 "voxels":

# %%
probs = torch.from_numpy(np.stack(list(models.values())))[None]  # (1, 3, 5000)
target = torch.from_numpy(outcome).expand_as(probs)
toy_bins = hard_binning(probs, target, num_bins)
errors = calibration_errors(toy_bins)
from_calibtut = pd.DataFrame(
    {"ECE": errors.ece[0], "ACE": errors.ace[0], "MCE": errors.mce[0]}, index=list(models)
)
difference = (from_calibtut - pd.DataFrame(by_hand).T).abs().to_numpy().max()
assert difference < 1e-6, difference
print(f"largest difference between the hand computation and calibtut: {difference:.1e}")
display(from_calibtut)

# %% [markdown]
# ## Reliability diagrams
#
# The numbers say *how much*; a **reliability diagram** says *where*. One panel per model: each
# bar is a bin's accuracy $\bar y_m$, the dot is $(\bar p_m, \bar y_m)$, the hatched red band is
# the gap to the diagonal, and the framed bin is the one that sets the MCE. The grey strip below
# counts cases per bin. (`calibtut.metrics.reliability` prepares what a diagram shows from the
# bins, `calibtut.plots` draws it.)

# %%
plots.reliability_diagram(reliability(toy_bins), list(models))

# %% [markdown]
# The calibrated model follows the diagonal up to noise (a bin of a few hundred cases has a
# sampling error of a few percent, which is why even a perfect model's ECE is not zero). The
# overconfident model traces an S: above 0.5 its bars fall *below* the diagonal (it says 0.9,
# and is right less often), below 0.5 they rise *above* it (it says 0.1 and the class is there
# more often: it was too sure of the absence). The underconfident model draws the mirror image.
# All three have the same accuracy: calibration is a property of the probabilities, not of
# the decisions.
#
# ### Exercise 2 · Reading a diagram
#
# On the overconfident model's diagram, do the bars *below* a confidence of 0.5 lie `"above"`
# or `"below"` the diagonal? Answer from what overconfidence means, then look again.

# %%
ex.direction.check(...)  # your answer: "above" or "below"
#
# ## Segmentation is different
#
# A segmentation network makes one prediction per voxel and class. Calibration is evaluated
# **marginally**: each class channel on its own, as the binary question "is this voxel of class
# $c$?", with all of an image's voxels as the cases. And it is evaluated **per image**: the bins
# are filled with one image's voxels, the errors computed, and only then averaged over images,
# so that every patient counts once, however large.
#
# Our test subject is a hand-made prediction on one of calibtut's synthetic images. The "model"
# knows the true shapes but the annotation, like a second annotator's, moves every boundary
# by about a pixel; the model is sure of itself everywhere, so it is confidently wrong along
# the boundaries, as trained networks are (`calibtut.data.toy_segmentation` says exactly how it
# is made).

# %%
toy = toy_segmentation(seed=1)
segmentation_bins = hard_binning(toy.probs, toy.target, num_bins)
plots.reliability_diagram(
    reliability(segmentation_bins), toy.class_names, title="one image, 64 x 64 voxels"
)

# %% [markdown]
# Look at the counts strips. For the *organ* channel, thousands of voxels sit in the first bin
# (far from the organ, $\hat p \approx 0$, correctly absent) and hundreds in the last; the
# miscalibrated middle bins hold a few dozen voxels each. ECE weighs the bins by these counts, so
# the crowd of easy voxels drowns the boundary:

# %%
segmentation_errors = pd.DataFrame(
    {
        name: calibration_error(toy.probs, toy.target, num_bins, reduction=reduction)[0]
        for name, reduction in (("ECE", "expected"), ("ACE", "average"), ("MCE", "maximum"))
    },
    index=list(toy.class_names),
)
display(segmentation_errors)

# %% [markdown]
# An ECE of two or three percent reads as "well calibrated", yet the ACE shows that a typical
# occupied bin is off by 20 to 40 points, and the MCE that one bin is off by more than half.
# Background voxels (and, per class, every voxel of the other classes) make the ECE of a
# segmentation small almost whatever the model does near boundaries. This is why the paper
# reports, and optimises, the **ACE**: each occupied bin counts once, so the boundary bins, where
# a reader needs the probabilities, carry the same weight as the easy ones.
#
# ### How much of that is noise? The ACE noise floor
#
# A bin of a few voxels cannot match its mean probability even when the model is perfectly
# calibrated: five voxels at $\hat p = 0.3$ hold 0, 1, 2, ... positives, never 1.5. How large
# is this sampling gap on our image? Keep the model's probabilities, replace the annotation by
# labels drawn from those very probabilities ($y \sim \text{Bernoulli}(\hat p)$, a model that is
# calibrated by construction) and measure the ACE again; averaged over many draws this is the
# **noise floor** of the ACE, `calibtut.metrics.noise_floor`. An ACE means something only as
# far as it rises above its floor.

# %%
floor_64 = views.floor_table(toy.probs, toy.target, toy.class_names, num_bins)
display(floor_64.round(3))

# %% [markdown]
# A typical middle bin of this 64 x 64 image holds between 3 and 12 voxels of a class, so a
# perfectly calibrated model would already show an ACE of 0.13 to 0.21: of the 20 to 40 points
# by which a typical bin is off, about half is sampling noise, and the ACE here is only 1.6 to
# 2 times its floor. The remedy is more voxels per bin. The same kind of prediction on a
# 384 x 384 image (larger structures, longer boundaries):

# %%
large = toy_segmentation(seed=1, size=384)
display(views.floor_table(large.probs, large.target, large.class_names, num_bins).round(3))

# %% [markdown]
# The background's middle bins now hold 77 voxels instead of 4, and its floor falls from 0.13 to
# 0.02 while its ACE, 0.18, barely moves: there the ACE now measures the model, not the
# sampling. The organ's and the ring's floors fall by a third to a half (a few bins stay
# sparse), and the lesion, as small as before, still has 3 voxels per bin and a high floor. The
# paper's 3-D scans hold thousands of voxels per bin; calibtut's default training data
# (notebook 03) are 384 x 384 scans with dozens of structures each, so that a trained model's
# per-image ACE stands well above its floor, and every table shows the floor beside the ACE.
#
# ### Exercise 3 · An open question
#
# A perfectly calibrated model scores an ACE of about 0.13 on the 64 x 64 image. Why, and what
# would lower that floor? Write your answer, then compare it with `ex.floor.solution()`.

# %%
ex.floor.check(...)  # your answer, as a string

# %% [markdown]
# ### Per image, then averaged (macro), or pooled (micro)?
#
# With several images there are two ways to get one number per class. *Macro*: the errors of
# each image, then their mean over images. *Micro*: all images' voxels poured into one set of
# bins, then one error. Here are two images, a sharp (overconfident) prediction and a softer one:

# %%
second = toy_segmentation(seed=3, sharpness=2.5)
two_images = hard_binning(
    torch.cat([toy.probs, second.probs]), torch.cat([toy.target, second.target]), num_bins
)
per_image_ace = calibration_errors(two_images).ace
ace_table = pd.DataFrame(
    {
        "image 1 (sharp)": per_image_ace[0],
        "image 2 (soft)": per_image_ace[1],
        "macro: mean of the two": macro_average(per_image_ace),
        "micro: pooled bins": micro_errors(two_images).ace[0],
    },
    index=list(toy.class_names),
)
display(ace_table)

# %% [markdown]
# The two disagree because pooling mixes the images before comparing: the sharp image's
# overconfident bins and the soft image's underconfident ones can cancel in a pooled bin, and an
# image with many voxels in a bin outweighs one with few. Macro answers "how calibrated is the model on a
# typical image?", the question a clinician looking at one scan asks, and it is the convention
# of the paper and of calibtut's per-image tables. Notebook 08 shows the pooled view too, as
# dataset reliability histograms.
#
# ## What we learned, in numbers
#
# The last cell records the results (the tests check them: the hand computation equals
# calibtut's, the segmentation's ECE is far below its ACE, and its ACE above its floor).

# %%
course.save_result(
    run_root,
    "01_what_is_calibration",
    {
        "num_bins": num_bins,
        "toy_by_hand": by_hand,
        "toy_calibtut": from_calibtut,
        "segmentation": segmentation_errors,
        "floor_64": floor_64,
        "ace_per_image": per_image_ace,
        "ace_macro": macro_average(per_image_ace),
        "ace_micro": micro_errors(two_images).ace[0],
        "exercises": exercises.status(),
    },
)

# %% [markdown]
# ## What you learned
#
# * A model is calibrated when a bin it calls $p$ holds positives a fraction $p$ of the time;
#   overconfidence is a prediction more extreme than the truth, below the diagonal above 0.5 and
#   above it below 0.5.
# * ECE weighs bins by their counts, so a segmentation's crowd of easy voxels makes it small;
#   ACE weighs every occupied bin once, so the boundary bins count; MCE is the worst bin.
# * Segmentation calibration is marginal (per class) and per image, then averaged (macro).
# * A bin of a few voxels shows a gap even for a perfect model: the noise floor. Read an ACE
#   against its floor; more voxels per bin lower it.
#
# **Next**: notebook **02** turns the ACE into a loss that a network can be trained with.
#
# **References**: Guo et al., *On Calibration of Modern Neural Networks*, ICML 2017 (reliability
# diagrams, the ECE in deep learning); Naeini et al., *Obtaining Well Calibrated Probabilities
# Using Bayesian Binning*, AAAI 2015 (the ECE and MCE); Nixon et al., *Measuring Calibration in
# Deep Learning*, CVPR Workshops 2019 (the *adaptive* calibration error, another "ACE");
# Mehrtash et al., *Confidence Calibration and Predictive Uncertainty Estimation for Deep
# Medical Image Segmentation*, IEEE TMI 2020; Barfoot et al., *Average Calibration Error: A
# Differentiable Loss for Improved Reliability in Image Segmentation*, MICCAI 2024
# ([arXiv 2403.06759](https://arxiv.org/abs/2403.06759)); Barfoot et al., *Average Calibration
# Losses for Reliable Uncertainty in Medical Image Segmentation*, IEEE TMI 2026
# ([arXiv 2506.03942](https://arxiv.org/abs/2506.03942)).
