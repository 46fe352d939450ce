"""Training and evaluation loops: the paper's three losses on any dataset spec, written to a run dir.

One plain PyTorch loop that a student can read top to bottom, GPU-first:

* the network is MONAI's: the paper's ``SegResNetDS`` with deep supervision for the real
  datasets, a small ``UNet`` for the synthetic default;
* the loss is :class:`calibtut.losses.ACEDiceCELoss` (no binning for the Dice+CE baseline, hard or
  soft mL1-ACE otherwise) inside MONAI's ``DeepSupervisionLoss``;
* AdamW with a linear warm-up and a cosine decay (MONAI's ``WarmupCosineSchedule``, stepped per
  optimiser step), mixed precision on CUDA (bf16 where supported, fp16 with a ``GradScaler``
  elsewhere), ``cudnn.benchmark``, non-blocking copies, ``CacheDataset``/``ThreadDataLoader``;
* no host-device synchronisation inside a step: the loss is summed on the device and checked
  for NaN/inf only where it is logged, which raises an error naming the epoch and step;
* validation every ``val_every`` epochs (and after the last) with sliding-window inference:
  Dice, ECE, ACE and MCE per class; ``best.pt`` keeps the weights with the best validation Dice
  (what evaluation uses, as in the paper) and ``checkpoint.pt`` the last resumable state;
* evaluation on the test split writes ``per_image.csv`` and ``bins.npz`` (20 bins) through
  :class:`calibtut.runs.RunDir`, and overlay arrays for the first few test images;
* :func:`plan_run` decides whether a run directory is trained, resumed or reused (and refuses to
  replace a run of another config); :func:`train_or_reuse` acts on it.

Every epoch starts from random states derived from ``(seed, epoch)`` alone, so a run resumed
from its last checkpoint continues exactly as the uninterrupted run would have (on a CPU, or
with ``deterministic=True``).
"""

from __future__ import annotations

import dataclasses
import math
import platform
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import monai
import numpy as np
import torch
from monai.data import ThreadDataLoader
from monai.inferers import sliding_window_inference
from monai.losses import DeepSupervisionLoss
from monai.networks import one_hot
from monai.networks.nets import SegResNetDS, UNet
from monai.optimizers import WarmupCosineSchedule
from tqdm.auto import tqdm

import calibtut
from calibtut.binning import BinStats
from calibtut.data import DatasetSpec, spec
from calibtut.losses import ACEDiceCELoss
from calibtut.metrics import ImageResults, image_results
from calibtut.runs import LOSSES, RunDir, atomic_write, run_path

__all__ = [
    "Preset",
    "PRESETS",
    "NETWORKS",
    "TrainConfig",
    "Training",
    "select_device",
    "build_network",
    "build_loss",
    "train",
    "evaluate",
    "load_checkpoint",
    "is_finished",
    "RunPlan",
    "plan_run",
    "train_or_reuse",
]

BINNING = {"baseline": None, "hard": "hard", "soft": "soft"}
NETWORKS = ("segresnetds", "unet")
BEST_NAME = "best.pt"
RunPlan = Literal["train", "resume", "reuse"]


@dataclass(frozen=True)
class Preset:
    """A dataset's training hyper-parameters (patch and window sizes live in its spec)."""

    epochs: int
    lr: float
    batch_size: int = 2
    weight_decay: float = 1e-5
    warmup_epochs: int = 2
    val_every: int = 10
    network: str = "segresnetds"
    width: int = 32


