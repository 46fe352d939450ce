"""Issue 16: every calibration method side by side. Each training loss against an independent
float64 computation (MONAI's class where calibtut wraps it), through the loss that training builds;
finite gradients; bad arguments; a tiny run of a non-paper loss through the command line; the
post-hoc methods (temperature scaling fitted on validation images, ensembles of seeds)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from monai.losses import NACLLoss
from monai.networks import one_hot

from calibtut.cli import main
from calibtut.losses import TERMS, DiceCalibrationLoss, MbLSLoss, SVLSLoss, svls_kernel
from calibtut.methods import METHODS, POSTHOC, TRAINING_LOSSES, method, ordered, posthoc_name
from calibtut.metrics import image_results
from calibtut.runs import RunDir
from calibtut.train import TrainConfig, build_loss, build_network, train
from calibtut.train.evaluation import predict
from calibtut.train.posthoc import TEMPERATURE_FILE, ensemble, fit_temperature, temperature_scale

pytestmark = pytest.mark.usefixtures("one_thread")
W = 0.33  # the paper's weights: Dice, CE (or the term in its place), mL1-ACE


def batch(seed=0, shape=(2, 4, 9, 7), scale=3.0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=g, dtype=torch.float64) * scale
    labels = torch.randint(0, shape[1], (shape[0], 1, *shape[2:]), generator=g)
    return logits, labels


def direct_dice(p, y, smooth_dr=1e-5):
    """MONAI's Dice loss with the baseline's settings (squared denominator), per image and
    channel, then the mean: ``1 - 2 sum(p y) / (sum p^2 + sum y^2 + 1e-5)``."""
    dims = tuple(range(2, p.ndim))
    return (1 - 2 * (p * y).sum(dims) / ((p**2).sum(dims) + (y**2).sum(dims) + smooth_dr)).mean()


def numpy_softmax(z):
    """Softmax and log-softmax over axis 1, float64 NumPy."""
    shifted = z - z.max(1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    return np.exp(logp), logp


def direct_term(loss, z, y, options):
    """Each term written out in float64 NumPy from its paper's formula (z logits, y one-hot)."""
    p, logp = numpy_softmax(z)
    n_classes = z.shape[1]
    if loss == "focal":
        return -(y * (1 - p) ** options["gamma"] * logp).sum(1).mean()
    if loss == "label_smoothing":
        s = options["smoothing"]
        return -(((1 - s) * y + s / n_classes) * logp).sum(1).mean()
    if loss == "mbls":
        gap = z.max(1, keepdims=True) - z
        ce = -(y * logp).sum(1).mean()
        return ce + options["alpha"] * np.maximum(gap - options["margin"], 0).mean()
    if loss == "svls":
        k, sigma = options["kernel_size"], options["sigma"]
        r = k // 2
        offsets = np.arange(k) - r
        kernel = np.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * sigma**2))
        kernel /= kernel.sum()
        kernel[r, r] = 1 - kernel[r, r]  # Islam & Glocker: the centre weighs all neighbours
        kernel /= kernel.sum()
        padded = np.pad(y, ((0, 0), (0, 0), (r, r), (r, r)), mode="edge")
        soft = np.zeros_like(y)
        for i in range(k):
            for j in range(k):
                soft += kernel[i, j] * padded[:, :, i : i + y.shape[2], j : j + y.shape[3]]
        return -(soft * logp).sum(1).mean()
    raise AssertionError(loss)


def built(loss, **options):
    config = TrainConfig.for_dataset("synthetic", loss, loss_options=options)
    return config, build_loss(config, config.dataset_spec())


# --- the vocabulary --------------------------------------------------------------------------


def test_every_method_has_a_name_title_and_colour():
    assert TRAINING_LOSSES[:3] == ("baseline", "hard", "soft")
    assert set(TRAINING_LOSSES) >= {"focal", "label_smoothing", "nacl", "svls", "mbls", "mdca"}
    for loss in TRAINING_LOSSES:
        for p in POSTHOC:
            assert method(posthoc_name(loss, p)).kind == "posthoc"
    assert ordered(["soft+ensemble", "mine", "focal", "baseline"]) == [
        "baseline",
        "focal",
        "soft+ensemble",
        "mine",
    ]
    # the options the command line checks without torch are the losses' own defaults
    for term, defaults in TERMS.items():
        assert dict(METHODS[term].options) == defaults, term


