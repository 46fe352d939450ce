"""calibtut.views: run directories -> prepared data -> figures and tables, checked against the
runs' files and the metrics computed here."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from fakes import evaluated_run, loss_runs  # noqa: E402
from reference import direct_errors, direct_histogram  # noqa: E402

from calibtut import views  # noqa: E402
from calibtut.runs import RunDir  # noqa: E402

nan = float("nan")


def panels(fig) -> dict:
    return {ax.get_title(): ax for ax in fig.axes if ax.get_title()}


def artist(ax, gid: str):
    (found,) = [a for a in ax.get_children() if a.get_gid() == gid]
    return found


def sums(run: RunDir) -> np.ndarray:
    bins = run.results().bins
    return np.stack([t.double().numpy() for t in (bins.pred_sum, bins.target_sum, bins.count)])


def test_labels_say_what_differs_between_runs(tmp_path):
    for loss, seed in (("baseline", 0), ("baseline", 1), ("soft", 0)):
        evaluated_run(tmp_path, loss=loss, seed=seed)
    labelled = views.labelled([tmp_path])
    assert list(labelled) == ["baseline/seed_0", "baseline/seed_1", "soft/seed_0"]
    assert list(views.labelled({"mine": labelled["soft/seed_0"]})) == ["mine"]
    by_loss = views.by_loss(labelled.values())
    assert list(by_loss) == ["baseline", "soft"] and by_loss["baseline"].config["seed"] == 0
    assert views.by_loss(labelled.values(), seed=1) == {"baseline": labelled["baseline/seed_1"]}


def test_dataset_histograms_draw_each_runs_saved_bins(tmp_path):
    runs = loss_runs(tmp_path, ("baseline", "soft"), classes=("RV", "MYO", "LV"))
    fig = views.dataset_histograms(runs, classes=["LV", "RV"])
    shown = panels(fig)
    assert set(shown) == {f"{loss} · {name}" for loss in runs for name in ("LV", "RV", "average")}
    for loss, run in runs.items():
        expected = direct_histogram(sums(run))
        for name, c in (("LV", 2), ("RV", 0)):
            drawn = np.ma.filled(artist(shown[f"{loss} · {name}"], "histogram").get_array(), 0)
            np.testing.assert_allclose(drawn.reshape(20, 20), expected[c])
    coarse = panels(views.dataset_histograms(runs, classes=["LV"], num_bins=5))
    drawn = np.ma.filled(artist(coarse["soft · LV"], "histogram").get_array(), 0).reshape(5, 5)
    merged = sums(runs["soft"]).reshape(3, 3, 3, 5, 4).sum(-1)
    np.testing.assert_allclose(drawn, direct_histogram(merged)[2])
    everything = panels(views.dataset_histograms(runs))
    assert {"baseline · MYO", "soft · average"} <= set(everything) and len(everything) == 8
    with pytest.raises(ValueError, match=r"\['aorta'\] are not among the scored classes"):
        views.dataset_histograms(runs, classes=["aorta"])
    brats = evaluated_run(tmp_path / "brats", "brats", "soft", classes=("WT", "TC", "ET"))
    with pytest.raises(ValueError, match="must score the same classes"):
        views.dataset_histograms({"acdc": runs["soft"], "brats": brats})


def test_reliability_diagrams_of_one_image_print_its_errors_and_floor(tmp_path):
    runs = loss_runs(tmp_path, ("baseline", "hard"))
    fig = views.reliability_diagrams(runs, "img1", classes=["ring"])
    assert fig.get_suptitle() == "img1"
    shown = panels(fig)
    for loss, run in runs.items():
        direct = direct_errors(sums(run))
        text = artist(shown[f"{loss} · ring"], "errors").get_text()
        floor = run.results().per_image.set_index(["image_id", "class_name"])["ace_floor"]
        assert f"ACE = {direct['ace'][1, 1]:.4f}" in text
        assert f"(floor {floor['img1', 'ring']:.4f})" in text
    rebinned = views.reliability_diagrams(runs, "img1", num_bins=10)
    assert "floor" not in artist(panels(rebinned)["hard · organ"], "errors").get_text()
    with pytest.raises(ValueError, match="no test image 'img9'"):
        views.reliability_diagrams(runs, "img9")


def overlay_runs(root) -> dict[str, RunDir]:
    """Two multi-label runs: regions WT and TC with constant confidences 0.25 and 0.75."""
    image = np.arange(8 * 8 * 4, dtype=np.float32).reshape(8, 8, 4)
    label = np.zeros((2, 8, 8, 4), dtype=np.uint8)
    label[:, 2:6, 2:6, 1:3] = 1
    confidence = np.stack([np.full((8, 8, 4), 0.25), np.full((8, 8, 4), 0.75)])
    arrays = {"image": image, "label": label, "prediction": label, "confidence": confidence}
    saved = {"baseline": ["case_b", "case_c"], "soft": ["case_a", "case_b", "case_c"]}
    return {
        loss: evaluated_run(
            root,
            "brats",
            loss,
            classes=("WT", "TC"),
            channels=("WT", "TC"),
            predictions=dict.fromkeys(ids, arrays),
        )  # fmt: skip
        for loss, ids in saved.items()
    }


def test_overlays_show_an_image_every_run_saved(tmp_path):
    runs = overlay_runs(tmp_path)
    fig = views.overlays(runs, channel="TC")
    assert fig.get_suptitle() == "case_b"  # case_a is saved by one run only
    shown = panels(fig)
    assert "P(TC)" in shown and "errors of TC" in shown
    confidences = [im for ax in fig.axes for im in ax.images if im.get_gid() == "confidence"]
    assert len(confidences) == 2 and all(np.all(im.get_array() == 0.75) for im in confidences)
    first = views.overlays(runs, image_id="case_c")
    assert first.get_suptitle() == "case_c" and "P(WT)" in panels(first)
    with pytest.raises(ValueError, match="'ET' is not one of the classes"):
        views.overlays(runs, channel="ET")
    with pytest.raises(FileNotFoundError, match="case_a"):
        views.overlays(runs, image_id="case_a")
    for path in runs["soft"].predictions_dir.glob("case_[bc].npz"):
        path.unlink()
    with pytest.raises(ValueError, match="no test image has a saved prediction in every run"):
        views.overlays(runs)


def test_learning_curves_read_each_runs_history(tmp_path):
    runs = loss_runs(tmp_path, ("baseline", "soft"))
    for i, run in enumerate(runs.values()):
        run.write_history(
            [
                {"epoch": e, "train_loss": 1 - 0.1 * e - i, "val_dice": nan if e % 2 else 0.5}
                for e in (1, 2, 3, 4)
            ]
        )
    fig = views.learning_curves(runs, ("train_loss", "val_dice"))
    (line,) = [a for a in fig.axes[1].get_children() if a.get_gid() == "curve:soft"]
    np.testing.assert_array_equal(line.get_xdata(), [2, 4])


def test_dice_vs_ace_uses_the_papers_per_image_means(tmp_path):
    ace = {"baseline": [[0.2, 0.4], [0.1, 0.3]], "hard": [[0.1, 0.1], [0.3, 0.1]]}
    dice = {"baseline": [[0.8, 0.6], [0.9, nan]], "hard": [[0.7, 0.5], [0.6, 0.2]]}
    empty = {"baseline": [[False, False], [False, True]], "hard": [[False] * 2] * 2}
    runs = {
        loss: evaluated_run(
            tmp_path,
            loss=loss,
            image_ids=["img0", "img1"],
            values={"ace": ace[loss], "dice": dice[loss]},
            empty=empty[loss],
        )  # fmt: skip
        for loss in ace
    }
    # by hand: ACE over both classes, Dice over the classes present in the image
    expected = {"baseline": [(0.3, 0.7), (0.2, 0.9)], "hard": [(0.1, 0.6), (0.2, 0.4)]}
    (ax,) = views.dice_vs_ace(runs).axes
    for loss, points in expected.items():
        np.testing.assert_allclose(artist(ax, f"images:{loss}").get_offsets(), points)


def test_paired_changes_pair_every_image_with_its_baseline(tmp_path):
    ace = {"baseline": np.full((3, 2), 0.2), "soft": [[0.1, 0.1], [0.3, 0.3], [0.1, 0.3]]}
    runs = {loss: evaluated_run(tmp_path, loss=loss, values={"ace": v}) for loss, v in ace.items()}
    (ax, *_) = views.paired_changes(runs).axes
    np.testing.assert_allclose(
        artist(ax, "pairs:soft").get_offsets(), [[0.2, 0.1], [0.2, 0.3], [0.2, 0.2]]
    )
    assert ax.get_legend().get_texts()[0].get_text() == "+ soft mL1-ACE: 1/3 lower"


def test_typical_image_is_the_median_by_the_class_mean(tmp_path):
    values = {"ace": [[0.1, 0.3], [0.5, 0.5], [0.0, 0.0]]}  # means 0.2, 0.5, 0.0
    run = evaluated_run(tmp_path, values=values)
    assert views.typical_image(run) == "img0"


def test_class_summary_gives_macro_and_micro_errors_per_class(tmp_path):
    run = evaluated_run(tmp_path, values={"dice": [[0.5, nan], [0.7, 0.2], [0.9, 0.4]]})
    summary = views.class_summary(run)
    direct = direct_errors(sums(run))
    pooled = direct_errors(sums(run).sum(1, keepdims=True))
    assert list(summary.index) == ["organ", "ring"]
    np.testing.assert_allclose(summary["macro_ace"], np.nanmean(direct["ace"], 0), rtol=1e-6)
    np.testing.assert_allclose(summary["micro_mce"], pooled["mce"][0], rtol=1e-6)
    np.testing.assert_allclose(summary["dice"], [0.7, 0.3])


def test_image_metrics_and_confidence_directions(tmp_path):
    runs = loss_runs(tmp_path, ("baseline", "soft"))
    table = views.image_metrics(runs, "img2", classes=["ring"])
    assert list(table.index) == [("baseline", "ring"), ("soft", "ring")]
    assert list(table.columns) == ["dice", "ece", "ace", "ace_floor", "mce", "mce_floor"]
    per_image = runs["soft"].results().per_image
    row = per_image[(per_image["image_id"] == "img2") & (per_image["class_name"] == "ring")]
    assert table.loc[("soft", "ring"), "ace"] == pytest.approx(float(row["ace"].iloc[0]))
    direction = views.confidence_directions(runs)
    shares = direction.sum(axis=1)
    np.testing.assert_allclose(shares, 1.0)
    assert isinstance(direction, pd.DataFrame) and len(direction) == 4


def test_binning_example_bins_the_value_and_differentiates_the_loss():
    soft = views.binning_example(0.37, num_bins=5, binning="soft", target=1)
    np.testing.assert_allclose(soft.weights, [0, 0.65, 0.35, 0, 0], atol=1e-6)
    hard = views.binning_example(0.37, num_bins=5, binning="hard", target=0)
    assert hard.weights.tolist() == [0, 1, 0, 0, 0]
    assert hard.probs[-1].item() == pytest.approx(0.37) and hard.targets[-1].item() == 0
    assert torch.isfinite(hard.gradient).all() and hard.loss > 0
    assert hard.figure.axes[1].get_title().startswith(f"mL1-ACE (hard bins) = {hard.loss:.4f}")
