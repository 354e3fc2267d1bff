"""``submit``: queue a pruning job on a running server.

The server options and ``--watch`` come from :mod:`._client_commands`, shared with the
commands that follow the job afterwards.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from service.cli._arguments import (
    INPUT_SHAPE_HELP,
    add_criterion_argument,
    add_depth_argument,
    add_distill_argument,
    add_schedule_arguments,
    add_sequence_argument,
    dataset_names_help,
    fraction,
    input_shape_argument,
    positive_float,
    positive_int,
)
from service.cli._client_commands import (
    _add_watch_arguments,
    _command,
    _connect,
    _follow,
    _non_negative_int,
)
from service.cli._console import console, print_json
from service.cli._job_view import styled
from service.errors import ServiceError

# Command-line flag (argparse dest) → where its value goes in the job spec.
_SPEC_FIELDS: dict[str, tuple[str, ...]] = {
    "arch": ("arch",),
    "num_classes": ("num_classes",),
    "input_shape": ("input_shape",),
    "dataset": ("dataset",),
    "flops": ("budget", "flops"),
    "macs": ("budget", "macs"),
    "params": ("budget", "params"),
    "latency_ms": ("budget", "latency_ms"),
    "max_accuracy_drop": ("budget", "max_accuracy_drop"),
    "objective": ("objective",),
    "trials": ("search", "trials"),
    "sampler": ("search", "sampler"),
    "seed": ("search", "seed"),
    "timeout": ("search", "timeout_s"),
    "compute_epochs": ("search", "compute_epochs"),
    "epochs_per_trial": ("finetune", "epochs_per_trial"),
    "steps_per_trial": ("finetune", "steps_per_trial"),
    "final_epochs": ("finetune", "final_epochs"),
    "lr": ("finetune", "lr"),
    "batch_size": ("finetune", "batch_size"),
    "distill": ("finetune", "distill"),
    "distill_weight": ("finetune", "distill_weight"),
    "distill_temperature": ("finetune", "distill_temperature"),
    "criterion": ("pruning", "criterion"),
    "round_to": ("pruning", "round_to"),
    "schedule": ("pruning", "schedule"),
    "schedule_steps": ("pruning", "schedule_steps"),
    "criteria": ("pruning", "criteria"),
    "depth": ("pruning", "depth"),
    "latency_backend": ("latency", "backend"),
    "latency_threads": ("latency", "threads"),
    "latency_target": ("latency", "target"),
    "latency_predictor": ("latency", "predictor"),
}


def register(commands: Any) -> None:
    """Add the ``submit`` command."""
    submit = _command(
        commands,
        "submit",
        job_id=False,
        help="send a pruning job to the server",
        description="Queue a pruning job on the server: the same search as `inferprune "
        "prune`, run by the server's workers. Describe the job with --spec (a JSON job "
        "spec, see the README) and/or the flags below, which override the file's values; "
        "what neither sets takes the server's defaults.",
        epilog="Example: inferprune submit --arch resnet20_cifar --weights base.safetensors "
        "--dataset digits --flops 0.5 --trials 30 --watch",
    )
    submit.add_argument("--spec", type=Path, metavar="FILE.json", help="job spec to start from")
    model = submit.add_argument_group("model and data")
    model.add_argument("--arch", metavar="A", help="architecture name, e.g. resnet20_cifar")
    model.add_argument("--num-classes", type=positive_int, metavar="N", help="classifier outputs")
    model.add_argument(
        "--input-shape",
        type=input_shape_argument,
        metavar="C,H,W|T,F",
        help=INPUT_SHAPE_HELP,
    )
    model.add_argument(
        "--weights",
        type=Path,
        metavar="FILE",
        help="trained weights to upload (safetensors or a state_dict); without them the "
        "job prunes a randomly initialised model",
    )
    model.add_argument(
        "--onnx",
        type=Path,
        metavar="FILE",
        help="prune your own ONNX model (graph and weights in one file) instead of --arch; "
        "its input shape and classes come from the file",
    )
    model.add_argument(
        "--dataset",
        metavar="D",
        help="data set the workers load: " + dataset_names_help("the workers' data root"),
    )
    model.add_argument(
        "--dataset-file",
        type=Path,
        metavar="FILE",
        help="upload your own data: an .npz (x_train, y_train, optional val/test arrays) or "
        "a .zip/.tar of class folders of images; sets the spec's dataset to `upload`",
    )
    budget = submit.add_argument_group("budget")
    budget.add_argument("--flops", type=fraction, metavar="R", help="keep at most R of the MACs")
    budget.add_argument("--macs", type=positive_int, metavar="N", help="absolute MACs limit")
    budget.add_argument(
        "--params", type=positive_float, metavar="X", help="a fraction if <= 1, else a count"
    )
    budget.add_argument(
        "--latency-ms",
        type=positive_float,
        metavar="L",
        help="median latency limit in ms, measured on --latency-target (default: the "
        "workers' machine)",
    )
    budget.add_argument(
        "--max-accuracy-drop", type=float, metavar="X", help="allowed val accuracy drop (0.01)"
    )
    search = submit.add_argument_group("search and training (see `prune --help`)")
    search.add_argument("--trials", type=positive_int, metavar="N", help="candidates (20)")
    search.add_argument(
        "--compute-epochs",
        type=positive_float,
        metavar="E",
        help="total training of the job, search and final fine-tune together, in epochs; "
        "the search then decides how many candidates get how much",
    )
    search.add_argument(
        "--objective", choices=("constrained", "pareto", "scalar"), help="default: constrained"
    )
    search.add_argument(
        "--sampler", choices=("tpe", "gp", "nsga2", "random", "qmc"), help="default: tpe"
    )
    search.add_argument("--seed", type=_non_negative_int, metavar="S", help="default: 0")
    search.add_argument(
        "--timeout", type=positive_float, metavar="S", help="start no trial after S s"
    )
    search.add_argument("--epochs-per-trial", type=float, metavar="E", help="default: 1")
    search.add_argument("--steps-per-trial", type=positive_int, metavar="N")
    search.add_argument("--final-epochs", type=float, metavar="E", help="default: 3")
    search.add_argument("--lr", type=positive_float, metavar="LR", help="default: 0.01")
    search.add_argument("--batch-size", type=positive_int, metavar="B", help="default: 64")
    add_distill_argument(search)
    add_criterion_argument(search, default=None)
    add_schedule_arguments(search, default=None)
    add_sequence_argument(search, search=True)
    add_depth_argument(search)
    search.add_argument("--round-to", type=positive_int, metavar="R", help="default: 8")
    search.add_argument(
        "--latency-backend", choices=("onnxruntime", "torch"), help="default: onnxruntime"
    )
    search.add_argument("--latency-threads", type=positive_int, metavar="T", help="default: 1")
    search.add_argument(
        "--latency-target",
        metavar="NAME",
        help="measure latency on this registered device (`inferprune devices`), where an "
        "`inferprune agent --device NAME` runs; default: the workers' machine",
    )
    search.add_argument(
        "--latency-predictor",
        choices=("measure", "table"),
        help="measure every candidate (default), or predict from the device's layer "
        "latency table and measure only the front and the delivered model",
    )
    submit.add_argument(
        "--idempotency-key",
        metavar="KEY",
        help="submitting again with the same key returns the first job instead of a new one",
    )
    _add_watch_arguments(submit, flag="--watch")
    submit.set_defaults(handler=run_submit)


def build_spec(args: argparse.Namespace) -> dict[str, Any]:
    """Return the job spec of ``submit``: ``--spec``'s contents overridden by the flags."""
    spec: dict[str, Any] = {}
    if args.spec is not None:
        try:
            loaded = json.loads(Path(args.spec).read_text())
        except (OSError, ValueError) as exc:
            raise ServiceError(f"cannot read the job spec {args.spec}: {exc}") from None
        if not isinstance(loaded, dict):
            raise ServiceError(f"the job spec {args.spec} must be a JSON object")
        spec = loaded
    for dest, path in _SPEC_FIELDS.items():
        value = getattr(args, dest)
        if value is None:
            continue
        node = spec
        for key in path[:-1]:
            if not isinstance(node.get(key), dict):  # absent, or null in the file
                node[key] = {}
            node = node[key]
        node[path[-1]] = list(value) if isinstance(value, tuple) else value
    if args.sequence is not None:
        from search.steps import read_sequence

        steps = [step.model_dump() for step in read_sequence(args.sequence)]
        if not isinstance(spec.get("pruning"), dict):
            spec["pruning"] = {}
        spec["pruning"]["sequence"] = steps
    if args.dataset_file is not None:
        if args.dataset not in (None, "upload"):
            raise ServiceError("give --dataset or --dataset-file, not both")
        spec["dataset"] = "upload"
    if getattr(args, "onnx", None) is not None:
        if "arch" in spec or args.weights is not None:
            raise ServiceError("--onnx is the whole model: leave out --arch and --weights")
    elif "arch" not in spec:
        raise ServiceError("say what to prune: --arch A, --onnx FILE, or --spec FILE with an arch")
    return spec


def run_submit(args: argparse.Namespace) -> int:
    """Submit the job; with --watch, follow it to the end."""
    spec = build_spec(args)
    with _connect(args) as client:
        job = client.submit(
            spec,
            weights=args.weights,
            dataset=args.dataset_file,
            idempotency_key=args.idempotency_key,
            model=args.onnx,
        )
        if args.watch:
            if not args.json:
                console.print(f"submitted job [bold]{job['id']}[/]")
            return _follow(client, job["id"], args)
    if args.json:
        print_json(job)
        return 0
    console.print(f"submitted job [bold]{job['id']}[/] ({styled(job['status'])})")
    if not job.get("pretrained", True) and args.onnx is None:
        console.print("[yellow]no --weights: the job prunes a randomly initialised model[/]")
    console.print(f"follow it with: inferprune status {job['id']} --watch")
    return 0
