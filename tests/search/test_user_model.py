"""prune_module: a model of the user's own classes (residual add, concatenation,
depthwise convolution) searched from Python with torch DataLoaders."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from models.cost import measure_cost
from models.data import load_dataset
from models.errors import DataError
from models.train import fine_tune
from search import SpecError, prune_module


class TwoBranchNet(nn.Module):
    """A small CNN of the user's own: a residual block, a depthwise convolution and two
    branches joined by concatenation."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.res = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16))
        self.depthwise = nn.Sequential(
            nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16), nn.ReLU()
        )
        self.left = nn.Sequential(nn.Conv2d(16, 24, 1), nn.BatchNorm2d(24), nn.ReLU())
        self.right = nn.Sequential(nn.Conv2d(16, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Linear(32, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(x + self.res(x))
        x = self.depthwise(x)
        x = torch.cat([self.left(x), self.right(x)], dim=1)
        return self.head(x.mean((2, 3)))


def _loader(split: object, shuffle: bool = False) -> DataLoader:
    inputs, labels = zip(*split.batches(600), strict=True)  # type: ignore[attr-defined]
    dataset = TensorDataset(torch.cat(inputs), torch.cat(labels))
    return DataLoader(dataset, batch_size=50, shuffle=shuffle)


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, DataLoader, DataLoader]:
    torch.manual_seed(0)
    data = load_dataset("synthetic", input_shape=(3, 16, 16))
    model = TwoBranchNet(data.num_classes)
    fine_tune(model, data.train, epochs=2, lr=0.05, batch_size=32)
    return model, _loader(data.train, shuffle=True), _loader(data.val)


def test_a_users_own_module_is_searched_and_delivered(
    trained: tuple[nn.Module, DataLoader, DataLoader],
) -> None:
    model, train, val = trained
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = prune_module(
        model,
        torch.zeros(3, 16, 16),
        train=train,
        val=val,
        budget={"flops": 0.5},
        compute_epochs=2.0,
        settings={"pruning": {"round_to": 4}, "finetune": {"batch_size": 32}},
    )
    # the caller's module is untouched; the delivered one is narrower, of the same class
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert isinstance(result.model, TwoBranchNet)
    macs = measure_cost(result.model, (3, 16, 16)).macs
    assert macs <= 0.5 * measure_cost(model, (3, 16, 16)).macs
    report = result.report
    assert report["status"] == "succeeded" and report["dataset"] == "python"
    assert report["arch"] == "TwoBranchNet" and report["best"]["macs"] == macs
    assert report["compute"]["epochs"] <= 2.0 + 1e-6
    assert result.front and all("val_accuracy" in point for point in result.front)
    # the concatenation's branches and the residual block stay consistent: it runs,
    # and its ONNX export gives the same outputs without inferprune
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        expected = result.model(x).numpy()
    session = ort.InferenceSession(result.onnx, providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    buffer = io.BytesIO()
    torch.save(result.model.state_dict(), buffer)  # a plain module: saved as usual


def test_bad_calls_are_refused_with_what_to_do(
    trained: tuple[nn.Module, DataLoader, DataLoader],
) -> None:
    model, train, val = trained
    example = torch.zeros(1, 3, 16, 16)
    with pytest.raises(SpecError, match="say how much to search"):
        prune_module(model, example, train=train, val=val, budget={"flops": 0.5})
    with pytest.raises(SpecError, match="give one image"):
        prune_module(model, torch.zeros(16, 16), train=train, val=val, trials=2)
    with pytest.raises(DataError, match=r"train: batch 0 is not an \(inputs, labels\) pair"):
        prune_module(model, example, train=[torch.zeros(2, 3, 16, 16)], val=val, trials=2)
    with pytest.raises(DataError, match="labels of shape"):
        bad = [(torch.zeros(2, 3, 16, 16), torch.zeros(2, 3))]
        prune_module(model, example, train=bad, val=val, trials=2)
    with pytest.raises(SpecError, match="val has label 12, but the model gives 10 classes"):
        labels = [(torch.zeros(4, 3, 16, 16), torch.tensor([0, 1, 2, 12]))]
        prune_module(model, example, train=train, val=labels, trials=2)
    with pytest.raises(DataError, match="more than 1,000 bytes"):
        prune_module(model, example, train=train, val=val, trials=2, max_data_bytes=1000)
    with pytest.raises(SpecError, match="settings may not hold 'budget'"):
        prune_module(model, example, train=train, val=val, trials=2, settings={"budget": {}})


def test_the_readme_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)
    example = next(block for block in blocks if "prune_module(" in block)
    monkeypatch.chdir(tmp_path)
    exec(compile(example, "README.md", "exec"), {"__name__": "readme"})  # noqa: S102
    session = ort.InferenceSession(
        (tmp_path / "net-pruned.onnx").read_bytes(), providers=["CPUExecutionProvider"]
    )
    got = session.run(None, {session.get_inputs()[0].name: np.zeros((1, 3, 16, 16), np.float32)})
    assert got[0].shape == (1, 4)
    assert (tmp_path / "net-pruned.pt").stat().st_size > 0
