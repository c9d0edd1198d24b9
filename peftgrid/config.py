"""Config validation and the run table.

`validate_config` checks config.yaml against schemas/config.schema.yaml, fills defaults and
then checks what a schema cannot (cross references, per-method keys, duplicate cells).
Every problem is raised as a one-line `ConfigError` naming the key.

`build_run_table` expands `experiments` into cells: one per (task, method, variant, seed),
each carrying its resolved hyperparameters in canonical (sorted, JSON-plain) form.
Precedence, lowest first: training < tasks.<t>.training < methods.<m> < the sweep cell.
"""
from __future__ import annotations

import copy
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "config.schema.yaml"

TASK_TYPES = ("sequence_classification", "token_classification", "seq2seq", "causal_lm")

# Each method kind: its own keys with defaults. Any training key (lr, epochs, ...) may also be
# set per method or swept. A methods entry may name its kind (`kind: lora`) so that several
# configurations of one kind can sit side by side; by default the kind is the entry's name.
METHOD_KINDS: dict[str, dict] = {
    "none": {},
    "full": {},
    "linear_probe": {"head": {"hidden": [256], "dropout": 0.1, "pooling": "cls", "activation": "gelu"}},
    "prompt_tuning": {"num_virtual_tokens": 20},
    "prefix_tuning": {"num_virtual_tokens": 20, "prefix_projection": False},
    "lora": {"r": 8, "alpha": 16, "dropout": 0.1, "target_modules": "auto"},
    "qlora": {"r": 8, "alpha": 16, "dropout": 0.1, "target_modules": "auto", "quant_type": "nf4",
              "double_quant": True},
    "adalora": {"init_r": 12, "target_r": 8, "alpha": 16, "dropout": 0.1, "target_modules": "auto",
                "tinit": 0, "tfinal": 0, "delta_t": 1},
    "ia3": {"target_modules": "auto", "feedforward_modules": "auto"},
}
HEAD_KEYS = {"hidden", "dropout", "pooling", "activation"}
METRICS = {
    "sequence_classification": {"accuracy", "f1_macro", "precision_macro", "recall_macro", "f1_weighted",
                                "f1", "precision", "recall", "mcc"},
    "token_classification": {"accuracy", "f1_macro", "precision_macro", "recall_macro", "f1_weighted", "mcc"},
    "seq2seq": {"bleu", "sentence_bleu", "chrf", "rouge", "comet"},
    "causal_lm": {"bleu", "sentence_bleu", "chrf", "rouge", "comet"},
}
GENERATION_TYPES = {"seq2seq", "causal_lm"}
DEFAULT_METRICS = {
    "sequence_classification": ["accuracy", "f1_macro", "precision_macro", "recall_macro"],
    "token_classification": ["accuracy", "f1_macro"],
    "seq2seq": ["bleu", "sentence_bleu", "chrf", "rouge"],
    "causal_lm": ["bleu", "sentence_bleu", "chrf", "rouge"],
}
COLUMN_ROLES = {
    "sequence_classification": ({"text", "label"}, {"text_pair"}),
    "token_classification": ({"tokens", "tags"}, set()),
    "seq2seq": ({"source", "target"}, set()),
    "causal_lm": ({"source", "target"}, set()),
}
IMPLEMENTED_TASK_TYPES = {"sequence_classification", "token_classification", "seq2seq", "causal_lm"}
DECODING_KEYS = {"num_beams", "do_sample", "top_p", "top_k", "temperature", "repetition_penalty",
                 "no_repeat_ngram_size", "length_penalty", "seed"}
# (method kind, task type) pairs peft cannot train, with the reason
UNSUPPORTED = {
    ("prompt_tuning", "token_classification"):
        "peft's prompt tuning does not shift token labels past the virtual tokens; use prefix_tuning (P-tuning v2)",
    ("linear_probe", "seq2seq"): "a classification head cannot generate text",
    ("linear_probe", "causal_lm"): "a classification head cannot generate text",
}


class ConfigError(ValueError):
    """A one-line, user-facing config problem naming the offending key."""


def load_schema() -> dict:
    with open(SCHEMA_PATH) as fh:
        return yaml.safe_load(fh)


def training_defaults() -> dict:
    return dict(load_schema()["definitions"]["training_defaults"])


def training_keys() -> set[str]:
    return set(load_schema()["definitions"]["training"]["properties"])


def _key_path(path) -> str:
    return ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in path).replace(".[", "[") or "<config>"


