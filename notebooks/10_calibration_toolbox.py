# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/calibtut/calibtut/blob/main/notebooks/10_calibration_toolbox.ipynb)
#
# # 10 · The calibration toolbox
#
# Notebooks 03-09 compared the paper's two losses with their Dice + cross-entropy baseline. A
# researcher choosing how to calibrate a segmentation network has more tools than these: losses
# that change the training target, losses that penalise the logits, and methods applied after
# training. Each comes from its own paper, with its own data, metrics and code. Here they all
# run on the same synthetic scans, the same network, the same test images and the same per-image
# metrics, and one table and one figure compare them.
#
# **You will learn to**
#
# * train every calibration loss of the segmentation literature with one call, and apply
#   temperature scaling and an ensemble of seeds to finished runs;
# * say what each method changes (the target, the logits, the bins, or the probabilities after
#   training), and why MDCA is mL1-ACE with a single bin;
# * read a comparison with 95 % bootstrap confidence intervals over the test images, and judge
#   a method by several metrics: ACE above its noise floor, the proper scores Brier and NLL, and
#   the Dice it costs;
# * tell where each method helps on these scans and where it does not, from the numbers.

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
ensemble_size = 3  # seeds averaged by the ensemble (seed, seed + 1, ...); 2 in smoke mode
overwrite = False  # True: retrain runs made with other settings (e.g. after changing epochs)

# %% [markdown]
# ## The methods
#
# Every training loss keeps the paper's Dice + cross-entropy frame with its weights (0.33 each);
# what changes is the second term, or a third term added to it:
#
# | method | what it changes | in practice |
# |---|---|---|
# | `baseline` | nothing: Dice + CE | the reference every Δ% is against |
# | `hard`, `soft` | adds mL1-ACE, the per-image ACE over 20 hard or soft bins (the paper) | pulls each bin's mean probability to its accuracy |
# | `mdca` | adds mL1-ACE with **one** bin (MDCA) | pulls each class's mean probability to its share of the image |
# | `focal` | replaces CE by the focal loss, γ = 3 | down-weights voxels the network already gets right |
# | `label_smoothing` | CE against labels smoothed by 0.1 | the target is never 0 or 1, so logits stop growing |
# | `svls` | CE against labels blurred by a Gaussian (σ 1, 3 × 3) | smoothing only near boundaries, where raters disagree |
# | `mbls` | CE + 0.1 × the logit gaps above a margin of 10 | caps how far apart the logits may drift |
# | `nacl` | CE + 0.1 × the distance of the logits to their 3 × 3 neighbourhood mean | smooth logits in space, sharp where the image says so |
# | `+temperature` | after training: the logits divided by one T fitted on the validation scans | never changes the segmentation |
# | `+vector_temperature` | one T per class | may move a few boundaries |
# | `+ensemble` | after training: the mean of several seeds' probabilities | costs one training per member |
#
# The names are the `--loss` of `calibtut train` and the run folders under `runs/`; the
# post-hoc methods are `calibtut evaluate RUN --temperature scalar|vector` and
# `calibtut evaluate RUN1 RUN2 ... --ensemble`. Each writes a run directory like any other,
# so every table, figure and explorer of the course reads it unchanged.

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch
from IPython.display import Markdown, display

from calibtut import course, report, views
from calibtut.losses import HardL1ACELoss
from calibtut.methods import METHODS, POSTHOC, TRAINING_LOSSES
from calibtut.train import train_many
from calibtut.train.posthoc import ensemble, temperature_scale

display(
    pd.DataFrame(
        [(m.name, m.title, m.kind, m.reference) for m in METHODS.values() if "+" not in m.name]
        + [(f"<loss>+{p}", METHODS[f"baseline+{p}"].title, "posthoc", "") for p in POSTHOC],
        columns=["name", "title", "kind", "reference"],
    ).set_index("name")
)

# %% [markdown]
# ### MDCA is mL1-ACE with one bin
#
# MDCA (Hebbalaguppe et al., 2022) asks, per image and class, that the mean probability equal
# the share of voxels of that class. That is mL1-ACE with a single bin: one bin holds every
# voxel, its mean probability is the mean of all probabilities and its accuracy is the class
# share. Four voxels, two confidently right and two overconfident the other way:

# %%
probs = torch.tensor([[[0.9, 0.8, 0.3, 0.1]]])  # (1 image, 1 class, 4 voxels)
target = torch.tensor([[[1.0, 1.0, 0.0, 0.0]]])
print(f"mL1-ACE, 1 bin (MDCA): {HardL1ACELoss(num_bins=1)(probs, target).item():.3f}")
print(f"|mean p - mean y|:     {(probs.mean() - target.mean()).abs().item():.3f}")
print(f"mL1-ACE, 20 bins:      {HardL1ACELoss(num_bins=20)(probs, target).item():.3f}")

# %% [markdown]
# One bin lets the gaps cancel: 0.9 and 0.8 for two voxels of the class are too low, 0.3 and 0.1
# for two voxels outside it too high, and the means agree to 0.025. With 20 bins each voxel
# sits in its own bin and its gap counts: 0.175. MDCA is the weakest form of the paper's loss; it
# corrects a network that is overconfident *on average*, not one that is overconfident in its
# confident voxels and underconfident in its doubtful ones.
#
# ## Training every loss
#
# The synthetic preset of notebook 03 (a U-Net of 8 filters, 20 epochs of 45 steps of nine
# 128 × 128 patches) for each of the nine losses, and the baseline with `ensemble_size - 1`
# more seeds for the ensemble below, all in one call (on a CPU the runs train side by side, one
# per core). They go into the folder `make demo` and notebook 03 use, so their runs are reused
# (`calibtut demo --seeds 3` trains the baseline's three seeds):

# %%
settings = course.resolve_settings(
    "synthetic",
    smoke=smoke,
    device=device,
    epochs=epochs,
    run_root=Path(run_root) / "demo",
    overwrite=overwrite,
)
members = min(ensemble_size, 2) if smoke else ensemble_size
configs = [settings.config(loss, seed) for loss in TRAINING_LOSSES]
configs += [settings.config("baseline", s) for s in range(seed + 1, seed + members)]
trained = train_many(
    configs,
    data_dir,
    settings.run_root,
    device=settings.device,
    overwrite=settings.overwrite,
    jobs=None,  # on a CPU: side by side, one run per core (a GPU trains them one by one)
    progress=not settings.small,
)
runs = {loss: trained[i] for i, loss in enumerate(TRAINING_LOSSES)}
seeds = trained[len(TRAINING_LOSSES) :]

# %% [markdown]
# ## After training: temperature scaling and an ensemble
#
# Temperature scaling (Guo et al., 2017) divides the baseline's logits by a temperature $T$
# fitted by minimising the NLL of the **validation** scans (never the test scans); $T > 1$
# softens an overconfident network. One $T$ keeps every voxel's ranking of the classes, so the
# segmentation, hence the Dice, is unchanged; one $T$ per class may move a boundary. The
# ensemble averages the probabilities of the baseline trained with `ensemble_size` seeds
# (Mehrtash et al., 2020: the strongest simple baseline in medical calibration), which costs
# that many trainings.

# %%
progress = not settings.small
posthoc = {
    "baseline+temperature": temperature_scale(
        runs["baseline"], data_dir, device=settings.device, progress=progress
    ),
    "baseline+vector_temperature": temperature_scale(
        runs["baseline"], data_dir, per_class=True, device=settings.device, progress=progress
    ),
    "baseline+ensemble": ensemble(
        [runs["baseline"], *seeds], data_dir, device=settings.device, progress=progress
    ),
}
temperatures = {name: run.config["temperature"] for name, run in posthoc.items() if "temp" in name}
display(pd.Series(temperatures, name="fitted T (one, or per output channel)"))
methods = {**runs, **posthoc}

# %% [markdown]
# ## One table
#
# Per method, each metric's mean over the test scans (per scan, the mean over the organ, ring
# and lesion classes) and in brackets its 95 % bootstrap confidence interval over the scans; then
# each method's Δ% against the baseline, the paper's mean of per-scan percentage changes, with
# its interval. **ACE above floor** is each scan's ACE minus its noise floor (notebook 01): the
# part of the ACE a method can remove. **Brier** and **NLL** are proper scores of each class's
# probability that need no bins; lower is better. The **equal-mass ECE** uses bins that hold
# equal numbers of voxels (it is not the paper's ACE). An interval says how much a number
# depends on which 20 test scans were drawn; it does not cover the variation between training
# seeds.

# %%
table = report.ci_table(list(methods.values()))
display(Markdown(report.ci_markdown(table)))

