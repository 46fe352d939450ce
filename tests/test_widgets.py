"""calibtut.widgets driven programmatically over run directories written from model outputs."""

from __future__ import annotations

import base64
import gc
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
    # the shown class's (LV, channel 1) probability map at that slice
    np.testing.assert_allclose(confidence.get_array(), arrays["probabilities"][1, ..., target])
    assert explorer.overlay_figure.axes[3].get_title() == "P(LV)"
    assert explorer.overlay_figure.axes[0].get_title() == f"image (slice {target})"
    assert shown_png(explorer.overlay_output) != before
    assert explorer.diagram_figure is diagram  # a slice move redraws the overlay only

    flat = widgets.ImageExplorer(write_run(tmp_path / "flat"))
    assert flat.slice.layout.display == "none"


def test_overlay_says_when_no_prediction_was_saved(tmp_path):
    explorer = widgets.ImageExplorer(write_run(tmp_path, predictions=False))
    (message,) = explorer.overlay_output.outputs
    assert message["data"]["text/plain"].startswith(
        "No saved prediction for image case_000 in the selected runs"
    )
    assert "calibtut evaluate" in message["data"]["text/plain"]
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
    assert "ECE macro" in explorer.table_output.outputs[0]["data"]["text/html"]
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


def all_widgets(explorer) -> list:
    return list(explorer._controls)


def test_closed_explorers_release_their_images_and_widgets(three_runs):
    explorer = widgets.DatasetExplorer(three_runs)
    explorer.norm.value = "power"
    assert explorer.figure is not None
    made = all_widgets(explorer)
    assert explorer.widget in made and explorer.cell in made
    explorer.close()
    assert explorer.figure is None and explorer._figures_rendered._items == {}
    assert explorer.closed and all(w.comm is None for w in made)
    # an explorer that is merely dropped (its notebook cell run again) closes itself
    images = widgets.ImageExplorer(three_runs)
    made = all_widgets(images)
    del images
    gc.collect()
    assert all(w.comm is None for w in made)
    playground = widgets.BinningPlayground()
    made = list(playground._controls)
    playground.close()
    assert playground.figure is None and all(w.comm is None for w in made)


def resident_mb() -> float:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmRSS"))
    return int(line.split()[1]) / 1024


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads /proc (Linux)")
def test_building_and_closing_explorers_ten_times_keeps_memory_flat(tmp_path):
    """Defect 1 of issue 14: each rebuilt pair of explorers used to keep about 40 MB."""
    runs = [
        write_run(tmp_path, loss, n_images=4, shape=(24, 24, 6)) for loss in ("baseline", "soft")
    ]

    def build_use_and_close(close: bool) -> None:
        images = widgets.ImageExplorer(runs)
        images.image.value = images.image_ids[1]
        images.sort.value = "ACE"
        dataset = widgets.DatasetExplorer(runs, images)
        dataset.norm.value = "power"
        if close:
            images.close()
            dataset.close()

    build_use_and_close(True)  # warm-up: imports, caches of the runs' results, fonts
    gc.collect()
    start = resident_mb()
    for round_ in range(10):
        build_use_and_close(close=round_ % 2 == 0)  # closed, or dropped as a re-run cell does
        gc.collect()
    assert resident_mb() - start < 50


def test_explorers_display_as_their_widget_box(three_runs):
    explorer = widgets.ImageExplorer(three_runs[:1])
    bundle = explorer._repr_mimebundle_()
    assert (
        bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == explorer.widget.model_id
    )
    box = widgets.dataset_explorer(three_runs[0].path)
    runs_control = box._calibtut_explorer.runs  # the box keeps its explorer alive
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


# --- finding images, bins, export, linked views (issue 14) ---


@pytest.fixture
def six_image_runs(tmp_path) -> list[RunDir]:
    return [write_run(tmp_path, loss, n_images=6) for loss in ("baseline", "hard", "soft")]


def listed(explorer) -> list[str]:
    return [value for _, value in explorer.image.options]


def lv_values(run: RunDir, metric: str) -> pd.Series:
    table = run.results().per_image
    return table[table.class_index == 1].set_index("image_id")[metric]


