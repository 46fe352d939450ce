"""Scoring a model: sliding-window inference, per-image results, and the test-set evaluation.

Validation (during training) and evaluation (after it) score images the same way: per image and
scored class, Dice, ECE, ACE and MCE from :func:`calibtut.metrics.image_results`; evaluation adds
the noise floors and the bin-free scores (Brier, NLL, equal-mass ECE). Evaluation uses the best
validation weights (``best.pt``), as the paper does, and writes ``per_image.csv``,
``bins.npz`` and every test image's overlay arrays through :class:`calibtut.runs.RunDir`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import nullcontext
from pathlib import Path

import monai
import numpy as np
import torch
from monai.inferers import sliding_window_inference

from calibtut.data import DatasetSpec
from calibtut.metrics import FLOOR_DRAWS, ImageResults, image_results
from calibtut.runs import RunDir
from calibtut.train.build import (
    amp_dtype,
    build_network,
    check_count,
    data_loader,
    plain_tensor,
    progress_bar,
    select_device,
)
from calibtut.train.config import TrainConfig
from calibtut.train.distributed import SINGLE, World, barrier, gather, in_order, shard, start

__all__ = ["window_logits", "predict", "score_images", "validate", "evaluate"]

VALIDATION_METRICS = ("dice", "ece", "ace", "mce")


@torch.no_grad()
def window_logits(
    model: torch.nn.Module,
    image: torch.Tensor,
    data: DatasetSpec,
    amp: torch.dtype | None = None,
    sw_batch_size: int = 4,
) -> torch.Tensor:
    """Sliding-window logits ``(B, C, *spatial)`` (float32) of an eval-mode ``model`` over
    ``data.val_window`` (Gaussian blending, as the paper): what temperature scaling divides."""
    with torch.autocast(image.device.type, dtype=amp, enabled=amp is not None):
        logits = sliding_window_inference(
            image, data.val_window, sw_batch_size, model, overlap=0.25, mode="gaussian"
        )
    return logits.float()


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    image: torch.Tensor,
    data: DatasetSpec,
    amp: torch.dtype | None = None,
    sw_batch_size: int = 4,
) -> torch.Tensor:
    """Sliding-window probabilities ``(B, C, *spatial)`` of an eval-mode ``model``: the softmax
    or sigmoid of :func:`window_logits`."""
    logits = window_logits(model, image, data, amp, sw_batch_size)
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
    here: World = SINGLE,
    predictor: Callable[[torch.Tensor], torch.Tensor] | None = None,
    scores: bool = False,
) -> Iterator[tuple[int, str, torch.Tensor, torch.Tensor, torch.Tensor, ImageResults]]:
    """Per image of this rank's share of ``dataset`` (all of it in one process): its index in
    the dataset, its id, the input, the evaluated probabilities and one-hot target (regions where
    the dataset has them, :meth:`DatasetSpec.evaluation_probabilities`) and its results on the
    scored classes (the paper leaves the softmax background out).

    With ``floor_seed``, each image's results carry its noise floor, from label draws seeded by
    ``(floor_seed, image index)``, so an evaluation is reproducible however it is sharded.

    ``predictor`` (image -> probabilities) replaces ``predict(model, ...)``: what post-hoc
    methods (:mod:`calibtut.train.posthoc`) score, ``model`` then unused. ``scores`` adds the
    Brier score, NLL and equal-mass ECE (what evaluation saves; validation skips them).
    """
    if predictor is None:
        model.eval()
        predictor = lambda image: predict(model, image, data, amp)  # noqa: E731
    part, indices = shard(dataset, here)
    loader = data_loader(part, batch_size=1)
    seen = 0
    for local, item in enumerate(
        progress_bar(loader, desc=progress, leave=False, disable=progress is None)
    ):
        index = indices[local]
        image = plain_tensor(item["image"], device)
        probs = data.evaluation_probabilities(predictor(image))
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
            scores=scores,
        )
        seen += 1
        yield index, str(item["id"][0]), image, probs, target, results
    check_count(seen, len(part), progress or "validation")


def validate(
    model: torch.nn.Module,
    dataset: monai.data.Dataset,
    data: DatasetSpec,
    num_bins: int,
    device: torch.device,
    amp: torch.dtype | None = None,
    here: World = SINGLE,
) -> dict[str, float]:
    """Mean validation Dice/ECE/ACE/MCE over images and scored classes, and per class (the same
    on every rank: each scores its share and the per-image values are gathered)."""
    mine = [
        (index, torch.stack([r.dice, r.errors.ece, r.errors.ace, r.errors.mce]).cpu())
        for index, *_, r in score_images(model, dataset, data, num_bins, device, amp, here=here)
    ]
    per_image = in_order(gather(mine, here))
    check_count(len(per_image), len(dataset), "validation")
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
    class: Dice, ECE, ACE and MCE, the ACE and MCE noise floors
    (:func:`calibtut.metrics.noise_floor`, label draws seeded by the run's seed), and the Brier
    score, NLL and equal-mass ECE (:func:`calibtut.metrics.image_scores`). Under
    torchrun each process scores its share of the images and rank 0 writes them all, in the
    dataset's order: the files equal a single-process evaluation's.

    Args:
        run: the run directory.
        data_dir: the dataset's folder; None takes the one the run was trained on.
        device: where to run inference (None: the best available).
        progress: show a progress bar.

    Returns:
        The run, now evaluated.

    Raises:
        ValueError: the run has not finished training, its checkpoints belong elsewhere, or it
            is a post-hoc run (the message says how to make it again).
        FileNotFoundError: the run or its data is missing.
    """
    run = run if isinstance(run, RunDir) else RunDir(run)
    recorded = run.config
    _refuse_posthoc(run, recorded)
    config = TrainConfig.from_dict(recorded)
    data = config.dataset_spec()
    if data_dir is None:
        data_dir = recorded.get("data_dir")
    here, device = start(select_device(device))
    with run.lock() if here.is_main else nullcontext():
        _evaluate(run, config, data, data_dir, device, progress, here)
    return run


