"""The splits a task reads (`task_reads`: training, reported eval sets, the unreported selection
set), and the check that a local dataset declares a split it is asked for. Parse-time checks
(plan/paths.py, plan/retention.py) and the data check job (jobs/check_data.py) read them from here."""
from __future__ import annotations

from typing import NamedTuple

from ..errors import ConfigError, did_you_mean
from ..staging.datasets import declared_splits


class SplitRead(NamedTuple):
    """One split a (validated) task reads."""
    role: str                # "train", "eval" (a reported eval set) or "selection" (the unreported selection set)
    name: str | None         # the eval set's name (role "eval")
    dataset: str
    split: str
    max_examples: int | None

    @property
    def key(self) -> str:
        """The key under tasks.<task> that names it: train_split, eval.<name> or validation."""
        return {"train": "train_split", "selection": "validation"}.get(self.role) or f"eval.{self.name}"

    @property
    def split_key(self) -> str:
        """The key under tasks.<task> that names its split: train_split, eval.<name>.split or validation.split."""
        return self.key if self.role == "train" else f"{self.key}.split"


def task_reads(task: dict) -> list[SplitRead]:
    """Every split a validated task reads, in this order: its training split, each reported eval set
    (config order), its unreported selection set (a reported one is an eval set already)."""
    reads = [SplitRead("train", None, task["dataset"], task["train_split"], task.get("train_max_examples"))]
    reads += [SplitRead("eval", e, ev["dataset"], ev["split"], ev.get("max_examples")) for e, ev in task["eval"].items()]
    selection = task.get("selection")
    if selection and not selection["reported"]:
        reads.append(SplitRead("selection", None, selection["dataset"], selection["split"], selection.get("max_examples")))
    return reads


def check_split_declared(key: str, name: str, dataset: dict, split: str) -> None:
    """The splits a local dataset will have are known from its `splits` (and `split_ratio`): `split`
    (named at config key `key`) must be one of them; a hub dataset's are found out when it is staged."""
    declared = declared_splits(dataset)
    if declared is not None and split not in declared:
        raise ConfigError(f"{key}: dataset {name!r} has no split {split!r}{did_you_mean(split, declared)}")
