"""What every task type provides: its columns, metrics and config keys (read by the planning
layer, no torch), and how it loads its model, encodes rows, and evaluates one eval set.

Heavy libraries (torch, transformers) are imported inside the functions that need them, so the
planning layer can read the declarations while Snakemake parses the workflow.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError, DataError, did_you_mean
from ..staged import check_columns, load_split, subsample

# The keys of every task entry that a training / an evaluation job receives (eval sets are not
# training's: adding one must not retrain); a type adds its own keys (TaskType.train_keys, eval_keys).
TRAIN_KEYS = frozenset({"type", "dataset", "train_split", "train_max_examples", "columns"})
EVAL_KEYS = frozenset({"type", "dataset", "train_split", "columns", "metrics"})


class TaskType:
    name: str = ""
    required_columns: frozenset[str] = frozenset()
    optional_columns: frozenset[str] = frozenset()
    metric_kind: str = ""                  # which metrics apply: "label" or "text" (see peftgrid.metrics)
    default_metrics: tuple[str, ...] = ()
    generates: bool = False               # generation tasks: evaluation runs per decoding strategy
    per_token: bool = False
    auto_class: str = ""                  # the transformers Auto class of the model
    own_keys: frozenset[str] = frozenset()  # task keys only this type accepts (prompt, decoding, ...)
    # Each own key reaches both the training and the evaluation jobs (their specs' `task`), except
    # those a type lists here as never read by one of them: editing such a key re-runs only the other.
    train_ignores: frozenset[str] = frozenset()
    eval_ignores: frozenset[str] = frozenset()
    peft_task_type: str = ""              # peft's TaskType for this kind of model (SEQ_CLS, CAUSAL_LM, ...)
    short_name: str = ""                  # the README preset table's column label

    # ------------------------------------------------------------------ planning (no torch)
    def validate(self, where: str, task: dict) -> None:
        """Columns and type-specific keys; fills type-specific defaults into `task`."""
        roles = self.required_columns | self.optional_columns
        missing = self.required_columns - set(task["columns"])
        unknown = set(task["columns"]) - roles
        if missing:
            raise ConfigError(f"{where}.columns: missing {', '.join(sorted(missing))} "
                              f"(a {self.name} task maps {', '.join(sorted(roles))})")
        if unknown:
            role = sorted(unknown)[0]
            raise ConfigError(f"{where}.columns.{role}: unknown role{did_you_mean(role, roles)}")

    @property
    def train_keys(self) -> frozenset[str]:
        """The task-entry keys a training job of this type receives (plan/specs.py train_spec)."""
        return TRAIN_KEYS | (self.own_keys - self.train_ignores)

    @property
    def eval_keys(self) -> frozenset[str]:
        """The task-entry keys an evaluation job of this type receives (plan/specs.py eval_spec)."""
        return EVAL_KEYS | (self.own_keys - self.eval_ignores)

    # ------------------------------------------------------------------ data
    def load_rows(self, task: dict, data_dir: Path, split: str, limit: int | None, dataset: str) -> list[dict]:
        rows = subsample(load_split(data_dir, split, dataset), limit)
        where = f"dataset {dataset!r} split {split!r}"
        if not rows:
            raise DataError(f"{where}: no examples")
        check_columns(rows, task["columns"], where)
        self.check_rows(task, rows, where)
        return rows

    def check_rows(self, task: dict, rows: list[dict], where: str) -> None:
        """Type-specific shape checks of the rows (token tasks: one tag per word)."""

    def label_list(self, task: dict, train_rows: list[dict], meta: dict) -> list[str]:
        return []

    def check_labels(self, task: dict, rows: list[dict], labels: list[str], where: str) -> None:
        """Eval labels the model never saw are an error (or left out, with unseen_labels: ignore)."""

    def per_label_rows(self, evaluated: dict, labels: list[str]) -> list[dict]:
        """The evaluation's per-label table (precision, recall, F1, support); none for a task without labels."""
        return []

    # ------------------------------------------------------------------ model
    def load_pretrained(self, model_dir: Path, labels: list[str], allow_pickle: bool, **kwargs):
        """(model, names of weights the checkpoint did not have: a new head, a new pooler)."""
        import transformers

        auto = getattr(transformers, self.auto_class)
        from ..staging.models import NO_REMOTE_CODE

        kwargs.setdefault("use_safetensors", None if allow_pickle else True)
        kwargs.update(NO_REMOTE_CODE)
        kwargs.update(self.head_kwargs(labels))
        model, info = auto.from_pretrained(model_dir, output_loading_info=True, **kwargs)
        return model, sorted(info["missing_keys"])

    def head_kwargs(self, labels: list[str]) -> dict:
        return {}

    def prepare_tokenizer(self, tokenizer):
        return tokenizer

    def check_training_data(self, task: dict, tokenizer, rows: list[dict], model_name: str) -> dict:
        """Checks that need the tokenizer (generation: can it write the target?); returns record fields."""
        return {}

    def encode(self, task: dict, rows: list[dict], tokenizer, labels: list[str], max_length: int) -> list[dict]:
        raise NotImplementedError

    def truncated(self, examples: list[dict], max_length: int) -> int:
        return sum(len(e["input_ids"]) >= max_length for e in examples)

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, task: dict, model, tokenizer, rows: list[dict], labels: list[str], hp: dict, device) -> dict:
        """Run `model` over every row of one eval set (hp: max_length, eval_batch_size, precision) inside
        an engine.device.PhaseMeter, and return what jobs/evaluate.py scores: always `meter` (the
        inference-cost protocol times it); a label task (metric_kind "label") `gold` and `pred` (the
        scored units' gold and predicted values), `predictions` (one JSON-able line per row, kept in
        predictions.jsonl), `units` and optionally `extra` (more metrics-row columns). A generating type (`generates`) takes two more arguments,
        `decoding` (its generate() settings) and `max_new_tokens`, and returns `hypotheses` (one text
        per row), `generated_tokens`, `settings`, `gen_len_mean`, `gen_len_max` and
        `hit_max_new_tokens` (see tasks/generation.py)."""
        raise NotImplementedError

