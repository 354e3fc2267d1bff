"""Plan helpers shared by the models tests."""

from __future__ import annotations

import random

from models.prune import Plan, PruningGraph


def random_plan(graph: PruningGraph, seed: int) -> Plan:
    """Return a random valid plan that prunes at least one group."""
    rng = random.Random(seed)
    widths = {g.name: rng.choice(g.allowed_widths()) for g in graph.groups}
    prunable = [g for g in graph.groups if g.prunable]
    if prunable and all(widths[g.name] == g.channels for g in prunable):
        widths[prunable[0].name] = prunable[0].min_channels
    return Plan(widths)
