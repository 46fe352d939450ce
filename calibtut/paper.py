"""The paper's published per-image results, and the statistics of its published analyses.

Barfoot et al., "Average Calibration Losses for Reliable Uncertainty in Medical Image
Segmentation", arXiv 2506.03942 (https://arxiv.org/abs/2506.03942); journal version: IEEE
Transactions on Medical Imaging (2026), doi:10.1109/TMI.2026.3673118. The authors published the
per-image test results of their twelve main runs (ACDC, AMOS, KiTS23, BraTS21 x Dice+CE baseline,
+ hard mL1-ACE, + soft mL1-ACE) in `cai4cai/Average-Calibration-Losses`, with the scripts of their
analyses in its ``results_scripts/``. This module reads the results, from a local copy or from that
repository (cached), and calibtut's own run directories into one per-image *frame*, and reproduces
those analyses from any frame, so a user's runs and the paper sit in one table and one plot:

- the main table (``calc_percentage_change.py``): :func:`percentage_change_table`;
- its significance test (``calc_p_vals.py``): the paired t-test, ``p_value`` of that table, with
  the Wilcoxon signed-rank test beside it (``p_wilcoxon``) as a robustness check;
- the same table on the test images whose ground truth holds every class
  (``calc_percentage_change_complete_cases.py``): :func:`complete_cases_table`;
- the count of test images lacking each class (``count_empty_classes.py``):
  :func:`missing_classes_report`.

The frame is a long DataFrame with one row per image and metric (:data:`FRAME_COLUMNS`):
``source`` ("paper" or a name for the user's runs), ``dataset``, ``loss`` (baseline/hard/soft),
``seed``, ``image_id``, ``metric`` (:data:`METRICS`: the per-image class means ``ace``, ``ece``,
``mce`` and ``dice``, which the paper's files call ``macro_*`` and ``mean_dice``) and ``value``.

How the paper gets a per-image value, read off its files: each ``<metric>_raw.csv`` holds one row
per test image with one column per class and a ``mean`` column, which is what the table uses.
Calibration errors are defined for every class, so their ``mean`` averages all classes, including
classes absent from the image's ground truth. Dice is NaN for a class whose ground truth is empty
and the ``mean`` is the mean over the remaining classes (e.g. AMOS: 15 NaN Dice values, exactly the
15 classes flagged in ``missing_classes_raw.csv``; in KiTS and BraTS the flags index the raw label
values, not the overlapping region channels that the metrics score, so they do not line up with the
metric columns and are not used for them). :func:`runs_frame` applies the same convention to a
run's ``per_image.csv`` (:func:`calibtut.runs.image_means`).

Example:
    >>> from calibtut import paper
    >>> table = paper.percentage_change_table()          # downloads the files once (cached)
    >>> table = paper.percentage_change_table("path/to/Average-Calibration-Losses")  # a local copy
    >>> table.query("dataset == 'acdc' and metric == 'ace'")[["loss", "mean", "std", "p_value"]]
"""

from __future__ import annotations

import csv
import hashlib
import http.client
import io
import math
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from scipy.stats import ttest_rel, wilcoxon

from calibtut.methods import COMPARED_LOSSES, LOSSES, METHODS
from calibtut.metrics import METRIC_TITLES
from calibtut.runs import RunDir, find_runs, image_means, resolve_runs

PAPER_REPOSITORY = "cai4cai/Average-Calibration-Losses"
# The commit the results were published at: pinned, so a cached file never goes stale.
PAPER_COMMIT = "5ad8418632b2e2afe683a015d87541d52433f702"
PAPER_BASE_URL = f"https://raw.githubusercontent.com/{PAPER_REPOSITORY}/{PAPER_COMMIT}/"
PAPER_URL_VARIABLE = "CALIBTUT_PAPER_URL"
"""The environment variable that, when set, replaces :data:`PAPER_BASE_URL` (e.g. a mirror)."""
PAPER_SEED = 12345
T = TypeVar("T")

# calibtut name -> (paper name, bundle tag of the paper's main-table run)
PAPER_DATASETS = {
    "acdc": ("acdc17", "1"),
    "amos": ("amos22", "nl"),
    "kits": ("kits23", "nl"),
    "brats": ("brats21", "nl"),
}
PAPER_LOSSES = {"baseline": "baseline", "hard": "hardl1ace", "soft": "softl1ace"}
PAPER_METRICS = {"ace": "macro_ace", "ece": "macro_ece", "mce": "macro_mce", "dice": "mean_dice"}
"""Frame metric -> the stem of the paper's per-image file of it."""
# Files read_paper_csv can load: the metrics, plus the ground-truth-absent flags.
PAPER_FILES = {**PAPER_METRICS, "missing_classes": "missing_classes"}

