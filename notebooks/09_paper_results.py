# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/calibtut/calibtut/blob/main/notebooks/09_paper_results.ipynb)
#
# # 09 · The paper's results, reproduced from its published per-image data
#
# Barfoot et al., *Average Calibration Losses for Reliable Uncertainty in Medical Image
# Segmentation*, [arXiv 2506.03942](https://arxiv.org/abs/2506.03942); journal version: IEEE
# Transactions on Medical Imaging (2026),
# [doi:10.1109/TMI.2026.3673118](https://doi.org/10.1109/TMI.2026.3673118).
#
# The authors trained twelve main runs: ACDC, AMOS, KiTS23 and BraTS21, each with Dice + CE
# (the baseline), + hard mL1-ACE and + soft mL1-ACE. They published the test results of every
# run **image by image** in their repository,
# [cai4cai/Average-Calibration-Losses](https://github.com/cai4cai/Average-Calibration-Losses):
# per test image and class, Dice, ECE, ACE and MCE, with the scripts of their analyses. From these
# files this notebook recomputes those analyses (the main table, its significance tests, the
# table on the images with every class present, the count of missing classes) and puts your own
# runs beside them, image by image.
#
# `calibtut.paper` downloads the files once (they are cached) from the commit the results were
# published at, or reads a local copy: set `paper_root` to a clone of the authors' repository (or
# a copy of its `bundles/` folder). Offline and without a copy, the notebook says so and shows
# your runs only.
#
# **You will learn to**
#
# * rebuild the paper's main table from its published per-image results;
# * compute per-image percentage changes and the paper's paired t-test, with a Wilcoxon test
#   beside it, and say when they disagree;
# * restrict a comparison to complete cases and count missing classes;
# * put your own runs beside the paper's, image by image.

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
overwrite = False  # not used: nothing trains
run_root = "../runs"  # the repository's runs/ folder, shared by make demo and every notebook
paper_root = None  # None: download the paper's files; or a local copy with their bundles/ layout

# %% [markdown]
# ## The published per-image results
#
# One row per run, test image and metric. Per image, each metric is the mean over the
# dataset's classes, as in the authors' files: calibration errors over all classes, Dice over
# the classes present in the image.

# %%
import pandas as pd
from IPython.display import Markdown, display

from calibtut import course, paper, plots

published = paper.if_available(paper.paper_frame, paper_root)  # None, saying why, if unavailable
test_images = None
if published is None:
    print(
        "Without the paper's files the sections on its results are skipped; "
        "your runs (if any) are shown at the end."
    )
else:
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
table = None
if published is not None:
    table = paper.percentage_change_table(frame=published)
    display(Markdown(paper.percentage_change_markdown(table)))

# %% [markdown]
# These are the paper's numbers: on ACDC, for instance, hard mL1-ACE lowered the ACE by
# 22.36 ± 15.05% and soft by 41.18 ± 16.09%, with Dice changes of +0.07 ± 2.42% and
# -1.09 ± 2.35%. Read across the datasets:
#
# * **soft** binning lowers the ACE on every dataset, by 18 to 41% on average, and the MCE by
#   19 to 45%; **hard** binning lowers them less: by 22 to 23% on ACDC, by 2 to 5% on AMOS
#   and BraTS;
# * the **Dice** shows the price. With soft binning it falls on ACDC (-1.09%), AMOS (-0.64%) and
#   BraTS (-2.41 ± 8.54%: 170 of 200 images lose Dice, by 1.2% at the median, and a few lose
#   much more: one image drops from 0.27 to 0); with hard binning it moves by 0.22% or less on
#   ACDC, AMOS and BraTS. On KiTS both mean changes are positive
#   (+1.93% hard, +0.96% soft), yet most KiTS images *lose* Dice (66 and 75 of 98): a few large
#   gains pull the mean up (± 16.37 and ± 11.01%). This is the trade-off the authors' abstract
#   states: the soft variant "yields the greatest improvements in calibration, but often
#   compromises segmentation performance", while hard mL1-ACE maintains it "albeit with weaker
#   calibration improvement";
# * the **ECE** behaves erratically (KiTS: +62.96 ± 300.28% for hard): it is tiny on these
#   images (the mean values below: 0.0002 to 0.0016, against an ACE of 0.08 to 0.16; the
#   crowd of easy background voxels, notebook 01), so small absolute changes are huge
#   percentages. The ACE, which the losses optimise, is the metric to read.

# %% [markdown]
# ## Is a change significant? The paired t-test, and a rank test beside it
#
# The paper's significance test is the **paired t-test** (the authors' `calc_p_vals.py`:
# `scipy.stats.ttest_rel` on the per-image values, baseline against each loss); `p_value` below
# reproduces their `p-val_results.md` (e.g. ACDC ACE: hard 7.0e-26, soft 1.4e-42; KiTS Dice
# hard: 0.65). calibtut adds the *all* rows, and, as a robustness check, the two-sided paired
# **Wilcoxon signed-rank** test (`p_wilcoxon`), which does not assume normal differences.

# %%
if table is not None:
    p_values = table.pivot_table(
        index="dataset", columns=["loss", "metric"], values=["p_value", "p_wilcoxon"]
    )
    p_values = p_values.reindex([*paper.PAPER_DATASETS, "all"])
    display(p_values[["p_value", "p_wilcoxon"]].map(lambda p: f"{p:.2g}"))
    disagree = table[(table["p_value"] < 0.05) != (table["p_wilcoxon"] < 0.05)]
    print("Where the two tests disagree at the 0.05 level:")
    display(disagree[["dataset", "metric", "loss", "mean", "std", "p_value", "p_wilcoxon"]])

