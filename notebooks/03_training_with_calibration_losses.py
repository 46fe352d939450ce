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
run_root = "runs"  # where the runs are written (notebook 08 explores them from here)
seed = 0  # the runs' seed: weights, data order and augmentation
overwrite = False  # True: retrain runs made with other settings (e.g. after changing epochs)

# %% [markdown]
# ## The data
#
# Each synthetic image is 64 x 64 pixels with three structures of very different size, an
# *organ* (a large ellipse), a thin *ring* and a small *lesion* (absent from a fifth of the
# images), over background. The image is rendered from the true shapes with blur, noise and a
# bias field, but the label is drawn along boundaries moved by up to a few pixels, like a
# second annotator's. Near every boundary, then, no model can be sure: exactly where
# calibration matters. 200 training, 40 validation and 60 test images, generated from a seed.
# The network has one softmax output per class; as in the paper the background is trained
# but not scored.

# %%
from IPython.display import Markdown, display

from calibtut import course, report, views
from calibtut.data import spec

synthetic = spec("synthetic")
print(synthetic.description)
display(synthetic.class_table())

# %% [markdown]
# ## Training
#
# A small MONAI U-Net (16 filters at the first level), AdamW with a warm-up and a cosine decay,
# the paper's loss weights and 20 bins. The table shows the preset beside what this notebook
# will train (they differ in smoke mode, or if you set `epochs`):

# %%
settings = course.resolve_settings(
    "synthetic", smoke=smoke, device=device, epochs=epochs, run_root=run_root, overwrite=overwrite
)
display(settings.table())

# %% [markdown]
# Three runs, one per loss, each validated every 4 epochs (the weights with the best
# validation Dice are kept) and evaluated on the test images. On a laptop CPU a run of 20
# epochs takes two or three minutes, on a GPU well under one. Each run is written to
# `runs/synthetic/<loss>/seed_0/`; running the cell again reuses finished runs.

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
# `calibtut.report` compares the runs the way the paper does: for each metric, the mean over
# test images, and for the hard and soft runs the per-image percentage change against the
# baseline, mean ± standard deviation over images, with a paired Wilcoxon signed-rank test.
# Scopes: each class; *macro*, per image the mean over classes, then over images (the paper's
# numbers); *micro*, the errors of the bins pooled over all test images. (`calibtut report
# runs/synthetic --out report/` writes the same table with figures from a terminal.)

# %%
table = report.report_table(list(runs.values()))
display(Markdown(report.report_markdown(table)))

# %% [markdown]
# Read the macro rows first. In our reference run (20 epochs on a CPU, seed 0; a GPU or
# another seed gives somewhat different numbers) the **soft** loss lowered the per-image ACE
# by about 8% against the baseline, with a Wilcoxon p-value far below 0.001, at a Dice cost of
# about 3%: the paper's pattern, in miniature. The **hard** loss left the per-image ACE about
# where it was, but lowered the *micro* ACE, of the bins pooled over all test images, by about
# a third: its push acts on each bin's mean, and on this small problem that shows in the pooled
# bins more than image by image. The ECE hardly moves: as notebook 01 showed, it is dominated
# by the easy voxels. One seed of a small network is a small experiment; the paper's datasets
# have 100 to 200 test images and networks trained for hundreds of epochs. (After a smoke
# run of a few steps, all these numbers are noise.)
#
# ## The trade-off, image by image
#
# Each dot is one test image; the large markers are the means. Better is up (Dice) and left
# (ACE):

# %%
views.dice_vs_ace(runs)

# %% [markdown]
# ## Reliability, before and after
#
# The reliability diagrams of one test image under the three runs: the image whose baseline
# ACE is the median of the test set, so a typical one rather than a best or worst case.

# %%
typical = views.typical_image(runs["baseline"])
views.reliability_diagrams(runs, typical)

# %% [markdown]
# Compare the middle bins, the boundary voxels, row by row: the gaps to the diagonal (and
# the framed worst bin) are what the calibration losses act on. One image is one sample,
# though, and a small structure such as the lesion has only a handful of voxels in each
# middle bin, so its diagram is noisy. The **dataset reliability histogram** summarises
# every test image at once. For each image and each occupied confidence bin (x), it adds one
# count at that bin's accuracy (y): a calibrated model keeps the mass on the diagonal, an
# overconfident one below it on the right and above it on the left. Notebook 08 explores these
# interactively.

# %%
views.dataset_histograms(runs)

# %% [markdown]
# Finally the images themselves for the first saved test image: prediction, confidence (the
# largest class probability) and errors. A well-calibrated model's low-confidence band should
# cover its errors.

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
    },
)

# %% [markdown]
# With more seeds (`seed = 1, 2, ...`, or `calibtut demo --seeds 3` in a terminal) the
# comparison becomes firmer; the paper used one seed per run on datasets of 100 to 200 test
# images. Notebook **08** explores these runs image by image; notebooks **04-07** repeat this
# experiment on the paper's datasets.