RESULTS_FOLDER = "inference_results"
"""The folder of a run's per-image results on every test image."""
COMPLETE_CASES_FOLDER = "inference_results_complete_cases_only"
"""The folder of a run's results on the test images whose ground truth holds every class."""
COMPLETE_CASES_DATASETS = ("amos", "kits", "brats")
"""The datasets with a :data:`COMPLETE_CASES_FOLDER`. ACDC has none: every test image is complete,
so its complete-case results are its full results (as the authors' script falls back to them)."""
PAPER_FLAG_CLASSES = {
    "acdc": ("right_ventricle", "myocardium", "left_ventricle"),
    "amos": (
        "spleen", "right_kidney", "left_kidney", "gallbladder", "esophagus", "liver", "stomach",
        "aorta", "inferior_vena_cava", "pancreas", "right_adrenal_gland", "left_adrenal_gland",
        "duodenum", "bladder", "prostate/uterus",
    ),
    "kits": ("kidney", "tumour", "cyst"),
    "brats": ("Necrotic Tumour Core", "Peritumoral Edema", "Enhancing Tumour"),
}  # fmt: skip
"""Per dataset, the classes that the columns of ``missing_classes_raw.csv`` flag, as the authors'
``count_empty_classes.py`` names them (KiTS and BraTS: the raw labels, not the scored regions)."""

METRICS = tuple(PAPER_METRICS)
# Tables list the paper's metrics in its order, then any other per-image metric of a frame.
_METRIC_ORDER = [*METRICS, *(m for m in METRIC_TITLES if m not in METRICS)]
FRAME_COLUMNS = ("source", "dataset", "loss", "seed", "image_id", "metric", "value")
TABLE_COLUMNS = (
    "source", "dataset", "metric", "loss", "mean", "std", "n", "p_value", "p_wilcoxon",
)  # fmt: skip

_CONFIG_KEYS = ("dataset", "loss", "seed", "class_names")
_DOWNLOAD_TIMEOUT_S = 30.0
_LOCAL_COPY_HINT = (
    f"To use a local copy of {PAPER_REPOSITORY} (a clone, or a copy of its bundles/ folder "
    "layout), pass root= to calibtut.paper's functions, or set the paper_root parameter of "
    "notebooks 04-07 and 09."
)


def _choose(kind: str, name: str, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if name not in choices:
        raise ValueError(f"unknown {kind} {name!r}; expected one of {', '.join(choices)}")
    return name


# --- loading the paper's files ------------------------------------------------------------------


def paper_relative_path(
    dataset: str, loss: str, metric: str, *, complete_cases: bool = False
) -> str:
    """Path of one results file inside the authors' repository (and any copy of its layout).

    Args:
        dataset: acdc, amos, kits or brats.
        loss: baseline, hard or soft.
        metric: one of :data:`METRICS`, or ``"missing_classes"`` (the ground-truth-absent flags).
        complete_cases: the file of the test images whose ground truth holds every class
            (:data:`COMPLETE_CASES_FOLDER`); for ACDC, which has no such folder because every
            image is complete, the full results (:data:`COMPLETE_CASES_DATASETS`).

    Returns:
        ``bundles/<paper dataset>_<paper loss>_dice_ce_<tag>/seed_12345/<folder>/<stem>_raw.csv``.

    Raises:
        ValueError: an unknown dataset, loss or metric.

    Example:
        >>> paper_relative_path("acdc", "soft", "dice")
        'bundles/acdc17_softl1ace_dice_ce_1/seed_12345/inference_results/mean_dice_raw.csv'
    """
    paper_dataset, tag = PAPER_DATASETS[_choose("dataset", dataset, PAPER_DATASETS)]
    paper_loss = PAPER_LOSSES[_choose("loss", loss, PAPER_LOSSES)]
    stem = PAPER_FILES[_choose("metric", metric, PAPER_FILES)]
    folder = (
        COMPLETE_CASES_FOLDER
        if complete_cases and dataset in COMPLETE_CASES_DATASETS
        else RESULTS_FOLDER
    )
    bundle = f"{paper_dataset}_{paper_loss}_dice_ce_{tag}"
    return f"bundles/{bundle}/seed_{PAPER_SEED}/{folder}/{stem}_raw.csv"


def default_cache_dir() -> Path:
    """Where downloaded paper files are kept: ``$CALIBTUT_CACHE/paper-results``.

    ``CALIBTUT_CACHE`` defaults to ``~/.cache/calibtut``.
    """
    root = os.environ.get("CALIBTUT_CACHE") or Path.home() / ".cache" / "calibtut"
    return Path(root) / "paper-results"


def paper_base_url() -> str:
    """Where the paper's files are downloaded from: ``$CALIBTUT_PAPER_URL`` when it is set (a
    mirror, a ``file://`` folder), else :data:`PAPER_BASE_URL` (the authors' repository, pinned)."""
    return os.environ.get(PAPER_URL_VARIABLE) or PAPER_BASE_URL


def paper_csv_path(
    dataset: str,
    loss: str,
    metric: str,
    root: str | Path | None = None,
    *,
    complete_cases: bool = False,
    base_url: str | None = None,
    cache_dir: str | Path | None = None,
) -> Path:
    """Local path of one results file: under ``root``, or downloaded once into the cache.

    ``root`` is a folder with the repository's ``bundles/...`` layout (a clone of the authors'
    repository, or a copy of its results). With ``root=None`` the file is fetched from
    ``base_url`` (default :func:`paper_base_url`; any URL urllib opens, ``file://`` included) into
    ``cache_dir / <hash of base_url>`` (default :func:`default_cache_dir`), atomically: a file
    appears in the cache only complete and parsed, so a failed download leaves nothing behind.
    ``complete_cases``: see :func:`paper_relative_path`.

    Raises:
        FileNotFoundError: the file is not under ``root``, or not at ``base_url`` (HTTP 404).
        ConnectionError: the download failed (offline, a server error, a truncated body); the
            message says how to use a local copy instead.
        ValueError: the downloaded file is not a results file.
    """
    relative = paper_relative_path(dataset, loss, metric, complete_cases=complete_cases)
    if root is not None:
        path = Path(root) / relative
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: root= (the notebooks' paper_root) must be a folder with the "
                f"bundles/ layout of {PAPER_REPOSITORY} (e.g. a clone of it)"
            )
        return path
    base_url = base_url or paper_base_url()
    url_key = hashlib.sha256(base_url.encode()).hexdigest()[:16]
    cached = Path(cache_dir or default_cache_dir()) / url_key / relative
    if not cached.is_file():
        _download(base_url.rstrip("/") + "/" + relative, cached)
    return cached


def _download(url: str, target: Path) -> None:
    data = _fetch_bytes(url)
    _parse_results_csv(data, origin=url)  # never cache a file we cannot read
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=".part"
    )
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temporary, target)
    finally:
        Path(temporary).unlink(missing_ok=True)


