"""The building blocks of a run: the device, the network, the loss and the optimiser state.

The network is MONAI's: the paper's ``SegResNetDS`` with deep supervision for the real datasets,
a small ``UNet`` for the synthetic default. The loss is :class:`calibtut.losses.ACEDiceCELoss`
(no binning for the Dice+CE baseline, hard or soft mL1-ACE, or MDCA: mL1-ACE with one bin), or
:class:`calibtut.losses.DiceCalibrationLoss` (focal, label smoothing, NACL, SVLS, MbLS in place
of the CE), inside MONAI's ``DeepSupervisionLoss``. AdamW with a linear warm-up and a cosine decay (MONAI's
``WarmupCosineSchedule``, stepped per optimiser step); mixed precision on CUDA (bf16 where
supported, fp16 with a ``GradScaler`` elsewhere).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from typing import Any

import monai
import torch
from monai.data import ThreadBuffer, ThreadDataLoader
from monai.losses import DeepSupervisionLoss
from monai.networks.nets import SegResNetDS, UNet
from monai.optimizers import WarmupCosineSchedule
from tqdm.std import tqdm

from calibtut.data import DatasetSpec
from calibtut.losses import TERMS, ACEDiceCELoss, DiceCalibrationLoss
from calibtut.train.config import TrainConfig

__all__ = [
    "BINNING",
    "MDCA_BINS",
    "select_device",
    "build_network",
    "check_sizes",
    "build_loss",
    "amp_dtype",
    "data_loader",
    "check_count",
    "progress_bar",
    "Training",
]

BINNING = {"baseline": None, "hard": "hard", "soft": "soft", "mdca": "hard"}
"""The mL1-ACE binning each :class:`~calibtut.losses.ACEDiceCELoss` loss adds to Dice+CE (None:
the baseline); the other losses are :class:`~calibtut.losses.DiceCalibrationLoss` terms."""

MDCA_BINS = 1
"""MDCA (Hebbalaguppe et al., CVPR 2022) is mL1-ACE with a single bin: per image and class,
``|mean probability - share of the class's voxels|``. One bin holds every voxel, so it asks only
that the confidence be right on average; many bins ask it of every confidence level."""


def select_device(name: str | torch.device | None = None) -> torch.device:
    """``name`` if given, else CUDA when present, else Apple MPS, else the CPU.

    Raises:
        ValueError: the named device does not exist here.
    """
    if isinstance(name, torch.device):
        return name
    if name is not None:
        if not isinstance(name, str) or not re.fullmatch(r"cpu|mps|cuda(:\d+)?", name):
            hint = f" (did you mean {name.lower()!r}?)" if isinstance(name, str) and re.fullmatch(
                r"cpu|mps|cuda(:\d+)?", name.lower()) else ""  # fmt: skip
            raise ValueError(f"device must be cpu, cuda, cuda:N or mps, got {name!r}{hint}")
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


def downsampling(config: TrainConfig) -> int:
    """The factor every patch and window size must be a multiple of for the network: 16 for the
    paper's SegResNetDS (four halvings), 4 for the small UNet (two)."""
    return 16 if config.network == "segresnetds" else 4


def check_sizes(config: TrainConfig, data: DatasetSpec) -> None:
    """Refuse, before anything trains, a patch or window the network cannot take.

    Raises:
        ValueError: a size is not a multiple of the network's downsampling, naming the sizes
            that would work.
    """
    factor = downsampling(config)
    for what, option, size in (
        ("patch_size", "--patch-size", data.patch_size),
        ("val_window", "--val-window", data.val_window),
    ):
        if any(s % factor for s in size):
            fitted = " ".join(str(max(factor, round(s / factor) * factor)) for s in size)
            raise ValueError(
                f"{what} {' '.join(map(str, size))} does not fit the {config.network}, which "
                f"halves each size {factor.bit_length() - 1} times: every size must be a "
                f"multiple of {factor} (e.g. {option} {fitted})"
            )


