"""Accepting uploads safely: the spec, weights, data sets, archives and body size.

Each ``validate_*`` function checks one part of a ``POST /v1/jobs`` request and either
returns what it learned or raises :class:`UploadError` with a ``code``, a ``message``
the uploader can act on and an HTTP ``status`` (422; 413 for :class:`RequestTooLarge`).
They block (torch, file I/O): the API calls them from a thread pool, never on the event
loop. Importing this package does not import torch; the checks do on first use.

- :func:`validate_spec_json`: JSON text → :class:`~search.spec.JobSpec`.
- :func:`validate_weights`: weights bytes load into the spec's model, without running
  any pickled code → :class:`WeightsCheck`.
- :func:`validate_dataset`: an ``.npz`` or an archive of an image folder →
  :class:`DatasetCheck` (with the data set name workers load it by).
- :func:`validate_budget`: the budget is reachable by some plan → :class:`BudgetCheck`.
- :func:`extract_archive`: zip / tar extraction refusing path tricks, links, devices
  and bombs.
- :class:`BodySizeLimit`: ASGI middleware answering 413 to oversized request bodies.
"""

from __future__ import annotations

from service.uploads._archive import extract_archive
from service.uploads._budget import BudgetCheck, validate_budget
from service.uploads._dataset import DatasetCheck, validate_dataset
from service.uploads._errors import RequestTooLarge, UploadError
from service.uploads._limit import BodySizeLimit
from service.uploads._spec import MAX_SPEC_BYTES, validate_spec_json
from service.uploads._weights import WeightsCheck, validate_weights

__all__ = [
    "MAX_SPEC_BYTES",
    "BodySizeLimit",
    "BudgetCheck",
    "DatasetCheck",
    "RequestTooLarge",
    "UploadError",
    "WeightsCheck",
    "extract_archive",
    "validate_budget",
    "validate_dataset",
    "validate_spec_json",
    "validate_weights",
]
