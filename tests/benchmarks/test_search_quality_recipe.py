"""search_quality.py: who distills. The searches as the product does by default, the
one-shot baselines on labels only, each ablation as its name says."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from _quality_settings import Settings  # noqa: E402


def _settings(distill: bool | None = None) -> Settings:
    return Settings(
        trials=4,
        epochs_per_trial=0.5,
        final_epochs=1.0,
        lr=0.01,
        batch_size=64,
        criterion="l1",
        round_to=4,
        base_epochs=1,
        compute_epochs=4.0,
        distill=distill,
    )


def test_the_searches_distill_as_the_product_does_and_the_baselines_do_not() -> None:
    settings = _settings()

    def distills(method: str) -> bool:
        spec = settings.spec(0.25, 0, "tpe", 4.0, None, settings.distills(method))
        return spec.distills

    assert distills("tpe") and distills("random") and distills("uniform_distilled")
    assert not distills("tpe_plain")
    assert not any(distills(m) for m in ("uniform", "global", "sensitivity", "depth"))
    assert not distills("unpruned") and not distills("fastnas")


def test_distill_and_no_distill_set_every_method() -> None:
    assert all(_settings(True).distills(m) for m in ("tpe", "tpe_plain", "uniform"))
    assert not any(_settings(False).distills(m) for m in ("tpe", "uniform_distilled"))
