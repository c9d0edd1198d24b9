"""Every rule's params are canonical: one spec's to_params(), the same whatever order the config's
keys are written in, changed by an edit exactly where the edited value is read, and read back by
the scripts unchanged (Spec.from_params)."""
import random

import pytest
import yaml

from conftest import REPO
from peftgrid.errors import ConfigError
from peftgrid.plan import build_run_table, build_tune_groups, validate_config
from peftgrid.plan import specs
from peftgrid.plan.layout import evaluation_dir
from peftgrid.plan.runs import build_choices, evaluations
from peftgrid.plan.tune import STAGE_FILE
from peftgrid.tasks import TASK_TYPES
from peftgrid.tasks.classification import SequenceClassification


def raw_study() -> dict:
    """configs/cpu_small.yaml plus a generation task (three decodings, COMET) and sweeps."""
    raw = yaml.safe_load((REPO / "configs" / "cpu_small.yaml").read_text())
    raw["models"]["gpt2"] = {"source": "/models/tiny_gpt2"}
    raw["datasets"]["en_ru"] = {"format": "parallel", "splits": {"train": {"en": "news.en", "ru": "news.ru"}},
                                "split_ratio": {"train": 0.8, "validation": 0.1, "test": 0.1}, "split_seed": 3}
    raw["datasets"]["emotion_local"] = {"format": "csv", "sep": ";", "header": False,
                                       "column_names": ["text", "label"],
                                       "splits": {"train": "train.txt", "validation": "val.txt", "test": "test.txt"}}
    raw["tasks"]["translate"] = {
        "type": "causal_lm", "model": "gpt2", "dataset": "en_ru", "columns": {"source": "en", "target": "ru"},
        "prompt": "English: {source}\nRussian: ", "max_new_tokens": 16, "coverage_threshold": 0.05,
        "decoding": {"greedy": {}, "beam2": {"num_beams": 2, "length_penalty": 1.0},
                     "sample": {"do_sample": True, "top_p": 0.9, "temperature": 0.7, "seed": 1}},
        "eval": {"test": {"split": "test", "max_examples": 50}},  # validation: unreported, chooses (the default)
        "metrics": ["bleu", "chrf", "rouge", "comet"], "rouge": {"stem": True},
        "max_examples": {"train": 400, "validation": 30},
        "training": {"epochs": 1, "max_length": 96, "batch_size": 8},
    }
    raw["tasks"]["emotion_local"] = {"type": "sequence_classification", "model": "minilm", "dataset": "emotion_local",
                                     "columns": {"text": "text", "label": "label"},
                                     "eval": {"test": {"split": "test"}},
                                     "max_examples": {"train": 300, "test": 100}}
    raw["methods"]["lora_qv"] = {"kind": "lora", "target_modules": ["query", "value"], "r": 4, "alpha": 8}
    raw["methods"]["prefix_tuning"] = {"num_virtual_tokens": 8, "lr": 1.0e-2}
    raw["comet"] = {"source": "Unbabel/wmt22-comet-da", "batch_size": 8}
    raw["report"] = {"quality_metric": {"emotion": "f1_macro", "translate": "chrf"},
                     "eval_set": {"emotion": "test", "pos_en_de": "de_test"}, "within_points": 2.0}
    raw["experiments"].append({"tasks": ["translate"], "methods": ["none", "lora", "prefix_tuning"], "seeds": [1, 2],
                               "sweep": {"lora": {"r": [4, 8], "alpha": [8, 16], "lr": [1.0e-3, 5.0e-3]},
                                         "prefix_tuning": {"num_virtual_tokens": [4, 8]}}})
    raw["experiments"].append({"tasks": ["emotion_local"], "methods": ["none", "lora", "lora_qv"],
                               "sweep": {"lora_qv": {"target_modules": [["query"], ["query", "value"]]}}})
    return raw


# Mappings whose order means something: a task's eval sets are reported in the order written and the
# first is the default main set when there is no `test` (report.eval_set, the summary); the summary
# shows a generation task's first decoding. Their entries are reordered like everything else.
ORDERED = {("tasks", "*", "eval"), ("tasks", "*", "decoding")}


def reorder(value, how, path=(), keep=ORDERED):
    """Every mapping, at every level (lists descended into, their order kept), re-keyed by `how`,
    except the mappings at a `keep` path (whose entries are still reordered inside)."""
    if isinstance(value, dict):
        ordered = any(len(p) == len(path) and all(a in ("*", b) for a, b in zip(p, path)) for p in keep)
        keys = list(value) if ordered else how(list(value))
        return {k: reorder(value[k], how, path + (k,), keep) for k in keys}
    if isinstance(value, list):
        return [reorder(v, how, path + ("[]",), keep) for v in value]
    return value