def _fetch_bytes(url: str) -> bytes:
    hint = f"The paper's results are downloaded from {PAPER_REPOSITORY}. {_LOCAL_COPY_HINT}"
    try:
        with urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response:
            return response.read()
    except urllib.error.HTTPError as err:
        if err.code == 404:
            raise FileNotFoundError(f"{url} does not exist (HTTP 404)") from err
        raise ConnectionError(
            f"could not download {url}: HTTP {err.code} {err.reason}. {hint}"
        ) from err
    except urllib.error.URLError as err:
        if isinstance(err.reason, FileNotFoundError):
            raise FileNotFoundError(f"{url} does not exist") from err
        raise ConnectionError(f"could not download {url}: {err.reason}. {hint}") from err
    except (OSError, http.client.HTTPException) as err:  # reset, timeout or truncated body
        raise ConnectionError(f"could not download {url}: {err!r}. {hint}") from err


def _parse_results_csv(data: bytes, origin: str) -> pd.DataFrame:
    """Parse a ``<metric>_raw.csv``: columns image_id, class0..classN-1, mean.

    The authors' writer repeats ``mean`` in the header (up to 10 times) while each row has one
    ``mean`` value, so the header is read as ``filename, class0.., mean[, mean...]`` and every row
    must have exactly ``1 + N + 1`` fields.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{origin}: not a UTF-8 text file ({err})") from err
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        raise ValueError(f"{origin}: empty file, expected a header 'filename,class0,...,mean'")
    header = rows[0]
    n_classes = 0
    while 1 + n_classes < len(header) and header[1 + n_classes] == f"class{n_classes}":
        n_classes += 1
    trailing = header[1 + n_classes :]
    if header[0] != "filename" or n_classes == 0 or not trailing or set(trailing) != {"mean"}:
        raise ValueError(
            f"{origin}: header {','.join(header)!r} is not 'filename,class0,...,classN-1,mean'"
        )
    columns = ["image_id", *header[1 : 1 + n_classes], "mean"]
    records = []
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(columns):
            raise ValueError(
                f"{origin}, line {line}: {len(row)} fields, expected {len(columns)} "
                f"(filename, {n_classes} classes, mean)"
            )
        if not row[0]:
            raise ValueError(f"{origin}, line {line}: empty filename")
        try:
            records.append([row[0], *(float(field) for field in row[1:])])
        except ValueError as err:
            raise ValueError(f"{origin}, line {line}: non-numeric value ({err})") from err
    if not records:
        raise ValueError(f"{origin}: no image rows after the header")
    table = pd.DataFrame.from_records(records, columns=columns)
    duplicated = table["image_id"][table["image_id"].duplicated()]
    if not duplicated.empty:
        raise ValueError(f"{origin}: image {duplicated.iloc[0]!r} appears more than once")
    return table


def read_paper_csv(
    dataset: str,
    loss: str,
    metric: str,
    root: str | Path | None = None,
    *,
    complete_cases: bool = False,
    base_url: str | None = None,
    cache_dir: str | Path | None = None,
) -> pd.DataFrame:
    """One of the paper's per-image files, as columns image_id, class0..classN-1, mean.

    ``dataset`` in acdc/amos/kits/brats, ``loss`` in baseline/hard/soft, ``metric`` in
    :data:`METRICS` or ``"missing_classes"``. Where it comes from: see :func:`paper_csv_path`.
    """
    path = paper_csv_path(
        dataset, loss, metric, root,
        complete_cases=complete_cases, base_url=base_url, cache_dir=cache_dir,
    )  # fmt: skip
    return _parse_results_csv(path.read_bytes(), origin=str(path))


def paper_frame(
    root: str | Path | None = None,
    *,
    datasets: Iterable[str] = tuple(PAPER_DATASETS),
    complete_cases: bool = False,
    base_url: str | None = None,
    cache_dir: str | Path | None = None,
) -> pd.DataFrame:
    """The paper's per-image results as a frame (source "paper", the files' ``mean`` column).

    Args:
        root: a local copy with the authors' ``bundles/`` layout; None downloads the files
            (:func:`paper_csv_path`).
        datasets: which of acdc, amos, kits, brats.
        complete_cases: only the test images whose ground truth holds every class, from the
            authors' :data:`COMPLETE_CASES_FOLDER` (as ``calc_percentage_change_complete_cases.py``
            reads them); ACDC's full results, after checking that none of its images lacks a class.
        base_url, cache_dir: where files are downloaded from and kept (:func:`paper_csv_path`).

    Returns:
        The frame, :data:`FRAME_COLUMNS`.

    Raises:
        FileNotFoundError, ConnectionError: a file is missing or cannot be downloaded.
        ValueError: a malformed file, or ``complete_cases`` for a dataset without a complete-cases
            folder that has incomplete images.
    """
    where = {"base_url": base_url, "cache_dir": cache_dir}
    parts = []
    for dataset in datasets:
        if complete_cases and dataset not in COMPLETE_CASES_DATASETS:
            flags = read_paper_csv(dataset, "baseline", "missing_classes", root, **where)
            incomplete = (flags.drop(columns=["image_id", "mean"]) != 0).any(axis=1)
            if incomplete.any():
                raise ValueError(
                    f"{dataset} has no complete-cases results, yet {int(incomplete.sum())} of its "
                    f"test images lack a class (e.g. {flags['image_id'][incomplete].iloc[0]})"
                )
        for loss in LOSSES:
            for metric in METRICS:
                table = read_paper_csv(
                    dataset, loss, metric, root, complete_cases=complete_cases, **where
                )
                parts.append(
                    pd.DataFrame(
                        {
                            "source": "paper",
                            "dataset": dataset,
                            "loss": loss,
                            "seed": PAPER_SEED,
                            "image_id": table["image_id"],
                            "metric": metric,
                            "value": table["mean"],
                        }
                    )
                )
    return pd.concat(parts, ignore_index=True)


def if_available(load: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """``load(*args, **kwargs)``, or None when the paper's files cannot be had (offline, or not
    under the given root), after printing what is missing and how to point at a local copy.

    What notebooks call, so that they go on with what they can show (your runs) without the
    paper, section by section: a local copy may hold the per-image results but not the
    complete-cases ones.

    Example:
        >>> published = if_available(paper_frame, None)  # offline: prints why, returns None
        >>> missing = if_available(missing_classes_report, "bundles")  # doctest: +SKIP
    """
    try:
        return load(*args, **kwargs)
    except (ConnectionError, FileNotFoundError) as err:
        message = f"The paper's results could not be loaded, so they are left out: {err}"
        if _LOCAL_COPY_HINT not in message:
            message += (
                f"\nSet paper_root (root= in calibtut.paper) to a local copy of the bundles/ "
                f"folder of {PAPER_REPOSITORY} to include them."
            )
        print(message)
        return None


# --- calibtut run directories -------------------------------------------------------------------


def _run_frame(run: RunDir, source: str, metrics: Iterable[str]) -> pd.DataFrame:
    config, per_image = run.config, run.results().per_image
    missing_keys = [key for key in _CONFIG_KEYS if key not in config]
    if missing_keys:
        raise ValueError(f"{run.config_path} lacks {', '.join(missing_keys)}")
    loss = config["loss"]
    if loss not in METHODS:
        raise ValueError(f"{run.config_path}: loss {loss!r} is not one of {tuple(METHODS)}")
    where = run.per_image_path
    if per_image.empty:
        raise ValueError(f"{where} has no rows")
    if per_image["empty"].dtype != bool and not per_image["empty"].isin([0, 1]).all():
        raise ValueError(f"{where}: column 'empty' must hold True/False (or 1/0)")
    n_classes = len(config["class_names"])
    if not per_image["class_index"].between(0, n_classes - 1).all():
        raise ValueError(f"{where}: class_index outside 0..{n_classes - 1} (config class_names)")
    if per_image.duplicated(["image_id", "class_index"]).any():
        raise ValueError(f"{where}: more than one row for an image and class")
    means = image_means(per_image)[list(metrics)].reset_index()
    long = means.melt(id_vars="image_id", var_name="metric", value_name="value")
    long = long.assign(
        source=source, dataset=config["dataset"], loss=loss, seed=int(config["seed"])
    )
    return long[list(FRAME_COLUMNS)]


def runs_frame(
    paths: RunDir | str | Path | Iterable[RunDir | str | Path],
    *,
    source: str = "calibtut",
    metrics: Iterable[str] = METRICS,
) -> pd.DataFrame:
    """calibtut run directories as a frame, under the name ``source``.

    Args:
        paths: run directories or folders holding evaluated runs at any depth
            (:func:`calibtut.runs.resolve_runs`).
        source: the frame's ``source`` for these runs.
        metrics: the per-image metrics to include (any column of ``per_image.csv``, e.g. the
            noise floor ``ace_floor``).

    Returns:
        The per-image frame: per image, ECE/ACE/MCE are the mean over all classes and Dice the
        mean over the classes present (the paper's convention, :func:`calibtut.runs.image_means`).
    """
    runs = resolve_runs(paths)
    return pd.concat([_run_frame(run, source, metrics) for run in runs], ignore_index=True)


# --- statistics ---------------------------------------------------------------------------------


def check_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame``'s :data:`FRAME_COLUMNS`, after checking names and one value per image and metric."""
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"frame must be a pandas DataFrame, got {type(frame).__name__}")
    missing = [column for column in FRAME_COLUMNS if column not in frame]
    if missing:
        raise ValueError(f"frame lacks columns {', '.join(missing)}; expected {FRAME_COLUMNS}")
    for column, allowed in (("metric", tuple(METRIC_TITLES)), ("loss", tuple(METHODS))):
        unknown = sorted(set(frame[column]) - set(allowed))
        if unknown:
            raise ValueError(f"frame has unknown {column} {unknown}; expected one of {allowed}")
    keys = ["source", "dataset", "loss", "seed", "image_id", "metric"]
    duplicated = frame[frame.duplicated(keys)]
    if not duplicated.empty:
        row = duplicated.iloc[0]
        raise ValueError(f"frame has more than one value for {row[keys].to_dict()}")
    return frame[list(FRAME_COLUMNS)]


