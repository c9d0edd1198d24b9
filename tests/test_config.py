"""Config validation (good and bad) and the run table."""
import copy

import pytest

from peftgrid.errors import ConfigError
from peftgrid.methods import PRESETS, preset_defaults
from peftgrid.plan import build_run_table, validate_config, variant_name
from peftgrid.plan.specs import train_spec

BASE = {
    "models": {"tiny": {"source": "/models/tiny"}},
    "datasets": {"emo": {"format": "csv", "sep": ";", "header": False, "column_names": ["text", "label"],
                         "splits": {"train": "a.txt", "validation": "b.txt", "test": "c.txt"}}},
    "tasks": {"emotion": {"type": "sequence_classification", "model": "tiny", "dataset": "emo",
                          "columns": {"text": "text", "label": "label"},
                          "eval": {"test": {"split": "test"}},  # validation: the unreported selection set (default)
                          "training": {"epochs": 2}}},
    "training": {"batch_size": 16},
    "methods": {"none": {}, "full": {"lr": 1.0e-4}, "lora": {"lr": 5.0e-4, "r": 8, "alpha": 16}},
    "experiments": [{"tasks": ["emotion"], "methods": ["none", "full", "lora"],
                     "sweep": {"lora": {"r": [2, 4], "alpha": [16, 32]}}, "seeds": [1, 2]}],
}


def cfg(**changes):
    c = copy.deepcopy(BASE)
    for path, value in changes.items():
        node = c
        keys = path.split("__")
        for k in keys[:-1]:
            node = node[int(k)] if isinstance(node, list) else node[k]
        if value is DELETE:
            del node[keys[-1]]
        else:
            node[keys[-1]] = value
    return c


DELETE = object()


def test_defaults_are_filled():
    c = validate_config(BASE)
    assert c["training"]["lr"] == 2.0e-5 and c["training"]["batch_size"] == 16  # lr: the schema's default
    assert c["training"]["warmup_ratio"] == 0.06 and c["training"]["checkpoint"] == "last"
    assert c["models"]["tiny"]["allow_pickle"] is False
    assert c["tasks"]["emotion"]["metrics"] == ["accuracy", "f1_macro", "precision_macro", "recall_macro"]
    assert c["tasks"]["emotion"]["selection"]["split"] == "validation"  # the dataset's, unreported (the default)
    assert c["tasks"]["emotion"]["selection"]["reported"] is False
    assert c["tasks"]["emotion"]["eval"]["test"]["dataset"] == "emo"
    assert c["experiments"][0]["seeds"] == [1, 2]
    assert "training" not in BASE["tasks"]["emotion"] or BASE["training"] == {"batch_size": 16}


