"""Pruning schedules: every one ends at the plan, physically smaller on the way."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from models.data import DataSplits, load_dataset
from models.errors import ModelsError, PlanError
from models.io import CheckpointInfo, export_onnx, load_pruned, save_pruned
from models.names import SCHEDULE_NAMES
from models.prune import Plan, PruningGraph, apply_plan, build_pruning_graph, output_channels
from models.schedules import (
    AGP_PRUNING_SHARE,
    PRUNING_SHARE,
    SCHEDULES,
    Adaptive,
    Feedback,
    ScheduleConfig,
    ScheduleContext,
    ScheduledModel,
    agp_progress,
    make_schedule,
    one_cycle_progress,
    train_with_schedule,
    widths_at,
)
from models.train import evaluate, fine_tune
from models.zoo import build_model

SHAPE = (3, 16, 16)
CLASSES = 4


@dataclass(frozen=True)
class Task:
    model: nn.Module
    data: DataSplits
    graph: PruningGraph
    plan: Plan
    calib: list[tuple[torch.Tensor, torch.Tensor]]

    def context(self, graph: PruningGraph | None = None) -> ScheduleContext:
        return ScheduleContext(
            graph=graph or self.graph,
            train=self.data.train,
            calibration=self.calib,
            val=self.data.val,
            recalibration_batches=2,
        )


@pytest.fixture(scope="module")
def task() -> Task:
    """The zoo's tiny CNN, briefly trained on a 4-class synthetic task."""
    torch.manual_seed(0)
    model = build_model("tiny_cnn", CLASSES, SHAPE)
    data = load_dataset(
        f"synthetic:classes={CLASSES},samples=256,size=16",
        input_shape=SHAPE,
        num_classes=CLASSES,
    )
    fine_tune(model, data.train, epochs=3, lr=0.05, batch_size=32)
    graph = build_pruning_graph(model, SHAPE, round_to=8)
    plan = Plan({"stem.0": 8, "conv_a": 8, "down.0": 16})
    calib = list(data.train.batches(32, shuffle=True, limit=2))
    return Task(model, data, graph, plan, calib)


def run(
    task: Task,
    config: ScheduleConfig,
    total_steps: int = 6,
    *,
    criterion: str = "l1",
    train: bool = True,
    graph: PruningGraph | None = None,
    plan: Plan | None = None,
    windows: list[tuple[int, int]] | None = None,
) -> ScheduledModel:
    def trainer(model: nn.Module, start: int, steps: int, window: tuple[int, int]) -> None:
        if windows is not None:
            windows.append(window)
        if train:
            fine_tune(
                model,
                task.data.train,
                steps=steps,
                lr=0.02,
                batch_size=32,
                start_step=start,
                lr_window=window,
            )

    return train_with_schedule(
        task.model,
        plan or task.plan,
        make_schedule(config),
        total_steps=total_steps,
        criterion=criterion,
        context=task.context(graph),
        trainer=trainer,
    )


def widths_of(model: nn.Module, graph: PruningGraph) -> dict[str, int]:
    modules = dict(model.named_modules())
    return {g.name: output_channels(modules[g.name]) for g in graph.groups}


def config_for(name: str) -> ScheduleConfig:
    # one_cycle's curve is flat at first: with 3 cuts its second already reaches the plan
    steps = None if name == "one_shot" else 4 if name == "one_cycle" else 3
    return ScheduleConfig(name, steps=steps, max_accuracy_drop=0.5)


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
def test_every_schedule_ends_at_the_plan_and_shrinks_the_model_on_the_way(
    task: Task, name: str
) -> None:
    before = copy.deepcopy(task.model.state_dict())
    result = run(task, config_for(name))

    assert widths_of(result.model, task.graph) == dict(task.plan)
    assert result.history[-1]["progress"] == 1.0
    assert sum(r["train_steps"] for r in result.history) == 6
    full = sum(g.channels for g in task.graph.groups)
    final = sum(task.plan.values())
    channels = [r["channels"] for r in result.history]
    assert channels == sorted(channels, reverse=True)
    assert channels[-1] == final
    if name not in ("one_shot", "while_training"):  # narrower than full, wider than the plan
        assert any(final < c < full for c in channels)  # (while_training zeroes the plan's)
    assert not result.model.training
    x = torch.randn(2, *SHAPE)
    assert torch.isfinite(result.model(x)).all()
    # the unpruned model is untouched
    assert widths_of(task.model, task.graph) == {g.name: g.channels for g in task.graph.groups}
    assert all(torch.equal(before[k], v) for k, v in task.model.state_dict().items())


