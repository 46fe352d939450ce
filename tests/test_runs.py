"""The run directory contract (calibtut.runs): atomic files, round trips, the run lifecycle
(plan, clear, finished), paths to runs, the paper's per-image means, and named errors."""

from __future__ import annotations

import os
import stat

import numpy as np
import pandas as pd
import pytest
import torch
from fakes import evaluated_run, random_bins

from calibtut.runs import (
    FLOOR_COLUMNS,
    PER_IMAGE_COLUMNS,
    RunDir,
    SkippedRunsWarning,
    atomic_write,
    find_runs,
    image_means,
    load_checkpoint,
    resolve_runs,
    run_path,
)


def test_run_path_layout_and_unknown_loss(tmp_path):
    assert run_path(tmp_path, "acdc", "soft", 3) == tmp_path / "acdc" / "soft" / "seed_3"
    with pytest.raises(ValueError, match="loss must be one of"):
        run_path(tmp_path, "acdc", "medium", 0)


def test_results_round_trip_exactly(tmp_path):
    bins = random_bins(2, 2, num_bins=4)
    run = evaluated_run(
        tmp_path, image_ids=["a", "b"], bins=bins, values={"dice": [[0.5, 0.25], [1.0, 0.0]]}
    )
    assert run.is_evaluated
    results = run.results()
    for got, want in zip(
        (results.bins.pred_sum, results.bins.target_sum, results.bins.count),
        (bins.pred_sum, bins.target_sum, bins.count),
        strict=True,
    ):
        assert torch.equal(got, want)
    assert results.image_ids == ["a", "b"] and results.class_names == ["organ", "ring"]
    assert results.class_indices == [1, 2]
    frame = results.per_image
    assert tuple(frame.columns) == PER_IMAGE_COLUMNS + FLOOR_COLUMNS and len(frame) == 4
    assert frame["image_id"].tolist() == ["a", "a", "b", "b"]
    assert frame["class_index"].tolist() == [1, 2, 1, 2]
    assert frame["dice"].tolist() == [0.5, 0.25, 1.0, 0.0]
    assert results.draws.target_sums.shape == (2, 2, 8, 4)


def test_results_are_cached_and_reloaded_after_a_re_evaluation(tmp_path):
    run = evaluated_run(tmp_path)
    first = run.results()
    assert RunDir(run.path).results() is first
    evaluated_run(tmp_path, values={"ece": np.full((3, 2), 0.5)})
    stamp = run.per_image_path.stat().st_mtime_ns + 10**9  # a later time, whatever the clock
    os.utime(run.per_image_path, ns=(stamp, stamp))
    again = run.results()
    assert again is not first and again.per_image["ece"].tolist() == [0.5] * 6


def test_rebinning_merges_bins_and_floor_draws(tmp_path):
    results = evaluated_run(tmp_path).results()
    assert results.rebinned(None) is results.bins and results.rebinned(5) is results.rebinned(5)
    torch.testing.assert_close(
        results.rebinned(5).count, results.bins.count.view(3, 2, 5, 4).sum(-1)
    )
    draws = results.rebinned_draws(5).target_sums
    torch.testing.assert_close(draws, results.draws.target_sums.view(3, 2, 8, 5, 4).sum(-1))
    with pytest.raises(ValueError, match="no test image 'nope'"):
        results.image("nope")


def test_write_results_refuses_what_does_not_fit_before_writing(tmp_path):
    run = evaluated_run(tmp_path, image_ids=["a", "b"])
    results = run.results()
    before = {p: p.read_bytes() for p in (run.bins_path, run.per_image_path)}
    from calibtut.metrics import image_results

    probs = torch.full((2, 2, 4), 0.5)
    fresh = image_results(probs, torch.zeros_like(probs), 20)
    with pytest.raises(ValueError, match="its own output channel"):
        run.write_results(fresh, ["a", "b"], ["organ", "ring"], [1, 1])
    with pytest.raises(ValueError, match="do not fit 3 image ids"):
        run.write_results(fresh, ["a", "b", "c"], ["organ", "ring"], [1, 2])
    with pytest.raises(ValueError, match="must be distinct"):
        run.write_results(fresh, ["a", "b"], ["organ", "organ"], [1, 2])
    assert {p: p.read_bytes() for p in before} == before
    assert run.results() is results
    swapped = evaluated_run(
        tmp_path / "swapped", channels=["background", "ring", "organ"], class_indices=[1, 2]
    )
    with pytest.raises(ValueError, match="puts class 'organ' at output channel 1"):
        swapped.results()


