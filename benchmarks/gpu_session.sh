#!/usr/bin/env bash
# The GPU checks the open issues ask for, in two steps, for a session lent a device machine
# (/work/.library/device/README.md: 15 minutes of device time, one command at most 10).
#
# 1. HERE, before the device call:    bash benchmarks/gpu_session.sh prepare [BASELINES]
#    - downloads as cp312 manylinux x86_64 wheels into .whl/ every runtime and `bench`
#      dependency of pyproject.toml, recursively, that the device image lacks (the image's
#      packages: benchmarks/gpu_session_packages.txt, copied from KINDS.md);
#    - copies into .devdata/cache/ the Fashion-MNIST subset (.npz) and the grid's cached
#      resnet56 baselines: from /tmp/inferprune-bench, or BASELINES (a baselines.tar that
#      grid-a brought back, or a folder holding the files);
#    - ignores .whl/ and .devdata/ in .git/info/exclude, checks that what travels stays
#      under 64 MiB, and prints the device tool's `run` call for each part.
# 2. THERE, as that call's command:   bash benchmarks/gpu_session.sh run PART
#    installs the wheels into /tmp/site, prints nvidia-smi and the versions, runs PART and
#    writes its results and PART.log into $OUT. Each part is meant to end in ~8 minutes and
#    stops itself after $GPU_SESSION_LIMIT seconds (default 560, inside timeout_s=600);
#    with a machine's start that is ~10 minutes of device time: one part per session.
#      checks  the CUDA-relevant tests, an LSTM fine-tuned on CUDA with its recurrent zeros
#              held (with and without amp), then benchmarks/gpu.py (~5 min, unverified)
#      grid-a  issue #11's proof grid (resnet56 on Fashion-MNIST, 3 seeds: the search, random
#              search, the five one-shot baselines, the distilled uniform plan (the ablation)
#              and the unpruned yardstick),
#              budgets 0.125 and 0.0625, six cells at once (timing unverified)
#      grid-b  the same grid at budget 0.25, three cells at once (timing unverified)
#    Run grid-a first; it brings back baselines.tar (the baselines both halves must share:
#    GPU training is not bit-reproducible, and --combine refuses halves whose baselines
#    differ). Before grid-b: bash benchmarks/gpu_session.sh prepare FILES_AT/baselines.tar
#    A grid stopped at its limit still brings back PART-cells.tar.gz: the finished cells'
#    reports, which --combine accepts like whole ones.
#
# Afterwards commit, from the files the calls brought back (under files_at):
#   checks  gpu.json and gpu.md, copied to benchmarks/results/ (checks.log's verdicts go
#           into the commit message or the issue, not into git);
#   grids   what this writes and updates in benchmarks/results/:
#             .venv/bin/python benchmarks/search_quality.py --combine \
#               A/search_quality_compute_resnet56_gpu_a.json \
#               B/search_quality_compute_resnet56_gpu_b.json \
#               --name search_quality_compute_resnet56_gpu
#           (search_quality_compute_resnet56_gpu.json and .md, search_quality_summary.json).
#   Never .whl/, .devdata/, the logs, the tarballs or a part's own search_quality_summary.json.
set -euo pipefail
cd "$(dirname "$0")/.."

WHEELS=.whl
DATA=.devdata
CACHE=$DATA/cache
PACKAGES=benchmarks/gpu_session_packages.txt
BENCH_CACHE=/tmp/inferprune-bench # search_quality.py's default --cache-dir
SUBSET=fashion_mnist-train12000-test10000
BASELINES=resnet56_cifar-$SUBSET-1x28x28-e15-s # + SEED.safetensors / SEED.json
SEEDS=(0 1 2)
GRID=(
    --device cuda --arch resnet56_cifar --dataset fashion_mnist --input-shape 1,28,28
    --compute-epochs 20 --base-epochs 15 --round-to 4 --train-subset 12000 --test-subset 10000
    --methods tpe random uniform global sensitivity fastnas depth uniform_distilled unpruned
    --seeds "${SEEDS[@]}"
)
CHECK_TESTS=(
    tests/models/test_device.py tests/models/test_latency.py tests/models/test_train.py
    tests/models/test_recurrent_masks.py tests/search/test_device_placement.py
    tests/service/test_devices.py
)
LIMIT=${GPU_SESSION_LIMIT:-560}

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    exit 2
}

# -- prepare (here) ----------------------------------------------------------------------