@pytest.mark.parametrize("changes, fragment", [
    ({"trainin": {}}, "trainin: unknown key — did you mean 'training'?"),
    ({"training__lr": "1e-4"}, "training.lr: '1e-4' is a string"),
    ({"methods__lora__lr": "5e-4"}, "methods.lora.lr: '5e-4' is a string"),
    ({"experiments__0__sweep": {"lora": {"lr": ["1e-4"]}}}, "experiments[0].sweep.lora.lr: '1e-4' is a string"),
    ({"training__batch_size": 0}, "training.batch_size"),
    ({"training__precision": "fp8"}, "training.precision"),
    ({"tasks__emotion__model": "bert"}, "tasks.emotion.model: unknown model 'bert'"),
    ({"tasks__emotion__dataset": "nope"}, "tasks.emotion.dataset: unknown dataset 'nope'"),
    ({"tasks__emotion__type": "regression"}, "tasks.emotion.type"),
    ({"tasks__emotion__columns": {"text": "text"}}, "tasks.emotion.columns: missing label"),
    ({"tasks__emotion__columns": {"text": "t", "label": "l", "tags": "x"}}, "tasks.emotion.columns.tags: unknown role"),
    ({"tasks__emotion__metrics": ["bleu"]}, "tasks.emotion.metrics: unknown metric 'bleu'"),
    ({"tasks__emotion__validation": "dev"}, "tasks.emotion.validation: 'dev' is not an eval set"),
    ({"tasks__emotion__eval": {"x": {"dataset": "other", "split": "test"}}}, "tasks.emotion.eval.x.dataset"),
    ({"tasks__emotion__max_examples": {"tset": 5}}, "tasks.emotion.max_examples.tset"),
    # method keys are checked against peft's own config dataclass
    ({"methods__lora__rank": 4}, "methods.lora.rank: LoraConfig has no field 'rank'"),
    ({"methods__lora__num_virtual_tokens": 4}, "methods.lora.num_virtual_tokens: LoraConfig has no field"),
    ({"methods__lora__r": -1}, "methods.lora.r: must be an integer of at least 1"),
    ({"methods__lora__r": 0}, "methods.lora.r: must be an integer of at least 1"),
    ({"methods__oft": {"r": -1}}, "methods.oft.r: must be an integer of at least 0"),
    ({"methods__lora__lr": -1}, "methods.lora.lr"),
    ({"methods__magic": {}}, "methods.magic: unknown method 'magic'"),
    ({"methods__magic": {}}, "a new method name needs kind: <preset>"),
    ({"methods__magic": {"kind": "lorra"}}, "methods.magic.kind: unknown method 'lorra' — did you mean 'lora'?"),
    ({"experiments__0__methods": ["none", "full", "lora", "lorra"]},
     "experiments[0].methods: unknown method 'lorra' — did you mean 'lora'?"),
    ({"tasks__emotion__model": "tinyy"}, "tasks.emotion.model: unknown model 'tinyy' — did you mean 'tiny'?"),
    ({"experiments__0__tasks": ["emotion", "emotion"]}, "'emotion' is listed twice"),
    ({"experiments__0__seeds": [1, 1]}, "experiments[0].seeds: a seed is listed twice"),
    ({"experiments__0__sweep": {"lora": {"r": []}}}, "experiments[0].sweep.lora.r"),
    ({"experiments__0__sweep": {"lora": {"r": [2, 2]}}}, "sweep.lora.r: a value is listed twice"),
    ({"experiments__0__sweep": {"ia3": {"lr": [1.0]}}}, "sweep.ia3: method 'ia3' is not in this experiment"),
    ({"experiments__0__sweep": {"lora": {"rank": [2]}}}, "sweep.lora.rank: LoraConfig has no field 'rank'"),
    ({"models": {"../evil": {"source": "x"}}}, "name '../evil' is not allowed"),
    ({"tasks": {"a/b": BASE["tasks"]["emotion"]}}, "name 'a/b' is not allowed"),
    ({"datasets__emo__splits": DELETE}, "datasets.emo.splits: required for format 'csv'"),
    ({"datasets__emo__split_ratio": {"train": 0.5, "test": 0.2}}, "split_ratio: fractions must add up to 1"),
    ({"experiments": []}, "experiments"),
])
def test_bad_config_names_the_key(changes, fragment):
    with pytest.raises(ConfigError) as err:
        validate_config(cfg(**changes))
    message = str(err.value)
    assert fragment in message
    assert "\n" not in message


def test_run_table_expands_the_matrix():
    cells = build_run_table(validate_config(BASE))
    # (none + full + 4 lora variants) x 2 seeds, and the 4 lora variants at the selection seed (they are chosen among)
    assert len(cells) == 12 + 4
    variants = sorted({c.variant for c in cells if c.method == "lora"})
    assert variants == ["alpha=16_r=2", "alpha=16_r=4", "alpha=32_r=2", "alpha=32_r=4"]
    cell = next(c for c in cells if c.variant == "alpha=32_r=4" and c.seed == 2)
    assert cell.dir == "results/runs/emotion/lora/alpha=32_r=4/seed2"
    # precedence: training < tasks.<t>.training < methods.<m> < sweep
    assert cell.hparams["epochs"] == 2 and cell.hparams["batch_size"] == 16
    assert cell.hparams["lr"] == 5.0e-4 and cell.hparams["r"] == 4 and cell.hparams["alpha"] == 32
    assert cell.hparams["seed"] == 2 and cell.hparams["kind"] == "lora"
    assert next(c for c in cells if c.method == "none").variant == "default"


