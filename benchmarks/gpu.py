"""CPU against an accelerator: a trial's stages, and a whole small job.

For each model (``resnet20_cifar`` at 3x32x32, ``resnet50`` at 3x64x64, both on
``digits`` resized to that shape) and each device (the CPU, with every core, and the
accelerator ``--device``, with and without ``finetune.amp``):

- **one trial** of the real loop (``load_problem`` → ``open_study`` → ``run_one_trial``),
  single objective at half the MACs, ``--epochs-per-trial`` of fine-tune: its stages as
  ``search.objective.run_trial`` times them (the first trial is a warm-up and not kept);
- **a whole job**: ``run_search`` with ``search.compute_epochs`` ``--compute-epochs``
  (rungs, checkpoints, the warm starts' sensitivity scan) and ``conclude_search`` (the
  winner's final fine-tune, test accuracy, ONNX export), wall-clock seconds end to end.

Latency is not timed (it belongs to the target device, not to the trainer). Results name
the accelerator (``torch.cuda.get_device_name``), torch and CUDA versions, and go to
``--out-dir`` as ``gpu.json`` and ``gpu.md``. Without an accelerator the script stops,
unless ``--allow-cpu`` (a smoke run of the script itself: both columns are then the
CPU). Run from the repository root on the GPU machine::

    .venv/bin/python benchmarks/gpu.py                      # ~5 min on one GPU
    .venv/bin/python benchmarks/gpu.py --quick --allow-cpu --out-dir /tmp/gpu  # smoke
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import torch
from _machine import machine

from models.device import describe_device, resolve_device
from search import (
    JobSpec,
    MemoryCheckpoints,
    conclude_search,
    load_problem,
    open_study,
    run_one_trial,
    run_search,
)

logger = logging.getLogger("benchmarks.gpu")

MODELS: dict[str, tuple[int, int, int]] = {
    "resnet20_cifar": (3, 32, 32),
    "resnet50": (3, 64, 64),
}
"""Model → the input shape it is timed at (``digits`` resized)."""

STAGES = ("apply", "cost", "bn_recal", "finetune", "evaluate")
"""The stages of a trial the table shows (the rest are device-independent and small)."""


def spec_for(arch: str, *, amp: bool, epochs: float, compute: float | None) -> JobSpec:
    """Return the timed job: accuracy at half the MACs, on digits, batch 64."""
    search: dict[str, Any] = {"trials": 3, "sampler": "tpe", "seed": 0}
    if compute is not None:
        search = {"compute_epochs": compute, "sampler": "tpe", "seed": 0}
    return JobSpec.model_validate(
        {
            "arch": arch,
            "input_shape": list(MODELS[arch]),
            "dataset": "digits",
            "budget": {"flops": 0.5},
            "search": search,
            "finetune": {"epochs_per_trial": epochs, "batch_size": 64, "amp": amp},
        }
    )


def time_trial(arch: str, device: torch.device, *, amp: bool, epochs: float) -> dict[str, Any]:
    """Return the stage seconds of the second trial (the first warms the device up)."""
    problem = load_problem(spec_for(arch, amp=amp, epochs=epochs, compute=None), device=device)
    study = open_study(problem, optuna.storages.InMemoryStorage())
    run_one_trial(problem, study)
    started = time.perf_counter()
    result = run_one_trial(problem, study)
    wall = time.perf_counter() - started
    assert result is not None
    return {"wall_s": round(wall, 4), **{s: result.seconds.get(s, 0.0) for s in STAGES}}


def time_job(arch: str, device: torch.device, *, amp: bool, compute: float) -> dict[str, Any]:
    """Return the wall-clock seconds of a whole rung search and its conclusion."""
    started = time.perf_counter()
    problem = load_problem(spec_for(arch, amp=amp, epochs=1.0, compute=compute), device=device)
    study = open_study(problem, optuna.storages.InMemoryStorage())
    checkpoints = MemoryCheckpoints()
    fidelity = problem.fidelity
    assert fidelity is not None
    run_search(problem, study, trials=fidelity.trials, checkpoints=checkpoints)
    conclusion = conclude_search(
        problem,
        study.get_trials(deepcopy=False),
        storage="memory",
        study_name="gpu",
        checkpoints=checkpoints,
    )
    wall = time.perf_counter() - started
    best = conclusion.report.get("best") or {}
    return {
        "job_s": round(wall, 2),
        "trials": len(study.trials),
        "test_accuracy": best.get("test_accuracy"),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure every model on the CPU and the accelerator; return the results."""
    accelerator = resolve_device(args.device)
    if accelerator.type == "cpu" and not args.allow_cpu:
        sys.exit(
            f"--device {args.device} is the CPU here: run this on a machine with a GPU "
            "(or pass --allow-cpu for a smoke run of the script)"
        )
    cpu = torch.device("cpu")
    setups = [(cpu, False), (accelerator, False)]
    if accelerator.type == "cuda":
        setups.append((accelerator, True))
    rows = []
    for arch in args.models:
        for device, amp in setups:
            label = f"{arch} on {describe_device(device)}{' amp' if amp else ''}"
            logger.info("timing %s", label)
            trial = time_trial(arch, device, amp=amp, epochs=args.epochs_per_trial)
            job = time_job(arch, device, amp=amp, compute=args.compute_epochs)
            rows.append(
                {
                    "model": arch,
                    "input_shape": list(MODELS[arch]),
                    "device": describe_device(device),
                    "amp": amp,
                    "trial": trial,
                    "job": job,
                }
            )
            logger.info("%s: trial %.2f s, job %.1f s", label, trial["wall_s"], job["job_s"])
    for row in rows:
        base = next(r for r in rows if r["model"] == row["model"] and r["device"] == "cpu")
        row["trial_speedup"] = round(base["trial"]["wall_s"] / row["trial"]["wall_s"], 2)
        row["job_speedup"] = round(base["job"]["job_s"] / row["job"]["job_s"], 2)
    return {
        "benchmark": "gpu",
        "machine": machine(),
        "accelerator": describe_device(accelerator),
        "cuda": torch.version.cuda,
        "cpu_threads": torch.get_num_threads(),
        "settings": {
            "dataset": "digits",
            "batch_size": 64,
            "epochs_per_trial": args.epochs_per_trial,
            "compute_epochs": args.compute_epochs,
            "budget": {"flops": 0.5},
        },
        "smoke_run_on_cpu": accelerator.type == "cpu",
        "rows": rows,
    }


