"""Scoring a model: sliding-window inference, per-image results, and the test-set evaluation.

Validation (during training) and evaluation (after it) score images the same way: per image and
scored class, Dice, ECE, ACE and MCE from :func:`calibtut.metrics.image_results`. Evaluation
uses the best validation weights (``best.pt``), as the paper does, and writes ``per_image.csv``,
``bins.npz`` and overlay arrays through :class:`calibtut.runs.RunDir`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import monai
import numpy as np
import torch
from monai.inferers import sliding_window_inference
from tqdm.auto import tqdm

from calibtut.data import DatasetSpec
from calibtut.metrics import FLOOR_DRAWS, ImageResults, image_results
from calibtut.runs import RunDir
from calibtut.train.build import (
    amp_dtype,
    build_network,
    check_count,
    data_loader,
    plain_tensor,
    select_device,
)
from calibtut.train.config import TrainConfig

__all__ = ["predict", "score_images", "validate", "evaluate"]

VALIDATION_METRICS = ("dice", "ece", "ace", "mce")


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    image: torch.Tensor,
    data: DatasetSpec,
    amp: torch.dtype | None = None,
    sw_batch_size: int = 4,
) -> torch.Tensor:
    """Sliding-window probabilities ``(B, C, *spatial)`` of an eval-mode ``model`` over
    ``data.val_window`` (Gaussian blending, as the paper)."""
    with torch.autocast(image.device.type, dtype=amp, enabled=amp is not None):
        logits = sliding_window_inference(
            image, data.val_window, sw_batch_size, model, overlap=0.25, mode="gaussian"
        )
    logits = logits.float()
    return torch.softmax(logits, 1) if data.activation == "softmax" else torch.sigmoid(logits)


def score_images(
    model: torch.nn.Module,
    dataset: monai.data.Dataset,
    data: DatasetSpec,
    num_bins: int,
    device: torch.device,
    amp: torch.dtype | None = None,
    progress: str | None = None,
    floor_seed: int | None = None,
) -> Iterator[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor, ImageResults]]:
    """Per image of ``dataset``: its id, the input, the evaluated probabilities and one-hot
    target (regions where the dataset has them, :meth:`DatasetSpec.evaluation_probabilities`)
    and its results on the scored classes (the paper leaves the softmax background out).

    With ``floor_seed``, each image's results carry its noise floor, from label draws seeded by
    ``(floor_seed, image index)`` so that an evaluation is reproducible.
    """
    model.eval()
    loader = data_loader(dataset, batch_size=1)
    index = -1
    for index, item in enumerate(
        tqdm(loader, desc=progress, leave=False, disable=progress is None)
    ):
        image = plain_tensor(item["image"], device)
        probs = data.evaluation_probabilities(predict(model, image, data, amp))
        target = data.evaluation_target(plain_tensor(item["label"], device))
        generator = None
        if floor_seed is not None:
            seed = int(np.random.SeedSequence([floor_seed, index]).generate_state(1)[0])
            generator = torch.Generator(device=probs.device).manual_seed(seed)
        results = image_results(
            probs,
            target,
            num_bins,
            multilabel=bool(data.regions),
            include_background=data.include_background or bool(data.regions),
            floor_draws=FLOOR_DRAWS if floor_seed is not None else 0,
            generator=generator,
        )
        yield str(item["id"][0]), image, probs, target, results
    check_count(index + 1, len(dataset), progress or "validation")


def validate(
    model: torch.nn.Module,
    dataset: monai.data.Dataset,
    data: DatasetSpec,
    num_bins: int,
    device: torch.device,
    amp: torch.dtype | None = None,
) -> dict[str, float]:
    """Mean validation Dice/ECE/ACE/MCE over images and scored classes, and per class."""
    per_image = [
        torch.stack([r.dice, r.errors.ece, r.errors.ace, r.errors.mce]).cpu()
        for *_, r in score_images(model, dataset, data, num_bins, device, amp)
    ]
    values = torch.cat(per_image, dim=1).double()  # (4 metrics, images, classes)
    scores: dict[str, float] = {"val_images": len(per_image)}
    for m, metric in enumerate(VALIDATION_METRICS):
        scores[f"val_{metric}"] = float(values[m].nanmean())
        per_class = values[m].nanmean(0)
        for c, (_, name) in enumerate(data.scored_classes):
            scores[f"val_{metric}_{name}"] = float(per_class[c])
    return scores


def evaluate(
    run: RunDir | str | Path,
    data_dir: str | Path | None = None,
    *,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> RunDir:
    """Test-split results of a trained run: ``per_image.csv``, ``bins.npz`` and overlays.

    Uses the best validation weights (``best.pt``), as the paper does. Per image and scored
    class: Dice, ECE, ACE and MCE, and the ACE and MCE noise floors
    (:func:`calibtut.metrics.noise_floor`, label draws seeded by the run's seed).

    Args:
        run: the run directory.
        data_dir: the dataset's folder; None takes the one the run was trained on.
        device: where to run inference (None: the best available).
        progress: show a progress bar.

    Returns:
        The run, now evaluated.

    Raises:
        ValueError: the run has not finished training, or its checkpoints belong elsewhere.
        FileNotFoundError: the run or its data is missing.
    """
    run = run if isinstance(run, RunDir) else RunDir(run)
    recorded = run.config
    config = TrainConfig.from_dict(recorded)
    data = config.dataset_spec()
    if data_dir is None:
        data_dir = recorded.get("data_dir")
    device = select_device(device)
    model = _best_model(run, config, data, device)
    test_ds = data.dataset(data_dir, "test", cache=False)
    results: list[ImageResults] = []
    ids: list[str] = []
    scored = score_images(
        model,
        test_ds,
        data,
        config.num_bins,
        device,
        amp_dtype(config, device),
        progress=f"evaluate {run.name}" if progress else None,
        floor_seed=config.seed,
    )
    for index, (image_id, image, probs, target, result) in enumerate(scored):
        results.append(_on_cpu(result))
        ids.append(image_id)
        if index < config.save_predictions:
            _write_overlay(run, image_id, image, probs, target, bool(data.regions))
    channels, names = zip(*data.scored_classes, strict=True)
    run.write_results(ImageResults.cat(results), ids, list(names), list(channels))
    return run


def _best_model(
    run: RunDir, config: TrainConfig, data: DatasetSpec, device: torch.device
) -> torch.nn.Module:
    """The network with the run's best validation weights, once the run has finished training
    and both its checkpoints are its own."""
    checkpoint = run.checkpoint()
    if not checkpoint.get("finished"):
        raise ValueError(
            f"{run.path} has not finished training (epoch {checkpoint.get('epoch')} of "
            f"{config.epochs}); run train again to resume it"
        )
    best = run.best()
    for path, saved in ((run.checkpoint_path, checkpoint), (run.best_path, best)):
        if saved["dataset"] != config.dataset:
            raise ValueError(
                f"{path} belongs to dataset {saved['dataset']!r}, but {run.config_path} says "
                f"{config.dataset!r}"
            )
    model = build_network(config, data).to(device)
    try:
        model.load_state_dict(best["model"])
    except RuntimeError as err:
        raise ValueError(
            f"{run.best_path} does not fit the {config.network} of {run.config_path}: {err}"
        ) from err
    return model


def _on_cpu(result: ImageResults) -> ImageResults:
    return ImageResults.cat([result], device="cpu")


def _write_overlay(
    run: RunDir,
    image_id: str,
    image: torch.Tensor,
    probs: torch.Tensor,
    target: torch.Tensor,
    multilabel: bool,
) -> None:
    """Save what the overlay figures show (first input channel, label, prediction, confidence)."""
    probs, target = probs[0].cpu(), target[0].cpu()
    if multilabel:
        label, prediction, confidence = target, probs >= 0.5, probs
    else:
        label, prediction, confidence = target.argmax(0), probs.argmax(0), probs.amax(0)
    run.write_prediction(
        image_id,
        image[0, 0].cpu().numpy(),
        label.numpy(),
        prediction.numpy(),
        confidence.numpy(),
    )
