"""Retention sets (issue 20): text the model should still model well after fine-tuning, planned
without torch — where each measurement lives, which model family measures what, and the config
checks of `tasks.<t>.retention`.

A task's `retention: {<set>: {dataset, split, max_examples, max_length}}` scores every reported
cell of the task on each set (rule `retention`, peftgrid/jobs/retention.py), against the pretrained
model scored once per (model, set) (rule `retention_base`). No `retention:` plans nothing.

What a set reads: the `text` column of the staged split, empty documents skipped — every
`format: text` dataset (one document per line), or any other dataset whose rows have a `text`
column (a hub dataset such as WikiText, a csv/tsv/jsonl file with one, CoNLL-U's sentence text);
`format: parallel` has one column per language and is refused here (point a `format: text`
dataset at one language's file). The column is checked by the data check, before training.
"""
from __future__ import annotations

from ..errors import ConfigError, did_you_mean
from .layout import METRICS_FILE
from .splits import check_split_declared

BASE_ROOT = "results/retention/base"
FILES = {"metrics": METRICS_FILE, "per_document": "per_document.tsv", "per_layer": "per_layer.tsv"}
BASE_FILES = {"metrics": FILES["metrics"], "per_document": FILES["per_document"], "hidden": "hidden.safetensors"}
SET_KEYS = ("dataset", "split", "max_examples", "max_length")  # what measuring a set reads of it
# what a model family measures (metrics.tsv `measure`): a loss on the text, or the hidden states' drift only
LM_LOSS, MLM_LOSS, CKA_ONLY = "lm_loss", "mlm_loss", "cka_only"
LOSS_MEASURES = (LM_LOSS, MLM_LOSS)


def retention_dir(run: str, name: str) -> str:
    """A cell's measurement on retention set `name` (run: the cell's directory)."""
    return f"{run}/retention/{name}"


def base_retention_dir(model: str, name: str) -> str:
    """The pretrained model's reference on retention set `name`, shared by every task that uses both."""
    return f"{BASE_ROOT}/{model}/{name}"


def retention_sets(task: dict) -> list[str]:
    """The task's retention set names in config order; the first is the one summary.tsv shows."""
    return list(task.get("retention") or {})


def family(task_type) -> str:
    """What a model of this task type is scored with: `causal` (LM loss on the text), `seq2seq`
    (the text as the target of an empty source) or `encoder` (masked-LM loss with the checkpoint's
    MLM head when it ships one; hidden-state CKA always)."""
    return {"AutoModelForCausalLM": "causal", "AutoModelForSeq2SeqLM": "seq2seq"}.get(task_type.auto_class, "encoder")


def check_retention(config: dict) -> None:
    """Each set names a dataset that can give text and a split it has; the sets one model is scored
    on under one name are the same set (the base reference is computed once per model and name)."""
    from ..tasks import task_type

    datasets, seen = config["datasets"], {}
    for t, task in config["tasks"].items():
        for name, entry in (task.get("retention") or {}).items():
            where = f"tasks.{t}.retention.{name}"
            ds = entry["dataset"]
            if ds not in datasets:
                raise ConfigError(f"{where}.dataset: unknown dataset {ds!r}{did_you_mean(ds, datasets)}")
            if datasets[ds]["format"] == "parallel":
                raise ConfigError(f"{where}.dataset: {ds!r} is format parallel (one column per language); a retention "
                                  f"set reads one text per document: declare the language's file as its own dataset "
                                  f"with format: text")
            check_split_declared(f"{where}.split", ds, datasets[ds], entry["split"])
            key = (task["model"], name)
            mine = ({k: entry[k] for k in SET_KEYS}, family(task_type(task["type"])))
            if key in seen and seen[key][1] != mine:
                other = seen[key][0]
                raise ConfigError(f"{where}: tasks {other!r} and {t!r} both score model {task['model']!r} on a retention "
                                  f"set named {name!r} but with different settings or model heads; the pretrained "
                                  f"reference is computed once per model and set name: give one of them another name")
            seen.setdefault(key, (t, mine))
