# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/calibtut/calibtut/blob/main/notebooks/07_brats.ipynb)
#
# # 07 · BraTS 2021: brain tumours in four MRI sequences
#
# The **RSNA-ASNR-MICCAI Brain Tumor Segmentation challenge 2021** (BraTS21) holds
# pre-operative MRI of 1251 patients with a glioma. Each case has four co-registered
# sequences, skull-stripped and resampled to 1 mm: **FLAIR**, **T1**, **T1 with contrast
# (T1Gd)** and **T2**, and a label map of the **necrotic tumour core** (1), the **peritumoral
# oedema** (2) and the **enhancing tumour** (4).
#
# Two things are new. The input has **four channels**, one per sequence: each shows different
# tissue (oedema is bright in FLAIR, enhancing tumour in T1Gd). And, as in KiTS23, the results
# are scored on the challenge's three nested **regions**:
#
# * *enhancing tumour* (label 4);
# * *tumour core*: necrosis and enhancing tumour (1, 4);
# * *whole tumour*: everything abnormal (1, 2, 4).
#
# As the paper did (its `brats21.yaml`), the network is trained with a **softmax** over the
# four exclusive labels (background, necrosis, oedema, enhancing tumour; label value 4 becomes
# output channel 3), and each region's probability at evaluation is the **sum** of its labels'
# probabilities. `activation="sigmoid"` trains one sigmoid per region instead (notebook 06
# explains the difference); that option is not the paper's configuration.
#
# The boundaries of oedema are notoriously hard to draw, which makes BraTS a natural test of
# calibration. Same structure as 04 (ACDC). **Without the data** the notebook continues on a
# phantom in the BraTS layout, so that every cell runs (its numbers mean nothing about brains).
#
# **You will learn to**
#
# * train on four co-registered MRI sequences as input channels;
# * score the three nested tumour regions from a softmax over exclusive labels;
# * weigh a calibration gain against a Dice cost, where the paper found the largest one.

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
data_dir = None  # the BraTS 2021 training-data folder (see data/README.md); None: a phantom
device = None  # None: the GPU if there is one, else the CPU; or "cuda", "mps", "cpu"
epochs = None  # None: the paper's 1250
run_root = "../runs"  # the repository's runs/ folder, shared by make demo and every notebook
paper_root = None  # the paper's published results: None downloads them; or a local copy
patch_size = None  # None: the paper's 224 x 224 x 144; smaller for a GPU with less memory
overwrite = False  # True: retrain runs made with other settings (e.g. after changing epochs)

# %% [markdown]
# ## The data
#
# Register for the challenge on Synapse and download the Task 1 training data; see
# [data/README.md](https://github.com/calibtut/calibtut/blob/main/data/README.md#brats-2021-brats).
# `data_dir` is the unpacked `RSNA_ASNR_MICCAI_BraTS2021_TrainingData_16July2021/` folder, with
# one `BraTS2021_NNNNN/` folder per case holding the four sequences and `_seg.nii.gz`. Labels
# must use the 2021 values (enhancing tumour is 4; BraTS 2023 renamed it 3).

# %%
from IPython.display import Markdown, display

from calibtut import course, paper, plots, report, views
from calibtut.data import spec

brats = spec("brats")
source = course.locate_dataset("brats", data_dir)

# %% [markdown]
# The split is the paper's: the authors published their lists of case ids
# (`brats21_train_val.txt`, 1051 cases, and `brats21_test.txt`, 200 cases, at the root of their
# repository; calibtut ships both). The 200 listed cases are the test set, and 5% of the
# train+validation list (MONAI's `partition_dataset`, 19:1, the paper's seed 12345) validate.
# The network's outputs and the scored regions:

# %%
display(brats.class_table(), brats.region_table())
print("input channels:", ", ".join(brats.channel_names))

# %% [markdown]
# ## Preprocessing and configuration
#
# The images are already skull-stripped and on a common 1 mm grid, so there is nothing to
# crop: each case is reoriented to RAS and resampled to 1 mm (a no-op on the official data, a
# safeguard otherwise), and each sequence is standardised over its brain voxels (MR
# intensities have no absolute scale, and each sequence has its own):

# %%
print(brats.preprocessing)

