"""Staging jobs: a dataset, a model or the COMET model into resources/ (the only network use)."""
from __future__ import annotations

from pathlib import Path

from ..metrics.comet import stage_comet
from ..plan.specs import StageCometSpec, StageDatasetSpec, StageModelSpec
from ..staging.datasets import stage_dataset
from ..staging.models import stage_model


def dataset(spec: StageDatasetSpec, out: Path) -> str:
    meta = stage_dataset(spec.name, spec.source, Path(out).parent)
    return f"staged {meta['name']}: " + ", ".join(f"{s} {n}" for s, n in meta["splits"].items())


def model(spec: StageModelSpec, out: Path) -> str:
    staged = stage_model(spec.name, spec.source, Path(out).parent)
    return f"staged {staged['name']} from {staged['resolved']} ({staged['kind']})"


def comet(spec: StageCometSpec, out: Path) -> str:
    return str(stage_comet(spec.source, Path(out).parent))
