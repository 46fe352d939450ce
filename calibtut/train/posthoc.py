"""Post-hoc calibration of finished runs: temperature scaling and ensembles of seeds.

Each writes a run directory beside the runs it starts from,
``<root>/<dataset>/<loss>+<post-hoc>/seed_<n>`` (:func:`calibtut.methods.posthoc_name`), with the
same ``config.json`` (its ``loss`` the method's name), ``per_image.csv``, ``bins.npz`` and
predictions as a trained run, scored on the same test images with the same noise-floor draws: the
report, the explorers and the notebooks read it like any other run. It holds no checkpoint; its
``config.json`` names the runs it was made from (``source_runs``, with their ``run_id``).

* **Temperature scaling** (Guo et al., ICML 2017) divides the logits by ``T`` (one, or one per
  class: "vector" scaling), fitted by minimising the NLL of the *validation* images, never the
  test images. ``T > 1`` softens an overconfident network. A scalar ``T`` keeps every voxel's
  ranking of the classes, so the segmentation, hence Dice, is unchanged (a vector ``T`` can move
  the argmax). ``temperature.json`` records ``T`` and the validation NLL before and after.
* **Ensembles** (Lakshminarayanan et al., NeurIPS 2017; Mehrtash et al., IEEE TMI 2020) average
  the probabilities of several runs of one loss (different seeds): each member's sliding-window
  probabilities, then their mean.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from calibtut.methods import TRAINING_LOSSES, posthoc_name
from calibtut.runs import RunDir, atomic_write
from calibtut.train.build import amp_dtype, data_loader, plain_tensor, select_device
from calibtut.train.config import TrainConfig
from calibtut.train.evaluation import _best_model, _evaluate, window_logits

__all__ = ["fit_temperature", "temperature_scale", "ensemble", "TEMPERATURE_FILE"]

TEMPERATURE_FILE = "temperature.json"
MAX_TEMPERATURE = 100.0
"""The largest per-class temperature: a class whose logits do not predict its labels gets it."""
MAX_VOXELS_PER_IMAGE = 200_000
"""Validation voxels per image the temperature is fitted on (a random subset beyond it: a few
parameters need few voxels, and a 3D validation set's logits would not fit in memory)."""


def _nll(
    logits: torch.Tensor, labels: torch.Tensor, inverse_t: torch.Tensor, softmax: bool
) -> torch.Tensor:
    """The mean NLL of ``logits * inverse_t``: softmax cross-entropy or per-class BCE."""
    scaled = logits * inverse_t
    if softmax:
        return F.cross_entropy(scaled, labels)
    return F.binary_cross_entropy_with_logits(scaled, labels)


def fit_temperature(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    per_class: bool = False,
    softmax: bool = True,
) -> torch.Tensor:
    """The temperature(s) minimising the NLL of ``logits / T`` against ``labels``.

    The NLL is convex in ``1 / T`` (a log-sum-exp of linear functions, or a sum of softplus
    terms), so L-BFGS in float64 on ``1 / T`` finds the one minimum. Per class, that minimum can
    put a class at ``1 / T <= 0`` when its logits do not predict its labels (a barely trained
    network): the fit is then repeated with every ``T`` in ``(0, MAX_TEMPERATURE]``
    (:data:`MAX_TEMPERATURE`; that class's logit flattened), with a warning naming the class.

    Args:
        logits: ``(N, C)`` voxels' logits.
        labels: ``(N,)`` class indices (softmax) or ``(N, C)`` 0/1 regions (sigmoid).
        per_class: one temperature per class (vector scaling), else one for all.
        softmax: the NLL of a softmax over classes, else of each class's sigmoid.

    Returns:
        ``T``: shape ``(1,)``, or ``(C,)`` with ``per_class``, float64, every entry > 0.

    Raises:
        ValueError: bad shapes, no voxels, non-finite logits, or a single temperature without
            a positive minimum (the logits anti-correlate with the labels).

    Example:
        >>> import torch
        >>> z = torch.randn(4000, 3) * 4
        >>> y = torch.distributions.Categorical(logits=z / 4).sample()   # calibrated at T=4
        >>> 3 < float(fit_temperature(z, y)) < 5
        True
    """
    if logits.ndim != 2 or logits.shape[0] == 0:
        raise ValueError(
            f"logits must be (voxels, classes) with voxels > 0, got {tuple(logits.shape)}"
        )
    expected = logits.shape[:1] if softmax else logits.shape
    if labels.shape != expected:
        raise ValueError(f"labels must have shape {tuple(expected)}, got {tuple(labels.shape)}")
    if not torch.isfinite(logits).all():
        raise ValueError("logits hold NaN or infinite values: no temperature can be fitted")
    z = logits.detach().double()
    y = labels.detach().long() if softmax else labels.detach().double()
    size = z.shape[1] if per_class else 1
    beta = _lbfgs(lambda b: _nll(z, y, b, softmax), torch.ones(size, dtype=torch.float64))
    if per_class and torch.isfinite(beta).all() and (beta <= 0).any():
        bad = [int(c) for c in torch.nonzero(beta <= 0).flatten()]
        warnings.warn(
            f"the logits of class(es) {bad} do not predict their labels: their temperature is "
            f"the largest allowed, {MAX_TEMPERATURE:g}",
            stacklevel=2,
        )
        low = 1.0 / MAX_TEMPERATURE  # 1/T = low + exp(theta): every T in (0, MAX_TEMPERATURE]
        start = (beta.clamp(min=2 * low) - low).log()
        theta = _lbfgs(lambda t: _nll(z, y, low + t.exp(), softmax), start)
        beta = low + theta.exp()
    if not torch.isfinite(beta).all() or (beta <= 0).any():
        raise ValueError(
            f"the NLL has no minimum at a positive temperature (1/T = {beta.tolist()}): the "
            "logits do not predict the labels"
        )
    return 1.0 / beta


def _lbfgs(objective, start: torch.Tensor) -> torch.Tensor:
    """The minimiser of ``objective`` from ``start`` by L-BFGS (float64, strong Wolfe)."""
    x = start.clone().requires_grad_()
    optimiser = torch.optim.LBFGS(
        [x], lr=1, max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-14,
        line_search_fn="strong_wolfe",
    )  # fmt: skip

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = objective(x)
        loss.backward()
        return loss

    optimiser.step(closure)
    return x.detach()


def _validation_logits(
    model: torch.nn.Module, config: TrainConfig, data: Any, data_dir: Any, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The validation voxels' logits ``(N, C)`` and labels (at most
    :data:`MAX_VOXELS_PER_IMAGE` per image, a random subset seeded by the run's seed)."""
    softmax = data.activation == "softmax"
    generator = torch.Generator().manual_seed(config.seed)
    amp = amp_dtype(config, device)
    logits, labels, images = [], [], 0
    for item in data_loader(data.dataset(data_dir, "val", cache=False), batch_size=1):
        image = plain_tensor(item["image"], device)
        z = window_logits(model, image, data, amp)[0].flatten(1).T.cpu()  # (voxels, C)
        label = plain_tensor(item["label"], torch.device("cpu"))[0].flatten(1).T
        y = label[:, 0].long() if softmax else label.float()
        if z.shape[0] > MAX_VOXELS_PER_IMAGE:
            keep = torch.randperm(z.shape[0], generator=generator)[:MAX_VOXELS_PER_IMAGE]
            z, y = z[keep], y[keep]
        logits.append(z)
        labels.append(y)
        images += 1
    if not images:
        raise ValueError("the run's dataset has no validation images to fit a temperature on")
    return torch.cat(logits), torch.cat(labels), images


def _source(path: RunDir | str | Path) -> tuple[RunDir, TrainConfig]:
    run = path if isinstance(path, RunDir) else RunDir(path)
    recorded = run.config
    if recorded.get("loss") not in TRAINING_LOSSES:
        raise ValueError(
            f"{run.path} is a {recorded.get('loss')!r} run: post-hoc methods apply to runs of a "
            f"training loss ({', '.join(TRAINING_LOSSES)})"
        )
    return run, TrainConfig.from_dict(recorded)


def _posthoc_run(source: RunDir, name: str, extra: dict[str, Any], sources: Sequence[RunDir]):
    """The post-hoc run directory beside ``source`` (``<dataset>/<name>/seed_<n>``), its
    config.json written: the source's, named ``name``, with where it came from."""
    run = RunDir(source.path.parent.parent / name / source.path.name)
    config = {k: v for k, v in source.config.items() if k != "run_id"}
    config.update(
        loss=name,
        posthoc=name.split("+", 1)[1],
        trained_loss=config["loss"],
        source_runs=[{"path": str(r.path.resolve()), "run_id": r.run_id} for r in sources],
        **extra,
    )
    return run, config


def temperature_scale(
    run: RunDir | str | Path,
    data_dir: str | Path | None = None,
    *,
    per_class: bool = False,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> RunDir:
    """Fit a temperature on ``run``'s validation images and evaluate the scaled run on the test.

    Args:
        run: a finished run of a training loss.
        data_dir: the dataset's folder (None: the one the run was trained on).
        per_class: one temperature per output channel (``<loss>+vector_temperature``), else one
            (``<loss>+temperature``).
        device: where inference runs.
        progress: a progress bar while scoring.

    Returns:
        The new run, ``<dataset>/<loss>+temperature/seed_<n>`` beside ``run``, evaluated, with
        ``temperature.json`` (``temperature``, ``val_nll_before``/``after``, ``val_images``,
        ``val_voxels``).

    Raises:
        ValueError: ``run`` is not a finished run of a training loss, or the fit fails.
    """
    source, config = _source(run)
    data = config.dataset_spec()
    data_dir = source.config.get("data_dir") if data_dir is None else data_dir
    device = select_device(device)
    model = _best_model(source, config, data, device).eval()
    softmax = data.activation == "softmax"
    logits, labels, images = _validation_logits(model, config, data, data_dir, device)
    t = fit_temperature(logits, labels, per_class=per_class, softmax=softmax)
    with torch.no_grad():
        z, y = logits.double(), labels if softmax else labels.double()
        before = float(_nll(z, y, torch.ones(1, dtype=torch.float64), softmax))
        after = float(_nll(z, y, 1 / t, softmax))
    name = posthoc_name(config.loss, "vector_temperature" if per_class else "temperature")
    fitted = {
        "temperature": t.tolist(),
        "fitted_on": "validation",
        "val_images": images,
        "val_voxels": int(logits.shape[0]),
        "val_nll_before": before,
        "val_nll_after": after,
    }
    out, out_config = _posthoc_run(source, name, {"temperature": t.tolist()}, [source])
    scale = t.float().to(device).view(1, -1, *([1] * data.spatial_dims))
    amp = amp_dtype(config, device)

    def predictor(image: torch.Tensor) -> torch.Tensor:
        z = window_logits(model, image, data, amp) / scale
        return torch.softmax(z, 1) if softmax else torch.sigmoid(z)

    with out.lock():
        out.clear()
        out.write_config(out_config)
        text = json.dumps({**fitted, "run_id": out.run_id}, indent=2) + "\n"
        atomic_write(out.path / TEMPERATURE_FILE, lambda p: p.write_text(text))
        _evaluate(out, config, data, data_dir, device, progress, _single(), predictor)
    return out


def ensemble(
    runs: Sequence[RunDir | str | Path],
    data_dir: str | Path | None = None,
    *,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> RunDir:
    """Evaluate the mean of several runs' probabilities (runs of one loss and dataset, e.g.
    several seeds) on the test images.

    Args:
        runs: two or more finished runs of the same loss, dataset and activation.
        data_dir: the dataset's folder (None: the one the first run was trained on).
        device: where inference runs.
        progress: a progress bar while scoring.

    Returns:
        The new run ``<dataset>/<loss>+ensemble/seed_<first member's seed>`` beside the first
        run, evaluated; its noise floors drawn as the first member's.

    Raises:
        ValueError: fewer than two runs, runs that do not belong together, or unfinished runs.
    """
    members = [_source(run) for run in runs]
    if len({m.path.resolve() for m, _ in members}) < 2:
        raise ValueError(f"an ensemble needs two or more different runs, got {len(members)}")
    first, config = members[0]
    for member, other in members[1:]:
        for field in ("dataset", "loss", "activation"):
            if getattr(other, field) != getattr(config, field):
                raise ValueError(
                    f"{member.path} has {field} {getattr(other, field)!r} where {first.path} has "
                    f"{getattr(config, field)!r}: an ensemble averages runs of one loss"
                )
    data = config.dataset_spec()
    data_dir = first.config.get("data_dir") if data_dir is None else data_dir
    device = select_device(device)
    models = [_best_model(run, cfg, data, device).eval() for run, cfg in members]
    softmax = data.activation == "softmax"
    amps = [amp_dtype(cfg, device) for _, cfg in members]
    name = posthoc_name(config.loss, "ensemble")
    seeds = [cfg.seed for _, cfg in members]
    out, out_config = _posthoc_run(first, name, {"member_seeds": seeds}, [m for m, _ in members])

    def predictor(image: torch.Tensor) -> torch.Tensor:
        total = None
        for model, amp in zip(models, amps, strict=True):
            z = window_logits(model, image, data, amp)
            p = torch.softmax(z, 1) if softmax else torch.sigmoid(z)
            total = p if total is None else total + p
        return total / len(models)

    with out.lock():
        out.clear()
        out.write_config(out_config)
        _evaluate(out, config, data, data_dir, device, progress, _single(), predictor)
    return out


def _single():
    from calibtut.train.distributed import SINGLE

    return SINGLE
