"""Activation-based criteria: mean, L2 norm and APoZ of each channel's activation maps.

Statistics are taken where a channel is consumed (the input of the next convolution or
linear layer, so after BN and the non-linearity), on calibration batches, through
forward hooks. A group's score for a channel averages its consumers' statistics.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from models.criteria._base import Batch, Criterion

__all__ = ["ActivationStatistic"]

_CONSUMERS = (nn.modules.conv._ConvNd, nn.Linear)


class ActivationStatistic(Criterion):
    """Score channels by a statistic of the activations their consumers receive.

    ``statistic`` is one of ``mean`` (mean absolute activation of the map), ``l2`` (L2
    norm of the activation map) or ``apoz`` (the share of positive activations, i.e. one
    minus the Average Percentage of Zeros of Hu et al. 2016). Each is averaged over the
    calibration samples.
    """

    needs_data = True

    def __init__(self, statistic: str) -> None:
        if statistic not in ("mean", "l2", "apoz"):
            raise ValueError(f"unknown activation statistic {statistic!r}")
        self.statistic = statistic
        self.name = {"mean": "activation_mean", "l2": "activation_l2", "apoz": "apoz"}[statistic]
        self._sums: dict[nn.Module, torch.Tensor] = {}
        self._counts: dict[nn.Module, int] = {}
        self._reducer = tp.importance.GroupMagnitudeImportance(normalizer=None)

    def prepare(self, model: nn.Module, batches: list[Batch]) -> None:
        if not batches:
            raise ValueError(f"criterion {self.name!r} needs calibration batches")
        with contextlib.ExitStack() as hooks, torch.no_grad():  # handles remove themselves
            for m in model.modules():
                if isinstance(m, _CONSUMERS):
                    hooks.enter_context(m.register_forward_hook(self._hook))
            for x, _ in batches:
                model(x)

    def release(self, model: nn.Module) -> None:
        self._sums.clear()
        self._counts.clear()

    def _hook(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        x = args[0].detach()
        if x.dim() == 2:
            x = x.unsqueeze(-1)  # a feature vector is a 1-pixel map per channel
        elif x.dim() > 3 and isinstance(module, nn.Linear):
            x = x.reshape(-1, x.shape[-1], 1)
        flat = x.transpose(0, 1).flatten(2)  # (C, N, pixels)
        if self.statistic == "mean":
            per_sample = flat.abs().mean(2)
        elif self.statistic == "l2":
            per_sample = flat.pow(2).sum(2).sqrt()
        else:
            per_sample = (flat > 0).float().mean(2)
        value, count = per_sample.sum(1), per_sample.shape[1]
        if module in self._sums and self._sums[module].shape == value.shape:
            self._sums[module] += value
            self._counts[module] += count
        else:
            self._sums[module] = value.clone()
            self._counts[module] = count

    @torch.no_grad()
    def __call__(self, group: Any) -> torch.Tensor | None:
        scores: list[torch.Tensor] = []
        root_idxs: list[list[int]] = []
        for i, (dep, idxs) in enumerate(group):
            layer = dep.target.module
            if dep.handler not in (
                tp.pruner.function.prune_conv_in_channels,
                tp.pruner.function.prune_linear_in_channels,
            ):
                continue
            if layer not in self._sums:
                continue
            stats = self._sums[layer] / max(self._counts[layer], 1)
            scores.append(stats[list(idxs)])
            root_idxs.append(group[i].root_idxs)
        if not scores:
            return None
        return self._reducer._reduce(scores, root_idxs)