# --- each loss against an independent computation ---------------------------------------------


@pytest.mark.parametrize("loss", ["focal", "label_smoothing", "svls", "mbls"])
@pytest.mark.parametrize("options", [{}, "changed"])
def test_term_losses_equal_their_formula_in_float64(loss, options):
    if options == "changed":
        options = {
            "focal": {"gamma": 1.5},
            "label_smoothing": {"smoothing": 0.3},
            "svls": {"sigma": 0.7},
            "mbls": {"margin": 2.0, "alpha": 0.5},
        }[loss]
    logits, labels = batch(scale=6.0)
    config, loss_fn = built(loss, **options)
    assert dict(config.loss_options) == {**TERMS[loss], **options}
    got = loss_fn(logits.float(), labels.float())
    z, y = logits.numpy(), one_hot(labels, 4).double().numpy()
    p, _ = numpy_softmax(z)
    dims = (2, 3)
    dice = np.mean(1 - 2 * (p * y).sum(dims) / ((p**2).sum(dims) + (y**2).sum(dims) + 1e-5))
    expected = W * dice + W * direct_term(loss, z, y, {**TERMS[loss], **options})
    assert float(got) == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_nacl_is_dice_plus_monais_nacl():
    logits, labels = batch(1)
    _, loss_fn = built("nacl")
    got = loss_fn(logits.float(), labels.float())
    nacl = NACLLoss(classes=4, dim=2, kernel_size=3, alpha=0.1)(logits.float(), labels[:, 0])
    probs = logits.softmax(1)
    expected = W * direct_dice(probs, one_hot(labels, 4).double()) + W * nacl.double()
    assert float(got) == pytest.approx(float(expected), rel=1e-5)


def test_mdca_is_mean_probability_against_class_share_per_image_and_class():
    logits, labels = batch(2)
    _, loss_fn = built("mdca")
    got = loss_fn(logits.float(), labels.float())
    probs, target = logits.softmax(1), one_hot(labels, 4).double()
    mdca = (probs.mean((2, 3)) - target.mean((2, 3))).abs().mean()  # one bin: every voxel
    ce = F.cross_entropy(logits, labels[:, 0])
    expected = W * direct_dice(probs, target) + W * ce + W * mdca
    assert float(got) == pytest.approx(float(expected), rel=1e-5)


def test_svls_kernel_and_labels_inside_a_structure():
    k = svls_kernel(3)
    assert k.shape == (3, 3, 3) and float(k.sum()) == pytest.approx(1.0)
    assert float(k[1, 1, 1]) == pytest.approx(0.5)
    onehot = one_hot(torch.zeros(1, 1, 5, 5, dtype=torch.long), 2)
    assert torch.equal(SVLSLoss().smoothed_labels(onehot), onehot)


@pytest.mark.parametrize("loss", TRAINING_LOSSES)
def test_gradients_are_finite_even_for_extreme_logits(loss):
    logits, labels = batch(3, scale=40.0)
    logits = logits.float().requires_grad_()
    _, loss_fn = built(loss)
    value = loss_fn(logits, labels.float())
    (grad,) = torch.autograd.grad(value, logits)
    assert math.isfinite(float(value.detach())) and torch.isfinite(grad).all(), loss
    assert grad.abs().sum() > 0


def test_3d_terms_run():
    logits, labels = batch(4, shape=(1, 3, 5, 6, 4))
    for loss in TERMS:
        value = DiceCalibrationLoss(loss, to_onehot_y=True)(logits.float(), labels.float())
        assert math.isfinite(float(value))