def reverse(keys):
    return keys[::-1]


def shuffler(seed):
    rng = random.Random(seed)

    def how(keys):
        keys = list(keys)
        rng.shuffle(keys)
        return keys
    return how


def all_specs(config: dict) -> dict:
    """Every spec the rules build for this config, keyed by rule and wildcards."""
    cells = build_run_table(config)
    tasks = sorted({c.task for c in cells})  # TASKS_IN_STUDY
    out = {}
    for name in config["datasets"]:
        out[f"stage_dataset/{name}"] = specs.stage_dataset_spec(config, name)
    for name in config["models"]:
        out[f"stage_model/{name}"] = specs.stage_model_spec(config, name)
    out["stage_comet"] = specs.stage_comet_spec(config)
    for t in tasks:
        out[f"check_data/{t}"] = specs.check_data_spec(config, t)
        out[f"report_task/{t}"] = specs.task_report_spec(config, t, cells)
    for c in cells:
        out[f"train/{c.dir}"] = specs.train_spec(config, c)
        if c.selecting:
            continue  # a run at the selection seed is scored on the selection set only (below)
        for where, (ev, _) in evaluations(config, c.task).items():  # rule evaluate, as it looks them up
            if ev is not None:
                out[f"evaluate/{c.dir}/{where}"] = specs.evaluation_spec(config, c, where)
    for c in cells:  # rule retention: every reported cell on each retention set of its task
        for name in ([] if c.selecting else config["tasks"][c.task].get("retention") or {}):
            out[f"retention/{c.dir}/{name}"] = specs.retention_spec(config, c, name)
    for model, name in sorted({(config["tasks"][t]["model"], n) for t in tasks for n in config["tasks"][t].get("retention") or {}}):
        out[f"retention_base/{model}/{name}"] = specs.retention_base_spec(config, model, name)  # once per (model, set)
    for t in tasks:  # one weight-distance job per task: its reported cells (nothing here is tuned)
        out[f"weight_distances/{t}"] = specs.distances_spec(config, t, [c for c in cells if not c.selecting])
    for t in tasks:
        if "comet" in config["tasks"][t]["metrics"] and config.get("comet") is not None:
            out[f"comet/{t}"] = specs.comet_spec(config, t, cells)  # one COMET job per task
    out["summary"] = specs.summary_spec(config, tasks)
    out["report"] = specs.report_spec(config, tasks)
    groups, choices = build_tune_groups(config), build_choices(config)
    out["report_ranks"] = specs.ranks_spec(config, tasks, choices)
    by_key = {c.key: c for c in cells}
    for g in groups:  # tuning checkpoints
        out[f"select/{g.selection_file}"] = specs.select_spec(g)
        if g.staged:  # halving, extension: the first stage (later ones are planned from it)
            out[f"tune_stage/{STAGE_FILE.format(**g.wildcards, stage=0)}"] = specs.stage_spec(g, 0, list(g.candidates))
    for ch in choices:  # every choice, and the selection-seed runs' scores on the selection set
        out[f"choose/{ch.file}"] = specs.choose_spec(ch)
        for v, d in ch.pairs():
            cell = by_key[(ch.task, ch.method, v, ch.seed)]
            if ch.metric != "loss":
                where = evaluation_dir(None, d)
                out[f"evaluate/{cell.dir}/{where}"] = specs.evaluation_spec(config, cell, where)
    for t in sorted({g.task for g in groups}):
        out[f"report_tuning/{t}"] = specs.tuning_report_spec(t, groups)
    if config.get("tracking") is not None:
        out["track"] = specs.track_spec(config, cells)
    return out


def tuned_study() -> dict:
    """raw_study with a tuned experiment (an unreported selection split) and tracking."""
    raw = raw_study()
    raw["tracking"] = {}
    raw["tasks"]["emotion_local"]["eval"] = {"test": {"split": "test"}}
    raw["tasks"]["emotion_local"]["validation"] = {"split": "validation"}
    raw["experiments"][-1]["tune"] = {"lr": "auto", "lora": {"r": [4, 8]}}
    raw["experiments"][-1]["select"] = {"on": "validation", "metric": "accuracy"}
    return raw


def all_params(raw: dict) -> dict:
    return {k: repr(s.to_params()) for k, s in all_specs(validate_config(raw)).items()}


@pytest.fixture(scope="module")
def baseline():
    return all_params(raw_study())


