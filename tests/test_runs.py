"""The run directory contract (calibtut.runs): atomic files, round trips and named errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from calibtut.binning import BinStats
from calibtut.runs import PER_IMAGE_COLUMNS, RunDir, atomic_write, find_runs, run_path


def _bins(n_images: int = 2, n_classes: int = 2, num_bins: int = 4) -> BinStats:
    g = torch.Generator().manual_seed(0)
    count = torch.randint(0, 5, (n_images, n_classes, num_bins), generator=g).double()
    pred = count * torch.rand(count.shape, generator=g, dtype=torch.float64)
    target = count * torch.rand(count.shape, generator=g, dtype=torch.float64)
    return BinStats(pred, target, count)


def _rows(ids, names, channels):
    return [
        {"image_id": i, "class_index": c, "class_name": n, "dice": 0.5, "ece": 0.1,
         "ace": 0.2, "mce": 0.3, "empty": False}
        for i in ids
        for n, c in zip(names, channels, strict=True)
    ]  # fmt: skip


def _evaluated_run(root, loss="baseline", seed=0) -> RunDir:
    run = RunDir(run_path(root, "synthetic", loss, seed))
    run.write_config({"dataset": "synthetic", "loss": loss, "seed": seed,
                      "class_names": ["background", "organ", "ring"]})  # fmt: skip
    ids, names = ["a", "b"], ["organ", "ring"]
    run.write_results(_rows(ids, names, [1, 2]), _bins(), ids, names)
    return run


def test_run_path_layout_and_unknown_loss(tmp_path):
    assert run_path(tmp_path, "acdc", "soft", 3) == tmp_path / "acdc" / "soft" / "seed_3"
    with pytest.raises(ValueError, match="loss must be one of"):
        run_path(tmp_path, "acdc", "medium", 0)


def test_results_round_trip_exactly(tmp_path):
    run = _evaluated_run(tmp_path)
    assert run.is_evaluated
    bins, ids, names = run.bins()
    expected = _bins()
    for got, want in zip(
        (bins.pred_sum, bins.target_sum, bins.count),
        (expected.pred_sum, expected.target_sum, expected.count),
        strict=True,
    ):
        assert torch.equal(got, want)
    assert ids == ["a", "b"] and names == ["organ", "ring"] and run.class_indices() == [1, 2]
    frame = run.per_image()
    assert tuple(frame.columns) == PER_IMAGE_COLUMNS and len(frame) == 4
    assert frame["image_id"].tolist() == ["a", "a", "b", "b"]


def test_prediction_round_trip_and_shape_errors(tmp_path):
    run = RunDir(tmp_path / "run")
    image = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    label = np.array([[0, 1, 2, 1]] * 3)
    run.write_prediction("case_1", image, label, label, np.full((3, 4), 0.75))
    saved = run.prediction("case_1")
    assert saved["label"].dtype == np.uint8 and saved["confidence"].dtype == np.float16
    np.testing.assert_array_equal(saved["label"], label)
    np.testing.assert_allclose(saved["image"], image, atol=1e-3)
    assert run.prediction_ids() == ["case_1"]
    with pytest.raises(ValueError, match="must share one shape"):
        run.write_prediction("case_2", image, label, label[:, :2], np.ones((3, 2)))
    with pytest.raises(ValueError, match="does not match label shape"):
        run.write_prediction("case_2", image[:, :2], label, label, np.ones((3, 4)))
    assert run.prediction_ids() == ["case_1"]
    with pytest.raises(FileNotFoundError, match="saved prediction for image 'case_9'"):
        run.prediction("case_9")


def test_missing_and_corrupt_files_are_named(tmp_path):
    run = RunDir(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        _ = run.config
    with pytest.raises(FileNotFoundError, match="per_image.csv"):
        run.per_image()
    with pytest.raises(FileNotFoundError, match="bins.npz"):
        run.bins()
    run.path.mkdir()
    run.config_path.write_text("{not json")
    with pytest.raises(ValueError, match="config.json is not valid JSON"):
        _ = run.config
    run.per_image_path.write_text("image_id,dice\na,0.5\n")
    with pytest.raises(ValueError, match="lacks columns"):
        run.per_image()


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "history.csv"
    target.write_text("old\n")

    def broken(path):
        path.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, broken)
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.csv"]  # no temp file left


def test_find_runs_lists_only_evaluated_runs_in_order(tmp_path):
    soft = _evaluated_run(tmp_path, "soft")
    base = _evaluated_run(tmp_path, "baseline")
    training = RunDir(run_path(tmp_path, "synthetic", "hard", 0))
    training.write_config({"dataset": "synthetic", "loss": "hard", "seed": 0})
    assert [r.path for r in find_runs(tmp_path)] == [base.path, soft.path]
    assert base.name == "synthetic/baseline/seed_0"
    with pytest.raises(FileNotFoundError, match="No run root"):
        find_runs(tmp_path / "absent")
