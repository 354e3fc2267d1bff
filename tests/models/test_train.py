"""Fine-tuning, evaluation and BatchNorm recalibration on a tiny learnable problem."""

from __future__ import annotations

import copy
import functools
import math
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from models.data._split import TensorSplit
from models.errors import DataError, TrainingDivergedError
from models.train import (
    TrainProgress,
    evaluate,
    fine_tune,
    recalibrate_batchnorm,
    stale_statistics_share,
)

NUM_CLASSES = 4


def quadrant_split(n: int, seed: int, shift: float = 0.0) -> TensorSplit:
    """8×8 grey images whose class is the quadrant that is brightest."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    images = torch.rand(n, 1, 8, 8, generator=g) * 0.5
    for q in range(NUM_CLASSES):
        row, col = divmod(q, 2)
        images[labels == q, :, row * 4 : row * 4 + 4, col * 4 : col * 4 + 4] += 0.5
    return TensorSplit(images + shift, labels, (1, 8, 8))


def tiny_cnn(seed: int = 0) -> nn.Sequential:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Linear(64, NUM_CLASSES),
        )


class FixedLogits(nn.Module):
    """Gives every sample the same logits, whatever the input."""

    def __init__(self, logits: list[float]) -> None:
        super().__init__()
        self.register_buffer("logits", torch.tensor(logits))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(x.shape[0], -1)


class NaNOnCall(nn.Module):
    """Wraps a model and poisons its output on the ``n``-th forward pass."""

    def __init__(self, inner: nn.Module, n: int) -> None:
        super().__init__()
        self.inner = inner
        self.n = n
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        out = self.inner(x)
        return out * math.nan if self.calls == self.n else out


@pytest.fixture(scope="module")
def train_split() -> TensorSplit:
    return quadrant_split(512, seed=1)


@pytest.fixture(scope="module")
def test_split() -> TensorSplit:
    return quadrant_split(256, seed=2)


@pytest.fixture(scope="module")
def trained(train_split: TensorSplit) -> nn.Module:
    model = tiny_cnn()
    fine_tune(model, train_split, epochs=4, lr=0.05)
    return model


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# fine_tune ---------------------------------------------------------------------------


def test_fine_tune_learns_a_learnable_problem(trained: nn.Module, test_split: TensorSplit) -> None:
    before = evaluate(tiny_cnn(), test_split)
    after = evaluate(trained, test_split)
    assert before.top1 < 0.5
    assert after.top1 > 0.9
    assert after.loss < before.loss
    assert not trained.training


def test_fine_tune_reports_what_it_did(train_split: TensorSplit) -> None:
    result = fine_tune(tiny_cnn(), train_split, steps=10)
    assert result.steps == 10
    assert result.epochs == pytest.approx(10 / 8)
    assert not result.stopped
    assert math.isfinite(result.final_loss) and result.final_loss > 0
    assert result.seconds > 0


def test_same_seed_gives_identical_weights_and_different_seed_does_not(
    train_split: TensorSplit,
) -> None:
    start = nn.Sequential(tiny_cnn(), nn.Dropout(0.2))  # dropout: randomness in the model
    a, b, c = copy.deepcopy(start), copy.deepcopy(start), copy.deepcopy(start)
    rng_before = torch.get_rng_state()
    fine_tune(a, train_split, steps=8, batch_size=32, seed=3)
    fine_tune(b, train_split, steps=8, batch_size=32, seed=3)
    fine_tune(c, train_split, steps=8, batch_size=32, seed=4)
    assert torch.equal(torch.get_rng_state(), rng_before)  # global RNG left alone
    assert same_weights(a, b)
    assert not same_weights(a, c)
    assert not same_weights(a, start)


@pytest.mark.parametrize(
    ("samples", "kwargs", "steps", "epochs"),
    [
        (128, {"epochs": 2}, 16, 2.0),
        (128, {"epochs": 0.5}, 4, 0.5),
        (128, {"epochs": 0.3}, 2, 0.25),  # 2.4 steps rounds to 2
        (128, {"steps": 12}, 12, 1.5),
        (130, {"epochs": 1}, 8, 1.0),  # the incomplete last batch is dropped
        (10, {"epochs": 3}, 3, 3.0),  # smaller than a batch: one batch per epoch
    ],
)
def test_epochs_and_steps_count_batches(
    samples: int, kwargs: dict[str, float], steps: int, epochs: float
) -> None:
    seen: list[TrainProgress] = []
    result = fine_tune(
        tiny_cnn(), quadrant_split(samples, seed=5), batch_size=16, on_step=seen.append, **kwargs
    )
    assert result.steps == steps == len(seen)
    assert result.epochs == pytest.approx(epochs)
    assert [p.step for p in seen] == list(range(1, steps + 1))
    assert {p.total_steps for p in seen} == {steps}
    assert seen[-1].epoch == pytest.approx(epochs)


@pytest.mark.parametrize("kwargs", [{}, {"epochs": 1, "steps": 3}, {"epochs": 0}, {"steps": 0}])
def test_fine_tune_wants_exactly_one_positive_length(
    train_split: TensorSplit, kwargs: dict[str, float]
) -> None:
    with pytest.raises(ValueError):
        fine_tune(tiny_cnn(), train_split, **kwargs)


def test_learning_rate_follows_a_cosine_down_to_near_zero(train_split: TensorSplit) -> None:
    seen: list[TrainProgress] = []
    fine_tune(tiny_cnn(), train_split, steps=40, lr=0.1, batch_size=8, on_step=seen.append)
    lrs = [p.lr for p in seen]
    assert lrs[0] == pytest.approx(0.1)
    assert lrs[20] == pytest.approx(0.05)  # halfway down at half time
    assert all(later <= earlier for earlier, later in zip(lrs, lrs[1:], strict=False))
    assert lrs[-1] < 0.002


def test_huge_learning_rate_raises_diverged_naming_the_step(train_split: TensorSplit) -> None:
    model = tiny_cnn()
    with pytest.raises(TrainingDivergedError, match=r"step \d+ of 200.*[Ll]ower the learning"):
        fine_tune(model, train_split, steps=200, lr=1e6)
    assert not model.training


def test_nan_loss_raises_at_the_step_it_happens(train_split: TensorSplit) -> None:
    model = NaNOnCall(tiny_cnn(), n=3)
    with pytest.raises(TrainingDivergedError, match="step 3 of 10"):
        fine_tune(model, train_split, steps=10)
    assert not model.training


def read_losses_every(steps: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Read losses back every ``steps`` steps, as on an accelerator, on the CPU."""
    from models.train import _finetune

    deferred = functools.partial(_finetune.LossReads, every=steps)
    monkeypatch.setattr(_finetune, "LossReads", deferred)


