# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/calibtut/calibtut/blob/main/notebooks/02_hard_and_soft_binning.ipynb)
#
# # 02 · Hard and soft binning: the mL1-ACE loss
#
# Notebook 01 measured miscalibration with the ACE. If a network is to *learn* to be
# calibrated, the ACE must become a loss: a number that gradient descent can lower. This
# notebook builds that loss, the **marginal L1 Average Calibration Error (mL1-ACE)** of Barfoot
# et al., and looks at its gradient, which is where hard and soft binning differ:
#
# 1. the loss, written out;
# 2. where its gradient comes from with hard bins;
# 3. soft bins, which share each probability between two neighbouring bins;
# 4. empty bins, and how many bins to use;
# 5. a playground to try all this on single values, and gradients on a small image.
#
# **You will learn to**
#
# * write the mL1-ACE loss and say what is averaged over what (bins, classes, images);
# * derive the gradient of the hard-binned loss for one voxel, and predict its sign;
# * compute soft-bin weights by hand and say what extra gradient they carry;
# * choose a number of bins, reading the ACE against its noise floor;
# * tell where on an image each loss acts (Dice + CE against the calibration losses).
#
# The exercises check themselves: run `ex.<name>.check(answer)`; `ex.<name>.hint()` helps and
# `ex.<name>.solution()` shows a model answer. Terms are defined in the
# [glossary](https://github.com/calibtut/calibtut/blob/main/notebooks/glossary.md).

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
data_dir = None  # not used: the image is generated
device = None  # not used: everything here is small enough for the CPU
epochs = None  # not used: nothing trains
overwrite = False  # not used: nothing trains
run_root = "../runs"  # the repository's runs/ folder, shared by make demo and every notebook
num_bins = 20  # bins of the losses (the paper's 20)
solutions = False  # True: every exercise checks its model answer (what the tests also run)

# %% [markdown]
# ## 1 · The loss
#
# For image $b$ and class $c$, let $M^+_{bc}$ be the occupied bins and $\bar p_{bcm}$,
# $\bar y_{bcm}$ the mean prediction and mean ground truth of bin $m$, exactly as in notebook 01.
# The loss is that image's ACE for that class, averaged over the $B$ images of a batch and
# the $C$ classes:
#
# $$\mathcal{L}_{\text{mL1-ACE}} = \frac{1}{BC} \sum_{b=1}^{B} \sum_{c=1}^{C}
#   \frac{1}{|M^+_{bc}|} \sum_{m \in M^+_{bc}} \left| \bar p_{bcm} - \bar y_{bcm} \right|.$$
#
# *Marginal*: each class channel is binned on its own. *L1*: the absolute gap (an L2 version
# would square it). Classes absent from an image's ground truth are left out of its sum. The
# paper never trains with this term alone: it adds it to Dice and cross-entropy, each weighted
# 0.33 (`calibtut.ACEDiceCELoss`).
#
# With the hand-made prediction of notebook 01, the loss equals the mean of the per-image,
# per-class ACE that `calibtut.metrics` reports:

# %%
import numpy as np
import pandas as pd
import torch
from IPython.display import display
from monai.losses import DiceCELoss

from calibtut import course, exercises, plots, views
from calibtut.binning import hard_bin_index, hard_binning, soft_binning
from calibtut.data import toy_segmentation
from calibtut.losses import HardL1ACELoss, SoftL1ACELoss
from calibtut.metrics import calibration_errors, draw_floor_labels, noise_floor
from calibtut.widgets import BinningPlayground

exercises.use_solutions(solutions)
ex = exercises.notebook("02")

toy = toy_segmentation(seed=1)
loss_value = HardL1ACELoss(num_bins=num_bins)(toy.probs, toy.target)
metric_value = calibration_errors(hard_binning(toy.probs, toy.target, num_bins)).ace.mean()
print(f"HardL1ACELoss = {loss_value:.6f}; mean ACE from calibtut.metrics = {metric_value:.6f}")

# %% [markdown]
# ## 2 · Where the gradient of hard binning comes from
#
# Which bin a voxel lands in is a step function of its probability: flat almost everywhere,
# so its derivative is zero (and undefined on the edges). Holding the bins fixed, only the
# bin means depend on the probabilities, and for voxel $i$ in bin $m$ of image $b$ and class $c$
#
# $$\frac{\partial \bar p_{bcm}}{\partial \hat p_i} = \frac{1}{|B_{bcm}|}
# \quad\Longrightarrow\quad
# \frac{\partial \mathcal{L}}{\partial \hat p_i} = \frac{1}{BC}\,\frac{1}{|M^+_{bc}|}\,
#   \frac{\operatorname{sign}(\bar p_{bcm} - \bar y_{bcm})}{|B_{bcm}|}.$$
#
# Three things follow. Every voxel of a bin gets the *same* push: down if the bin's mean
# prediction is above its accuracy ($\bar p > \bar y$), up if it is below. Every probability is
# pulled towards its bin's accuracy, on both sides of 0.5 (above 0.5, $\bar p > \bar y$ is
# overconfidence; below 0.5, where the model is predicting the class's absence, it is
# underconfidence: notebook 01). The push is divided by the bin's size, so the thousands of
# voxels in the crowded end bins barely move while the few in the middle bins, the boundary
# voxels, move a lot. And nothing in it knows where the bin edges are: the gradient treats each
# voxel's bin as fixed. A step can still carry a voxel over an edge (when its bin's accuracy lies
# outside the bin, for one), but the gradient does not see what changing bins does to the loss.
#
# The formula, by hand, against PyTorch's autograd through `HardL1ACELoss`:

# %%
probs = toy.probs.clone().requires_grad_(True)
HardL1ACELoss(num_bins=num_bins)(probs, toy.target).backward()

bins = hard_binning(toy.probs, toy.target, num_bins)
mean_p, mean_y = bins.means()
B, C = toy.probs.shape[:2]
push = torch.sign(mean_p - mean_y) / (bins.count * bins.occupied.sum(-1, keepdim=True) * B * C)
bin_of = hard_bin_index(toy.probs, num_bins).flatten(2)  # (B, C, voxels)
by_hand = push.nan_to_num().gather(-1, bin_of).view_as(toy.probs)
gap = (by_hand - probs.grad).abs().max().item()
assert gap < 1e-9, gap
print(f"largest difference between the formula and autograd: {gap:.1e}")

# %% [markdown]
# ### Exercise 1 · The gradient of one voxel
#
# Write the formula above as a function of one bin's numbers: its mean prediction and accuracy,
# its count, the number of occupied bins of that image and class, and the batch's numbers of
# images and classes. The check compares it with autograd's answer on cases you do not see.


# %%
def hard_gradient(mean_p, mean_y, count, occupied, images, classes):
    # your code here: return d(loss) / d(p) for one voxel of that bin
    ...


ex.hard_gradient.check(hard_gradient)

# %% [markdown]
# ### Exercise 2 · Predict the sign
#
# A voxel of the *lesion* channel has $\hat p = 0.1$, in a bin whose mean prediction is 0.12 and
# whose voxels are lesion 20 % of the time. Does one step of gradient descent on the hard loss
# move its probability `"up"` or `"down"`?

# %%
ex.sign.check(...)  # your answer: "up" or "down"

# %% [markdown]
# ## 3 · Soft binning
#
# Soft binning replaces "which bin?" by "how much of each bin?". With bin width
# $h = 1/M$ and bin centres $c_m = (m + \tfrac12) h$, probability $\hat p_i$ gives bin $m$ the
# weight
#
# $$w_{im} = \max\!\left(0,\; 1 - \frac{|\hat p_i - c_m|}{h}\right),$$
#
# so it is shared linearly between its two nearest centres (a value below the first centre,
# or above the last, belongs wholly to that end bin). Counts become sums of weights and the
# bin means become weighted means:
#
# $$n_m = \sum_i w_{im}, \qquad \bar p_m = \frac{\sum_i w_{im}\, \hat p_i}{n_m}, \qquad
#   \bar y_m = \frac{\sum_i w_{im}\, y_i}{n_m}.$$
#
# Now the weights depend on $\hat p_i$ too. A voxel feels the gaps of *both* bins it belongs
# to, and moving it changes how much it belongs to each, so the gradient also carries
# $\partial w_{im} / \partial \hat p_i = \pm 1/h$ between the centres: the soft loss can push a
# voxel from a bin with a large gap towards a neighbour with a smaller one. This extra freedom is
# one reason to expect the soft loss to calibrate more strongly than the hard one; the paper
# found that it does, at a small cost in Dice.
#
# The weights by hand, against `soft_binning` (calibtut's width is MONAI's, $(1 + \epsilon)/M$
# with $\epsilon$ the float32 machine epsilon):


# %%
def soft_weights(p: np.ndarray, num_bins: int) -> np.ndarray:
    width = (1 + float(np.finfo(np.float32).eps)) / num_bins
    centres = (np.arange(num_bins) + 0.5) * width
    weights = np.clip(1 - np.abs(p[:, None] - centres) / width, 0, 1)
    weights[p < centres[0], 0] = 1
    weights[p > centres[-1], -1] = 1
    return weights


values = np.array([0.01, 0.12, 0.37, 0.5, 0.99])
weights = soft_weights(values, 5)
table = pd.DataFrame(weights, index=values, columns=[f"bin {m}" for m in range(5)])
display(table.rename_axis("p").round(4))
one_at_a_time = torch.tensor(values, dtype=torch.float64).view(1, 5, 1)  # each value its own class
calibtut_weights = soft_binning(one_at_a_time, torch.zeros_like(one_at_a_time), 5).count[0]
assert np.allclose(calibtut_weights.numpy(), weights)