def _refuse_posthoc(run: RunDir, recorded: dict) -> None:
    """A post-hoc run has no network of its own to evaluate: say how to remake it instead."""
    posthoc = recorded.get("posthoc")
    if not posthoc:
        return
    sources = [str(s.get("path", "?")) for s in recorded.get("source_runs", [])] or ["SOURCE"]
    option = {
        "temperature": "--temperature scalar",
        "vector_temperature": "--temperature vector",
        "ensemble": "--ensemble",
    }.get(posthoc, f"--{posthoc}")
    raise ValueError(
        f"{run.path} is a post-hoc run ({recorded.get('loss')}) with no network of its own: "
        f"apply the method to its source again, calibtut evaluate {' '.join(sources)} {option}"
    )


def _evaluate(
    run: RunDir,
    config: TrainConfig,
    data: DatasetSpec,
    data_dir: str | Path | None,
    device: torch.device,
    progress: bool,
    here: World,
    predictor: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> None:
    model = _best_model(run, config, data, device) if predictor is None else None
    test_ds = data.dataset(data_dir, "test", cache=False)
    mine = []
    scored = score_images(
        model,
        test_ds,
        data,
        config.num_bins,
        device,
        amp_dtype(config, device),
        progress=f"evaluate {run.name}" if progress and here.is_main else None,
        floor_seed=config.seed,
        here=here,
        predictor=predictor,
        scores=True,
    )
    for index, image_id, image, probs, target, result in scored:
        # every image's overlay, written as it is scored (by the rank that scored it): none is
        # held in memory, which a large 3D test set would not allow
        run.write_prediction(image_id, *_overlay(image, probs, target, bool(data.regions)))
        mine.append((index, (image_id, _on_cpu(result))))
    images = in_order(gather(mine, here))
    if here.is_main:
        check_count(len(images), len(test_ds), f"evaluation of {run.name}")
        channels, names = zip(*data.scored_classes, strict=True)
        results = ImageResults.cat([result for _, result in images])
        run.write_results(results, [i for i, _ in images], list(names), list(channels))
    barrier(here)


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
    best = run.best()  # both checkpoints are refused if they are another run's
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


def _overlay(
    image: torch.Tensor, probs: torch.Tensor, target: torch.Tensor, multilabel: bool
) -> tuple[np.ndarray, ...]:
    """What the overlay figures show: first input channel, label, prediction, probabilities."""
    probs, target = probs[0].cpu(), target[0].cpu()
    if multilabel:
        label, prediction = target, probs >= 0.5
    else:
        label, prediction = target.argmax(0), probs.argmax(0)
    return (
        image[0, 0].cpu().numpy(),
        label.numpy(),
        prediction.numpy(),
        probs.numpy(),
    )