def test_spelling_and_key_order_do_not_change_a_cell():
    a = build_run_table(validate_config(BASE))
    c = cfg(methods__lora={"alpha": 16, "r": 8, "lr": 0.0005})
    c["experiments"][0]["sweep"]["lora"] = {"alpha": [16, 32], "r": [2, 4]}
    b = build_run_table(validate_config(c))
    assert [(x.key, x.hparams) for x in a] == [(x.key, x.hparams) for x in b]
    assert list(a[0].hparams) == sorted(a[0].hparams)


def test_method_kind_allows_two_configurations_of_one_method():
    c = cfg(methods__lora_qv={"kind": "lora", "target_modules": ["query", "value"], "r": 4})
    c["experiments"][0]["methods"].append("lora_qv")
    cells = build_run_table(validate_config(c))
    qv = next(x for x in cells if x.method == "lora_qv")
    assert qv.kind == "lora" and qv.hparams["target_modules"] == ["query", "value"]
    assert qv.hparams["alpha"] == 16  # the kind's default


def test_a_cell_listed_by_two_experiments_runs_once():
    c = cfg()
    c["experiments"].append({"tasks": ["emotion"], "methods": ["full"], "seeds": [1]})
    assert len(build_run_table(validate_config(c))) == 12 + 4


def test_variant_names_have_no_commas():
    assert variant_name({}) == "default"
    assert variant_name({"r": 8, "alpha": 16}) == "alpha=16_r=8"
    assert variant_name({"lr": 0.0005, "target_modules": ["query", "value"]}) == "lr=0.0005_target_modules=query+value"


def test_train_spec_task_leaves_out_eval_sets():
    c = validate_config(BASE)
    cell = next(x for x in build_run_table(c) if x.method == "full")
    p = train_spec(c, cell).task
    assert "eval" not in p and "metrics" not in p
    assert p["validation"] == {"name": "selection", "dataset": "emo", "split": "validation", "max_examples": None}


def test_validation_during_training_reads_as_many_rows_as_its_eval_set():
    c = validate_config(cfg(tasks__emotion__max_examples={"train": 50, "validation": 7, "test": 9}, experiments__0__sweep={},
                            tasks__emotion__eval={"validation": {"split": "validation"}, "test": {"split": "test"}}))
    task = c["tasks"]["emotion"]
    assert task["train_max_examples"] == 50
    assert task["eval"]["validation"]["max_examples"] == 7 and task["eval"]["test"]["max_examples"] == 9
    cell = next(x for x in build_run_table(c) if x.method == "full")
    assert train_spec(c, cell).task["validation"]["max_examples"] == 7
    # an unreported selection split takes its limit by split name
    c = validate_config(cfg(tasks__emotion__validation={"split": "validation"},
                            tasks__emotion__max_examples={"train": 50, "validation": 12}))
    assert c["tasks"]["emotion"]["selection"]["max_examples"] == 12


def test_a_learning_rate_no_method_uses_is_refused():
    """Every preset has its own lr, above `training` in precedence: a training.lr (the seeds' one lr
    for every method) was accepted and silently ignored. A `kind: peft` method has no preset lr and
    uses it, so there it is accepted."""
    with pytest.raises(ConfigError, match=r"^training\.lr: no method of this study uses it"):
        validate_config(cfg(training__lr=5.0e-3))
    with pytest.raises(ConfigError, match=r"^tasks\.emotion\.training\.lr: no method of this task uses it"):
        validate_config(cfg(tasks__emotion__training={"lr": 5.0e-3}))
    c = cfg(training__lr=5.0e-3, methods__my_loha={"kind": "peft", "peft_type": "LOHA", "r": 4})
    c["experiments"][0]["methods"].append("my_loha")
    assert validate_config(c)["methods"]["my_loha"].get("lr") is None  # the cell's lr then comes from training


