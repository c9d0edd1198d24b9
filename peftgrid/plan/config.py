"""Config validation: config.yaml against the schema shipped in this package, defaults filled,
then what a schema cannot check — references between sections, each method's settings (by its
family in peftgrid.methods), each task's keys (by its type in peftgrid.tasks) and metric names
(peftgrid.metrics). Every problem is one `ConfigError` line naming the key.

`validate_config` returns a normalised copy: every method an experiment names resolved to its
full settings (built-in presets need no entry), every eval set with its `max_examples`.
"""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import jsonschema
import yaml

from ..errors import ConfigError, did_you_mean
from ..methods import PRESETS, method_of, preset_defaults
from ..metrics import check_metrics
from ..staging.datasets import conllu_column
from ..tasks import TASK_TYPES, task_type

SCHEMA_PATH = Path(__file__).resolve().parent / "config.schema.yaml"


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
        allowed = set(err.schema.get("properties", {}))
        return f"{where + '.' if where != '<config>' else ''}{extra[0]}: unknown key{did_you_mean(extra[0], allowed)}"
    if err.validator == "required":
        missing = err.message.split("'")[1] if "'" in err.message else err.message
        return f"{where}: {missing!r} is required"
    if _is_exponent_text(err):
        return f"{where}: {_exponent_message(err)}"
    if err.validator in ("pattern", "not"):  # only names carry a pattern in the schema
        return f"{where}: name {err.instance!r} is not allowed (letters, digits, _ . + - only; no '/', ',' or '..')"
    return f"{where}: {err.message}"


def _is_exponent_text(err: jsonschema.ValidationError) -> bool:
    return err.validator == "type" and isinstance(err.instance, str) and bool(re.fullmatch(r"[0-9.]+e[+-]?[0-9]+", err.instance))


def _exponent_message(err: jsonschema.ValidationError) -> str:
    return f"{err.instance!r} is a string, not a number (YAML reads exponents without a dot as text: write e.g. 1.0e-4)"


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
    """Return a validated, normalised deep copy of `raw`; raise ConfigError otherwise."""
    if not isinstance(raw, dict) or not raw:
        raise ConfigError("config is empty: expected the keys models, datasets, tasks, experiments (and optionally methods)")
    config = copy.deepcopy(raw)
    _unbool_select_on(config)
    _switch_tracking(config)
    schema = load_schema()
    errors = list(jsonschema.Draft7Validator(schema).iter_errors(config))
    if errors:
        raise ConfigError(_schema_error_line(jsonschema.exceptions.best_match(errors)))
    _fill_defaults(config, schema)
    config["training"] = {**training_defaults(), **config.get("training", {})}
    _check_datasets(config["datasets"])
    for name, task in config["tasks"].items():
        _check_task(f"tasks.{name}", task, config)
    config["methods"] = _resolve_methods(config)
    _check_experiments(config)
    return config


def _switch_tracking(config: dict) -> None:
    """A bare `tracking:` (YAML null) asks for tracking with the defaults; `tracking: false` is off."""
    if "tracking" in config and config["tracking"] is None:
        config["tracking"] = {}
    elif config.get("tracking") is False:
        config["tracking"] = None


def _unbool_select_on(config: dict) -> None:
    """YAML 1.1 (PyYAML, hence Snakemake) reads the key `on` as the boolean true: give it its name back."""
    for exp in config.get("experiments") or []:
        select = exp.get("select") if isinstance(exp, dict) else None
        if isinstance(select, dict) and True in select:
            select["on"] = select.pop(True)


def _check_datasets(datasets: dict) -> None:
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