def _schema_error_line(err: jsonschema.ValidationError) -> str:
    where = _key_path(err.absolute_path)
    if err.validator == "additionalProperties":
        extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
        allowed = ", ".join(sorted(err.schema.get("properties", {})))
        return f"{where}: unknown key {', '.join(map(repr, extra))} (allowed: {allowed})"
    if err.validator == "type" and isinstance(err.instance, str) and re.fullmatch(r"[0-9.]+e[+-]?[0-9]+", err.instance):
        return (f"{where}: {err.instance!r} is a string, not a number "
                f"(YAML reads exponents without a dot as text: write e.g. 1.0e-4)")
    if err.validator in ("pattern", "not"):  # only names carry a pattern in the schema
        return f"{where}: name {err.instance!r} is not allowed (letters, digits, _ . + - only; no '/', ',' or '..')"
    return f"{where}: {err.message}"


def _fill_defaults(instance: dict, schema: dict) -> None:
    """Fill `default`s of object properties, recursively, like snakemake.utils.validate."""
    validator_cls = jsonschema.Draft7Validator
    set_defaults = validator_cls.VALIDATORS["properties"]

    def properties_with_defaults(validator, properties, inst, sch):
        if isinstance(inst, dict):
            for prop, sub in properties.items():
                if "default" in sub and prop not in inst:
                    inst[prop] = copy.deepcopy(sub["default"])
        yield from set_defaults(validator, properties, inst, sch)

    filling = jsonschema.validators.extend(validator_cls, {"properties": properties_with_defaults})
    for _ in filling(schema).iter_errors(instance):
        pass  # errors are reported by the strict pass before


def validate_config(raw: dict) -> dict:
    """Return a validated deep copy of `raw` with defaults filled; raise ConfigError otherwise."""
    if not isinstance(raw, dict) or not raw:
        raise ConfigError("config is empty: expected the keys models, datasets, tasks, methods, experiments")
    config = copy.deepcopy(raw)
    schema = load_schema()
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(config),
                    key=lambda e: (len(list(e.absolute_path)), list(map(str, e.absolute_path))))
    if errors:
        # the deepest-first error is usually the most specific one
        best = jsonschema.exceptions.best_match(errors)
        raise ConfigError(_schema_error_line(best))
    _fill_defaults(config, schema)
    config["training"] = {**training_defaults(), **config.get("training", {})}
    _check_references(config)
    return config