def test_one_cell_under_two_variant_names_is_refused():
    """Plain lora in one experiment and lora swept over r (the preset's r among the values) in another
    trained the same cell twice and reported it as two rows."""
    from peftgrid.plan import build_run_table

    c = cfg(experiments__0__sweep={}, experiments__0__methods=["none", "lora"])
    c["experiments"].append({"tasks": ["emotion"], "methods": ["lora"], "sweep": {"lora": {"r": [2, 8]}}, "seeds": [1, 2]})
    with pytest.raises(ConfigError, match=r"are one cell under two names"):
        build_run_table(validate_config(c))


def test_an_alias_and_peft_field_written_together_are_refused():
    with pytest.raises(ConfigError, match=r"^methods\.lora\.lora_alpha: peftgrid's alpha is peft's lora_alpha"):
        validate_config(cfg(methods__lora={"alpha": 16, "lora_alpha": 32}))


def test_a_selection_split_that_is_the_training_split_is_refused():
    """Choosing a variant on the data it trained on rewards fitting it (a newcomer's config: accepted
    by the config and the data check before)."""
    with pytest.raises(ConfigError, match=r"tasks\.emotion\.validation: reads emo's split 'train', the training split"):
        validate_config(cfg(tasks__emotion__validation={"split": "train"}))


def test_methods_section_is_optional_and_presets_resolve_with_their_defaults():
    c = copy.deepcopy(BASE)
    del c["methods"]
    c["experiments"][0]["methods"] = ["none", "full", "lora", "dora", "prefix_tuning"]
    c["experiments"][0]["sweep"] = {}
    v = validate_config(c)
    assert set(v["methods"]) == {"none", "full", "lora", "dora", "prefix_tuning"}
    for name in ("lora", "dora", "prefix_tuning"):
        assert v["methods"][name] == {"kind": name, **preset_defaults(name)}
    assert v["methods"]["dora"]["use_dora"] is True and v["methods"]["lora"]["r"] == 8
    cells = {x.method: x for x in build_run_table(v) if x.seed == 1}
    assert cells["lora"].hparams["lr"] == PRESETS["lora"][1]["lr"] == 5.0e-4  # the preset's lr beats training.lr
    assert cells["full"].hparams["lr"] == 2.0e-5  # full has no preset lr: training.lr
    assert cells["prefix_tuning"].hparams["num_virtual_tokens"] == 20
    assert cells["dora"].kind == "dora" and cells["dora"].hparams["peft_type"] == "LORA"


def test_a_methods_entry_overrides_only_its_keys():
    c = cfg(methods={"lora": {"r": 4}})
    c["experiments"][0]["sweep"] = {}
    lora = validate_config(c)["methods"]["lora"]
    assert lora == {**{"kind": "lora"}, **preset_defaults("lora"), "r": 4}


def test_a_bare_tracking_key_turns_tracking_on():
    # YAML `tracking:` with nothing after it is null: a newcomer means "on, with the defaults"
    assert validate_config(BASE)["tracking"] is None
    assert validate_config({**BASE, "tracking": None})["tracking"] == {"uri": "sqlite:///mlflow.db", "experiment": "peftgrid"}
    assert validate_config({**BASE, "tracking": False})["tracking"] is None
    assert validate_config({**BASE, "tracking": {"experiment": "x"}})["tracking"]["experiment"] == "x"