# --- bad arguments ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: DiceCalibrationLoss("nope"), ValueError, "term must be one of"),
        (lambda: DiceCalibrationLoss("focal", margin=1), TypeError, "takes gamma, not margin"),
        (lambda: DiceCalibrationLoss("nacl", kernel_size=2), ValueError, "positive odd"),
        (lambda: DiceCalibrationLoss("label_smoothing", smoothing=2), ValueError, r"\[0, 1\]"),
        (lambda: SVLSLoss(sigma=0), ValueError, "sigma must be a number > 0"),
        (lambda: MbLSLoss(margin=float("nan")), ValueError, "margin"),
        (lambda: TrainConfig.for_dataset("synthetic", "focal", loss_options={"margin": 1}),
         ValueError, "focal loss takes gamma, not margin"),
        (lambda: TrainConfig.for_dataset("synthetic", "mdca", loss_options={"gamma": 1}),
         ValueError, "mdca loss takes no options"),
        (lambda: TrainConfig.for_dataset("synthetic", "focal", loss_options={"gamma": -1}),
         ValueError, "gamma must be a finite number >= 0"),
        (lambda: TrainConfig.for_dataset("synthetic", "svls", loss_options={"kernel_size": 2.5}),
         ValueError, "kernel_size must be an integer"),
        (lambda: TrainConfig.for_dataset("kits", "focal", activation="sigmoid"),
         ValueError, "defined for a softmax over exclusive labels"),
        (lambda: TrainConfig.for_dataset("synthetic", "medium"), ValueError, "unknown loss"),
    ],
)  # fmt: skip
def test_bad_arguments_get_clear_errors(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_a_single_channel_input_is_refused():
    with pytest.raises(ValueError, match="at least 2 channels"):
        DiceCalibrationLoss("focal")(torch.randn(1, 1, 4, 4), torch.ones(1, 1, 4, 4))


def test_cli_bad_loss_options_are_one_line(capsys):
    assert main(["train", "--dataset", "synthetic", "--loss", "focal", "--loss-option", "g"]) == 2
    assert "--loss-option takes NAME=NUMBER" in capsys.readouterr().err
    argv = ["train", "--dataset", "kits", "--loss", "svls", "--activation", "sigmoid"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "defined for a softmax" in err and "\n" not in err


def test_config_records_options_only_for_losses_that_have_them():
    assert "loss_options" not in TrainConfig.for_dataset("synthetic", "soft").to_dict()
    focal = TrainConfig.for_dataset("synthetic", "focal", loss_options={"gamma": 2})
    assert focal.to_dict()["loss_options"] == {"gamma": 2.0}
    assert TrainConfig.from_dict(focal.to_dict()) == focal


# --- whole runs: a non-paper loss, temperature scaling, ensembles ------------------------------

TINY = ["--epochs", "2", "--val-every", "1", "--width", "4", "--batch-size", "2", "--device", "cpu"]


@pytest.mark.slow
def test_train_a_focal_run_through_the_cli(small_synthetic, tmp_path, capsys):
    argv = ["train", "--dataset", "synthetic", "--loss", "focal", "--loss-option", "gamma=2"]
    assert main([*argv, *TINY, "--run-root", str(tmp_path)]) == 0
    run = RunDir(tmp_path / "synthetic" / "focal" / "seed_0")
    assert run.is_finished
    assert (run.config["loss"], run.config["loss_options"]) == ("focal", {"gamma": 2.0})
    assert "focal" in capsys.readouterr().out  # the run's table
    assert len(run.results().per_image) == 3 * 3


def tiny(loss="baseline", seed=0):
    values = {"epochs": 2, "val_every": 1, "width": 4, "batch_size": 2}
    return TrainConfig.for_dataset("synthetic", loss, seed, **values)


@pytest.fixture
def two_seeds(small_synthetic, tmp_path):
    return [train(tiny(seed=s), None, tmp_path, progress=False) for s in (0, 1)]


def validation_logits(run):
    config = TrainConfig.from_dict(run.config)
    data = config.dataset_spec()
    network = build_network(config, data)
    network.load_state_dict(run.best()["model"])
    network.eval()
    logits, labels = [], []
    for case in data.dataset(None, "val", cache=False):
        with torch.no_grad():  # one window per image: a forward pass is the inference
            z = network(case["image"].as_tensor()[None])
        logits.append(z[0].flatten(1).T)
        labels.append(case["label"].as_tensor()[0].flatten().long())
    return torch.cat(logits).double(), torch.cat(labels), network, data


def grid_nll(z, y, temperatures):
    return np.array([float(F.cross_entropy(z / t, y)) for t in temperatures])


def test_fitted_temperature_minimises_nll_like_a_grid_search():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(3000, 4, generator=g, dtype=torch.float64) * 5
    y = torch.distributions.Categorical(logits=z / 2.5).sample()  # overconfident: T near 2.5
    t = float(fit_temperature(z, y))
    grid = np.geomspace(0.2, 20, 4001)
    nll = grid_nll(z, y, grid)
    assert t == pytest.approx(grid[nll.argmin()], rel=2e-3)
    assert float(F.cross_entropy(z / t, y)) <= nll.min() + 1e-12
    vector = fit_temperature(z, y, per_class=True)
    assert vector.shape == (4,)
    v_nll = float(F.cross_entropy(z / vector, y))
    assert v_nll <= float(F.cross_entropy(z / t, y)) + 1e-12  # more freedom, no worse
    for c in range(4):  # and a minimum along every class's temperature
        for factor in (0.98, 1.02):
            moved = vector.clone()
            moved[c] *= factor
            assert float(F.cross_entropy(z / moved, y)) >= v_nll - 1e-12


def test_fit_temperature_refuses_bad_input():
    with pytest.raises(ValueError, match="NaN or infinite"):
        fit_temperature(torch.tensor([[0.0, float("nan")]]), torch.tensor([0]))
    with pytest.raises(ValueError, match="labels must have shape"):
        fit_temperature(torch.zeros(3, 2), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="no minimum at a positive temperature"):
        z = torch.tensor([[5.0, -5.0], [-5.0, 5.0]] * 10)
        fit_temperature(z, torch.tensor([1, 0] * 10))  # every voxel confidently wrong


@pytest.mark.slow
@pytest.mark.parametrize("per_class", [False, True])
def test_temperature_scaling_is_fitted_on_validation_and_stored(two_seeds, per_class):
    source = two_seeds[0]
    scaled = temperature_scale(source, per_class=per_class, device="cpu", progress=False)
    name = "baseline+vector_temperature" if per_class else "baseline+temperature"
    assert scaled.path == source.path.parent.parent / name / "seed_0"
    stored = json.loads((scaled.path / TEMPERATURE_FILE).read_text())
    assert stored["run_id"] == scaled.run_id and stored["fitted_on"] == "validation"
    assert scaled.config["temperature"] == stored["temperature"]
    assert scaled.config["source_runs"][0]["run_id"] == source.run_id
    t = torch.tensor(stored["temperature"], dtype=torch.float64)
    assert len(t) == (4 if per_class else 1)
    z, y, _, _ = validation_logits(source)
    assert stored["val_voxels"] == len(y) and stored["val_images"] == 2
    # the stored T is the validation-NLL minimum: recomputed, then against a grid
    assert torch.allclose(t, fit_temperature(z, y, per_class=per_class), rtol=1e-4)
    assert stored["val_nll_after"] == pytest.approx(float(F.cross_entropy(z / t, y)), rel=1e-5)
    assert stored["val_nll_after"] <= stored["val_nll_before"]
    if not per_class:
        grid = np.geomspace(0.05, 50, 3001)
        assert stored["val_nll_after"] <= grid_nll(z, y, grid).min() + 1e-9
        # a scalar T never changes the argmax: the segmentation, hence Dice, is the source's
        before = source.results().per_image.set_index(["image_id", "class_name"])
        after = scaled.results().per_image.set_index(["image_id", "class_name"])
        pd.testing.assert_series_equal(before["dice"], after["dice"])
        for image_id in scaled.prediction_ids():
            a, b = scaled.prediction(image_id), source.prediction(image_id)
            assert np.array_equal(a["prediction"], b["prediction"])
    assert scaled.config["loss"] == name and scaled.name == f"synthetic/{name}/seed_0"


@pytest.mark.slow
def test_ensemble_is_the_mean_of_the_members_probabilities(two_seeds, tmp_path):
    run = ensemble(two_seeds, device="cpu", progress=False)
    assert run.path == two_seeds[0].path.parent.parent / "baseline+ensemble" / "seed_0"
    assert run.config["member_seeds"] == [0, 1]
    networks = []
    for member in two_seeds:
        _, _, network, data = validation_logits(member)
        networks.append(network)
    per_image = run.results().per_image.set_index(["image_id", "class_name"])
    names = run.results().class_names
    for case in data.dataset(None, "test", cache=False):
        image = case["image"].as_tensor()[None]
        members = [predict(n, image, data) for n in networks]
        mean = (members[0].double() + members[1].double()) / 2  # by hand
        expected = image_results(mean.float(), one_hot(case["label"].as_tensor()[None], 4), 20)
        for c, name in enumerate(names, start=1):
            row = per_image.loc[(case["id"], name)]
            assert row["dice"] == pytest.approx(float(expected.dice[0, c]), abs=1e-6, nan_ok=True)
            for metric in ("ece", "ace", "mce"):
                value = float(getattr(expected.errors, metric)[0, c])
                assert row[metric] == pytest.approx(value, abs=1e-5), (case["id"], name, metric)
        saved = run.prediction(case["id"])["probabilities"]
        assert np.abs(saved - mean[0].numpy()).max() <= 0.5 / 255 + 1e-6
    # every post-hoc run is a run like the others: the report reads them side by side
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "report")]) == 0
    table = pd.read_csv(tmp_path / "report" / "report.csv")
    assert {"baseline", "baseline+ensemble"} <= set(table["loss"])


