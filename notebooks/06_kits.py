# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/calibtut/calibtut/blob/main/notebooks/06_kits.ipynb)
#
# # 06 · KiTS23: kidneys and their tumours in CT, scored as overlapping regions
#
# The **2023 Kidney and Kidney Tumor Segmentation challenge** (KiTS23) holds contrast-enhanced
# abdominal CT of 489 patients who underwent surgery for a kidney mass, with every voxel
# labelled **kidney** (1), **tumour** (2) or **cyst** (3).
#
# What is new here: the results are not scored on the exclusive labels but on the challenge's
# three nested **regions** (its "hierarchical evaluation classes"), each a yes/no question
# about every voxel:
#
# * *tumour*: tumour alone (label 2);
# * *masses*: tumour or cyst (2, 3);
# * *kidney and masses*: kidney, tumour or cyst (1, 2, 3).
#
# A tumour voxel belongs to all three, so the regions overlap. **What the paper did** (its
# `kits23.yaml`): the network is trained like the others, with a **softmax** over the four
# exclusive labels (background, kidney, tumour, cyst) and Dice + cross-entropy (+ mL1-ACE) on
# them; only at evaluation are the regions built, each region's probability being the **sum**
# of its labels' softmax probabilities (exclusive labels: the sum is exactly the probability
# that the voxel lies in the region), and each region is scored as its own binary problem,
# which is what "marginal" meant all along. calibtut does the same by default.
#
# **The option** `activation="sigmoid"` (`calibtut train --activation sigmoid`) trains one
# sigmoid per region instead, with Dice and *binary* cross-entropy per region and the mL1-ACE
# of each region's probabilities. The loss then sees the regions it is scored on, and the three
# probabilities need not be nested (a voxel may get *tumour* 0.6 but *masses* 0.5); it is not
# what the paper trained, so its numbers are not the paper's.
#
# Same structure as 04 (ACDC). **Without the data** the notebook continues on a phantom in
# KiTS23's file layout, so that every cell runs (its numbers mean nothing about kidneys).
#
# **You will learn to**
#
# * score nested, overlapping regions built from exclusive labels, as the paper did;
# * compute a region's probability as the sum of its labels' softmax probabilities;
# * say what the sigmoid option changes, and why its numbers are not the paper's;
# * read percentage changes on a small structure with care (tiny baselines, wide spreads).

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
data_dir = None  # KiTS23's dataset/ folder (see data/README.md); None or not found: a phantom
device = None  # None: the GPU if there is one, else the CPU; or "cuda", "mps", "cpu"
epochs = None  # None: the paper's 1250
run_root = "../runs"  # the repository's runs/ folder, shared by make demo and every notebook
paper_root = None  # the paper's published results: None downloads them; or a local copy
patch_size = None  # None: the paper's 128 x 128 x 128; smaller for a GPU with less memory
overwrite = False  # True: retrain runs made with other settings (e.g. after changing epochs)

# %% [markdown]
# ## The data
#
# KiTS23 comes with its repository: `git clone https://github.com/neheller/kits23`, then
# `pip install -e .` and `kits23_download_data` inside it fetch the images (the labels are in
# the repository); see
# [data/README.md](https://github.com/calibtut/calibtut/blob/main/data/README.md#kits23-kits).
# `data_dir` is `kits23/dataset/`, with one `case_NNNNN/` folder per patient holding
# `imaging.nii.gz` and `segmentation.nii.gz`.

# %%
from IPython.display import Markdown, display

from calibtut import course, paper, plots, report, views
from calibtut.data import spec

kits = spec("kits")
source = course.locate_dataset("kits", data_dir)

# %% [markdown]
# KiTS23 publishes no labelled test set, so, as in the paper, 20% of the cases (sorted by id,
# shuffled with seed 42 by MONAI's `partition_dataset`) are held out for testing: exactly the
# paper's 98 test cases. 10% of the rest (seed 12345) validate. The network's four outputs are
# the exclusive labels, none of them scored as such; the metrics score the three regions:

# %%
display(kits.class_table(), kits.region_table())