@pytest.mark.parametrize("path, value, read", [
    ("training__batch_size", 16.0, lambda c: c["training"]["batch_size"]),
    ("gpu_slots_per_device", 2.0, lambda c: c["gpu_slots_per_device"]),
    ("tasks__emotion__max_examples", {"train": 2.0e3}, lambda c: c["tasks"]["emotion"]["train_max_examples"]),
    ("tasks__emotion__validation", {"split": "validation", "max_examples": 50.0},
     lambda c: c["tasks"]["emotion"]["selection"]["max_examples"]),  # inside a oneOf branch
    ("experiments__0__seeds", [1.0, 2.0], lambda c: c["experiments"][0]["seeds"][1]),
    ("methods__full", {"lr": 1.0e-4, "max_steps": 3.0e2}, lambda c: c["methods"]["full"]["max_steps"]),
    ("experiments__0__sweep", {"full": {"batch_size": [8.0, 16.0]}}, lambda c: c["experiments"][0]["sweep"]["full"]["batch_size"][0]),
])
def test_whole_floats_become_integers_where_a_count_is_expected(path, value, read):
    """YAML reads 16.0 and 2.0e3 as floats; JSON schema draft 7 counts them as integers, so they
    passed and reached range() or a file name as floats (8.0 == 8 in Python: check the type)."""
    got = read(validate_config(cfg(**{path: value})))
    assert type(got) is int and got == int(got)
    lr = validate_config(cfg(methods__lora__lr=1.0))["methods"]["lora"]["lr"]
    assert type(lr) is float  # a number that may be fractional stays as written


def _tuned(tune=None, select=None, methods=("none", "full", "lora")):
    """BASE without its sweep, with a tune and select block (a newcomer's "Tuning fairly" config)."""
    c = cfg(experiments__0__sweep={}, experiments__0__methods=list(methods))
    if tune is not None:
        c["experiments"][0]["tune"] = tune
    if select is not None:
        c["experiments"][0]["select"] = select
    return c