def _check_task(where: str, task: dict, config: dict) -> None:
    models, datasets = config["models"], config["datasets"]
    if task["model"] not in models:
        raise ConfigError(f"{where}.model: unknown model {task['model']!r}{did_you_mean(task['model'], models)}")
    if task["dataset"] not in datasets:
        raise ConfigError(f"{where}.dataset: unknown dataset {task['dataset']!r}{did_you_mean(task['dataset'], datasets)}")
    if task["type"] not in TASK_TYPES:
        raise ConfigError(f"{where}.type: unknown task type {task['type']!r}{did_you_mean(task['type'], TASK_TYPES)}")
    ttype = task_type(task["type"])
    if datasets[task["dataset"]].get("format") == "conllu":
        _conllu_columns(where, task)
    ttype.validate(where, task)
    task.setdefault("eval", {"validation": {"split": "validation"}})
    for ename, ev in task["eval"].items():
        ev.setdefault("dataset", task["dataset"])
        if ev["dataset"] not in datasets:
            raise ConfigError(f"{where}.eval.{ename}.dataset: unknown dataset {ev['dataset']!r}{did_you_mean(ev['dataset'], datasets)}")
    defaulted = "validation" not in task
    if defaulted:
        task["validation"] = _default_validation(task, datasets[task["dataset"]])
    validation = task["validation"]
    if isinstance(validation, dict):  # a selection split that is not reported
        validation.setdefault("dataset", task["dataset"])
        if validation["dataset"] not in datasets:
            raise ConfigError(f"{where}.validation.dataset: unknown dataset {validation['dataset']!r}"
                              f"{did_you_mean(validation['dataset'], datasets)}")
    elif validation is not None and validation not in task["eval"]:
        raise ConfigError(f"{where}.validation: {validation!r} is not an eval set of this task "
                          f"(eval sets: {', '.join(task['eval'])}); for a split that is not reported write "
                          f"validation: {{split: <name>}}")
    task.setdefault("metrics", list(ttype.default_metrics))
    check_metrics(f"{where}.metrics", task["metrics"], ttype.metric_kind, ttype.name)
    if "transfer" in task:
        for role in ("source", "target"):
            if task["transfer"][role] not in task["eval"]:
                raise ConfigError(f"{where}.transfer.{role}: {task['transfer'][role]!r} is not an eval set of this task")
    _resolve_max_examples(where, task)
    if task["selection"] is not None:  # hub: assumed to exist, verified by the data check before training
        task["selection"]["default"] = defaulted


def _default_validation(task: dict, dataset: dict):
    """No `validation:` key: the Hugging Face convention — the dataset's `validation` split is the
    selection set, unreported, when the dataset declares one (local: a key of `splits` or
    `split_ratio`; hub: assumed) and no eval set reports it; an eval set reporting it is the
    selection set instead (loss curves only: every choice on it is refused)."""
    reporting = [e for e, ev in task["eval"].items() if (ev["dataset"], ev["split"]) == (task["dataset"], "validation")]
    if reporting:
        return reporting[0]
    declared = dataset["format"] == "hub" or "validation" in {*dataset.get("splits", {}), *dataset.get("split_ratio", {})}
    return {"split": "validation"} if declared else None


def _conllu_columns(where: str, task: dict) -> None:
    """CoNLL-U's own field names (form, lemma, upos, xpos, feats, head, deprel) name our columns."""
    for role, column in task["columns"].items():
        ours = conllu_column(str(column))
        if ours is None:
            raise ConfigError(f"{where}.columns.{role}: CoNLL-U has no field {column!r} "
                              f"(fields: form, lemma, upos, xpos, feats, head, deprel)")
        task["columns"][role] = ours


