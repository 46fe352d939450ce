"""calibtut.widgets driven programmatically over run directories written from model outputs."""

from __future__ import annotations

import base64
import re
import sys
import types
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from fakes import model_run, with_config  # noqa: E402
from matplotlib import colors as mcolors  # noqa: E402
from reference import as_sums, direct_errors, direct_histogram  # noqa: E402

from calibtut import plots, views, widgets  # noqa: E402
from calibtut.runs import RunDir  # noqa: E402
from calibtut.train import TrainConfig, train  # noqa: E402

CLASS_NAMES = ["background", "LV", "RV"]


def write_run(
    root: Path, loss: str = "baseline", seed: int = 0, n_images: int = 3, **kwargs
) -> RunDir:
    return model_run(root, loss, seed, n_images=n_images, **kwargs)


@pytest.fixture
def three_runs(tmp_path) -> list[RunDir]:
    return [write_run(tmp_path, loss) for loss in ("baseline", "hard", "soft")]


def shown_png(output) -> bytes:
    (item,) = output.outputs
    return base64.b64decode(item["data"]["image/png"])


def panels(fig, gid: str = "ground_truth") -> list:
    return [ax for ax in fig.axes if any(a.get_gid() == gid for a in ax.get_children())]


def printed_ece(ax) -> float:
    text = next(a for a in ax.get_children() if a.get_gid() == "errors").get_text()
    return float(re.search(r"ECE = ([0-9.]+)", text).group(1))


# --- per-image explorer ---


def test_image_explorer_shows_the_chosen_image_and_class(three_runs):
    explorer = widgets.ImageExplorer(three_runs)
    assert explorer.labels == ["baseline", "hard", "soft"]
    assert explorer.class_index.value == 1  # opens on the first foreground class
    tables = {run.config["loss"]: run.results().per_image for run in three_runs}

    def expected(image_id: str, class_index: int) -> pd.DataFrame:
        rows = [t[(t.image_id == image_id) & (t.class_index == class_index)].assign(run=loss)
                for loss, t in tables.items()]  # fmt: skip
        columns = ["dice", "ece", "ace", "ace_floor", "mce", "mce_floor"]
        return pd.concat(rows).set_index(["run", "class_name"])[columns]

    pd.testing.assert_frame_equal(explorer.metrics_table, expected("case_000", 1))
    hard = tables["hard"]
    hard_ece = hard[(hard.image_id == "case_000") & (hard.class_index == 1)].ece.item()
    assert f"{hard_ece:.4f}" in explorer.metrics.value
    before = shown_png(explorer.diagram_output)

    explorer.image.value = "case_002"
    pd.testing.assert_frame_equal(explorer.metrics_table, expected("case_002", 1))
    assert shown_png(explorer.diagram_output) != before
    assert explorer.diagram_figure.get_suptitle() == "image case_002"
    for ax, (loss, table) in zip(panels(explorer.diagram_figure), tables.items(), strict=True):
        assert ax.get_title() == f"{loss} · LV"
        ece = table[(table.image_id == "case_002") & (table.class_index == 1)].ece.item()
        assert printed_ece(ax) == pytest.approx(ece, abs=5e-5)

    explorer.class_index.value = 2
    assert [ax.get_title() for ax in panels(explorer.diagram_figure)] == [
        "baseline · RV", "hard · RV", "soft · RV"
    ]  # fmt: skip
    pd.testing.assert_frame_equal(explorer.metrics_table, expected("case_002", 2))
    explorer.class_index.value = widgets.ALL_CLASSES
    assert len(panels(explorer.diagram_figure)) == 9
    assert len(explorer.metrics_table) == 9


def test_image_explorer_run_selection(three_runs):
    explorer = widgets.ImageExplorer(three_runs)
    explorer.runs.value = (1,)
    assert [ax.get_title() for ax in panels(explorer.diagram_figure)] == ["hard · LV"]
    assert list(explorer.metrics_table.index.get_level_values("run")) == ["hard"]
    assert explorer.overlay_figure.axes[0].get_ylabel() == "hard"
    explorer.runs.value = ()
    (message,) = explorer.diagram_output.outputs
    assert "Select at least one run" in message["data"]["text/plain"]
    assert explorer.overlay_output.outputs == ()


