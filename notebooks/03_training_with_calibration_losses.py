# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/calibtut/calibtut/blob/main/notebooks/03_training_with_calibration_losses.ipynb)
#
# # 03 · Training with calibration losses
#
# The paper's experiment in miniature: the same network trained three times, with
#
# * **baseline**: Dice + cross-entropy, $0.33\,\mathcal L_\text{Dice} + 0.33\,\mathcal L_\text{CE}$;
# * **hard**: the baseline $+\ 0.33\,\mathcal L_\text{mL1-ACE}$ with hard bins;
# * **soft**: the baseline $+\ 0.33\,\mathcal L_\text{mL1-ACE}$ with soft bins,
#
# then evaluated on held-out test images for segmentation quality (Dice) and calibration
# (ECE, ACE, MCE). The paper found that the hard loss lowers the ACE while keeping the Dice,
# and the soft loss lowers it further at a small Dice cost. We check this on calibtut's
# synthetic dataset, small enough to train on a CPU in a few minutes.
#
# **You will learn to**
#
# * train the three losses with one call, and find their runs on disk;
# * read the paper's statistics: per-image Δ% (a mean of ratios), the paired t-test, and the
#   ACE against its noise floor;
# * explain why pooled (micro) and per-image (macro) changes differ;
# * see where a loss changed the calibration: paired per-image values, reliability diagrams,
#   dataset reliability histograms and overlays.

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
smoke = False  # True: a few training steps on small settings (what the tests run)
data_dir = None  # not needed: the synthetic data is generated in memory
device = None  # None: the GPU if there is one, else the CPU; or "cuda", "mps", "cpu"
epochs = None  # None: the synthetic preset's 20 epochs
run_root = "../runs"  # the repository's runs/ folder, shared by make demo and every notebook
seed = 0  # the runs' seed: weights, data order and augmentation
overwrite = False  # True: retrain runs made with other settings (e.g. after changing epochs)
solutions = False  # True: every exercise checks its model answer (what the tests also run)

# %% [markdown]
# ## The data
#
# Each synthetic scan is 384 x 384 pixels holding structures of very different size over
# background: 18 *organs* (ellipses), 18 thin *rings* (4 to 6 pixels across) and 27 to 72
# small *lesions* inside the organs. The image is rendered from the true shapes with blur,
# noise and a bias field, but the label is drawn by a simulated rater whose boundary strays by
# about two pixels, independently from pixel to pixel: near every boundary no model can be
# sure, exactly where calibration matters. Because a scan holds so much boundary, a middle
# confidence bin of one scan holds hundreds of pixels, and the per-image ACE measures the model
# rather than the sampling (notebook 01's noise floor). 45 training, 12 validation and 20 test
# scans, generated from a seed; the network trains on random 128 x 128 patches (nine per scan
# per epoch) and is scored on whole scans with sliding-window inference, as on the paper's
# volumes. It has one softmax output per class; as in the paper the background is trained but
# not scored.

# %%
from pathlib import Path

from IPython.display import Markdown, display

from calibtut import course, exercises, report, views
from calibtut.data import spec

exercises.use_solutions(solutions)
ex = exercises.notebook("03")

synthetic = spec("synthetic")
print(synthetic.description)
display(synthetic.class_table())

# %% [markdown]
# ## Training
#
# A small MONAI U-Net (8 filters at the first level), AdamW with a warm-up and a cosine decay,
# the paper's loss weights and 20 bins. The table shows the preset beside what this notebook
# will train (they differ in smoke mode, or if you set `epochs`):

# %%
settings = course.resolve_settings(
    "synthetic",
    smoke=smoke,
    device=device,
    epochs=epochs,
    run_root=Path(run_root) / "demo",  # where make demo writes: its runs are reused here
    overwrite=overwrite,
)
display(settings.table())

# %% [markdown]
# Three runs, one per loss, each validated every 10 epochs (the weights with the best
# validation Dice are kept) and evaluated on the test scans. On a laptop CPU a run of 20
# epochs takes about a minute and a half, on a GPU a few seconds. The runs are written to
# `runs/demo/synthetic/<loss>/seed_0/`, where `make demo` writes them too: after `make demo`
# this cell only reads them, and running it again reuses finished runs.

# %%
runs = settings.train(data_dir, seed=seed)

# %% [markdown]
# ## Learning curves
#
# `history.csv` holds one row per epoch. The training losses of the three runs are not
# comparable (the calibration runs add a term), but the validation Dice and ACE are:

