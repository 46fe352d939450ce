# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/calibtut/calibtut/blob/main/notebooks/08_exploring_reliability.ipynb)
#
# # 08 · Exploring reliability
#
# A table of mean ACE values says *that* one model is better calibrated than another. To
# trust a model with a patient you also want to know *where* and *how* it is miscalibrated:
# on which images, for which structures, overconfident or underconfident. This notebook
# explores trained runs with two interactive explorers:
#
# * the **image explorer**: one test image under several runs, its reliability diagrams per
#   class, its metrics, and the image with its ground truth, prediction, probability map and
#   errors;
# * the **dataset explorer**: dataset reliability histograms, which summarise every test image
#   at once, per class, beside the macro and micro calibration errors.
#
# Both read only the run directories: the bins saved by evaluation (`bins.npz`) redraw every
# diagram without running the network, so runs trained on a GPU elsewhere can be explored on a
# laptop. By default the notebook explores the synthetic runs of `make demo` and notebook 03
# (training them first if they are not there); set `runs_folder` to explore others, e.g.
# `"../runs/acdc"`.
#
# **You will learn to**
#
# * find the images and classes where a model is miscalibrated, and whether a loss helped them;
# * read a dataset reliability histogram: what one count means, the diagonal, over- and
#   underconfidence on both sides of 0.5;
# * tell a gap from a noisy bin of a few voxels (the counts strips, the noise floor);
# * explain the failure modes the histograms show (thin and small structures).
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
smoke = False  # True: a few training steps on small settings, if runs must be trained
data_dir = None  # not needed for the synthetic runs
device = None  # None: the GPU if there is one, else the CPU (only used to train missing runs)
epochs = None  # None: the synthetic preset's 20, as in notebook 03
run_root = "../runs"  # the repository's runs/ folder, shared by make demo and every notebook
runs_folder = None  # None: the synthetic runs of make demo and notebook 03; or a folder of runs
overwrite = False  # True: retrain runs made with other settings (e.g. after changing epochs)
solutions = False  # True: every exercise checks its model answer (what the tests also run)

# %% [markdown]
# ## The runs
#
# The evaluated runs under `runs_folder`: by default those of `make demo` and notebook 03, in
# `runs/demo/synthetic/`. If there are none, those three runs are trained first, with the
# parameters above (a few minutes on a CPU).

# %%
from pathlib import Path

import pandas as pd
from IPython.display import display

from calibtut import course, exercises, views
from calibtut.runs import find_runs
from calibtut.widgets import ALL_CLASSES, DatasetExplorer, ImageExplorer

exercises.use_solutions(solutions)
ex = exercises.notebook("08")

if runs_folder is None:
    runs_folder = Path(run_root) / "demo" / "synthetic"
    if not (runs_folder.is_dir() and find_runs(runs_folder)):
        settings = course.resolve_settings(
            "synthetic",
            smoke=smoke,
            device=device,
            epochs=epochs,
            run_root=runs_folder.parent,
            overwrite=overwrite,
        )
        settings.train(data_dir)
found = find_runs(runs_folder)
by_loss = views.by_loss(found)
print("\n".join(f"{run.name}: {run.path}" for run in found))

# %% [markdown]
# ## One image at a time
#
# Pick runs on the left (hold Ctrl or Shift for several), a class and the number of bins (the
# saved bins merged exactly). To find the images worth a look, `sort by` ranks the test images
# by ACE, Dice, MCE, the noise floor, ACE / floor or the change from the baseline (each id shows
# its value), `keep` narrows the range, and `previous`/`next` step through the list. The table
# gives the image's metrics under each run; below are its reliability diagrams (one row per
# run; `diagrams: gap change` shows instead, per bin, how much each loss changed the
# baseline's gap on this image) and the image, ground truth, prediction, the class's
# probability and errors (evaluation saves every test image's prediction). `save PNG + PDF`
# writes the figures into `figures/`.

# %%
images = ImageExplorer(found)
display(images)

# %% [markdown]
# Which image should you look at first? The one where the runs disagree most is a good
# start. Per test image, the ACE averaged over classes, for each run, and the image where the
# soft loss changed it most (either way):

