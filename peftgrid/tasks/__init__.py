"""The TaskType registry: task type name -> the object that knows its columns, metrics, model
class, encoding and evaluation. Nothing outside `peftgrid/tasks/` compares task-type names."""
from __future__ import annotations

from ..errors import ConfigError, did_you_mean
from .base import TaskType
from .classification import SequenceClassification
from .generation import CausalLM, Seq2Seq
from .tokens import TokenClassification

TASK_TYPES: dict[str, TaskType] = {}


def register(ttype: TaskType) -> TaskType:
    """Add a task type (built-in, or from a plugin module: see peftgrid.plugins). A name already
    taken by another class is refused; registering the same class again is a no-op."""
    if not ttype.name:
        raise ValueError(f"{type(ttype).__name__}: a task type needs a name")
    known = TASK_TYPES.get(ttype.name)
    if known is not None and type(known) is not type(ttype):
        raise ValueError(f"task type {ttype.name!r} is already registered (by {type(known).__name__})")
    TASK_TYPES[ttype.name] = ttype
    # a key owned by some types is refused, naming its owners, for the others (TaskType.validate)
    TaskType.key_owners = {key: sorted(t.name for t in TASK_TYPES.values() if key in t.own_keys)
                           for key in sorted({k for t in TASK_TYPES.values() for k in t.own_keys})}
    return ttype


for _builtin in (SequenceClassification(), TokenClassification(), Seq2Seq(), CausalLM()):
    register(_builtin)


def task_type(name: str) -> TaskType:
    if name not in TASK_TYPES:
        raise ConfigError(f"unknown task type {name!r}{did_you_mean(name, TASK_TYPES)}")
    return TASK_TYPES[name]
