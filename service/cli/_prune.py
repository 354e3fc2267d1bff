"""``inferprune prune``: the whole search on this machine, with live progress."""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path
from typing import Any

from service.cli._arguments import (
    add_criterion_argument,
    add_data_arguments,
    add_depth_argument,
    add_device_argument,
    add_distill_argument,
    add_json_argument,
    add_model_arguments,
    add_schedule_arguments,
    add_sequence_argument,
    fraction,
    input_shape,
    positive_float,
    positive_int,
)
from service.cli._console import (
    console,
    macs_text,
    print_json,
    progress_bar,
)
from service.cli._device_meter import add_target_arguments
from service.cli._prune_summary import print_summary


def register(commands: Any) -> None:
    """Add the ``prune`` command."""
    prune = commands.add_parser(
        "prune",
        help="search per-layer filter counts for a budget and write the pruned model",
        description="Bayesian optimization (Optuna) over how many filters each group keeps. "
        "Every candidate is pruned for real, BatchNorm-recalibrated, briefly fine-tuned "
        "and measured (MACs, parameters, latency on this machine). The best plan within "
        "the budget is fine-tuned longer and evaluated on a test split the search never "
        "saw. Writes report.json, model.safetensors, model.onnx and pareto.png to --out. "
        "Interrupt with Ctrl-C and run the same command again to resume.",
    )
    add_model_arguments(prune, arch_required=False)
    prune.add_argument(
        "--weights",
        metavar="F",
        help="the trained model (a checkpoint from `train` also sets --arch); "
        "without it the model starts from random weights",
    )
    prune.add_argument(
        "--onnx",
        type=Path,
        metavar="FILE",
        help="prune your own ONNX model (graph and weights in one file) instead of --arch "
        "and --weights; its input shape and classes come from the file, and "
        "OUT/model.onnx is the pruned model",
    )
    add_data_arguments(prune, required=True)
    budget = prune.add_argument_group("budget (at least one for the constrained objective)")
    budget.add_argument(
        "--flops",
        type=fraction,
        metavar="R",
        help="keep at most the fraction R of the original MACs (0.5 = half)",
    )
    budget.add_argument("--macs", type=positive_int, metavar="N", help="absolute MACs limit")
    budget.add_argument(
        "--params",
        type=positive_float,
        metavar="X",
        help="parameter limit: a fraction if <= 1, else a count",
    )
    budget.add_argument(
        "--latency-ms",
        type=positive_float,
        metavar="L",
        help="median latency limit on this machine, in milliseconds",
    )
    budget.add_argument(
        "--max-accuracy-drop",
        type=float,
        metavar="X",
        help="allowed drop of validation accuracy (0.01 = one point); alone, "
        "asks for the smallest model within it",
    )
    search = prune.add_argument_group("search")
    search.add_argument(
        "--trials",
        type=positive_int,
        metavar="N",
        help="candidates to evaluate (a resumed study counts earlier ones); required "
        "without --compute-epochs, which otherwise decides it",
    )
    search.add_argument(
        "--compute-epochs",
        type=positive_float,
        metavar="E",
        help="total training the job may spend, search and final fine-tune together, in "
        "epochs of the training split: candidates train in rungs of growing length, the "
        "best third going on from their own weights, and the last survivor is trained on "
        "into the delivered model (--epochs-per-trial, --steps-per-trial and "
        "--final-epochs are then not used)",
    )
    search.add_argument(
        "--objective",
        choices=("constrained", "pareto", "scalar"),
        default="constrained",
        help="constrained (default): best accuracy within the budget; "
        "pareto: the accuracy/MACs trade-off; scalar: accuracy with a soft "
        "penalty (acc * (cost/target)^-0.07)",
    )
    search.add_argument(
        "--sampler",
        choices=("tpe", "gp", "nsga2", "random", "qmc"),
        default="tpe",
        help="default: tpe",
    )
    search.add_argument("--seed", type=int, default=0, metavar="S", help="default: 0")
    search.add_argument(
        "--timeout",
        type=positive_float,
        metavar="SECONDS",
        help="start no new trial after this long",
    )
    search.add_argument(
        "--storage",
        metavar="URL",
        help="Optuna storage URL (default: sqlite:///OUT/study.db); watch the search live "
        "with `optuna-dashboard URL` (pip install 'inferprune[dashboard]')",
    )
    search.add_argument(
        "--study-name", metavar="NAME", help="default: derived from the spec, so a rerun resumes"
    )
    train = prune.add_argument_group("training")
    train.add_argument(
        "--epochs-per-trial",
        type=float,
        default=1.0,
        metavar="E",
        help="fine-tuning epochs per candidate (default: 1; 0 = BN recalibration only)",
    )
    train.add_argument(
        "--steps-per-trial",
        type=positive_int,
        metavar="N",
        help="fine-tune each candidate N steps instead",
    )
    train.add_argument(
        "--final-epochs",
        type=float,
        default=3.0,
        metavar="E",
        help="fine-tuning epochs of the chosen plan (default: 3)",
    )
    train.add_argument(
        "--lr",
        type=positive_float,
        default=0.01,
        metavar="LR",
        help="learning rate (default: 0.01)",
    )
    train.add_argument(
        "--batch-size", type=positive_int, default=64, metavar="B", help="default: 64"
    )
    add_distill_argument(train)
    pruning = prune.add_argument_group("pruning and latency")
    add_criterion_argument(pruning)
    add_schedule_arguments(pruning)
    add_sequence_argument(pruning, search=True)
    add_depth_argument(pruning)
    pruning.add_argument(
        "--round-to",
        type=positive_int,
        default=8,
        metavar="R",
        help="channel multiple (default: 8)",
    )
    pruning.add_argument(
        "--latency-backend",
        choices=("onnxruntime", "torch"),
        help="runtime latency is measured with (default: onnxruntime)",
    )
    pruning.add_argument(
        "--latency-threads",
        type=positive_int,
        metavar="T",
        help="threads for latency measurement (default: 1)",
    )
    pruning.add_argument(
        "--latency-predictor",
        choices=("measure", "table"),
        help="measure every candidate end to end (default), or predict it from a layer "
        "latency table of the device and measure only the front and the delivered model",
    )
    add_target_arguments(prune)
    prune.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    add_device_argument(prune, what="candidates are recalibrated, trained and evaluated")
    add_json_argument(prune)
    prune.set_defaults(handler=run_prune)