# %% [markdown]
# ## Preprocessing and configuration
#
# Each scan is cropped to its voxels above 0 HU, reoriented to RAS, resampled to 1 mm
# isotropic and clipped to the paper's window of -54 to 242 HU, which keeps the contrast-enhanced
# kidney and its masses and discards air, fat and dense bone, then scaled to [0, 1]:

# %%
print(kits.preprocessing)

# %% [markdown]
# The paper trained KiTS longer and slower than ACDC: **1250 epochs** at a learning rate of
# $10^{-4}$, SegResNetDS with deep supervision as before, patches of 128³ voxels and a sliding
# window of 256³, four patches per case, a softmax over the labels (last row below). Below,
# the preset beside what this notebook will run:

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
# At 1250 epochs a run is a job of a day or more on one GPU; start it from a terminal,
#
# ```bash
# calibtut train --dataset kits --data-dir /data/kits23/dataset --loss soft
# ```
#
# On $N$ GPUs of one machine, PyTorch's `torchrun` starts one process per GPU
# (DistributedDataParallel, NCCL; each process reads its share of the cases):
#
# ```bash
# torchrun --standalone --nproc_per_node 4 -m calibtut train --dataset kits --data-dir /data/kits23/dataset --loss soft
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
# Per test case and region: Dice (of the region's probability thresholded at 0.5, as the
# authors' evaluation), ECE, ACE and MCE with 20 bins. Learning curves, then the comparison per
# region, macro and micro:

# %%
views.learning_curves(runs, ("train_loss", "val_dice", "val_ace"))

# %%
display(Markdown(report.report_markdown(report.report_table(list(runs.values())))))

# %% [markdown]
# The dataset reliability histograms of the three regions. A tumour is a few centimetres
# across in a scan of the whole abdomen, so the *tumour* channel is overwhelmingly certain
# negatives (on real data the voxel counts under its panel fall by orders of magnitude after
# the first bin). Then one test case, with the confidence and errors of the *tumour* region
# (the `channel` argument picks the region):

# %%
views.dataset_histograms(runs)

# %%
views.overlays(runs, channel="tumor")

# %% [markdown]
# ## Beside the paper
#
# On its 98 KiTS23 test cases the paper found, per case against the baseline: **hard**
# mL1-ACE lowered the ACE by 8.1 ± 76.9%, **soft** by 29.2 ± 40.2%, while the Dice rose
# slightly (hard +1.9 ± 16.4%, soft +1.0 ± 11.0%). The spreads are wide: a case with a small
# tumour has a tiny baseline error, so any change is a large percentage. The ECE shows this at
# its worst (hard +63 ± 300%): it is nearly zero on these mostly-negative channels, the lesson of
# notebook 01. From the authors' files, with your runs on real data when present:

# %%
comparison = paper.compare_with_runs(paper_root, run_root, "kits")
if comparison is not None:
    display(
        Markdown(comparison.markdown()),
        plots.plot_per_image_distributions(comparison.frame, metrics=("ace", "dice")),
    )

# %%
course.save_result(run_root, "06_kits", course.dataset_result(source, settings, runs, comparison))

# %% [markdown]
# ## What you learned
#
# * KiTS23 is trained with a softmax over exclusive labels and scored on three nested regions,
#   each region's probability the sum of its labels'.
# * The paper's changes on KiTS23 have wide spreads (soft ACE −29 ± 40 %): a small tumour's
#   baseline error is tiny, so any change is a large percentage.
#
# **Next**: **07** (BraTS21) adds four input channels.
#
# **References**: Barfoot et al., *Average Calibration Losses for Reliable Uncertainty in
# Medical Image Segmentation*, IEEE TMI 2026 ([arXiv 2506.03942](https://arxiv.org/abs/2506.03942));
# Barfoot et al., MICCAI 2024 ([arXiv 2403.06759](https://arxiv.org/abs/2403.06759));
# Heller et al., *The KiTS21 Challenge*, arXiv 2307.01984 (the KiTS challenges and their
# hierarchical evaluation classes); Mehrtash et al., IEEE TMI 2020; Naeini et al., AAAI 2015.