def test_slice_slider_redraws_the_overlay_of_a_3d_image(tmp_path):
    run = write_run(tmp_path, shape=(12, 12, 5))
    explorer = widgets.ImageExplorer(run)
    arrays = run.prediction("case_000")
    assert explorer.slice.max == 4 and explorer.slice.layout.display is None
    assert explorer.slice.value == plots.busiest_slice(arrays)
    diagram, before = explorer.diagram_figure, shown_png(explorer.overlay_output)

    target = (explorer.slice.value + 2) % 5
    explorer.slice.value = target
    confidence = next(
        a for a in explorer.overlay_figure.axes[3].get_children() if a.get_gid() == "confidence"
    )
    np.testing.assert_allclose(
        confidence.get_array(), arrays["confidence"][..., target].astype(float)
    )
    assert explorer.overlay_figure.axes[0].get_title() == f"image (slice {target})"
    assert shown_png(explorer.overlay_output) != before
    assert explorer.diagram_figure is diagram  # a slice move redraws the overlay only

    flat = widgets.ImageExplorer(write_run(tmp_path / "flat"))
    assert flat.slice.layout.display == "none"


def test_overlay_says_when_no_prediction_was_saved(tmp_path):
    explorer = widgets.ImageExplorer(write_run(tmp_path, predictions=False))
    (message,) = explorer.overlay_output.outputs
    assert (
        message["data"]["text/plain"]
        == "No saved prediction for image case_000 in the selected runs."
    )
    assert explorer.overlay_figure is None


def legend_texts(fig) -> list[str]:
    return [text.get_text() for legend in fig.legends for text in legend.get_texts()]


def test_image_explorer_on_runs_that_leave_the_background_unscored(tmp_path):
    """As train writes softmax runs: bins and per_image.csv hold LV and RV (channels 1 and 2)."""
    runs = [write_run(tmp_path, loss, score_background=False) for loss in ("baseline", "soft")]
    explorer = widgets.ImageExplorer(runs)
    assert explorer.class_index.options == (("all classes", widgets.ALL_CLASSES), ("LV", 0),
                                            ("RV", 1))  # fmt: skip
    assert explorer.class_index.value == 0 and explorer.channels == [1]
    tables = {run.config["loss"]: run.results().per_image for run in runs}

    def expected(image_id: str, names: list[str]) -> pd.DataFrame:
        rows = [t[(t.image_id == image_id) & t.class_name.isin(names)].assign(run=loss)
                for loss, t in tables.items()]  # fmt: skip
        columns = ["dice", "ece", "ace", "ace_floor", "mce", "mce_floor"]
        return pd.concat(rows).set_index(["run", "class_name"])[columns]

    pd.testing.assert_frame_equal(explorer.metrics_table, expected("case_000", ["LV"]))
    for ax, (loss, table) in zip(panels(explorer.diagram_figure), tables.items(), strict=True):
        assert ax.get_title() == f"{loss} · LV"
        ece = table[(table.image_id == "case_000") & (table.class_name == "LV")].ece.item()
        assert printed_ece(ax) == pytest.approx(ece, abs=5e-5)
    # the overlay names label values by output channel (config.json), background included
    assert legend_texts(explorer.overlay_figure)[:2] == ["LV", "RV"]
    truth = next(a for a in explorer.overlay_figure.axes[1].get_children()
                 if a.get_gid() == "ground_truth")  # fmt: skip
    label = runs[0].prediction("case_000")["label"]
    rgba = truth.get_array()
    for channel in (1, 2):
        colour = mcolors.to_rgba(plots.CLASS_COLOURS[channel], 0.6)
        np.testing.assert_allclose(
            rgba[label == channel], np.tile(colour, ((label == channel).sum(), 1))
        )

    explorer.class_index.value = 1
    pd.testing.assert_frame_equal(explorer.metrics_table, expected("case_000", ["RV"]))
    explorer.class_index.value = widgets.ALL_CLASSES
    pd.testing.assert_frame_equal(explorer.metrics_table, expected("case_000", ["LV", "RV"]))
    assert len(panels(explorer.diagram_figure)) == 4