# %%
ace_per_image = pd.DataFrame(
    {loss: run.results().image_means()["ace"] for loss, run in by_loss.items()}
)
change = (ace_per_image["soft"] - ace_per_image["baseline"]).abs()
most_changed = change.idxmax()
display(ace_per_image.loc[[most_changed]])
images.image.value = most_changed  # what choosing it in the dropdown does
images.class_index.value = ALL_CLASSES  # and "all classes" in the class dropdown

# %% [markdown]
# It may well be an image the soft loss made *worse*: a better mean over the test set does not
# mean that every image improved, and only the per-image view shows which ones did not.
#
# ### Exercise 1 · Which image got worse?
#
# From `ace_per_image`, find the image whose ACE the soft loss *raised* the most over the
# baseline, and check your answer with `ex.worse_image.check(answer, ace_per_image)`. Then
# choose it in the explorer and look for what went wrong.

# %%
worse = ...  # your answer: an image id from ace_per_image's index
ex.worse_image.check(worse, ace_per_image)

# %% [markdown]
# Back to the most changed image. The
# explorer above now shows that image, all classes at once. (In a notebook without a running
# kernel, a static page, widgets stay blank, so here is what it draws.)

# %%
display(images.metrics_table, images.diagram_figure)

# %% [markdown]
# Check the counts strips before trusting a bar: a bin that holds one or two voxels can show a
# gap of almost 1 and set the image's MCE on its own. The ACE gives such a bin one vote among
# the occupied bins, the MCE gives it all of them, one reason why the paper optimises and
# reports the ACE.

# %% [markdown]
# ## The whole test set: dataset reliability histograms
#
# A reliability diagram per image is detailed but there are dozens of images. A **dataset
# reliability histogram** keeps the detail and drops the image count. For every test image
# and every occupied confidence bin $k$ (x axis) it adds one count at the bin $j$ (y axis) of
# that bin's mean ground truth. So each image contributes up to 20 counts per class, and:
#
# * a calibrated model puts its mass on the **diagonal**;
# * right of the middle (confidence above 0.5), mass **below** the diagonal is overconfidence:
#   the model said 0.8 and the class was there less often; left of the middle, mass **above**
#   the diagonal is overconfidence too, about the class's absence (it said 0.2 and the class
#   was there more often);
# * mass on the other side of the diagonal is underconfidence;
# * the colour is how many images put a bin there, on a log scale; the strip below each panel is
#   the number of voxels per confidence bin, pooled over the test set.
#
# The explorer shows one row per selected run: a panel for the chosen class (or every class)
# and the average of all classes. The table beside it gives macro (per image, then averaged)
# and micro (pooled bins) ECE, ACE and MCE. The `bins` control merges neighbouring bins
# (exactly, from the saved sums) to see how the picture depends on the number of bins; `show`
# switches to the differences from the baseline (below) and the per-image ACE. To see
# what lies behind a cell, choose it under `cell` (fullest first): the images that put a count
# there are listed, and `open in image explorer` shows the chosen one in the explorer above.

# %%
dataset = DatasetExplorer(found, image_explorer=images)
display(dataset)

# %% [markdown]
# The same with every class, as static output:

# %%
dataset.class_index.value = ALL_CLASSES
display(dataset.figure, dataset.table)

# %% [markdown]
# ### Exercise 2 · One count
#
# In a lesion panel with 20 bins, a count sits at confidence bin 16 (0.80–0.85) and ground-truth
# bin 12 (0.60–0.65). Is it `"overconfident"`, `"underconfident"` or `"calibrated"`?

# %%
ex.cell.check(...)  # your answer

# %% [markdown]
# ## What the histograms show that one number hides
#
# **Direction.** An ACE of 0.15 may be overconfidence, underconfidence or both. Sorting each
# histogram's counts by the rules above tells them apart: a count is *overconfident* when the
# predicted probability is more extreme than the truth of its bin (further from 0.5 on the same
# side, or on the wrong side), *underconfident* when it is less extreme
# (`calibtut.metrics.confidence_direction`).

# %%
direction = views.confidence_directions(by_loss)
display(direction.round(3))

# %% [markdown]
# ### Exercise 3 · The rule in code
#
# Write `over_share(histogram)`: the share of a (ground-truth bin × confidence bin) count matrix
# that is overconfident, by the rule above. The check runs it on histograms you do not see.