def test_ensemble_refuses_a_single_run_and_evaluate_one_run(two_seeds, capsys):
    with pytest.raises(ValueError, match="two or more different runs"):
        ensemble([two_seeds[0], two_seeds[0]], device="cpu")
    assert main(["evaluate", str(two_seeds[0].path), str(two_seeds[1].path)]) == 2
    assert "pass --ensemble to average them" in capsys.readouterr().err


# --- metrics beside ECE/ACE/MCE: Brier, NLL, equal-mass bins; bootstrap CIs ----------------------


def random_probs(seed=0, shape=(2, 3, 37)):
    g = torch.Generator().manual_seed(seed)
    probs = torch.rand(shape, generator=g, dtype=torch.float64)
    target = (torch.rand(shape, generator=g, dtype=torch.float64) < probs).double()
    return probs, target


def test_brier_and_nll_equal_direct_float64_sums():
    from calibtut.metrics import brier_score, negative_log_likelihood

    probs, target = random_probs()
    p, y = probs.numpy(), target.numpy()
    B, C, N = p.shape
    for b in range(B):
        for c in range(C):
            brier = sum((p[b, c, i] - y[b, c, i]) ** 2 for i in range(N)) / N
            nll = (
                -sum(
                    math.log(p[b, c, i]) if y[b, c, i] else math.log(1 - p[b, c, i])
                    for i in range(N)
                )
                / N
            )
            assert float(brier_score(probs, target)[b, c]) == pytest.approx(brier, rel=1e-12)
            assert float(negative_log_likelihood(probs, target)[b, c]) == pytest.approx(
                nll, rel=1e-9
            )
    certain = torch.tensor([[[0.0, 1.0]]])  # confidently wrong: clipped, finite
    assert torch.isfinite(negative_log_likelihood(certain, torch.tensor([[[1.0, 0.0]]]))).all()
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        brier_score(torch.tensor([[[1.5]]]), torch.tensor([[[1.0]]]))
    with pytest.raises(ValueError, match="must share one shape"):
        brier_score(torch.zeros(1, 2, 3), torch.zeros(1, 2, 4))