def test_images_sorted_by_a_metric_show_their_values(six_image_runs):
    baseline, hard, _ = six_image_runs
    explorer = widgets.ImageExplorer(six_image_runs)
    assert listed(explorer) == sorted(explorer.image_ids)  # by id until asked
    explorer.sort.value = "ACE"
    ace = lv_values(baseline, "ace")  # the first selected run, the shown class (LV)
    assert explorer.order.value is True  # errors: the worst (largest) first
    assert listed(explorer) == list(ace.sort_values(ascending=False).index)
    label, first = explorer.image.options[0]
    assert label == f"{first}   {ace[first]:.4f}"
    assert explorer.image.value == "case_000"  # the chosen image stays, now at its rank
    rank = listed(explorer).index("case_000") + 1
    assert explorer.position.value == f"<small>{rank} of 6</small>"
    explorer.image.value = first
    by_loss = dict(zip(["baseline", "hard", "soft"], six_image_runs, strict=True))
    pd.testing.assert_frame_equal(
        explorer.metrics_table, views.image_metrics(by_loss, first, ["LV"])
    )
    explorer.sort.value = "Dice"
    assert explorer.order.value is False  # Dice: the worst (smallest) first
    assert listed(explorer) == list(lv_values(baseline, "dice").sort_values().index)

    explorer.sort.value = "ACE change from baseline"  # hard - baseline, image by image
    change = (lv_values(hard, "ace") - ace).sort_values(ascending=False)
    assert listed(explorer) == list(change.index)
    np.testing.assert_allclose(explorer.ranking.to_numpy(), change.to_numpy())
    assert "hard − baseline" in explorer.ranked_by.value

    explorer.sort.value = "ACE / noise floor"
    ratio = ace / lv_values(baseline, "ace_floor")
    assert listed(explorer) == list(ratio.sort_values(ascending=False).index)


def test_the_kept_range_filters_and_the_buttons_step_through_the_list(six_image_runs):
    explorer = widgets.ImageExplorer(six_image_runs)
    explorer.sort.value = "MCE"
    mce = lv_values(six_image_runs[0], "mce").sort_values(ascending=False)
    assert explorer.within.value == pytest.approx((mce.min(), mce.max()))
    middle = float(mce.iloc[2])
    explorer.within.value = (mce.min(), middle)
    assert listed(explorer) == list(mce[mce <= middle].index)
    explorer.image.value = listed(explorer)[0]
    before = explorer.metrics_table
    explorer.next.click()
    assert explorer.image.value == listed(explorer)[1]
    assert explorer.position.value == "<small>2 of 4</small>"
    assert not explorer.metrics_table.equals(before)
    explorer.previous.click()
    assert explorer.image.value == listed(explorer)[0] and explorer.previous.disabled
    explorer.show_image(mce.index[0])  # filtered out: the range opens again
    assert explorer.image.value == mce.index[0] and len(listed(explorer)) == 6


def test_image_explorer_rebins_the_saved_bins(six_image_runs):
    explorer = widgets.ImageExplorer(six_image_runs)
    assert list(explorer.num_bins.options) == [20, 10, 5, 4, 2]
    image_id = explorer.image.value
    explorer.num_bins.value = 5
    for ax, run in zip(panels(explorer.diagram_figure), six_image_runs, strict=True):
        results = run.results()
        saved = as_sums(results.bins)
        sums = saved.reshape(*saved.shape[:3], 5, -1).sum(-1)
        expected = direct_errors(sums)
        b = results.image(image_id)
        assert printed_ece(ax) == pytest.approx(expected["ece"][b, 1], abs=5e-5)
        row = explorer.metrics_table.loc[(run.config["loss"], "LV")]
        assert row["ace"] == pytest.approx(expected["ace"][b, 1], rel=1e-6)
        assert row["dice"] == pytest.approx(lv_values(run, "dice")[image_id])
        bars = next(a for a in ax.get_children() if a.get_gid() == "ground_truth")
        assert len(bars.get_data().edges) == 6  # five bins drawn
    # the floor is re-binned with the bins (fewer, fuller bins: a lower floor)
    floors = explorer.metrics_table["ace_floor"]
    explorer.num_bins.value = 20
    assert (floors < explorer.metrics_table["ace_floor"]).all()


def test_overlay_shows_the_chosen_class_probability(six_image_runs):
    explorer = widgets.ImageExplorer(six_image_runs[:1])
    arrays = six_image_runs[0].prediction(explorer.image.value)

    def shown() -> np.ndarray:
        axes = explorer.overlay_figure.axes[3]
        return next(a for a in axes.get_children() if a.get_gid() == "confidence").get_array()

    np.testing.assert_allclose(shown(), arrays["probabilities"][1])
    assert explorer.overlay_figure.axes[3].get_title() == "P(LV)"
    explorer.class_index.value = 2
    np.testing.assert_allclose(shown(), arrays["probabilities"][2])
    explorer.class_index.value = widgets.ALL_CLASSES  # every class: the largest probability
    np.testing.assert_allclose(shown(), arrays["probabilities"].max(0))
    assert explorer.overlay_figure.axes[3].get_title() == "confidence (max probability)"