def test_deferred_loss_reads_still_name_the_step_whose_loss_was_nan(
    train_split: TensorSplit, monkeypatch: pytest.MonkeyPatch
) -> None:
    read_losses_every(4, monkeypatch)
    seen: list[TrainProgress] = []
    fine_tune(tiny_cnn(), train_split, steps=10, on_step=seen.append)
    losses = [p.loss for p in seen]
    assert all(math.isfinite(v) for v in losses)  # the first step is read at once
    # steps 1, 5 and 9 end a read: the steps after each show the loss it read
    assert losses[0:4] == [losses[0]] * 4 and losses[4:8] == [losses[4]] * 4
    assert losses[8:] == [losses[8]] * 2 and len({losses[0], losses[4], losses[8]}) == 3
    with pytest.raises(TrainingDivergedError, match="step 3 of 10"):  # read at step 5
        fine_tune(NaNOnCall(tiny_cnn(), n=3), train_split, steps=10)
    with pytest.raises(TrainingDivergedError, match="step 10 of 10"):  # read after the loop
        fine_tune(NaNOnCall(tiny_cnn(), n=10), train_split, steps=10)


def test_deferred_loss_reads_give_the_same_weights_and_final_loss(
    train_split: TensorSplit, monkeypatch: pytest.MonkeyPatch
) -> None:
    at_once, deferred = tiny_cnn(), tiny_cnn()
    every_step = fine_tune(at_once, train_split, steps=30)
    read_losses_every(4, monkeypatch)
    every_fourth = fine_tune(deferred, train_split, steps=30)
    assert same_weights(at_once, deferred)
    assert every_fourth.final_loss == every_step.final_loss


