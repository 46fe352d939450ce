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
from calibtut.metrics import noise_floor  # noqa: E402
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
    # re-binned, the floor is the noise floor of the merged bins and the saved label draws
    rebinned = views.reliability_diagrams(runs, "img1", num_bins=10)
    results = runs["hard"].results()
    b, c = results.image("img1"), results.class_names.index("organ")
    floor = noise_floor(results.rebinned(10), results.rebinned_draws(10)).ace[b, c]
    text = artist(panels(rebinned)["hard · organ"], "errors").get_text()
    assert f"(floor {float(floor):.4f})" in text
    table = views.image_values(results, 10).set_index(["image_id", "class_name"])
    assert table.loc[("img1", "organ"), "ace_floor"] == pytest.approx(float(floor))
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
    assert len(confidences) == 2 and all(
        np.allclose(im.get_array(), 0.75, atol=0.5 / 255) for im in confidences
    )
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


# --- per-image values, rankings and histogram cells (the explorers' finding and linking) ---


def merged(sums: np.ndarray, num_bins: int) -> np.ndarray:
    """Saved bin sums merged into ``num_bins`` by adding neighbours."""
    return sums.reshape(*sums.shape[:-1], num_bins, -1).sum(-1)


def test_image_values_rebin_the_errors_and_floors_from_the_saved_sums(tmp_path):
    run = evaluated_run(tmp_path, values={"dice": [[0.5, 0.6], [0.7, 0.8], [0.9, 1.0]]})
    results = run.results()
    pd.testing.assert_frame_equal(views.image_values(results), results.per_image)
    table = views.image_values(results, 10)
    assert len(table) == 6 and list(table.columns) == list(results.per_image.columns)
    coarse = merged(sums(run), 10)
    direct = direct_errors(coarse)
    draws = results.draws.target_sums.double().numpy()  # (images, classes, draws, bins)
    for row in table.itertuples():
        b, c = (
            results.image_ids.index(row.image_id),
            list(results.class_names).index(row.class_name),
        )
        for name in ("ece", "ace", "mce"):
            assert getattr(row, name) == pytest.approx(direct[name][b, c], rel=1e-6)
        # the floor by hand: the ACE/MCE of each saved label draw in the merged bins, averaged
        floors = [
            direct_errors(np.stack([coarse[0], merged(draws[:, :, d], 10), coarse[2]]))
            for d in range(draws.shape[2])
        ]
        assert row.ace_floor == pytest.approx(np.mean([f["ace"][b, c] for f in floors]), rel=1e-6)
        assert row.mce_floor == pytest.approx(np.mean([f["mce"][b, c] for f in floors]), rel=1e-6)
    np.testing.assert_array_equal(table["dice"], results.per_image["dice"])  # Dice: no bins
    with pytest.raises(ValueError):
        views.image_values(results, 7)


def ranking_runs(root) -> dict[str, RunDir]:
    """A baseline and a soft run of four images with chosen ACE (class means 0.2, 0.5, 0.1 and
    undefined), Dice with an absent class, and floors."""
    ace = {
        "baseline": [[0.1, 0.3], [0.5, 0.5], [0.0, 0.2], [nan, nan]],
        "soft": [[0.1, 0.1], [0.2, 0.4], [0.3, 0.3], [nan, nan]],
    }
    dice = [[0.8, 0.4], [0.9, nan], [0.5, 0.7], [0.6, 0.6]]
    empty = [[False, False], [False, True], [False, False], [False, False]]
    ids = ["img0", "img1", "img2", "img3"]
    return {
        loss: evaluated_run(
            root, loss=loss, image_ids=ids, values={"ace": v, "dice": dice}, empty=empty
        )  # fmt: skip
        for loss, v in ace.items()
    }


