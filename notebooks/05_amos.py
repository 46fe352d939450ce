# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/calibtut/calibtut/blob/main/notebooks/05_amos.ipynb)
#
# # 05 · AMOS: fifteen abdominal organs in CT
#
# **AMOS 2022** (a Multi-Modality Abdominal Multi-Organ Segmentation challenge) holds CT and
# MRI scans from several hospitals and scanners with **15 organs** annotated, from the liver
# (about 1.5 litres) to the adrenal glands (a few millilitres): spleen, both kidneys,
# gallbladder, oesophagus, liver, stomach, aorta, inferior vena cava, pancreas, both adrenal
# glands, duodenum, bladder and prostate/uterus (one class: the prostate in men, the uterus in
# women). The paper, and calibtut, use the CT scans.
#
# Why it is interesting for calibration: sixteen softmax outputs compete for every voxel; the
# small organs are nearly all boundary; and some organs are absent from some scans (a
# removed gallbladder, or a scan that ends above the pelvis), which calibration metrics must
# handle.
#
# The notebook has the same structure as 04 (ACDC); the code is the same calls, the prose is
# about AMOS. **Without the data** it continues on a phantom in AMOS's file layout, so that every
# cell runs (the phantom's numbers mean nothing about abdomens).
#
# **You will learn to**
#
# * handle sixteen competing classes and organs absent from some scans;
# * tell what the paper found on AMOS, and which explanation of it is only a guess;
# * read per-class results where small organs and large ones differ.

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
data_dir = None  # AMOS's amos22/ folder (see data/README.md); None or not found: a phantom
device = None  # None: the GPU if there is one, else the CPU; or "cuda", "mps", "cpu"
epochs = None  # None: the paper's 600
run_root = "../runs"  # the repository's runs/ folder, shared by make demo and every notebook
paper_root = None  # the paper's published results: None downloads them; or a local copy
patch_size = None  # None: the paper's 176 x 176 x 64; smaller for a GPU with less memory
overwrite = False  # True: retrain runs made with other settings (e.g. after changing epochs)

# %% [markdown]
# ## The data
#
# AMOS is on Zenodo, linked from the challenge site (CC BY 4.0);
# [data/README.md](https://github.com/calibtut/calibtut/blob/main/data/README.md#amos-2022-amos)
# has the details. `data_dir` is the unzipped `amos22/` folder with `imagesTr/`, `labelsTr/`,
# `imagesVa/` and `labelsVa/`. Scan ids of 500 and above are MRI and are skipped, as are the
# unlabelled `imagesTs/`.

# %%
from IPython.display import Markdown, display

from calibtut import course, paper, plots, report, views
from calibtut.data import spec

amos = spec("amos")
source = course.locate_dataset("amos", data_dir)

# %% [markdown]
# As in the paper, the labelled validation part (`imagesVa/`, 100 CT scans in the challenge's
# release) is the test set; the CT scans of `imagesTr/` train, 10% of them (seed 12345)
# validate. Sixteen exclusive classes, so one softmax output each; the background is trained
# on but not scored.

# %%
display(amos.class_table())

# %% [markdown]
# **Absent organs.** When an organ is missing from a scan's ground truth, its Dice is
# undefined (there is nothing to overlap) and is left out of that scan's mean. Its calibration
# errors are still defined: every voxel's true probability of that class is 0, so any
# confidence the network gives it is miscalibration. Following the paper's files, a scan's
# calibration errors average over all classes and its Dice over the classes present
# (`per_image.csv` flags absent classes in its `empty` column).
#
# ## Preprocessing and configuration
#
# Each scan is cropped to the bounding box of its voxels above 0 HU (the body, as in the
# paper), reoriented to RAS and resampled to 1 x 1 x 5 mm; intensities are clipped to the
# soft-tissue window of -100 to 200 HU and scaled to [0, 1]:

# %%
print(amos.preprocessing)

