"""The job spec of a sequence model: ``input_shape`` (T, F) beside (C, H, W), checked
against the architecture, the data set and what recurrent layers can be pruned with."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from search.spec import MAX_INPUT_FEATURES, MAX_TIME_STEPS, JobSpec

BASE = {"arch": "lstm_classifier", "dataset": "digits_seq", "budget": {"flops": 0.5}}


def _errors(**data: object) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as info:
        JobSpec.model_validate(BASE | data)
    return [(".".join(map(str, e["loc"])), e["msg"]) for e in info.value.errors()]


@pytest.mark.parametrize(
    "data",
    [
        {"input_shape": [8, 8]},
        {"input_shape": [28, 28], "dataset": "fashion_mnist_seq"},
        {"arch": "gru_classifier_1x32"},  # the architecture's (8, 8)
        {"arch": None, "input_shape": [16, 4]},  # a given model (ONNX, prune_module)
        {"input_shape": [MAX_TIME_STEPS, MAX_INPUT_FEATURES], "dataset": "upload"},
        {"pruning": {"schedule": "agp"}},
        {"pruning": {"schedule": "iterative", "criteria": ["l1", "l2"]}},
    ],
)
def test_a_sequence_job_is_accepted(data: dict[str, object]) -> None:
    spec = JobSpec.model_validate(BASE | data)
    assert spec.reads_sequences is True


def test_an_image_job_still_takes_c_h_w_and_says_it_reads_images() -> None:
    spec = JobSpec.model_validate(BASE | {"arch": "resnet20_cifar", "dataset": "digits"})
    assert spec.reads_sequences is False and spec.input_shape is None
    spec = JobSpec.model_validate(BASE | {"arch": None, "dataset": "digits"})
    assert spec.reads_sequences is None  # nothing says: the given model's own rank


def test_the_wrong_rank_for_the_architecture_says_what_to_type() -> None:
    [(where, message)] = _errors(input_shape=[1, 8, 8])
    assert where == "input_shape"
    assert "lstm_classifier reads sequences: give input_shape [T, F]" in message
    assert "such as [8, 8]" in message
    [(where, message)] = _errors(arch="resnet20_cifar", input_shape=[8, 8], dataset="digits")
    assert where == "input_shape"
    assert "resnet20_cifar reads images: give input_shape [C, H, W] such as [3, 32, 32]" in message


@pytest.mark.parametrize(
    ("shape", "where", "says"),
    [
        ([8], "input_shape", "give [C, H, W] for an image model"),
        ([1, 2, 3, 4], "input_shape", "or [T, F] for a sequence model"),
        ([0, 8], "input_shape.0", "greater than or equal to 1"),
        ([8, MAX_INPUT_FEATURES + 1], "input_shape.1", f"{MAX_INPUT_FEATURES}"),
        ([MAX_TIME_STEPS + 1, 8], "input_shape.0", f"{MAX_TIME_STEPS}"),
        ("8,8", "input_shape", "give a list of integers"),
    ],
)
def test_out_of_range_sequence_shapes_name_the_place_and_the_limit(
    shape: object, where: str, says: str
) -> None:
    errors = _errors(arch=None, input_shape=shape)
    assert any(w == where and says in m for w, m in errors), errors


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (
            {"dataset": "digits"},
            "dataset digits feeds images (C, H, W) and lstm_classifier reads "
            "sequences (T, F): use digits_seq",
        ),
        ({"dataset": "fashion_mnist"}, "use fashion_mnist_seq or digits_seq"),
        (
            {"arch": "resnet20_cifar"},
            "dataset digits_seq feeds sequences (T, F) and "
            "resnet20_cifar reads images (C, H, W): use digits",
        ),
        (
            {"arch": None, "input_shape": [8, 8], "dataset": "cifar10"},
            "a model of input_shape [8, 8] reads sequences",
        ),
    ],
)
def test_a_data_set_of_the_other_rank_is_refused_with_its_twin(
    data: dict[str, object], says: str
) -> None:
    [(_, message)] = _errors(**data)
    assert says in message, message


def test_the_default_data_set_does_not_slip_past_a_sequence_model() -> None:
    data = {k: v for k, v in BASE.items() if k != "dataset"}
    with pytest.raises(ValidationError, match="use digits_seq"):
        JobSpec.model_validate(data)


@pytest.mark.parametrize(
    ("pruning", "says"),
    [
        ({"criterion": "taylor"}, "pruning.criterion: taylor cannot rank the hidden units"),
        ({"criterion": "fpgm"}, "use l1, l2, random"),
        ({"schedule": "iterative", "criteria": ["l1", "apoz"]}, "pruning.criteria: apoz"),
        ({"schedule": "dropnet"}, "pruning.schedule: dropnet ranks units by their mean"),
        (
            {"sequence": [{"granularity": "kernel", "criterion": "l1", "amount": 0.5}]},
            "pruning.sequence: kernel steps remove k×k kernels of convolutions",
        ),
    ],
)
def test_what_cannot_rank_hidden_units_is_refused_before_the_search(
    pruning: dict[str, object], says: str
) -> None:
    [(_, message)] = _errors(pruning=pruning)
    assert says in message, message


def test_the_latency_table_is_refused_for_a_sequence_model_and_measure_is_not() -> None:
    [(_, message)] = _errors(latency={"predictor": "table"}, budget={"latency_ms": 1.0})
    assert "latency.predictor" in message and "set latency.predictor to measure" in message
    spec = JobSpec.model_validate(BASE | {"budget": {"latency_ms": 1.0}})
    assert spec.measures_latency and spec.latency.predictor == "measure"


def test_the_openapi_schema_offers_both_ranks_with_their_limits() -> None:
    field = JobSpec.model_json_schema()["properties"]["input_shape"]
    shapes = field["anyOf"][0]["anyOf"]
    assert [(s["minItems"], s["maxItems"]) for s in shapes] == [(3, 3), (2, 2)]
    sequence = shapes[1]["prefixItems"]
    assert [d["maximum"] for d in sequence] == [MAX_TIME_STEPS, MAX_INPUT_FEATURES]
    assert "(T, F)" in field["description"] and [8, 8] in field["examples"]