def test_a_scheduled_model_round_trips_its_checkpoint_and_onnx(task: Task, tmp_path: Path) -> None:
    model = run(task, ScheduleConfig("agp", steps=3)).model
    info = CheckpointInfo("tiny_cnn", CLASSES, SHAPE, task.plan, round_to=8)
    loaded, read = load_pruned(save_pruned(model, tmp_path / "m.safetensors", info))
    x = torch.randn(3, *SHAPE)
    with torch.no_grad():
        expected = model(x)
        assert torch.allclose(loaded(x), expected, atol=1e-6)
    assert read.plan == task.plan

    session = ort.InferenceSession(export_onnx(model, SHAPE), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-4)


def test_iterative_switches_from_saliency_to_similarity(task: Task) -> None:
    result = run(
        task, ScheduleConfig("iterative", steps=2, criteria=("taylor", "fpgm")), train=False
    )
    assert [r["criterion"] for r in result.history] == ["taylor", "fpgm"]

    # the same two cuts by hand: half way by taylor, then the rest by fpgm
    half = apply_plan(
        task.model, widths_at(task.graph, task.plan, 0.5), "taylor", task.calib, input_shape=SHAPE
    )
    by_hand = apply_plan(half, task.plan, "fpgm", task.calib, input_shape=SHAPE)
    taylor_only = apply_plan(half, task.plan, "taylor", task.calib, input_shape=SHAPE)
    got = result.model.state_dict()
    assert all(torch.equal(got[k], v) for k, v in by_hand.state_dict().items() if "conv" in k)
    assert not all(
        torch.equal(got[k], v) for k, v in taylor_only.state_dict().items() if "conv" in k
    )


def test_agp_widths_follow_the_cubic_curve(task: Task) -> None:
    graph = build_pruning_graph(task.model, SHAPE, round_to=1)
    plan = Plan({"stem.0": 4, "conv_a": 6, "down.0": 8})
    steps, total = 4, 16
    result = run(
        task, ScheduleConfig("agp", steps=steps), total, train=False, graph=graph, plan=plan
    )

    span = round(total * AGP_PRUNING_SHARE)
    cuts = result.history[1:]
    assert [r["step"] for r in cuts] == [round(k * span / steps) for k in range(1, steps + 1)]
    for k, record in enumerate(cuts, start=1):
        assert record["progress"] == pytest.approx(1 - (1 - k / steps) ** 3)
        expected = 0
        for g in graph.groups:
            ideal = g.channels - (1 - (1 - k / steps) ** 3) * (g.channels - plan[g.name])
            assert abs(widths_at(graph, plan, record["progress"])[g.name] - ideal) <= 0.5
            expected += widths_at(graph, plan, record["progress"])[g.name]
        assert record["channels"] == expected
    assert result.history[-1]["train_steps"] == total - span  # recovers at the plan
    assert agp_progress(0.5) == pytest.approx(0.875)  # fast first: 7/8 of the cut by half time


def test_one_cycle_starts_slow_and_settles_within_the_pruning_share(task: Task) -> None:
    assert one_cycle_progress(0.0) == 0.0 and one_cycle_progress(1.0) == 1.0
    assert one_cycle_progress(0.2) < 0.1 < 0.9 < one_cycle_progress(0.7)
    result = run(task, ScheduleConfig("one_cycle", steps=4), 8, train=False)
    assert [r["step"] for r in result.history] == [0, 1, 2, 3, 4]
    assert [r["progress"] for r in result.history] == [
        0.0,
        *(pytest.approx(one_cycle_progress(k / 4), abs=1e-6) for k in (1, 2, 3)),
        1.0,
    ]
    assert result.history[-1]["train_steps"] == 4  # the second half trains at the plan


def test_prune_fine_tune_repeat_restarts_the_lr_and_gradual_pruning_decays_it_once(
    task: Task,
) -> None:
    rounds: list[tuple[int, int]] = []
    run(task, ScheduleConfig("iterative", steps=3), 12, train=False, windows=rounds)
    # each round a fine-tune of its own, the last (at the plan) the longest
    assert rounds == [(0, 2), (0, 2), (0, 8)]
    gradual: list[tuple[int, int]] = []
    run(task, ScheduleConfig("one_cycle", steps=3), 12, train=False, windows=gradual)
    assert gradual == [(0, 12), (2, 12), (4, 12), (6, 12)]  # one decay the cuts happen along


