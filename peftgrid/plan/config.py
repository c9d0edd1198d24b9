"""Config validation: config.yaml against the schema shipped in this package, defaults filled,
then what a schema cannot check — references between sections, each method's settings (by its
family in peftgrid.methods), each task's keys (by its type in peftgrid.tasks) and metric names
(peftgrid.metrics). Every problem is one `ConfigError` line naming the key, and what to write where it can.

The rule: every key a user writes is used as they meant, or refused — never ignored. The only
values coerced are whole floats where a count is expected (32.0 -> 32) and sep: '\\t' (a tab); a
key written twice in the YAML file is refused by `load_config_file` (the Snakefile re-reads the
files Snakemake loaded). What needs the data files is checked in plan/paths.py.

`validate_config` returns a normalised copy: every method an experiment names resolved to its
full settings (built-in presets need no entry), every eval set with its `max_examples`.
"""
from __future__ import annotations

import codecs
import copy
import functools
import json
import re
from pathlib import Path

import jsonschema
import yaml

from ..errors import ConfigError, did_you_mean
from ..methods import PRESETS, method_of, preset_defaults
from ..metrics import check_metrics, own_rule_metrics
from ..plugins import load_plugins
from ..staging.datasets import conllu_column, declared_splits
from ..tasks import TASK_TYPES, task_type, validate_task
from .retention import check_retention

SCHEMA_PATH = Path(__file__).resolve().parent / "config.schema.yaml"


def load_schema() -> dict:
    return copy.deepcopy(_read_schema())  # a copy: callers may fill it in


@functools.lru_cache(maxsize=1)
def _read_schema() -> dict:
    with open(SCHEMA_PATH) as fh:
        return yaml.safe_load(fh)


def training_defaults() -> dict:
    return dict(load_schema()["definitions"]["training_defaults"])


def training_keys() -> set[str]:
    return set(load_schema()["definitions"]["training"]["properties"])


def bookkeeping_keys() -> set[str]:
    """The training keys that change no result (how often to log or checkpoint, eval batch size)."""
    return set(load_schema()["definitions"]["bookkeeping_keys"])


def evaluation_keys() -> set[str]:
    """The training keys that change a cell even when its method trains nothing (evaluation reads them)."""
    return set(load_schema()["definitions"]["evaluation_keys"])


# --------------------------------------------------------------------------- the YAML file itself

