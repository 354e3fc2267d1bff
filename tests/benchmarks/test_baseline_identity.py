"""search_quality.py: a baseline is known by its tensors, not by its file's bytes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from _quality_baselines import same_baseline, tensors_sha256  # noqa: E402

_SAVE = """
import sys, numpy as np
from safetensors.numpy import save_file
rng = np.random.default_rng(0)
tensors = {"a.weight": rng.standard_normal((4, 3)), "b.bias": rng.standard_normal(5)}
save_file(tensors, sys.argv[1], metadata={f"key{i}": str(i) for i in range(12)})
"""


def test_the_same_weights_saved_by_two_processes_have_one_tensor_hash(tmp_path: Path) -> None:
    paths = [tmp_path / "one.safetensors", tmp_path / "two.safetensors"]
    for seed, path in zip(("1", "2"), paths, strict=True):
        env = {"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"}
        subprocess.run([sys.executable, "-c", _SAVE, str(path)], check=True, env=env)
    assert tensors_sha256(paths[0]) == tensors_sha256(paths[1])


def test_different_weights_have_different_tensor_hashes(tmp_path: Path) -> None:
    first, second = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_file({"w": torch.zeros(3)}, str(first))
    save_file({"w": torch.tensor([0.0, 0.0, 1e-7])}, str(second))
    assert tensors_sha256(first) != tensors_sha256(second)


def test_baselines_are_matched_by_tensors_then_file_hash_then_accuracies() -> None:
    def base(**train: object) -> dict[str, object]:
        return {"train": {"val_accuracy": 0.9, "test_accuracy": 0.89, **train}}

    assert same_baseline(base(tensors_sha256="x", weights_sha256="f1"), base(tensors_sha256="x"))
    assert not same_baseline(base(tensors_sha256="x"), base(tensors_sha256="y"))
    # an older report without the tensor hash: a different file hash proves nothing, the
    # accuracies on the same val and test splits decide
    assert same_baseline(base(weights_sha256="f1"), base(tensors_sha256="x", weights_sha256="f2"))
    other = {"train": {"val_accuracy": 0.9, "test_accuracy": 0.88}}
    assert not same_baseline(base(weights_sha256="f1"), other)
    assert not same_baseline({"train": {}}, {"train": {}})


def test_one_shot_plans_are_reused_only_from_the_same_baseline(tmp_path: Path) -> None:
    from search_quality import reusable_plans, reused_choice

    ours = {"tensors_sha256": "abc", "test_accuracy": 0.9}
    runs = [
        {"method": "fastnas", "budget": 0.125, "seed": 1, "plan": {"g": 4}, "choose_s": 1076.0},
        {"method": "tpe", "budget": 0.125, "seed": 1, "plan": {"g": 8}, "choose_s": 900.0},
        {"method": "fastnas", "budget": 0.125, "seed": 2, "plan": {"g": 6}, "choose_s": 1000.0},
    ]
    same = tmp_path / "same.json"
    same.write_text(json.dumps({"baselines": {"1": {"train": ours}}, "runs": runs}))
    other = tmp_path / "other.json"
    retrained = {"tensors_sha256": "def", "test_accuracy": 0.9}
    other.write_text(json.dumps({"baselines": {"1": {"train": retrained}}, "runs": runs}))

    found = reusable_plans([other, same], seed=1, trained=ours)
    assert set(found) == {("fastnas", 0.125)}  # a search's plan needs its checkpoint
    choice = reused_choice(*found[("fastnas", 0.125)])
    assert dict(choice.plan) == {"g": 4}
    assert choice.seconds == 1076.0
    assert choice.details == {"plan_reused_from": "same.json"}
    assert reusable_plans([other], seed=1, trained=ours) == {}


def test_combining_keeps_each_baselines_first_record_and_the_latest_finish() -> None:
    from _quality_analysis import combine

    path = Path(__file__).resolve().parents[2] / "benchmarks/results"
    first = json.loads((path / "search_quality_compute_digits_resnet56.json").read_text())
    later = json.loads(json.dumps(first))  # the same baselines, measured again under load
    for baseline in later["baselines"].values():
        baseline["measured"]["latency_ms"] *= 4
    later["machine"]["finished_at"] = "2999-01-01T00:00:00+00:00"
    earlier = json.loads(json.dumps(first))
    earlier["machine"]["finished_at"] = "2000-01-01T00:00:00+00:00"
    merged = combine([first, later, earlier])
    assert merged["baselines"] == first["baselines"]
    assert merged["machine"]["finished_at"] == "2999-01-01T00:00:00+00:00"
    assert merged["machine"]["cpu"] == earlier["machine"]["cpu"]  # the rest from the last