@pytest.mark.parametrize("num_bins", [1, 4, 10, 100])
def test_equal_mass_ece_equals_a_direct_sorted_split(num_bins):
    from calibtut.metrics import equal_mass_ece

    probs, target = random_probs(1)
    got = equal_mass_ece(probs, target, num_bins)
    for b in range(probs.shape[0]):
        for c in range(probs.shape[1]):
            p, y = probs[b, c].numpy(), target[b, c].numpy()
            order = np.argsort(p, kind="stable")
            chunks = np.array_split(order, min(num_bins, p.size))  # sizes differ by at most 1
            ece = sum(len(k) / p.size * abs(p[k].mean() - y[k].mean()) for k in chunks)
            assert float(got[b, c]) == pytest.approx(ece, abs=1e-12)
    with pytest.raises(ValueError, match="num_bins must be a positive integer"):
        equal_mass_ece(probs, target, 0)


def test_bootstrap_ci_is_a_percentile_interval_of_resampled_means():
    from calibtut.report import bootstrap_ci

    values = np.array([0.1, 0.5, 0.2, 0.9, np.nan, 0.4])
    mean, low, high = bootstrap_ci(values, n_boot=500, seed=3)
    x = values[np.isfinite(values)]
    rng = np.random.default_rng(3)
    means = [x[rng.integers(0, x.size, x.size)].mean() for _ in range(500)]
    assert mean == pytest.approx(x.mean())
    assert (low, high) == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])))
    assert low <= mean <= high
    assert all(math.isnan(v) for v in bootstrap_ci([np.nan]))
    with pytest.raises(ValueError, match="level must lie in"):
        bootstrap_ci(values, level=1.0)


