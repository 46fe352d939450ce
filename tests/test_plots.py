"""calibtut.plots: panels, titles, printed numbers and drawn data against the metrics."""

from __future__ import annotations

import re

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib import colors as mcolors  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from calibtut import metrics, plots  # noqa: E402
from calibtut.binning import BinStats, hard_binning  # noqa: E402
from calibtut.metrics import dataset_reliability, reliability  # noqa: E402

CLASS_NAMES = ["background", "LV", "RV"]
nan = float("nan")


def artists(ax, gid: str) -> list:
    """Artists of an axes (patches, lines, collections, texts, images) with the given gid."""
    children = ax.get_children()
    return [a for a in children if a.get_gid() == gid]


def main_axes(fig: Figure, gid: str) -> list:
    """The figure's panels that hold an artist with ``gid`` (not the counts strips)."""
    return [ax for ax in fig.axes if artists(ax, gid)]


def random_bins(n_images: int = 3, seed: int = 0, num_bins: int = 20) -> BinStats:
    """Per-image hard bins of noisy softmax outputs for 3 classes on 16 x 16 images."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n_images, 16, 16), generator=generator)
    target = torch.nn.functional.one_hot(labels, 3).movedim(-1, 1).float()
    probs = torch.softmax(3 * target + 1.5 * torch.randn(target.shape, generator=generator), 1)
    return hard_binning(probs, target, num_bins)


def printed(ax, gid: str, name: str) -> float:
    """The number printed after '<name> =' in the axes' text with ``gid``."""
    (text,) = artists(ax, gid)
    return float(re.search(rf"{name} = ([0-9.]+)", text.get_text()).group(1))


# --- per-image reliability diagrams ---


def test_hand_worked_diagram_draws_only_occupied_bins_and_prints_their_errors():
    # One image, one class: four voxels at 0.12 (bin 2 of 20) with one foreground voxel, two at
    # 0.57 (bin 11), both foreground. By hand: gaps 0.13 and 0.43, ECE = (4*0.13 + 2*0.43) / 6,
    # ACE = (0.13 + 0.43) / 2, MCE = 0.43 in bin 11. All other bins are empty.
    probs = torch.tensor([0.12, 0.12, 0.12, 0.12, 0.57, 0.57]).view(1, 1, 6)
    target = torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0, 1.0]).view(1, 1, 6)
    fig = plots.reliability_diagram(reliability(hard_binning(probs, target, 20)), ["tumour"])

    (ax,) = main_axes(fig, "ground_truth")
    assert ax.get_title() == "tumour"
    truth = artists(ax, "ground_truth")[0].get_data().values
    expected = np.full(20, np.nan)
    expected[2], expected[11] = 0.25, 1.0
    np.testing.assert_allclose(truth, expected, atol=1e-6)  # NaN (blank) in every empty bin
    gap = artists(ax, "gap")[0].get_data()
    assert np.isnan(gap.values).sum() == 18 and np.isnan(gap.baseline).sum() == 18
    np.testing.assert_allclose(gap.baseline[[2, 11]], [0.12, 0.57], atol=1e-6)
    np.testing.assert_allclose(gap.values[[2, 11]], [0.25, 1.0], atol=1e-6)
    points = artists(ax, "bin_means")[0]
    np.testing.assert_allclose(points.get_xdata(), [0.12, 0.57], atol=1e-6)
    np.testing.assert_allclose(points.get_ydata(), [0.25, 1.0], atol=1e-6)

    assert printed(ax, "errors", "ECE") == pytest.approx((4 * 0.13 + 2 * 0.43) / 6, abs=1e-4)
    assert printed(ax, "errors", "ACE") == pytest.approx((0.13 + 0.43) / 2, abs=1e-4)
    assert printed(ax, "mce", "MCE") == pytest.approx(0.43, abs=1e-4)
    (frame,) = artists(ax, "mce_bin")
    assert frame.get_x() == pytest.approx(0.55) and frame.get_width() == pytest.approx(0.05)
    assert (frame.get_y(), frame.get_height()) == pytest.approx((0.57, 0.43), abs=1e-6)

    strip = next(a for a in fig.axes if artists(a, "counts"))
    counts = artists(strip, "counts")[0].get_data().values
    assert counts[2] == 4 and counts[11] == 2 and np.isnan(counts).sum() == 18
    assert strip.get_yscale() == "log"