# %%
views.learning_curves(runs, ("train_loss", "val_dice", "val_ace"))

# %% [markdown]
# ## Results on the test images
#
# `calibtut.report` compares the runs the way the paper does. For each metric, the mean over
# test scans; in brackets after an ACE or MCE its **noise floor**, what a perfectly calibrated
# model would score on the same voxels (notebook 01): only the part above it can be lowered.
# For the hard and soft runs, **Δ%** is the paper's statistic: each scan's percentage change
# against the baseline, `(loss - baseline) / baseline * 100`, then the mean ± standard
# deviation of these per-scan ratios. It is *not* the change of the means: a scan whose
# baseline ACE is small weighs as much as one whose ACE is large, so Δ% can differ from the
# change of the table's means. `p` is the paper's paired t-test over scans, `p_W` the paired
# Wilcoxon signed-rank test beside it. Scopes: each class; *macro*, per scan the mean over
# classes, then over scans (the paper's numbers); *micro*, the errors of the bins pooled over
# all test scans. (`calibtut report runs/demo --out report/` writes the same table with figures
# from a terminal.)

# %%
table = report.report_table(list(runs.values()))
display(Markdown(report.report_markdown(table)))

# %% [markdown]
# Read the macro rows first. In our reference run (`make demo`, seed 0, on a CPU; a GPU or
# another seed gives somewhat different numbers) the baseline's per-scan ACE is 0.058 over a
# floor of 0.013, more than four times the floor. The **hard** loss lowered it by
# 34.7 ± 10.5% (p = 1.7e-11) at a Dice cost of 0.7%, the **soft** loss by 29.4 ± 12.1%
# (p = 4.4e-9) at a Dice cost of 0.9%. Measured above the floor, hard removed about half of
# the removable ACE (from 0.045 above the floor to 0.024) and soft more than a third (to 0.028).
# The ECE moves less (notebook 01: the crowd of easy voxels dominates it), and the MCE, the
# worst bin of each scan, does not change significantly: it is often set by a sparse
# high-confidence bin of a few voxels, and its floor is a third of its value. Compared with the
# paper's ACDC (hard −22%, soft −41%, soft's Dice −1.1%), the losses' gains and soft's Dice
# cost are of the same size, but here the soft loss lowers the ACE *less* than the hard one,
# and neither lowers the MCE. `calibtut demo --seeds 3` repeats the experiment over three seeds
# (its tables are in the README): pooled over the 60 scan pairs, hard −28.9 ± 13.4%
# (p = 2e-22) and soft −22.7 ± 13.7% (p = 1e-17), Dice −0.7% and −1.0%, and the order holds on
# every seed (hard −34.7%, −26.4%, −25.8%; soft −29.4%, −18.4%, −20.2%). Our networks train for
# 20 epochs, the paper's for 600 to 1250: whether soft binning needs longer training to show
# its strength is a question you can test by raising `epochs`.
#
# ### Exercise 1 · The paper's Δ%
#
# Write `pct_change(baseline, loss)`: from two arrays of per-image values (one per test image,
# same order), the paper's Δ%. Then `p_value(baseline, loss)`, the paper's test.


# %%
def pct_change(baseline, loss):
    # your code here
    ...


ex.pct_change.check(pct_change)


# %%
def p_value(baseline, loss):
    # your code here
    ...


ex.paired_test.check(p_value)

# %% [markdown]
# ### Exercise 2 · Above the floor
#
# Write `removed(baseline, loss, floor)`: the share of the baseline's removable ACE (the part
# above its noise floor) that a loss removed. With the macro numbers above, what share did the
# hard loss remove?


# %%
def removed(baseline, loss, floor):
    # your code here
    ...


ex.removed.check(removed)

# %% [markdown]
# **Micro and macro disagree**, and it is worth seeing why. The micro ACE, of the bins pooled
# over all 20 test scans, falls by 51% with hard and 50% with soft, far more than the per-scan
# changes. Pooling puts 20 times more voxels in each bin, so the micro floor is only 0.003:
# almost all of the micro ACE is the model's systematic miscalibration, which the losses act
# on, whereas a per-scan ACE carries its own floor (0.013 here) that no loss can lower, so the
# same improvement is a smaller percentage of it. Pooling also lets one scan's overconfident
# bins and another's underconfident ones cancel, and weighs scans by their voxel counts. The
# paper reports macro because a reader looks at one scan at a time.
#
# ### Exercise 3 · An open question
#
# Before reading the paragraph above, or after it in your own words: why does the micro ACE
# fall about twice as much as the macro ACE? Give two reasons.