@pytest.mark.slow
def test_ci_table_over_a_baseline_and_its_temperature_scaled_run(two_seeds):
    from calibtut.report import ci_table

    scaled = temperature_scale(two_seeds[0], device="cpu", progress=False)
    table = ci_table([two_seeds[0], scaled], n_boot=200).set_index(["metric", "loss"])
    row = table.loc[("ace", "baseline+temperature")]
    assert row["ci_low"] <= row["mean"] <= row["ci_high"] and row["n_images"] == 3
    assert math.isfinite(row["pct_change"]) and row["pct_low"] <= row["pct_high"]
    assert math.isnan(table.loc[("ace", "baseline"), "pct_change"])
    dice = table.loc[("dice", "baseline+temperature")]
    assert dice["pct_change"] == pytest.approx(0.0, abs=1e-9)  # a scalar T keeps Dice


# --- Brier, NLL and equal-mass ECE in per_image.csv; CIs in the report ---------------------------


def direct_scores(p: np.ndarray, y: np.ndarray, num_bins: int) -> dict[str, float]:
    """One image and class (flat float64 arrays): Brier, clipped binary NLL, equal-mass ECE."""
    q = np.clip(p, 1e-7, 1 - 1e-7)
    order = np.argsort(p, kind="stable")
    chunks = np.array_split(order, min(num_bins, p.size))
    return {
        "brier": float(np.mean((p - y) ** 2)),
        "nll": float(np.mean(-(y * np.log(q) + (1 - y) * np.log(1 - q)))),
        "equal_mass_ece": sum(len(k) / p.size * abs(p[k].mean() - y[k].mean()) for k in chunks),
    }


def test_per_image_table_holds_scores_equal_to_direct_float64_formulas():
    from calibtut.runs import FLOOR_COLUMNS, PER_IMAGE_COLUMNS, SCORE_COLUMNS, per_image_table

    logits, labels = batch(4, shape=(2, 4, 9, 7))
    probs = torch.softmax(logits, 1).float()
    target = one_hot(labels, 4)
    results = image_results(probs, target, 10, include_background=False, scores=True)
    table = per_image_table(results, ["a", "b"], ["x", "y", "z"], [1, 2, 3])
    assert tuple(table.columns) == PER_IMAGE_COLUMNS + SCORE_COLUMNS
    p = probs.double().flatten(2).numpy()
    y = target.double().flatten(2).numpy()
    for row in table.itertuples():
        b = ["a", "b"].index(row.image_id)
        expected = direct_scores(p[b, row.class_index], y[b, row.class_index], 10)
        for name, value in expected.items():
            assert getattr(row, name) == pytest.approx(value, rel=1e-12, abs=1e-15), name
    plain = image_results(probs, target, 10, floor_draws=4)  # validation's: no scores
    names = ["bg", "x", "y", "z"]
    columns = per_image_table(plain, ["a", "b"], names, [0, 1, 2, 3]).columns
    assert tuple(columns) == PER_IMAGE_COLUMNS + FLOOR_COLUMNS


def chosen_scores(scale: float, images: int = 4, classes: int = 2, seed: int = 0):
    g = np.random.default_rng(seed)
    shape = (images, classes)
    return {
        "brier": scale * g.uniform(0.01, 0.1, shape),
        "nll": scale * g.uniform(0.05, 0.5, shape),
        "equal_mass_ece": scale * g.uniform(0.001, 0.05, shape),
    }