@pytest.mark.parametrize("name", ["iterative", "dropnet", "agp", "one_cycle", "adaptive"])
def test_no_cut_in_the_second_half_which_trains_at_the_plan(task: Task, name: str) -> None:
    total = 20
    result = run(task, config_for(name), total, train=False)
    final = sum(task.plan.values())
    cuts = [r["step"] for r in result.history if r["cut"]]
    assert cuts and max(cuts) <= total * PRUNING_SHARE
    at_plan = sum(r["train_steps"] for r in result.history if r["channels"] == final)
    assert at_plan >= total * (1 - PRUNING_SHARE)


def test_while_training_zeroes_softly_and_its_final_cut_changes_nothing(task: Task) -> None:
    seen: list[nn.Module] = []

    def record(model: nn.Module, start: int, steps: int, window: tuple[int, int]) -> None:
        assert widths_of(model, task.graph) == {g.name: g.channels for g in task.graph.groups}
        seen.append(copy.deepcopy(model))

    result = train_with_schedule(
        task.model,
        task.plan,
        make_schedule(ScheduleConfig("while_training", steps=3)),
        total_steps=6,
        criterion="l1",
        context=task.context(),
        trainer=record,
    )
    assert [r["soft"] for r in result.history] == [True, True, True, False]
    assert [r["step"] for r in result.history] == [0, 2, 4, 6]
    assert result.history[-1]["train_steps"] == 0  # no retraining after the cut
    assert all(r["channels"] == sum(task.plan.values()) for r in result.history)
    before = seen[-1].eval()  # full shape, the plan's worth of channels zeroed
    modules = dict(before.named_modules())
    for group in task.graph.groups:
        filters = modules[group.name].weight.flatten(1).abs().sum(1)  # type: ignore[union-attr]
        assert int((filters > 0).sum()) == task.plan[group.name]
    x = torch.randn(8, *SHAPE)
    with torch.no_grad():
        assert torch.allclose(result.model(x), before(x), atol=1e-5)


def test_soft_masks_of_tensors_too_large_to_tag_at_once_are_the_same(
    task: Task, monkeypatch: pytest.MonkeyPatch
) -> None:
    from models.schedules import _soft

    context = task.context()
    scores = _soft.channel_scores(task.model, task.graph, "l1", context)
    once = _soft.removed_entries(task.model, task.plan, scores, task.graph, context)
    monkeypatch.setattr(_soft, "_EXACT", 7)  # every tensor tagged in base-7 digits
    digits = _soft.removed_entries(task.model, task.plan, scores, task.graph, context)
    assert once.keys() == digits.keys() and once
    assert all(torch.equal(once[name], digits[name]) for name in once)
    assert any(0 < int(m.sum()) < m.numel() for m in once.values())


def test_while_training_ends_as_accurate_as_one_shot_on_a_learnable_task(task: Task) -> None:
    # as first built (physical cuts until the end, the last one untrained) it ended at 79 %
    one_shot = evaluate(run(task, config_for("one_shot"), 12).model, task.data.val).top1
    soft = run(task, ScheduleConfig("while_training", steps=4), 12).model
    assert widths_of(soft, task.graph) == dict(task.plan)
    assert evaluate(soft, task.data.val).top1 >= one_shot - 0.05


def test_dropnet_takes_the_same_share_of_what_is_left_by_post_activation(task: Task) -> None:
    graph = build_pruning_graph(task.model, SHAPE, round_to=1)
    plan = Plan({"stem.0": 4, "conv_a": 6, "down.0": 8})
    result = run(task, ScheduleConfig("dropnet", steps=2), 4, train=False, graph=graph, plan=plan)
    assert {r["criterion"] for r in result.history} == {"activation_mean"}
    half = widths_at(graph, plan, 0.5, "geometric")
    assert dict(half) == {"stem.0": 8, "conv_a": 12, "down.0": 16}  # √(P/C) of each left


def test_widths_run_from_full_to_the_plan_never_growing(task: Task) -> None:
    graph, plan = task.graph, task.plan
    assert dict(widths_at(graph, plan, 0.0)) == {g.name: g.channels for g in graph.groups}
    assert widths_at(graph, plan, 1.0) == plan
    previous = widths_at(graph, plan, 0.0)
    for p in np.linspace(0, 1, 11):
        now = widths_at(graph, plan, float(p))
        assert all(now[n] <= previous[n] and graph.group(n).is_allowed(now[n]) for n in now)
        previous = now


# the adaptive controller -------------------------------------------------------------