# %% [markdown]
# ### Exercise 3 · Soft weights without looking
#
# Close the cell above and write `soft_weights` again, for one probability `p` (a float) and
# `num_bins` bins, returning one weight per bin. The check tries values near the centres, at
# the ends and at 0.999.


# %%
def my_soft_weights(p, num_bins):
    # your code here: return an array of num_bins weights
    ...


ex.soft_weights.check(my_soft_weights)

# %% [markdown]
# ## 4 · Empty bins, and how many bins
#
# With hard bins an empty bin is simply one that no voxel fell into, and it is left out of the
# ACE. With soft bins almost every bin next to an occupied one receives a sliver of weight. A
# bin holding 0.0025 of one voxel would enter the average with a "mean" decided by that
# sliver alone, so calibtut, like the paper, counts a soft bin as empty when its total weight
# is under `empty_weight` (0.01 by default):

# %%
lonely = torch.tensor([[[0.3005]]])
lonely_bins = soft_binning(lonely, torch.zeros_like(lonely), 5)
print("weights:  ", lonely_bins.count[0, 0].numpy().round(4))
print("occupied: ", lonely_bins.occupied[0, 0].numpy())

# %% [markdown]
# The number of bins $M$ trades two errors. Few wide bins average over voxels of different
# calibration, so gaps of opposite sign cancel and the ACE comes out too low. Many narrow bins
# hold few voxels each, and their sampling noise shows up as gaps even for a perfectly
# calibrated model: the ACE comes out too high. The right yardstick for the organ channel is
# its own **noise floor** (notebook 01): the ACE that the organ's very probabilities would show
# if the labels were drawn from them, a perfectly calibrated model with this image's voxel
# counts. Below, at each number of bins, the organ's floor beside its ACE:

# %%
organ = toy.class_names.index("organ")
organ_probs, organ_target = toy.probs[:, organ : organ + 1], toy.target[:, organ : organ + 1]


def organ_floor(n: int) -> float:
    draws = draw_floor_labels(organ_probs, n, draws=64, generator=torch.Generator().manual_seed(0))
    return noise_floor(hard_binning(organ_probs, organ_target, n), draws).ace.item()


ace_by_bins = pd.DataFrame(
    {
        n: {
            "organ's noise floor (hard)": organ_floor(n),
            "organ (hard)": calibration_errors(
                hard_binning(organ_probs, organ_target, n)
            ).ace.item(),
            "organ (soft)": calibration_errors(
                soft_binning(organ_probs, organ_target, n)
            ).ace.item(),
        }
        for n in (5, 10, 20, 40, 80)
    }
).rename_axis(columns="bins")
display(ace_by_bins.round(3))

# %% [markdown]
# The floor rises from about 0.08 at 5 bins to 0.18 at 80: fewer voxels per bin, more
# sampling noise, none of it miscalibration. The organ's ACE grows too, and what a loss can remove is only its distance
# above the floor, which at 20 bins is about half of the ACE on this small image. ACE values are
# therefore only comparable at the same number of bins (the paper, MONAI and calibtut all use
# 20), and on images of the same size: the same model scores a higher ACE on a smaller image.
#
# ### Exercise 4 · An open question
#
# The paper found that soft binning calibrates more than hard binning but can cost Dice. From
# the two gradients, why might that be? Write your answer, then compare it with
# `ex.soft_strength.solution()`.

# %%
ex.soft_strength.check(...)  # your answer, as a string

# %% [markdown]
# ## 5 · The binning playground
#
# Move `p` and watch where it lands: its share of each bin (top) and, below, the gradient of
# the mL1-ACE on a small example of eight values plus yours (filled dots: ground truth 1,
# hollow: 0). Switch between hard and soft binning and change the number of bins. In hard mode
# all values of one bin share one gradient, and a value can slide within its bin without its
# push changing (as long as the bin's gap keeps its sign); in soft mode the gradient changes
# continuously as the value moves between centres.

# %%
playground = BinningPlayground(value=0.37, num_bins=5, binning="soft")
display(playground)

# %% [markdown]
# (If the sliders do not respond, the notebook is displayed without a running kernel; the two
# figures below are what the playground shows for `p = 0.37`, soft and then hard, drawn by
# `calibtut.views.binning_example`, the function behind it, so the live playground above keeps
# the settings you give it.)

# %%
soft, hard = (views.binning_example(0.37, num_bins=5, binning=b) for b in ("soft", "hard"))
display(soft.figure, hard.figure)
playground_result = {
    "soft_weights": soft.weights,
    "hard_weights": hard.weights,
    "hard_loss": hard.loss,
    "soft_loss": soft.loss,
    "widget_binning": playground.binning.value,
}

