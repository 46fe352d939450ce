# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/calibtut/calibtut/blob/main/notebooks/00_start_here.ipynb)
#
# # 00 · Start here: reliable uncertainty in medical image segmentation
#
# A segmentation network gives every voxel a probability for every class. When it says
# "liver, 0.95" for a thousand voxels, about 950 of them should be liver. If only 800 are, the
# network is **overconfident**: its probabilities look more certain than its answers deserve.
# A network whose probabilities match how often it is right is **calibrated**. A calibrated
# network tells a clinician which parts of a contour to check; an uncalibrated one does not.
#
# Networks trained with the usual Dice and cross-entropy losses are overconfident, mostly
# along the boundaries of structures. This course follows Barfoot et al.,
# [*Average Calibration Losses for Reliable Uncertainty in Medical Image Segmentation*](https://arxiv.org/abs/2506.03942),
# which adds a third term to the loss, the **marginal L1 Average Calibration Error (mL1-ACE)**,
# computed with **hard** or **soft** binning of the probabilities. You will learn to measure
# calibration, derive and train with these losses, and inspect what they change, first on a
# small synthetic dataset that trains on a laptop, then on the paper's four datasets.
#
# **In this notebook** you will find your way around the course, run it where you like (your
# machine, Binder or Colab), and in two minutes train a baseline and a calibrated model and see
# the difference in a table, a reliability diagram and an overlay.
#
# **You will learn to**
#
# * run the course on your machine, on Binder or on Colab, and find your way through it;
# * train two models (a baseline and a calibrated one) and read their run folders;
# * read a first comparison: a table of calibration errors, a reliability diagram, an overlay.
#
# ## The course
#
# | notebook | what it teaches | runs on | time (2-core CPU) |
# |---|---|---|---|
# | **00 start here** | this map, how to run the course, a two-minute tour | CPU | 70 s |
# | **01 what is calibration** | reliability diagrams; ECE, ACE and MCE by hand; over- and under-confidence; why segmentation needs per-class, per-image metrics | CPU | 11 s |
# | **02 hard and soft binning** | the mL1-ACE loss step by step, its gradient with hard and soft bins, empty bins, the number of bins, a binning playground | CPU | 9 s |
# | **03 training with calibration losses** | Dice+CE vs + hard vs + soft mL1-ACE on the synthetic data: learning curves, the Dice-ACE trade-off, reliability before and after | CPU | 4 min; 11 s after `make demo` |
# | **04 ACDC · 05 AMOS · 06 KiTS23 · 07 BraTS21** | each dataset, its classes (overlapping regions in KiTS and BraTS), the paper's preprocessing and configuration, training and evaluation | GPU; without the data, a phantom on the CPU | hours per run on a GPU; 15-20 s on a phantom |
# | **08 exploring reliability** | per-image reliability diagrams and dataset reliability histograms with interactive explorers | CPU | 13 s after 03 |
# | **09 the paper's results** | the paper's tables reproduced from its published per-image results, beside your runs | CPU | 7 s offline |
# | **10 the calibration toolbox** | every calibration method side by side (focal, label smoothing, NACL, SVLS, MbLS, MDCA, temperature scaling, ensembles): one table with confidence intervals, one trade-off figure | CPU | 6 min after `make demo`; about 12 min from scratch |
#
# ## How to run it
#
# * **On your machine**: `make lab` in the repository creates `.venv/`, installs calibtut and
#   opens this notebook in JupyterLab.
# * **Binder**: the *launch binder* badge in the README opens the course in a browser tab, on a
#   CPU. That is enough for every notebook except the full-size runs of 04-07.
# * **Colab**: every notebook has an *Open in Colab* badge at the top. Its first code cell
#   installs calibtut when (and only when) it runs in Colab. For 04-07 choose a GPU under
#   *Runtime → Change runtime type*.
#
# Every notebook finds a GPU by itself and uses it; without one it runs on the CPU. Each has a
# cell of **parameters** below the set-up cell: change them there, or pass them from the command
# line with [papermill](https://papermill.readthedocs.io) (that is how the tests run every
# notebook, with `smoke=True`: a few training steps on tiny settings).

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
data_dir = None  # not used here: the synthetic data is generated in memory
device = None  # None: the GPU if there is one, else the CPU; or "cuda", "mps", "cpu"
epochs = 4  # the tour trains this many epochs (the synthetic preset is 20)
run_root = "../runs"  # the repository's runs/ folder, shared by make demo and every notebook
overwrite = False  # True: retrain runs made with other settings (e.g. after changing epochs)