# %% [markdown]
# On this data the two tests **can disagree**, because the per-image differences are
# heavy-tailed: a few images with large differences dominate the t-test's mean and standard
# deviation, while the rank test weighs each image by its rank and so responds to a consistent
# shift of most images. On KiTS, hard mL1-ACE's Dice has t-test p = 0.65 but Wilcoxon
# p = 0.027: 66 of 98 images lose a little Dice, a few gain a lot, so the mean difference is near
# zero and its spread wide. BraTS ECE with hard mL1-ACE: 0.63 against 0.0013 (123 of 200 images
# lower, one image's ECE up by far more than the others). Neither test is wrong; they ask
# different questions (is the mean difference zero? is a typical image's difference zero?), and
# for the ACE and MCE, the metrics the losses optimise, both tests agree.

# %% [markdown]
# ## The values behind the percentages
#
# Percentages hide the scale. The mean per-image values:

# %%
if published is not None:
    means = published.pivot_table(index=["dataset", "loss"], columns="metric", values="value")
    display(means.reindex(list(paper.PAPER_DATASETS), level="dataset").round(4))

# %% [markdown]
# And their spread, image by image: a box per loss and dataset, for the ACE and the Dice. The
# soft boxes sit lower in ACE on every dataset; the hard ones clearly on ACDC and KiTS, a little
# on BraTS, barely on AMOS. The Dice boxes move far less than the ACE boxes, and each dataset has
# a tail of difficult images with a much lower Dice under all three losses (on BraTS and KiTS
# down to about 0.3; on BraTS one soft image at 0).

# %%
if published is not None:
    display(plots.plot_per_image_distributions(published, metrics=("ace", "dice")))

# %% [markdown]
# ## Images with every class present
#
# Some test images lack a class in their ground truth: its Dice is undefined (left out of the
# image's mean Dice), while its calibration errors are still computed and averaged in. The
# authors count them (`count_empty_classes.py`): per class, the test images lacking it. In KiTS
# and BraTS the flags are the raw labels (KiTS's cyst; BraTS's necrotic core, oedema, enhancing
# tumour), not the overlapping regions the metrics score.

# %%
missing = paper.if_available(paper.missing_classes_report, paper_root)
if missing is not None:
    display(missing.cases)
    display(missing.per_class[missing.per_class["missing"] > 0])

# %% [markdown]
# The authors then evaluated the complete images alone (`calc_percentage_change_complete_cases.py`;
# ACDC, complete, keeps its full results), the second table of their `perc-change_results.md`:

# %%
complete = paper.if_available(paper.complete_cases_table, paper_root)
if complete is not None:
    display(Markdown(paper.percentage_change_markdown(complete)))

# %% [markdown]
# The picture is the same on AMOS and BraTS (a few images fewer, the changes within about one
# point). On KiTS, where 55 of the 98 test images have no cyst, the complete images show a
# larger and steadier calibration gain, e.g. hard mL1-ACE's ACE -15.50 ± 40.60% on the 43
# complete images against -8.12 ± 76.88% on all 98, and hard's ECE +34.14 ± 87.90% against
# +62.96 ± 300.28%: the incomplete images carry much of the spread.

# %% [markdown]
# ## Your runs beside the paper
#
# Runs you trained on the real datasets in notebooks 04-07 (or with `calibtut train`) are read
# from `run_root` with the same per-image convention and tabulated the same way, under the
# source "yours" (runs on phantoms are left out: their numbers are a pipeline check). Your test
# sets follow the paper's splits where it published them (ACDC, AMOS and KiTS23; for BraTS see
# notebook 07).

# %%
yours = paper.real_data_runs_frame(run_root, list(paper.PAPER_DATASETS))
with_yours = None
if yours is not None:
    beside = yours if published is None else pd.concat([published, yours], ignore_index=True)
    with_yours = paper.percentage_change_table(frame=beside)
    display(Markdown(paper.percentage_change_markdown(with_yours)))
    display(plots.plot_per_image_distributions(beside, metrics=("ace", "dice")))

# %% [markdown]
# Without runs of your own, train them in notebooks 04-07 (the data and a GPU needed) and run
# this notebook again. The last cell records the reproduced tables (and yours, if any):

# %%
course.save_result(
    run_root,
    "09_paper_results",
    {
        "paper_available": published is not None,
        "test_images": None if test_images is None else test_images,
        "table": None if table is None else table.to_dict(orient="records"),
        "complete_cases": None if complete is None else complete.to_dict(orient="records"),
        "missing_classes": None if missing is None else missing.cases.to_dict(orient="records"),
        "with_yours": None if with_yours is None else with_yours.to_dict(orient="records"),
    },
)

# %% [markdown]
# ## What you learned
#
# * The paper's table follows from its per-image files: mean ± std of per-image percentage
#   changes against the baseline, with the paired t-test.
# * Soft binning lowered the ACE on all four datasets, most on ACDC (−41 %); its Dice changes ran
#   from +1.0 % (KiTS23) to −2.4 % (BraTS21): a trade-off to check on each dataset, not a free
#   gain.
# * Two tests can disagree on the same data; report the one you chose before looking.
#
# **Next**: **10** compares other calibration methods on the synthetic data.
#
# **References**: Barfoot et al., *Average Calibration Losses for Reliable Uncertainty in
# Medical Image Segmentation*, IEEE TMI 2026 ([arXiv 2506.03942](https://arxiv.org/abs/2506.03942));
# Barfoot et al., MICCAI 2024 ([arXiv 2403.06759](https://arxiv.org/abs/2403.06759));
# Student, *The Probable Error of a Mean*, Biometrika 1908 (the t-test); Wilcoxon, *Individual
# Comparisons by Ranking Methods*, Biometrics Bulletin 1945; Mehrtash et al., IEEE TMI 2020.
