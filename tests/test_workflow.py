"""The workflow end to end in a temporary directory: a tiny BERT on slices of the real emotion
and CoLA files, every method, then the rerun rules (nothing to do; one edited cell re-runs alone).
Each task reports one eval set here (several eval sets per task: the POS study at the end).
Emotion's LoRA sweep is chosen on its unreported validation split at the selection seed."""
import csv

import pytest
import yaml

from conftest import planned_jobs, run_snakemake, shared, write_config

pytestmark = pytest.mark.slow

EMOTION_METHODS = ["none", "full", "linear_probe", "prompt_tuning", "prefix_tuning", "lora", "ia3", "adalora", "qlora"]


def study(tiny_bert) -> dict:
    return {
        "models": {"tiny": {"source": str(tiny_bert)}},
        "datasets": {
            "emotion": {"format": "csv", "sep": ";", "header": False, "column_names": ["text", "label"],
                        "splits": {"train": str(shared("emotion", "train.txt")),
                                   "validation": str(shared("emotion", "val.txt")),
                                   "test": str(shared("emotion", "test.txt"))}},
            "cola": {"format": "tsv", "header": False, "column_names": ["source", "label", "mark", "sentence"],
                     "splits": {"train": str(shared("cola", "raw", "in_domain_train.tsv")),
                                "validation": str(shared("cola", "raw", "in_domain_dev.tsv"))}},
        },
        "tasks": {
            "emotion": {"type": "sequence_classification", "model": "tiny", "dataset": "emotion",
                        "columns": {"text": "text", "label": "label"},
                        "eval": {"test": {"split": "test"}},  # validation: unreported, chooses (the default)
                        "max_examples": {"train": 96, "validation": 48, "test": 48}},
            "cola": {"type": "sequence_classification", "model": "tiny", "dataset": "cola",
                     "columns": {"text": "sentence", "label": "label"}, "metrics": ["mcc", "accuracy", "f1"],
                     "max_examples": {"train": 96, "validation": 48}},
        },
        "training": {"epochs": 1, "batch_size": 32, "eval_every_steps": 2, "log_every_steps": 1},
        "methods": {"none": {}, "full": {"lr": 1.0e-3}, "linear_probe": {"lr": 1.0e-3},
                    "prompt_tuning": {"lr": 3.0e-2, "num_virtual_tokens": 4},
                    "prefix_tuning": {"lr": 1.0e-2, "num_virtual_tokens": 4},
                    "lora": {"lr": 5.0e-3, "r": 4, "alpha": 8}, "ia3": {"lr": 3.0e-3},
                    "adalora": {"lr": 5.0e-3, "init_r": 6, "target_r": 4}, "qlora": {"lr": 2.0e-4}},
        "experiments": [
            {"tasks": ["emotion"], "methods": EMOTION_METHODS, "sweep": {"lora": {"r": [2, 4]}}},
            {"tasks": ["cola"], "methods": ["none", "full", "lora"]},
        ],
    }


def read_summary(workdir):
    with open(workdir / "results" / "summary.tsv") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