def test_frozen_parameters_are_not_trained(train_split: TensorSplit) -> None:
    model = tiny_cnn()
    model[0].requires_grad_(False)
    first_conv = copy.deepcopy(model[0])
    fine_tune(model, train_split, steps=5)
    assert same_weights(model[0], first_conv)


def test_labels_beyond_the_model_outputs_are_a_data_error() -> None:
    split = quadrant_split(128, seed=6)
    split.labels[0] = NUM_CLASSES + 3
    with pytest.raises(DataError, match="classes"):
        fine_tune(tiny_cnn(), split, epochs=1, batch_size=128)


def test_should_stop_ends_training_early(train_split: TensorSplit) -> None:
    polls = 0

    def stop_after_three() -> bool:
        nonlocal polls
        polls += 1
        return polls > 3

    model = tiny_cnn()
    result = fine_tune(model, train_split, steps=50, should_stop=stop_after_three)
    assert result.stopped
    assert result.steps == 3
    assert result.epochs == pytest.approx(3 / 8)
    assert not model.training

    untouched = tiny_cnn()
    result = fine_tune(untouched, train_split, steps=50, should_stop=lambda: True)
    assert result.stopped and result.steps == 0 and math.isnan(result.final_loss)
    assert same_weights(untouched, tiny_cnn())


# distillation ------------------------------------------------------------------------


def test_distillation_follows_the_teacher_and_leaves_it_unchanged(
    train_split: TensorSplit, test_split: TensorSplit
) -> None:
    # A teacher that always says "class 2": with distill_weight=1 the labels are ignored,
    # so a student that learned from the teacher predicts class 2 everywhere.
    teacher = nn.Sequential(tiny_cnn(seed=7), FixedLogits([0.0, 0.0, 8.0, 0.0]))
    teacher[0].train()
    teacher_before = copy.deepcopy(teacher)
    student = tiny_cnn()
    fine_tune(student, train_split, steps=20, batch_size=32, teacher=teacher, distill_weight=1.0)
    assert same_weights(teacher, teacher_before)
    assert teacher[0].training  # its mode is restored
    with torch.no_grad():
        inputs, _ = next(test_split.batches(256))
        predictions = student(inputs).argmax(1)
    assert (predictions == 2).float().mean() > 0.95


def test_distillation_mixed_with_labels_still_learns(
    train_split: TensorSplit, test_split: TensorSplit, trained: nn.Module
) -> None:
    student = tiny_cnn(seed=8)
    fine_tune(student, train_split, epochs=2, lr=0.05, teacher=trained, distill_weight=0.5)
    assert evaluate(student, test_split).top1 > 0.8


def test_teacher_cannot_be_the_student(train_split: TensorSplit) -> None:
    model = tiny_cnn()
    with pytest.raises(ValueError, match="teacher"):
        fine_tune(model, train_split, steps=1, teacher=model)


# evaluate ----------------------------------------------------------------------------


def test_evaluate_always_class_zero_scores_the_class_zero_share(
    test_split: TensorSplit,
) -> None:
    model = FixedLogits([1.0, 0.0, 0.0, 0.0]).train()
    result = evaluate(model, test_split, batch_size=100)
    share = (test_split.labels == 0).float().mean().item()
    assert result.samples == 256
    assert result.top1 == pytest.approx(share, abs=1e-12)
    assert result.top5 == 1.0  # at most five classes: the label is always among them
    z = math.log(math.e + 3)
    assert result.loss == pytest.approx(share * (z - 1) + (1 - share) * z, rel=1e-5)
    assert not model.training