def test_old_runs_without_class_indices_are_named(tmp_path):
    run = evaluated_run(tmp_path)
    with np.load(run.bins_path) as saved:
        arrays = {k: saved[k] for k in saved.files if k != "class_indices"}
    np.savez_compressed(run.bins_path, **arrays)
    with pytest.raises(
        ValueError, match=r"lacks arrays \['class_indices'\].*evaluate the run again"
    ):
        run.results()


def test_prediction_round_trip_and_shape_errors(tmp_path):
    run = RunDir(tmp_path / "run")
    image = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    label = np.array([[0, 1, 2, 1]] * 3)
    probabilities = np.stack([np.full((3, 4), 0.1), np.full((3, 4), 0.75), np.full((3, 4), 0.15)])
    run.write_prediction("case_1", image, label, label, probabilities)
    saved = run.prediction("case_1")
    assert saved["label"].dtype == np.uint8 and saved["probabilities"].shape == (3, 3, 4)
    np.testing.assert_allclose(saved["probabilities"], probabilities, atol=0.5 / 255)
    np.testing.assert_allclose(saved["confidence"], 0.75, atol=0.5 / 255)  # the largest channel's
    np.testing.assert_array_equal(saved["label"], label)
    np.testing.assert_allclose(saved["image"], image, atol=1e-3)
    assert run.prediction_ids() == ["case_1"]
    with pytest.raises(ValueError, match="must share one shape"):
        run.write_prediction("case_2", image, label, label[:, :2], probabilities)
    with pytest.raises(ValueError, match=r"must be \(channels"):
        run.write_prediction("case_2", image[:, :2], label, label, probabilities)
    assert run.prediction_ids() == ["case_1"]
    with pytest.raises(FileNotFoundError, match="saved prediction for image 'case_9'"):
        run.prediction("case_9")


def test_missing_and_corrupt_files_are_named(tmp_path):
    run = RunDir(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        _ = run.config
    with pytest.raises(FileNotFoundError, match="bins.npz"):
        run.results()
    run.path.mkdir()
    run.config_path.write_text("{not json")
    with pytest.raises(ValueError, match="config.json is not valid JSON"):
        _ = run.config
    good = evaluated_run(tmp_path / "good")
    good.per_image_path.write_text("image_id,dice\na,0.5\n")
    with pytest.raises(ValueError, match="lacks columns"):
        good.results()
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "absent.pt")
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="broken.pt is not a readable checkpoint"):
        load_checkpoint(tmp_path / "broken.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a calibtut checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


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


def test_atomic_writes_honour_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        atomic_write(tmp_path / "shared.csv", lambda p: p.write_text("x"))
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "shared.csv").stat().st_mode) == 0o644


def test_find_runs_lists_only_evaluated_runs_in_order(tmp_path):
    soft = evaluated_run(tmp_path, loss="soft")
    base = evaluated_run(tmp_path, loss="baseline")
    training = RunDir(run_path(tmp_path, "synthetic", "hard", 0))
    training.write_config({"dataset": "synthetic", "loss": "hard", "seed": 0})
    with pytest.warns(SkippedRunsWarning, match="left out 1 run.*synthetic/hard/seed_0"):
        assert [r.path for r in find_runs(tmp_path)] == [base.path, soft.path]
    assert base.name == "synthetic/baseline/seed_0"
    with pytest.raises(FileNotFoundError, match="No run root"):
        find_runs(tmp_path / "absent")