# The paper's configurations (cai4cai/Average-Calibration-Losses bundles): AdamW, weight decay
# 1e-5, batch 2, 2 warm-up epochs then cosine, validation every 10 epochs, SegResNetDS with 32
# initial filters; 600 epochs at lr 2e-4 for ACDC and AMOS, 1250 at 1e-4 for KiTS and BraTS.
# The synthetic presets are sized for a laptop CPU (the demo), not taken from the paper.
PRESETS: dict[str, Preset] = {
    "acdc": Preset(epochs=600, lr=2e-4),
    "amos": Preset(epochs=600, lr=2e-4),
    "kits": Preset(epochs=1250, lr=1e-4),
    "brats": Preset(epochs=1250, lr=1e-4),
    "synthetic": Preset(epochs=20, lr=3e-3, warmup_epochs=1, val_every=4, network="unet", width=16),
    "synthetic3d": Preset(
        epochs=12, lr=3e-3, warmup_epochs=1, val_every=4, network="unet", width=8
    ),
}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a run's result. Build one with :meth:`for_dataset`.

    ``max_steps`` caps the total number of optimiser steps (smoke tests; the schedule is then
    laid over the capped length). ``patch_size``/``val_window`` override the spec's.
    ``deterministic`` turns ``cudnn.benchmark`` off and deterministic kernels on (process-wide),
    for bit-identical resumes on a GPU; on a CPU runs are deterministic anyway.
    ``save_predictions``: overlay arrays are kept for this many test images.
    """

    dataset: str
    loss: str
    seed: int
    epochs: int
    lr: float
    batch_size: int
    weight_decay: float
    warmup_epochs: int
    val_every: int
    network: str
    width: int
    patch_size: tuple[int, ...] | None = None
    val_window: tuple[int, ...] | None = None
    num_bins: int = 20
    ace_weight: float = 0.33
    dice_weight: float = 0.33
    ce_weight: float = 0.33
    empty_weight: float = 0.01
    max_steps: int | None = None
    amp: bool = True
    deterministic: bool = False
    num_workers: int = 0
    save_predictions: int = 4

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; expected one of {', '.join(LOSSES)}")
        if self.network not in NETWORKS:
            raise ValueError(
                f"unknown network {self.network!r}; expected one of {', '.join(NETWORKS)}"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        positive = ("epochs", "batch_size", "val_every", "width", "num_bins")
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.max_steps is not None and (
            not isinstance(self.max_steps, int) or self.max_steps < 1
        ):
            raise ValueError(
                f"max_steps must be a positive integer or None, got {self.max_steps!r}"
            )
        if not self.lr > 0 or self.weight_decay < 0 or self.warmup_epochs < 0:
            raise ValueError(
                f"need lr > 0, weight_decay >= 0 and warmup_epochs >= 0, got {self.lr}, "
                f"{self.weight_decay} and {self.warmup_epochs}"
            )
        for name in ("patch_size", "val_window"):
            size = getattr(self, name)
            if size is not None:
                object.__setattr__(self, name, tuple(int(s) for s in size))

    @classmethod
    def for_dataset(
        cls, dataset: str, loss: str = "baseline", seed: int = 0, **overrides: Any
    ) -> TrainConfig:
        """The dataset's preset with ``overrides`` (``None`` values keep the preset)."""
        if dataset not in PRESETS:
            raise ValueError(f"unknown dataset {dataset!r}; expected one of {', '.join(PRESETS)}")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise TypeError(f"unknown TrainConfig field(s) {unknown}")
        values = dataclasses.asdict(PRESETS[dataset])
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(dataset=dataset, loss=loss, seed=seed, **values)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """The config recorded in a run's ``config.json`` (extra keys, such as versions, ignored)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        missing = [
            f.name
            for f in dataclasses.fields(cls)
            if f.name not in values and f.default is dataclasses.MISSING
        ]
        if missing:
            raise ValueError(f"config lacks training field(s) {missing}")
        return cls(**{k: v for k, v in values.items() if k in fields})

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for name in ("patch_size", "val_window"):
            if out[name] is not None:
                out[name] = list(out[name])
        return out

    def dataset_spec(self) -> DatasetSpec:
        """The dataset's spec with this config's patch and window sizes."""
        base = spec(self.dataset)
        changes = {"patch_size": self.patch_size, "val_window": self.val_window}
        changes = {k: v for k, v in changes.items() if v is not None}
        return base.replace(**changes) if changes else base


# --- building blocks ----------------------------------------------------------------------------


def select_device(name: str | None = None) -> torch.device:
    """``name`` if given, else CUDA when present, else Apple MPS, else the CPU."""
    if name is not None:
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but CUDA is not available")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise ValueError(f"device {name!r} requested but Apple MPS is not available")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def build_network(config: TrainConfig, data: DatasetSpec) -> torch.nn.Module:
    """The paper's SegResNetDS (blocks 1-2-2-4-4, 4 deep-supervision heads) or a small UNet."""
    if config.network == "segresnetds":
        return SegResNetDS(
            spatial_dims=data.spatial_dims,
            init_filters=config.width,
            in_channels=data.in_channels,
            out_channels=data.out_channels,
            blocks_down=(1, 2, 2, 4, 4),
            norm="INSTANCE",
            dsdepth=4,
        )
    w = config.width
    return UNet(
        spatial_dims=data.spatial_dims,
        in_channels=data.in_channels,
        out_channels=data.out_channels,
        channels=(w, 2 * w, 4 * w),
        strides=(2, 2),
        num_res_units=1,
        norm="INSTANCE",
    )


