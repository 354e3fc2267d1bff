"""The job spec that ``inferprune prune``'s flags describe."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from service.cli._arguments import input_shape

__all__ = ["prune_spec"]


def prune_spec(args: argparse.Namespace, arch: str | None) -> Any:
    """Return the job spec (a :class:`search.JobSpec`) the ``prune`` flags describe.

    ``arch`` is None for ``--onnx``, whose architecture comes from the file.

    Raises:
        SpecError: neither ``--trials`` nor ``--compute-epochs`` says how much to
            search, or the flags make no valid spec.
    """
    from search.errors import SpecError
    from service.cli._flags import spec_from

    latency: dict[str, Any] = {}
    if args.latency_backend:
        latency["backend"] = args.latency_backend
    if args.latency_threads:
        latency["threads"] = args.latency_threads
    if args.latency_target:
        latency["target"] = args.latency_target
    if args.latency_predictor:
        latency["predictor"] = args.latency_predictor
    data: dict[str, Any] = {
        "arch": arch,
        "num_classes": args.num_classes,
        "input_shape": input_shape(args),
        "dataset": args.dataset,
        "budget": {
            "flops": args.flops,
            "macs": args.macs,
            "params": args.params,
            "latency_ms": args.latency_ms,
            "max_accuracy_drop": args.max_accuracy_drop,
        },
        "objective": args.objective,
        "search": {
            "trials": args.trials,
            "sampler": args.sampler,
            "seed": args.seed,
            "timeout_s": args.timeout,
            "compute_epochs": args.compute_epochs,
        },
        "finetune": {
            "epochs_per_trial": args.epochs_per_trial,
            "steps_per_trial": args.steps_per_trial,
            "final_epochs": args.final_epochs,
            "lr": args.lr,
            "batch_size": args.batch_size,
            "distill": args.distill,
            **_given(args, "distill_weight", "distill_temperature"),
        },
        "pruning": {
            "criterion": args.criterion,
            "round_to": args.round_to,
            "schedule": args.schedule,
            "schedule_steps": args.schedule_steps,
            "criteria": list(args.criteria or ()),
            "sequence": _sequence(args.sequence),
            "depth": args.depth,
        },
    }
    if latency:
        data["latency"] = latency
    if args.trials is None:
        if args.compute_epochs is None:
            raise SpecError(
                "say how much to search: --trials N (candidates, each fine-tuned "
                "--epochs-per-trial), or --compute-epochs E (the whole job's training, "
                "split by the search)"
            )
        del data["search"]["trials"]  # the fidelity plan decides
    return spec_from(data, args)


def _given(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """Return the flags among ``names`` the user gave (not None), for spec fields whose
    default the spec keeps."""
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def _sequence(path: Path | None) -> list[dict[str, Any]] | None:
    """Return --sequence FILE's steps as spec data (None without the flag)."""
    from search.steps import read_sequence

    return None if path is None else [step.model_dump() for step in read_sequence(path)]