def test_resolve_runs_takes_runs_folders_and_paths_once_each(tmp_path):
    soft = evaluated_run(tmp_path, loss="soft")
    base = evaluated_run(tmp_path, loss="baseline")
    found = resolve_runs([tmp_path, base.path, str(soft.path), soft])
    assert found == [base, soft]
    assert resolve_runs(base) == [base]
    unevaluated = RunDir(run_path(tmp_path, "synthetic", "hard", 0))
    unevaluated.write_config({"dataset": "synthetic", "loss": "hard", "seed": 0})
    with pytest.raises(ValueError, match="has not been evaluated"):
        resolve_runs(unevaluated.path)
    with pytest.raises(FileNotFoundError, match="neither a run directory nor a folder"):
        resolve_runs(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no evaluated run directory under"):
        resolve_runs(tmp_path / "empty")
    with pytest.raises(ValueError, match="no runs given"):
        resolve_runs([])
    with pytest.raises(TypeError, match="RunDirs or paths"):
        resolve_runs([3])


def test_image_means_follow_the_papers_convention():
    """ACE over every class (absent ones too); Dice over the classes present; NaN skipped."""
    table = pd.DataFrame(
        {
            "image_id": ["a", "a", "b", "b"],
            "class_index": [1, 2, 1, 2],
            "class_name": ["organ", "ring"] * 2,
            "dice": [0.8, float("nan"), 0.6, 0.2],
            "ece": [0.1, 0.3, float("nan"), 0.2],
            "ace": [0.2, 0.4, 0.1, 0.3],
            "mce": [0.5, 0.7, 0.2, 0.4],
            "empty": [False, True, False, False],
            "ace_floor": [0.05, 0.15, 0.1, 0.2],
        }
    )
    means = image_means(table)
    assert list(means.index) == ["a", "b"]
    assert list(means.columns) == ["dice", "ece", "ace", "mce", "ace_floor"]
    np.testing.assert_allclose(means["ace"], [0.3, 0.2])
    np.testing.assert_allclose(means["dice"], [0.8, 0.4])  # a's empty ring left out
    np.testing.assert_allclose(means["ece"], [0.2, 0.2])  # NaN skipped
    np.testing.assert_allclose(means["ace_floor"], [0.1, 0.15])


def write_checkpoint(run: RunDir, finished: bool) -> None:
    run.write_checkpoint({"model": {}, "dataset": "synthetic", "finished": finished, "epoch": 1})


def test_plan_trains_resumes_reuses_or_refuses(tmp_path):
    config = {"dataset": "synthetic", "loss": "baseline", "seed": 0, "epochs": 2}
    run = RunDir(run_path(tmp_path, "synthetic", "baseline", 0))
    assert run.plan(config) == "train"  # nothing there
    run.write_config({**config, "versions": {"calibtut": "0.1"}})
    assert run.plan(config) == "train"  # a config but no checkpoint yet
    write_checkpoint(run, finished=False)
    assert run.plan(config) == "resume"
    write_checkpoint(run, finished=True)
    assert run.plan(config) == "resume"  # finished training but not evaluated
    evaluated_run(tmp_path, config={"epochs": 2})
    write_checkpoint(run, finished=True)
    assert run.is_finished and run.plan(config) == "reuse"
    assert run.plan(config, overwrite=True) == "train"
    with pytest.raises(FileExistsError, match=r"epochs: 2 in the run, 3 now.*--overwrite"):
        run.plan({**config, "epochs": 3})
    with pytest.raises(FileExistsError, match="lr: absent from the run"):
        run.plan({**config, "lr": 0.1})


def test_clear_removes_every_file_of_the_run(tmp_path):
    run = evaluated_run(tmp_path, predictions={"img0": {
        "image": np.zeros((4, 4)), "label": np.zeros((4, 4)),
        "prediction": np.zeros((4, 4)), "confidence": np.zeros((4, 4))}})  # fmt: skip
    write_checkpoint(run, finished=True)
    run.write_best({"model": {}, "dataset": "synthetic"})
    run.write_history([{"epoch": 1, "train_loss": 0.5}])
    run.clear()
    assert list(run.path.iterdir()) == []