def test_evaluate_top5_counts_labels_among_the_five_best() -> None:
    labels = torch.arange(10).repeat(3)
    split = TensorSplit(torch.zeros(30, 1, 2, 2), labels, (1, 2, 2))
    result = evaluate(FixedLogits([-float(i) for i in range(10)]), split)  # ranks 0, 1, …, 9
    assert result.top1 == pytest.approx(0.1)
    assert result.top5 == pytest.approx(0.5)


def test_evaluate_sums_batches_as_one_pass_over_the_split_would(
    trained: nn.Module, test_split: TensorSplit
) -> None:
    result = evaluate(trained, test_split, batch_size=48)  # 256 samples: a partial last batch
    inputs, labels = next(test_split.batches(256))
    with torch.no_grad():
        logits = trained(inputs)
    assert result.top1 == (logits.argmax(1) == labels).float().mean().item()
    expected_loss = F.cross_entropy(logits, labels).item()
    assert result.loss == pytest.approx(expected_loss, rel=1e-5)


def test_evaluate_limit_counts_batches(test_split: TensorSplit) -> None:
    assert evaluate(tiny_cnn(), test_split, batch_size=50, limit=2).samples == 100


def test_evaluate_empty_split_is_a_data_error() -> None:
    empty = TensorSplit(torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long), (1, 8, 8))
    with pytest.raises(DataError):
        evaluate(tiny_cnn(), empty)


# recalibrate_batchnorm ---------------------------------------------------------------


def test_recalibration_matches_the_data_and_restores_momentum(
    trained: nn.Module,
) -> None:
    model = copy.deepcopy(trained)
    model[4].momentum = 0.3
    shifted = quadrant_split(512, seed=1, shift=3.0)
    weights_before = {k: v.clone() for k, v in model.named_parameters()}
    seen = recalibrate_batchnorm(model, shifted, batches=20, batch_size=64)
    assert seen == 512  # 8 batches are all there is
    with torch.no_grad():
        inputs, _ = next(shifted.batches(512))
        conv_out = model[0](inputs)
    expected_mean = conv_out.mean(dim=(0, 2, 3))
    assert torch.allclose(model[1].running_mean, expected_mean, atol=1e-4)
    assert not torch.allclose(trained[1].running_mean, expected_mean, atol=0.1)
    assert (model[1].momentum, model[4].momentum) == (0.1, 0.3)
    assert all(torch.equal(v, weights_before[k]) for k, v in model.named_parameters())
    assert not model.training


def test_recalibration_recovers_accuracy_on_shifted_inputs(trained: nn.Module) -> None:
    model = copy.deepcopy(trained)
    shifted_test = quadrant_split(256, seed=2, shift=3.0)
    stale = evaluate(model, shifted_test).top1
    recalibrate_batchnorm(model, quadrant_split(512, seed=1, shift=3.0))
    assert evaluate(model, shifted_test).top1 > max(stale + 0.2, 0.8)


def test_recalibration_counts_limited_batches_and_is_a_no_op_without_batchnorm(
    train_split: TensorSplit,
) -> None:
    assert recalibrate_batchnorm(tiny_cnn(), train_split, batches=3, batch_size=32) == 96
    plain = nn.Sequential(nn.Flatten(), nn.Linear(64, NUM_CLASSES)).train()
    assert recalibrate_batchnorm(plain, train_split) == 0
    assert not plain.training


def test_recalibration_that_fails_leaves_statistics_as_they_were(trained: nn.Module) -> None:
    model = copy.deepcopy(trained)
    wrong_shape = TensorSplit(torch.rand(64, 3, 8, 8), torch.zeros(64), (3, 8, 8))
    with pytest.raises(RuntimeError):
        recalibrate_batchnorm(model, wrong_shape)
    assert same_weights(model, trained)
    assert model[1].momentum == 0.1