def _resolve_max_examples(where: str, task: dict) -> None:
    """`max_examples` keys may name a split (as the dataset names it: train, validation, test) or an
    eval set; each eval set and the training split get their own limit. An eval-set name wins over
    a split name; a key that is an eval set's name and another eval set's split is ambiguous."""
    limits = task["max_examples"]
    evals = task["eval"]
    splits_in_use = {task["train_split"]} | {ev["split"] for ev in evals.values()}
    if isinstance(task["validation"], dict):  # an unreported selection split is read too
        splits_in_use.add(task["validation"]["split"])
    for key in limits:
        if key not in evals and key not in splits_in_use:
            known = sorted(set(evals) | splits_in_use)
            raise ConfigError(f"{where}.max_examples.{key}: neither a split this task reads nor an eval set"
                              f"{did_you_mean(key, known)}")
        if key in evals:
            others = [e for e, ev in evals.items() if e != key and ev["split"] == key]
            if others:
                raise ConfigError(f"{where}.max_examples.{key}: ambiguous — {key!r} is an eval set and the split of "
                                  f"eval set {others[0]!r}; set that one with eval.{others[0]}.max_examples")
    task["train_max_examples"] = limits.get(task["train_split"])
    for name, ev in evals.items():  # before the selection copies its eval set
        if "max_examples" not in ev:
            ev["max_examples"] = limits.get(name, limits.get(ev["split"]))
    validation = task["validation"]
    if isinstance(validation, dict):
        task["selection"] = {"name": "selection", "reported": False, **validation}
        task["selection"].setdefault("max_examples", limits.get(validation["split"]))
    elif validation is not None:
        task["selection"] = {"name": validation, "reported": True, **task["eval"][validation]}
    else:
        task["selection"] = None


def _resolve_methods(config: dict) -> dict:
    """Every method an experiment names, and every `methods:` entry, resolved to its settings:
    the preset's defaults (learning rate included) updated with the entry's keys."""
    tkeys = training_keys()
    entries = config["methods"]
    used = {m for exp in config["experiments"] for m in exp["methods"]}
    resolved = {}
    for name in sorted(set(entries) | used):
        where = f"methods.{name}"
        entry = entries.get(name)
        if entry is None and name not in PRESETS:
            where = next(f"experiments[{i}].methods" for i, e in enumerate(config["experiments"]) if name in e["methods"])
            known = set(PRESETS) | set(entries)
            raise ConfigError(f"{where}: unknown method {name!r}{did_you_mean(name, known - {'peft'})}")
        entry = dict(entry or {})
        kind = entry.pop("kind", name)
        if kind not in PRESETS:
            hint = "" if "kind" in (entries.get(name) or {}) else " (a new method name needs kind: <preset>, e.g. kind: lora)"
            raise ConfigError(f"{where}{'.kind' if 'kind' in (entries.get(name) or {}) else ''}: unknown method "
                              f"{kind!r}{did_you_mean(kind, set(PRESETS))}{hint}")
        family = method_of(kind)
        settings = {**preset_defaults(kind), **entry}
        if kind != "peft" and "peft_type" in entry and entry["peft_type"] != PRESETS[kind][1].get("peft_type"):
            raise ConfigError(f"{where}.peft_type: preset {kind!r} is {PRESETS[kind][1].get('peft_type')}; "
                              f"for another peft method write kind: peft, peft_type: {entry['peft_type']}")
        _check_training_keys(where, settings, tkeys)
        family.validate(where, {k: v for k, v in settings.items() if k not in tkeys})
        resolved[name] = {"kind": kind, **settings}
    return resolved


def _check_training_keys(where: str, settings: dict, tkeys: set[str]) -> None:
    props = load_schema()["definitions"]["training"]["properties"]
    for key, value in settings.items():
        if key in tkeys:
            try:
                jsonschema.validate(value, props[key])
            except jsonschema.ValidationError as e:
                raise ConfigError(f"{where}.{key}: {_exponent_message(e) if _is_exponent_text(e) else e.message}") from None