# --- dataset explorer ---


def test_dataset_explorer_table_and_histograms_follow_the_bins(tmp_path, three_runs):
    explorer = widgets.DatasetExplorer(tmp_path)  # a folder of runs
    assert explorer.labels == ["baseline", "hard", "soft"]
    assert list(explorer.num_bins.options) == [20, 10, 5, 4, 2]

    def check(num_bins: int, classes: list[int]) -> None:
        for run in three_runs:
            saved = as_sums(run.results().bins)
            sums = saved.reshape(*saved.shape[:3], num_bins, -1).sum(-1)
            macro = direct_errors(sums)
            micro = direct_errors(sums.sum(1, keepdims=True))
            dice = run.results().per_image.groupby("class_index").dice.mean()
            table = explorer.table.loc[run.config["loss"]]
            assert list(table.index) == [CLASS_NAMES[c] for c in classes]
            for c in classes:
                row = table.loc[CLASS_NAMES[c]]
                for name in ("ece", "ace", "mce"):
                    assert row[f"macro_{name}"] == pytest.approx(macro[name][:, c].mean(), rel=1e-6)
                    assert row[f"micro_{name}"] == pytest.approx(micro[name][0, c], rel=1e-6)
                assert row["dice"] == pytest.approx(dice[c])
            histogram = direct_histogram(sums)
            axes = [ax for ax in panels(explorer.figure, "histogram")
                    if ax.get_title().startswith(run.config["loss"] + " ·")]  # fmt: skip
            assert len(axes) == len(classes) + 1
            for ax, c in zip(axes, classes, strict=False):
                mesh = next(a for a in ax.get_children() if a.get_gid() == "histogram")
                np.testing.assert_array_equal(mesh.get_array().filled(0), histogram[c])

    check(20, [1])
    # per-image table macro errors at the saved bins equal the run's per_image.csv
    per_image = three_runs[0].results().per_image
    assert explorer.table.loc[("baseline", "LV"), "macro_ece"] == pytest.approx(
        per_image[per_image.class_index == 1].ece.mean()
    )
    before = shown_png(explorer.figure_output)
    explorer.num_bins.value = 5
    check(5, [1])
    assert shown_png(explorer.figure_output) != before
    assert "macro_ece" in explorer.table_output.outputs[0]["data"]["text/html"]
    explorer.class_index.value = widgets.ALL_CLASSES
    check(5, [0, 1, 2])


def test_dataset_explorer_on_runs_that_leave_the_background_unscored(tmp_path):
    runs = [write_run(tmp_path, loss, n_images=4, score_background=False)
            for loss in ("baseline", "hard")]  # fmt: skip
    explorer = widgets.DatasetExplorer(runs)
    explorer.class_index.value = widgets.ALL_CLASSES
    for run in runs:
        per_image = run.results().per_image
        table = explorer.table.loc[run.config["loss"]]
        assert list(table.index) == ["LV", "RV"]
        by_name = per_image.groupby("class_name")
        # per_image.csv matched by class, not by position: Dice and macro ACE of each class
        np.testing.assert_allclose(table["dice"], by_name.dice.mean()[["LV", "RV"]])
        np.testing.assert_allclose(table["macro_ace"], by_name.ace.mean()[["LV", "RV"]], rtol=1e-6)


@pytest.mark.slow
def test_a_run_that_train_wrote_can_be_explored(tmp_path, small_synthetic, one_thread):
    """The whole contract: train's evaluation writes the run, the explorers read it."""
    config = TrainConfig.for_dataset("synthetic", "soft", epochs=1, width=4)
    run = train(config, None, tmp_path, progress=False)
    per_image = run.results().per_image
    images = widgets.ImageExplorer(run)
    assert images.overlay_figure is not None  # label values 0..3 are all named
    assert legend_texts(images.overlay_figure)[:3] == ["organ", "ring", "lesion"]
    images.class_index.value = widgets.ALL_CLASSES
    first = per_image[per_image.image_id == images.image.value]
    np.testing.assert_allclose(images.metrics_table["dice"], first["dice"])
    assert list(images.metrics_table.index.get_level_values("class_name")) == [
        "organ", "ring", "lesion"
    ]  # fmt: skip
    dataset = widgets.DatasetExplorer(run)
    dataset.class_index.value = widgets.ALL_CLASSES
    dice = per_image.groupby("class_name").dice.mean()
    np.testing.assert_allclose(
        dataset.table["dice"], dice[["organ", "ring", "lesion"]], equal_nan=True
    )