def test_the_study_builds_every_kind_of_spec(baseline):
    kinds = {k.split("/")[0] for k in baseline}
    assert kinds == {"stage_dataset", "stage_model", "stage_comet", "check_data", "report_task", "train", "evaluate",
                     "comet", "summary", "report", "report_ranks", "choose", "retention", "retention_base",
                     "weight_distances"}
    # translate: none + 8 lora variants + 2 prefix variants at 2 reported seeds and at the selection
    # seed (each method chooses a decoding, lora and prefix_tuning a variant too); 1 eval set x 3 decodings
    assert sum(k.startswith("train/results/runs/translate/") for k in baseline) == 11 * 3
    translate = [k for k in baseline if k.startswith("evaluate/results/runs/translate/")]
    assert sum("/eval/test/" in k for k in translate) == 22 * 1 * 3
    assert sum("/select/" in k for k in translate) == 11 * 3 and len(translate) == 22 * 3 + 11 * 3
    assert not any("/seed1000/" in k for k in baseline if k.startswith("evaluate/") and "/eval/" in k)
    assert len(set(baseline.values())) == len(baseline)  # every job has its own params


@pytest.mark.parametrize("how", [reverse, shuffler(1), shuffler(2), shuffler(3)],
                         ids=["reversed", "shuffled1", "shuffled2", "shuffled3"])
def test_params_do_not_depend_on_key_order(baseline, how):
    raw = reorder(raw_study(), how)
    params = all_params(raw)
    assert set(params) == set(baseline)
    changed = sorted(k for k in baseline if params[k] != baseline[k])
    assert not changed, f"{len(changed)} params change with key order, e.g. {changed[0]}:\n" \
                        f"{baseline[changed[0]]}\n{params[changed[0]]}"


def test_reorder_reaches_every_level():
    """The control for the test above: reversing really reorders nested mappings."""
    raw = reorder(raw_study(), reverse)
    assert list(raw)[0] == "report" and list(raw)[-1] == "models"
    assert list(raw["datasets"]["emotion_local"])[0] == "splits"
    assert list(raw["tasks"])[0] == "emotion_local" and list(raw["tasks"]["translate"])[0] == "training"
    assert list(raw["tasks"]["pos_en_de"]["eval"]) == ["en_dev", "de_test"]  # kept: its order means something
    assert list(raw["tasks"]["translate"]["eval"]["test"]) == ["max_examples", "split"]
    assert list(raw["tasks"]["translate"]["columns"]) == ["target", "source"]
    assert list(raw["tasks"]["translate"]["decoding"]["sample"])[0] == "seed"
    assert list(raw["methods"]["linear_probe"]["head"]) == ["pooling"]
    assert list(raw["methods"]["lora_qv"])[0] == "alpha"
    assert list(raw["experiments"][3]["sweep"]) == ["prefix_tuning", "lora"]
    assert list(raw["experiments"][3]["sweep"]["lora"]) == ["lr", "alpha", "r"]
    assert list(raw["datasets"]["en_ru"]["splits"]["train"]) == ["ru", "en"]


def test_eval_set_and_decoding_order_changes_only_the_reports(baseline):
    """Reordering a task's eval sets reorders its report tables (and may change the default main
    set), reordering its decodings changes its primary decoding and the tie-break of its choices:
    only the report, summary and choice params change; no check, training or evaluation re-runs."""
    raw = reorder(raw_study(), reverse, keep=set())
    params = all_params(raw)
    changed = {k for k in baseline if params[k] != baseline[k]}
    assert changed and changed <= {"summary", "report", "report_ranks"} | {
        k for k in baseline if k.startswith(("report_task/", "choose/results/choices/translate/"))}
    # the summary's main set: `test` where a task has one, else the first eval set written
    raw = raw_study()
    raw["tasks"]["pos_en_de"]["eval"] = dict(reversed(raw["tasks"]["pos_en_de"]["eval"].items()))
    summary = validate_config(raw)
    assert specs.summary_spec(summary, ["emotion", "pos_en_de"]).tasks["pos_en_de"]["eval"] == "de_test"
    assert specs.summary_spec(summary, ["emotion", "pos_en_de"]).tasks["emotion"]["eval"] == "test"


CELL_JOBS = ("train", "evaluate", "retention")  # a cell's jobs


def with_distances(changed: set[str]) -> set[str]:
    """`changed` and the weight-distance job of each task whose reported cells' training changed
    (its params hold their train specs; a run at the selection seed is not measured)."""
    return changed | {f"weight_distances/{k.split('/')[3]}" for k in changed
                      if k.startswith("train/") and "/seed1000" not in k}


