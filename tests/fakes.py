"""Fake evaluated run directories, written through the package's own ``RunDir``: the one place
the tests, the browser test and the benchmarks make runs without training.

A fake run is a real run directory (``config.json``, ``per_image.csv``, ``bins.npz``, optional
``predictions/``): its bins are random but valid, its per-image values are either computed from
those bins or chosen by the test, so that a test knows every number the code under test reads.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from calibtut.binning import BinStats
from calibtut.metrics import (
    CalibrationErrors,
    FloorDraws,
    ImageResults,
    ImageScores,
    calibration_errors,
    image_results,
    noise_floor,
)
from calibtut.runs import RunDir, run_path

SMALL_SYNTHETIC = dict(
    image_size=(32, 32), patch_size=(32, 32), val_window=(32, 32), samples_per_case=1,
    n_train=6, n_val=2, n_test=3, organs=1, organ_axes=(0.2, 0.3), rings=1,
    ring_radius=(0.15, 0.2), ring_half_width=(1.0, 1.5), lesions=(1, 1), lesion_radius=(2.0, 3.0),
    lesion_prob=0.8, spread=0.3,
)  # fmt: skip
"""The synthetic dataset shrunk to 32 x 32 (6/2/3 images, one of each structure), so that a
run trains in a second: ``catalog.spec("synthetic").replace(**SMALL_SYNTHETIC)``."""

IMAGES = ("img0", "img1", "img2")
CLASSES = ("organ", "ring")
FLOOR_DRAWS = 8
SCORES = ("brier", "nll", "equal_mass_ece")


def random_bins(n_images: int, n_classes: int, num_bins: int = 20, seed: int = 0) -> BinStats:
    """Valid hard bins: integer counts (some bins empty), each bin's mean prediction inside it and
    a mean target in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    shape = (n_images, n_classes, num_bins)
    count = torch.randint(0, 30, shape, generator=g).double() * (
        torch.rand(shape, generator=g) < 0.8
    )
    low = torch.arange(num_bins, dtype=torch.float64) / num_bins
    mean_pred = low + torch.rand(shape, generator=g, dtype=torch.float64) / num_bins
    mean_target = (mean_pred + 0.3 * torch.randn(shape, generator=g, dtype=torch.float64)).clamp(
        0, 1
    )
    return BinStats(count * mean_pred, (count * mean_target).round(), count)


def random_draws(bins: BinStats, draws: int = FLOOR_DRAWS, seed: int = 0) -> FloorDraws:
    """Label draws of a calibrated model whose voxels in a bin all have the bin's mean prediction."""
    g = torch.Generator().manual_seed(seed + 1)
    mean_pred = torch.where(bins.count > 0, bins.pred_sum / bins.count.clamp(min=1), 0.0)
    count = bins.count.unsqueeze(2).expand(-1, -1, draws, -1)
    p = mean_pred.unsqueeze(2).expand_as(count)
    return FloorDraws(torch.binomial(count.float(), p.float(), generator=g))