@pytest.mark.parametrize("config, expected, absent", [
    # a misspelt tune setting was read as a hyperparameter to tune, and its value blamed
    (_tuned({"lr": "auto", "stratergy": "halving"}), "experiments[0].tune.stratergy: neither a method of this experiment nor a training hyperparameter — did you mean 'strategy'?", "schemas"),
    (_tuned({"lr": "auto", "strategy": "halving", "min_step": 5}),
     "experiments[0].tune.min_step: neither a method of this experiment nor a training "
     "hyperparameter — did you mean 'min_steps'?", "schemas"),
    # a method setting as a top-level tune key: the method that lacks it is named, and where to move it
    (_tuned({"lr": "auto", "r": [4, 8]}), "experiments[0].tune.r: a top-level tune key applies to every trained "
     "method, and full does not take r; write it under the methods that do: tune: {lora: {r: [4, 8]}}", "did you mean 'lr'"),
    (_tuned({"lr": 5.0e-4}), "experiments[0].tune.lr: 0.0005 is not valid, one value where a grid is expected (a tuned "
     "key takes the values to search, e.g. lr: auto or lr: [1.0e-4, 2.0e-4]; one fixed value goes in methods.<method> or "
     "training)", "schemas"),
    (_tuned(None), "", None),  # placeholder replaced below: tune written with nothing after it
    (_tuned({"lora": {"lrs": [1.0e-3, 2.0e-3]}}), "experiments[0].tune.lora.lrs: neither a training key nor a setting "
     "of lora — did you mean 'lr'?", "known:"),
    (cfg(methods__lora={"r": 8, "epoch": 3}), "methods.lora.epoch: neither a training key nor a setting of lora — "
     "did you mean 'epochs'?", "known:"),
    # a quoted number is a string: the hint for epochs: 0 ("nothing would train") misled
    (cfg(training__epochs="2"), "training.epochs: '2' is a string, not a number: write 2 without quotes", "nothing would train"),
    (_tuned({"lr": "auto"}, {"seed": "1000"}), "experiments[0].select.seed: '1000' is a string, not a number: write 1000 "
     "without quotes", None),
    # the README writes LoRA; the method is lora
    (cfg(experiments__0__methods=["none", "LoRA"], experiments__0__sweep={}),
     "experiments[0].methods: unknown method 'LoRA' — did you mean 'lora'?", "known:"),
    # the task's metrics were listed twice, and f1 suggested nothing
    (_tuned({"lr": "auto"}, {"metric": "f1"}), "experiments[0].select.metric: 'f1' is not a metric of task 'emotion' "
     "(its metrics: accuracy, f1_macro, precision_macro, recall_macro; or loss) — did you mean 'f1_macro'?", "known:"),
    (_tuned({"lr": "auto"}, {"metric": "mcc"}), "experiments[0].select.metric: 'mcc' is not a metric of task 'emotion' "
     "(its metrics: accuracy, f1_macro, precision_macro, recall_macro; or loss)", "known:"),
    (_tuned({"lr": "auto", "strategy": "Halving"}), "experiments[0].tune.strategy: 'Halving' is not one of grid, "
     "halving — did you mean 'halving'?", None),
    (_tuned({"lr": "auto", "extend": True}), "experiments[0].tune.extend: True is not of type 'integer' (how many points "
     "past the grid's edge, e.g. extend: 3; extend: 0 turns it off)", None),
    (_tuned({"dora": {"lr": "auto"}}), "experiments[0].tune.dora: method 'dora' is not in this experiment's methods "
     "(none, full, lora): add it there or remove its tune entry", "did you mean"),
    (_tuned({"lr": "auto"}, "validation"), "experiments[0].select: 'validation' is not of type 'object' (select says "
     "how choices are made, e.g. select: {on: validation, metric: accuracy})", None),
    # several values, or auto, where one is expected: what was meant is a sweep or a tune grid
    (cfg(training__epochs=[1, 2]), "training.epochs: epochs takes one value; to compare several, sweep them (sweep: "
     "{<method>: {epochs: [1, 2]}}) or tune them (tune: {<method>: {epochs: [1, 2]}}) in an experiment", "nothing would train"),
    (cfg(methods__lora__lr="auto"), "methods.lora.lr: auto is a tune grid, not a learning rate: write tune: {lora: {lr: "
     "auto}} (or tune: {lr: auto}) in an experiment", None),
    (cfg(methods__lora__r=[4, 8]), "methods.lora.r: must be an integer of at least 1, got [4, 8] (r takes one value; to "
     "compare several, sweep them (sweep: {lora: {r: [4, 8]}}) or tune them (tune: {lora: {r: [4, 8]}}) in an experiment)", None),
    # a cap for every split is a mapping; the scalar was refused without saying so
    (cfg(tasks__emotion__max_examples=1000), "tasks.emotion.max_examples: 1000 is not of type 'object' (a number per "
     "split or eval set, e.g. max_examples: {train: 2000, test: 500})", None),
    (cfg(experiments__0__tasks="emotion"), "experiments[0].tasks: 'emotion' is not of type 'array' (a list, e.g. "
     "tasks: [emotion])", None),
])
def test_a_newcomers_tune_mistakes_name_the_key_and_the_fix(config, expected, absent):
    """Configs written from the README's "Tuning fairly" (tests/configs has their neighbours): each
    stops with one line naming the key as written and what to write, never a misleading hint."""
    if not expected:  # `tune:` with nothing after it (YAML null)
        config["experiments"][0]["tune"] = None
        expected, absent = "experiments[0].tune: empty (a key with nothing after it is null in YAML)", "None"
    with pytest.raises(ConfigError) as err:
        validate_config(config)
    message = str(err.value)
    assert message.startswith(expected), message
    assert "\n" not in message and (absent is None or absent not in message), message


def test_a_top_level_tune_key_every_trained_method_takes_is_a_shared_grid():
    """README: top-level tune keys apply to every trained method and may be a method setting (r for
    LoRA): `tune: {lr: auto, r: [4, 8]}` over none and lora was refused ("neither a method of this
    experiment nor a training hyperparameter — did you mean 'lr'?")."""
    c = validate_config(_tuned({"lr": "auto", "r": [4, 8]}, methods=("none", "lora", "dora")))
    assert c["experiments"][0]["tune"] == {"lora": {"lr": "auto", "r": [4, 8]}, "dora": {"lr": "auto", "r": [4, 8]}}
    cells = build_run_table(c)
    assert {x.hparams["r"] for x in cells if x.method == "lora" and x.seed == 1000} == {4, 8}