def _check_references(config: dict) -> None:
    models, datasets, tasks, methods = (config[k] for k in ("models", "datasets", "tasks", "methods"))
    tkeys = training_keys()
    for name, ds in datasets.items():
        where = f"datasets.{name}"
        fmt = ds.get("format", "hub" if "source" in ds else None)
        if fmt is None:
            raise ConfigError(f"{where}: give either 'source' (a hub id) or 'format' + 'splits' (local files)")
        ds["format"] = fmt
        if fmt == "hub" and "source" not in ds:
            raise ConfigError(f"{where}.source: required for a hub dataset")
        if fmt != "hub" and "splits" not in ds:
            raise ConfigError(f"{where}.splits: required for format {fmt!r} (split name -> file)")
        if fmt != "hub" and "source" in ds:
            raise ConfigError(f"{where}: 'source' is for hub datasets; local files go under 'splits'")
        if "split_ratio" in ds:
            total = sum(ds["split_ratio"].values())
            if abs(total - 1.0) > 1e-6:
                raise ConfigError(f"{where}.split_ratio: fractions must add up to 1 (they add up to {total:g})")
        for split, path in ds.get("splits", {}).items():
            if fmt == "parallel" and not isinstance(path, dict):
                raise ConfigError(f"{where}.splits.{split}: format parallel needs one file per language, e.g. {{en: a.en, ru: a.ru}}")
            if fmt != "parallel" and isinstance(path, dict):
                raise ConfigError(f"{where}.splits.{split}: expected one file path for format {fmt!r}")
        if "column_names" in ds and ds.get("header", True) and fmt in ("csv", "tsv"):
            pass  # column_names then rename the header's columns
    for name, task in tasks.items():
        where = f"tasks.{name}"
        if task["model"] not in models:
            raise ConfigError(f"{where}.model: unknown model {task['model']!r} (defined: {', '.join(sorted(models))})")
        if task["dataset"] not in datasets:
            raise ConfigError(f"{where}.dataset: unknown dataset {task['dataset']!r} (defined: {', '.join(sorted(datasets))})")
        ttype = task["type"]
        if ttype not in IMPLEMENTED_TASK_TYPES:
            raise ConfigError(f"{where}.type: {ttype!r} is not implemented yet (available: {', '.join(sorted(IMPLEMENTED_TASK_TYPES))})")
        required, optional = COLUMN_ROLES[ttype]
        missing = required - set(task["columns"])
        unknown = set(task["columns"]) - required - optional
        if missing:
            raise ConfigError(f"{where}.columns: missing {', '.join(sorted(missing))} (a {ttype} task maps {', '.join(sorted(required | optional))})")
        if unknown:
            raise ConfigError(f"{where}.columns: unknown role {', '.join(sorted(unknown))} (a {ttype} task maps {', '.join(sorted(required | optional))})")
        task.setdefault("eval", {"validation": {"split": "validation"}})
        for ename, ev in task["eval"].items():
            ev.setdefault("dataset", task["dataset"])
            if ev["dataset"] not in datasets:
                raise ConfigError(f"{where}.eval.{ename}.dataset: unknown dataset {ev['dataset']!r}")
        if "validation" not in task:
            task["validation"] = "validation" if "validation" in task["eval"] else None
        if task["validation"] is not None and task["validation"] not in task["eval"]:
            raise ConfigError(f"{where}.validation: {task['validation']!r} is not an eval set of this task (eval sets: {', '.join(task['eval'])})")
        task.setdefault("metrics", list(DEFAULT_METRICS[ttype]))
        if ttype in GENERATION_TYPES:
            task.setdefault("prompt", "{source}")
            if "{source}" not in task["prompt"]:
                raise ConfigError(f"{where}.prompt: must contain {{source}}, where the source text goes")
            task.setdefault("max_new_tokens", 64)
            task.setdefault("coverage_threshold", 0.02)
            task.setdefault("decoding", {"greedy": {}})
            for dname, dspec in task["decoding"].items():
                if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", dname) or not isinstance(dspec, dict):
                    raise ConfigError(f"{where}.decoding.{dname}: expected name -> mapping of generate() settings")
                bad_keys = set(dspec) - DECODING_KEYS
                if bad_keys:
                    raise ConfigError(f"{where}.decoding.{dname}: unknown setting {', '.join(sorted(bad_keys))} "
                                      f"(allowed: {', '.join(sorted(DECODING_KEYS))})")
        elif "decoding" in task or "prompt" in task:
            raise ConfigError(f"{where}: prompt/decoding are for seq2seq and causal_lm tasks")
        bad = [m for m in task["metrics"] if m not in METRICS[ttype]]
        if bad:
            raise ConfigError(f"{where}.metrics: unknown metric {', '.join(map(repr, bad))} for {ttype} (available: {', '.join(sorted(METRICS[ttype]))})")
        if "transfer" in task:
            for role in ("source", "target"):
                if task["transfer"][role] not in task["eval"]:
                    raise ConfigError(f"{where}.transfer.{role}: {task['transfer'][role]!r} is not an eval set of this task")
        for key in task["max_examples"]:
            if key not in task["eval"] and key != task["train_split"]:
                raise ConfigError(f"{where}.max_examples.{key}: not the train split ({task['train_split']!r}) or an eval set")
    for name, spec in methods.items():
        kind = spec.get("kind", name)
        where = f"methods.{name}"
        if kind not in METHOD_KINDS:
            raise ConfigError(f"{where}: unknown method kind {kind!r} (available: {', '.join(METHOD_KINDS)}; name the kind with 'kind:')")
        _check_method_keys(where, kind, spec, tkeys)
    for i, exp in enumerate(config["experiments"]):
        where = f"experiments[{i}]"
        for t in exp["tasks"]:
            if t not in tasks:
                raise ConfigError(f"{where}.tasks: unknown task {t!r} (defined: {', '.join(sorted(tasks))})")
        for m in exp["methods"]:
            if m not in methods:
                raise ConfigError(f"{where}.methods: unknown method {m!r} (defined: {', '.join(sorted(methods))})")
            kind = methods[m].get("kind", m)
            for t in exp["tasks"]:
                reason = UNSUPPORTED.get((kind, tasks[t]["type"]))
                if reason:
                    raise ConfigError(f"{where}: method {m!r} cannot train task {t!r} ({tasks[t]['type']}): {reason}")
        for dup in {x for x in exp["tasks"] if exp["tasks"].count(x) > 1} | {x for x in exp["methods"] if exp["methods"].count(x) > 1}:
            raise ConfigError(f"{where}: {dup!r} is listed twice")
        if len(set(exp["seeds"])) != len(exp["seeds"]):
            raise ConfigError(f"{where}.seeds: a seed is listed twice")
        for m, keys in exp["sweep"].items():
            if m not in exp["methods"]:
                raise ConfigError(f"{where}.sweep.{m}: method {m!r} is not in this experiment's methods")
            kind = methods[m].get("kind", m)
            _check_method_keys(f"{where}.sweep.{m}", kind, {k: v[0] for k, v in keys.items()}, tkeys)
            for k, values in keys.items():
                canon = [_canonical(v) for v in values]
                if len({json.dumps(v, sort_keys=True) for v in canon}) != len(canon):
                    raise ConfigError(f"{where}.sweep.{m}.{k}: a value is listed twice")


