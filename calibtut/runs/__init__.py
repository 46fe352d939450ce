"""The run directory: the contract between training (which writes it) and everything that explores it.

    runs/<dataset>/<loss>/seed_<n>/
        config.json      everything needed to reproduce the run; ``class_names`` names every
                         output channel of the network, in channel order (softmax: background
                         first)
        history.csv      one row per epoch
        checkpoint.pt    resumable training state (model, optimiser, schedule, scaler, epoch)
        best.pt          the weights of the best validation Dice: what evaluation uses
        per_image.csv    one row per test image and scored class (:data:`PER_IMAGE_COLUMNS`,
                         then :data:`FLOOR_COLUMNS`, the ACE and MCE noise floors, then
                         :data:`SCORE_COLUMNS`, Brier, NLL and equal-mass ECE: runs evaluated
                         before calibtut saved them lack these, and read without them);
                         ``class_index`` is the class's output channel (an index into config
                         ``class_names``)
        bins.npz         per image and scored class bin sums and counts (redraws every diagram),
                         with ``image_ids``, ``class_names`` (the scored classes, in the order of
                         the bins' class axis), ``class_indices`` (each one's output channel) and
                         ``floor_target_sums``, the binned label draws behind the noise floors
                         (so floors re-bin and pool like the bins)
        predictions/     per test image <id>.npz (every test image): image, label, prediction
                         and every output channel's probability, compact (float16, uint8, and
                         probabilities quantised to uint8), for the overlay figures; label values
                         and channels are output channels, named by config ``class_names``

The scored classes need not be every output channel: the paper leaves the softmax background out
of the metrics, so a softmax run's bins hold classes 1.. while its label maps count from 0. Match
per-image rows to bins by ``class_indices`` (or by class name), never by position.

Every file is written to a temporary name and renamed into place, so a reader never sees a
half-written file; a run counts as evaluated only when both result files exist. Every file
carries the run's identity (``run_id``, a hash of ``config.json``) and reading one checks it, so
a checkpoint copied from another run or an edited ``config.json`` is refused; while a process
trains or evaluates a run it holds ``.lock`` (its pid and host). The run's
lifecycle lives here too (:meth:`RunDir.plan`: train, resume or reuse; :meth:`RunDir.clear`), so
the command line, the course and the notebooks decide it in one way.
"""

from calibtut.runs.files import atomic_write, check_writable_folder, load_checkpoint
from calibtut.runs.results import (
    FLOOR_COLUMNS,
    IMAGE_METRICS,
    PER_IMAGE_COLUMNS,
    SCORE_COLUMNS,
    RunResults,
    image_means,
    per_image_table,
)
from calibtut.runs.rundir import (
    PROBABILITY_LEVELS,
    RunDir,
    RunLockedError,
    RunPlan,
    SkippedRunsWarning,
    find_runs,
    resolve_runs,
    run_path,
)

__all__ = [
    "RunDir",
    "RunResults",
    "RunPlan",
    "RunLockedError",
    "SkippedRunsWarning",
    "PER_IMAGE_COLUMNS",
    "FLOOR_COLUMNS",
    "SCORE_COLUMNS",
    "IMAGE_METRICS",
    "PROBABILITY_LEVELS",
    "run_path",
    "find_runs",
    "resolve_runs",
    "image_means",
    "per_image_table",
    "load_checkpoint",
    "atomic_write",
    "check_writable_folder",
]