def test_image_ranking_ranks_the_class_means_and_changes(tmp_path):
    runs = ranking_runs(tmp_path)
    ranked = views.image_ranking(runs, "ACE")
    assert list(ranked.index) == ["img1", "img0", "img2", "img3"]  # NaN last
    np.testing.assert_allclose(ranked.to_numpy()[:3], [0.5, 0.2, 0.1])
    assert np.isnan(ranked["img3"]) and ranked.name == "ACE"
    smallest = views.image_ranking(runs, "ACE", descending=False)
    assert list(smallest.index) == ["img2", "img0", "img1", "img3"]
    ring = views.image_ranking(runs, "ACE", classes=["ring"])
    np.testing.assert_allclose(ring[["img1", "img0", "img2"]], [0.5, 0.3, 0.2])
    # Dice over the classes present: img1's is its organ's alone
    dice = views.image_ranking(runs, "Dice", descending=False)
    np.testing.assert_allclose(dice[["img2", "img3", "img0", "img1"]], [0.6, 0.6, 0.6, 0.9])
    # change: soft minus the baseline, image by image (its run chosen, its baseline found)
    change = views.image_ranking(runs, "ACE change from baseline", run="soft")
    np.testing.assert_allclose(change[["img2", "img0", "img1"]], [0.2, -0.1, -0.2])
    assert list(change.index[:3]) == ["img2", "img0", "img1"]
    kept = views.image_ranking(runs, "ACE change from baseline", run="soft", within=(-0.15, 1))
    assert list(kept.index) == ["img2", "img0", "img3"]  # NaN kept, -0.2 left out
    # the floor and ACE / floor, from the saved floors
    floors = runs["baseline"].results().image_means()["ace_floor"]
    over = views.image_ranking(runs, "ACE / noise floor", run="baseline")
    assert over["img1"] == pytest.approx(0.5 / floors["img1"])
    ids = views.image_ranking(runs, "image id")
    assert list(ids.index) == ["img3", "img2", "img1", "img0"] and ids.isna().all()
    # at 10 bins the ACE is re-binned (the chosen values are as-saved only)
    rebinned = views.image_ranking(runs, "ACE", run="soft", num_bins=10)
    by_hand = np.nanmean(direct_errors(merged(sums(runs["soft"]), 10))["ace"], 1)
    np.testing.assert_allclose(rebinned.sort_index().to_numpy(), by_hand, rtol=1e-6)
    with pytest.raises(ValueError, match="unknown ranking 'BCE'"):
        views.image_ranking(runs, "BCE")
    with pytest.raises(ValueError, match="run 'hard' is not one of"):
        views.image_ranking(runs, "ACE", run="hard")
    with pytest.raises(ValueError, match="choose a run other than a baseline"):
        views.image_ranking(runs, "ACE change from baseline", run="baseline")


def test_baseline_of_prefers_the_same_dataset_and_seed(tmp_path):
    runs = {
        f"{loss}/{seed}": evaluated_run(tmp_path, loss=loss, seed=seed)
        for loss in ("baseline", "soft") for seed in (0, 1)
    }  # fmt: skip
    assert views.baseline_of(runs, "soft/1") == "baseline/1"
    assert views.baseline_of(runs, "baseline/0") is None
    assert views.baseline_of({"soft/1": runs["soft/1"], "baseline/0": runs["baseline/0"]},
                             "soft/1") == "baseline/0"  # fmt: skip
    assert views.baseline_of({"soft/1": runs["soft/1"]}, "soft/1") is None


def cells_by_hand(sums: np.ndarray, c: int) -> list[tuple[int, int, int]]:
    """(confidence bin, truth bin, images) of the class's histogram, fullest first, then by bins."""
    matrix = direct_histogram(sums)[c]
    cells = [(int(k), int(j), int(matrix[j, k])) for j, k in zip(*np.nonzero(matrix), strict=True)]
    return sorted(cells, key=lambda cell: (-cell[2], cell[0], cell[1]))


def test_histogram_cells_and_the_images_behind_each(tmp_path):
    run = evaluated_run(tmp_path, image_ids=[f"img{i}" for i in range(6)])
    for num_bins in (None, 5):
        saved = sums(run) if num_bins is None else merged(sums(run), num_bins)
        cells = views.histogram_cells(run, "ring", num_bins)
        assert list(cells.columns) == ["confidence_bin", "truth_bin", "images"]
        assert list(cells.itertuples(index=False, name=None)) == cells_by_hand(saved, 1)
        for k, j, count in cells.itertuples(index=False, name=None):
            ids = views.cell_images(run, "ring", j, k, num_bins)
            # by hand: the images whose bin k is occupied with its mean truth in bin j
            behind = [f"img{b}" for b in range(6) if direct_histogram(saved[:, b : b + 1])[1, j, k]]
            assert ids == behind and len(ids) == count
    j, k = np.argwhere(direct_histogram(sums(run))[1] == 0)[0]  # a cell no image reaches
    assert views.cell_images(run, "ring", int(j), int(k)) == []
    with pytest.raises(ValueError, match="not among the scored classes"):
        views.histogram_cells(run, "aorta")


# --- differences from the baseline ---


