"""The command line: ``calibtut demo | train | evaluate | report | phantom`` (also ``python -m calibtut``).

Bad input (an unknown dataset or loss, a data folder that does not match the dataset, a run of
another dataset, a corrupt checkpoint, a finished run without ``--overwrite``) ends with one line
on stderr and exit status 2, before anything is written.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

__all__ = ["main", "demo", "build_parser"]

# What bad input raises (an unreadable or misplaced file is the user's: PermissionError names
# it; a locked run names its owner); anything else is a bug and keeps its traceback.
USER_ERRORS = (
    ValueError,
    FileNotFoundError,
    FileExistsError,
    FloatingPointError,
    PermissionError,
    NotADirectoryError,
    IsADirectoryError,
)
DEMO_DATASET = "synthetic"


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from calibtut.data import DATASETS
    from calibtut.methods import TRAINING_LOSSES
    from calibtut.train.config import ACTIVATIONS

    parser = _Parser(prog="calibtut", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = commands.add_parser(
        "demo", help="train baseline, hard and soft on the synthetic data and report"
    )
    p.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 of each loss (default 1)")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="run root and report folder")
    p.add_argument("--epochs", type=int, help="override the synthetic preset's epochs")
    p.add_argument("--jobs", type=int, help="runs trained at once on a CPU (default: one per core)")
    p.add_argument("--device", help="cuda, mps or cpu (default: the best available)")
    p.add_argument("--overwrite", action="store_true", help="retrain finished runs")

    p = commands.add_parser("train", help="train one run and evaluate it on the test split")
    p.add_argument("--dataset", required=True, help=", ".join(DATASETS))
    p.add_argument("--data-dir", type=Path, help="the dataset's folder (none for synthetic)")
    p.add_argument("--loss", choices=TRAINING_LOSSES, default="baseline")
    p.add_argument(
        "--loss-option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an option of the loss, e.g. gamma=2 for focal (default: the literature's)",
    )
    p.add_argument(
        "--activation",
        choices=ACTIVATIONS,
        help="softmax over the exclusive labels (default, the paper) or sigmoid per region",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--val-every", type=int)
    p.add_argument("--patch-size", type=int, nargs="+", help="override the spec's training patch")
    p.add_argument("--val-window", type=int, nargs="+", help="override the sliding window")
    p.add_argument("--width", type=int, help="filters of the network's first level")
    p.add_argument("--max-steps", type=int, help="stop after this many optimiser steps (smoke)")
    p.add_argument("--num-workers", type=int, help="data loader workers (default 0)")
    p.add_argument("--no-amp", action="store_true", help="train in float32 on CUDA")
    p.add_argument("--deterministic", action="store_true", help="deterministic GPU kernels")
    p.add_argument("--run-root", type=Path, default=Path("runs"))
    p.add_argument("--device", help="cuda, mps or cpu (default: the best available)")
    p.add_argument("--overwrite", action="store_true", help="replace a finished or different run")

    p = commands.add_parser(
        "evaluate",
        help="(re-)evaluate a trained run on the test split, or apply a post-hoc method",
    )
    p.add_argument("run_dir", type=Path, nargs="+", help="a run (several with --ensemble)")
    p.add_argument("--data-dir", type=Path, help="default: the folder the run was trained on")
    p.add_argument("--device")
    posthoc = p.add_mutually_exclusive_group()
    posthoc.add_argument(
        "--temperature",
        choices=("scalar", "vector"),
        help="fit a temperature (one, or one per class) on the validation images; writes the "
        "run <loss>+temperature (or +vector_temperature) beside the run",
    )
    posthoc.add_argument(
        "--ensemble",
        action="store_true",
        help="average the probabilities of the given runs (seeds of one loss); writes the run "
        "<loss>+ensemble beside them",
    )

    p = commands.add_parser("report", help="compare runs: Markdown + CSV table and figures")
    p.add_argument("runs", type=Path, nargs="+", help="run directories or folders of runs")
    p.add_argument("--out", type=Path, required=True)

    p = commands.add_parser("phantom", help="write a small phantom of a dataset in its real layout")
    p.add_argument("dataset")
    p.add_argument("dir", type=Path)
    p.add_argument("--cases", type=int)
    p.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():  # a warning is one line too (e.g. runs left out)
            warnings.showwarning = lambda message, *_, **__: print(
                f"calibtut {args.command}: warning: {message}", file=sys.stderr
            )
            return _COMMANDS[args.command](args)
    except Exception as err:
        if not _is_user_error(err):
            raise
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"calibtut {args.command}: error: {first_line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"calibtut {args.command}: interrupted (a training run resumes where it stopped)",
            file=sys.stderr,
        )
        return 130


def _is_user_error(err: Exception) -> bool:
    from calibtut.runs import RunLockedError  # imported only now: --help stays torch-free

    return isinstance(err, (*USER_ERRORS, RunLockedError))


# --- commands ----------------------------------------------------------------------------------


def _train(args: argparse.Namespace) -> int:
    from calibtut.report import report_markdown, report_table
    from calibtut.train import TrainConfig, train

    config = TrainConfig.for_dataset(
        args.dataset,
        args.loss,
        args.seed,
        loss_options=_loss_options(args.loss_option),
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        val_every=args.val_every,
        patch_size=args.patch_size,
        val_window=args.val_window,
        width=args.width,
        activation=args.activation,
        max_steps=args.max_steps,
        num_workers=args.num_workers,
        amp=False if args.no_amp else None,
        deterministic=True if args.deterministic else None,
    )
    run = train(config, args.data_dir, args.run_root, device=args.device, overwrite=args.overwrite)
    print(report_markdown(report_table([run])))
    print(f"run written to {run.path}")
    return 0


def _loss_options(items: Sequence[str]) -> dict[str, float]:
    """``--loss-option NAME=VALUE`` pairs as numbers (integers stay integers)."""
    options: dict[str, float] = {}
    for item in items:
        name, sep, text = item.partition("=")
        try:
            value = float(text) if sep else None
        except ValueError:
            value = None
        if not name or value is None:
            raise ValueError(f"--loss-option takes NAME=NUMBER, got {item!r}")
        options[name.strip()] = int(value) if value.is_integer() and "." not in text else value
    return options


def _evaluate(args: argparse.Namespace) -> int:
    from calibtut.report import report_markdown, report_table
    from calibtut.train import evaluate
    from calibtut.train.posthoc import ensemble, temperature_scale

    if args.ensemble:
        run = ensemble(args.run_dir, args.data_dir, device=args.device)
    elif len(args.run_dir) > 1:
        raise ValueError(
            f"evaluate takes one run, got {len(args.run_dir)}: pass --ensemble to average them"
        )
    elif args.temperature:
        run = temperature_scale(
            args.run_dir[0], args.data_dir, per_class=args.temperature == "vector",
            device=args.device,
        )  # fmt: skip
    else:
        run = evaluate(args.run_dir[0], args.data_dir, device=args.device)
    print(report_markdown(report_table([run])))
    print(f"results written to {run.per_image_path} and {run.bins_path}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from calibtut.report import report_markdown, write_report

    table = write_report(args.runs, args.out)
    print(report_markdown(table))
    print(f"report written to {args.out / 'report.md'}")
    return 0


def _phantom(args: argparse.Namespace) -> int:
    from calibtut.data import write_phantom

    root = write_phantom(args.dataset, args.dir, cases=args.cases, seed=args.seed)
    print(f"{args.dataset} phantom written to {root}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    demo(
        args.seeds,
        args.out,
        epochs=args.epochs,
        jobs=args.jobs,
        device=args.device,
        overwrite=args.overwrite,
    )
    return 0


_COMMANDS = {
    "demo": _demo,
    "train": _train,
    "evaluate": _evaluate,
    "report": _report,
    "phantom": _phantom,
}


# --- the demo ----------------------------------------------------------------------------------


def demo(
    seeds: int = 1,
    out: str | Path = "runs/demo",
    *,
    epochs: int | None = None,
    jobs: int | None = None,
    device: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Train baseline, hard and soft on the synthetic data for ``seeds`` seeds, then report.

    Finished runs with the same config are reused (``overwrite`` retrains them) and a run of
    another config is refused before anything trains (:func:`calibtut.train.train_many`). On a
    CPU the runs train side by side, one process and one thread per core. Returns ``report.md``.
    """
    from calibtut.methods import LOSSES
    from calibtut.report import report_markdown, seed_markdown, seed_table, write_report
    from calibtut.runs import resolve_runs, run_path
    from calibtut.train import TrainConfig, train_many

    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"--seeds must be a positive integer, got {seeds!r}")
    if jobs is not None and (isinstance(jobs, bool) or jobs < 1):
        raise ValueError(f"--jobs must be a positive integer, got {jobs}")
    out = Path(out)
    start = time.perf_counter()
    configs = [
        TrainConfig.for_dataset(DEMO_DATASET, loss, seed, epochs=epochs)
        for seed in range(seeds)
        for loss in LOSSES
    ]
    print(f"{len(configs)} runs into {out}")
    train_many(configs, None, out, device=device, overwrite=overwrite, jobs=jobs, progress=False)
    runs = [run_path(out, c.dataset, c.loss, c.seed) for c in configs]
    table = write_report(runs, out)
    print()
    print(report_markdown(table))
    by_seed = seed_table(resolve_runs(runs))
    if not by_seed.empty:
        print(seed_markdown(by_seed))
    report = out / "report.md"
    print(f"report written to {report} ({time.perf_counter() - start:.0f} s in all)")
    return report
