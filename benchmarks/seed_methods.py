"""The founding papers' methods reproduced on our data (issue #14's comparisons).

Each part lives in a module of its own and is chosen with ``--part``:

* ``schedules`` (b, ``_seed_schedules.py``): the pruning schedules of
  :mod:`models.schedules` (one_shot, iterative, saliency→similarity, dropnet, agp,
  one_cycle, while_training, adaptive) at equal fine-tune epochs and equal final widths,
  on ``digits`` and a class-balanced subset of Fashion-MNIST, test accuracy over seeds.

* ``hybrid`` (a, ``_seed_hybrid.py``): channel-L1, kernel-L1, channel-similarity,
  kernel-similarity and their sequences at matched non-zero parameters, with test
  accuracy, params, non-zero params, dense vs effective MACs and measured latency.

* ``recurrent`` (c, ``_seed_recurrent.py``): LSTM and GRU classifiers on ``digits_seq``
  and a Fashion-MNIST subset read row by row, 80 % and 90 % fewer parameters by
  hidden-unit pruning (one_shot, iterative, agp schedules) vs AGP magnitude pruning of
  the recurrent weights, at equal fine-tune epochs; latency timed in quiet windows.

Baselines are trained with the real CLI (``inferprune train``, one per seed and data
set, cached outside git) as ``search_quality.py`` does. The script pauses whenever
``/tmp/inferprune-quiet`` exists (latency benchmarks run on the same machine) and runs
torch on one thread. Results go to ``benchmarks/results/seed_methods_<part>.{json,md}``.
Run from the repository root::

    .venv/bin/python benchmarks/seed_methods.py --part schedules            # ~20 min
    .venv/bin/python benchmarks/seed_methods.py --part schedules --quick    # smoke run
    .venv/bin/python benchmarks/seed_methods.py --part hybrid --seeds 0 1   # ~30 min
    .venv/bin/python benchmarks/seed_methods.py --part recurrent            # ~12 min
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import _seed_hybrid
import _seed_recurrent
import _seed_schedules
import torch

logger = logging.getLogger("benchmarks.seed_methods")

QUIET_FILE = Path("/tmp/inferprune-quiet")
RESULTS = Path(__file__).parent / "results"
PARTS = {"schedules": _seed_schedules, "hybrid": _seed_hybrid, "recurrent": _seed_recurrent}
"""Part name → its module: ``add_arguments(parser)``, ``run(args, wait)`` → report,
``markdown(report)``."""


def wait_for_quiet() -> None:
    """Return once no latency benchmark asks the machine to be quiet."""
    while QUIET_FILE.exists():
        logger.info("%s exists: waiting", QUIET_FILE)
        time.sleep(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=sorted(PARTS), required=True)
    parser.add_argument("--quick", action="store_true", help="one seed, short, to a temp dir")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    for module in PARTS.values():
        module.add_arguments(parser)
    args = parser.parse_args()
    if args.quick:
        args.out_dir = Path(tempfile.mkdtemp(prefix="seed_methods-"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)
    part = PARTS[args.part]
    report = part.run(args, wait_for_quiet)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    name = f"seed_methods_{args.part}"
    (args.out_dir / f"{name}.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out_dir / f"{name}.md").write_text(part.markdown(report))
    print(args.out_dir / f"{name}.md")


if __name__ == "__main__":
    main()