def _check_experiments(config: dict) -> None:
    tasks, methods = config["tasks"], config["methods"]
    tkeys = training_keys()
    for i, exp in enumerate(config["experiments"]):
        where = f"experiments[{i}]"
        for t in exp["tasks"]:
            if t not in tasks:
                raise ConfigError(f"{where}.tasks: unknown task {t!r}{did_you_mean(t, tasks)}")
        for dup in sorted({x for x in exp["tasks"] if exp["tasks"].count(x) > 1} |
                          {x for x in exp["methods"] if exp["methods"].count(x) > 1}):
            raise ConfigError(f"{where}: {dup!r} is listed twice")
        if len(set(exp["seeds"])) != len(exp["seeds"]):
            raise ConfigError(f"{where}.seeds: a seed is listed twice")
        for m in exp["methods"]:
            family = method_of(methods[m]["kind"])
            settings = {k: v for k, v in methods[m].items() if k not in tkeys}
            for t in exp["tasks"]:
                reason = family.refusal(settings, tasks[t]["type"])
                if reason:
                    raise ConfigError(f"{where}: method {m!r} cannot train task {t!r} ({tasks[t]['type']}): {reason}")
        for m, keys in exp["sweep"].items():
            if m not in exp["methods"]:
                raise ConfigError(f"{where}.sweep.{m}: method {m!r} is not in this experiment's methods")
            for k, values in keys.items():
                _check_grid_values(f"{where}.sweep.{m}", methods[m], k, values, tkeys)
        _check_tune(where, exp, config)


def _check_grid_values(where: str, method: dict, key: str, values: list, tkeys: set, at: str | None = None) -> None:
    """Every value of a sweep or tune grid is a setting the method takes; none is listed twice
    (`at`: the grid's key as the user wrote it, default `<where>.<key>`)."""
    for v in values:
        cell = {**method, key: v}
        _check_training_keys(where, {key: v}, tkeys)
        method_of(cell["kind"]).validate(where, {x: y for x, y in cell.items() if x not in tkeys | {"kind"}})
    canon = [json.dumps(canonical(v), sort_keys=True) for v in values]
    if len(set(canon)) != len(canon):
        raise ConfigError(f"{at or f'{where}.{key}'}: a value is listed twice")


def _check_tune(where: str, exp: dict, config: dict) -> None:
    """Normalise `tune` to {method: {key: [values] | 'auto'}} (trainable methods only) and
    `select` to {on, metric, seed}; refuse a key the method does not take, a choice (a tune grid or
    an untuned sweep of several variants) without an unreported selection set, a selection seed
    that is reported and a metric the task does not compute. See plan/tune.py for what runs."""
    from .tune import SELECTION_SEED

    tune, tasks, methods, tkeys = exp.get("tune") or {}, config["tasks"], config["methods"], training_keys()
    shared = {k: v for k, v in tune.items() if k not in exp["methods"]}
    for k in shared:
        if k not in tkeys:
            raise ConfigError(f"{where}.tune.{k}: neither a method of this experiment nor a training hyperparameter"
                              f"{did_you_mean(k, set(exp['methods']) | tkeys)}")
    resolved = {}
    for m in exp["methods"] if tune else []:
        own = tune.get(m)
        if own is not None and not isinstance(own, dict):
            raise ConfigError(f"{where}.tune.{m}: expected {{<hyperparameter>: [values] or auto}}, e.g. {{lr: auto}}")
        if not method_of(methods[m]["kind"]).trains(methods[m]):
            if own:
                raise ConfigError(f"{where}.tune.{m}: {m} does not train: it has nothing to tune")
            continue
        grid = {**shared, **(own or {})}
        for k, values in grid.items():
            at = f"{where}.tune.{m + '.' if own and k in own else ''}{k}"
            if k in exp["sweep"].get(m, {}):
                raise ConfigError(f"{at}: {k} is both swept and tuned for {m} (sweep reports every value, tune "
                                  f"selects one): list it in one of them")
            if values == "auto":
                if k != "lr":
                    raise ConfigError(f"{at}: auto is a grid for lr only; give a list of values")
                continue
            if not isinstance(values, list) or not values:
                raise ConfigError(f"{at}: expected a list of values" + (" or auto" if k == "lr" else ""))
            _check_grid_values(f"{where}.tune.{m}", methods[m], k, values, tkeys, at)
        if grid:
            resolved[m] = grid
    select = dict(exp.get("select") or {})
    on, metric, seed = select.get("on", "validation"), select.get("metric"), select.get("seed", SELECTION_SEED)
    swept = sorted(m for m in exp["methods"] if m not in resolved and _sweep_size(exp["sweep"].get(m, {})) > 1)
    for t in exp["tasks"]:
        why = (f"tune picks a grid point of {', '.join(sorted(resolved))}" if resolved else
               f"the comparisons use one variant of {swept[0]}'s sweep, chosen" if swept else
               "the decoding is chosen" if chooses_decoding(tasks[t], metric) else None)
        if why is None:
            continue  # nothing to choose on this task
        if seed in exp["seeds"]:
            raise ConfigError(f"{where}.select.seed: {seed} is also one of the reported seeds; choices are made at a "
                              f"seed that is never reported: give select.seed another value (default {SELECTION_SEED})")
        _check_select_on(where, t, tasks[t], on, why)
        if metric is not None and metric != "loss" and metric not in tasks[t]["metrics"]:
            raise ConfigError(f"{where}.select.metric: {metric!r} is not a metric of task {t!r} (its metrics: "
                              f"{', '.join(tasks[t]['metrics'])}; or loss){did_you_mean(metric, tasks[t]['metrics'] + ['loss'])}")
        chosen = metric or tasks[t]["metrics"][0]
        if chosen == "comet":
            raise ConfigError(f"{where}.select.metric: comet is scored by its own rule after evaluation; select on "
                              f"another metric of task {t!r} or on loss")
    exp["tune"], exp["select"] = resolved, {"on": on, "metric": metric, "seed": seed}