def evaluated_run(
    root: str | Path,
    dataset: str = "synthetic",
    loss: str = "baseline",
    seed: int = 0,
    *,
    image_ids: Sequence[str] = IMAGES,
    classes: Sequence[str] = CLASSES,
    channels: Sequence[str] | None = None,
    class_indices: Sequence[int] | None = None,
    bins: BinStats | None = None,
    num_bins: int = 20,
    values: Mapping[str, Any] | None = None,
    empty: Any = None,
    floors: bool = True,
    predictions: Mapping[str, Mapping[str, np.ndarray]] | None = None,
    config: Mapping[str, Any] | None = None,
) -> RunDir:
    """Write one evaluated run under ``root`` (at ``<root>/<dataset>/<loss>/seed_<seed>``).

    Args:
        classes: the scored classes; ``channels`` names every output channel (default: a
            background, then the classes) and ``class_indices`` each class's channel (default:
            its position in ``channels``).
        bins: the saved bins (default: :func:`random_bins` from the run's loss and seed).
        values: chosen per-image ``(images, classes)`` values of ``dice``/``ece``/``ace``/``mce``;
            the others are computed from the bins (Dice: 0.7). With all of ``brier``, ``nll``
            and ``equal_mass_ece`` the run saves these scores too (else it has none, as runs
            evaluated before calibtut saved them).
        empty: ``(images, classes)`` flags of classes absent from an image (default: none).
        floors: save label draws and noise floors (from :func:`random_draws`).
        predictions: overlay arrays per image id: ``image``, ``label``, ``prediction`` and
            ``probabilities`` (``RunDir.write_prediction``), or a ``confidence`` instead.
        config: more ``config.json`` entries.
    """
    channels = list(channels) if channels is not None else ["background", *classes]
    indices = (
        list(class_indices) if class_indices is not None else [channels.index(c) for c in classes]
    )
    B, C = len(image_ids), len(classes)
    if bins is None:
        bins = random_bins(B, C, num_bins, seed=1000 * seed + zlib.crc32(loss.encode()) % 1000)
    errors = calibration_errors(bins)
    chosen = {
        k: torch.as_tensor(np.asarray(v, dtype=np.float64)) for k, v in (values or {}).items()
    }
    draws = random_draws(bins, seed=seed) if floors else None
    results = ImageResults(
        bins=bins,
        dice=chosen.get("dice", torch.full((B, C), 0.7, dtype=torch.float64)),
        errors=CalibrationErrors(
            chosen.get("ece", errors.ece),
            chosen.get("ace", errors.ace),
            chosen.get("mce", errors.mce),
            errors.mce_bin,
        ),
        empty=torch.zeros(B, C, dtype=torch.bool) if empty is None else torch.as_tensor(empty),
        floor=noise_floor(bins, draws) if draws is not None else None,
        draws=draws,
        scores=ImageScores(*(chosen[k] for k in SCORES)) if set(SCORES) <= set(chosen) else None,
    )
    run = RunDir(run_path(root, dataset, loss, seed))
    activation = "sigmoid" if "background" not in channels else "softmax"
    run.write_config(
        {
            "dataset": dataset,
            "loss": loss,
            "seed": seed,
            "class_names": channels,
            "scored_classes": list(classes),
            "activation": activation,
            "background_channel": channels.index("background")
            if "background" in channels
            else None,
            "num_bins": bins.num_bins,
            **(config or {}),
        }
    )
    run.write_results(results, list(image_ids), list(classes), indices)
    for image_id, arrays in (predictions or {}).items():
        probabilities = arrays.get("probabilities")
        if probabilities is None:
            probabilities = _probabilities_of(arrays, len(channels))
        run.write_prediction(
            image_id, *(arrays[k] for k in ("image", "label", "prediction")), probabilities
        )
    return run


def _probabilities_of(arrays: Mapping[str, np.ndarray], num_channels: int) -> np.ndarray:
    """Every channel's probability from overlay arrays that give only a ``confidence``: the
    regions' own (multi-label), or the confidence on the predicted class and the rest shared
    equally (class-index maps), so that the saved confidence is the one given."""
    confidence = np.asarray(arrays["confidence"], dtype=np.float64)
    if confidence.ndim == np.ndim(arrays["image"]) + 1:
        return confidence
    predicted = np.asarray(arrays["prediction"]).astype(np.int64)
    rest = (1 - confidence) / max(num_channels - 1, 1)
    probabilities = np.repeat(rest[None], num_channels, axis=0)
    np.put_along_axis(probabilities, predicted[None], confidence[None], axis=0)
    return probabilities


