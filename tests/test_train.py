"""calibtut.train: presets, training steps on synthetic data and on every phantom, complete and
resumed runs, evaluation checked against calibtut.metrics recomputed by hand, and bad input."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from fakes import SMALL_SYNTHETIC
from monai.data import list_data_collate
from monai.networks import one_hot
from reference import direct_floor

from calibtut.binning import hard_binning
from calibtut.data import spec as real_spec
from calibtut.data import write_phantom
from calibtut.metrics import image_results
from calibtut.runs import RunDir, SkippedRunsWarning, find_runs, load_checkpoint
from calibtut.train import (
    TrainConfig,
    Training,
    build,
    build_network,
    evaluate,
    loop,
    select_device,
    train,
    train_many,
)

PHANTOMS = ("acdc", "amos", "kits", "brats")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    base = tmp_path_factory.mktemp("phantoms")
    return {name: write_phantom(name, base / name, seed=0) for name in PHANTOMS}


def tiny(loss="baseline", seed=0, **overrides) -> TrainConfig:
    values = {"epochs": 2, "val_every": 1, "width": 4, "batch_size": 2}
    values.update(overrides)
    return TrainConfig.for_dataset("synthetic", loss, seed, **values)


def files(run: RunDir) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in run.path.rglob("*") if p.is_file()}


# --- presets and configs --------------------------------------------------------------------


def test_presets_are_the_papers_hyper_parameters():
    acdc = TrainConfig.for_dataset("acdc", "soft", 3)
    assert (acdc.epochs, acdc.lr, acdc.batch_size, acdc.weight_decay) == (600, 2e-4, 2, 1e-5)
    assert (acdc.warmup_epochs, acdc.val_every, acdc.network, acdc.width) == (
        2,
        10,
        "segresnetds",
        32,
    )
    assert (acdc.loss, acdc.seed, acdc.num_bins, acdc.ace_weight) == ("soft", 3, 20, 0.33)
    kits = TrainConfig.for_dataset("kits")
    assert (kits.epochs, kits.lr) == (1250, 1e-4)
    assert TrainConfig.for_dataset("synthetic").network == "unet"


def test_overrides_and_round_trip():
    config = TrainConfig.for_dataset("amos", "hard", epochs=5, lr=None, patch_size=[64, 64, 32])
    assert (config.epochs, config.lr, config.patch_size) == (5, 2e-4, (64, 64, 32))
    assert TrainConfig.from_dict({**config.to_dict(), "versions": {"torch": "x"}}) == config
    assert config.dataset_spec().patch_size == (64, 64, 32)
    assert config.dataset_spec().val_window == real_spec("amos").val_window


def test_a_config_of_before_every_prediction_was_saved_still_loads_and_is_reused(tmp_path):
    """config.json of older runs records save_predictions (every test image is saved now)."""
    config = TrainConfig.for_dataset("synthetic", "soft")
    old = {**config.to_dict(), "save_predictions": 4}
    assert "save_predictions" not in config.to_dict()
    assert TrainConfig.from_dict(old) == config
    run = RunDir(tmp_path / "run")
    run.write_config(old)
    assert run.plan(config.to_dict()) == "train"  # no checkpoint yet; not another config's run


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: TrainConfig.for_dataset("mnist"), ValueError, "unknown dataset 'mnist'"),
        (lambda: TrainConfig.for_dataset("acdc", "medium"), ValueError, "unknown loss 'medium'"),
        (
            lambda: TrainConfig.for_dataset("acdc", epochs=0),
            ValueError,
            "epochs must be a positive",
        ),
        (lambda: TrainConfig.for_dataset("acdc", max_steps=0), ValueError, "max_steps"),
        (lambda: TrainConfig.for_dataset("acdc", seed=-1), ValueError, "seed must be"),
        (lambda: TrainConfig.for_dataset("acdc", lr=-1.0), ValueError, "lr > 0"),
        (lambda: TrainConfig.for_dataset("acdc", network="vnet"), ValueError, "unknown network"),
        (lambda: TrainConfig.for_dataset("acdc", epoch=3), TypeError, "unknown TrainConfig field"),
    ],
)
def test_bad_configs(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_select_device():
    assert select_device("cpu") == torch.device("cpu")
    expected = (
        "cuda"
        if torch.cuda.is_available()
        else "mps"
        if torch.backends.mps.is_available()
        else "cpu"
    )
    assert select_device().type == expected
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            select_device("cuda")


# --- training steps -------------------------------------------------------------------------


def overfit(config: TrainConfig, data, batch, steps: int) -> list[float]:
    training = Training.create(config, data, torch.device("cpu"), total_steps=steps)
    images, labels = batch["image"].as_tensor(), batch["label"].as_tensor()
    return [float(training.step(images, labels)) for _ in range(steps)]


@pytest.mark.parametrize("loss", ["baseline", "hard", "soft"])
@pytest.mark.slow
def test_a_few_steps_decrease_the_loss_on_synthetic(loss):
    data = real_spec("synthetic").replace(**SMALL_SYNTHETIC)
    batch = list_data_collate([data.dataset(None, "train", cache=False)[i] for i in range(2)])
    config = tiny(loss, width=8, warmup_epochs=0, lr=1e-2)
    losses = overfit(config, data, batch, steps=12)
    assert all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-3:]) < 0.8 * losses[0], losses


@pytest.mark.parametrize("name", PHANTOMS)
@pytest.mark.slow
def test_a_few_steps_decrease_the_loss_on_each_phantom(phantoms, name):
    """The paper's SegResNetDS with deep supervision, on each dataset's real loading pipeline."""
    data = real_spec(name).replace(patch_size=(32, 32, 16))
    items = data.dataset(phantoms[name], "train", cache=False)[0]
    batch = list_data_collate([items])
    config = TrainConfig.for_dataset(
        name, "hard", width=4, warmup_epochs=0, lr=1e-2, patch_size=(32, 32, 16)
    )
    network = build_network(config, data).train()
    outputs = network(batch["image"].as_tensor())
    assert isinstance(outputs, list) and len(outputs) == 4  # deep supervision heads
    assert outputs[0].shape[1] == data.out_channels
    losses = overfit(config, data, batch, steps=8)
    assert all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-2:]) < losses[0], losses


# --- whole runs -----------------------------------------------------------------------------


@pytest.mark.slow
def test_train_writes_a_complete_run(small_synthetic, tmp_path):
    run = train(tiny("soft"), None, tmp_path, progress=False)
    assert run.path == tmp_path / "synthetic" / "soft" / "seed_0"
    config = run.config
    assert config["class_names"] == ["background", "organ", "ring", "lesion"]
    assert (config["activation"], config["num_bins"], config["loss"], config["seed"]) == (
        "softmax",
        20,
        "soft",
        0,
    )
    assert config["versions"]["torch"] == torch.__version__ and config["device"] == "cpu"
    history = run.history()
    assert history["epoch"].tolist() == [1, 2] and history["step"].tolist() == [3, 6]
    assert (
        history[["train_loss", "val_dice", "val_ace", "val_ace_lesion", "lr"]].notna().all().all()
    )
    assert run.is_finished and run.best_path.is_file()
    results = run.results()
    per_image = results.per_image
    assert len(per_image) == 3 * 3  # test images x scored classes (background left out)
    assert sorted(set(per_image["class_index"])) == [1, 2, 3]
    # class_index is the output channel: it names the row's class in config.json
    assert [config["class_names"][i] for i in per_image["class_index"]] == list(
        per_image["class_name"]
    )
    assert results.bins.count.shape == (3, 3, 20)
    assert results.class_names == ["organ", "ring", "lesion"] and results.class_indices == [1, 2, 3]
    ids = results.image_ids
    assert ids == [f"synthetic_test_{i:04d}" for i in range(3)]
    assert results.draws.target_sums.shape == (3, 3, 32, 20)
    assert config["phantom"] is False
    assert run.prediction_ids() == ids  # every test image's overlay is saved
    assert [r.path for r in find_runs(tmp_path)] == [run.path]


@pytest.mark.slow
def test_progress_bars_end_at_100_percent(small_synthetic, tmp_path, capsys):
    """What a saved notebook keeps is each bar's last state: 100 % for the run's epochs, and the
    evaluation bar (leave=False) cleared, never a bar stuck short of the end."""
    train(tiny(), None, tmp_path, progress=True)

    def visible(line: str) -> str:  # what a terminal or Jupyter shows of a line with \r in it
        return [segment for segment in line.split("\r") if segment][-1]

    shown = [visible(line) for line in capsys.readouterr().out.split("\n") if line]
    epochs = [line for line in shown if line.startswith("synthetic/baseline/seed_0:")]
    assert epochs[-1].startswith("synthetic/baseline/seed_0: 100%") and "2/2" in epochs[-1]
    assert not shown[-1].strip(), shown[-1]  # the evaluation bar, last, was cleared


@pytest.mark.slow
def test_max_steps_caps_training(small_synthetic, tmp_path):
    run = train(tiny(epochs=4, max_steps=4), None, tmp_path, progress=False)
    assert run.history()["step"].tolist() == [3, 4]  # the cap ends epoch 2 early, and training
    assert run.is_finished


@pytest.mark.slow
def test_resume_equals_uninterrupted(small_synthetic, tmp_path, monkeypatch):
    config = tiny("hard", epochs=3, val_every=2)
    whole = train(config, None, tmp_path / "whole", progress=False)

    real_epoch = loop._train_epoch

    def killed_in_epoch_3(training, dataset, cfg, epoch, *rest):
        if epoch == 3:
            raise KeyboardInterrupt
        return real_epoch(training, dataset, cfg, epoch, *rest)

    monkeypatch.setattr(loop, "_train_epoch", killed_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        train(config, None, tmp_path / "resumed", progress=False)
    resumed = RunDir(tmp_path / "resumed" / "synthetic" / "hard" / "seed_0")
    assert not resumed.is_evaluated and not resumed.is_finished  # never looks complete
    assert load_checkpoint(resumed.checkpoint_path)["epoch"] == 2
    with pytest.warns(SkippedRunsWarning, match="left out 1 run"):
        assert find_runs(tmp_path / "resumed") == []
    with pytest.raises(ValueError, match="has not finished training"):
        evaluate(resumed, progress=False)

    monkeypatch.setattr(loop, "_train_epoch", real_epoch)
    train(config, None, tmp_path / "resumed", progress=False)
    times = ["epoch_time_s"]
    pd.testing.assert_frame_equal(
        whole.history().drop(columns=times), resumed.history().drop(columns=times)
    )
    a, b = load_checkpoint(whole.checkpoint_path), load_checkpoint(resumed.checkpoint_path)
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    pd.testing.assert_frame_equal(whole.results().per_image, resumed.results().per_image)


@pytest.mark.slow
def test_finished_or_different_runs_are_not_overwritten(small_synthetic, tmp_path):
    run = train(tiny(), None, tmp_path, progress=False)
    before = files(run)
    with pytest.raises(FileExistsError, match="finished run"):
        train(tiny(), None, tmp_path, progress=False)
    with pytest.raises(FileExistsError, match="different config"):
        train(tiny(lr=1e-4), None, tmp_path, progress=False)
    assert files(run) == before
    train(tiny(lr=1e-4), None, tmp_path, progress=False, overwrite=True)
    assert run.config["lr"] == 1e-4 and run.is_finished


@pytest.mark.slow
def test_train_many_reuses_resumes_or_refuses(small_synthetic, tmp_path, capsys):
    run = RunDir(tmp_path / "synthetic" / "baseline" / "seed_0")
    assert run.plan(tiny().to_dict()) == "train"
    assert train_many([tiny()], None, tmp_path, progress=False) == [run]
    assert "synthetic/baseline/seed_0: training on cpu" in capsys.readouterr().out
    assert run.plan(tiny().to_dict()) == "reuse"
    before = files(run)
    assert train_many([tiny()], None, tmp_path, progress=False) == [run]
    assert "reusing the finished run in" in capsys.readouterr().out and files(run) == before

    # another config is refused, naming exactly the fields that differ, before anything trains
    with pytest.raises(FileExistsError) as refused:
        train_many([tiny("soft"), tiny(lr=1e-4, epochs=3)], None, tmp_path, progress=False)
    message = str(refused.value)
    assert "different config (epochs: 2 in the run, 3 now; lr: 0.003 in the run, 0.0001 now)" in (
        message
    )
    assert files(run) == before and not (tmp_path / "synthetic" / "soft").exists()

    # results lost after training (e.g. evaluation interrupted): resumed, i.e. only re-evaluated
    results = run.results().per_image
    run.per_image_path.unlink()
    assert run.plan(tiny().to_dict()) == "resume"
    train_many([tiny()], None, tmp_path, progress=False)
    assert "resuming the interrupted run on cpu" in capsys.readouterr().out
    trained = ("checkpoint.pt", "best.pt", "history.csv", "config.json")
    assert {name: files(run)[name] for name in trained} == {name: before[name] for name in trained}
    pd.testing.assert_frame_equal(run.results().per_image, results)

    train_many([tiny(lr=1e-4)], None, tmp_path, overwrite=True, progress=False)
    assert run.config["lr"] == 1e-4 and run.is_finished
    with pytest.raises(ValueError, match="jobs must be a positive integer"):
        train_many([tiny()], None, tmp_path, jobs=0)


@pytest.mark.slow
def test_evaluate_equals_metrics_recomputed_by_hand(small_synthetic, tmp_path):
    run = train(tiny("soft"), None, tmp_path, progress=False)
    config = TrainConfig.from_dict(run.config)
    data = config.dataset_spec()
    network = build_network(config, data)
    network.load_state_dict(run.best()["model"])
    network.eval()
    results = run.results()
    per_image = results.per_image.set_index(["image_id", "class_name"])
    bins, ids, names = results.bins, results.image_ids, results.class_names
    for b, case in enumerate(data.dataset(None, "test", cache=False)):
        image, label = case["image"].as_tensor()[None], case["label"].as_tensor()[None]
        with torch.no_grad():  # the image is one window: a plain forward pass is the inference
            probs = torch.softmax(network(image), 1)
        target = one_hot(label, 4)
        expected = image_results(probs, target, 20)
        for c, name in enumerate(names, start=1):
            row = per_image.loc[(case["id"], name)]
            assert row["dice"] == pytest.approx(float(expected.dice[0, c]), abs=1e-6, nan_ok=True)
            for metric in ("ece", "ace", "mce"):
                value = float(getattr(expected.errors, metric)[0, c])
                assert row[metric] == pytest.approx(value, abs=1e-5), (case["id"], name, metric)
            assert bool(row["empty"]) == ((label == c).sum().item() == 0)
        reference = hard_binning(probs[:, 1:], target[:, 1:], 20)
        assert torch.equal(bins.count[b], reference.count[0].double())
        floor = direct_floor(probs[:, 1:], 20, draws=60, seed=b)  # an independent Monte Carlo
        for c, name in enumerate(names):
            saved = per_image.loc[(case["id"], name), "ace_floor"]
            bound = 4 * np.hypot(floor["ace_se"][0, c], floor["ace_se"][0, c] * (60 / 32) ** 0.5)
            assert abs(saved - floor["ace"][0, c]) < bound, (case["id"], name, saved, floor)
        floor = direct_floor(probs[:, 1:], 20, draws=60, seed=b)  # an independent Monte Carlo
        for c, name in enumerate(names):
            saved = per_image.loc[(case["id"], name), "ace_floor"]
            se = 0.5 * floor["ace"][0, c]  # 32 draws against 60: a loose but real bound
            assert abs(saved - floor["ace"][0, c]) < max(se, 0.02), (case["id"], name)
        torch.testing.assert_close(
            bins.pred_sum[b], reference.pred_sum[0].double(), atol=1e-4, rtol=1e-5
        )
        assert ids[b] == case["id"]
        if case["id"] in run.prediction_ids():
            saved = run.prediction(case["id"])
            np.testing.assert_array_equal(saved["label"], label[0, 0].numpy())
            for c in (1, 2, 3):  # Dice from the saved prediction map, by hand
                truth, pred = saved["label"] == c, saved["prediction"] == c
                if truth.any():
                    dice = 2 * (truth & pred).sum() / (truth.sum() + pred.sum())
                    assert per_image.loc[(case["id"], names[c - 1]), "dice"] == pytest.approx(dice)
            np.testing.assert_allclose(
                saved["confidence"], probs[0].amax(0).numpy(), atol=0.5 / 255 + 1e-6
            )


@pytest.mark.slow
def test_nan_loss_is_a_clear_error(small_synthetic, tmp_path, monkeypatch):
    real_build_loss = build.build_loss

    class NaNLoss(torch.nn.Module):
        def __init__(self, loss):
            super().__init__()
            self.loss = loss

        def forward(self, outputs, labels):
            return self.loss(outputs, labels) * float("nan")

    def nan_loss(config, data, validate=True):
        return NaNLoss(real_build_loss(config, data, validate))

    monkeypatch.setattr(build, "build_loss", nan_loss)
    with pytest.raises(FloatingPointError, match="epoch 1, step 1"):
        train(tiny(), None, tmp_path, progress=False)
    with pytest.warns(SkippedRunsWarning, match="left out 1 run"):
        assert find_runs(tmp_path) == []


@pytest.mark.slow
def test_corrupt_checkpoint_is_a_clear_error_and_nothing_changes(small_synthetic, tmp_path):
    run = train(tiny(), None, tmp_path, progress=False)
    run.checkpoint_path.write_bytes(b"not a checkpoint")
    before = files(run)
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        evaluate(run, progress=False)
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        train(tiny(), None, tmp_path, progress=False)  # resuming reads the checkpoint first
    assert files(run) == before


def test_every_patch_of_every_case_is_counted(small_synthetic, tmp_path, monkeypatch):
    """MONAI's dictionary crop keeps num_samples on its cropper: an epoch of 6 cases x 3 patches
    must count 18 (a run of a spec with several patches per case, like KiTS, once failed)."""
    from calibtut.data import catalog

    spec = small_synthetic.replace(samples_per_case=3, patch_size=(16, 16))
    assert loop.samples_per_case(spec.dataset(None, "train")) == 3
    assert loop.samples_per_case(spec.dataset(None, "val")) == 1
    monkeypatch.setattr(catalog, "spec", lambda name: spec)
    run = train(tiny(epochs=1), None, tmp_path, progress=False)
    assert run.history()["train_patches"].tolist() == [18]


@pytest.mark.slow
def test_bad_data_dirs_write_nothing(small_synthetic, tmp_path, phantoms):
    with pytest.raises(ValueError, match="generated in memory"):
        train(tiny(), tmp_path / "data", tmp_path / "runs", progress=False)
    acdc = TrainConfig.for_dataset("acdc", width=4, max_steps=1, patch_size=(32, 32, 16))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        train(acdc, tmp_path / "missing", tmp_path / "runs", progress=False)
    with pytest.raises(FileNotFoundError, match="acdc: missing folder .*amos/training"):
        train(acdc, phantoms["amos"], tmp_path / "runs", progress=False)
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["kits", "brats"])
@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_region_datasets_train_both_ways_and_score_the_regions(
    phantoms, tmp_path, dataset, activation
):
    """The paper's way (a softmax over the exclusive labels, regions summed at evaluation) and
    the option (a sigmoid per region) both train, evaluate and score the three regions; the
    softmax run's per-image numbers equal the regions summed here by hand."""
    config = TrainConfig.for_dataset(
        dataset, "hard", width=4, epochs=1, max_steps=1, patch_size=(32, 32, 16),
        val_window=(32, 32, 16), activation=activation,
    )  # fmt: skip
    run = train(config, phantoms[dataset], tmp_path, progress=False)
    data = config.dataset_spec()
    regions = [name for name, _ in data.regions]
    assert run.config["activation"] == activation and run.config["class_names"] == regions
    assert run.config["output_names"] == list(data.class_names)
    assert len(data.class_names) == (4 if activation == "softmax" else 3)
    results = run.results()
    assert results.class_names == regions and results.class_indices == [0, 1, 2]
    if activation == "sigmoid":
        return
    from calibtut.train.evaluation import predict

    model = build_network(config, data)
    model.load_state_dict(run.best()["model"])
    model.eval()
    case = data.dataset(phantoms[dataset], "test", cache=False)[0]
    probs = predict(model, case["image"].as_tensor()[None], data)
    values = data.label_values
    summed = torch.stack(
        [sum(probs[:, values.index(v)] for v in members) for _, members in data.regions], 1
    )
    target = torch.stack(
        [
            sum(case["label"].as_tensor()[None, 0] == values.index(v) for v in members)
            for _, members in data.regions
        ],
        1,
    ).float()
    expected = image_results(summed, target, 20, multilabel=True)
    rows = results.per_image[results.per_image["image_id"] == case["id"]].set_index("class_name")
    for r, name in enumerate(regions):
        assert rows.loc[name, "ace"] == pytest.approx(float(expected.errors.ace[0, r]), abs=1e-5)
        assert rows.loc[name, "dice"] == pytest.approx(
            float(expected.dice[0, r]), abs=1e-6, nan_ok=True
        )