def markdown(results: dict[str, Any]) -> str:
    """Return the results as the committed markdown table."""
    lines = [
        "# Training on an accelerator: CPU against GPU",
        "",
        f"Accelerator: **{results['accelerator']}** (CUDA {results['cuda']}); CPU: "
        f"{results['machine'].get('cpu', '?')}, torch on {results['cpu_threads']} threads; "
        f"{results['machine'].get('date', '')}. Data: digits resized to each model's "
        f"input, batch 64; a trial fine-tunes {results['settings']['epochs_per_trial']} "
        f"epoch(s) at half the MACs; a job is `compute_epochs` "
        f"{results['settings']['compute_epochs']} end to end (search, final fine-tune, "
        "test, export). Stage seconds as `run_trial` times them (second trial of a study).",
        "",
    ]
    if results["smoke_run_on_cpu"]:
        lines += ["**Smoke run: no accelerator; both columns are the CPU.**", ""]
    lines += [
        "| model | device | amp | trial s | " + " | ".join(STAGES) + " | trial × | job s | job × |",
        "|---|---|---|---:|" + "---:|" * len(STAGES) + "---:|---:|---:|",
    ]
    for row in results["rows"]:
        trial, job = row["trial"], row["job"]
        stages = " | ".join(f"{trial[s]:.3f}" for s in STAGES)
        lines.append(
            f"| {row['model']} | {row['device']} | {'yes' if row['amp'] else 'no'} | "
            f"{trial['wall_s']:.3f} | {stages} | {row['trial_speedup']:.1f} | "
            f"{job['job_s']:.1f} | {row['job_speedup']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="the accelerator (default: auto)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--epochs-per-trial", type=float, default=1.0)
    parser.add_argument("--compute-epochs", type=float, default=6.0)
    parser.add_argument("--allow-cpu", action="store_true", help="smoke run without a GPU")
    parser.add_argument("--quick", action="store_true", help="resnet20 only, tiny budgets")
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    if args.quick:
        args.models, args.epochs_per_trial, args.compute_epochs = ["resnet20_cifar"], 0.2, 1.0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    results = run(args)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "gpu.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out_dir / "gpu.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