# The runtime and bench dependencies missing on the device, as wheels in $1: the closure
# is walked through the wheels' own metadata (markers read as on the device's Python
# 3.12), stopping at what the device has. A version installed in .venv is preferred.
download_wheels() {
    .venv/bin/python - "$1" "$PACKAGES" <<'PY'
import email.parser
import subprocess
import sys
import tomllib
import zipfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

wheels, listed = Path(sys.argv[1]), Path(sys.argv[2])
wheels.mkdir(exist_ok=True)
lines = (line.split("#")[0].strip() for line in listed.read_text().splitlines())
on_device = {canonicalize_name(line) for line in lines if line}
DEVICE = {
    "python_version": "3.12",
    "python_full_version": "3.12.3",
    "os_name": "posix",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}
PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in range(17, 40)]
PLATFORMS += ["manylinux2014_x86_64", "manylinux1_x86_64"]
PIP = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
DOWNLOAD = [
    *PIP,
    "download",
    "--no-deps",
    "--only-binary=:all:",
    "-d",
    str(wheels),
    "--python-version",
    "3.12",
    "--implementation",
    "cp",
    *(f"--platform={p}" for p in PLATFORMS),
]


def pip(*args):
    return subprocess.run([*PIP, *args], capture_output=True).returncode == 0


def wheel_of(name):
    return next(
        (
            p
            for p in wheels.glob("*.whl")
            if canonicalize_name(parse_wheel_filename(p.name)[0]) == name
        ),
        None,
    )


def fetch(req):
    """Return the wheel of req in wheels/, downloading (or building) it if needed."""
    name = canonicalize_name(req.name)
    try:
        local = version(req.name)
    except PackageNotFoundError:
        local = None
    if local and not req.specifier.contains(local, prereleases=True):
        local = None
    pins = [f"{req.name}=={local}"] * bool(local) + [f"{req.name}{req.specifier}"]
    have = wheel_of(name)
    if have:
        got = str(parse_wheel_filename(have.name)[1])
        if got == local or (local is None and req.specifier.contains(got, prereleases=True)):
            return have
    if have:
        have.unlink()  # two versions of one package stop the install there
    for pin in pins:
        if pip(*DOWNLOAD, pin):
            return wheel_of(name)
        # no cp312 wheel on PyPI (an sdist only): build one here; pure Python runs there too
        if pip("wheel", "--no-deps", "-w", str(wheels), pin):
            built = wheel_of(name)
            if all(tag.platform == "any" for tag in parse_wheel_filename(built.name)[3]):
                print(f"built {built.name} here: PyPI has no wheel of it")
                return built
            built.unlink()
    sys.exit(f"no cp312 manylinux x86_64 wheel of {req} on PyPI, nor a pure-Python build")


def requirements(wheel):
    with zipfile.ZipFile(wheel) as archive:
        meta = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        text = archive.read(meta).decode()
    return email.parser.Parser().parsestr(text).get_all("Requires-Dist") or []


project = tomllib.loads(Path("pyproject.toml").read_text())["project"]
todo = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["bench"]]
seen: dict[str, set[str]] = {}  # name -> extras whose requirements were followed
kept: dict[str, Path] = {}
while todo:
    req = todo.pop(0)
    name = canonicalize_name(req.name)
    if name in on_device:
        continue
    extras = ({""} | set(req.extras)) - seen.get(name, set())
    if not extras:
        continue
    seen.setdefault(name, set()).update(extras)
    kept[name] = fetch(req)
    for line in requirements(kept[name]):
        dep = Requirement(line)
        if dep.marker is None or any(dep.marker.evaluate({**DEVICE, "extra": e}) for e in extras):
            todo.append(dep)
for stale in set(wheels.glob("*.whl")) - set(kept.values()):
    stale.unlink()
total = sum(p.stat().st_size for p in kept.values())
print(f"{len(kept)} wheels, {total / 2**20:.1f} MiB in {wheels}/:")
print("  " + " ".join(sorted("==".join(p.name.split("-")[:2]) for p in kept.values())))
PY
}

# The Fashion-MNIST subset and the grid's baselines, from $1 (a tar or a folder) if given.
copy_data() {
    mkdir -p "$CACHE"
    [[ -f $CACHE/$SUBSET.npz ]] || .venv/bin/python - "$BENCH_CACHE" "$CACHE" <<'PY'
# search_quality.py's subset (made if not cached), compressed: same arrays, about half the bytes
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, "benchmarks")
from search_quality import make_subset