def test_the_stale_share_is_what_the_slowest_running_average_still_holds(
    trained: nn.Module,
) -> None:
    model = copy.deepcopy(trained)
    assert stale_statistics_share(model, 0) == 1.0
    assert stale_statistics_share(model, 44) == pytest.approx(0.9**44)  # PyTorch's 0.1
    assert stale_statistics_share(model, 44) < 0.01 < stale_statistics_share(model, 43)
    model[4].momentum = 0.05  # the slower layer decides
    assert stale_statistics_share(model, 10) == pytest.approx(0.95**10)
    model[1].momentum = None  # a cumulative average keeps every batch it ever saw
    assert stale_statistics_share(model, 10_000) == 1.0
    plain = nn.Sequential(nn.Flatten(), nn.Linear(64, NUM_CLASSES))
    assert stale_statistics_share(plain, 0) == 0.0
    with pytest.raises(ValueError, match="steps"):
        stale_statistics_share(trained, -1)


@pytest.mark.parametrize("steps", [1, 5])
def test_the_last_batch_alone_can_set_the_running_statistics(
    trained: nn.Module, train_split: TensorSplit, steps: int
) -> None:
    """Whatever the running averages held before, the last step's batch sets them, and
    the weights train exactly as without it."""
    stale = copy.deepcopy(trained)
    stale[1].running_mean.add_(5.0)  # as a pruned model's: far from what the layer sees
    stale[4].momentum = 0.3
    runs = {}
    for name, start, last in [
        ("fresh", trained, True),
        ("stale", stale, True),
        ("plain", stale, False),
    ]:
        model = copy.deepcopy(start)
        fine_tune(model, train_split, steps=steps, lr=0.05, last_batch_statistics=last)
        runs[name] = model
        assert (model[1].momentum, model[4].momentum) == (0.1, start[4].momentum)
    fresh, stale_run, plain = runs["fresh"], runs["stale"], runs["plain"]
    for layer in (1, 4):
        for buffer in ("running_mean", "running_var"):
            ours = getattr(stale_run[layer], buffer)
            assert torch.equal(ours, getattr(fresh[layer], buffer))
    assert not torch.allclose(plain[1].running_mean, stale_run[1].running_mean)
    weights = [n for n, _ in trained.named_parameters()]
    for name in weights:
        assert torch.equal(stale_run.state_dict()[name], plain.state_dict()[name])


def test_a_bad_label_in_a_later_batch_is_caught_before_it_reaches_the_device() -> None:
    """By fine_tune and evaluate alike (labels are checked on the CPU before they travel)."""

    class TwoBatches:
        """A split whose second batch has a label the model cannot output."""

        def __len__(self) -> int:
            return 8

        def batches(self, batch_size: int, **_: object) -> Any:
            x = torch.zeros(4, 1, 8, 8)
            yield x, torch.zeros(4, dtype=torch.long)
            yield x, torch.tensor([0, 1, NUM_CLASSES + 1, 0])

    with pytest.raises(DataError, match=f"labels range from 0 to {NUM_CLASSES + 1}"):
        fine_tune(tiny_cnn(), TwoBatches(), steps=2, batch_size=4)
    with pytest.raises(DataError, match=f"labels range from 0 to {NUM_CLASSES + 1}"):
        evaluate(tiny_cnn(), TwoBatches(), batch_size=4)


def test_a_fine_tune_in_pieces_follows_one_cosine_with_lr_window(
    train_split: TensorSplit,
) -> None:
    whole: list[TrainProgress] = []
    fine_tune(tiny_cnn(), train_split, steps=12, lr=0.1, batch_size=8, on_step=whole.append)
    pieces: list[TrainProgress] = []
    model = tiny_cnn()
    for start, steps in ((0, 5), (5, 7)):
        fine_tune(
            model,
            train_split,
            steps=steps,
            lr=0.1,
            batch_size=8,
            start_step=start,
            lr_window=(start, 12),
            on_step=pieces.append,
        )
    assert [p.lr for p in pieces] == pytest.approx([p.lr for p in whole])
    with pytest.raises(ValueError, match="lr_window"):
        fine_tune(tiny_cnn(), train_split, steps=5, lr_window=(10, 12))