def test_export_writes_the_shown_figures(six_image_runs, tmp_path):
    explorer = widgets.ImageExplorer(six_image_runs, export_dir=tmp_path / "out")
    explorer.class_index.value = 2
    explorer.export.click()
    image_id = explorer.image.value
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    stem = f"{image_id}_RV_20bins"
    assert names == sorted(f"{stem}_{part}.{ext}" for part in ("diagrams", "overlay")
                           for ext in ("png", "pdf"))  # fmt: skip
    assert str(tmp_path / "out" / f"{stem}_overlay.pdf") in explorer.export_status.value
    png = (tmp_path / "out" / f"{stem}_diagrams.png").read_bytes()
    width, height = np.frombuffer(png[16:24], dtype=">u4")
    expected = explorer.diagram_figure.get_size_inches() * 200  # the explorer's figure, at 200 dpi
    assert (width, height) == pytest.approx(tuple(expected), rel=0.1)  # cropped tight


def test_a_histogram_cell_lists_its_images_and_opens_them(six_image_runs):
    images = widgets.ImageExplorer(six_image_runs)
    dataset = widgets.DatasetExplorer(six_image_runs, image_explorer=images)
    baseline = six_image_runs[0]
    histogram = direct_histogram(as_sums(baseline.results().bins))[1]  # LV [truth, confidence]
    name, truth, confidence = dataset.cell.value
    assert name == "LV" and histogram[truth, confidence] == histogram.max()  # fullest first
    assert len(dataset.cell.options) == int((histogram > 0).sum())
    # by hand: each image's own histogram (one count per occupied confidence bin) has the cell
    sums = as_sums(baseline.results().bins)
    expected = [image_id for b, image_id in enumerate(baseline.results().image_ids)
                if direct_histogram(sums[:, b : b + 1])[1][truth, confidence]]  # fmt: skip
    assert list(dataset.cell_images.options) == expected
    assert len(expected) == histogram[truth, confidence]
    dataset.cell_images.value = expected[-1]
    images.class_index.value = 2
    dataset.open_in_image_explorer()
    assert images.image.value == expected[-1] and images.class_index.value == 1
    assert images.diagram_figure.get_suptitle() == f"image {expected[-1]}"
    dataset.num_bins.value = 5  # cells follow the bins
    assert all(max(j, k) < 5 for _, j, k in (v for _, v in dataset.cell.options))


def test_playground_redraws_once_per_release():
    playground = widgets.BinningPlayground()
    assert playground.value.continuous_update is False
    assert playground.num_bins.continuous_update is False
    assert playground.binning.value == "soft"


# --- differences from the baseline, zoom ---


def gap_changes_by_hand(sums: dict[str, np.ndarray], c: int) -> np.ndarray:
    """Per image and bin, each loss's |mean p - mean y| minus the baseline's (NaN unless both
    runs occupy the bin): ``{loss: (images, bins)}``."""
    with np.errstate(invalid="ignore", divide="ignore"):
        gap = {loss: np.where(s[2] > 0, np.abs(s[0] - s[1]) / s[2], np.nan)[:, c]
               for loss, s in sums.items()}  # fmt: skip
    return {loss: gap[loss] - gap["baseline"] for loss in sums if loss != "baseline"}


def drawn_changes(ax) -> np.ndarray:
    lower, higher = (next(a for a in ax.get_children() if a.get_gid() == gid).get_data().values
                     for gid in ("gap_lower", "gap_higher"))  # fmt: skip
    return np.where(np.isfinite(lower), lower, higher)


def test_image_explorer_shows_each_losss_gap_change_on_the_image(six_image_runs, tmp_path):
    explorer = widgets.ImageExplorer(six_image_runs, export_dir=tmp_path / "out")
    explorer.image.value = "case_003"
    explorer.diagram_view.value = "gap change"
    fig = explorer.diagram_figure
    assert fig.get_suptitle() == "gap change per bin from the baseline, image case_003"
    shown = {ax.get_title(): ax for ax in fig.axes if ax.get_title()}
    assert set(shown) == {"hard − baseline · LV", "soft − baseline · LV"}
    sums = {run.config["loss"]: as_sums(run.results().bins) for run in six_image_runs}
    by_hand = gap_changes_by_hand(sums, 1)  # LV is the bins' class 1 (background scored)
    for loss in ("hard", "soft"):
        np.testing.assert_allclose(drawn_changes(shown[f"{loss} − baseline · LV"]),
                                   by_hand[loss][3], rtol=1e-9)  # fmt: skip
    explorer.export.click()
    assert {p.name for p in (tmp_path / "out").iterdir()} >= {
        "case_003_LV_20bins_gap_changes.png", "case_003_LV_20bins_gap_changes.pdf"
    }  # fmt: skip
    explorer.runs.value = (1,)  # hard alone: its baseline is still found among the runs
    assert {ax.get_title() for ax in explorer.diagram_figure.axes if ax.get_title()} == {
        "hard − baseline · LV"
    }
    explorer.runs.value = (0,)  # the baseline alone: nothing to compare
    (message,) = explorer.diagram_output.outputs
    assert "needs a selected run other than a baseline" in message["data"]["text/plain"]
    assert explorer.diagram_figure is None
    explorer.diagram_view.value = "reliability"
    assert [ax.get_title() for ax in panels(explorer.diagram_figure)] == ["baseline · LV"]