def _check_method_keys(where: str, kind: str, spec: dict, tkeys: set[str]) -> None:
    allowed = set(METHOD_KINDS[kind]) | tkeys | {"kind"}
    for key, value in spec.items():
        if key not in allowed:
            raise ConfigError(f"{where}.{key}: unknown key for method kind {kind!r} (allowed: {', '.join(sorted(allowed - {'kind'}))})")
        if key in tkeys:
            try:
                jsonschema.validate(value, load_schema()["definitions"]["training"]["properties"][key])
            except jsonschema.ValidationError as e:
                raise ConfigError(f"{where}.{key}: {e.message}") from None
        elif key == "head":
            if not isinstance(value, dict) or set(value) - HEAD_KEYS:
                raise ConfigError(f"{where}.head: expected a mapping with keys {', '.join(sorted(HEAD_KEYS))}")
            if value.get("pooling", "cls") not in ("cls", "mean"):
                raise ConfigError(f"{where}.head.pooling: must be 'cls' or 'mean'")
        elif key in ("r", "init_r", "target_r", "num_virtual_tokens"):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{where}.{key}: must be a positive integer, got {value!r}")
        elif key in ("alpha", "dropout"):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{where}.{key}: must be a non-negative number, got {value!r}")
        elif key in ("target_modules", "feedforward_modules"):
            if value != "auto" and not (isinstance(value, list) and value and all(isinstance(v, str) for v in value)):
                raise ConfigError(f"{where}.{key}: must be 'auto' or a list of module names")
        elif key == "quant_type" and value not in ("nf4", "fp4"):
            raise ConfigError(f"{where}.quant_type: must be 'nf4' or 'fp4'")


# --------------------------------------------------------------------------- run table

@dataclass(frozen=True)
class Cell:
    task: str
    method: str
    variant: str
    seed: int
    kind: str
    hparams: dict = field(compare=False, hash=False)

    @property
    def dir(self) -> str:
        return f"results/runs/{self.task}/{self.method}/{self.variant}/seed{self.seed}"

    @property
    def key(self) -> tuple:
        return (self.task, self.method, self.variant, self.seed)


def _canonical(value):
    """JSON-plain, key-sorted form: what params: compares, so YAML spelling never matters."""
    return json.loads(json.dumps(value, sort_keys=True))


def _format_value(v) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return format(v, "g")
    if isinstance(v, list):
        return "+".join(_format_value(x) for x in v)
    return str(v)


def variant_name(sweep_cell: dict) -> str:
    """`default`, or the swept keys sorted: `alpha=16_r=8` (no commas: they break cluster jobs)."""
    if not sweep_cell:
        return "default"
    name = "_".join(f"{k}={_format_value(v)}" for k, v in sorted(sweep_cell.items()))
    if not re.fullmatch(r"[A-Za-z0-9_.+=-]+", name):
        raise ConfigError(f"sweep value in {name!r} gives a directory name with characters other than letters, digits, _ . + = -")
    return name


def resolve_hparams(config: dict, task: str, method: str, sweep_cell: dict) -> dict:
    spec = config["methods"][method]
    kind = spec.get("kind", method)
    hp = {**config["training"], **config["tasks"][task].get("training", {})}
    hp.update(copy.deepcopy(METHOD_KINDS[kind]))
    for key, value in spec.items():
        if key == "head":
            hp["head"] = {**hp["head"], **value}
        elif key != "kind":
            hp[key] = value
    hp.update(sweep_cell)
    hp["kind"] = kind
    return _canonical(hp)


def build_run_table(config: dict) -> list[Cell]:
    cells: dict[tuple, Cell] = {}
    for i, exp in enumerate(config["experiments"]):
        for task, method, seed in itertools.product(exp["tasks"], exp["methods"], exp["seeds"]):
            sweep = exp["sweep"].get(method, {})
            keys = sorted(sweep)
            for values in itertools.product(*(sweep[k] for k in keys)):
                sweep_cell = dict(zip(keys, values))
                hp = resolve_hparams(config, task, method, sweep_cell)
                hp["seed"] = seed
                cell = Cell(task, method, variant_name(sweep_cell), seed, hp["kind"], hp)
                if cell.key in cells and cells[cell.key].hparams != hp:
                    raise ConfigError(f"experiments[{i}]: cell {cell.dir} is defined twice with different settings")
                cells[cell.key] = cell
    return sorted(cells.values(), key=lambda c: c.key)


def task_params(config: dict, task: str) -> dict:
    """What a task's training needs from its config (eval sets excluded: they are evaluation's)."""
    t = config["tasks"][task]
    keep = {k: t[k] for k in ("type", "model", "dataset", "train_split", "columns", "labels", "unseen_labels",
                              "prompt", "coverage_threshold") if k in t}
    keep["max_examples"] = {k: v for k, v in t["max_examples"].items() if k == t["train_split"] or k == t["validation"]}
    if t["validation"] is not None:
        keep["validation"] = {"name": t["validation"], **t["eval"][t["validation"]]}
    return _canonical(keep)