def chooses_decoding(task: dict, metric: str | None) -> bool:
    """A generation task with several decodings and an unreported selection set chooses one there
    (plan/runs.py choice_decodings); without one, its first decoding is the primary one."""
    selection = task["selection"]
    return (task_type(task["type"]).generates and len(task.get("decoding") or {}) > 1 and metric != "loss"
            and selection is not None and not selection["reported"])


def _sweep_size(sweep: dict) -> int:
    size = 1
    for values in sweep.values():
        size *= len(values)
    return size


def _check_select_on(where: str, name: str, task: dict, on: str, why: str) -> None:
    """Every choice (`why`) is made on the task's unreported selection set: `select.on` names it
    (`validation`, or that set's own name), and it must exist, be unreported and read no split a
    reported eval set reads."""
    selection = task["selection"]
    carve = (f"carve an unreported selection split: tasks.{name}.validation: {{split: <split>}} (e.g. from train with "
             f"datasets.{task['dataset']}.split_ratio: {{train: 0.9, selection: 0.1}} and validation: {{split: selection}})")
    if on != "validation" and on in task["eval"] and (selection is None or selection["name"] != on):
        raise ConfigError(f"{where}.select.on: {on!r} is a reported eval set of task {name!r}; selecting on it would "
                          f"report a selected score: {carve}")
    if selection is None:
        raise ConfigError(f"tasks.{name}.validation: task {name!r} has no selection set, and {why} on it: {carve}")
    if on not in ("validation", selection["name"], selection["split"]):
        raise ConfigError(f"{where}.select.on: {on!r} is not task {name!r}'s selection set (tasks.{name}.validation: "
                          f"{selection['name'] if selection['reported'] else selection['split']!r})")
    if selection["reported"]:
        raise ConfigError(f"tasks.{name}.validation: task {name!r} selects on {selection['name']!r}, a reported eval "
                          f"set, and {why} on it: {carve}")
    same = [e for e, ev in task["eval"].items()
            if (ev["dataset"], ev["split"]) == (selection["dataset"], selection["split"])]
    if same:
        raise ConfigError(f"tasks.{name}.validation: task {name!r}'s selection split {selection['split']!r} is also read "
                          f"by its reported eval set {same[0]!r}, and {why} on it: {carve}")


def canonical(value):
    """JSON-plain, key-sorted form: what params: compares, so YAML spelling never matters."""
    return json.loads(json.dumps(value, sort_keys=True))
