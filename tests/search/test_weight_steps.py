"""Weight steps in a search on a recurrent model: the spec's rules, candidates pruned at
once after their hidden units, zeros held through fine-tunes, and sparse costs."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from models.cost import SparseCost
from models.prune import recurrent_weights
from models.train import fine_tune
from search.hybrid import measure_candidate_cost, zeros_held
from search.loading import load_problem
from search.problem import PruningProblem, build_candidate
from search.spec import JobSpec

CHANNEL = {"granularity": "channel", "criterion": "l1", "amount": 0.3}
WEIGHT = {"granularity": "weight", "criterion": "l1", "amount": 0.75}


def _spec(sequence: list[dict[str, object]], **pruning: object) -> JobSpec:
    return JobSpec.model_validate(
        {
            "arch": "lstm_classifier_1x32",
            "input_shape": [8, 8],
            "dataset": "digits_seq",
            "budget": {"flops": 0.6},
            "search": {"seed": 0, "trials": 2},
            "pruning": {"sequence": sequence, **pruning},
        }
    )


def _shares(model: torch.nn.Module) -> list[float]:
    return [float((w == 0).float().mean()) for w in recurrent_weights(model).values()]


def test_a_recurrent_search_takes_weight_steps_after_its_channel_steps() -> None:
    spec = _spec([CHANNEL, WEIGHT])
    assert [s.granularity for s in spec.pruning.sequence or ()] == ["channel", "weight"]


@pytest.mark.parametrize(
    ("sequence", "pruning", "says"),
    [
        ([WEIGHT, CHANNEL], {}, "put channel steps before the kernel steps and weight steps"),
        ([CHANNEL], {}, "or a weight step for a recurrent one"),
        ([WEIGHT | {"criterion": "l2"}], {}, "cannot rank weights; choose one of l1"),
        ([CHANNEL | {"criterion": "l2"}, WEIGHT], {}, "set pruning.criterion to l2"),
        ([WEIGHT], {"schedule": "agp"}, "cannot follow the agp schedule"),
        (
            [{"granularity": "kernel", "criterion": "l1", "amount": 0.5}],
            {},
            "use weight steps",
        ),
    ],
)
def test_a_sequence_a_recurrent_search_cannot_run_is_refused(
    sequence: list[dict[str, object]], pruning: dict[str, object], says: str
) -> None:
    with pytest.raises(ValidationError, match=says):
        _spec(sequence, **pruning)


def test_weight_steps_are_refused_for_an_image_model_naming_kernel_steps() -> None:
    with pytest.raises(ValidationError, match="an image model has none; use kernel steps"):
        JobSpec.model_validate(
            {"arch": "tiny_cnn", "dataset": "synthetic", "pruning": {"sequence": [WEIGHT]}}
        )


@pytest.fixture(scope="module")
def problem() -> PruningProblem:
    return load_problem(_spec([WEIGHT]), device="cpu")


def test_a_candidate_is_its_hidden_units_then_the_weight_step_at_once(
    problem: PruningProblem,
) -> None:
    plan = problem.space.project({"layers.0": 16}, {})
    model = build_candidate(problem, plan)
    assert model.get_submodule("layers.0").hidden_size == plan.widths["layers.0"]
    assert _shares(model) == [pytest.approx(0.75, abs=1e-2)] * 2
    cost = measure_candidate_cost(model, problem.input_shape, problem.spec.pruning.sequence)
    assert isinstance(cost, SparseCost)
    assert cost.nonzero_params < cost.params and cost.effective_macs < cost.macs
    zeros = {p: w.detach() == 0 for p, w in recurrent_weights(model).items()}

    with zeros_held(model, problem.spec.pruning.sequence):
        fine_tune(model, problem.data.train, steps=5, lr=0.5)

    for path, weight in recurrent_weights(model).items():
        assert bool((weight[zeros[path]] == 0).all()), path
    # without weight steps nothing is held: the same fine-tune revives the zeros
    with zeros_held(model, None):
        fine_tune(model, problem.data.train, steps=2, lr=0.5)
    assert max(_shares(model)) < 0.1