# %% [markdown]
# Read it in our reference run (full mode on a CPU, seed 0; a GPU or another seed gives
# somewhat different numbers). The baseline's per-scan ACE is 0.058, of which 0.044 lies above
# its noise floor; its ECE is only 0.009, since the crowd of easy voxels dominates it
# (notebook 01).
#
# * **hard and soft** (the paper's losses) lower the ACE most, by 34.7 % [−39.7, −30.2] and
#   29.4 % [−34.4, −24.0]: the ACE above the floor falls from 0.044 to 0.024 and 0.028. They
#   also lower the ECE and the equal-mass ECE (by 13 to 22 %) and, a little, the Brier score and
#   NLL (hard: −1.4 % and −0.8 %), at a Dice cost of 0.7 % and 0.9 % whose intervals exclude
#   zero. Neither changes the MCE: its intervals run from −22 % to +24 %.
# * **mdca**, mL1-ACE with one bin, lowers the ECE by 12.3 % and the equal-mass ECE by 13.5 %,
#   as much as soft, but the ACE by only 3.7 % [−7.8, +0.6], an interval that holds zero: it
#   corrects each class's average probability, not the bins (the four voxels above).
# * **label_smoothing** and **nacl** lower the ACE a little, by 6.4 % [−10.1, −2.6] and
#   8.1 % [−11.3, −4.8], at no Dice cost, while their ECE rises by 201 % and 91 % and their NLL
#   by 23 % and 11 %. **focal** raises the ECE by 154 % and the NLL by 16 % without lowering
#   the ACE (+3.6 % [−0.8, +8.2]). The table below shows what happened: all three move bins
#   from overconfident to *underconfident* (focal: the share of underconfident bins rises from
#   0.16 to 0.49). By design they soften every voxel's probability; this baseline's ECE, which
#   weighs voxels by their number, was 0.009 to begin with, and softening overshoots.
# * **svls** and **mbls** change little here: no ACE, Brier or NLL change reaches 3 %; svls's
#   ACE interval holds zero and mbls's ACE rises by 2.6 % [+0.5, +4.4]. SVLS smooths the target
#   only within a voxel of a boundary, and MbLS penalises only logit gaps above 10.
# * **+temperature** fits T = 0.90 (above): below 1, so it *sharpens* the baseline. The
#   validation NLL, a mean over every voxel, asks for more confidence, while the ACE, which
#   weighs every occupied bin alike, gets worse by 19.7 % [+16.8, +23.0] and the NLL improves
#   by 0.1 % only; the Dice is unchanged, as promised, and the share of overconfident bins
#   rises from 0.55 to 0.63 (below). One T moves every voxel the same way.
#   **+vector_temperature** gives the largest NLL gain of all (−1.6 % [−2.0, −1.2]) and lowers
#   the ECE by 25 %, but not the ACE (−0.9 % [−6.7, +5.9]), and it costs 0.9 % of Dice and 14 %
#   of MCE: per-class temperatures move boundaries.
# * **+ensemble** of three baseline seeds is the only method whose Dice rises clearly
#   (+0.3 % [+0.2, +0.4]); it lowers the ACE by 10.3 % [−14.1, −6.1] and the Brier score and
#   NLL by 1.3 % and 0.7 % (its ECE rises by 3.6 %), for three trainings.
#
# The proper scores move little for every method (Brier within 5 %, NLL within 2 % except for
# label smoothing, NACL and focal): they are means over every voxel, most of them easy. The
# ACE, which weighs every occupied bin alike, separates the methods far more (from −35 % to
# +20 %). Below, the shares of each method's dataset reliability histogram (notebook 08) that
# lie below the diagonal (overconfident), on it, and above it (underconfident), averaged over
# the three classes:

# %%
directions = views.confidence_directions(methods)
display(directions.groupby(level="run", sort=False).mean().round(3))

# %% [markdown]
# ## The trade-off
#
# Each dot is one test scan, the large markers the means over scans. Better is up (Dice) and
# left (ACE):

# %%
fig, ax = plt.subplots(figsize=(10, 6))
views.dice_vs_ace(methods, ax=ax)
ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
fig.tight_layout()
display(fig)
plt.close(fig)

# %% [markdown]
# The means draw the table's story: hard and soft far to the left at a small Dice cost, the
# ensemble up and to the left, temperature scaling to the right of the baseline at the same
# Dice, vector temperature below it, the rest near the baseline. The dots of single scans
# spread far wider (an ACE from about 0.02 to 0.10) than the means move (0.038 to 0.069): the
# scans differ more than the methods, which is why the Δ% pairs each scan with itself.
#
# ## What it costs
#
# The training time of each run (the sum of its epochs, from `history.csv`; a reused run shows
# the time it took when it was trained):