def _spec(args: argparse.Namespace, arch: str | None) -> Any:
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


def run_prune(args: argparse.Namespace) -> int:
    """Search, then conclude the job (the library's one lifecycle) into ``--out``."""
    from models.errors import WeightsError
    from search import (
        FolderCheckpoints,
        conclude_search,
        count_finished,
        job_sensitivity,
        load_onnx_problem,
        load_problem,
        open_study,
        planned_trials,
        run_search,
        select_best,
        write_conclusion,
    )
    from search.errors import NoFeasibleTrialError, SpecError
    from service.cli._flags import arch_from, cli_text

    if args.onnx is not None and (args.arch or args.weights):
        raise SpecError("--onnx is the whole model: leave out --arch and --weights")
    spec = _spec(args, None if args.onnx is not None else arch_from(args))
    out: Path = args.out
    if not args.weights and args.onnx is None and not args.json:
        console.print("[yellow]no --weights: pruning a randomly initialised model[/]")
    meters = None
    if spec.latency.target is not None:
        from service.cli._device_meter import device_meter_factory

        meters = device_meter_factory(args, spec.latency.target)
    with console.status("loading the model and data, measuring the baseline...", spinner="dots"):
        if args.onnx is not None:
            try:
                problem = load_onnx_problem(
                    spec,
                    _read_onnx(args.onnx),
                    data_root=args.data_root,
                    device=args.device,
                    meter_factory=meters,
                )
            except WeightsError as exc:
                raise SpecError(f"--onnx {args.onnx.name}: {exc}") from None
        else:
            problem = load_problem(
                spec,
                weights=args.weights,
                data_root=args.data_root,
                device=args.device,
                meter_factory=meters,
            )
    created = not out.exists()
    storage = args.storage or f"sqlite:///{(out / 'study.db').resolve()}"
    out.mkdir(parents=True, exist_ok=True)

    def sensitivity() -> Any:
        with console.status("scanning per-group sensitivity for the warm start...", spinner="dots"):
            return job_sensitivity(problem)

    try:
        study = open_study(problem, storage, args.study_name, sensitivity=sensitivity)
    except BaseException:
        _remove_if_created(out, created)
        raise
    started = time.perf_counter()
    interrupted = False
    baseline_macs = problem.baseline.cost.macs
    fidelity = problem.fidelity  # a rung search also runs continuation trials
    trials_total = fidelity.planned_trials() if fidelity else planned_trials(spec)
    checkpoints = FolderCheckpoints(out / "checkpoints")
    with progress_bar("searching", trials_total, enabled=not args.json, unit="trial") as bar:
        bar.update(
            0,
            completed=min(count_finished(study), trials_total),
            status="best feasible: —",
        )

        def on_trial(result: Any, model: Any) -> None:
            best = select_best(spec, study.get_trials(deepcopy=False))
            status = "best feasible: —"
            if best is not None:
                status = (
                    f"best feasible: trial {best.trial}, {best.val_accuracy:.1%} search-time "
                    f"val accuracy at {macs_text(best.macs, baseline_macs)}"
                )
            bar.update(0, completed=min(count_finished(study), trials_total), status=status)

        try:
            run_search(
                problem,
                study,
                trials=planned_trials(spec),
                timeout_s=spec.search.timeout_s,
                on_trial=on_trial,
                checkpoints=checkpoints,
            )
        except KeyboardInterrupt:
            interrupted = True
        except BaseException:
            if count_finished(study) == 0:
                _remove_if_created(out, created)
            raise
    timing = {"search_s": round(time.perf_counter() - started, 2)}
    trials = study.get_trials(deepcopy=False)
    if interrupted and count_finished(study) == 0:
        _remove_if_created(out, created)
        console.print("[yellow]interrupted before any trial finished;[/] nothing was written")
        return 130
    total = max(1, int(spec.finetune.final_epochs * 1000))
    with progress_bar("final fine-tune", total, enabled=not args.json and not interrupted) as bar:

        def on_step(p: Any) -> None:
            bar.update(0, total=p.total_steps, completed=p.step, status=f"loss {p.loss:.3f}")

        conclusion = conclude_search(
            problem,
            trials,
            storage=storage,
            study_name=study.study_name,
            status="interrupted" if interrupted else None,
            timing=timing,
            on_step=on_step,
            checkpoints=checkpoints,
        )
    written = write_conclusion(conclusion, out)
    if conclusion.status == "succeeded":
        shutil.rmtree(checkpoints.folder, ignore_errors=True)  # model.safetensors has the winner
    if interrupted:
        console.print(
            f"[yellow]interrupted after {count_finished(study)} trials;[/] "
            f"run the same command again to resume (the study is in {storage})"
        )
        return 130
    if conclusion.status != "succeeded":
        raise NoFeasibleTrialError(f"{conclusion.message} (report: {written['report.json']})")
    report = conclusion.report
    if args.json:
        print_json(
            {
                "report": str(written["report.json"]),
                "baseline": report["baseline"],
                "best": report["best"],
                "study": report["study"],
                "warnings": report["warnings"],
                "files": {k: str(v) for k, v in written.items()},
            }
        )
        return 0
    print_summary(report, written)
    for warning in conclusion.warnings:
        console.print(f"[bold yellow]warning:[/] {cli_text(warning, args)}", highlight=False)
    return 0


def _remove_if_created(out: Path, created: bool) -> None:
    """Remove ``--out`` when this run created it and leaves nothing worth keeping."""
    if created and out.is_dir():
        shutil.rmtree(out, ignore_errors=True)


def _read_onnx(path: Path) -> bytes:
    from search.errors import SpecError

    try:
        return path.read_bytes()
    except OSError as exc:
        raise SpecError(f"cannot read --onnx {path}: {exc.strerror}") from None