def softmax_prediction(
    shape=(12, 10), num_classes: int = 3, seed: int = 0
) -> dict[str, np.ndarray]:
    """Overlay arrays of a softmax run: class-index maps and a max-probability confidence."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, num_classes, shape).astype(np.uint8)
    prediction = np.where(rng.random(shape) < 0.8, label, rng.integers(0, num_classes, shape))
    return {
        "image": rng.normal(size=shape).astype(np.float32),
        "label": label,
        "prediction": prediction.astype(np.uint8),
        "confidence": rng.uniform(0.4, 1.0, shape).astype(np.float32),
    }


def loss_runs(
    root: str | Path, losses: Sequence[str] = ("baseline", "hard", "soft"), **kwargs
) -> dict[str, RunDir]:
    """One fake run per loss (same images and classes), by loss."""
    return {loss: evaluated_run(root, loss=loss, **kwargs) for loss in losses}


# --- the paper's published results, in the authors' layout ----------------------------------------

PAPER_BUNDLES = {
    "acdc": ("acdc17_{}_dice_ce_1", 3),
    "amos": ("amos22_{}_dice_ce_nl", 15),
    "kits": ("kits23_{}_dice_ce_nl", 3),
    "brats": ("brats21_{}_dice_ce_nl", 3),
}
PAPER_LOSS_DIRS = {"baseline": "baseline", "hard": "hardl1ace", "soft": "softl1ace"}
PAPER_METRIC_FILES = {
    "ace": "macro_ace",
    "ece": "macro_ece",
    "mce": "macro_mce",
    "dice": "mean_dice",
}
# Per image, the factor each loss multiplies the baseline's calibration errors by: on every
# dataset hard changes them by -20 % on average (pstdev 12.91 %), soft by -40 % (pstdev 0).
HARD_FACTORS = (0.8, 0.9, 0.7, 0.8, 0.6, 1.0)
SOFT_FACTOR = 0.6
DICE_FACTORS = {"hard": 1.0, "soft": 0.98}
# Ground-truth-absent flags (image, class) per dataset, as missing_classes_raw.csv holds them. An
# absent AMOS class has a NaN Dice (as amos_0029); in KiTS and BraTS the flags index raw labels,
# not the scored regions, so the metric files are untouched (as the authors').
MISSING_FLAGS = {"acdc": (), "amos": ((1, 14),), "kits": ((0, 2), (3, 2)), "brats": ((5, 0),)}
RESULTS_FOLDER = "inference_results"
COMPLETE_CASES_FOLDER = "inference_results_complete_cases_only"
COMPLETE_CASES_DATASETS = ("amos", "kits", "brats")  # ACDC is complete: no such folder
# The complete-case files hold the complete images only, each value times this factor (the
# authors re-ran inference on them, so their values differ slightly): every ratio to the
# baseline, hence every percentage change, is that of the full files on the same images.
RERUN_FACTOR = 1.001


def complete_images(dataset: str, images: int = 6) -> list[int]:
    """The fixture's images of ``dataset`` whose ground truth holds every class."""
    incomplete = {image for image, _ in MISSING_FLAGS[dataset]}
    return [i for i in range(images) if i not in incomplete]


def write_paper_results(root: str | Path, images: int = 6) -> Path:
    """A small copy of the paper's published per-image results, in the authors' exact layout and
    file format (repeated ``mean`` header, NaN Dice for an absent AMOS class), with chosen values:
    ``images`` test images per dataset whose changes are known by hand (see
    :data:`HARD_FACTORS`), the flags of :data:`MISSING_FLAGS`, and for AMOS, KiTS and BraTS the
    complete-case files (:data:`COMPLETE_CASES_FOLDER`, see :data:`RERUN_FACTOR`). Returns
    ``root``."""
    root = Path(root)
    rng = np.random.default_rng(7)
    for dataset, (bundle, n_classes) in PAPER_BUNDLES.items():
        names = [f"{dataset}_{i:04d}.nii.gz" for i in range(images)]
        baseline = {m: rng.uniform(0.05, 0.5, (images, n_classes)) for m in PAPER_METRIC_FILES}
        baseline["dice"] = rng.uniform(0.6, 0.95, (images, n_classes))
        missing = np.zeros((images, n_classes))
        for image, c in MISSING_FLAGS[dataset]:
            if image < images:
                missing[image, c] = 1
        complete = complete_images(dataset, images)
        for loss, folder in PAPER_LOSS_DIRS.items():
            run = bundle.format(folder)
            for metric, stem in PAPER_METRIC_FILES.items():
                values = baseline[metric].copy()
                if metric == "dice":
                    values = values * DICE_FACTORS.get(loss, 1.0)
                    if dataset == "amos":
                        values[missing == 1] = np.nan
                elif loss == "hard":
                    values = values * np.asarray(HARD_FACTORS[:images])[:, None]
                elif loss == "soft":
                    values = values * SOFT_FACTOR
                _write_paper_csv(root, run, RESULTS_FOLDER, stem, names, values, repeats=2)
                if dataset in COMPLETE_CASES_DATASETS:
                    _write_paper_csv(
                        root, run, COMPLETE_CASES_FOLDER, stem, [names[i] for i in complete],
                        values[complete] * RERUN_FACTOR, repeats=1,
                    )  # fmt: skip
            _write_paper_csv(root, run, RESULTS_FOLDER, "missing_classes", names, missing, 3)
            if dataset in COMPLETE_CASES_DATASETS:
                _write_paper_csv(
                    root, run, COMPLETE_CASES_FOLDER, "missing_classes",
                    [names[i] for i in complete], missing[complete], 7,
                )  # fmt: skip
    return root