def test_report_scores_with_cis_and_old_runs_without_them_say_na(tmp_path):
    from fakes import evaluated_run

    from calibtut.report import (
        NOT_AVAILABLE_NOTE,
        bootstrap_ci,
        ci_markdown,
        ci_table,
        report_markdown,
        report_table,
    )

    images = ["i0", "i1", "i2", "i3"]
    base = chosen_scores(1.0)
    runs = [
        evaluated_run(tmp_path, loss="baseline", image_ids=images, values=base),
        evaluated_run(tmp_path, loss="focal", image_ids=images, values=chosen_scores(0.5, seed=1)),
        evaluated_run(tmp_path, loss="hard", image_ids=images),  # evaluated before scores
    ]
    assert "brier" not in runs[2].results().per_image  # an old run reads, without the column
    table = report_table(runs)
    rows = table.set_index(["scope", "metric", "loss"])
    for loss, run in (("baseline", runs[0]), ("focal", runs[1])):
        per_image = run.results().per_image.groupby("image_id", sort=False)["brier"].mean()
        row = rows.loc[("macro", "brier", loss)]
        mean, low, high = bootstrap_ci(per_image.to_numpy())
        assert row["value"] == pytest.approx(per_image.mean(), rel=1e-12)
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((low, high))
        assert low <= row["value"] <= high
    focal = runs[1].results().per_image.groupby("image_id", sort=False)["nll"].mean()
    baseline = runs[0].results().per_image.groupby("image_id", sort=False)["nll"].mean()
    change = ((focal - baseline) / baseline * 100).to_numpy()
    row = rows.loc[("macro", "nll", "focal")]
    assert row["pct_change"] == pytest.approx(change.mean())
    assert (row["pct_low"], row["pct_high"]) == pytest.approx(bootstrap_ci(change)[1:])
    assert row["n"] == 4 and math.isfinite(row["p_value"])
    assert ("macro", "brier", "hard") not in rows.index  # missing, never a NaN that claims a value
    assert math.isfinite(rows.loc[("macro", "ace", "hard"), "pct_change"])  # the rest compared
    assert math.isnan(rows.loc[("micro", "ace", "hard"), "ci_low"])  # one value per run
    text = report_markdown(table)
    assert "### Macro summary: mean [95 % CI over test images]" in text
    summary = next(line for line in text.splitlines() if line.startswith("| hard |"))
    assert "n/a" in summary and "nan" not in text.lower()
    brier = text.split("### Brier\n")[1].split("###")[0]
    assert "| macro | " in brier and "n/a" in brier and NOT_AVAILABLE_NOTE in brier
    cell = rows.loc[("macro", "brier", "focal")]
    assert f"{cell['value']:.4f} [{cell['ci_low']:.4f}, {cell['ci_high']:.4f}]" in text
    # the notebook's table: the same means and intervals, and the ACE above its floor
    cis = ci_table(runs).set_index(["metric", "loss"])
    assert cis.loc[("brier", "focal"), "mean"] == pytest.approx(cell["value"])
    assert cis.loc[("brier", "focal"), "ci_high"] == pytest.approx(cell["ci_high"])
    assert ("brier", "hard") not in cis.index
    per_image = runs[2].results().per_image.groupby("image_id", sort=False)
    above = per_image["ace"].mean() - per_image["ace_floor"].mean()
    assert cis.loc[("ace_above_floor", "hard"), "mean"] == pytest.approx(above.mean())
    assert math.isnan(cis.loc[("ace_above_floor", "hard"), "pct_change"])
    assert "n/a" in ci_markdown(ci_table(runs))


def test_a_method_with_a_seed_lacking_a_score_has_no_value_for_it(tmp_path):
    from fakes import evaluated_run

    from calibtut.report import report_table

    images = ["i0", "i1", "i2"]
    runs = [
        evaluated_run(
            tmp_path, loss="baseline", seed=0, image_ids=images, values=chosen_scores(1, 3)
        ),
        evaluated_run(tmp_path, loss="baseline", seed=1, image_ids=images),
    ]
    table = report_table(runs)
    assert not table["metric"].isin(["brier", "nll", "equal_mass_ece"]).any()


def test_cluster_bootstrap_resamples_images_with_all_their_seeds():
    from calibtut.report import bootstrap_ci

    values = np.array([0.1, 0.3, 0.5, 0.9, np.nan, 0.4, 0.2, 0.8])
    groups = ["a", "a", "b", "b", "c", "c", "d", "d"]
    mean, low, high = bootstrap_ci(values, groups=groups, n_boot=400, seed=5)
    sums = {"a": 0.4, "b": 1.4, "c": 0.4, "d": 1.0}
    counts = {"a": 2, "b": 2, "c": 1, "d": 2}
    rng = np.random.default_rng(5)
    names = list(sums)
    means = []
    for _ in range(400):
        pick = [names[i] for i in rng.integers(0, 4, 4)]
        means.append(sum(sums[k] for k in pick) / sum(counts[k] for k in pick))
    assert mean == pytest.approx(np.nanmean(values))
    assert (low, high) == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])))
    with pytest.raises(ValueError, match="groups has 2 labels for 8 values"):
        bootstrap_ci(values, groups=["a", "b"])