def build_loss(
    config: TrainConfig, data: DatasetSpec, validate: bool = True
) -> DeepSupervisionLoss:
    """``config.loss`` with the paper's weights, for one or several outputs: Dice+CE (+ hard or
    soft mL1-ACE, + MDCA, one bin), or Dice + a calibration term in place of the CE, weighted as
    the CE (``ce_weight``) with ``config.loss_options``.

    The loss sees every channel, background included (the paper's setting); ``validate=False``
    drops the input checks that would synchronise a GPU every step.

    Raises:
        ValueError: a softmax-only loss on a sigmoid (per-region) dataset, or a bad option.
    """
    softmax = data.activation == "softmax"
    if config.loss in TERMS:
        if not softmax:
            raise ValueError(
                f"the {config.loss} loss is defined for a softmax over exclusive labels, not the "
                f"sigmoid regions of {data.name}: train it with --activation softmax"
            )
        term = DiceCalibrationLoss(
            config.loss,
            dice_weight=config.dice_weight,
            term_weight=config.ce_weight,
            to_onehot_y=True,
            validate=validate,
            **dict(config.loss_options),
        )
        return DeepSupervisionLoss(term, weight_mode="exp")
    loss = ACEDiceCELoss(
        binning=BINNING[config.loss],
        ace_weight=config.ace_weight,
        dice_weight=config.dice_weight,
        ce_weight=config.ce_weight,
        num_bins=MDCA_BINS if config.loss == "mdca" else config.num_bins,
        include_background=True,
        to_onehot_y=softmax,
        softmax=softmax,
        sigmoid=not softmax,
        empty_weight=config.empty_weight,
        validate=validate,
    )
    return DeepSupervisionLoss(loss, weight_mode="exp")


def amp_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype: bf16 (or fp16) on CUDA with ``config.amp``, else None (float32)."""
    if not config.amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def plain_tensor(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A plain tensor on ``device``: MONAI's MetaTensor bookkeeping costs time in every op."""
    if isinstance(x, monai.data.MetaTensor):
        x = x.as_tensor()
    return x.to(device, non_blocking=True)


class _ErrorPassingBuffer(ThreadBuffer):
    """MONAI's ThreadBuffer, but an error while loading reaches the loop that iterates.

    MONAI 1.6's ThreadBuffer lets its loading thread die on an exception and the iteration
    simply ends: an epoch, a validation or an evaluation would quietly see fewer images.
    """

    def enqueue_values(self) -> None:
        try:
            super().enqueue_values()
        except BaseException as err:  # handed to the consumer, which raises it
            self.error = err

    def __iter__(self):
        self.error: BaseException | None = None
        yield from super().__iter__()
        if self.error is not None:
            raise self.error


class _Loader(ThreadDataLoader):
    """A ThreadDataLoader whose loading errors are raised where it is iterated."""

    def __iter__(self):
        source = super(ThreadDataLoader, self).__iter__()  # the plain DataLoader's batches
        for batch in _ErrorPassingBuffer(source, self.buffer_size, self.buffer_timeout):
            for _ in range(self.repeats):
                yield batch


def data_loader(dataset: monai.data.Dataset, **kwargs: Any) -> ThreadDataLoader:
    """MONAI's ``ThreadDataLoader`` over ``dataset`` (batches prepared while the step runs),
    raising any error of a case where the loop iterates, not losing it in its thread."""
    return _Loader(dataset, **kwargs)


def check_count(seen: int, expected: int, what: str) -> None:
    """Refuse results that rest on fewer (or more) images than the split holds.

    Raises:
        RuntimeError: naming what was counted.
    """
    if seen != expected:
        raise RuntimeError(
            f"{what} saw {seen} images where the split holds {expected}: refusing to present "
            "results that do not rest on every image"
        )


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
        cls,
        config: TrainConfig,
        data: DatasetSpec,
        device: torch.device,
        total_steps: int,
        distributed: bool = False,
    ) -> Training:
        """Fresh weights (from ``config.seed``, the same on every rank) and an lr schedule over
        ``total_steps`` steps; ``distributed`` wraps the network in DistributedDataParallel,
        which averages the gradients of all ranks at every step."""
        torch.manual_seed(config.seed)
        model = build_network(config, data).to(device)
        if distributed:
            ids = [device.index] if device.type == "cuda" else None
            model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
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
        dtype = amp_dtype(config, device)
        scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
        return cls(model, loss_fn, optimizer, scheduler, scaler, device, dtype)

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

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    @property
    def network(self) -> torch.nn.Module:
        """The network itself (unwrapped from DistributedDataParallel): what inference runs
        and checkpoints keep, so that they load in a single process."""
        model = self.model
        return (
            model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.network.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])


def progress_bar(iterable: Any = None, **options: Any) -> tqdm:
    """A tqdm text bar on stdout. It updates in place in a terminal and in Jupyter alike, and a
    saved notebook keeps its last state (100 %), where a widget bar would show its first (0 %).
    """
    return tqdm(iterable, file=sys.stdout, **options)