# %%
ex.micro_macro.check(...)  # your answer, as a string

# %% [markdown]
# ## Image by image
#
# Behind each Δ% are pairs: each test scan's baseline value against its value under the loss.
# Points below the diagonal improved:

# %%
views.paired_changes(runs, ("ace", "mce", "dice"))

# %% [markdown]
# ## The trade-off, image by image
#
# Each dot is one test image; the large markers are the means. Better is up (Dice) and left
# (ACE):

# %%
views.dice_vs_ace(runs)

# %% [markdown]
# ## Reliability, before and after
#
# The reliability diagrams of one test scan under the three runs: the scan whose baseline
# ACE is the median of the test set, so a typical one rather than a best or worst case.

# %%
typical = views.typical_image(runs["baseline"])
views.reliability_diagrams(runs, typical)

# %% [markdown]
# Compare the bins row by row: the gaps to the diagonal (and the framed worst bin) are what the
# calibration losses act on. On the typical scan the baseline's bars fall below the diagonal
# from the middle up, the overconfidence of a Dice + cross-entropy network, most for the lesion
# (ACE 0.096, five times its floor) and in the ring's top bins. With either loss the bars rise
# to the diagonal: the lesion's ACE halves (0.054 with hard, 0.049 with soft), the ring's falls
# by two thirds with hard and by a third with soft, and the organ, closest to the diagonal to
# begin with, improves least. The framed MCE bin is often a sparse one, a high-confidence bin
# of a few voxels (see the counts strip): that is why the MCE is noisy and its floor, in
# brackets in the report, high. The **dataset reliability histogram** summarises every test scan
# at once. For each scan and each occupied confidence bin (x), it adds one count at that bin's
# accuracy (y): a calibrated model keeps the mass on the diagonal, an overconfident one below it
# on the right and above it on the left. Notebook 08 explores these interactively.

# %%
views.dataset_histograms(runs)

# %% [markdown]
# The dataset histograms show the same on all 20 scans: the baseline's lesion mass lies below
# the diagonal from the middle up and its ring bins above 0.85 below it; with either loss both
# move towards the diagonal, and the organ stays on it. Finally the scans themselves, the first
# saved test scan: prediction, confidence (the largest class probability) and errors. A
# well-calibrated model's low-confidence band should cover its errors, and here it does: the
# errors sit on the
# thin dark bands along every boundary.

# %%
views.overlays(runs, runs["baseline"].prediction_ids()[0])

# %% [markdown]
# The numbers, for the record (and the tests):

# %%
summary = report.headline(runs)
display(summary)
course.save_result(
    run_root,
    "03_training_with_calibration_losses",
    {
        "device": str(settings.device),
        "runs": {loss: run.path for loss, run in runs.items()},
        "summary": summary,
        "epochs_trained": {loss: len(run.history()) for loss, run in runs.items()},
        "training_seconds": {
            loss: float(run.history()["epoch_time_s"].sum()) for loss, run in runs.items()
        },
        "typical_image": typical,
        "exercises": exercises.status(),
    },
)

# %% [markdown]
# ## What you learned
#
# * `settings.train` trains (or reuses) one run per loss into `runs/`; every table and figure
#   here reads those run directories.
# * Δ% is the mean of per-image changes, tested with the paired t-test over images; read the
#   ACE against its noise floor, the part no loss can remove.
# * On these scans both losses lower the per-scan ACE by a fifth to a third at a Dice cost of
#   about 1% or less; hard more than soft, unlike the paper, and neither the MCE clearly.
# * Micro changes are larger than macro ones: pooled bins have almost no noise floor, and
#   pooling lets images' gaps cancel.
#
# **Next**: with more seeds (`seed = 1, 2, ...`, or `calibtut demo --seeds 3` in a terminal)
# the comparison becomes firmer. Notebook **08** explores these runs image by image; notebooks
# **04-07** repeat this experiment on the paper's datasets.
#
# **References**: Barfoot et al., *Average Calibration Losses for Reliable Uncertainty in
# Medical Image Segmentation*, IEEE TMI 2026 ([arXiv 2506.03942](https://arxiv.org/abs/2506.03942));
# Mehrtash et al., IEEE TMI 2020 (calibration of medical segmentation networks); the
# [glossary](https://github.com/calibtut/calibtut/blob/main/notebooks/glossary.md) for per
# image vs per patch, macro vs micro and sliding-window inference.