def _sorted(table: pd.DataFrame, **orders: list) -> pd.DataFrame:
    """``table`` stably sorted by the given columns, each in the given order of its values."""
    ranks = [
        table[column].map({name: i for i, name in enumerate(names)})
        for column, names in orders.items()
    ]
    return table.iloc[np.lexsort(ranks[::-1])].reset_index(drop=True)


def percentage_changes(frame: pd.DataFrame) -> pd.DataFrame:
    """Per-image percentage change of each hard/soft run against its baseline.

    Pairs every image of a hard or soft run with the same image of the baseline run of the same
    source, dataset and seed, and returns one row per pair: the frame's keys, ``baseline``,
    ``value`` and ``pct_change = (value - baseline) / baseline * 100``. ``pct_change`` is NaN where
    it is undefined (baseline 0 or NaN, or value NaN). A run without a baseline, or with other
    images than its baseline, is an error: paired statistics need the same images.
    """
    frame = check_frame(frame)
    is_baseline = frame["loss"] == "baseline"
    baseline = frame[is_baseline].drop(columns="loss").rename(columns={"value": "baseline"})
    treated = frame[~is_baseline]
    if treated.empty:
        raise ValueError("the frame has no hard or soft run to compare with a baseline")
    run_keys = ["source", "dataset", "seed"]
    runs = treated[[*run_keys, "loss", "metric"]].drop_duplicates()
    expected = runs.merge(baseline, on=[*run_keys, "metric"], how="left", indicator=True)
    orphan = expected[expected["_merge"] == "left_only"]
    if not orphan.empty:
        run = orphan.iloc[0]
        raise ValueError(
            f"no baseline run for the {run['loss']} run of source {run['source']!r}, "
            f"dataset {run['dataset']!r}, seed {run['seed']} (metric {run['metric']})"
        )
    pair_keys = [*run_keys, "loss", "metric", "image_id"]
    pairs = expected.drop(columns="_merge").merge(
        treated, on=pair_keys, how="outer", indicator=True
    )
    unpaired = pairs[pairs["_merge"] != "both"]
    if not unpaired.empty:
        row = unpaired.iloc[0]
        side = "baseline" if row["_merge"] == "right_only" else row["loss"]
        raise ValueError(
            f"image {row['image_id']!r} of source {row['source']!r}, dataset {row['dataset']!r}, "
            f"seed {row['seed']} is missing from the {side} run ({len(unpaired)} unpaired rows)"
        )
    pairs = _sorted(
        pairs.drop(columns="_merge"),
        source=list(dict.fromkeys(frame["source"])),
        dataset=list(dict.fromkeys(frame["dataset"])),
        loss=list(COMPARED_LOSSES),
        metric=_METRIC_ORDER,
    )
    defined = pairs["baseline"].notna() & (pairs["baseline"] != 0) & pairs["value"].notna()
    change = (pairs["value"] - pairs["baseline"]) / pairs["baseline"].where(defined) * 100
    return pairs.assign(pct_change=change)[[*pair_keys, "baseline", "value", "pct_change"]]