# %%
seconds = pd.Series(
    {loss: float(run.history()["epoch_time_s"].sum()) for loss, run in runs.items()},
    name="training s",
)
display(seconds.to_frame().T.round(0))

# %% [markdown]
# Every loss trains in about the same time: on a CPU the U-Net's forward and backward passes
# dominate a step (in our reference run 85 to 103 s per run, the spread as much the machine's
# other load as the loss). `benchmarks/bench_methods.py` measures each loss's step in isolation,
# relative to Dice + CE, at this shape and an ACDC-like 3D one (benchmarks/README.md).
#
# How long the notebook takes in full mode on a CPU, measured on a shared 2-core machine: one
# run (`calibtut train --dataset synthetic --loss focal`) took 2 min 16 s on one thread, 85 s of
# it training; trained two at a time, a run took 105 to 113 s. From scratch the notebook trains
# 11 runs (9 losses and 2 more baseline seeds), 6 rounds of two: about **12 minutes**, plus
# half a minute for the post-hoc methods (an extrapolation from those runs, not one timed
# session). After `calibtut demo --seeds 3` it trains the 6 new losses: in our session the
# last four (and the end of a fifth) took 4 min 8 s, so about **6 to 7 minutes**. A GPU trains
# each run in seconds. In smoke mode (what the tests run) it takes 3 to 4 minutes.
#
# The numbers, for the record (and the tests):

# %%
course.save_result(
    run_root,
    "10_calibration_toolbox",
    {
        "device": str(settings.device),
        "runs": {name: run.path for name, run in methods.items()},
        "ensemble_members": [run.path for run in [runs["baseline"], *seeds]],
        "table": table.to_dict(orient="records"),
        "temperatures": temperatures,
        "training_seconds": seconds,
    },
)

# %% [markdown]
# ## What you learned
#
# * Every method here is a `--loss` of `calibtut train` or a post-hoc option of
#   `calibtut evaluate`, and writes a run directory: one table compares them all, with 95 %
#   bootstrap intervals over the test scans.
# * On these scans the paper's hard and soft mL1-ACE losses lower the ACE by about a third, far
#   more than any other method, for under 1 % of Dice; an ensemble of three seeds lowers it by a
#   tenth and is the only method whose Dice clearly rises; MDCA (one bin) lowers the ECE but
#   not clearly the ACE.
# * Label smoothing, NACL and the focal loss push this baseline, whose ECE was already 0.009,
#   into underconfidence: ECE and NLL rise by 10 to 200 %. SVLS and MbLS change the ACE, Brier
#   and NLL by less than 3 % here.
# * A temperature fitted by NLL can sharpen instead of soften (T = 0.90 here) and make the ACE
#   worse: read several metrics, and the ACE against its floor, before choosing a method.
#
# **Next**: raise `epochs`, or set `seed = 1` for a second seed of every method, and see which
# of these differences hold; `calibtut report runs/demo --out report/` writes every method
# into one report, with its figures.
#
# **References**: Guo et al., *On Calibration of Modern Neural Networks*, ICML 2017
# (temperature scaling); Mukhoti et al., *Calibrating Deep Neural Networks using Focal Loss*,
# NeurIPS 2020; Müller et al., *When Does Label Smoothing Help?*, NeurIPS 2019; Islam and
# Glocker, *Spatially Varying Label Smoothing*, IPMI 2021; Liu et al., *The Devil is in the
# Margin: Margin-based Label Smoothing for Network Calibration*, CVPR 2022; Murugesan et al.,
# *Trust your neighbours: Penalty-based constraints for model calibration* (NACL), MICCAI 2023;
# Hebbalaguppe et al., *A Stitch in Time Saves Nine: A Train-Time Regularizing Loss for Improved
# Neural Network Calibration* (MDCA), CVPR 2022; Mehrtash et al., *Confidence Calibration and
# Predictive Uncertainty Estimation for Deep Medical Image Segmentation*, IEEE TMI 2020; Barfoot
# et al., *Average Calibration Losses for Reliable Uncertainty in Medical Image Segmentation*,
# IEEE TMI 2026 ([arXiv 2506.03942](https://arxiv.org/abs/2506.03942)).