def test_reliability_diagram_panels_match_metrics_for_the_chosen_image():
    bins = random_bins()
    fig = plots.reliability_diagram(reliability(bins), CLASS_NAMES, image=1, title="case 1")
    panels = main_axes(fig, "ground_truth")
    assert [ax.get_title() for ax in panels] == CLASS_NAMES
    assert fig.get_suptitle() == "case 1"
    assert len(fig.axes) == 2 * len(CLASS_NAMES)  # each panel has its counts strip
    errors = metrics.calibration_errors(bins.select(1))
    mean_pred, mean_target = (m[1].numpy() for m in bins.means())
    for c, ax in enumerate(panels):
        assert printed(ax, "errors", "ECE") == pytest.approx(float(errors.ece[0, c]), abs=5e-5)
        assert printed(ax, "errors", "ACE") == pytest.approx(float(errors.ace[0, c]), abs=5e-5)
        assert printed(ax, "mce", "MCE") == pytest.approx(float(errors.mce[0, c]), abs=5e-5)
        gaps = np.abs(mean_pred[c] - mean_target[c])
        k = int(np.nanargmax(gaps))
        assert artists(ax, "mce_bin")[0].get_x() == pytest.approx(k / 20, abs=1e-6)
        np.testing.assert_allclose(
            artists(ax, "ground_truth")[0].get_data().values, mean_target[c], rtol=1e-6
        )


def test_classes_selects_panels_and_bad_arguments_are_named():
    prepared = reliability(random_bins())
    fig = plots.reliability_diagram(prepared, CLASS_NAMES, classes=[2])
    assert [ax.get_title() for ax in main_axes(fig, "ground_truth")] == ["RV"]
    with pytest.raises(ValueError, match="class_names"):
        plots.reliability_diagram(prepared, ["a", "b"])
    with pytest.raises(ValueError, match="image must be an index in \\[0, 2\\]"):
        plots.reliability_diagram(prepared, CLASS_NAMES, image=3)
    with pytest.raises(ValueError, match="classes"):
        plots.reliability_diagram(prepared, CLASS_NAMES, classes=[3])
    with pytest.raises(TypeError, match="must be a Reliability, got BinStats"):
        plots.compare_reliability_diagrams({"a": prepared, "b": random_bins()}, CLASS_NAMES)
    other = reliability(random_bins(num_bins=10))
    with pytest.raises(ValueError, match="same classes and number of bins"):
        plots.compare_reliability_diagrams({"a": prepared, "b": other}, CLASS_NAMES)


def test_the_framed_bin_is_the_metrics_mce_bin_even_on_ties():
    """Two bins with the same gap: the frame follows metrics' choice (the first), not a redo."""
    probs = torch.tensor([0.12, 0.12, 0.57, 0.57]).view(1, 1, 4)
    target = torch.tensor([0.0, 0.64, 0.0, 0.14]).view(1, 1, 4)  # both gaps 0.5 (well, equal)
    prepared = reliability(hard_binning(probs, target, 20))
    fig = plots.reliability_diagram(prepared, ["tumour"])
    (ax,) = main_axes(fig, "ground_truth")
    k = int(prepared.errors.mce_bin[0, 0])
    assert artists(ax, "mce_bin")[0].get_x() == pytest.approx(k / 20, abs=1e-6)


def test_floors_are_printed_beside_the_ace():
    prepared = reliability(random_bins(n_images=2))
    floors = torch.tensor([[0.011, 0.022, 0.033], [0.1, 0.2, 0.3]])
    fig = plots.reliability_diagram(prepared, CLASS_NAMES, image=1, floor=floors)
    texts = [artists(ax, "errors")[0].get_text() for ax in main_axes(fig, "ground_truth")]
    assert [t.splitlines()[-1] for t in texts] == [
        "(floor 0.1000)",
        "(floor 0.2000)",
        "(floor 0.3000)",
    ]