def changed_by(baseline, edit) -> set[str]:
    raw = raw_study()
    edit(raw)
    params = all_params(raw)
    assert set(params) == set(baseline)
    return {k for k in baseline if params[k] != baseline[k]}


def test_dataset_edit_changes_that_datasets_staging_only(baseline):
    changed = changed_by(baseline, lambda r: r["datasets"]["emotion_local"].update(sep="\t"))
    assert changed == {"stage_dataset/emotion_local"}
    changed = changed_by(baseline, lambda r: r["datasets"]["en_ru"].update(split_seed=4))
    assert changed == {"stage_dataset/en_ru"}


def test_model_edit_changes_that_models_staging_only(baseline):
    changed = changed_by(baseline, lambda r: r["models"]["gpt2"].update(source="/models/other_gpt2"))
    assert changed == {"stage_model/gpt2"}


def test_method_lr_edit_changes_train_and_eval_params_of_its_cells_only(baseline):
    changed = changed_by(baseline, lambda r: r["methods"]["ia3"].update(lr=5.0e-3))
    ia3_cells = {k for k in baseline if k.split("/")[0] in CELL_JOBS and "/ia3/" in k}
    assert ia3_cells and any(k.startswith("train/") for k in ia3_cells)
    assert changed == with_distances(ia3_cells)


def test_method_edit_reaches_each_of_its_variants_and_nothing_else(baseline):
    changed = changed_by(baseline, lambda r: r["methods"]["lora_qv"].update(dropout=0.2))
    assert changed == with_distances({k for k in baseline if k.split("/")[0] in CELL_JOBS and "/lora_qv/" in k})
    # both target_modules variants, at the reported seed and at the selection seed
    assert len({k for k in changed if k.startswith("train/")}) == 4


def test_a_swept_lr_is_not_overridden_by_the_method_entry(baseline):
    """lora's lr is swept for translate: editing methods.lora.lr changes lora cells of the other
    tasks but not translate's."""
    changed = changed_by(baseline, lambda r: r["methods"]["lora"].update(lr=1.0e-3))
    lora = {k for k in baseline if "/lora/" in k and k.split("/")[0] in CELL_JOBS}
    assert changed == with_distances({k for k in lora if "/translate/" not in k})
    assert any("/emotion/" in k for k in changed) and any("/pos_en_de/" in k for k in changed)


def test_eval_set_edit_changes_its_checks_and_evaluations_not_training(baseline):
    changed = changed_by(baseline, lambda r: r["tasks"]["emotion"]["eval"]["test"].update(max_examples=200))
    assert "check_data/emotion" in changed
    assert not any(k.startswith("train/") for k in changed)
    assert changed == {"check_data/emotion"} | {k for k in baseline if k.startswith("evaluate/results/runs/emotion/")
                                                and k.endswith("/eval/test")}


def test_validation_limit_edit_retrains_that_tasks_cells(baseline):
    """The validation set's limit is read by training (its loss is logged, checkpoint: best selects on
    it) and by the selection-seed runs' scoring (emotion's validation split is its unreported selection set)."""
    changed = changed_by(baseline, lambda r: r["tasks"]["emotion"]["max_examples"].update(validation=100))
    train = {k for k in baseline if k.startswith("train/results/runs/emotion/")}
    selection_evals = {k for k in baseline if k.startswith("evaluate/results/runs/emotion/") and k.endswith("/select")}
    assert len(selection_evals) == 3 and all("/seed1000" in k for k in selection_evals)  # lora r=2, 8, 32
    assert changed == with_distances({"check_data/emotion"} | train | selection_evals)


def test_decoding_edit_changes_that_decodings_generations_only(baseline):
    changed = changed_by(baseline, lambda r: r["tasks"]["translate"]["decoding"]["beam2"].update(num_beams=3))
    assert changed == {k for k in baseline if k.startswith("evaluate/") and k.endswith("/beam2")}


def test_training_default_edit_changes_every_trained_cell(baseline):
    changed = changed_by(baseline, lambda r: r["training"].update(warmup_ratio=0.1))
    cells = {k for k in baseline if k.split("/")[0] in CELL_JOBS}
    assert changed == with_distances(cells)