# %% [markdown]
# The paper's configuration is ACDC's (SegResNetDS with 32 filters and deep supervision, AdamW
# at $2 \cdot 10^{-4}$, batch 2, **600 epochs**, validation every 10), with patches of
# 176 x 176 x 64 and a sliding window of 192 x 192 x 64. Below, the preset beside what this
# notebook will run:

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
# The three losses, one run each. At the paper's settings a run is many hours on a modern GPU
# with tens of gigabytes of memory (lower `patch_size` on a smaller one). From a terminal,
# where a closed browser does not matter:
#
# ```bash
# calibtut train --dataset amos --data-dir /data/amos22 --loss soft
# ```
#
# On $N$ GPUs of one machine, PyTorch's `torchrun` starts one process per GPU
# (DistributedDataParallel, NCCL; each process reads its share of the cases):
#
# ```bash
# torchrun --standalone --nproc_per_node 4 -m calibtut train --dataset amos --data-dir /data/amos22 --loss soft
# ```
#
# Each process takes `--batch-size` cases per step, so the global batch is $N$ times that at the
# same learning rate (`world_size` and `global_batch_size` in `config.json`): with the paper's 2
# cases per process, 4 GPUs make a global batch of 8 and a quarter of the steps per epoch, a
# different optimisation from the paper's. `--nproc_per_node 2 --batch-size 1` keeps its global
# batch of 2; with more GPUs, say in your write-up what changed. Validation and the test evaluation are shared out too, and give
# the same numbers as one process. Several machines: the README's *Several GPUs or machines*.
#
# Interrupted runs resume; finished ones are reused by the cell below.

# %%
runs = settings.train(source.root)

# %% [markdown]
# ## Evaluation
#
# Per test scan and class: Dice, ECE, ACE and MCE with 20 bins. Learning curves, then the
# comparison (per class, then macro and micro); with fifteen organs the per-class rows show
# which structures the calibration loss helps most:

# %%
views.learning_curves(runs, ("train_loss", "val_dice", "val_ace"))

# %%
display(Markdown(report.report_markdown(report.report_table(list(runs.values())))))

# %% [markdown]
# Dataset reliability histograms of a few organs, large and small (notebook 08 explains them),
# then one test scan under the three runs, at the slice with the most labelled voxels:

# %%
views.dataset_histograms(runs, classes=("liver", "pancreas", "left adrenal gland"))

# %%
views.overlays(runs)

# %% [markdown]
# ## Beside the paper
#
# On its 100 AMOS test scans the paper found, per scan against the baseline: **hard**
# mL1-ACE lowered the ACE only slightly, by 2.8 ± 12.4%, **soft** by 17.6 ± 13.9%, with Dice
# changes under one percent (hard -0.22 ± 0.99%, soft -0.64 ± 1.22%). Why the hard loss helps
# so little here the paper does not test. A guess, and only that: with sixteen classes most of
# a class's voxels sit in its first bin, and the hard gradient, which ignores how a step changes
# bin membership, acts only through each bin's own gap; the soft gradient also moves voxels
# between neighbouring bins. The table and the per-scan distributions, from the authors'
# files, with your runs on real data when present:

# %%
comparison = paper.compare_with_runs(paper_root, run_root, "amos")
if comparison is not None:
    display(
        Markdown(comparison.markdown()),
        plots.plot_per_image_distributions(comparison.frame, metrics=("ace", "dice")),
    )

# %%
course.save_result(run_root, "05_amos", course.dataset_result(source, settings, runs, comparison))

# %% [markdown]
# ## What you learned
#
# * AMOS's sixteen classes and its small organs make calibration per class essential; absent
#   organs are left out of the loss but scored in evaluation (see the glossary).
# * The paper found a small gain for hard binning (−2.8 % ACE) and a larger one for soft
#   (−17.6 %), with Dice changes under 1 %; why hard helps so little is not established.
#
# **Next**: **06** (KiTS23) scores overlapping regions.
#
# **References**: Barfoot et al., *Average Calibration Losses for Reliable Uncertainty in
# Medical Image Segmentation*, IEEE TMI 2026 ([arXiv 2506.03942](https://arxiv.org/abs/2506.03942));
# Barfoot et al., MICCAI 2024 ([arXiv 2403.06759](https://arxiv.org/abs/2403.06759));
# Ji et al., *AMOS: A Large-Scale Abdominal Multi-Organ Benchmark for Versatile Medical Image
# Segmentation*, NeurIPS 2022 (AMOS); Mehrtash et al., IEEE TMI 2020; Guo et al., ICML 2017.