class _StrictLoader(yaml.SafeLoader):
    """PyYAML (hence Snakemake) keeps the last of two equal mapping keys: a second `methods:` block
    silently replaces the first. This loader refuses them, naming the key and both lines."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *defaults` merges an anchor; keys written beside it override it, as intended
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise ConfigError(f"{self.name} line {line}: key {key!r} is written twice (first at line "
                                  f"{seen[key]}); YAML would keep only the last one: merge the two into one entry")
            seen[key] = line
        return super().construct_mapping(node, deep)


def load_config_file(path) -> dict:
    """A config file read the way Snakemake reads it, except that a key written twice is an error."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as fh:
            return yaml.load(fh, Loader=_StrictLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{at}: not valid YAML ({getattr(e, 'problem', None) or e})") from None


def check_config_files(paths) -> None:
    """Re-read the config files Snakemake loaded (Snakefile) to refuse keys written twice."""
    for path in paths:
        if Path(path).is_file():
            load_config_file(path)


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
    if _is_quoted_number(err):  # before the hint, which is about the value (epochs: 0), not its quotes
        return f"{where}: {err.instance!r} is a string, not a number: write {err.instance.strip()} without quotes"
    hint = err.schema.get("x-hint") if isinstance(err.schema, dict) else None  # the schema's word on what to write
    if err.validator == "type" and err.instance is None:  # `tune:` with nothing after it
        return (f"{where}: empty (a key with nothing after it is null in YAML); expected {_expected(err)}: give its "
                f"value or delete the key" + (f" ({hint})" if hint else ""))
    path = list(err.absolute_path)
    several = _several_values_hint(path[-1], err.instance) if path[-2:-1] == ["training"] else None
    if err.validator == "type" and several:  # training: {epochs: [1, 2]} or {lr: auto}
        return f"{where}: {several}"
    if err.validator == "enum" and isinstance(err.instance, str):  # strategy: Halving
        meant = did_you_mean(err.instance, err.validator_value)
        return (f"{where}: {err.instance!r} is not one of {', '.join(map(str, err.validator_value))}"
                + (meant if meant.startswith(" — ") else "") + (f" ({hint})" if hint else ""))
    if err.validator in ("pattern", "not"):  # only names carry a pattern in the schema
        return f"{where}: name {err.instance!r} is not allowed (letters, digits, _ . + - only; no '/', ',' or '..')"
    return f"{where}: {err.message}" + (f" ({hint})" if hint else "")


def _expected(err: jsonschema.ValidationError) -> str:
    """What a `type` error wanted, in YAML's words."""
    words = {"object": "a mapping ({key: value})", "array": "a list ([a, b])", "string": "a name or text",
             "number": "a number", "integer": "a whole number", "boolean": "true or false"}
    return " or ".join(words.get(t, t) for t in sorted(_types(err) - {"null"}))


def _types(err: jsonschema.ValidationError) -> set[str]:
    """The types a `type` error wanted (`type: integer` or `type: [integer, "null"]`)."""
    return {err.validator_value} if isinstance(err.validator_value, str) else set(err.validator_value)


def _is_quoted_number(err: jsonschema.ValidationError) -> bool:
    """'2' or "1000": YAML reads a quoted number as text."""
    if err.validator != "type" or not isinstance(err.instance, str) or not {"number", "integer"} & _types(err):
        return False
    try:
        float(err.instance)
    except ValueError:
        return False
    return err.instance.strip().lower() not in ("nan", "inf", "-inf", "+inf", "infinity", "-infinity")


def _is_exponent_text(err: jsonschema.ValidationError) -> bool:
    return (err.validator == "type" and isinstance(err.instance, str)
            and bool(re.fullmatch(r"[-+]?[0-9.]+e[+-]?[0-9]+", err.instance, re.IGNORECASE)))


def _exponent_message(err: jsonschema.ValidationError) -> str:
    """YAML 1.1 (PyYAML, hence Snakemake) reads 1e-4 and 1.0e3 as text: a float needs a dot and a signed exponent."""
    mantissa, exponent = err.instance.lower().split("e")
    spelled = f"{mantissa if '.' in mantissa else mantissa + '.0'}e{exponent if exponent[0] in '+-' else '+' + exponent}"
    return (f"{err.instance!r} is a string, not a number (YAML reads an exponent as a number only with a dot and a "
            f"sign: write {spelled})")


def _fill_defaults(instance: dict, schema: dict) -> None:
    """Fill `default`s of object properties, recursively: jsonschema's documented recipe (its FAQ),
    which snakemake.utils.validate(set_default=True) also uses, with two differences that keep it
    here: it skips an object left null (snakemake 9.27 calls setdefault on `tracking: null` and
    fails with AttributeError) and copies each default (snakemake's are one object shared by every
    key it fills). It also keeps our schema's draft 7 (snakemake validates with draft 2020-12)."""
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
    load_plugins(raw.get("plugins"))  # before anything asks the registries for a task type or metric
    config = copy.deepcopy(raw)
    _unbool_select_on(config)
    _switch_tracking(config)
    _refuse_seed_keys(config)
    schema = _with_own_keys(load_schema())
    _coerce_whole_floats(config, schema)
    errors = list(jsonschema.Draft7Validator(schema).iter_errors(config))
    if errors:
        raise ConfigError(_schema_error_line(jsonschema.exceptions.best_match(errors)))
    _refuse_unsaid_header(config["datasets"])  # before the default header: true hides that it was not said
    _fill_defaults(config, schema)
    config["training"] = {**training_defaults(), **config.get("training", {})}
    _check_datasets(config["datasets"])
    _check_output_names(config)
    for name, task in config["tasks"].items():
        _check_task(f"tasks.{name}", task, config)
    check_retention(config)  # tasks.<t>.retention (plan/retention.py)
    config["methods"] = _resolve_methods(config)
    _check_experiments(config)
    _refuse_unused_lr(raw, config)
    _check_report(config)
    return config


def _with_own_keys(schema: dict) -> dict:
    """The schema admitting every registered task type's own keys that it does not describe (a
    plugin's): validate_task refuses them for other types, and the type's validate checks them."""
    task = schema["properties"]["tasks"]["additionalProperties"]["properties"]
    for ttype in TASK_TYPES.values():
        task.update({key: {} for key in sorted(ttype.own_keys - set(task))})
    return schema


SEED_HINT = ("a cell's seed is one of its experiment's seeds (one cell per seed, compared across seeds): remove it "
             "here and list the seeds in the experiment, e.g. seeds: [1, 2, 3]")


def _refuse_seed_keys(config: dict) -> None:
    """A `seed` anywhere but `experiments[].seeds` would be ignored or give identical cells that
    are then compared as if they differed."""
    def entries(node):  # a section of the wrong type is the schema's to report
        return node.items() if isinstance(node, dict) else []

    places = [("training", config.get("training"))]
    places += [(f"tasks.{t}.training", task.get("training")) for t, task in entries(config.get("tasks"))
               if isinstance(task, dict)]
    places += [(f"methods.{m}", entry) for m, entry in entries(config.get("methods"))]
    experiments = config.get("experiments")
    for i, exp in enumerate(experiments if isinstance(experiments, list) else []):
        if not isinstance(exp, dict):
            continue
        places += [(f"experiments[{i}].sweep.{m}", keys) for m, keys in entries(exp.get("sweep"))]
        methods = exp.get("methods") if isinstance(exp.get("methods"), list) else []
        tune = exp.get("tune")
        if isinstance(tune, dict):
            places.append((f"experiments[{i}].tune", {k: v for k, v in tune.items() if k not in methods}))
            places += [(f"experiments[{i}].tune.{m}", grid) for m, grid in tune.items() if isinstance(grid, dict)]
    for where, node in places:
        if isinstance(node, dict) and "seed" in node:
            raise ConfigError(f"{where}.seed: {SEED_HINT}")


_WHOLE_FLOAT = "a whole number written as a float"


def _whole_float_marks(validator, types, instance, schema):
    """Draft 7 counts 32.0 as an integer, and the float would reach range() or a file name: mark it."""
    listed = [types] if isinstance(types, str) else types
    if isinstance(instance, float) and instance.is_integer() and "integer" in listed and "number" not in listed:
        yield jsonschema.ValidationError(_WHOLE_FLOAT)
    yield from jsonschema.Draft7Validator.VALIDATORS["type"](validator, types, instance, schema)


def _coerce_whole_floats(config: dict, schema: dict) -> None:
    """YAML reads `32.0` and `2.0e+3` as floats: where the schema wants an integer and the float is
    a whole number, the user's meaning is unambiguous, so it becomes the integer (README)."""
    marking = jsonschema.validators.extend(jsonschema.Draft7Validator, {"type": _whole_float_marks})(schema)

    def marks(errors):
        for e in errors:
            if e.message == _WHOLE_FLOAT:
                yield list(e.absolute_path)
            yield from marks(e.context or [])

    for path in {tuple(p) for p in marks(marking.iter_errors(config))}:
        node = config
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = int(node[path[-1]])


def _whole(value, prop: dict):
    """`value` as an integer where the schema property `prop` wants one and it is a whole float."""
    listed = prop.get("type", [])
    listed = [listed] if isinstance(listed, str) else listed
    if isinstance(value, float) and value.is_integer() and "integer" in listed and "number" not in listed:
        return int(value)
    return value


def _refuse_repeats(where: str, names: list, what: str = "a name") -> None:
    """A list that names things takes each once: with a repeat the later one wins or an id vanishes."""
    seen = set()
    for name in names:
        if name in seen:
            raise ConfigError(f"{where}: {name!r} is listed twice; list {what} once")
        seen.add(name)


# Files the workflow writes per task beside the task's own report files (rules/report.smk,
# rules/evaluate.smk): a task named like one of them makes two rules produce one file.
REPORT_SUFFIXES = ("_tuning", "_recommendations", "_transfer", "_qualitative")
RESERVED_TASK_NAMES = {"ranks": "results/report/tables/ranks.md (the across-task ranks)",
                       "cache": "results/comet/cache/ (COMET's score cache)"}


def _check_output_names(config: dict) -> None:
    tasks = config["tasks"]
    for name in tasks:
        if name in RESERVED_TASK_NAMES:
            raise ConfigError(f"tasks.{name}: the name {name!r} is taken by the workflow's own output "
                              f"{RESERVED_TASK_NAMES[name]}: rename the task")
        for suffix in REPORT_SUFFIXES:
            if name.endswith(suffix) and name[: -len(suffix)] in tasks:
                raise ConfigError(f"tasks.{name}: the name collides with task {name[:-len(suffix)]!r}'s report file "
                                  f"results/report/tables/{name}.md: rename the task (e.g. without {suffix!r})")


def _check_report(config: dict) -> None:
    """`report:` names tasks, their metrics and eval sets: a typo is found now, not after every cell trained."""
    tasks, report = config["tasks"], config["report"]
    for key, of, what in (("quality_metric", "metrics", "a metric"), ("eval_set", "eval", "an eval set")):
        for t, value in report[key].items():
            if t not in tasks:
                raise ConfigError(f"report.{key}.{t}: unknown task {t!r}{did_you_mean(t, tasks)}")
            if value not in tasks[t][of]:
                raise ConfigError(f"report.{key}.{t}: {value!r} is not {what} of task {t!r}"
                                  f"{did_you_mean(value, tasks[t][of])}; the report reads one of those")


def _switch_tracking(config: dict) -> None:
    """A bare `tracking:` (YAML null) asks for tracking with the defaults; `tracking: false` is off."""
    if "tracking" in config and config["tracking"] is None:
        config["tracking"] = {}
    elif config.get("tracking") is False:
        config["tracking"] = None


def _unbool_select_on(config: dict) -> None:
    """YAML 1.1 (PyYAML, hence Snakemake) reads the key `on` as the boolean true: give it its name back."""
    experiments = config.get("experiments")
    for exp in experiments if isinstance(experiments, list) else []:
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
            files = set(ds.get("splits", {}))
            if len(files) > 1 and "train" not in files:
                raise ConfigError(f"{where}.split_ratio: carves one split, the only one or 'train'; this dataset has "
                                  f"{', '.join(sorted(files))}: add a train split or carve a dataset of one file")
            clash = sorted(set(ds["split_ratio"]) & (files - {"train"})) if len(files) > 1 else []
            if clash:
                raise ConfigError(f"{where}.split_ratio.{clash[0]}: {clash[0]!r} is already a split of this dataset; "
                                  f"name the carved part otherwise")
        elif ds["split_seed"] != 0:
            raise ConfigError(f"{where}.split_seed: only used with split_ratio (it seeds the carving); remove it")
        _check_reader_keys(where, ds)
        for split, path in ds.get("splits", {}).items():
            if fmt == "parallel" and not isinstance(path, dict):
                raise ConfigError(f"{where}.splits.{split}: format parallel needs one file per language, e.g. {{en: a.en, ru: a.ru}}")
            if fmt != "parallel" and isinstance(path, dict):
                raise ConfigError(f"{where}.splits.{split}: expected one file path for format {fmt!r}")


DELIMITED_ONLY = ("sep", "quoting", "column_names")


def _refuse_unsaid_header(datasets: dict) -> None:
    """`column_names` without `header`: the user may mean "the file has no header row" (header: false)
    or "rename its header" (header: true); the default would silently drop a data row as a header."""
    for name, ds in datasets.items():
        if isinstance(ds, dict) and "column_names" in ds and "header" not in ds:
            raise ConfigError(f"datasets.{name}.header: column_names is given but header is not: write header: false "
                              f"(the file has no header row; column_names name its columns) or header: true (its "
                              f"first row is a header, renamed by column_names)")


def _check_reader_keys(where: str, ds: dict) -> None:
    """The reader settings: each one used by the format, a separator Python's csv reader can split on,
    an encoding Python can decode text with."""
    fmt = ds["format"]
    if fmt not in ("csv", "tsv"):
        for key in DELIMITED_ONLY + ("header",):
            if key in ds and (key != "header" or ds["header"] is False):
                raise ConfigError(f"{where}.{key}: only read for format csv or tsv, not {fmt}; remove it")
    if fmt in ("csv", "tsv") and ds["header"] is False and "column_names" not in ds:
        raise ConfigError(f"{where}.column_names: header: false needs the columns' names, e.g. column_names: [text, label]")
    if fmt == "hub" and ds["encoding"] != "utf-8":
        raise ConfigError(f"{where}.encoding: only read for local files; the hub's datasets decode themselves")
    if "sep" in ds:
        # '\t' in single quotes (or unquoted) is a backslash and a t: the user meant a tab
        sep = "\t" if ds["sep"] == "\\t" else ds["sep"]
        if len(sep) != 1 or sep in ('"', "\n", "\r"):
            raise ConfigError(f"{where}.sep: {ds['sep']!r} cannot separate fields: Python's csv reader splits on "
                              f"one character other than a quote or a line break (e.g. ';', ',' or \"\\t\" for a tab)")
        ds["sep"] = sep
    _refuse_repeats(f"{where}.column_names", ds.get("column_names", []), "each column")
    try:
        text = codecs.lookup(ds["encoding"])._is_text_encoding
    except LookupError:
        text = None
    if not text:
        known = ("utf-8", "utf-8-sig", "utf-16", "latin-1", "cp1252", "ascii", "cp1251", "koi8-r")
        raise ConfigError(f"{where}.encoding: {ds['encoding']!r} is not a text encoding Python knows"
                          f"{did_you_mean(ds['encoding'], known)} (utf-8-sig reads a file that starts with a "
                          f"byte-order mark)")


def _check_task(where: str, task: dict, config: dict) -> None:
    models, datasets = config["models"], config["datasets"]
    if task["model"] not in models:
        raise ConfigError(f"{where}.model: unknown model {task['model']!r}{did_you_mean(task['model'], models)}")
    if task["dataset"] not in datasets:
        raise ConfigError(f"{where}.dataset: unknown dataset {task['dataset']!r}{did_you_mean(task['dataset'], datasets)}")
    if task["type"] not in TASK_TYPES:
        close = did_you_mean(task["type"], TASK_TYPES)
        every = "" if "known:" in close else f" (task types: {', '.join(sorted(TASK_TYPES))})"
        raise ConfigError(f"{where}.type: unknown task type {task['type']!r}{close}{every}")
    ttype = task_type(task["type"])
    if datasets[task["dataset"]].get("format") == "conllu":
        _conllu_columns(where, task)
    validate_task(where, task)
    shared = [role for role, column in task["columns"].items() if list(task["columns"].values()).count(column) > 1]
    if shared:
        raise ConfigError(f"{where}.columns: {' and '.join(shared)} both read column {task['columns'][shared[0]]!r}; "
                          f"each role reads its own column")
    task.setdefault("eval", {"validation": {"split": "validation"}})
    for ename, ev in task["eval"].items():
        ev.setdefault("dataset", task["dataset"])
        if ev["dataset"] not in datasets:
            raise ConfigError(f"{where}.eval.{ename}.dataset: unknown dataset {ev['dataset']!r}{did_you_mean(ev['dataset'], datasets)}")
        if (ev["dataset"], ev["split"]) == (task["dataset"], task["train_split"]):
            raise ConfigError(f"{where}.eval.{ename}: reads {ev['dataset']}'s split {ev['split']!r}, the training split: "
                              f"a score on training data is no test score; evaluate on another split (or carve one: "
                              f"datasets.{ev['dataset']}.split_ratio: {{train: 0.8, test: 0.2}})")
    defaulted = "validation" not in task
    if defaulted:
        task["validation"] = _default_validation(task, datasets[task["dataset"]])
    validation = task["validation"]
    if isinstance(validation, dict):  # a selection split that is not reported
        validation.setdefault("dataset", task["dataset"])
        if validation["dataset"] not in datasets:
            raise ConfigError(f"{where}.validation.dataset: unknown dataset {validation['dataset']!r}"
                              f"{did_you_mean(validation['dataset'], datasets)}")
        if (validation["dataset"], validation["split"]) == (task["dataset"], task["train_split"]):
            raise ConfigError(f"{where}.validation: reads {validation['dataset']}'s split {validation['split']!r}, the "
                              f"training split: choosing on training data rewards fitting it; carve a selection "
                              f"split instead: datasets.{validation['dataset']}.split_ratio: {{train: 0.9, selection: "
                              f"0.1}} and validation: {{split: selection}}")
    elif validation is not None and validation not in task["eval"]:
        raise ConfigError(f"{where}.validation: {validation!r} is not an eval set of this task "
                          f"(eval sets: {', '.join(task['eval'])}); for a split that is not reported write "
                          f"validation: {{split: <name>}}")
    task.setdefault("metrics", list(ttype.default_metrics))
    _refuse_repeats(f"{where}.metrics", task["metrics"], "each metric")
    if "labels" in task:
        _refuse_repeats(f"{where}.labels", [str(x) for x in task["labels"]], "each label (its position is its id)")
    check_metrics(f"{where}.metrics", task["metrics"], ttype.metric_kind, ttype.name)
    if "transfer" in task:
        for role in ("source", "target"):
            if task["transfer"][role] not in task["eval"]:
                raise ConfigError(f"{where}.transfer.{role}: {task['transfer'][role]!r} is not an eval set of this task")
    _resolve_max_examples(where, task, declared_splits(datasets[task["dataset"]]) or set())
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
    declared = declared_splits(dataset)  # None: a hub dataset, whose splits staging finds out
    return {"split": "validation"} if declared is None or "validation" in declared else None


def _conllu_columns(where: str, task: dict) -> None:
    """CoNLL-U's own field names (form, lemma, upos, xpos, feats, head, deprel) name our columns."""
    for role, column in task["columns"].items():
        ours = conllu_column(str(column))
        if ours is None:
            raise ConfigError(f"{where}.columns.{role}: CoNLL-U has no field {column!r} "
                              f"(fields: form, lemma, upos, xpos, feats, head, deprel)")
        task["columns"][role] = ours


def _resolve_max_examples(where: str, task: dict, declared: set = frozenset()) -> None:
    """`max_examples` keys may name a split (as the dataset names it: train, validation, test) or an
    eval set; each eval set and the training split get their own limit. An eval-set name wins over
    a split name; a key that is an eval set's name and another eval set's split is ambiguous."""
    limits = task["max_examples"]
    evals = task["eval"]
    splits_in_use = {task["train_split"]} | {ev["split"] for ev in evals.values()}
    if isinstance(task["validation"], dict):  # an unreported selection split is read too
        splits_in_use.add(task["validation"]["split"])
    for key in limits:
        if key not in evals and key not in splits_in_use and key not in declared:  # declared: the dataset's splits
            known = sorted(set(evals) | splits_in_use | set(declared))
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
        both = (validation.get("max_examples"), limits.get(validation["split"]))
        if None not in both and both[0] != both[1]:
            raise ConfigError(f"{where}.validation.max_examples: {both[0]} here and max_examples.{validation['split']}: "
                              f"{both[1]} for the same selection split; keep one")
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
        if name in PRESETS and kind != name:
            raise ConfigError(f"{where}.kind: {name!r} is the built-in {name} preset, so {kind} results would be filed "
                              f"as {name}; give the {kind} variant its own name, e.g. methods: {{my_{kind}: {{kind: {kind}}}}}")
        family = method_of(kind)
        settings = {**preset_defaults(kind), **entry}
        if kind != "peft" and "peft_type" in entry and entry["peft_type"] != PRESETS[kind][1].get("peft_type"):
            raise ConfigError(f"{where}.peft_type: preset {kind!r} is {PRESETS[kind][1].get('peft_type')}; "
                              f"for another peft method write kind: peft, peft_type: {entry['peft_type']}")
        _check_training_keys(where, settings, tkeys)
        idle = sorted(set(entry) & tkeys - evaluation_keys())
        if idle and not family.trains(settings):
            raise ConfigError(f"{where}.{idle[0]}: {name} trains nothing, so {idle[0]} would be ignored; remove it")
        _validate_method_settings(where, kind, {k: v for k, v in settings.items() if k not in tkeys}, tkeys)
        resolved[name] = {"kind": kind, **settings}
    return resolved


def _validate_method_settings(where: str, kind: str, settings: dict, tkeys: set[str]) -> None:
    """The method family's check of its own settings (`where`: methods.<m>, or a grid's <...>.<m>),
    except that a key it does not take and that is a near miss of a training key (epoch, lrs) is
    named as that: the family's own message would list its fields only."""
    family = method_of(kind)
    try:
        family.validate(where, settings)
    except ConfigError as err:
        key = str(err)[len(where) + 1:].split(":", 1)[0] if str(err).startswith(where + ".") else None
        if key in settings and len(key) > 2 and key not in family.allowed_keys(settings):  # r is no misspelt lr
            meant = did_you_mean(key, tkeys | family.allowed_keys(settings))
            if meant.startswith(" — ") and meant.split("'")[1] in tkeys:
                name = where.rsplit(".", 1)[-1]
                raise ConfigError(f"{where}.{key}: neither a training key nor a setting of {name}{meant}") from None
        several = _several_values_hint(key, settings.get(key), where.split(".")[1]) if where.startswith("methods.") else None
        if several:  # methods: {lora: {r: [4, 8]}}: the family's own line, then what was meant
            raise ConfigError(f"{err} ({several})") from None
        raise


def _check_training_keys(where: str, settings: dict, tkeys: set[str]) -> None:
    props = load_schema()["definitions"]["training"]["properties"]
    method = where.split(".")[1] if where.startswith("methods.") else "<method>"
    for key, value in list(settings.items()):
        if key in tkeys:
            settings[key] = value = _whole(value, props[key])
            try:
                jsonschema.validate(value, props[key])
            except jsonschema.ValidationError as e:
                several = _several_values_hint(key, value, method) if e.validator == "type" else None
                raise ConfigError(f"{where}.{key}: {several or _schema_error_line(e).split(': ', 1)[1]}") from None


def _flow(values: list) -> str:
    """A list as YAML writes it on one line ([4, 8], [0.0001, 0.001]), for a line that says what to write."""
    return yaml.safe_dump(values, default_flow_style=True, width=10**6).strip()


def _several_values_hint(key, value, method: str = "<method>") -> str | None:
    """A setting written as a grid (r: [4, 8], epochs: [1, 2]) or as lr: auto outside tune: what
    was meant is a sweep or a tune grid of an experiment."""
    if key == "lr" and value == "auto":
        return (f"auto is a tune grid, not a learning rate: write tune: {{{method}: {{lr: auto}}}} (or tune: {{lr: auto}}) "
                f"in an experiment")
    if isinstance(value, list) and value and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        grid = _flow(value)
        return (f"{key} takes one value; to compare several, sweep them (sweep: {{{method}: {{{key}: {grid}}}}}) or "
                f"tune them (tune: {{{method}: {{{key}: {grid}}}}}) in an experiment")
    return None


def _refuse_unused_lr(raw: dict, config: dict) -> None:
    """`training.lr` (or a task's) is below every method entry in precedence, and each preset has its
    own lr: where every method that trains in the study (on that task) sets one, the value written is
    never used — the seed solutions' one learning rate for every method, silently ignored."""
    methods = config["methods"]

    def own_lr(m):
        return "lr" in methods[m] or not method_of(methods[m]["kind"]).trains(methods[m])

    fix = ("each method has its own learning rate (the presets' defaults, README: Methods): set it per method, e.g. "
           "methods: {lora: {lr: 1.0e-3}}, or tune it: tune: {lr: auto}")
    used = {(t, m) for exp in config["experiments"] for t in exp["tasks"] for m in exp["methods"]}
    if "lr" in (raw.get("training") or {}) and all(own_lr(m) for _, m in used):
        raise ConfigError(f"training.lr: no method of this study uses it — {fix}")
    for t, entry in (raw.get("tasks") or {}).items():
        if isinstance(entry, dict) and "lr" in (entry.get("training") or {}) and all(own_lr(m) for x, m in used if x == t):
            raise ConfigError(f"tasks.{t}.training.lr: no method of this task uses it — {fix}")


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
            idle = sorted(set(keys) - evaluation_keys())
            if idle and not method_of(methods[m]["kind"]).trains(methods[m]):
                raise ConfigError(f"{where}.sweep.{m}.{idle[0]}: {m} trains nothing, so every {idle[0]} value gives the "
                                  f"same cell; remove the sweep (its seeds are its only variation)")
            for k, values in keys.items():
                _check_grid_values(f"{where}.sweep.{m}", methods[m], k, values, tkeys)
        _check_tune(where, exp, config)


def _check_grid_values(where: str, method: dict, key: str, values: list, tkeys: set, at: str | None = None) -> None:
    """Every value of a sweep or tune grid is a setting the method takes; none is listed twice; the
    key changes results (`at`: the grid's key as the user wrote it, default `<where>.<key>`)."""
    written = at or f"{where}.{key}"
    if key in bookkeeping_keys() and len(values) > 1:
        raise ConfigError(f"{written}: {key} changes no result, so every value gives the same cell; "
                          f"set it in training: instead")
    for i, v in enumerate(values):
        one = {key: v}
        _check_training_keys(written.rsplit(".", 1)[0], one, tkeys)  # names the key as the user wrote it
        values[i] = v = one[key]  # 32.0 -> 32 for an integer hyperparameter
        cell = {**method, key: v}
        _validate_method_settings(where, cell["kind"], {x: y for x, y in cell.items() if x not in tkeys | {"kind"}}, tkeys)
    canon = [json.dumps(canonical(v), sort_keys=True) for v in values]
    if len(set(canon)) != len(canon):
        raise ConfigError(f"{written}: a value is listed twice")


def _check_tune(where: str, exp: dict, config: dict) -> None:
    """Normalise `tune` to {method: {key: [values] | 'auto'}} (trainable methods only) and
    `select` to {on, metric, seed}; refuse a key the method does not take, a choice (a tune grid or
    an untuned sweep of several variants) without an unreported selection set, a selection seed
    that is reported and a metric the task does not compute. See plan/tune.py for what runs."""
    from .tune import SELECTION_SEED, selection_metric

    tune, tasks, methods, tkeys = dict(exp.get("tune") or {}), config["tasks"], config["methods"], training_keys()
    options = {k: tune.pop(k) for k in TUNE_OPTIONS if k in tune and k not in exp["methods"]}
    shared = {k: v for k, v in tune.items() if k not in exp["methods"]}
    trained = [m for m in exp["methods"] if method_of(methods[m]["kind"]).trains(methods[m])]
    for k, values in shared.items():
        if k in tkeys:
            continue  # every trained method takes it (and a study that trains nothing is refused below)
        takes = [m for m in trained if k in _method_keys(methods[m])]
        if not takes and (k in PRESETS or k in config["methods"]):
            raise ConfigError(f"{where}.tune.{k}: method {k!r} is not in this experiment's methods "
                              f"({', '.join(exp['methods'])}): add it there or remove its tune entry")
        if not takes:
            raise ConfigError(f"{where}.tune.{k}: neither a method of this experiment nor a training hyperparameter"
                              f"{did_you_mean(k, set(exp['methods']) | tkeys | set(TUNE_OPTIONS))} (a tune key is one "
                              f"of those, a setting every trained method takes, or {', '.join(TUNE_OPTIONS)})")
        if len(takes) < len(trained):
            lacking = next(m for m in trained if m not in takes)
            grid = _flow(values) if isinstance(values, list) else "[...]"
            raise ConfigError(f"{where}.tune.{k}: a top-level tune key applies to every trained method, and {lacking} "
                              f"does not take {k}; write it under the methods that do: tune: "
                              f"{{{', '.join(f'{m}: {{{k}: {grid}}}' for m in takes)}}}")
    if (shared or options) and not trained:
        raise ConfigError(f"{where}.tune: no method of this experiment trains ({', '.join(exp['methods'])}), so there "
                          f"is nothing to tune; remove tune")
    resolved = {}
    for m in exp["methods"] if tune else []:
        own = tune.get(m)
        if m in tune and not (isinstance(own, dict) and own):
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
            if k in TUNE_OPTIONS:
                raise ConfigError(f"{at}: {k} is a setting of the whole tune block, not of one method: write "
                                  f"tune: {{{k}: ..., {m}: {{...}}}}")
            if values == "auto":
                if k != "lr":
                    raise ConfigError(f"{at}: auto is a grid for lr only; give a list of values")
                continue
            if not isinstance(values, list) or not values:
                one = ", one value where a grid is expected" if isinstance(values, (int, float, str)) else ""
                raise ConfigError(f"{at}: {values!r} is not valid{one} (a tuned key takes the values to search, e.g. lr: "
                                  f"auto or lr: [1.0e-4, 2.0e-4]; one fixed value goes in methods.<method> or training)")
            if "auto" in values:
                raise ConfigError(f"{at}: " + ("auto stands alone (lr: auto), it is not a value of a list: write lr: "
                                               "auto or lr: [values]" if k == "lr" else
                                               "auto is a grid for lr only; give a list of values"))
            _check_grid_values(f"{where}.tune.{m}", methods[m], k, values, tkeys, at)
        if grid:
            resolved[m] = grid
    exp["tuning"] = _check_tune_options(where, options, resolved, exp, config)
    select = dict(exp.get("select") or {})
    on, metric, seed = select.get("on", "validation"), select.get("metric"), select.get("seed", SELECTION_SEED)
    swept = sorted(m for m in exp["methods"] if m not in resolved and _sweep_size(exp["sweep"].get(m, {})) > 1)
    whys = {t: (f"tune picks a grid point of {', '.join(sorted(resolved))}" if resolved else
                f"the comparisons use one variant of {swept[0]}'s sweep, chosen" if swept else
                "the decoding is chosen" if chooses_decoding(tasks[t], metric) else None) for t in exp["tasks"]}
    if select and not any(whys.values()):
        raise ConfigError(f"{where}.select: this experiment chooses nothing (no tune grid, no sweep of several "
                          f"variants, no choice among decodings), so select would be ignored; remove it")
    for t, why in whys.items():
        if why is None:
            continue  # nothing to choose on this task
        if seed in exp["seeds"]:
            raise ConfigError(f"{where}.select.seed: {seed} is also one of the reported seeds; choices are made at a "
                              f"seed that is never reported: give select.seed another value (default {SELECTION_SEED})")
        _check_select_on(where, t, tasks[t], on, why)
        if metric is not None and metric != "loss" and metric not in tasks[t]["metrics"]:
            meant = did_you_mean(metric, tasks[t]["metrics"] + ["loss"])
            raise ConfigError(f"{where}.select.metric: {metric!r} is not a metric of task {t!r} (its metrics: "
                              f"{', '.join(tasks[t]['metrics'])}; or loss){meant if meant.startswith(' — ') else ''}")
        chosen = selection_metric(select, tasks[t])
        if own_rule_metrics([chosen]):
            raise ConfigError(f"{where}.select.metric: {chosen} is scored by its own rule after evaluation; select on "
                              f"another metric of task {t!r} or on loss")
    exp["tune"], exp["select"] = resolved, {"on": on, "metric": metric, "seed": seed}


TUNE_OPTIONS = ("strategy", "eta", "min_steps", "extend")  # keys of `tune` that say how, not what, to search


def _method_keys(settings: dict) -> set[str]:
    """The settings of its own a resolved method takes (r for LoRA; none for full)."""
    return method_of(settings["kind"]).allowed_keys({k: v for k, v in settings.items() if k != "kind"})


def _check_tune_options(where: str, options: dict, grids: dict, exp: dict, config: dict) -> dict:
    """{strategy, eta, min_steps, extend} of an experiment's `tune` (plan/tune.py), defaults filled;
    refuse what cannot work: halving without a grid of 2+ points, or with checkpoint: best (a rung
    scores the weights at its last step; a run's best step is known only at its end); extend
    without any lr: auto grid (an explicit grid is the user's, the auto one is ours to widen)."""
    from .tune import ETA, EXTEND_LIMIT, MIN_STEPS, grid_size

    strategy = options.get("strategy", "grid")
    autos = sorted(m for m, grid in grids.items() if grid.get("lr") == "auto")
    if options.get("extend") and not autos:
        raise ConfigError(f"{where}.tune.extend: widens an lr: auto grid, and this experiment has none; write "
                          f"tune: {{lr: auto}} or remove extend")
    if strategy == "halving":
        if not grids:
            raise ConfigError(f"{where}.tune.strategy: halving needs a grid to search: add lr: auto (or lr: [values])")
        for m, grid in sorted(grids.items()):
            if grid_size(grid) < 2:
                raise ConfigError(f"{where}.tune.strategy: halving needs 2 or more grid points, and {m}'s grid has one; "
                                  f"add values or use strategy: grid")
            for t in exp["tasks"]:
                hp = {**config["training"], **config["tasks"][t].get("training", {}), **config["methods"][m]}
                if hp.get("checkpoint") == "best" or "checkpoint" in grid:
                    raise ConfigError(f"{where}.tune.strategy: halving scores each rung at its last step, and {m} uses "
                                      f"checkpoint: best on task {t!r} (a run's best step is known only at its end); "
                                      f"use checkpoint: last for {m} or strategy: grid")
    elif "eta" in options or "min_steps" in options:
        key = "eta" if "eta" in options else "min_steps"
        raise ConfigError(f"{where}.tune.{key}: a setting of strategy: halving; add strategy: halving or remove it")
    return {"strategy": strategy, "eta": options.get("eta", ETA), "min_steps": options.get("min_steps", MIN_STEPS),
            "extend": options.get("extend", EXTEND_LIMIT) if autos else 0}


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
        unset = " (or, if you wrote validation: null and the dataset has a validation split, delete that line)"
        raise ConfigError(f"tasks.{name}.validation: task {name!r} has no selection set, and {why} on it: {carve}"
                          + (unset if "validation" in task and task["validation"] is None else ""))
    if on not in ("validation", selection["name"], selection["split"]):
        raise ConfigError(f"{where}.select.on: {on!r} is not task {name!r}'s selection set (tasks.{name}.validation: "
                          f"{selection['name'] if selection['reported'] else selection['split']!r}); write select.on: "
                          f"validation, or point tasks.{name}.validation at the set you meant")
    if selection["reported"]:
        raise ConfigError(f"tasks.{name}.validation: task {name!r} selects on {selection['name']!r}, a reported eval "
                          f"set, and {why} on it: {carve}")
    same = eval_set_reading_selection(task)
    if same:
        raise ConfigError(f"tasks.{name}.validation: task {name!r}'s selection split {selection['split']!r} is also read "
                          f"by its reported eval set {same!r}, and {why} on it: {carve}")


def eval_set_reading_selection(task: dict) -> str | None:
    """The reported eval set that reads the task's selection split (the same data under two
    names), if any: nothing may be chosen on it."""
    selection = task["selection"]
    return next((e for e, ev in task["eval"].items()
                 if (ev["dataset"], ev["split"]) == (selection["dataset"], selection["split"])), None)


def canonical(value):
    """JSON-plain, key-sorted form: what params: compares, so YAML spelling never matters."""
    return json.loads(json.dumps(value, sort_keys=True))
