"""A whole ``POST /v1/jobs`` submission checked in one pass, cheapest checks first.

The order matters: what costs nothing (the spec's text, its fields, the server's
limits, the data set's name) is checked before anything is read from disk, and the
model's size is estimated before the model is built, so a hostile request is refused
before it can cost memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from models.names import DATASET_NAMES
from search.fidelity import planned_trials
from search.spec import JobSpec
from service.uploads._budget import validate_budget
from service.uploads._dataset import DatasetCheck, check_public_dataset, validate_dataset
from service.uploads._errors import UploadError, echo
from service.uploads._incoming import ReceivedFile
from service.uploads._model_size import check_model_size
from service.uploads._onnx import open_onnx, spec_for_onnx
from service.uploads._spec import validate_spec_json
from service.uploads._weights import zoo_arch

__all__ = ["Submission", "SubmissionLimits", "validate_submission"]


@dataclass(frozen=True)
class SubmissionLimits:
    """What this server accepts (from its settings).

    Attributes:
        max_trials: the most ``search.trials`` per job.
        max_model_bytes: the most memory the spec's model may need.
        max_dataset_bytes: the most an uploaded ``.npz`` may unpack to.
        data_root: where the workers read public data sets (None: their default).
        check_public_datasets: whether a public data set must be present there.
    """

    max_trials: int
    max_model_bytes: int
    max_dataset_bytes: int
    data_root: Path | None = None
    check_public_datasets: bool = True


@dataclass(frozen=True)
class Submission:
    """An accepted submission.

    Attributes:
        spec: the validated spec.
        dataset_filename: the name to store the data set upload under (its own name,
            with ``.npz`` added to an ``.npz`` sent without it), or None.
        dataset: what the data set upload holds, or None.
    """

    spec: JobSpec
    dataset_filename: str | None
    dataset: DatasetCheck | None


def validate_submission(
    spec_text: str | bytes,
    weights: ReceivedFile | None,
    dataset: ReceivedFile | None,
    limits: SubmissionLimits,
    model: ReceivedFile | None = None,
) -> Submission:
    """Check a submission (spec, limits, data set, model size, weights, budget).

    Blocks (torch, file I/O): call it from a worker thread. The weights file is read
    only after every cheaper check passed, and dropped on return.

    Args:
        spec_text: the spec form field.
        weights: the weights upload, on disk, or None.
        dataset: the data set upload, on disk, or None (an archive is extracted next
            to it for the check).
        limits: this server's limits.
        model: an ONNX model upload, on disk, instead of ``arch`` and ``weights`` (it is
            then stored as the job's weights; a job without ``arch`` reads them as ONNX).

    Returns:
        The :class:`Submission`.

    Raises:
        UploadError: the first problem found, with its code (see :class:`UploadError`).
    """
    spec = validate_spec_json(spec_text)
    trials = planned_trials(spec)
    if trials > limits.max_trials:
        field = "search.trials" if spec.search.compute_epochs is None else ("search.compute_epochs")
        raise UploadError(
            "too_many_trials",
            f"{field} asks for {trials} trials; this server allows at most "
            f"{limits.max_trials} per job (INFERPRUNE_MAX_TRIALS_PER_JOB)",
        )
    _check_dataset_choice(spec, dataset, limits)
    if model is not None:
        if weights is not None:
            raise UploadError(
                "invalid_spec",
                "send either a `model` (ONNX, weights inside) or `weights` for `arch`, not both",
            )
        spec = spec_for_onnx(spec, open_onnx(model.path.read_bytes()))
        weights = model
    else:
        arch = zoo_arch(spec)
        # the model's size before anything builds it (the data set's class count is not
        # known yet: the spec's, or the architecture's, bounds what the check builds)
        check_model_size(arch, spec.num_classes, spec.input_shape, limits.max_model_bytes)
    checked = None
    filename = None
    if dataset is not None:
        checked = validate_dataset(
            spec,
            dataset.path,
            dataset.filename,
            dataset.path.parent,
            max_npz_bytes=limits.max_dataset_bytes,
        )
        filename = dataset.filename
        if checked.kind == "npz" and not filename.lower().endswith(".npz"):
            filename += ".npz"  # workers tell an .npz from an archive by its name
    weights_bytes = weights.path.read_bytes() if weights is not None else None
    validate_budget(spec, weights_bytes, max_model_bytes=limits.max_model_bytes)
    return Submission(spec, filename, checked)


def _check_dataset_choice(
    spec: JobSpec, dataset: ReceivedFile | None, limits: SubmissionLimits
) -> None:
    if dataset is not None and spec.dataset != "upload":
        raise UploadError(
            "invalid_spec",
            'a dataset file was uploaded: set "dataset": "upload" in the spec to use it',
        )
    if dataset is None and spec.dataset == "upload":
        raise UploadError(
            "invalid_spec",
            '"dataset": "upload" needs a `dataset` file (.npz, or an image-folder .zip/.tar)',
        )
    if dataset is not None:
        return
    if spec.dataset not in DATASET_NAMES:
        raise UploadError(
            "invalid_spec",
            f"dataset: {echo(spec.dataset)} is not available here: use one of "
            f'{", ".join(DATASET_NAMES)}, or upload a file with "dataset": "upload"',
        )
    if limits.check_public_datasets:
        check_public_dataset(spec.dataset, limits.data_root)