def build_loss(
    config: TrainConfig, data: DatasetSpec, validate: bool = True
) -> DeepSupervisionLoss:
    """Dice+CE (+ hard or soft mL1-ACE) with the paper's weights, for one or several outputs.

    The loss sees every channel, background included (the paper's setting); ``validate=False``
    drops the input checks that would synchronise a GPU every step.
    """
    softmax = data.activation == "softmax"
    loss = ACEDiceCELoss(
        binning=BINNING[config.loss],
        ace_weight=config.ace_weight,
        dice_weight=config.dice_weight,
        ce_weight=config.ce_weight,
        num_bins=config.num_bins,
        include_background=True,
        to_onehot_y=softmax,
        softmax=softmax,
        sigmoid=not softmax,
        empty_weight=config.empty_weight,
        validate=validate,
    )
    return DeepSupervisionLoss(loss, weight_mode="exp")


def _amp_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    if not config.amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _plain_tensor(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A plain tensor on ``device``: MONAI's MetaTensor bookkeeping costs time in every op."""
    if isinstance(x, monai.data.MetaTensor):
        x = x.as_tensor()
    return x.to(device, non_blocking=True)


@dataclass
class Training:
    """The state one training step needs: network, loss, optimiser, schedule and AMP scaler."""

    model: torch.nn.Module
    loss_fn: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    device: torch.device
    amp_dtype: torch.dtype | None

    @classmethod
    def create(
        cls, config: TrainConfig, data: DatasetSpec, device: torch.device, total_steps: int
    ) -> Training:
        """Fresh weights (from ``config.seed``) and an lr schedule over ``total_steps`` steps."""
        torch.manual_seed(config.seed)
        model = build_network(config, data).to(device)
        loss_fn = build_loss(config, data, validate=device.type == "cpu").to(device)
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        steps_per_epoch = max(1, total_steps // config.epochs)
        scheduler = WarmupCosineSchedule(
            optimizer,
            warmup_steps=config.warmup_epochs * steps_per_epoch,
            t_total=total_steps,
            warmup_multiplier=0.5,
        )
        amp_dtype = _amp_dtype(config, device)
        scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
        return cls(model, loss_fn, optimizer, scheduler, scaler, device, amp_dtype)

    def step(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One optimiser step on a batch; returns the loss (still on the device, detached)."""
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(
            self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None
        ):
            outputs = self.model(images)
        # The loss runs in float32 (bins need full-precision probabilities) and on float labels
        # (deep supervision shrinks them with F.interpolate, which has no integer kernels).
        loss = self.loss_fn(outputs, labels.float())
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return loss.detach()

    def predict(
        self, image: torch.Tensor, data: DatasetSpec, sw_batch_size: int = 4
    ) -> torch.Tensor:
        """Probabilities ``(B, C, *spatial)`` by sliding-window inference over ``data.val_window``."""
        self.model.eval()
        return predict(self.model, image, data, self.amp_dtype, sw_batch_size)

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    image: torch.Tensor,
    data: DatasetSpec,
    amp_dtype: torch.dtype | None = None,
    sw_batch_size: int = 4,
) -> torch.Tensor:
    """Sliding-window probabilities of an eval-mode ``model`` (Gaussian blending, as the paper)."""
    with torch.autocast(image.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        logits = sliding_window_inference(
            image, data.val_window, sw_batch_size, model, overlap=0.25, mode="gaussian"
        )
    logits = logits.float()
    return torch.softmax(logits, 1) if data.activation == "softmax" else torch.sigmoid(logits)


def _onehot_target(label: torch.Tensor, data: DatasetSpec) -> torch.Tensor:
    """Label maps become one-hot; sigmoid (region) targets already are."""
    if data.activation == "softmax":
        return one_hot(label.long(), num_classes=data.out_channels, dtype=torch.float32)
    return label.float()


def _scored_results(
    probs: torch.Tensor, target: torch.Tensor, data: DatasetSpec, num_bins: int
) -> ImageResults:
    """Per-class results on the classes the metrics score (the paper leaves the softmax
    background out)."""
    return image_results(
        probs,
        target,
        num_bins,
        multilabel=data.activation == "sigmoid",
        include_background=data.include_background,
    )


def _scored_classes(data: DatasetSpec) -> list[tuple[int, str]]:
    start = 0 if data.include_background else 1
    return [(i, name) for i, name in enumerate(data.class_names) if i >= start]


# --- seeds, checkpoints, run states ---------------------------------------------------------------


def _seed_everything(*key: int) -> torch.Generator:
    """Seed Python, NumPy and torch from ``key`` (e.g. seed, epoch); return a torch generator."""
    state = np.random.SeedSequence(list(key)).generate_state(2)
    value = int(state[0]) << 32 | int(state[1])
    random.seed(value)
    np.random.seed(int(state[0]))
    torch.manual_seed(value)
    return torch.Generator().manual_seed(value)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint written by :func:`train`; a clear error if it is missing, corrupt or foreign."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged file
        raise ValueError(
            f"{path} is not a readable checkpoint ({type(err).__name__}: {err})"
        ) from err
    if not isinstance(state, dict) or "model" not in state or "dataset" not in state:
        raise ValueError(f"{path} is not a calibtut checkpoint (no model/dataset entries)")
    return state


def is_finished(run: RunDir) -> bool:
    """Training is complete and the test results are written."""
    if not run.is_evaluated or not run.checkpoint_path.is_file():
        return False
    return bool(load_checkpoint(run.checkpoint_path).get("finished", False))


def _clear_run(run: RunDir) -> None:
    """Remove a run's files (results first, so it never looks evaluated while half-deleted)."""
    for path in (run.per_image_path, run.bins_path, run.history_path, run.checkpoint_path):
        path.unlink(missing_ok=True)
    (run.path / BEST_NAME).unlink(missing_ok=True)
    run.config_path.unlink(missing_ok=True)
    if run.predictions_dir.is_dir():
        shutil.rmtree(run.predictions_dir)


def _run_config(
    config: TrainConfig, data: DatasetSpec, device: torch.device, data_dir: Any
) -> dict[str, Any]:
    """config.json: the training config plus what is needed to read and reproduce the run."""
    return {
        **config.to_dict(),
        "class_names": list(data.class_names),
        "scored_classes": [name for _, name in _scored_classes(data)],
        "activation": data.activation,
        "include_background": data.include_background,
        "in_channels": data.in_channels,
        "spatial_dims": data.spatial_dims,
        "spec_patch_size": list(data.patch_size),
        "spec_val_window": list(data.val_window),
        "data_dir": None if data_dir is None else str(Path(data_dir).resolve()),
        "seeding": (
            f"torch.manual_seed({config.seed}) before the weights; Python, NumPy and torch "
            f"(and the data order and augmentation) from SeedSequence([{config.seed}, epoch]) "
            "at the start of every epoch"
        ),
        "device": str(device),
        "amp_dtype": str(_amp_dtype(config, device)),
        "versions": {
            "calibtut": calibtut.__version__,
            "torch": torch.__version__,
            "monai": monai.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
    }


def _config_differences(recorded: dict[str, Any], config: TrainConfig) -> list[str]:
    """The training fields in which a run's config.json differs from ``config``, described."""
    try:
        before = TrainConfig.from_dict(recorded).to_dict()
    except (TypeError, ValueError) as err:
        return [f"its training config is unreadable: {err}"]
    return [
        f"{name}: {before[name]!r} in the run, {value!r} now"
        for name, value in config.to_dict().items()
        if before[name] != value
    ]


def plan_run(run: RunDir, config: TrainConfig, overwrite: bool = False) -> RunPlan:
    """What to do with the run directory ``run`` for ``config``, from its files alone.

    ``"train"`` (nothing to keep there, or ``overwrite``), ``"resume"`` (an interrupted run of
    this config) or ``"reuse"`` (this config, trained and evaluated). A run of another config may
    be days of GPU time: it is refused with a FileExistsError naming the differing fields, unless
    ``overwrite``. Reads only, so callers can decide every run before training any.
    """
    if overwrite or not run.config_path.is_file():
        return "train"
    differences = _config_differences(run.config, config)
    if differences:
        raise FileExistsError(
            f"{run.path} holds a run with a different config ({'; '.join(differences)}); pass "
            "overwrite=True (--overwrite) to replace it, or choose another run root"
        )
    if not run.checkpoint_path.is_file():
        return "train"
    return "reuse" if is_finished(run) else "resume"


def train_or_reuse(
    config: TrainConfig,
    data_dir: str | Path | None = None,
    run_root: str | Path = "runs",
    overwrite: bool = False,
    *,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> RunDir:
    """The finished run of ``config`` under ``run_root`` if there is one, else :func:`train` it.

    An interrupted run resumes; ``overwrite`` retrains a finished run or replaces one made with
    another config (refused otherwise, see :func:`plan_run`). Prints which it does.
    """
    run = RunDir(run_path(run_root, config.dataset, config.loss, config.seed))
    plan = plan_run(run, config, overwrite)
    if plan == "reuse":
        print(f"{run.name}: reusing the finished run in {run.path}")
        return run
    device = device if isinstance(device, torch.device) else select_device(device)
    doing = "resuming the interrupted run" if plan == "resume" else "training"
    print(f"{config.dataset}/{config.loss}/seed_{config.seed}: {doing} on {device}")
    return train(config, data_dir, run_root, device=device, overwrite=overwrite, progress=progress)


# --- training ----------------------------------------------------------------------------------


def train(
    config: TrainConfig,
    data_dir: str | Path | None = None,
    run_root: str | Path = "runs",
    *,
    run_dir: str | Path | None = None,
    device: str | torch.device | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> RunDir:
    """Train ``config`` on ``data_dir`` into ``run_root/<dataset>/<loss>/seed_<n>`` and evaluate.

    An interrupted run with the same config resumes from its last checkpoint; a finished one
    (or one made with another config) is refused unless ``overwrite`` (see :func:`plan_run`;
    :func:`train_or_reuse` reuses a finished one instead). Everything is checked
    (dataset, data folder, existing run) before anything is written.
    """
    data = config.dataset_spec()
    device = device if isinstance(device, torch.device) else select_device(device)
    run = RunDir(
        run_dir
        if run_dir is not None
        else run_path(run_root, config.dataset, config.loss, config.seed)
    )
    plan = plan_run(run, config, overwrite)
    if plan == "reuse":
        raise FileExistsError(
            f"{run.path} is a finished run; pass overwrite=True (--overwrite) to train it again"
        )
    resume = plan == "resume"

    train_ds = data.dataset(data_dir, "train")
    val_ds = data.dataset(data_dir, "val")

    if not resume:
        _clear_run(run)
        run.write_config(_run_config(config, data, device, data_dir))

    steps_per_epoch = math.ceil(len(train_ds) / config.batch_size)
    total_steps = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    training = Training.create(config, data, device, total_steps)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not config.deterministic
    if config.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)

    state = {"epoch": 0, "step": 0, "best_dice": None, "history": [], "finished": False}
    if resume:
        saved = load_checkpoint(run.checkpoint_path)
        _check_checkpoint(saved, config, run.checkpoint_path)
        training.load_state_dict(saved)
        state = {k: saved[k] for k in state}

    first_epoch = state["epoch"] + 1
    if not state["finished"]:
        epochs = tqdm(
            range(first_epoch, config.epochs + 1),
            desc=run.name,
            initial=first_epoch - 1,
            total=config.epochs,
            unit="epoch",
            disable=not progress,
        )
        for epoch in epochs:
            row = _train_epoch(training, train_ds, config, epoch, state, progress)
            epochs.set_postfix(
                loss=f"{row['train_loss']:.4f}",
                lr=f"{row['lr']:.2e}",
                s=f"{row['epoch_time_s']:.1f}",
            )
            last = epoch == config.epochs or state["step"] >= total_steps
            if epoch % config.val_every == 0 or last:
                scores = validate(training, val_ds, data, config.num_bins)
                row.update(scores)
                dice = scores["val_dice"]
                dice = -math.inf if math.isnan(dice) else dice
                if state["best_dice"] is None or dice > state["best_dice"]:
                    state["best_dice"] = dice
                    _save(
                        run.path / BEST_NAME,
                        {
                            "model": training.model.state_dict(),
                            "dataset": config.dataset,
                            "epoch": epoch,
                        },
                    )
                if progress:
                    tqdm.write(_format_scores(epoch, row))
            state["history"].append(row)
            state["epoch"] = epoch
            state["finished"] = last
            _save(
                run.checkpoint_path,
                {
                    **training.state_dict(),
                    **state,
                    "dataset": config.dataset,
                    "config": config.to_dict(),
                },
            )
            run.write_history(state["history"])
            if last:
                break
        epochs.close()
    evaluate(run, data_dir, device=device, progress=progress)
    return run


def _check_checkpoint(saved: dict[str, Any], config: TrainConfig, path: Path) -> None:
    if saved.get("dataset") != config.dataset or saved.get("config") != config.to_dict():
        raise ValueError(f"{path} was written by another run (dataset {saved.get('dataset')!r})")


def _save(path: Path, state: dict[str, Any]) -> None:
    atomic_write(path, lambda p: torch.save(state, p))


def _train_epoch(
    training: Training,
    dataset: monai.data.Dataset,
    config: TrainConfig,
    epoch: int,
    state: dict[str, Any],
    progress: bool,
) -> dict[str, Any]:
    """One pass over the training set; returns the epoch's history row."""
    generator = _seed_everything(config.seed, epoch)
    device = training.device
    loader = ThreadDataLoader(
        dataset,
        batch_size=config.batch_size,
        shuffle=True,
        num_workers=config.num_workers,
        generator=generator,
        pin_memory=device.type == "cuda",
    )
    log_every = 1 if device.type == "cpu" else 20
    loss_sum = torch.zeros((), device=device)
    steps = 0
    start = time.perf_counter()
    bar = tqdm(loader, desc=f"epoch {epoch}/{config.epochs}", leave=False, disable=not progress)
    for batch in bar:
        loss = training.step(
            _plain_tensor(batch["image"], device), _plain_tensor(batch["label"], device)
        )
        loss_sum += loss
        steps += 1
        state["step"] += 1
        if steps % log_every == 0:
            mean = _finite_loss(loss_sum / steps, epoch, state["step"])
            bar.set_postfix(loss=f"{mean:.4f}", lr=f"{training.lr:.2e}")
        if config.max_steps is not None and state["step"] >= config.max_steps:
            break
    bar.close()
    mean = _finite_loss(loss_sum / max(steps, 1), epoch, state["step"])
    return {
        "epoch": epoch,
        "step": state["step"],
        "train_loss": mean,
        "lr": training.lr,
        "epoch_time_s": time.perf_counter() - start,
    }


def _finite_loss(loss: torch.Tensor, epoch: int, step: int) -> float:
    value = float(loss)  # the one host-device synchronisation, where the loss is logged
    if not math.isfinite(value):
        raise FloatingPointError(
            f"training loss became {value} by epoch {epoch}, step {step}: lower the learning "
            "rate, check the data for NaN, or train without AMP (amp=False)"
        )
    return value


def _format_scores(epoch: int, row: dict[str, Any]) -> str:
    return (
        f"epoch {epoch}: loss {row['train_loss']:.4f}, val Dice {row['val_dice']:.4f}, "
        f"ECE {row['val_ece']:.4f}, ACE {row['val_ace']:.4f}, MCE {row['val_mce']:.4f}"
    )


def validate(
    training: Training, dataset: monai.data.Dataset, data: DatasetSpec, num_bins: int
) -> dict[str, float]:
    """Mean validation Dice/ECE/ACE/MCE over images and scored classes, and per class."""
    per_image = []
    for item in ThreadDataLoader(dataset, batch_size=1):
        probs = training.predict(_plain_tensor(item["image"], training.device), data)
        target = _onehot_target(_plain_tensor(item["label"], training.device), data)
        r = _scored_results(probs, target, data, num_bins)
        per_image.append(torch.stack([r.dice, r.errors.ece, r.errors.ace, r.errors.mce]).cpu())
    values = torch.cat(per_image, dim=1).double()  # (4 metrics, images, classes)
    scores: dict[str, float] = {}
    for m, metric in enumerate(("dice", "ece", "ace", "mce")):
        scores[f"val_{metric}"] = float(values[m].nanmean())
        per_class = values[m].nanmean(0)
        for c, (_, name) in enumerate(_scored_classes(data)):
            scores[f"val_{metric}_{name}"] = float(per_class[c])
    return scores


# --- evaluation --------------------------------------------------------------------------------


def evaluate(
    run: RunDir | str | Path,
    data_dir: str | Path | None = None,
    *,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> RunDir:
    """Test-split results of a trained run: ``per_image.csv``, ``bins.npz`` and overlays.

    Uses the best validation weights (``best.pt``), as the paper does. ``data_dir`` defaults to
    the one the run was trained on. Per image and scored class: Dice, ECE, ACE and MCE from
    :func:`calibtut.metrics.image_results`, and the bins they came from.
    """
    run = run if isinstance(run, RunDir) else RunDir(run)
    recorded = run.config
    config = TrainConfig.from_dict(recorded)
    data = config.dataset_spec()
    if data_dir is None:
        data_dir = recorded.get("data_dir")
    device = device if isinstance(device, torch.device) else select_device(device)
    checkpoint = load_checkpoint(run.checkpoint_path)
    if not checkpoint.get("finished"):
        raise ValueError(
            f"{run.path} has not finished training (epoch {checkpoint.get('epoch')} of "
            f"{config.epochs}); run train again to resume it"
        )
    best = load_checkpoint(run.path / BEST_NAME)
    for path, saved in ((run.checkpoint_path, checkpoint), (run.path / BEST_NAME, best)):
        if saved["dataset"] != config.dataset:
            raise ValueError(
                f"{path} belongs to dataset {saved['dataset']!r}, but {run.config_path} says {config.dataset!r}"
            )
    test_ds = data.dataset(data_dir, "test", cache=False)

    model = build_network(config, data).to(device)
    try:
        model.load_state_dict(best["model"])
    except RuntimeError as err:
        raise ValueError(
            f"{run.path / BEST_NAME} does not fit the {config.network} of {run.config_path}: {err}"
        ) from err
    model.eval()
    amp_dtype = _amp_dtype(config, device)
    multilabel = data.activation == "sigmoid"
    channels = [channel for channel, _ in _scored_classes(data)]
    scored_names = [name for _, name in _scored_classes(data)]
    rows: list[dict[str, Any]] = []
    bins: list[BinStats] = []
    ids: list[str] = []
    loader = ThreadDataLoader(test_ds, batch_size=1)
    for index, item in enumerate(
        tqdm(loader, desc=f"evaluate {run.name}", leave=False, disable=not progress)
    ):
        image_id = str(item["id"][0])
        image = _plain_tensor(item["image"], device)
        probs = predict(model, image, data, amp_dtype)
        target = _onehot_target(_plain_tensor(item["label"], device), data)
        result = _scored_results(probs, target, data, config.num_bins)
        image_rows = result.rows([image_id], scored_names)
        for row in image_rows:  # rows count the scored classes; the run dir, output channels
            row["class_index"] = channels[row["class_index"]]
        rows += image_rows
        bins.append(
            BinStats(
                *(
                    t.detach().cpu()
                    for t in (result.bins.pred_sum, result.bins.target_sum, result.bins.count)
                )
            )
        )
        ids.append(image_id)
        if index < config.save_predictions:
            _write_overlay(run, image_id, image, probs, target, multilabel)
    run.write_results(rows, BinStats.cat(bins), ids, scored_names, class_indices=channels)
    return run


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