def test_dataset_explorer_colour_scale_and_runs(three_runs):
    explorer = widgets.DatasetExplorer(three_runs)
    mesh = next(a for a in panels(explorer.figure, "histogram")[0].get_children()
                if a.get_gid() == "histogram")  # fmt: skip
    assert isinstance(mesh.norm, mcolors.LogNorm)
    explorer.norm.value = "power"
    mesh = next(a for a in panels(explorer.figure, "histogram")[0].get_children()
                if a.get_gid() == "histogram")  # fmt: skip
    assert isinstance(mesh.norm, mcolors.PowerNorm)
    explorer.runs.value = (2,)
    assert [ax.get_title() for ax in panels(explorer.figure, "histogram")] == [
        "soft · LV", "soft · average"
    ]  # fmt: skip
    assert list(explorer.table.index.get_level_values("run")) == ["soft"]


# --- inputs, caching, display ---


def test_explorers_name_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a run directory"):
        widgets.ImageExplorer(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no evaluated run directory under"):
        widgets.DatasetExplorer(tmp_path / "empty")
    bare = RunDir(tmp_path / "bare")
    bare.write_config({"dataset": "synthetic", "loss": "hard", "seed": 0})
    with pytest.raises(ValueError, match="has not been evaluated"):
        widgets.ImageExplorer(bare)
    with pytest.raises(TypeError, match="RunDirs or paths"):
        widgets.ImageExplorer([3])
    a = write_run(tmp_path / "a", n_images=1)
    b = write_run(tmp_path / "b", "hard", n_images=1, class_names=["background", "liver", "RV"])
    with pytest.raises(ValueError, match="must score the same classes"):
        widgets.DatasetExplorer([a, b])
    c = write_run(tmp_path / "c", "soft", n_images=1, num_bins=10)
    with pytest.raises(ValueError, match="one saved number of bins"):
        widgets.DatasetExplorer([a, c])
    # the same scored classes (LV, RV) on other output channels are other classes
    d = write_run(tmp_path / "d", "soft", n_images=1, score_background=False)
    e = write_run(tmp_path / "e", "hard", n_images=1, class_names=["LV", "RV"])
    with pytest.raises(ValueError, match="same classes"):
        widgets.ImageExplorer([d, e])


def test_explorers_open_on_one_run_per_loss(tmp_path):
    for loss, seed in (("baseline", 0), ("baseline", 1), ("hard", 0)):
        write_run(tmp_path, loss, seed, n_images=1)
    explorer = widgets.DatasetExplorer(tmp_path)
    assert explorer.labels == ["baseline/seed_0", "baseline/seed_1", "hard/seed_0"]
    assert explorer.runs.value == (0, 2)  # the first run of each loss
    assert list(explorer.table.index.get_level_values("run")) == ["baseline/seed_0", "hard/seed_0"]


def test_runs_that_do_not_name_their_channels_are_named(tmp_path):
    unnamed = write_run(tmp_path, n_images=1)
    with_config(unnamed, {k: v for k, v in unnamed.config.items() if k != "class_names"})
    with pytest.raises(ValueError, match="config.json lacks class_names"):
        widgets.ImageExplorer(unnamed)


def test_closed_explorers_release_their_images(three_runs):
    explorer = widgets.DatasetExplorer(three_runs)
    explorer.norm.value = "power"
    assert explorer.figure is not None
    explorer.close()
    assert explorer.figure is None and explorer._figures._items == {}


def test_explorers_display_as_their_widget_box(three_runs):
    explorer = widgets.ImageExplorer(three_runs[:1])
    bundle = explorer._repr_mimebundle_()
    assert (
        bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == explorer.widget.model_id
    )
    box = widgets.dataset_explorer(three_runs[0].path)
    runs_control = box.children[0].children[0]
    assert runs_control.options == (("baseline", 0),) and runs_control.value == (0,)


def test_colab_widget_manager_only_in_colab(monkeypatch):
    assert widgets.enable_colab_widgets() is False
    calls = []
    output = types.SimpleNamespace(enable_custom_widget_manager=lambda: calls.append(True))
    colab = types.ModuleType("google.colab")
    colab.output = output
    monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.setitem(sys.modules, "google.colab.output", output)
    assert widgets.enable_colab_widgets() is True and calls == [True]


# --- binning playground ---


def reference_l1_ace(probs: np.ndarray, targets: np.ndarray, num_bins: int, soft: bool) -> float:
    """mL1-ACE of one image and class in numpy: equal-width bins, soft shares between centres."""
    centres = (np.arange(num_bins) + 0.5) / num_bins
    weights = np.zeros((probs.size, num_bins))
    for i, p in enumerate(probs):
        if not soft:
            weights[i, min(int(p * num_bins), num_bins - 1)] = 1
        elif p <= centres[0] or p >= centres[-1]:
            weights[i, 0 if p <= centres[0] else -1] = 1
        else:
            lower = int((p - centres[0]) * num_bins)
            share = (p - centres[lower]) * num_bins
            weights[i, lower], weights[i, lower + 1] = 1 - share, share
    count = weights.sum(0)
    occupied = count >= (0.01 if soft else 1e-12)
    gap = np.abs(weights.T @ probs - weights.T @ targets)[occupied] / count[occupied]
    return gap.mean()


def test_binning_playground_shares_loss_and_gradient():
    playground = widgets.BinningPlayground(value=0.37, num_bins=5, binning="soft", target=1)
    np.testing.assert_allclose(playground.weights.numpy(), [0, 0.65, 0.35, 0, 0], atol=1e-6)
    assert "bin 1 (0.65), bin 2 (0.35)" in playground.summary.value
    probs = np.array([*views.EXAMPLE_PROBS, 0.37])
    targets = np.array([*views.EXAMPLE_TARGETS, 1.0])
    assert playground.loss == pytest.approx(
        reference_l1_ace(probs, targets, 5, soft=True), abs=1e-6
    )
    # soft gradient against central differences of the numpy reference (away from bin centres)
    for i in np.flatnonzero(~np.isin(probs, [0.3, 0.7])):
        step = np.zeros_like(probs)
        step[i] = 1e-6
        numeric = (reference_l1_ace(probs + step, targets, 5, True)
                   - reference_l1_ace(probs - step, targets, 5, True)) / 2e-6  # fmt: skip
        assert float(playground.gradient[i]) == pytest.approx(numeric, abs=1e-4)
    assert f"{playground.loss:.4f}" in playground.figure.axes[1].get_title()

    playground.binning.value = "hard"
    np.testing.assert_allclose(playground.weights.numpy(), [0, 1, 0, 0, 0])
    assert playground.loss == pytest.approx(
        reference_l1_ace(probs, targets, 5, soft=False), abs=1e-6
    )
    # hard: every voxel of bin b gets sign(mean p - mean t) / (count_b * occupied bins)
    bins = np.minimum((probs * 5).astype(int), 4)
    occupied = np.unique(bins)
    for i, b in enumerate(bins):
        members = bins == b
        sign = np.sign(probs[members].mean() - targets[members].mean())
        expected = sign / (members.sum() * occupied.size)
        assert float(playground.gradient[i]) == pytest.approx(expected, abs=1e-9)

    before = shown_png(playground.output)
    playground.value.value = 0.93
    np.testing.assert_allclose(playground.weights.numpy(), [0, 0, 0, 0, 1])
    assert "p = 0.930 goes to bin 4 (1.00)" in playground.summary.value
    assert shown_png(playground.output) != before