def test_compare_reliability_diagrams_rows_per_run_or_runs_side_by_side():
    bins_of = {
        name: random_bins(seed=seed) for seed, name in enumerate(["baseline", "hard", "soft"])
    }
    runs = {name: reliability(bins) for name, bins in bins_of.items()}
    fig = plots.compare_reliability_diagrams(runs, CLASS_NAMES, classes=[1, 2])
    panels = main_axes(fig, "ground_truth")
    assert [ax.get_title() for ax in panels] == [
        f"{run} · {name}" for run in runs for name in ("LV", "RV")
    ]
    rows = sorted({round(ax.get_position().y0, 6) for ax in panels})
    assert len(rows) == 3  # one row per run
    strips = [ax for ax in fig.axes if artists(ax, "counts")]
    assert len({ax.get_ylim() for ax in strips}) == 1  # one counts range for all strips
    for (run, bins), ax in zip(bins_of.items(), panels[::2], strict=True):
        ece = metrics.calibration_errors(bins.select(0)).ece[0, 1]
        assert printed(ax, "errors", "ECE") == pytest.approx(float(ece), abs=5e-5), run

    one_class = plots.compare_reliability_diagrams(runs, CLASS_NAMES, classes=[1])
    panels = main_axes(one_class, "ground_truth")
    assert len({round(ax.get_position().y0, 6) for ax in panels}) == 1  # side by side
    xs = [ax.get_position().x0 for ax in panels]
    assert xs == sorted(xs) and [ax.get_title() for ax in panels][0] == "baseline · LV"


# --- dataset reliability histograms ---


def test_dataset_histogram_heat_maps_equal_the_metrics_histogram():
    bins = random_bins(n_images=6)
    fig = plots.dataset_reliability_histograms(dataset_reliability(bins), CLASS_NAMES, norm="log")
    panels = main_axes(fig, "histogram")
    assert [ax.get_title() for ax in panels] == [*CLASS_NAMES, "average"]
    histogram = metrics.dataset_reliability_histogram(bins).numpy()
    expected = [*histogram, histogram.mean(0)]
    for ax, matrix in zip(panels, expected, strict=True):
        (mesh,) = artists(ax, "histogram")
        drawn = mesh.get_array()
        np.testing.assert_array_equal(drawn.mask, matrix == 0)  # empty cells blank, not zero
        np.testing.assert_allclose(drawn.filled(0), matrix)
        assert isinstance(mesh.norm, mcolors.LogNorm)
        assert mesh.norm.vmax == pytest.approx(histogram.max())
    assert len({id(artists(ax, "histogram")[0].norm) for ax in panels}) == 1  # shared scale
    strips = [ax for ax in fig.axes if artists(ax, "counts")]
    pooled = bins.pooled().count[0].numpy()
    for strip, counts in zip(strips, [*pooled, pooled.mean(0)], strict=True):
        np.testing.assert_allclose(artists(strip, "counts")[0].get_data().values, counts)
    colour_bars = [ax for ax in fig.axes if ax.get_ylabel().startswith("images")]
    assert [ax.get_ylabel() for ax in colour_bars] == ["images\n(average: mean over the classes)"]


