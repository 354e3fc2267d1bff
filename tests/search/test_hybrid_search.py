"""Hybrid sequences in a search: the searched widths are the channel step, the kernel
steps prune every candidate after it, and the removed kernels stay removed through trial
fine-tunes, rung checkpoints, the final fine-tune and the delivered files."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import onnxruntime as ort
import optuna
import pytest
import torch
from pydantic import ValidationError

from models.io import load_pruned, read_checkpoint_info
from models.prune import kernel_layers, zeroed_kernel_masks
from search import PruningProblem, conclude_search, load_problem, open_study, run_search
from search.checkpoints import MemoryCheckpoints
from tests.search.conftest import tiny_spec

KERNEL_HALF = {"granularity": "kernel", "criterion": "l1", "amount": 0.5}


def _kernel_share_kept(model: torch.nn.Module) -> dict[str, float]:
    masks = zeroed_kernel_masks(model)
    return {name: masks.kept_share(name) for name in kernel_layers(model)}


def test_a_search_sequence_needs_a_kernel_step_after_channel_steps_ranked_by_the_criterion() -> (
    None
):
    channel = {"granularity": "channel", "criterion": "l1", "amount": 0.3}
    ok = tiny_spec(pruning={"sequence": [channel, KERNEL_HALF]})
    assert [s.granularity for s in ok.pruning.sequence or ()] == ["channel", "kernel"]
    assert ok.fingerprint() != tiny_spec().fingerprint()  # a different search, a new study
    with pytest.raises(ValidationError, match="add a kernel step"):
        tiny_spec(pruning={"sequence": [channel]})
    with pytest.raises(ValidationError, match="put channel steps before the kernel steps"):
        tiny_spec(pruning={"sequence": [KERNEL_HALF, channel]})
    with pytest.raises(ValidationError, match=r"set pruning.criterion to fpgm or drop the step"):
        tiny_spec(pruning={"sequence": [{**channel, "criterion": "fpgm"}, KERNEL_HALF]})
    with pytest.raises(ValidationError, match="cannot follow the agp schedule"):
        tiny_spec(pruning={"sequence": [KERNEL_HALF], "schedule": "agp"})


def _delivered(problem: PruningProblem, trials: int) -> Any:
    study = open_study(problem, optuna.storages.InMemoryStorage())
    store = MemoryCheckpoints()
    run_search(problem, study, trials=trials, checkpoints=store)
    conclusion = conclude_search(
        problem, study.trials, storage="memory", study_name="s", checkpoints=store
    )
    assert conclusion.status == "succeeded" and conclusion.final is not None
    return conclusion


def _check_delivery(problem: PruningProblem, conclusion: Any) -> None:
    final = conclusion.final
    shares = _kernel_share_kept(final.model)
    # every convolution that reads several channels lost about half its kernels, and
    # the fine-tunes did not bring them back
    assert shares and all(0.3 <= share <= 0.7 for share in shares.values()), shares
    best = conclusion.report["best"]
    assert best["nonzero_params"] < best["params"] and best["effective_macs"] < best["macs"]
    trials = [t for t in conclusion.report["trials"] if t["macs"] is not None]
    assert trials and all(t["nonzero_params"] < t["params"] for t in trials)
    # the checkpoint stores the masks and rebuilds the same model
    data = conclusion.artifacts["model.safetensors"]
    assert read_checkpoint_info(data).kernel_masks == zeroed_kernel_masks(final.model)
    loaded, _ = load_pruned(data)
    x = torch.randn(4, *problem.input_shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = final.model.eval()(x)
        torch.testing.assert_close(loaded(x), expected)
    session = ort.InferenceSession(io.BytesIO(conclusion.artifacts["model.onnx"]).getvalue())
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    np.testing.assert_allclose(out, expected.numpy(), rtol=1e-4, atol=1e-4)


def test_a_search_with_kernel_steps_delivers_a_kernel_pruned_model(
    trained_weights: bytes,
) -> None:
    problem = load_problem(tiny_spec(pruning={"sequence": [KERNEL_HALF]}), weights=trained_weights)
    _check_delivery(problem, _delivered(problem, trials=3))


def test_a_rung_search_keeps_the_kernels_removed_from_rung_to_rung_and_in_the_final(
    trained_weights: bytes,
) -> None:
    spec = tiny_spec(
        pruning={"sequence": [KERNEL_HALF]},
        search={"compute_epochs": 3, "seed": 0},
        finetune={"lr": 0.05, "batch_size": 32},
    )
    problem = load_problem(spec, weights=trained_weights)
    conclusion = _delivered(problem, trials=spec.search.trials)
    assert conclusion.final.continued  # the final fine-tune went on from a rung checkpoint
    _check_delivery(problem, conclusion)
