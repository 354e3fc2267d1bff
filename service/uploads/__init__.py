"""Accepting uploads safely: the spec, weights, data sets, archives and body size.

Each ``validate_*`` function checks one part of a ``POST /v1/jobs`` request and either
returns what it learned or raises :class:`UploadError` with a ``code``, a ``message``
the uploader can act on and an HTTP ``status`` (422; 413 for :class:`RequestTooLarge`).
They block (torch, file I/O): the API calls them from a thread pool, never on the event
loop. Importing this package does not import torch; the checks do on first use.

- :func:`validate_spec_json`: JSON text → :class:`~search.spec.JobSpec`
  (:func:`parse_spec_json` alone bounds its size and depth and parses it).
- :func:`validate_weights`: weights bytes load into the spec's model, without running
  any pickled code → :class:`WeightsCheck`.
- :func:`validate_dataset`: an ``.npz`` or an archive of an image folder →
  :class:`DatasetCheck` (with the data set name workers load it by).
- :func:`validate_budget`: the budget is reachable by some plan → :class:`BudgetCheck`.
- :func:`check_model_size`: the spec's model fits the server's memory limit, estimated
  before anything is built → :class:`ModelSize`.
- :func:`validate_submission`: all of the above for one ``POST /v1/jobs``, cheapest
  first → :class:`Submission`.
- :func:`receive_file`: an uploaded file streamed to disk and hashed on the way →
  :class:`ReceivedFile`.
- :func:`extract_archive`: zip / tar extraction refusing path tricks, links, devices
  and bombs.
- :class:`BodySizeLimit`: ASGI middleware answering 413 to oversized request bodies.
"""

from __future__ import annotations

from service.uploads._archive import extract_archive
from service.uploads._budget import BudgetCheck, validate_budget
from service.uploads._dataset import (
    MAX_DATASET_BYTES,
    DatasetCheck,
    check_public_dataset,
    validate_dataset,
)
from service.uploads._errors import RequestTooLarge, UploadError, clip_message, echo
from service.uploads._incoming import (
    ReceivedFile,
    receive_file,
    remove_stale_uploads,
    safe_filename,
)
from service.uploads._limit import BodySizeLimit
from service.uploads._model_size import (
    MAX_MODEL_BYTES,
    ModelSize,
    check_model_size,
    estimate_model_size,
)
from service.uploads._spec import (
    MAX_SPEC_BYTES,
    MAX_SPEC_DEPTH,
    format_errors,
    format_validation_error,
    parse_spec_json,
    validate_spec_json,
)
from service.uploads._submission import Submission, SubmissionLimits, validate_submission
from service.uploads._weights import WeightsCheck, validate_weights

__all__ = [
    "MAX_DATASET_BYTES",
    "MAX_MODEL_BYTES",
    "MAX_SPEC_BYTES",
    "MAX_SPEC_DEPTH",
    "BodySizeLimit",
    "BudgetCheck",
    "DatasetCheck",
    "ModelSize",
    "ReceivedFile",
    "RequestTooLarge",
    "Submission",
    "SubmissionLimits",
    "UploadError",
    "WeightsCheck",
    "check_model_size",
    "check_public_dataset",
    "clip_message",
    "echo",
    "estimate_model_size",
    "extract_archive",
    "format_errors",
    "format_validation_error",
    "parse_spec_json",
    "receive_file",
    "remove_stale_uploads",
    "safe_filename",
    "validate_budget",
    "validate_dataset",
    "validate_spec_json",
    "validate_submission",
    "validate_weights",
]