def test_dataset_histogram_norms_classes_and_comparison():
    bins = random_bins(n_images=4)
    prepared = dataset_reliability(bins)
    fig = plots.dataset_reliability_histograms(
        prepared, CLASS_NAMES, classes=[1], norm="power", gamma=0.3, include_average=False
    )
    (ax,) = main_axes(fig, "histogram")
    norm = artists(ax, "histogram")[0].norm
    assert isinstance(norm, mcolors.PowerNorm) and norm.gamma == 0.3
    with pytest.raises(ValueError, match="norm must be one of"):
        plots.dataset_reliability_histograms(prepared, CLASS_NAMES, norm="sqrt")
    with pytest.raises(ValueError, match="gamma"):
        plots.dataset_reliability_histograms(prepared, CLASS_NAMES, norm="power", gamma=0)
    with pytest.raises(TypeError, match="must be a DatasetReliability, got BinStats"):
        plots.dataset_reliability_histograms(bins, CLASS_NAMES)

    other = random_bins(n_images=4, seed=5)
    fig = plots.compare_dataset_reliability_histograms(
        {"hard": prepared, "soft": dataset_reliability(other)},
        CLASS_NAMES,
        classes=[1, 2],
        norm="linear",
    )
    panels = main_axes(fig, "histogram")
    assert [ax.get_title() for ax in panels] == [
        "hard · LV", "hard · RV", "hard · average", "soft · LV", "soft · RV", "soft · average"
    ]  # fmt: skip
    largest = max(metrics.dataset_reliability_histogram(b).max().item() for b in (bins, other))
    norms = {(n.vmin, n.vmax) for n in (artists(ax, "histogram")[0].norm for ax in panels)}
    assert norms == {(0.0, largest)}  # one colour scale across runs


# --- image overlays ---