# %%
def over_share(histogram):
    # your code here: return a number between 0 and 1
    ...


ex.over_share.check(over_share)

# %% [markdown]
# **Failure modes.** The baseline's *ring* panel shows a classic one: its top confidence bins
# (0.85 and above) lie below the diagonal, their voxels ring only three or four times in five.
# A thin structure's every voxel is near a boundary, and the Dice + cross-entropy network is
# too sure of it; the hard and soft rows pull those bins towards the diagonal (with hard, the
# network almost stops predicting the ring above 0.95, and the few voxels left there scatter
# the top bins). The baseline's *lesion* mass lies below the diagonal from the middle up: a
# small structure, most of whose voxels are near its edge, predicted more surely than the
# annotation bears out; both losses bring it back towards the diagonal. The *organ*, large and
# smooth, stays close to the diagonal in all three rows. The mean ACE mixes these; the
# histograms keep them apart.
#
# ### Exercise 4 · An open question
#
# Why do the baseline's top ring bins lie below the diagonal, and why do the calibration losses
# help most there? Write your answer, then compare it with `ex.ring.solution()`.

# %%
ex.ring.check(...)  # your answer, as a string

# %% [markdown]
# **Where it happens.** Every image has bins in the bottom-left and top-right corners: its
# easy voxels, surely absent or surely present, and right. The middle of each panel is the
# boundary voxels. A calibration loss that helps pulls the middle towards the diagonal, and the
# rows of the explorer put the runs side by side to compare exactly that.
#
# ## Differences from the baseline
#
# Side by side, the rows still leave the subtraction to the eye. The **gap change** does it:
# per confidence bin, the loss's gap $|\bar p - \bar y|$ minus the baseline's, paired image by
# image and averaged over the images that have the bin under both runs
# (`views.bin_gap_changes`). Green bars are bins where the loss lowered the gap, red where it
# raised it. The image explorer shows the same for one image, the dataset explorer under `show`.

# %%
display(views.gap_change_figure(by_loss))

# %% [markdown]
# A mean change can hide images that went the other way. Here is the change of each image's
# ACE (class mean, each loss minus the baseline), one dot per image; the images beyond 1.5
# interquartile ranges of the quartiles (Tukey's outliers) are ringed and named, and listed
# below: the images to open in the explorer first.

# %%
ace_change = views.image_distribution(by_loss, "ACE change from baseline")
display(views.distribution_figure(by_loss, "ACE change from baseline"))
display(ace_change.outliers)

# %% [markdown]
# The numbers, for the record:

# %%
course.save_result(
    run_root,
    "08_exploring_reliability",
    {
        "runs": {run.name: run.path for run in found},
        "most_changed_image": most_changed,
        "ace_per_image": ace_per_image.loc[most_changed],
        "dataset_table": dataset.table.reset_index().to_dict(orient="records"),
        "direction": direction.reset_index().to_dict(orient="records"),
        "exercises": exercises.status(),
    },
)

# %% [markdown]
# ## What you learned
#
# * The image explorer shows one image under several runs: its metrics, its reliability
#   diagrams per class, and where on the image the errors and uncertain voxels are.
# * A better mean ACE does not mean every image improved: look at the images a loss made worse.
# * A dataset reliability histogram puts one count per image and occupied bin at (confidence
#   bin, ground-truth bin): the diagonal is calibrated, and overconfidence lies below it above
#   0.5 and above it below 0.5.
# * Thin and small structures, every voxel near a boundary, are where Dice + CE is most
#   overconfident and where the calibration losses help most.
#
# **Next**: notebook **09** puts the paper's own published results, image by image, beside yours.
#
# **References**: Barfoot et al., *Average Calibration Losses for Reliable Uncertainty in
# Medical Image Segmentation*, IEEE TMI 2026 ([arXiv 2506.03942](https://arxiv.org/abs/2506.03942))
# (dataset reliability histograms); Barfoot et al., MICCAI 2024
# ([arXiv 2403.06759](https://arxiv.org/abs/2403.06759)); Guo et al., ICML 2017 (reliability
# diagrams); Naeini et al., AAAI 2015; Nixon et al., CVPR Workshops 2019 (the *adaptive*
# calibration error, a different "ACE"); Mehrtash et al., IEEE TMI 2020.
