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
    return ttype


for _builtin in (SequenceClassification(), TokenClassification(), Seq2Seq(), CausalLM()):
    register(_builtin)


def task_type(name: str) -> TaskType:
    if name not in TASK_TYPES:
        raise ConfigError(f"unknown task type {name!r}{did_you_mean(name, TASK_TYPES)}")
    return TASK_TYPES[name]


def validate_task(where: str, task: dict) -> None:
    """A task entry's type-specific part: a key that other registered types own is refused, naming
    them; then its type's own checks (TaskType.validate, which fills its defaults into `task`)."""
    ttype = task_type(task["type"])
    for key in task:
        owners = sorted(t.name for t in TASK_TYPES.values() if key in t.own_keys)
        if owners and key not in ttype.own_keys:
            raise ConfigError(f"{where}.{key}: only for {', '.join(owners)} tasks, not {ttype.name}")
    ttype.validate(where, task)