def _paired_t_p(values: np.ndarray, baselines: np.ndarray) -> float:
    """Two-sided paired t-test p-value (``scipy.stats.ttest_rel``, the authors' test): NaN for
    fewer than 2 pairs; where the differences do not vary, 1.0 if they are all 0 (no difference at
    all) and 0.0 otherwise (every image moved by the same amount: t is infinite)."""
    if values.size < 2:
        return math.nan
    differences = values - baselines
    if np.all(differences == differences[0]):
        return 1.0 if differences[0] == 0 else 0.0
    return float(ttest_rel(values, baselines).pvalue)


def _wilcoxon_p(values: np.ndarray, baselines: np.ndarray) -> float:
    """Two-sided paired Wilcoxon signed-rank p-value, zero differences dropped (Wilcoxon's rule):
    the exact null distribution for up to 50 untied differences, the normal approximation (with
    the tie correction, without a continuity correction) otherwise."""
    if values.size == 0:
        return math.nan
    differences = values - baselines
    differences = differences[differences != 0]
    if differences.size == 0:  # no signed rank at all: no evidence of a difference
        return 1.0
    tied = np.unique(np.abs(differences)).size < differences.size
    method = "exact" if differences.size <= 50 and not tied else "asymptotic"
    return float(wilcoxon(differences, alternative="two-sided", method=method).pvalue)


