# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/calibtut/calibtut/blob/main/notebooks/04_acdc.ipynb)
#
# # 04 · ACDC: cardiac cine MRI
#
# The first of the paper's four datasets. The **Automated Cardiac Diagnosis Challenge**
# (ACDC, MICCAI 2017) holds short-axis cine MRI of 150 patients from the University Hospital
# of Dijon: healthy hearts and four pathologies (previous infarction, dilated and hypertrophic
# cardiomyopathy, abnormal right ventricle). In every patient two frames of the cardiac cycle
# are annotated, end-diastole and end-systole, with three structures: the **right ventricle**,
# the **myocardium** (the muscle wall of the left ventricle, a ring a few pixels thick) and the
# **left ventricle** (its blood pool).
#
# Why it is interesting for calibration: the slices are 5 to 10 mm thick, so at the base and
# the apex a voxel mixes heart and surroundings and even experts disagree; and the myocardium
# is almost all boundary. A network can be right about most pixels and still badly
# overconfident on exactly those.
#
# This notebook follows the paper on ACDC: the data and its classes, the preprocessing and the
# training configuration, the three losses, their evaluation, and the paper's published results
# beside yours. The full runs are GPU work (see *Training*). **Without the data** the notebook
# says so and continues on a *phantom*: a few small synthetic volumes written in ACDC's exact
# file layout, so that every cell runs (its numbers mean nothing about hearts).
#
# **You will learn to**
#
# * load a real dataset in its own file layout, and tell a real run from a phantom;
# * follow the paper's preprocessing and training configuration, and say what each setting does;
# * train the three losses from a notebook or a terminal, on one GPU or several (`torchrun`);
# * read a dataset's results beside the paper's published per-image ones.

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
data_dir = None  # ACDC's database/ folder (see data/README.md); None or not found: a phantom
device = None  # None: the GPU if there is one, else the CPU; or "cuda", "mps", "cpu"
epochs = None  # None: the paper's 600
run_root = "../runs"  # the repository's runs/ folder, shared by make demo and every notebook
paper_root = None  # the paper's published results: None downloads them; or a local copy
patch_size = None  # None: the paper's 256 x 256 x 16; e.g. (160, 160, 16) for a smaller GPU
overwrite = False  # True: retrain runs made with other settings (e.g. after changing epochs)

# %% [markdown]
# ## The data
#
# Get ACDC from its challenge page (a free account on the Human Heart Project platform);
# [data/README.md](https://github.com/calibtut/calibtut/blob/main/data/README.md#acdc-2017-acdc)
# says where and how to lay it out: `database/training/patientNNN/` and
# `database/testing/patientNNN/`, each with the two annotated frames and their `_gt` labels.
# calibtut reads that layout as it is; `data_dir` is the `database/` folder.

# %%
from IPython.display import Markdown, display

from calibtut import course, paper, plots, report, views
from calibtut.data import spec

acdc = spec("acdc")
source = course.locate_dataset("acdc", data_dir)

# %% [markdown]
# The splits follow the paper: the 50 patients of `testing/` (100 annotated frames) are the
# test set; of the 100 `training/` patients, 10% (chosen with the paper's seed, 12345) validate
# and the rest train. Frames are split *by patient*, so that the two frames of one heart never
# end up on both sides. The classes are exclusive, so the network has one softmax output per
# class, background included; as in the paper the background is trained on but not scored.

# %%
display(acdc.class_table())

# %% [markdown]
# ## Preprocessing and configuration
#
# Each frame is cropped to the bounding box of its non-zero voxels, reoriented to RAS and
# resampled to 1 x 1 x 5 mm, as the paper did (ACDC's pixels are about 1.37 to 1.68 mm in
# plane, so this upsamples them; 5 mm is a typical slice distance), then its intensities are
# standardised over the non-zero voxels (MR intensities have no absolute scale):

# %%
print(acdc.preprocessing)

# %% [markdown]
# The paper's training configuration, shared by the four datasets up to the epochs and the
# learning rate: MONAI's SegResNetDS (32 filters at the first level, blocks 1-2-2-4-4, four
# deep-supervision heads), AdamW (learning rate $2 \cdot 10^{-4}$, weight decay $10^{-5}$),
# batch size 2, two warm-up epochs and a cosine decay over **600 epochs**, a validation every
# 10 epochs (the weights with the best validation Dice are the ones evaluated), patches of
# 256 x 256 x 16 with random affine augmentation, and the loss weights 0.33 for Dice, CE and
# mL1-ACE. Below, the preset beside what this notebook will run: on a phantom, or in smoke
# mode, a few steps of a narrow network.

# %%
settings = course.resolve_settings(
    source,
    smoke=smoke,
    device=device,
    epochs=epochs,
    run_root=run_root,
    patch_size=patch_size,
    overwrite=overwrite,
)
display(settings.table())