# %% [markdown]
# ## The two-minute tour
#
# We train the same small U-Net twice on calibtut's synthetic dataset, 384 x 384 scans each
# holding dozens of organs, thin rings and small lesions whose boundaries are deliberately
# ambiguous (the annotator's hand strays by about two pixels): once with
# the usual Dice + cross-entropy loss (the *baseline*) and once with the soft mL1-ACE added
# (*soft*). `resolve_settings` turns the parameters above into training settings and says what
# they are; `settings.train` trains one run per loss, or reuses a finished one.

# %%
from pathlib import Path

from IPython.display import display

from calibtut import course, report, views

settings = course.resolve_settings(
    "synthetic",
    smoke=smoke,
    device=device,
    epochs=epochs,
    run_root=Path(run_root) / "tour",
    overwrite=overwrite,
)
runs = settings.train(data_dir, losses=("baseline", "soft"))

# %% [markdown]
# Each run is a folder, `runs/tour/synthetic/<loss>/seed_0/`, holding its configuration, its
# learning curve, its weights and its results on 20 test scans: per scan and class the Dice
# score and three calibration errors (ECE, ACE, MCE, all explained in notebook 01), each error
# beside its *noise floor* (in brackets: what a perfectly calibrated model would score on the
# same voxels, notebook 01 again). Averaged over the test scans:

# %%
summary = report.headline(runs)
display(summary)

# %% [markdown]
# Dice measures the segmentation, the other three columns measure miscalibration (lower is
# better). After a few epochs the soft run typically has the lower ACE, while its Dice may still
# lag behind: the extra loss term slows the start of training. Notebook 03 trains for longer
# and looks closer.
#
# Numbers average away *where* a model is miscalibrated. A **reliability diagram** shows it:
# the voxels of one image are grouped by predicted probability into 20 bins; each bar is the
# fraction of a bin's voxels that truly belong to the class. A calibrated model's bars reach the
# diagonal. Red hatching is the gap. A model is **overconfident** where its probability is more
# extreme than the truth: above 0.5, bars below the diagonal (it said 0.9 and was right less
# often); below 0.5, bars above it (it said 0.1 and the class was there more often). The strip
# under each panel counts voxels per bin (log scale).

# %%
first = runs["baseline"].prediction_ids()[0]
views.reliability_diagrams(runs, first)

# %% [markdown]
# Most voxels sit in the first and last bins (surely not, surely yes) and are right; the
# middle bins hold the boundary voxels, few in number but where calibration matters. Those are
# the bins the ACE weighs as much as the others, and those the soft loss pulls towards the
# diagonal. The same image, with the prediction, the confidence (the largest class probability)
# and the errors:

# %%
views.overlays(runs, first)

# %% [markdown]
# The confidence map is where a reader would look for "check here": dark bands should cover
# the errors. A last cell records the tour's numbers in `runs/course/00_start_here.json`
# (every notebook ends with such a file; the tests read it).

# %%
course.save_result(
    run_root,
    "00_start_here",
    {
        "device": str(settings.device),
        "runs": {loss: run.path for loss, run in runs.items()},
        "summary": summary,
    },
)

# %% [markdown]
# ## What you learned, and where next
#
# A run is a folder of files that every later notebook reads; a calibration loss lowers the
# ACE, mostly in the middle bins where the boundary voxels are; and a reliability diagram shows
# where a model is over- or underconfident.
#
# **Next**: notebook **01** starts from the beginning: what calibration is and how it is
# measured.
# If you are here for the losses, **02** derives them and **03** trains them; if you have
# one of the paper's datasets, go to **04-07**. Terms are defined in the
# [glossary](https://github.com/calibtut/calibtut/blob/main/notebooks/glossary.md).
#
# **On Binder**, shut down the kernels of notebooks you have finished (*Kernel → Shut Down
# Kernel*, or the *Running* tab in the left bar): each holds 400 to 900 MB of the 2 GB Binder
# gives you, and a third open notebook can run out of memory.
#
# **References**: Barfoot et al., *Average Calibration Losses for Reliable Uncertainty in
# Medical Image Segmentation*, IEEE TMI 2026 ([arXiv 2506.03942](https://arxiv.org/abs/2506.03942));
# Barfoot et al., MICCAI 2024 ([arXiv 2403.06759](https://arxiv.org/abs/2403.06759)); Guo et al.,
# *On Calibration of Modern Neural Networks*, ICML 2017; Mehrtash et al., IEEE TMI 2020.