def test_comet_and_report_edits(baseline):
    assert changed_by(baseline, lambda r: r["comet"].update(batch_size=4)) == {"comet/translate"}  # not re-staged
    assert changed_by(baseline, lambda r: r["comet"].update(source="/models/comet")) == {"stage_comet"}
    raw = raw_study()
    raw["comet"] = None
    assert specs.stage_comet_spec(validate_config(raw)).to_params() == {"source": None}  # COMET switched off
    changed = changed_by(baseline, lambda r: r["report"].update(within_points=0.5))
    assert changed == {"report"} | {k for k in baseline if k.startswith("report_task/")}


def test_one_comet_job_per_task_reads_every_cell_eval_set_and_decoding(baseline):
    config = validate_config(raw_study())
    cells = [c for c in build_run_table(config) if not c.selecting]  # the reported ones (nothing is tuned)
    spec = specs.comet_spec(config, "translate", cells)
    assert [k for k in baseline if k.startswith("comet/")] == ["comet/translate"]
    paths = [path for *_, path in spec.files()]
    assert len(paths) == len(set(paths)) == 22 * 1 * 3 == len(spec.files())
    assert paths[0] == "results/runs/translate/lora/alpha=16_lr=0.001_r=4/seed1/eval/test/beam2/predictions.jsonl"
    # adding a seed re-scores the task; its order in the config does not matter
    more = raw_study()
    more["experiments"][-2]["seeds"] = [2, 1, 3]
    assert changed_by(baseline, lambda r: r["experiments"][-2].update(seeds=[2, 1])) == set()
    config = validate_config(more)
    assert len(specs.comet_spec(config, "translate", [c for c in build_run_table(config) if not c.selecting]).cells) == 33


def test_every_spec_reads_back_from_its_params(baseline):
    built = {**all_specs(validate_config(raw_study())), **all_specs(validate_config(tuned_study()))}
    seen = set()
    for key, spec in built.items():
        cls = type(spec)
        seen.add(cls)
        back = cls.from_params(spec.to_params())
        assert back == spec, key
        assert back.to_params() == spec.to_params(), key
        # the params survive the JSON / YAML trip Snakemake gives them
        assert cls.from_params(yaml.safe_load(yaml.safe_dump(spec.to_params()))).to_params() == spec.to_params()
    subclasses = {c for c in vars(specs).values() if isinstance(c, type) and issubclass(c, specs.Spec)
                  and c is not specs.Spec}
    assert seen == subclasses


class GradedClassification(SequenceClassification):
    """A plugin's task type (registered as tests/plugins/ does) with config keys of its own: one
    that training and evaluation both read, one that only evaluation reads."""
    name = "graded_classification"
    own_keys = SequenceClassification.own_keys | {"grade_scale", "grade_report"}
    train_ignores = frozenset({"grade_report"})


def test_a_plugin_task_types_own_keys_reach_its_jobs(monkeypatch):
    """A key that only a plugin's task type owns is accepted for its tasks (the schema does not know
    it), refused for the others, and reaches the jobs that read it, asked of the type when the spec
    is built: lists of task keys in plan/specs.py dropped such a key without a word."""
    monkeypatch.setitem(TASK_TYPES, GradedClassification.name, GradedClassification())
    raw = raw_study()
    raw["tasks"]["emotion_local"].update(type="graded_classification", grade_scale=5, grade_report={"bins": 3})
    config = validate_config(raw)
    cell = next(c for c in build_run_table(config) if c.task == "emotion_local" and not c.selecting)
    train = specs.train_spec(config, cell).task
    evaluation = specs.eval_spec(config, cell, "test").task
    assert train["grade_scale"] == 5 and "grade_report" not in train  # editing it re-trains nothing
    assert evaluation["grade_scale"] == 5 and evaluation["grade_report"] == {"bins": 3}
    assert specs.check_data_spec(config, "emotion_local").data["grade_scale"] == 5
    raw = raw_study()
    raw["tasks"]["pos_en_de"]["grade_scale"] = 5
    with pytest.raises(ConfigError, match="^tasks.pos_en_de.grade_scale: only for graded_classification tasks, "
                                          "not token_classification$"):
        validate_config(raw)


def test_a_retention_set_edit_changes_the_data_check_and_retention_jobs_only(baseline):
    """Retention (issue 20) is measured on trained cells: editing a set re-scores them against a
    re-computed base reference, and never retrains or re-evaluates a cell."""
    changed = changed_by(baseline, lambda r: r["tasks"]["emotion"]["retention"]["general_en"].update(max_examples=50))
    assert changed == {"check_data/emotion"} | {k for k in baseline if k.split("/")[0] in ("retention", "retention_base")}
    assert any(k.startswith("retention/results/runs/emotion/") for k in changed) and "retention_base/minilm/general_en" in changed