# %% [markdown]
# ## Training
#
# The three runs, one after the other: Dice + CE, + hard mL1-ACE, + soft mL1-ACE. At the
# paper's settings each is a job of many hours on a modern GPU, so a notebook is not the most
# comfortable place for it; the same runs can be started from a terminal and survive a closed
# browser:
#
# ```bash
# calibtut train --dataset acdc --data-dir /data/acdc/database --loss soft
# ```
#
# On $N$ GPUs of one machine, PyTorch's `torchrun` starts one process per GPU
# (DistributedDataParallel, NCCL; each process reads its share of the cases):
#
# ```bash
# torchrun --standalone --nproc_per_node 4 -m calibtut train --dataset acdc --data-dir /data/acdc/database --loss soft
# ```
#
# Each process takes `--batch-size` cases per step, so the global batch is $N$ times that at the
# same learning rate (`world_size` and `global_batch_size` in `config.json`): with the paper's 2
# cases per process, 4 GPUs make a global batch of 8 and a quarter of the steps per epoch, a
# different optimisation from the paper's. `--nproc_per_node 2 --batch-size 1` keeps its global
# batch of 2; with more GPUs, say in your write-up what changed. Validation and the test evaluation are shared out too, and give
# the same numbers as one process. Several machines: the README's *Several GPUs or machines*.
#
# A run that stops resumes from its last checkpoint when started again (here or there), and a
# finished run is reused, so this cell can be run at any time to pick up the results. Mixed
# precision and GPU-friendly data loading are on by default when a GPU is present.

# %%
runs = settings.train(source.root)

# %% [markdown]
# ## Evaluation
#
# After training, each run was evaluated on the test frames with a sliding window: per frame
# and class, Dice, ECE, ACE and MCE with 20 bins, kept in `per_image.csv`, with the bins
# themselves in `bins.npz`. Learning curves first, then the comparison table (macro: per frame
# the mean over classes, then over frames; Δ%: per-frame change against the baseline):

# %%
views.learning_curves(runs, ("train_loss", "val_dice", "val_ace"))

# %%
display(Markdown(report.report_markdown(report.report_table(list(runs.values())))))

# %% [markdown]
# The dataset reliability histograms pool every test frame (notebook 08 explains them in
# detail): mass below the diagonal at high confidence is overconfidence. Then one test frame,
# at the slice with the most heart, under the three runs.

# %%
views.dataset_histograms(runs)

# %%
views.overlays(runs)

# %% [markdown]
# ## Beside the paper
#
# The authors published the per-frame results of their three ACDC runs. On the 100 test
# frames they found, per frame against the baseline: **hard** mL1-ACE lowered the ACE by
# 22.4 ± 15.0% at an unchanged Dice (+0.07 ± 2.4%), **soft** lowered it by 41.2 ± 16.1% at a
# Dice cost of 1.1 ± 2.4%: on ACDC, the clearest improvement of the four datasets. The table
# and the per-frame distributions below are computed from their files, with your runs on the
# real data beside them when there are any (notebook 09 does this for all four datasets).

# %%
comparison = paper.compare_with_runs(paper_root, run_root, "acdc")
if comparison is not None:
    display(
        Markdown(comparison.markdown()),
        plots.plot_per_image_distributions(comparison.frame, metrics=("ace", "dice")),
    )

# %%
course.save_result(run_root, "04_acdc", course.dataset_result(source, settings, runs, comparison))

# %% [markdown]
# ## What you learned
#
# * ACDC's thick slices and thin myocardium make most of its errors boundary errors, where the
#   calibration losses act.
# * The paper trains SegResNetDS with deep supervision on 3D patches and predicts whole volumes
#   with a sliding window; every setting is in `config.json`.
# * On ACDC the paper found its clearest result: soft binning lowered the ACE by 41 % at a Dice
#   cost of about 1 %, hard by 22 % at an unchanged Dice.
# * A phantom checks the pipeline, not the method: its numbers mean nothing about hearts.
#
# **Next**: **05** (AMOS) brings sixteen classes; **08** explores any of these runs.
#
# **References**: Barfoot et al., *Average Calibration Losses for Reliable Uncertainty in
# Medical Image Segmentation*, IEEE TMI 2026 ([arXiv 2506.03942](https://arxiv.org/abs/2506.03942));
# Barfoot et al., MICCAI 2024 ([arXiv 2403.06759](https://arxiv.org/abs/2403.06759));
# Bernard et al., *Deep Learning Techniques for Automatic MRI Cardiac Multi-Structures
# Segmentation and Diagnosis: Is the Problem Solved?*, IEEE TMI 2018 (ACDC); Mehrtash et al., IEEE
# TMI 2020 (calibration in medical segmentation); Guo et al., ICML 2017; Naeini et al., AAAI 2015.