# %% [markdown]
# The paper's configuration: SegResNetDS with deep supervision, AdamW at $10^{-4}$, batch 2,
# **1250 epochs**, patches of 224 x 224 x 144 (nearly the whole brain) and a sliding window of
# 240 x 240 x 160; a softmax over the labels with Dice and cross-entropy. Patches that
# large need a GPU with tens of gigabytes of memory: lower `patch_size` otherwise. Below, the
# preset beside what this notebook will run:

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
# At the paper's settings a run takes one GPU a day or more; from a terminal,
#
# ```bash
# calibtut train --dataset brats --data-dir /data/RSNA_ASNR_MICCAI_BraTS2021_TrainingData_16July2021 --loss soft
# ```
#
# On $N$ GPUs of one machine, PyTorch's `torchrun` starts one process per GPU
# (DistributedDataParallel, NCCL; each process reads its share of the cases):
#
# ```bash
# torchrun --standalone --nproc_per_node 4 -m calibtut train --dataset brats --data-dir /data/RSNA_ASNR_MICCAI_BraTS2021_TrainingData_16July2021 --loss soft
# ```
#
# Each process takes `--batch-size` cases per step, so the global batch is $N$ times that at the
# same learning rate (`world_size` and `global_batch_size` in `config.json`): with the paper's 2
# cases per process, 4 GPUs make a global batch of 8 and a quarter of the steps per epoch, a
# different optimisation from the paper's. `--nproc_per_node 2 --batch-size 1` keeps its global
# batch of 2; with more GPUs, say in your write-up what changed. Validation and the test evaluation are shared out too, and give
# the same numbers as one process. Several machines: the README's *Several GPUs or machines*.
#
# and come back: interrupted runs resume, finished ones are reused by the cell below.

# %%
runs = settings.train(source.root)

# %% [markdown]
# ## Evaluation
#
# Per test case and region: Dice of the region's probability thresholded at 0.5, ECE, ACE and
# MCE with 20 bins.
# Learning curves, then the comparison per region, macro and micro:

# %%
views.learning_curves(runs, ("train_loss", "val_dice", "val_ace"))

# %%
display(Markdown(report.report_markdown(report.report_table(list(runs.values())))))

# %% [markdown]
# The dataset reliability histograms of the three regions, then one test case (its FLAIR
# sequence, the first input channel) with the confidence and errors of the *whole tumour*
# region, whose boundary is the oedema's:

# %%
views.dataset_histograms(runs)

# %%
views.overlays(runs, channel="whole tumour")

# %% [markdown]
# ## Beside the paper
#
# On its 200 BraTS test cases the paper found, per case against the baseline: **hard**
# mL1-ACE lowered the ACE by only 2.1 ± 39.9%, **soft** by 27.4 ± 31.2%, at a Dice change of
# -0.08 ± 3.5% (hard) and -2.4 ± 8.5% (soft): soft binning calibrates clearly better, and on
# BraTS it costs the most Dice of the four datasets. From the authors' files, with your runs on
# real data when present:

# %%
comparison = paper.compare_with_runs(paper_root, run_root, "brats")
if comparison is not None:
    display(
        Markdown(comparison.markdown()),
        plots.plot_per_image_distributions(comparison.frame, metrics=("ace", "dice")),
    )

# %%
course.save_result(run_root, "07_brats", course.dataset_result(source, settings, runs, comparison))

# %% [markdown]
# ## What you learned
#
# * BraTS21 has four input sequences and three nested regions, trained and scored as in KiTS23.
# * Soft binning lowered the ACE by 27 % but cost 2.4 % Dice on average, the largest cost of the
#   four datasets: calibration is not always free.
#
# **Next**: **08** explores runs image by image; **09** sets the paper's four datasets side by side.
#
# **References**: Barfoot et al., *Average Calibration Losses for Reliable Uncertainty in
# Medical Image Segmentation*, IEEE TMI 2026 ([arXiv 2506.03942](https://arxiv.org/abs/2506.03942));
# Barfoot et al., MICCAI 2024 ([arXiv 2403.06759](https://arxiv.org/abs/2403.06759));
# Baid et al., *The RSNA-ASNR-MICCAI BraTS 2021 Benchmark on Brain Tumor Segmentation and
# Radiogenomic Classification*, arXiv 2107.02314 (BraTS21); Mehrtash et al., IEEE TMI 2020.