# %% [markdown]
# ## Gradients on a small image
#
# Back to the synthetic image. A network does not output probabilities but logits, turned
# into probabilities by a softmax; the losses take logits (`softmax=True`), and the gradient
# that reaches the network is the one with respect to the logits. Here it is for the organ
# channel, for the hard and soft mL1-ACE and, for comparison, for MONAI's Dice + cross-entropy,
# the baseline's loss (the outline is the annotated organ):

# %%
logits = toy.probs.log()  # softmax(log p) = p: logits that give exactly our probabilities
losses = {
    "Dice + CE": DiceCELoss(softmax=True),
    "hard mL1-ACE": HardL1ACELoss(num_bins=num_bins, softmax=True),
    "soft mL1-ACE": SoftL1ACELoss(num_bins=num_bins, softmax=True),
}
gradients = {}
for name, loss_function in losses.items():
    x = logits.clone().requires_grad_(True)
    loss_function(x, toy.target).backward()
    gradients[name] = x.grad[0, organ]
organ_outline = toy.target[0, organ]
plots.plot_gradient_maps(toy.image[0, 0], organ_outline, gradients)

# %% [markdown]
# The colour scales are logarithmic over three decades, since gradients differ in size by
# orders of magnitude. Dice + CE pushes whole regions: every organ voxel's logit up (blue: the
# loss falls as it rises), the voxels of the other structures down, most strongly where the
# prediction is least sure. The calibration losses are silent on the thousands of easy voxels
# and act on a band one or two pixels wide along the boundaries, where the middle bins are,
# with signs that alternate from bin to bin: each bin is pulled towards its own accuracy, some
# up, some down. Within a hard bin the push is the same for every voxel (only the softmax's
# slope varies it); the soft loss's varies within a bin and is larger, since it also moves
# voxels between bins. How concentrated each loss is, as the number of voxels (of 4096) that
# carry 90% of its total gradient:


# %%
def voxels_carrying(gradient: torch.Tensor, share: float = 0.9) -> int:
    ordered = gradient.abs().flatten().sort(descending=True).values
    return int((ordered.cumsum(0) < share * ordered.sum()).sum()) + 1


concentration = {name: voxels_carrying(g) for name, g in gradients.items()}
display(pd.Series(concentration, name="voxels carrying 90% of the gradient"))

# %%
course.save_result(
    run_root,
    "02_hard_and_soft_binning",
    {
        "num_bins": num_bins,
        "loss": loss_value.item(),
        "mean_ace": metric_value.item(),
        "hard_gradient_formula_vs_autograd": gap,
        "soft_weights_by_hand": table,
        "lonely_value_occupied": lonely_bins.occupied[0, 0],
        "ace_by_bins": ace_by_bins,
        "playground": playground_result,
        "voxels_carrying_90_percent": concentration,
        "exercises": exercises.status(),
    },
)

# %% [markdown]
# ## What you learned
#
# * The mL1-ACE is the per-image, per-class ACE averaged over a batch's images and the classes
#   present in them; the paper adds it to Dice + CE, each term weighted 0.33.
# * With hard bins a voxel's gradient is $\operatorname{sign}(\bar p_m - \bar y_m)$ divided by
#   its bin's size, the occupied bins and the batch: it pulls every probability towards its
#   bin's accuracy and treats bin membership as fixed.
# * Soft bins share a probability between the two nearest centres; their weights depend on the
#   probability, so the gradient can also move voxels towards a neighbouring bin with a
#   smaller gap.
# * More bins mean fewer voxels per bin and a higher noise floor: compare ACE values at one
#   number of bins and on images of one size.
# * Dice + CE pushes whole regions; the calibration losses act on the boundary band, where the
#   middle bins are.
#
# **Next**: notebook **03** trains networks with these losses and compares them with the
# Dice + CE baseline.
#
# **References**: Barfoot et al., *Average Calibration Error: A Differentiable Loss for Improved
# Reliability in Image Segmentation*, MICCAI 2024 ([arXiv 2403.06759](https://arxiv.org/abs/2403.06759));
# Barfoot et al., *Average Calibration Losses for Reliable Uncertainty in Medical Image
# Segmentation*, IEEE TMI 2026 ([arXiv 2506.03942](https://arxiv.org/abs/2506.03942)) (hard and
# soft binning, the 0.33 weights); Naeini et al., AAAI 2015 (binned calibration errors);
# Guo et al., *On Calibration of Modern Neural Networks*, ICML 2017; Nixon et al., *Measuring
# Calibration in Deep Learning*, CVPR Workshops 2019 (the *adaptive* calibration error, equal-mass
# bins, not this course's *average* one); Mehrtash et al., IEEE TMI 2020 (calibration in
# medical segmentation).