def summarize_percentage_changes(changes: pd.DataFrame) -> pd.DataFrame:
    """Mean, population std, count and p-values of :func:`percentage_changes`.

    One row per source, dataset, metric and loss, plus ``dataset == "all"``: every image of every
    dataset of that source pooled into one sample (seeds, if several, are pooled the same way).
    Only images with a defined ``pct_change`` count (``n``; NaN statistics when none does). Both
    tests compare their raw paired values (loss vs baseline), not the percentages:

    - ``p_value``: the two-sided paired t-test, as the paper (``scipy.stats.ttest_rel``, the
      authors' ``calc_p_vals.py``); NaN for fewer than 2 pairs;
    - ``p_wilcoxon``: the two-sided Wilcoxon signed-rank test, a robustness check that does not
      assume normal differences. On heavy-tailed data the two can disagree: a few images with large
      differences dominate the t-test's mean and standard deviation, while the rank test responds
      to a consistent shift of most images (the paper's KiTS Dice, hard: t-test 0.65, Wilcoxon
      0.027).

    Args:
        changes: :func:`percentage_changes`.

    Returns:
        :data:`TABLE_COLUMNS`, sorted by source, dataset (then ``all``), metric and loss.
    """
    pooled = changes.assign(dataset="all")
    rows = []
    for (source, dataset, metric, loss), group in pd.concat([changes, pooled]).groupby(
        ["source", "dataset", "metric", "loss"], sort=False
    ):
        group = group[group["pct_change"].notna()]
        pct = group["pct_change"].to_numpy(dtype=np.float64)
        values = group["value"].to_numpy(dtype=np.float64)
        baselines = group["baseline"].to_numpy(dtype=np.float64)
        rows.append(
            {
                "source": source,
                "dataset": dataset,
                "metric": metric,
                "loss": loss,
                "mean": float(pct.mean()) if pct.size else math.nan,
                "std": float(pct.std(ddof=0)) if pct.size else math.nan,
                "n": int(pct.size),
                "p_value": _paired_t_p(values, baselines),
                "p_wilcoxon": _wilcoxon_p(values, baselines),
            }
        )
    table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
    return _sorted(
        table,
        source=list(dict.fromkeys(changes["source"])),
        dataset=[*dict.fromkeys(changes["dataset"]), "all"],
        metric=_METRIC_ORDER,
        loss=list(COMPARED_LOSSES),
    )


def percentage_change_table(
    root: str | Path | None = None, *, frame: pd.DataFrame | None = None
) -> pd.DataFrame:
    """The paper's main table: per-image % change against the baseline, mean ± std over images.

    This reproduces the authors' ``calc_percentage_change.py``: per image,
    ``(loss - baseline) / baseline * 100`` on the files' ``mean`` column; the mean and the
    *population* standard deviation (numpy's default ``ddof=0``) over a dataset's test images; and
    ``all`` pools the images of all datasets into one sample (498 images: BraTS's 200 weigh more
    than ACDC's 100), rather than averaging the four dataset means. No published image has a
    baseline of 0 or NaN (or a NaN value), so the paper never had to define those; here such images
    are left out and ``n`` counts the images used (100, 100, 98 and 200 for the paper's files).

    ``p_value`` is the paper's significance test, the two-sided paired t-test of the authors'
    ``calc_p_vals.py`` (``scipy.stats.ttest_rel`` on the raw per-image values, baseline vs loss;
    it reproduces their ``p-val_results.md``, e.g. ACDC ACE hard 6.991e-26), also for the pooled
    ``all`` rows, which the authors did not test. ``p_wilcoxon`` is the paired Wilcoxon
    signed-rank test over the same images, a robustness check: the per-image differences are
    heavy-tailed (KiTS macro ECE +2900 % on one image), and the two tests can disagree (KiTS Dice
    hard: 0.65 vs 0.027; BraTS ECE hard: 0.63 vs 0.0013), see :func:`summarize_percentage_changes`.

    Args:
        root: where the paper's files are (a local copy); None fetches them from the authors'
            repository (:func:`paper_csv_path`). Only without ``frame``.
        frame: a frame to tabulate instead (e.g. ``pd.concat([paper_frame(), runs_frame("runs")])``):
            calibtut runs, alone or beside the paper.

    Returns:
        :data:`TABLE_COLUMNS`: ``source``, ``dataset`` (each dataset, then ``all``), ``metric``,
        ``loss`` (hard, soft), ``mean``, ``std``, ``n``, ``p_value`` (t-test), ``p_wilcoxon``.

    Raises:
        TypeError: both ``root`` and ``frame``.

    Example:
        >>> table = percentage_change_table("path/to/Average-Calibration-Losses")
        >>> table.query("dataset == 'acdc' and metric == 'ace' and loss == 'hard'")["p_value"]
    """
    if frame is None:
        frame = paper_frame(root)
    elif root is not None:
        raise TypeError("pass root= (where the paper's files are) or frame=, not both")
    return summarize_percentage_changes(percentage_changes(frame))


