"""A task's data checked before any cell trains: the training split, the label set, and every
eval set (columns, empty splits, labels the model will never see). Its output marks the task's
data good; every training job waits for all of them, so a bad file anywhere stops the study
while nothing has trained."""
from __future__ import annotations

from pathlib import Path

from ..plan.specs import CheckDataSpec
from ..records import write_json
from ..staged import staged_meta
from ..tasks import task_type


def check_task_data(spec: CheckDataSpec, data_dirs: dict[str, Path], out: Path) -> dict:
    task = spec.data
    ttype = task_type(task["type"])
    train = ttype.load_rows(task, data_dirs[task["dataset"]], task["train_split"], task.get("train_max_examples"),
                            task["dataset"])
    labels = ttype.label_list(task, train, staged_meta(data_dirs[task["dataset"]]))
    counts = {"train": len(train)}
    for name, ev in task["eval"].items():
        rows = ttype.load_rows(task, data_dirs[ev["dataset"]], ev["split"], ev.get("max_examples"), ev["dataset"])
        ttype.check_labels(task, rows, labels, f"tasks.{spec.task}.eval.{name}")
        counts[name] = len(rows)
    selection = task.get("selection")
    if selection and not selection["reported"]:
        rows = ttype.load_rows(task, data_dirs[selection["dataset"]], selection["split"], selection.get("max_examples"),
                               selection["dataset"])
        ttype.check_labels(task, rows, labels, f"tasks.{spec.task}.validation")
        counts["selection"] = len(rows)
    summary = {"task": spec.task, "examples": counts, "labels": labels}
    write_json(out, summary)
    return summary