def test_dataset_explorer_shows_gap_changes_and_per_image_distributions(six_image_runs):
    explorer = widgets.DatasetExplorer(six_image_runs)
    sums = {run.config["loss"]: as_sums(run.results().bins) for run in six_image_runs}
    explorer.view.value = "gap change"
    assert explorer.norm.disabled
    shown = {ax.get_title(): ax for ax in explorer.figure.axes if ax.get_title()}
    paired = gap_changes_by_hand(sums, 1)["soft"]  # (images, bins)
    with np.errstate(invalid="ignore"):
        mean = np.nansum(paired, 0) / np.isfinite(paired).sum(0)
    np.testing.assert_allclose(drawn_changes(shown["soft − baseline · LV"]), mean, rtol=1e-9)
    # per-image ACE of the shown class, by hand, one dot (or ring) per image
    explorer.view.value = "per-image ACE"
    (ax,) = explorer.figure.axes
    lv = direct_errors(sums["hard"])["ace"][:, 1]
    dots = np.concatenate([np.asarray(a.get_offsets())[:, 1] for a in ax.get_children()
                           if str(a.get_gid()).endswith(":hard")
                           and str(a.get_gid()).startswith(("images", "outliers"))])  # fmt: skip
    np.testing.assert_allclose(np.sort(dots), np.sort(lv), rtol=1e-6)  # saved in float32
    explorer.view.value = "ACE change"
    (ax,) = explorer.figure.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["hard", "soft"]
    explorer.runs.value = (0,)
    (message,) = explorer.figure_output.outputs
    assert "needs a selected run other than a baseline" in message["data"]["text/plain"]
    explorer.view.value = "histograms"
    assert not explorer.norm.disabled and explorer.figure is not None


def test_the_overlay_zooms_on_a_crop_box(tmp_path):
    run = write_run(tmp_path, shape=(12, 10, 5))
    explorer = widgets.ImageExplorer(run)
    arrays = run.prediction("case_000")
    k = explorer.slice.value
    assert explorer.zoom_rows.value == (0, 11) and explorer.zoom_columns.value == (0, 9)
    assert explorer.region is None

    def panel_data(gid: str) -> np.ndarray:
        return next(a for ax in explorer.overlay_figure.axes for a in ax.get_children()
                    if a.get_gid() == gid)  # fmt: skip

    grey = explorer.overlay_figure.axes[0].images[0].get_clim()
    explorer.zoom_rows.value = (3, 8)
    explorer.zoom_columns.value = (2, 6)
    assert explorer.region == (3, 9, 2, 7)
    assert explorer.overlay_figure.get_suptitle() == "case_000 · zoom: rows 3–8, columns 2–6"
    np.testing.assert_allclose(panel_data("confidence").get_array(),
                               arrays["probabilities"][1, 3:9, 2:7, k])  # fmt: skip
    truth, predicted = arrays["label"][3:9, 2:7, k], arrays["prediction"][3:9, 2:7, k]
    wrong = int((truth != predicted).sum())  # every kind of error is a disagreement
    assert panel_data("error_count").get_text() == f"{wrong} wrong px"
    assert explorer.overlay_figure.axes[0].images[0].get_clim() == grey  # the slice's grey scale
    explorer.slice.value = (k + 1) % 5  # the box stays as the slice moves
    np.testing.assert_allclose(panel_data("confidence").get_array(),
                               arrays["probabilities"][1, 3:9, 2:7, (k + 1) % 5])  # fmt: skip
    explorer.unzoom.click()
    assert explorer.region is None and explorer.overlay_figure.get_suptitle() == "case_000"
    assert panel_data("confidence").get_array().shape == (12, 10)


def test_a_return_to_a_kept_state_shows_its_own_figure(six_image_runs):
    explorer = widgets.ImageExplorer(six_image_runs)
    first = shown_png(explorer.diagram_output)
    explorer.image.value = "case_004"
    explorer.image.value = "case_000"  # a kept image: no redraw for the page...
    assert shown_png(explorer.diagram_output) == first
    assert explorer.diagram_figure.get_suptitle() == "image case_000"  # ...but the right figure