def test_adaptive_rate_rises_within_tolerance_and_backs_off_outside() -> None:
    steps = 8  # two kept at the plan: the deadline reaches it after 6
    controller = Adaptive(max_accuracy_drop=0.02, steps=steps).moves(80, "l1")
    seen = []
    for accuracy in (0.90, 0.895, 0.90, 0.85, 0.86, 0.9, 0.9, 0.9):
        move = controller.next_move(Feedback(len(seen) * 10, 0.0, accuracy, 0.90))
        assert move is not None
        seen.append(move.progress)
    assert controller.next_move(Feedback(80, 1.0, 0.9, 0.9)) is None
    d = controller.decisions
    assert [x.within for x in d] == [True, True, True, False, False, True, True, True]
    assert d[2].rate > d[1].rate > d[0].rate > 0 and not d[2].forced  # rises while within
    # outside, it backs off: no cut until the deadline's floor catches up, then only that
    assert d[3].rate == 0 and not d[3].forced
    assert 0 < d[4].rate < d[0].rate and d[4].forced
    assert seen == sorted(seen) and seen[-3:] == [1.0, 1.0, 1.0]
    assert all(p >= min(1, (k + 1) / 6) - 1e-9 for k, p in enumerate(seen))  # never behind


def test_adaptive_stays_within_its_tolerance_on_a_learnable_task(task: Task) -> None:
    tolerance = 0.1
    reference = evaluate(task.model, task.data.val).top1
    result = run(task, ScheduleConfig("adaptive", steps=4, max_accuracy_drop=tolerance), 24)
    assert widths_of(result.model, task.graph) == dict(task.plan)
    assert evaluate(result.model, task.data.val).top1 >= reference - tolerance
    for decision in result.decisions:
        if decision["rate"] > 0 and not decision["forced"]:
            assert decision["within"]
    assert all("val_accuracy" in r for r in result.history)


def test_adaptive_needs_a_tolerance_and_a_validation_split(task: Task) -> None:
    with pytest.raises(ModelsError, match="budget.max_accuracy_drop") as err:
        make_schedule(ScheduleConfig("adaptive"))
    assert err.value.fields == ("budget.max_accuracy_drop",)
    context = ScheduleContext(graph=task.graph, train=task.data.train)
    with pytest.raises(ModelsError, match="validation"):
        train_with_schedule(
            task.model,
            task.plan,
            make_schedule(ScheduleConfig("adaptive", max_accuracy_drop=0.01)),
            total_steps=4,
            criterion="l1",
            context=context,
            trainer=lambda model, start, steps, window: None,
        )


# names and settings -------------------------------------------------------------------


def test_the_registry_has_every_schedule_name_once() -> None:
    assert tuple(SCHEDULES) == SCHEDULE_NAMES
    for name in SCHEDULE_NAMES:
        assert make_schedule(config_for(name)).name == name


def test_iterative_takes_a_round_per_criterion_when_its_steps_are_not_given(task: Task) -> None:
    criteria = ("l1", "taylor", "fpgm", "l2")
    result = run(task, ScheduleConfig("iterative", criteria=criteria), 8, train=False)
    assert tuple(r["criterion"] for r in result.history) == criteria


@pytest.mark.parametrize(
    ("config", "field"),
    [
        (ScheduleConfig("gradual"), "pruning.schedule"),
        (ScheduleConfig("one_shot", steps=3), "pruning.schedule_steps"),
        (ScheduleConfig("agp", criteria=("taylor",)), "pruning.criteria"),
        (
            ScheduleConfig("iterative", steps=1, criteria=("taylor", "fpgm")),
            "pruning.schedule_steps",
        ),
        (ScheduleConfig("one_cycle", steps=1), "pruning.schedule_steps"),
        (ScheduleConfig("agp", steps=0), "pruning.schedule_steps"),
    ],
)
def test_bad_settings_name_their_field(config: ScheduleConfig, field: str) -> None:
    with pytest.raises(ModelsError, match=field.replace(".", r"\.")) as err:
        make_schedule(config)
    assert field in err.value.fields


def test_a_schedule_refuses_a_plan_that_removes_blocks(task: Task) -> None:
    # tiny_cnn has no removable block: pretend conv_a is one
    graph = dataclasses.replace(task.graph, blocks=("conv_a",))
    with pytest.raises(PlanError, match="cannot remove blocks \\(conv_a\\)"):
        run(task, config_for("iterative"), graph=graph, plan=Plan({"conv_a": 0}))