def softmax_arrays(shape=(12, 10), seed=0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    label = np.zeros(shape, dtype=np.uint8)
    label[..., 3:8, 2:6] = 1
    label[..., 5:7, 6:9] = 2
    prediction = label.copy()
    prediction[..., 0, 0] = 1  # false positive
    prediction[..., 3, 2] = 0  # false negative
    prediction[..., 5, 6] = 1  # wrong class
    return {
        "image": rng.normal(size=shape).astype(np.float32),
        "label": label,
        "prediction": prediction,
        "confidence": rng.uniform(0.4, 1.0, size=shape).astype(np.float32),
    }


def test_softmax_overlay_shows_classes_confidence_and_error_kinds():
    arrays = softmax_arrays()
    fig = plots.image_overlay(arrays, CLASS_NAMES)
    titles = [ax.get_title() for ax in fig.axes[:5]]
    assert titles == [
        "image",
        "ground truth",
        "prediction",
        "confidence (max probability)",
        "errors",
    ]
    truth = artists(fig.axes[1], "ground_truth")[0].get_array()
    lv, rv = (mcolors.to_rgba(plots.CLASS_COLOURS[c], 0.6) for c in (1, 2))
    np.testing.assert_allclose(truth[4, 3], lv)
    np.testing.assert_allclose(truth[5, 7], rv)
    assert truth[0, 0, 3] == 0  # background is transparent
    confidence = artists(fig.axes[3], "confidence")[0].get_array()
    np.testing.assert_allclose(confidence, arrays["confidence"])
    errors = artists(fig.axes[4], "errors")[0].get_array()
    for (y, x), kind in (
        ((0, 0), "false_positive"),
        ((3, 2), "false_negative"),
        ((5, 6), "wrong_class"),
    ):
        np.testing.assert_allclose(errors[y, x], mcolors.to_rgba(plots.COLOURS[kind], 0.9))
    assert (errors[..., 3] > 0).sum() == 3
    assert artists(fig.axes[4], "error_count")[0].get_text() == "3 wrong px"
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["LV", "RV", "false positive", "false negative", "wrong class"]


def test_overlay_slices_3d_volumes_on_the_busiest_slice_or_the_chosen_one():
    arrays = softmax_arrays(shape=(6, 12, 10))
    arrays["label"][:] = 0
    arrays["label"][4, 2:9, 1:8] = 1  # slice 4 along axis 0 holds the most ground truth
    assert plots.slice_count(arrays, axis=0) == 6 and plots.busiest_slice(arrays, axis=0) == 4
    fig = plots.image_overlay(arrays, CLASS_NAMES, axis=0)
    assert fig.axes[0].get_title() == "image (slice 4)"
    fig = plots.image_overlay(arrays, CLASS_NAMES, slice_index=2, axis=0)
    shown = fig.axes[3].get_images()[0].get_array()
    np.testing.assert_allclose(shown, arrays["confidence"][2])
    with pytest.raises(ValueError, match="slice_index must lie in \\[0, 5\\]"):
        plots.image_overlay(arrays, CLASS_NAMES, slice_index=6, axis=0)
    with pytest.raises(ValueError, match="2D image has no slices"):
        plots.image_overlay(softmax_arrays(), CLASS_NAMES, slice_index=0)
    assert plots.slice_count(softmax_arrays()) == 0


def test_sigmoid_overlay_draws_regions_and_the_chosen_channel():
    rng = np.random.default_rng(1)
    regions = np.zeros((2, 8, 8), dtype=np.uint8)
    regions[0, 1:7, 1:7] = 1  # whole tumour
    regions[1, 3:5, 3:5] = 1  # core, inside it
    prediction = regions.copy()
    prediction[1, 3, 3] = 0
    probability = rng.uniform(size=(2, 8, 8)).astype(np.float32)
    arrays = {"image": rng.normal(size=(8, 8)), "label": regions, "prediction": prediction,
              "confidence": probability}  # fmt: skip
    assert plots.overlay_layout(arrays) == "sigmoid"
    fig = plots.compare_image_overlays({"hard": arrays, "soft": arrays}, ["WT", "TC"], channel=1)
    assert fig.axes[3].get_title() == "P(TC)" and fig.axes[4].get_title() == "errors of TC"
    assert [fig.axes[0].get_ylabel(), fig.axes[5].get_ylabel()] == ["hard", "soft"]
    np.testing.assert_allclose(artists(fig.axes[3], "confidence")[0].get_array(), probability[1])
    truth = artists(fig.axes[1], "ground_truth")[0].get_array()
    np.testing.assert_allclose(truth[4, 4], mcolors.to_rgba(plots.CLASS_COLOURS[1], 0.6))
    np.testing.assert_allclose(truth[1, 1], mcolors.to_rgba(plots.CLASS_COLOURS[0], 0.6))
    assert artists(fig.axes[4], "error_count")[0].get_text() == "1 wrong px"
    with pytest.raises(ValueError, match="channel must be a region index in \\[0, 1\\]"):
        plots.image_overlay(arrays, ["WT", "TC"], channel=2)
    with pytest.raises(ValueError, match="must share one shape"):
        plots.image_overlay({**arrays, "confidence": probability[0]}, ["WT", "TC"])
    with pytest.raises(ValueError, match="lack"):
        plots.image_overlay({"image": arrays["image"]}, ["WT", "TC"])


# --- figures about training ---


def test_learning_curves_draw_each_runs_validated_epochs():
    histories = {
        "baseline": {
            "train_loss": [0.9, 0.7, 0.6, 0.5],
            "val_dice": [nan, 0.4, nan, 0.6],
            "val_ace": [nan, 0.2, nan, 0.1],
        },
        "soft": {"train_loss": [1.0, 0.8, 0.75, 0.7], "val_dice": [nan, 0.3, nan, 0.5]},
    }
    frames = {
        loss: pd.DataFrame({"epoch": [1, 2, 3, 4], **columns})
        for loss, columns in histories.items()
    }
    fig = plots.plot_learning_curves(frames, ("train_loss", "val_dice"))
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["train loss", "val dice"]
    for ax, metric in zip(axes, ("train_loss", "val_dice"), strict=True):
        for loss, columns in histories.items():
            (line,) = artists(ax, f"curve:{loss}")
            values = np.array(columns[metric])
            epochs = np.flatnonzero(~np.isnan(values)) + 1  # epochs without validation left out
            np.testing.assert_array_equal(line.get_xdata(), epochs)
            np.testing.assert_allclose(line.get_ydata(), values[epochs - 1])
            assert mcolors.to_rgba(line.get_color()) == mcolors.to_rgba(plots.LOSS_COLOURS[loss])
        assert not artists(ax, "single_epoch")
    assert [t.get_text() for t in axes[0].get_legend().get_texts()] == [
        "Dice+CE", "+ soft mL1-ACE"
    ]  # fmt: skip
    with pytest.raises(ValueError, match="history of 'soft' has no column 'val_ace'"):
        plots.plot_learning_curves(frames, ("val_dice", "val_ace"))
    with pytest.raises(ValueError, match="non-empty sequence"):
        plots.plot_learning_curves(frames, "val_dice")


def test_a_single_epoch_is_drawn_as_a_labelled_pipeline_check():
    frames = {"baseline": pd.DataFrame({"epoch": [1], "train_loss": [0.42]})}
    (ax,) = plots.plot_learning_curves(frames, ("train_loss",)).axes
    assert artists(ax, "single_epoch")[0].get_text() == "one epoch: a pipeline check"
    assert [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]] == [1.0]
    low, high = ax.get_ylim()
    assert high - low > 0.1  # not a y axis zoomed onto one value


