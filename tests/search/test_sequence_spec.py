"""``pruning.sequence`` in the job spec: validated step by step."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from search.errors import SpecError
from search.spec import JobSpec
from search.steps import sequence_from_json

HYBRID = [
    {"granularity": "channel", "criterion": "l1", "amount": 0.5},
    {"granularity": "kernel", "criterion": "fpgm", "amount": 0.5},
]


def test_the_job_spec_validates_pruning_sequence() -> None:
    spec = {"budget": {"flops": 0.5}}
    assert JobSpec.model_validate({**spec, "pruning": {"sequence": None}}).pruning.sequence is None
    bad = {"granularity": "kernel", "criterion": "taylor", "amount": 0.5}
    with pytest.raises(ValidationError, match="cannot rank kernels"):
        JobSpec.model_validate({**spec, "pruning": {"sequence": [bad]}})
    steps = JobSpec.model_validate({**spec, "pruning": {"sequence": HYBRID}}).pruning.sequence
    assert [step.criterion for step in steps or ()] == ["l1", "fpgm"]


def test_a_sequence_read_from_json_names_the_step_at_fault() -> None:
    steps = sequence_from_json({"pruning": {"sequence": HYBRID}})
    assert [s.granularity for s in steps] == ["channel", "kernel"]
    with pytest.raises(SpecError, match="pruning.sequence: step 2 amount") as caught:
        sequence_from_json([HYBRID[0], {**HYBRID[1], "amount": 1.0}])
    assert caught.value.fields == ("pruning.sequence",)