def complete_cases_table(
    root: str | Path | None = None,
    *,
    base_url: str | None = None,
    cache_dir: str | Path | None = None,
) -> pd.DataFrame:
    """The main table on the test images whose ground truth holds every class.

    Reproduces the authors' ``calc_percentage_change_complete_cases.py`` (the "Results for cases
    with complete ground truth classes" of their ``perc-change_results.md``): the statistics of
    :func:`percentage_change_table` on the files of :data:`COMPLETE_CASES_FOLDER` (the authors'
    evaluation of those images alone: 87 AMOS, 43 KiTS and 192 BraTS images), and for ACDC, which is
    complete, on its full results (:func:`paper_frame` with ``complete_cases=True``).

    Args:
        root: a local copy with the authors' layout; None downloads the files.
        base_url, cache_dir: where files are downloaded from and kept (:func:`paper_csv_path`).

    Returns:
        :data:`TABLE_COLUMNS`, as :func:`percentage_change_table`.

    Raises:
        FileNotFoundError, ConnectionError: a file is missing or cannot be downloaded.

    Example:
        >>> table = complete_cases_table("path/to/Average-Calibration-Losses")
        >>> table.drop_duplicates("dataset").set_index("dataset")["n"].to_dict()
        {'acdc': 100, 'amos': 87, 'kits': 43, 'brats': 192, 'all': 422}
    """
    frame = paper_frame(root, complete_cases=True, base_url=base_url, cache_dir=cache_dir)
    return percentage_change_table(frame=frame)


MISSING_CLASS_COLUMNS = ("dataset", "class_index", "class_name", "missing", "images")
INCOMPLETE_CASE_COLUMNS = ("dataset", "image_id", "missing_classes")
CASE_COUNT_COLUMNS = ("dataset", "incomplete", "images")


@dataclass(frozen=True)
class MissingClasses:
    """Which classes the paper's test images lack in their ground truth (:func:`missing_classes_report`)."""

    per_class: pd.DataFrame
    """Per dataset and class (:data:`MISSING_CLASS_COLUMNS`): ``missing``, the count of test images
    whose ground truth lacks the class, of ``images``."""
    cases: pd.DataFrame
    """Per dataset (:data:`CASE_COUNT_COLUMNS`): ``incomplete`` test images (lacking at least one
    class) of ``images``."""
    incomplete_images: pd.DataFrame
    """Per incomplete image (:data:`INCOMPLETE_CASE_COLUMNS`): the classes it lacks, ``"; "``-joined."""

    def markdown(self) -> str:
        """The report as the authors' ``missing_classes_report.md`` lays it out: per dataset, a
        table of classes and their missing counts, then "Incomplete Cases: k/n"."""
        lines = []
        for case in self.cases.itertuples(index=False):
            lines += [f"### {case.dataset}\n", "| class | missing |", "|---|---:|"]
            rows = self.per_class[self.per_class["dataset"] == case.dataset]
            lines += [f"| {row.class_name} | {row.missing} |" for row in rows.itertuples()]
            lines += ["", f"**Incomplete cases:** {case.incomplete}/{case.images}", ""]
        return "\n".join(lines)


def missing_classes_report(
    root: str | Path | None = None,
    *,
    datasets: Iterable[str] = tuple(PAPER_DATASETS),
    base_url: str | None = None,
    cache_dir: str | Path | None = None,
) -> MissingClasses:
    """Per class, the count of the paper's test images whose ground truth lacks it, and the
    incomplete images: the authors' ``count_empty_classes.py`` (``missing_classes_report.md``).

    Reads each dataset's ``missing_classes_raw.csv`` of the baseline run (the flags are the ground
    truth's, the same for every loss): one row per test image, a 1 where a class is absent. Its
    columns are the classes of :data:`PAPER_FLAG_CLASSES` (for KiTS and BraTS the raw labels,
    e.g. KiTS's cyst, not the scored regions). Published: ACDC 0/100 incomplete, AMOS 13/100
    (gallbladder 7, prostate/uterus 3, right kidney 2, ...), KiTS 55/98 (all lack a cyst),
    BraTS 8/200 (necrotic tumour core 7, enhancing tumour 1).

    Args:
        root: a local copy with the authors' layout; None downloads the files.
        datasets: which of acdc, amos, kits, brats.
        base_url, cache_dir: where files are downloaded from and kept (:func:`paper_csv_path`).

    Returns:
        :class:`MissingClasses`: ``per_class``, ``cases`` and ``incomplete_images``.

    Raises:
        FileNotFoundError, ConnectionError: a file is missing or cannot be downloaded.
        ValueError: a file with another number of classes than :data:`PAPER_FLAG_CLASSES`, or a
            flag other than 0 or 1.

    Example:
        >>> report = missing_classes_report("path/to/Average-Calibration-Losses")
        >>> report.cases.set_index("dataset").loc["kits"].tolist()
        [55, 98]
    """
    per_class, cases, incomplete_images = [], [], []
    for dataset in datasets:
        flags = read_paper_csv(
            dataset, "baseline", "missing_classes", root, base_url=base_url, cache_dir=cache_dir
        )
        names = PAPER_FLAG_CLASSES[dataset]
        matrix = flags.drop(columns=["image_id", "mean"]).to_numpy()
        if matrix.shape[1] != len(names):
            raise ValueError(
                f"{dataset}: missing_classes_raw.csv has {matrix.shape[1]} classes, expected "
                f"{len(names)} ({', '.join(names)})"
            )
        if not np.isin(matrix, (0, 1)).all():
            raise ValueError(f"{dataset}: missing_classes_raw.csv holds flags other than 0 and 1")
        absent = matrix == 1
        images = len(flags)
        per_class += [
            {"dataset": dataset, "class_index": c, "class_name": name,
             "missing": int(absent[:, c].sum()), "images": images}
            for c, name in enumerate(names)
        ]  # fmt: skip
        incomplete = absent.any(axis=1)
        cases.append({"dataset": dataset, "incomplete": int(incomplete.sum()), "images": images})
        incomplete_images += [
            {"dataset": dataset, "image_id": image_id,
             "missing_classes": "; ".join(n for n, a in zip(names, row, strict=True) if a)}
            for image_id, row in zip(flags["image_id"][incomplete], absent[incomplete], strict=True)
        ]  # fmt: skip
    return MissingClasses(
        pd.DataFrame(per_class, columns=list(MISSING_CLASS_COLUMNS)),
        pd.DataFrame(cases, columns=list(CASE_COUNT_COLUMNS)),
        pd.DataFrame(incomplete_images, columns=list(INCOMPLETE_CASE_COLUMNS)),
    )


