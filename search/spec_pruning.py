"""The pruning section of a job spec: how a plan becomes a pruned model (criterion,
rounding, ignored layers, a schedule for the final fine-tune, a hybrid sequence)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from models.names import ScheduleName
from search.spec_limits import (
    MAX_IGNORED_LAYERS,
    MAX_LAYER_NAME_CHARS,
    MAX_SCHEDULE_STEPS,
    Criterion,
)
from search.spec_settings import SpecSection
from search.steps import MAX_SEQUENCE_STEPS, PruningStepSpec

__all__ = ["LayerName", "PruningSettings"]


LayerName = Annotated[str, Field(min_length=1, max_length=MAX_LAYER_NAME_CHARS)]


class PruningSettings(SpecSection):
    """How a plan becomes a pruned model."""

    criterion: Criterion = Field("l1", description="Which channels of a group go first.")
    round_to: int = Field(
        8,
        ge=1,
        le=256,
        description="Kept channels are multiples of this unless a layer is narrower.",
    )
    ignored_layers: tuple[LayerName, ...] = Field(
        (),
        max_length=MAX_IGNORED_LAYERS,
        description="Module paths whose output channels are never pruned (at most "
        f"{MAX_IGNORED_LAYERS:,}).",
    )
    schedule: ScheduleName = Field(
        "one_shot",
        description="How the chosen plan is reached over the final fine-tune (the search's "
        "trials always prune at once): one_shot (prune, then fine-tune), iterative (prune "
        "a share, fine-tune, repeat; `criteria` may switch between rounds), dropnet "
        "(iterative, lowest mean post-activation first), agp (Zhu & Gupta's cubic "
        "schedule), one_cycle (one-cycle pruning along its curve), while_training (soft "
        "filter pruning: the plan's worth zeroed at intervals while training goes on, cut "
        "at the end), adaptive (the rate follows validation accuracy within "
        "budget.max_accuracy_drop). The gradual ones cut within the first half of the "
        "fine-tune and train the rest at the plan's widths; every schedule ends at the "
        "plan's widths exactly.",
    )
    schedule_steps: int | None = Field(
        None,
        ge=1,
        le=MAX_SCHEDULE_STEPS,
        description="Pruning steps of the schedule (null: its default: iterative 3 or one "
        "per criterion, dropnet 5, the others 10; one_cycle and adaptive need at least 2); "
        "not for one_shot.",
    )
    criteria: tuple[Criterion, ...] = Field(
        (),
        max_length=MAX_SCHEDULE_STEPS,
        examples=[["taylor", "fpgm"]],
        description="The iterative schedule's criteria, its rounds split between them in "
        "order (taylor then fpgm: saliency first, then similarity); empty: `criterion` "
        "throughout. The search's trials use `criterion`.",
    )
    sequence: tuple[PruningStepSpec, ...] | None = Field(
        None,
        min_length=1,
        max_length=MAX_SEQUENCE_STEPS,
        examples=[
            [
                {"granularity": "channel", "criterion": "l1", "amount": 0.3},
                {"granularity": "kernel", "criterion": "fpgm", "amount": 0.5},
            ]
        ],
        description="Hybrid pruning: ordered steps, each removing a share (`amount`) of "
        "what is left at one granularity (channel, kernel or weight) by one criterion; "
        "given widths (a plan) stand for the channel steps. Kernel pruning (convolutional "
        "models) zeroes k×k kernels; weight pruning (recurrent models) zeroes the "
        "smallest LSTM/GRU input-to-hidden and hidden-to-hidden weights until each matrix "
        "has `amount` zeros (AGP: gradual over the first half of a following fine-tune, "
        "at once without one). Reports give non-zero parameters and effective MACs beside "
        "the dense ones, which (with latency) stay as they are on dense runtimes unless a "
        "whole channel goes; zeros are kept through every later training. Not with a "
        f"schedule other than one_shot; at most {MAX_SEQUENCE_STEPS} steps. In a search "
        "the searched widths (channels or hidden units) are the channel step (channel "
        "steps, if given, come first and rank by `criterion`; their amounts are the "
        "search's to choose) and the kernel or weight steps prune every candidate after "
        "it, at once (weight steps too: trials are short); budgets hold the dense MACs "
        "and parameters.",
    )

    depth: bool | None = Field(
        None,
        description="Whether the search may also remove residual blocks whole (depth): "
        "per stage, how many of its removable blocks go is searched beside the widths "
        "(blocks whose branch, zeroed, leaves the shortcut: ResNet basic blocks, "
        "MobileNetV2's inverted residuals with a shortcut). null: yes for a one_shot "
        "schedule without a sequence, no otherwise (gradual schedules and kernel steps "
        "know widths only); true with one of those is refused; false: widths only.",
    )

    @model_validator(mode="after")
    def _schedule_settings(self) -> PruningSettings:
        if self.schedule == "one_shot" and self.schedule_steps is not None:
            raise ValueError(
                "pruning.schedule_steps: one_shot prunes once; pick a schedule that prunes "
                "several times (e.g. iterative) or leave the steps out"
            )
        if self.criteria and self.schedule != "iterative":
            raise ValueError(
                "pruning.criteria: one criterion per round belongs to the iterative schedule; "
                f"{self.schedule} uses pruning.criterion"
            )
        if self.schedule in ("one_cycle", "adaptive") and self.schedule_steps == 1:
            raise ValueError(
                f"pruning.schedule_steps: {self.schedule} needs at least 2 steps (a start "
                "and an end)"
            )
        if self.schedule_steps is not None and len(self.criteria) > self.schedule_steps:
            raise ValueError(
                f"pruning.schedule_steps: {len(self.criteria)} criteria need at least "
                f"{len(self.criteria)} steps"
            )
        return self

    @model_validator(mode="after")
    def _depth_needs_one_shot(self) -> PruningSettings:
        if self.depth and self.schedule != "one_shot":
            raise ValueError(
                f"pruning.depth: the {self.schedule} schedule reaches widths gradually and "
                "cannot remove blocks; use schedule one_shot, or set depth to false"
            )
        if self.depth and self.sequence is not None:
            raise ValueError(
                "pruning.depth: a hybrid sequence prunes widths and kernels, not blocks; "
                "leave the sequence out, or set depth to false"
            )
        return self

    @model_validator(mode="after")
    def _sequence_prunes_at_once(self) -> PruningSettings:
        if self.sequence is not None and self.schedule != "one_shot":
            raise ValueError(
                f"pruning.sequence: a sequence prunes at once; it cannot follow the "
                f"{self.schedule} schedule (use schedule one_shot, or no sequence)"
            )
        if self.sequence is None:
            return self
        # in a search the searched widths are the channel step: it comes first, ranked by
        # pruning.criterion, and the kernel or weight steps follow each candidate
        kinds = [step.granularity for step in self.sequence]
        sparse = [k != "channel" for k in kinds]
        if not any(sparse):
            raise ValueError(
                "pruning.sequence: a search chooses the channel widths itself, so a "
                "sequence of channel steps alone adds nothing; add a kernel step for a "
                'convolutional model (e.g. {"granularity": "kernel", "criterion": "l1", '
                '"amount": 0.5}) or a weight step for a recurrent one (e.g. '
                '{"granularity": "weight", "criterion": "l1", "amount": 0.8}), or leave '
                "the sequence null"
            )
        if "channel" in kinds[sparse.index(True) :]:
            raise ValueError(
                "pruning.sequence: in a search the searched widths are the channel step "
                "and come first; put channel steps before the kernel steps and weight "
                "steps, or prune one model in that order with `inferprune apply "
                "--sequence FILE`"
            )
        for number, step in enumerate(self.sequence, 1):
            if step.granularity == "channel" and step.criterion != self.criterion:
                raise ValueError(
                    f"pruning.sequence: step {number} ranks channels by {step.criterion}, "
                    "but in a search the searched widths are the channel step, ranked by "
                    f"pruning.criterion ({self.criterion}); set pruning.criterion to "
                    f"{step.criterion} or drop the step"
                )
        return self