def test_dice_vs_ace_plots_each_image_and_the_means():
    per_image = {
        "baseline": pd.DataFrame({"ace": [0.3, 0.2], "dice": [0.7, 0.9]}),
        "hard": pd.DataFrame({"ace": [0.1, 0.2], "dice": [0.6, 0.4]}),
    }
    fig = plots.plot_dice_vs_ace(per_image)
    (ax,) = fig.axes
    for loss, values in per_image.items():
        points = values[["ace", "dice"]].to_numpy()
        (images,) = artists(ax, f"images:{loss}")
        np.testing.assert_allclose(images.get_offsets(), points)
        (mean,) = artists(ax, f"mean:{loss}")
        np.testing.assert_allclose(mean.get_offsets(), [points.mean(0)])
        np.testing.assert_allclose(
            images.get_facecolor()[0][:3], mcolors.to_rgb(plots.LOSS_COLOURS[loss])
        )
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "Dice+CE (mean)", "+ hard mL1-ACE (mean)"
    ]  # fmt: skip


def test_paired_changes_draw_each_image_and_count_the_lowered_ones():
    pairs = pd.DataFrame(
        {
            "loss": ["hard"] * 3 + ["soft"] * 3,
            "metric": ["ace"] * 6,
            "baseline": [0.2, 0.3, 0.4] * 2,
            "value": [0.1, 0.35, 0.3, 0.1, 0.1, 0.1],
        }
    )
    (ax,) = plots.plot_paired_changes(pairs, metrics=("ace", "dice")).axes
    (hard,) = artists(ax, "pairs:hard")
    np.testing.assert_allclose(hard.get_offsets(), [[0.2, 0.1], [0.3, 0.35], [0.4, 0.3]])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "+ hard mL1-ACE: 2/3 lower", "+ soft mL1-ACE: 3/3 lower"
    ]  # fmt: skip
    with pytest.raises(ValueError, match="none of the metrics"):
        plots.plot_paired_changes(pairs, metrics=("dice",))


def test_per_image_distributions_box_each_source_and_loss():
    frame = pd.DataFrame(
        {
            "source": ["paper"] * 4 + ["yours"] * 4,
            "dataset": ["acdc"] * 8,
            "loss": ["baseline", "baseline", "soft", "soft"] * 2,
            "metric": ["ace"] * 8,
            "value": [0.1, 0.2, 0.05, nan, 0.3, 0.4, 0.2, 0.1],
        }
    )
    (ax,) = plots.plot_per_image_distributions(frame, metrics=("ace",)).axes
    assert ax.get_title() == "acdc: ACE"
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["paper\nbaseline", "paper\nsoft", "yours\nbaseline", "yours\nsoft"]
    with pytest.raises(ValueError, match="metrics"):
        plots.plot_per_image_distributions(frame, metrics=("dice",))