def percentage_change_markdown(table: pd.DataFrame) -> str:
    """A Markdown rendering of :func:`percentage_change_table`: one row per source and dataset,
    one column per metric and loss, cells ``mean ± std`` (2 decimals, signed); "—" if absent."""
    cells = {
        (row.source, row.dataset, row.metric, row.loss): row
        for row in table.itertuples(index=False)
    }
    columns = [
        (metric, loss)
        for metric in _METRIC_ORDER
        for loss in COMPARED_LOSSES
        if ((table["metric"] == metric) & (table["loss"] == loss)).any()
    ]
    header = ["source", "dataset", *(f"{METRIC_TITLES[m]} {loss}" for m, loss in columns)]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * 2 + "---:|" * len(columns),
    ]
    for source, dataset in dict.fromkeys(zip(table["source"], table["dataset"], strict=True)):
        row_cells = [source, dataset]
        for metric, loss in columns:
            row = cells.get((source, dataset, metric, loss))
            row_cells.append(
                "—" if row is None or math.isnan(row.mean) else f"{row.mean:+.2f} ± {row.std:.2f}"
            )
        lines.append("| " + " | ".join(row_cells) + " |")
    return "\n".join(lines) + "\n"


# --- the paper beside your runs -----------------------------------------------------------------


@dataclass(frozen=True)
class PaperComparison:
    """One dataset's per-image results (the paper's, and yours on real data) and their changes."""

    frame: pd.DataFrame
    """Per image, loss and metric: the paper's (source "paper") and your runs' ("yours")."""
    changes: pd.DataFrame
    """Per source, loss and metric: the per-image percentage change against the baseline, mean
    ± std (:func:`percentage_change_table`, without its pooled "all" rows)."""

    def markdown(self) -> str:
        """The changes as the Markdown table notebooks display."""
        return percentage_change_markdown(self.changes)


def real_data_runs_frame(
    run_root: str | Path, datasets: str | Iterable[str], *, source: str = "yours"
) -> pd.DataFrame | None:
    """Your evaluated runs of ``datasets`` on real data under ``run_root``, as a frame.

    Runs trained on a phantom (``"phantom": true`` in their config) are left out: their numbers
    are a pipeline check, not results to put beside the paper's. Prints which runs were found,
    or that there are none.

    Args:
        run_root: a folder of run directories (at any depth); a missing folder holds no runs.
        datasets: a dataset name or several.
        source: the frame's ``source`` for these runs.

    Returns:
        :func:`runs_frame` of those runs, or None when there are none.
    """
    datasets = [datasets] if isinstance(datasets, str) else list(datasets)
    mine = []
    if Path(run_root).is_dir():
        mine = [
            run
            for run in find_runs(run_root)
            if run.config.get("dataset") in datasets and not run.config.get("phantom", False)
        ]
    if not mine:
        print(
            f"No runs of {', '.join(datasets)} on real data under {run_root} (runs on phantoms "
            "are left out)."
        )
        return None
    print(f"Your runs on real data: {', '.join(run.name for run in mine)}.")
    return runs_frame(mine, source=source)


def compare_with_runs(
    paper_root: str | Path | None, run_root: str | Path, datasets: str | Iterable[str]
) -> PaperComparison | None:
    """The paper's results on ``datasets`` beside your runs of them on real data under ``run_root``.

    Runs trained on a phantom (``"phantom": true`` in their config) are left out: their numbers
    are a pipeline check (:func:`real_data_runs_frame`). ``paper_root`` None downloads the paper's
    files (:func:`paper_frame`); when that fails (offline) the paper is left out with a message
    saying how to point at a local copy (:func:`if_available`). Returns None when
    neither is there.

    Taught in notebooks/04_acdc to 07_brats.
    """
    datasets = [datasets] if isinstance(datasets, str) else list(datasets)
    parts = [
        part
        for part in (
            if_available(paper_frame, paper_root, datasets=datasets),
            real_data_runs_frame(run_root, datasets),
        )
        if part is not None
    ]
    if not parts:
        return None
    frame = pd.concat(parts, ignore_index=True)
    changes = percentage_change_table(frame=frame)
    return PaperComparison(frame, changes[changes["dataset"] != "all"].reset_index(drop=True))
