# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/calibtut/calibtut/blob/main/notebooks/09_paper_results.ipynb)
#
# # 09 · The paper's results, reproduced from its published per-image data
#
# Barfoot et al. trained twelve main runs: ACDC, AMOS, KiTS23 and BraTS21, each with Dice + CE
# (the baseline), + hard mL1-ACE and + soft mL1-ACE. They published the test results of every
# run **image by image** in their repository,
# [cai4cai/Average-Calibration-Losses](https://github.com/cai4cai/Average-Calibration-Losses):
# per test image and class, Dice, ECE, ACE and MCE. From these files the paper's main table can
# be recomputed, checked, and extended, and your own runs can be put beside it, image by image.
#
# `calibtut.paper` downloads the files once (they are cached) from the commit the results were
# published at, or reads a local copy (`paper_root`).

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
data_dir = None  # not used: the results are the paper's files and your run directories
device = None  # not used: nothing runs a network
epochs = None  # not used: nothing trains
run_root = "runs"  # your runs of notebooks 04-07 (compared when present), and the results
paper_root = None  # None: download the paper's files; or a local copy with their bundles/ layout

# %% [markdown]
# ## The published per-image results
#
# One row per run, test image and metric. Per image, each metric is the mean over the
# dataset's classes, as in the authors' files: calibration errors over all classes, Dice over
# the classes present in the image.

# %%
from IPython.display import Markdown, display

from calibtut import course, paper, plots

published = paper.paper_frame(paper_root)
display(published.head())
test_images = published[published["metric"] == "dice"].groupby(["dataset", "loss"]).size()
test_images = test_images.unstack("loss").reindex(list(paper.PAPER_DATASETS))
display(test_images)

# %% [markdown]
# ## The main table
#
# The paper reports, per dataset and metric, the change of each calibration loss against the
# baseline as a **per-image percentage**,
#
# $$\Delta_i = \frac{m_i^{\text{loss}} - m_i^{\text{baseline}}}{m_i^{\text{baseline}}} \times 100,$$
#
# summarised as mean ± standard deviation over the test images (the population standard
# deviation, as the authors' script computes it); *all* pools the 498 images of the four
# datasets into one sample. Negative is better for ECE, ACE and MCE, positive for Dice.

# %%
table = paper.percentage_change_table(frame=published)
display(Markdown(paper.percentage_change_markdown(table)))

# %% [markdown]
# These are the paper's numbers: on ACDC, for instance, hard mL1-ACE lowered the ACE by
# 22.36 ± 15.05% and soft by 41.18 ± 16.09%, with Dice changes of +0.07 ± 2.42% and
# -1.09 ± 2.35%. Read across the datasets:
#
# * **soft** binning lowers the ACE on every dataset, by 18 to 41% on average, and the MCE
#   with it; **hard** binning lowers them less, and on AMOS and BraTS barely;
# * the **Dice** moves by 2.4% at most on average: calibration is bought almost for free,
#   soft binning costing a little more than hard;
# * the **ECE** behaves erratically (KiTS: +63 ± 300% for hard): it is tiny on these images
#   (notebook 01), so small absolute changes are huge percentages. The ACE, which the losses
#   optimise, is the metric to read.
#
# The authors tested significance with a paired t-test; calibtut adds a two-sided paired
# **Wilcoxon signed-rank** test on the raw per-image values, which does not assume normal
# differences (the percentages are heavy-tailed):

# %%
p_values = table.pivot_table(index=["dataset"], columns=["metric", "loss"], values="p_value")
display(p_values.reindex([*paper.PAPER_DATASETS, "all"]).map(lambda p: f"{p:.1g}"))

# %% [markdown]
# ## The values behind the percentages
#
# Percentages hide the scale. The mean per-image values:

# %%
means = published.pivot_table(index=["dataset", "loss"], columns="metric", values="value")
display(means.reindex(list(paper.PAPER_DATASETS), level="dataset").round(4))

# %% [markdown]
# And their spread, image by image: a box per loss and dataset, for the ACE and the Dice. The
# boxes of the calibration losses sit lower in ACE while the Dice boxes barely move; each
# dataset has a tail of difficult images with a low Dice, much the same under the three losses.

# %%
plots.plot_per_image_distributions(published, metrics=("ace", "dice"))

# %% [markdown]
# ## Your runs beside the paper
#
# Runs you trained on the real datasets in notebooks 04-07 (or with `calibtut train`) are read
# from `run_root` with the same per-image convention and tabulated the same way, under the
# source "yours" (runs on phantoms are left out). Your test sets follow the paper's splits
# where it published them (ACDC, AMOS and KiTS23; for BraTS see notebook 07).

# %%
comparison = paper.compare_with_runs(paper_root, run_root, list(paper.PAPER_DATASETS))
with_yours = None
if comparison is not None and "yours" in set(comparison.frame["source"]):
    with_yours = paper.percentage_change_table(frame=comparison.frame)
    display(Markdown(paper.percentage_change_markdown(with_yours)))
    display(plots.plot_per_image_distributions(comparison.frame, metrics=("ace", "dice")))

# %% [markdown]
# Without runs of your own, train them in notebooks 04-07 (the data and a GPU needed) and run
# this notebook again. The last cell records the reproduced table (and yours, if any):

# %%
course.save_result(
    run_root,
    "09_paper_results",
    {
        "test_images": test_images,
        "table": table.to_dict(orient="records"),
        "with_yours": None if with_yours is None else with_yours.to_dict(orient="records"),
    },
)