def test_figures_compose_into_given_figures_and_axes():
    bins = random_bins(n_images=2)
    fig = plots.new_figure(12, 5, layout=None)
    left, right = fig.subfigures(1, 2)
    assert plots.reliability_diagram(reliability(bins), CLASS_NAMES, classes=[1], fig=left) is fig
    drawn = plots.dataset_reliability_histograms(
        dataset_reliability(bins), CLASS_NAMES, classes=[1], fig=right
    )
    assert drawn is fig and len(main_axes(fig, "histogram")) == 2
    assert len(main_axes(fig, "ground_truth")) == 1
    ax = plots.new_figure(4, 3).subplots()
    frames = {"soft": pd.DataFrame({"ace": [0.1], "dice": [0.5]})}
    assert plots.plot_dice_vs_ace(frames, ax=ax) is ax.figure and artists(ax, "mean:soft")
    single = plots.new_figure(3, 3).subplots()
    plots.draw_reliability(reliability(bins), 0, 1, ax=single)
    assert artists(single, "mce_bin") and artists(single, "errors")
    with pytest.raises(TypeError, match="fig must be a matplotlib Figure"):
        plots.reliability_diagram(reliability(bins), CLASS_NAMES, fig=ax)


def test_gradient_maps_give_each_loss_its_own_symmetric_log_scale():
    image = np.arange(64.0).reshape(8, 8)
    boundary = np.zeros((8, 8))
    boundary[2:6, 2:6] = 1
    small = np.linspace(-1e-4, 2e-4, 64).reshape(8, 8)
    large = torch.from_numpy(-50 * small)
    fig = plots.plot_gradient_maps(image, boundary, {"Dice + CE": small, "mL1-ACE": large})
    panels = fig.axes[:3]
    assert [ax.get_title() for ax in panels] == ["image and annotation", "Dice + CE", "mL1-ACE"]
    np.testing.assert_array_equal(panels[0].images[0].get_array(), image)
    for ax, gradient in zip(panels[1:], (small, large.numpy()), strict=True):
        shown = ax.images[0]
        np.testing.assert_allclose(shown.get_array(), gradient)
        limit = np.abs(gradient).max()
        norm = shown.norm
        assert isinstance(norm, mcolors.SymLogNorm)
        assert (norm.vmin, norm.vmax) == pytest.approx((-limit, limit))
        assert norm.linthresh == pytest.approx(limit * 1e-3)
    with pytest.raises(ValueError, match=r"gradient 'bad' has shape \(4, 4\), expected \(8, 8\)"):
        plots.plot_gradient_maps(image, boundary, {"bad": np.zeros((4, 4))})
    with pytest.raises(ValueError, match="one 2D shape"):
        plots.plot_gradient_maps(image, boundary[:4], {})


# --- binning figure, saving, display ---


def test_binning_figure_shows_shares_and_loss():
    fig = plots.binning_figure(
        0.37, [0, 0.65, 0.35, 0, 0], [0.1, 0.6, 0.37], [0, 1, 1], [0.2, -0.1, 0.3], 0.1234,
        "soft", highlight=2,
    )  # fmt: skip
    top, bottom = fig.axes
    assert [t.get_text() for t in artists(top, "weight")] == ["0.65", "0.35"]
    assert "0.1234" in bottom.get_title()
    with pytest.raises(ValueError, match="one length"):
        plots.binning_figure(0.3, [1.0], [0.1, 0.2], [0], [0.0], 0.0, "hard")


def test_save_figure_writes_png_and_pdf(tmp_path):
    fig = plots.reliability_diagram(reliability(random_bins(n_images=1)), CLASS_NAMES, classes=[1])
    png, pdf = plots.save_figure(fig, tmp_path / "figures" / "diagram.png")
    assert (png.name, pdf.name) == ("diagram.png", "diagram.pdf")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and pdf.read_bytes()[:5] == b"%PDF-"
    with pytest.raises(TypeError, match="Figure"):
        plots.save_figure("not a figure", tmp_path / "x")
    with pytest.raises(ValueError, match="file name"):
        plots.save_figure(fig, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figures"]


def test_figures_stay_out_of_pyplot():
    before = plt.get_fignums()
    histograms = dataset_reliability(random_bins(n_images=2))
    fig = plots.dataset_reliability_histograms(histograms, CLASS_NAMES, classes=[1])
    assert isinstance(fig, Figure) and plt.get_fignums() == before
