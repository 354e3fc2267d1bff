"""Running ``inferprune prune``: load the problem, search with live progress, then
conclude the job into ``--out`` (or leave a resumable study behind on Ctrl-C)."""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path
from typing import Any

from service.cli._console import (
    console,
    macs_text,
    print_json,
    progress_bar,
)
from service.cli._prune_spec import prune_spec
from service.cli._prune_summary import print_summary

__all__ = ["run_prune"]


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
    spec = prune_spec(args, None if args.onnx is not None else arch_from(args))
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