def _write_paper_csv(root, bundle, folder, stem, names, values, repeats) -> None:
    path = root / "bundles" / bundle / "seed_12345" / folder / f"{stem}_raw.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    n = values.shape[1]
    header = ["filename", *(f"class{i}" for i in range(n)), *(["mean"] * repeats)]
    lines = [",".join(header)]
    for name, row in zip(names, values, strict=True):
        mean = np.nanmean(row)
        cells = ["nan" if np.isnan(v) else f"{v:.8g}" for v in row]
        lines.append(",".join([name, *cells, f"{mean:.8g}"]))
    path.write_text("\n".join(lines) + "\n")


# --- runs written from a model's outputs ---------------------------------------------------------

SHARPNESS = {"baseline": 6.0, "hard": 3.0, "soft": 2.0}  # logit scale: over- to under-confident


def model_run(
    root: str | Path,
    loss: str = "baseline",
    seed: int = 0,
    *,
    dataset: str = "synthetic",
    n_images: int = 3,
    shape: tuple[int, ...] = (16, 16),
    class_names: Sequence[str] = ("background", "LV", "RV"),
    num_bins: int = 20,
    predictions: bool = True,
    score_background: bool = True,
    noise: float = 1.5,
    batch: int = 8,
) -> RunDir:
    """An evaluated run as evaluation writes one: box phantoms, noisy softmax outputs (sharper for
    the baseline) -> :func:`calibtut.metrics.image_results` with noise floors -> run directory.

    ``score_background=False`` writes it as training writes a softmax run (the paper's
    setting): results for classes 1.. only, ``class_index`` counting output channels, while
    config.json and the saved label maps keep every channel.
    """
    generator = torch.Generator().manual_seed(seed)
    n_classes = len(class_names)
    first = 0 if score_background else 1
    parts, ids = [], []
    run = RunDir(run_path(root, dataset, loss, seed))
    for start in range(0, n_images, batch):
        count = min(batch, n_images - start)
        labels = torch.zeros((count, *shape), dtype=torch.long)
        for b in range(count):
            for c in range(1, n_classes):
                corner = torch.randint(0, shape[0] // 2, (len(shape),), generator=generator)
                box = tuple(
                    slice(int(i), int(i) + max(2, s // 3))
                    for i, s in zip(corner, shape, strict=True)
                )
                labels[(b, *box)] = c
        target = torch.nn.functional.one_hot(labels, n_classes).movedim(-1, 1).float()
        logits = SHARPNESS.get(loss, 4.0) * target + noise * torch.randn(
            target.shape, generator=generator
        )
        probs = torch.softmax(logits, 1)
        parts.append(
            image_results(
                probs, target, num_bins, include_background=score_background, floor_draws=FLOOR_DRAWS,
                generator=generator,
            )
        )  # fmt: skip
        batch_ids = [f"case_{start + b:03d}" for b in range(count)]
        ids += batch_ids
        if predictions:
            for b, image_id in enumerate(batch_ids):
                image = labels[b].float() + 0.3 * torch.randn(shape, generator=generator)
                run.write_prediction(
                    image_id, image.numpy(), labels[b].numpy(), probs[b].argmax(0).numpy(),
                    probs[b].numpy(),
                )  # fmt: skip
    run.write_config(
        {
            "dataset": dataset, "loss": loss, "seed": seed, "class_names": list(class_names),
            "num_bins": num_bins, "activation": "softmax", "include_background": score_background,
            "background_channel": 0,
        }
    )  # fmt: skip
    scored = list(range(first, n_classes))
    run.write_results(ImageResults.cat(parts), ids, [class_names[c] for c in scored], scored)
    return run


def with_config(run: RunDir, config: Mapping[str, Any]) -> RunDir:
    """``run`` as if it had been made with ``config``: the config written and the results
    re-stamped with its identity (a run directory whose content is consistent, but odd)."""
    run.write_config(dict(config))
    with np.load(run.bins_path) as saved:
        arrays = {k: saved[k] for k in saved.files}
    arrays["run_id"] = np.asarray(run.run_id)
    np.savez_compressed(run.bins_path, **arrays)
    return run