@pytest.mark.slow
def test_evaluation_saves_scores_equal_to_direct_formulas_on_its_probabilities(
    small_synthetic, tmp_path
):
    from calibtut.report import report_table

    run = train(tiny(), None, tmp_path, progress=False)
    _, _, network, data = validation_logits(run)
    per_image = run.results().per_image.set_index(["image_id", "class_name"])
    checked = 0
    for case in data.dataset(None, "test", cache=False):
        image = case["image"].as_tensor()[None]
        probs = predict(network, image, data)[0].double().flatten(1).numpy()
        target = one_hot(case["label"].as_tensor()[None], 4)[0].double().flatten(1).numpy()
        for c, name in enumerate(run.results().class_names, start=1):
            row = per_image.loc[(case["id"], name)]
            for metric, value in direct_scores(probs[c], target[c], 20).items():
                assert row[metric] == pytest.approx(value, rel=1e-9, abs=1e-12), (name, metric)
                checked += 1
    assert checked == 3 * 3 * 3
    table = report_table([run]).set_index(["scope", "metric", "loss"])
    nll = table.loc[("macro", "nll", "baseline")]
    assert nll["ci_low"] <= nll["value"] <= nll["ci_high"]


@pytest.mark.slow
def test_cli_temperature_scaling_and_a_post_hoc_run_refused_with_what_to_do(
    small_synthetic, tmp_path, capsys
):
    source = train(tiny(), None, tmp_path, progress=False)
    argv = ["evaluate", str(source.path), "--temperature", "scalar", "--device", "cpu"]
    assert main(argv) == 0
    scaled = RunDir(tmp_path / "synthetic" / "baseline+temperature" / "seed_0")
    out = capsys.readouterr().out
    assert f"results written to {scaled.per_image_path}" in out and "baseline+temperature" in out
    stored = json.loads((scaled.path / TEMPERATURE_FILE).read_text())
    assert stored["run_id"] == scaled.run_id and stored["temperature"][0] > 0
    assert {"brier", "nll", "equal_mass_ece"} <= set(scaled.results().per_image)
    assert main(["evaluate", str(scaled.path), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown loss" not in err
    assert "is a post-hoc run (baseline+temperature)" in err
    assert f"calibtut evaluate {source.path.resolve()} --temperature scalar" in err


@pytest.mark.slow
def test_a_reused_run_evaluated_before_scores_is_evaluated_again(small_synthetic, tmp_path, capsys):
    from calibtut.runs import SCORE_COLUMNS
    from calibtut.train import train_many

    run = train(tiny(), None, tmp_path, progress=False)
    full = run.results().per_image
    full.drop(columns=list(SCORE_COLUMNS)).to_csv(run.per_image_path, index=False)  # as before
    assert not set(SCORE_COLUMNS) & set(run.results().per_image)
    capsys.readouterr()
    (again,) = train_many([tiny()], None, tmp_path, device="cpu", progress=False)
    assert "evaluated again (its results predate the Brier score" in capsys.readouterr().out
    pd.testing.assert_frame_equal(again.results().per_image, full)  # the same weights, scored


def test_vector_temperature_caps_a_class_whose_logits_do_not_predict_it():
    from calibtut.train.posthoc import MAX_TEMPERATURE

    g = torch.Generator().manual_seed(1)
    z = torch.randn(4000, 4, generator=g, dtype=torch.float64) * 3
    truth = z.clone()
    truth[:, 3] = -truth[:, 3]  # the labels follow class 3's logit reversed
    y = torch.distributions.Categorical(logits=truth).sample()
    with pytest.warns(UserWarning, match=r"class\(es\) \[3\] do not predict their labels"):
        t = fit_temperature(z, y, per_class=True)
    assert (t > 0).all() and (t <= MAX_TEMPERATURE + 1e-9).all()
    best = float(F.cross_entropy(z / t, y))
    for value in np.geomspace(0.2, MAX_TEMPERATURE, 60):  # the minimum along class 3, in range
        moved = t.clone()
        moved[3] = value
        assert float(F.cross_entropy(z / moved, y)) >= best - 1e-9
    with pytest.raises(ValueError, match="no minimum at a positive temperature"):
        fit_temperature(-z, torch.distributions.Categorical(logits=z).sample())  # one T