@pytest.fixture(scope="module")
def finished_study(tiny_bert, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("study")
    write_config(workdir / "config.yaml", study(tiny_bert))
    run_snakemake(workdir, "--keep-going")
    return workdir


def test_summary_has_one_row_per_cell_and_eval_set(finished_study):
    rows = read_summary(finished_study)
    emotion = [r for r in rows if r["task"] == "emotion"]
    cola = [r for r in rows if r["task"] == "cola"]
    assert len(emotion) == 10 and len(cola) == 3
    assert {r["eval"] for r in emotion} == {"test"} and {r["seed"] for r in rows} == {"42"}  # never the selection seed
    assert {(r["method"], r["variant"]) for r in emotion if r["method"] == "lora"} == {("lora", "r=2"), ("lora", "r=4")}
    for column in ("task", "method", "variant", "seed", "eval", "decoding", "status", "accuracy", "trainable_params",
                   "total_params", "trainable_pct", "train_time_s", "time_per_epoch_s", "peak_train_mem_mb",
                   "peak_infer_mem_mb", "infer_throughput", "device"):
        assert column in rows[0], column
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == len(rows) - 1
    assert all(0 <= float(r["accuracy"]) <= 1 and float(r["infer_throughput"]) > 0 for r in ok)
    assert all(r["mcc"] != "" and r["f1"] != "" for r in cola)
    assert {r["method"] for r in ok if float(r["trainable_params"]) == 0} == {"none"}
    full = next(r for r in ok if r["method"] == "full")
    assert float(full["trainable_pct"]) == 100.0
    qlora = [r for r in rows if r["method"] == "qlora"]
    assert len(qlora) == 1 and all(r["status"] == "failed" and "CUDA" in r["error"] for r in qlora)
    run_dir = finished_study / "results" / "runs" / "emotion" / "lora" / "r=2" / "seed42"
    for name in ("model/adapter_model.safetensors", "train_log.tsv", "train_stats.tsv", "run.json",
                 "eval/test/metrics.tsv", "eval/test/predictions.jsonl"):
        assert (run_dir / name).is_file(), name
    assert (finished_study / "logs" / "results" / "runs" / "emotion" / "lora" / "r=2" / "seed42" / "train.log").is_file()


def test_the_sweep_is_chosen_on_the_selection_set_at_a_seed_never_reported(finished_study):
    from peftgrid.report.tuning import read_choices

    choice = finished_study / "results" / "choices" / "emotion" / "lora.tsv"
    rows = list(csv.DictReader(open(choice), delimiter="\t"))
    assert {(r["variant"], r["seed"], r["on"]) for r in rows} == {(v, "1000", "emotion/validation") for v in ("r=2", "r=4")}
    chosen = read_choices([choice])["lora"]
    best = max(rows, key=lambda r: (float(r["score"]), r["variant"] == "r=2"))  # a tie goes to the first variant
    assert chosen == {"variant": best["variant"], "decoding": "", "on": "emotion/validation", "seed": 1000}
    lora = finished_study / "results" / "runs" / "emotion" / "lora"
    for variant in ("r=2", "r=4"):
        assert (lora / variant / "seed1000" / "select" / "metrics.tsv").is_file()
        assert not (lora / variant / "seed1000" / "eval").exists()  # never scored on the reported set
    assert not (finished_study / "results" / "choices" / "cola").exists()  # one variant each: nothing to choose


def test_second_run_has_nothing_to_do(finished_study):
    assert planned_jobs(finished_study) == {}


def test_editing_one_cell_reruns_that_cell_and_the_aggregates(finished_study):
    config = yaml.safe_load((finished_study / "config.yaml").read_text())
    config["methods"]["ia3"]["lr"] = 1.0e-2  # only emotion/ia3/default uses ia3
    write_config(finished_study / "config.yaml", config)
    assert planned_jobs(finished_study) == {"train": 1, "evaluate_per_label": 1, "weight_distances": 1, "summary": 1,
                                            "report_task": 2, "report_ranks": 1, "report": 1, "all": 1}
    before = {r["run_dir"]: r["train_time_s"] for r in read_summary(finished_study)}
    run_snakemake(finished_study)
    after = read_summary(finished_study)
    changed = {r["run_dir"] for r in after if before[r["run_dir"]] != r["train_time_s"]}
    assert changed == {"results/runs/emotion/ia3/default/seed42"}
    # the task's one distance job measured the retrained cell again and read the others from its cache
    log = (finished_study / "logs" / "distances" / "emotion.log").read_text()
    assert "'cells': 10, 'measured': 1, 'reused': 8, 'failed': 1" in log, log[-2000:]
    assert '"lr": 0.01' in next(r for r in after if r["method"] == "ia3")["hparams"]
    assert planned_jobs(finished_study) == {}


def plan_after_edit(workdir, edit) -> dict[str, int]:
    """Jobs a dry run plans after `edit(config)`; the config file is put back afterwards."""
    path = workdir / "config.yaml"
    original = path.read_text()
    config = yaml.safe_load(original)
    edit(config)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    try:
        return planned_jobs(workdir)
    finally:
        path.write_text(original)


AGGREGATES = {"summary": 1, "report_task": 2, "report_ranks": 1, "report": 1, "all": 1}  # two tasks: ranks too


def per_cell(cells: int, evals: int, tasks: int) -> dict[str, int]:
    """`tasks`: the tasks whose reported cells changed (one weight-distance job per task)."""
    return {"train": cells, "evaluate_per_label": evals, "weight_distances": tasks}


def test_rerun_rules(finished_study):
    def add_seed(c):
        c["experiments"][1]["seeds"] = [42, 7]  # cola: none, full, lora with a second seed

    def method_default(c):
        c["methods"]["lora"]["dropout"] = 0.0  # emotion r=2, r=4 (reported and selection seed) and cola lora

    def training_default(c):
        c["training"]["weight_decay"] = 0.0  # every cell: each carries the resolved training settings

    def task_training(c):
        c["tasks"]["cola"]["training"] = {"max_length": 64}  # the three cola cells

    def respell(c):
        c["methods"]["lora"] = dict(reversed(list(c["methods"]["lora"].items())))
        c["methods"]["lora"]["lr"] = 0.005  # was 5.0e-3
        c["training"] = dict(reversed(list(c["training"].items())))
        c["experiments"] = list(reversed(c["experiments"]))

    assert plan_after_edit(finished_study, add_seed) == {**per_cell(3, 3, 1), **AGGREGATES}
    choosing = {"evaluate": 2, "choose": 1}  # emotion lora r=2, r=4 at the selection seed, on the selection set
    assert plan_after_edit(finished_study, method_default) == {**per_cell(3, 3, 2), "train": 5, **choosing, **AGGREGATES}
    assert plan_after_edit(finished_study, training_default) == {**per_cell(13, 13, 2), "train": 15, **choosing,
                                                                 **AGGREGATES}
    assert plan_after_edit(finished_study, task_training) == {**per_cell(3, 3, 1), **AGGREGATES}
    assert plan_after_edit(finished_study, respell) == {}


def test_bad_config_stops_at_parse_time_with_one_line(tiny_bert, tmp_path):
    config = study(tiny_bert)
    config["methods"]["lora"]["rank"] = 4
    write_config(tmp_path / "config.yaml", config)
    proc = run_snakemake(tmp_path, check=False)
    assert proc.returncode != 0
    lines = [l for l in (proc.stdout + proc.stderr).splitlines() if "config error" in l]
    assert lines and "methods.lora.rank: LoraConfig has no field 'rank'" in lines[0]
    assert not (tmp_path / "results").exists() and not (tmp_path / "resources").exists()


def test_missing_data_file_is_a_config_error_at_parse_time(tiny_bert, tmp_path):
    config = study(tiny_bert)
    config["datasets"]["cola"]["splits"]["train"] = str(tmp_path / "nope.tsv")
    write_config(tmp_path / "config.yaml", config)
    proc = run_snakemake(tmp_path, check=False)
    assert proc.returncode != 0
    lines = [l for l in (proc.stdout + proc.stderr).splitlines() if "config error" in l]
    assert lines and f"datasets.cola.splits.train: {tmp_path / 'nope.tsv'}: no such file" in lines[0]
    assert not (tmp_path / "results").exists() and not (tmp_path / "resources").exists()


def test_report_has_every_figure_and_table(finished_study):
    report_dir = finished_study / "results" / "report"
    md = (report_dir / "report.md").read_text()
    for task in ("emotion", "cola"):
        for name in ("learning_curves", "pareto", "distances", "sweep"):
            png = report_dir / "figures" / task / f"{name}.png"
            assert png.is_file() and png.stat().st_size > 5000, png
            assert png.with_suffix(".svg").is_file()
            assert f"figures/{task}/{name}.png" in md
        assert (report_dir / "tables" / f"{task}.tsv").is_file()
        assert f"## {task}" in md
    assert "**best quality**" in md and "CellFailure: qlora needs a CUDA GPU" in md
    table = finished_study / "results" / "distances" / "emotion.tsv"
    rows = [r for r in csv.DictReader(open(table), delimiter="\t") if (r["method"], r["variant"], r["seed"]) == ("lora", "r=2", "42")]
    moved = {r["component"] for r in rows if float(r["distance"]) > 0}
    assert {"layer_first", "layer_last", "head"} <= moved and "embeddings" not in moved


def test_editing_report_settings_reruns_only_the_report(finished_study):
    config = yaml.safe_load((finished_study / "config.yaml").read_text())
    config["report"] = {"within_points": 5.0}
    write_config(finished_study / "config.yaml", config)
    assert planned_jobs(finished_study) == {"report_task": 2, "report": 1, "all": 1}
    run_snakemake(finished_study)
    assert "within 5 point(s)" in (finished_study / "results" / "report" / "report.md").read_text()


def test_zero_shot_pos_study_through_the_workflow(tiny_bert, tmp_path):
    config = {
        "models": {"tiny": {"source": str(tiny_bert)}},
        "datasets": {
            "ud_en_ewt": {"format": "conllu", "splits": {
                "train": str(shared("ud_english_ewt", "en_ewt-ud-train.conllu")),
                "validation": str(shared("ud_english_ewt", "en_ewt-ud-dev.conllu"))}},
            "ud_de_gsd": {"format": "conllu", "splits": {"test": str(shared("ud_german_gsd", "de_gsd-ud-test.conllu"))}},
        },
        "tasks": {"pos": {"type": "token_classification", "model": "tiny", "dataset": "ud_en_ewt",
                          "columns": {"tokens": "tokens", "tags": "upos"},
                          "eval": {"en_dev": {"split": "validation"}, "de_test": {"dataset": "ud_de_gsd", "split": "test"}},
                          "validation": "en_dev", "transfer": {"source": "en_dev", "target": "de_test"},
                          "max_examples": {"train": 128, "en_dev": 40, "de_test": 40}}},
        "training": {"epochs": 1, "batch_size": 16, "eval_every_steps": 4, "max_length": 64},
        "methods": {"none": {}, "lora": {"lr": 5.0e-3, "r": 4, "alpha": 8},
                    "prefix_tuning": {"lr": 1.0e-2, "num_virtual_tokens": 4}},
        "experiments": [{"tasks": ["pos"], "methods": ["none", "lora", "prefix_tuning"]}],
    }
    write_config(tmp_path / "config.yaml", config)
    run_snakemake(tmp_path)
    rows = read_summary(tmp_path)
    assert sorted((r["method"], r["eval"]) for r in rows) == sorted(
        (m, e) for m in ("none", "lora", "prefix_tuning") for e in ("en_dev", "de_test"))
    assert all(r["status"] == "ok" and 0 <= float(r["accuracy"]) <= 1 for r in rows)
    de = [r for r in rows if r["eval"] == "de_test"]
    assert all(int(r["n_examples"]) == 40 and int(r["n_scored"]) > 400 for r in de)
    cell = tmp_path / "results" / "runs" / "pos" / "lora" / "default" / "seed42" / "eval" / "de_test"
    per_tag = list(csv.DictReader(open(cell / "per_label.tsv"), delimiter="\t"))
    assert {r["label"] for r in per_tag} >= {"NOUN", "VERB", "DET", "PUNCT"}
    gap = list(csv.DictReader(open(tmp_path / "results" / "report" / "tables" / "pos_transfer.tsv"), delimiter="\t"))
    assert len(gap) == 3 and all(
        float(g["accuracy_gap"]) == pytest.approx(float(g["accuracy_source"]) - float(g["accuracy_target"])) for g in gap)
    assert "Transfer gap" in (tmp_path / "results" / "report" / "report.md").read_text()