def gaps_by_hand(sums: np.ndarray) -> np.ndarray:
    """|mean prediction - mean truth| per (image, class, bin), NaN where empty."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sums[2] > 0, np.abs(sums[0] - sums[1]) / sums[2], np.nan)


def test_bin_gap_changes_of_one_image_and_of_the_dataset_by_hand(tmp_path):
    runs = loss_runs(tmp_path, ("baseline", "hard", "soft"))
    for num_bins in (None, 10):
        n = 20 if num_bins is None else num_bins
        gaps = {loss: gaps_by_hand(merged(sums(run), n)) for loss, run in runs.items()}
        counts = {loss: merged(sums(run), n)[2] for loss, run in runs.items()}
        one = views.bin_gap_changes(runs, "img1", ["ring"], num_bins)
        assert list(one["run"].unique()) == ["hard", "soft"] and set(one["baseline"]) == {
            "baseline"
        }
        assert len(one) == 2 * n and set(one["class"]) == {"ring"}
        soft = one[one["run"] == "soft"]
        expected = gaps["soft"][1, 1] - gaps["baseline"][1, 1]  # NaN unless both occupied
        np.testing.assert_allclose(soft["change"], expected, rtol=1e-9)
        np.testing.assert_allclose(
            soft["gap"], np.where(np.isfinite(expected), gaps["soft"][1, 1], nan)
        )
        np.testing.assert_array_equal(soft["images"], np.isfinite(expected).astype(int))
        np.testing.assert_array_equal(soft["count"], counts["soft"][1, 1])
        np.testing.assert_allclose(soft["low"], np.arange(n) / n, atol=1e-6)
        # the dataset: paired per-image changes averaged over the images that have the bin twice
        every = views.bin_gap_changes(runs, classes=None, num_bins=num_bins)
        assert len(every) == 2 * 2 * n
        for loss in ("hard", "soft"):
            for c, name in enumerate(("organ", "ring")):
                rows = every[(every["run"] == loss) & (every["class"] == name)]
                paired = gaps[loss][:, c] - gaps["baseline"][:, c]  # (images, bins)
                both = np.isfinite(paired)
                with np.errstate(invalid="ignore"):
                    mean = np.nansum(paired, 0) / both.sum(0)
                np.testing.assert_allclose(rows["change"], np.where(both.any(0), mean, nan),
                                           rtol=1e-9)  # fmt: skip
                np.testing.assert_array_equal(rows["images"], both.sum(0))
    with pytest.raises(ValueError, match="has a baseline among them"):
        views.bin_gap_changes({"soft": runs["soft"]})


def test_gap_change_figure_draws_each_bins_change(tmp_path):
    runs = loss_runs(tmp_path, ("baseline", "soft"))
    fig = views.gap_change_figure(runs, "img2", num_bins=10)
    assert fig.get_suptitle() == "gap change per bin from the baseline, image img2"
    shown = panels(fig)
    assert set(shown) == {"soft − baseline · organ", "soft − baseline · ring"}
    gaps = {loss: gaps_by_hand(merged(sums(run), 10)) for loss, run in runs.items()}
    counts = {loss: merged(sums(run), 10)[2] for loss, run in runs.items()}
    for c, name in enumerate(("organ", "ring")):
        ax = shown[f"soft − baseline · {name}"]
        lower, higher = artist(ax, "gap_lower"), artist(ax, "gap_higher")
        np.testing.assert_allclose(lower.get_data().edges, np.linspace(0, 1, 11), atol=1e-6)
        drawn = np.where(np.isfinite(lower.get_data().values), lower.get_data().values,
                         higher.get_data().values)  # fmt: skip
        expected = gaps["soft"][2, c] - gaps["baseline"][2, c]
        np.testing.assert_allclose(drawn, expected, rtol=1e-9)
        assert (np.nan_to_num(lower.get_data().values) <= 0).all()
        # a bin that only one of the runs occupies: marked on the zero line
        one_only = (counts["soft"][2, c] > 0) ^ (counts["baseline"][2, c] > 0)
        np.testing.assert_allclose(artist(ax, "unpaired").get_xdata(),
                                   (np.flatnonzero(one_only) + 0.5) / 10, atol=1e-6)  # fmt: skip
        limits = ax.get_ylim()
        assert limits[0] == -limits[1] and limits[1] >= np.nanmax(np.abs(expected))
    dataset = views.gap_change_figure(runs, classes=["ring"])
    assert dataset.get_suptitle().endswith("mean over the test images")
    assert panels(dataset)["soft − baseline · ring"].get_ylabel() == "mean gap change"


def distribution_runs(root) -> dict[str, RunDir]:
    """Eight images whose class-mean ACE is 0.10 ... 0.16 and 0.60 (baseline; soft: 0.8 times it
    but for img7, lowered to 0.12)."""
    values = np.array([0.10, 0.11, 0.12, 0.13, 0.14, 0.15, 0.16, 0.60])
    soft = 0.8 * values
    soft[7] = 0.12
    ids = [f"img{i}" for i in range(8)]
    return {
        loss: evaluated_run(root, loss=loss, image_ids=ids, values={"ace": np.c_[v, v]})
        for loss, v in (("baseline", values), ("soft", soft))
    }


def quartiles_by_hand(values) -> tuple[float, float, float]:
    """Quartiles by linear interpolation between the order statistics (rank (n - 1) q)."""
    ordered = sorted(values)

    def at(q: float) -> float:
        rank = (len(ordered) - 1) * q
        low = int(rank)
        high = min(low + 1, len(ordered) - 1)
        return ordered[low] + (rank - low) * (ordered[high] - ordered[low])

    return at(0.25), at(0.5), at(0.75)


def test_image_distribution_marks_tukeys_outliers(tmp_path):
    runs = distribution_runs(tmp_path)
    values = [0.10, 0.11, 0.12, 0.13, 0.14, 0.15, 0.16, 0.60]
    spread = views.image_distribution(runs, "ACE")
    q1, median, q3 = quartiles_by_hand(values)
    row = spread.summary.loc["baseline"]
    assert (row["q1"], row["median"], row["q3"]) == pytest.approx((q1, median, q3))
    assert row["high_fence"] == pytest.approx(q3 + 1.5 * (q3 - q1))
    assert (row["whislo"], row["whishi"]) == pytest.approx((0.10, 0.16))  # 0.60 is beyond
    assert row["images"] == 8
    assert list(spread.outliers.itertuples(index=False, name=None)) == [
        ("baseline", "img7", pytest.approx(0.60), True)
    ]  # soft's 0.12 sits among its others
    # the change: soft minus baseline per image, img7 far below the rest
    change = views.image_distribution(runs, "ACE change from baseline")
    assert list(change.summary.index) == ["soft"]
    by_image = change.values.set_index("image_id")["value"]
    np.testing.assert_allclose(by_image, [-0.2 * v for v in values[:7]] + [-0.48])
    assert list(change.outliers["image_id"]) == ["img7"]
    with pytest.raises(ValueError, match="key must be one of"):
        views.image_distribution(runs, "image id")
    with pytest.raises(ValueError, match="no run of"):
        views.image_distribution({"baseline": runs["baseline"]}, "ACE change from baseline")


def test_distribution_figure_draws_the_given_boxes_and_names_outliers(tmp_path):
    runs = distribution_runs(tmp_path)
    fig = views.distribution_figure(runs, "ACE change from baseline")
    (ax,) = fig.axes
    assert ax.get_title() == "per-image ACE change from baseline (all classes)"
    outliers = artist(ax, "outliers:soft").get_offsets()
    np.testing.assert_allclose(outliers[:, 1], [-0.48])
    (label,) = [a for a in ax.get_children() if a.get_gid() == "outlier_label"]
    assert label.get_text() == "img7"
    dots = artist(ax, "images:soft").get_offsets()[:, 1]
    np.testing.assert_allclose(sorted(dots), sorted(-0.2 * v for v in (0.10, 0.11, 0.12, 0.13,
                                                                        0.14, 0.15, 0.16)))  # fmt: skip
    _, median, _ = quartiles_by_hand([-0.2 * v for v in (0.10, 0.11, 0.12, 0.13, 0.14, 0.15,
                                                          0.16)] + [-0.48])  # fmt: skip
    np.testing.assert_allclose(artist(ax, "median:soft").get_ydata(), median)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["soft"]


def test_overlays_zoom_on_a_region_of_the_slice(tmp_path):
    runs = overlay_runs(tmp_path)  # 8 x 8 x 4 images, the regions WT and TC
    whole = views.overlays(runs, "case_b", channel="TC", slice_index=1)
    zoomed = views.overlays(runs, "case_b", channel="TC", slice_index=1, region=(2, 6, 1, 5))
    assert zoomed.get_suptitle() == "case_b · zoom: rows 2–5, columns 1–4"
    image = np.arange(8 * 8 * 4, dtype=np.float32).reshape(8, 8, 4)[..., 1]
    shown = [im for ax in zoomed.axes for im in ax.images if im.get_gid() == "confidence"]
    assert all(im.get_array().shape == (4, 4) for im in shown)
    first = zoomed.axes[0].images[0]
    np.testing.assert_array_equal(first.get_array(), image[2:6, 1:5])
    assert first.get_clim() == whole.axes[0].images[0].get_clim()  # the whole slice's grey scale
    full = views.overlays(runs, "case_b", channel="TC", slice_index=1, region=(0, 8, 0, 8))
    assert full.get_suptitle() == "case_b"  # the whole slice is no zoom
    with pytest.raises(ValueError, match="outside the"):
        views.overlays(runs, "case_b", channel="TC", slice_index=1, region=(2, 9, 0, 4))
    with pytest.raises(ValueError, match="is empty"):
        views.overlays(runs, "case_b", channel="TC", slice_index=1, region=(3, 3, 0, 4))