bench, cache = Path(sys.argv[1]), Path(sys.argv[2])
source = bench / "fashion_mnist-train12000-test10000.npz"
if not source.exists():
    make_subset("fashion_mnist", (1, 28, 28), "/usr/share/datasets", 12000, 10000, cache)
    source = cache / source.name
with np.load(source) as arrays:
    subset = dict(arrays)
np.savez_compressed(cache / source.name, **subset)
PY
    local from=${1:-$BENCH_CACHE}
    if [[ -f $from ]]; then
        tar -xf "$from" -C "$CACHE"
        from=$CACHE
    fi
    local seed
    for seed in "${SEEDS[@]}"; do # a baseline is its weights and the report beside them
        if [[ -f $from/$BASELINES$seed.safetensors && -f $from/$BASELINES$seed.json ]]; then
            [[ $from -ef $CACHE ]] || cp -u "$from/$BASELINES$seed".{safetensors,json} "$CACHE/"
        fi
    done
    echo "$CACHE: $(ls "$CACHE" | tr '\n' ' ')"
    local missing=()
    for seed in "${SEEDS[@]}"; do
        [[ -f $CACHE/$BASELINES$seed.json ]] || missing+=("$seed")
    done
    if ((${#missing[@]})); then
        echo "no cached baseline for seed(s) ${missing[*]}: grid-a trains them on the GPU" \
            "(bring its baselines.tar back here before grid-b)"
    fi
}

ignore_here() {
    mkdir -p .git/info
    touch .git/info/exclude
    local path
    for path in "/$WHEELS/" "/$DATA/"; do
        grep -qxF "$path" .git/info/exclude || echo "$path" >>.git/info/exclude
    done
}

mib() { awk '{s += $1} END {printf "%.1f", s / 1048576}'; }

check_size() {
    local tree wheels data
    tree=$(git ls-files -co --exclude-standard -z | xargs -0 stat -c %s | mib)
    wheels=$(find "$WHEELS" -type f -printf '%s\n' | mib)
    data=$(find "$DATA" -type f -printf '%s\n' | mib)
    echo "travels: tree $tree MiB + $WHEELS $wheels MiB + $DATA $data MiB (limit 64 MiB)"
    awk -v t="$tree" -v w="$wheels" -v d="$data" 'BEGIN {exit !(t + w + d < 63)}' ||
        {
            echo "too much to travel: drop baselines from $DATA or wheels from $WHEELS" >&2
            exit 1
        }
}

prepare() {
    ignore_here
    download_wheels "$WHEELS"
    copy_data "${1:-}"
    check_size
    cat <<EOF

Device calls, one per session (each ~10 min of the 15 with the machine's start):
  run(command="bash benchmarks/gpu_session.sh run checks", carry=["$WHEELS"], timeout_s=600)
  run(command="bash benchmarks/gpu_session.sh run grid-a", carry=["$WHEELS", "$DATA"], timeout_s=600)
  run(command="bash benchmarks/gpu_session.sh run grid-b", carry=["$WHEELS", "$DATA"], timeout_s=600)
Then give_back unless you rerun at once.
EOF
}

# -- run PART (there) --------------------------------------------------------------------

left() { echo $((LIMIT - SECONDS - $1)); } # seconds to the part's limit, keeping $1 back

set_up_device() {
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site "$WHEELS"/*.whl
    export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
    # search_quality.py trains baselines with the `inferprune` beside sys.executable
    local python cli
    python=$(python3 -c 'import sys; print(sys.executable)')
    cli=${python%/*}/inferprune
    if [[ ! -e $cli ]]; then
        printf '#!%s\nimport sys\nfrom service.cli import main\nsys.exit(main())\n' "$python" \
            >"$cli" && chmod +x "$cli" || echo "cannot write $cli: no baseline can be trained" >&2
    fi
    nvidia-smi || true
    python3 -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__,
"cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(),
torch.cuda.get_device_name() if torch.cuda.is_available() else "NO GPU")'
    python3 -c 'import service.cli, search, models'
    python3 -m pip check | grep -v '^No broken' || true # what the carried wheels lack, if anything
}

# An LSTM fine-tuned on CUDA with 60 % of its recurrent weights removed: the zeros stay
# zeros, the rest learns, cuDNN's RNN runs with its flat weights intact (no compaction
# warning), with and without amp.
lstm_zeros_held() {
    timeout 90 python3 - <<'PY'
import warnings

import torch
from torch.profiler import ProfilerActivity, profile

from models.data import load_dataset
from models.prune import PruningStep, magnitude_masks, recurrent_weights
from models.train import evaluate, fine_tune
from models.zoo import build_model
from search.hybrid import zeros_held

assert torch.cuda.is_available() and torch.backends.cudnn.is_available()
data = load_dataset("digits_seq", input_shape=(8, 8), seed=0)
sequence = [PruningStep("weight", "l1", 0.6)]
failed = []
for amp in (False, True):
    try:
        torch.manual_seed(0)
        model = build_model("lstm_classifier", 10, (8, 8)).cuda()
        magnitude_masks(model, 0.6).apply(model)
        before = {p: w.detach().clone() for p, w in recurrent_weights(model).items()}
        with (
            warnings.catch_warnings(record=True) as caught,
            profile(activities=[ProfilerActivity.CPU]) as prof,
        ):
            warnings.simplefilter("always")
            with zeros_held(model, sequence):
                fine_tune(model, data.train, epochs=25, lr=0.1, amp=amp)
        ops = {event.key for event in prof.key_averages()}
        after = recurrent_weights(model)
        zeros_kept = all(bool(after[p][w == 0].eq(0).all()) for p, w in before.items())
        learned = all(not torch.equal(after[p], w) for p, w in before.items())
        share = [round(float(w.eq(0).float().mean()), 3) for w in after.values()]
        compaction = [str(w.message) for w in caught if "contiguous chunk" in str(w.message)]
        top1 = evaluate(model, data.val).top1
        print(
            f"amp={amp}: zeros kept {zeros_kept}, zero shares {share}, trained {learned}, "
            f"cuDNN RNN {'aten::_cudnn_rnn' in ops}, compaction warnings {len(compaction)}, "
            f"val top1 {top1:.3f}"
        )
        assert zeros_kept and learned and "aten::_cudnn_rnn" in ops and not compaction
        assert top1 > 0.5, "the LSTM did not learn"
    except Exception as error:  # report both settings, then fail
        print(f"amp={amp}: FAILED: {error!r}")
        failed.append(amp)
print("LSTM zeros held on CUDA:", "FAILED" if failed else "OK")
raise SystemExit(1 if failed else 0)
PY
}

part_checks() {
    local status=0
    timeout 150 python3 -m pytest -q -p no:cacheprovider "${CHECK_TESTS[@]}" || status=1
    lstm_zeros_held || status=1
    timeout "$(left 5)" python3 benchmarks/gpu.py --device cuda --out-dir "$OUT" || status=1
    return $status
}

# Half $1 of the grid: budgets $2, $3 cells at once. The cells' own reports and logs, and
# the baselines, come back as tarballs also when the grid stops at the part's limit.
part_grid() {
    local half=$1 budgets=$2 jobs=$3 status=0
    local cells=/tmp/gpu-session-cells-$half
    rm -rf "$cells" && mkdir -p "$cells"
    TMPDIR=$cells timeout "$(left 20)" python3 benchmarks/search_quality.py "${GRID[@]}" \
        --budgets $budgets --jobs "$jobs" --data-root "$PWD/$DATA" --cache-dir "$PWD/$CACHE" \
        --name "search_quality_compute_resnet56_gpu_$half" --out-dir "$OUT" || status=$?
    local baselines=("$CACHE/$BASELINES"*)
    if [[ -e ${baselines[0]} ]]; then
        tar -cf "$OUT/baselines.tar" -C "$CACHE" "${baselines[@]##*/}" || status=1
    fi
    (cd "$cells" && find . -name '*.json' -o -name '*.log' |
        tar -czf "$OUT/grid-$half-cells.tar.gz" -T -) || status=1
    return $status
}

run_part() {
    : "${OUT:?run PART is for the device machine, where OUT is set}"
    local part=$1
    exec > >(tee "$OUT/$part.log") 2>&1
    echo "gpu_session.sh run $part at $(git rev-parse --short HEAD 2>/dev/null || echo '?')," \
        "$(date -u)"
    set_up_device
    case $part in
    checks) part_checks ;;
    grid-a) part_grid a "0.125 0.0625" 6 ;;
    grid-b) part_grid b 0.25 3 ;;
    *) usage ;;
    esac
}

case ${1:-} in
prepare) prepare "${2:-}" ;;
run) run_part "${2:-}" ;;
*) usage ;;
esac
