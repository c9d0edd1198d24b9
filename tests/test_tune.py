"""Tuning fairly: `tune:` grids at the selection seed (never reported), selection on the unreported
selection set, the winner at every reported seed. Planning and selection in-process; one small workflow run (slow)
checks the two stages, and that editing one grid value re-runs only that point."""
import json

import pytest
import yaml

from conftest import planned_jobs, run_snakemake, shared, write_config
from peftgrid.errors import ConfigError
from peftgrid.jobs.select import select
from peftgrid.plan import (auto_lr_grid, build_run_table, build_tune_groups, choose_best, read_selection,
                           reported_cells, validate_config)
from peftgrid.plan.tune import AUTO_LR_FACTORS, SELECTION_SEED, tie_note
from peftgrid.records import read_tsv

EMOTION = {"format": "csv", "sep": ";", "header": False, "column_names": ["text", "label"],
           "splits": {"train": "train.txt", "validation": "val.txt", "test": "test.txt"}}


def study(**experiment) -> dict:
    return {
        "models": {"tiny": {"source": "/models/tiny"}},
        "datasets": {"emotion": EMOTION,
                     "cola": {"format": "tsv", "header": False, "column_names": ["source", "label", "mark", "sentence"],
                              "splits": {"train": "cola_train.tsv", "validation": "cola_dev.tsv"},
                              "split_ratio": {"train": 0.9, "selection": 0.1}}},
        "tasks": {
            "emotion": {"type": "sequence_classification", "model": "tiny", "dataset": "emotion",
                        "columns": {"text": "text", "label": "label"}, "eval": {"test": {"split": "test"}},
                        "validation": {"split": "validation"}},
            "cola": {"type": "sequence_classification", "model": "tiny", "dataset": "cola",
                     "columns": {"text": "sentence", "label": "label"}, "metrics": ["mcc", "accuracy"],
                     "eval": {"validation": {"split": "validation"}}, "validation": {"split": "selection"}},
        },
        "experiments": [{"tasks": ["emotion", "cola"], "methods": ["none", "full", "lora"], "seeds": [1, 2, 3],
                         **experiment}],
    }


def plan(config):
    config = validate_config(config)
    return config, build_run_table(config), build_tune_groups(config)


# ------------------------------------------------------------------------------ planning

def test_auto_grid_is_five_log_spaced_points_around_the_methods_lr():
    assert AUTO_LR_FACTORS == (0.25, 0.5, 1.0, 2.0, 4.0)
    assert auto_lr_grid(5.0e-4) == [1.25e-4, 2.5e-4, 5.0e-4, 1.0e-3, 2.0e-3]
    assert auto_lr_grid(3.0e-3) == [7.5e-4, 1.5e-3, 3.0e-3, 6.0e-3, 1.2e-2]  # 3 significant digits, no float dust


def test_lr_auto_plans_the_grid_at_the_selection_seed_and_the_winner_at_the_reported_seeds():
    config, cells, groups = plan(study(tune={"lr": "auto"}, select={"on": "validation", "metric": "accuracy"}))
    assert {(g.task, g.method) for g in groups} == {("emotion", "full"), ("emotion", "lora"), ("cola", "full"),
                                                     ("cola", "lora")}  # none does not train: not tuned
    lora = next(g for g in groups if g.key == ("emotion", "lora", "default"))
    lr = config["methods"]["lora"]["lr"]
    assert [t["lr"] for t in lora.tuned] == auto_lr_grid(lr)
    assert lora.default == f"lr={lr:g}" and lora.seed == SELECTION_SEED == 1000 and lora.seeds == (1, 2, 3)
    assert (lora.on, lora.split, lora.metric, lora.higher_is_better) == ("selection", "validation", "accuracy", True)
    cola = next(g for g in groups if g.key == ("cola", "full", "default"))
    assert (cola.on, cola.split) == ("selection", "selection")
    # first stage: 5 grid points x 4 groups at the selection seed only; past the grid, 3 points each
    # side that `extend` may add (planned like grid points: they run only if an edge winner asks)
    by_group = {g.key[:2]: g for g in groups}
    planned = [c for c in cells if c.tuned and c.selecting]
    first = [c for c in planned if c.variant in by_group[(c.task, c.method)].candidates]
    assert len(first) == 20 and {c.seed for c in first} == {1000} and all(c.selecting for c in first)
    assert len(planned) == 20 + 4 * 6 and all(len(g.extensions) == 6 and g.extend == 3 for g in groups)
    assert {c.dir for c in first if c.task == "emotion" and c.method == "lora"} == {
        f"results/runs/emotion/lora/lr={v:g}/seed1000" for v in auto_lr_grid(lr)}
    cell = next(c for c in first if c.variant == f"lr={auto_lr_grid(lr)[0]:g}" and c.method == "lora")
    assert cell.hparams["lr"] == auto_lr_grid(lr)[0] and cell.tuned
    # second stage: the winner on every reported seed, the untrained baseline as it is, nothing else:
    # the seed that chose the winner is never among the reported ones
    winners = {g.key: (g.candidates[-1], 5) for g in groups}
    reported = reported_cells(cells, groups, winners)
    assert len(reported) == 2 * 3 + 4 * 3 and {c.seed for c in reported} == {1, 2, 3}
    assert {c.variant for c in reported if c.method == "none"} == {"default"}
    assert {(c.variant, c.seed) for c in reported if c.key[:2] == ("emotion", "lora")} == {
        (lora.candidates[-1], s) for s in (1, 2, 3)}
    # no grid point finished: the stand-in runs its first seed only, which carries the failure
    failed = reported_cells(cells, groups, {**winners, lora.key: (lora.default, 0)})
    assert {(c.variant, c.seed) for c in failed if c.key[:2] == ("emotion", "lora")} == {(lora.default, 1)}


def test_explicit_grids_per_method_and_shared_keys():
    _, cells, groups = plan(study(tasks=["emotion"], tune={"lr": [1.0e-3, 1.0e-2], "lora": {"r": [4, 8]}}))
    lora = next(g for g in groups if g.method == "lora")
    assert lora.candidates == ("lr=0.001_r=4", "lr=0.001_r=8", "lr=0.01_r=4", "lr=0.01_r=8")
    full = next(g for g in groups if g.method == "full")
    assert full.candidates == ("lr=0.001", "lr=0.01")
    # a method's own entry replaces a shared key
    _, _, groups = plan(study(tasks=["emotion"], tune={"lr": [1.0e-3], "lora": {"lr": [2.0e-3, 4.0e-3]}}))
    assert next(g for g in groups if g.method == "lora").candidates == ("lr=0.002", "lr=0.004")


def test_tune_within_each_sweep_variant():
    _, cells, groups = plan(study(tasks=["emotion"], methods=["lora"], tune={"lora": {"lr": [1.0e-3, 1.0e-2]}},
                                  sweep={"lora": {"r": [4, 8]}}))
    assert [(g.group, g.candidates) for g in groups] == [("r=4", ("lr=0.001_r=4", "lr=0.01_r=4")),
                                                         ("r=8", ("lr=0.001_r=8", "lr=0.01_r=8"))]
    winners = {groups[0].key: ("lr=0.01_r=4", 2), groups[1].key: ("lr=0.001_r=8", 2)}
    assert {(c.variant, c.seed) for c in reported_cells(cells, groups, winners)} == {
        (v, s) for v in ("lr=0.01_r=4", "lr=0.001_r=8") for s in (1, 2, 3)}


def test_untuned_experiments_plan_as_before():
    _, cells, groups = plan(study())
    assert groups == [] and len(cells) == 2 * 3 * 3 and not any(c.tuned for c in cells)
    assert reported_cells(cells, groups, {}) == cells


def test_a_cell_another_experiment_reports_stays_reported():
    config = study(tasks=["emotion"], methods=["lora"], tune={"lora": {"lr": [5.0e-4, 1.0e-2]}})
    config["experiments"].append({"tasks": ["emotion"], "methods": ["lora"], "sweep": {"lora": {"lr": [5.0e-4]}},
                                  "seeds": [1]})
    _, cells, groups = plan(config)
    reported = reported_cells(cells, groups, {groups[0].key: ("lr=0.01", 2)})
    assert ("emotion", "lora", "lr=0.0005", 1) in {c.key for c in reported}


@pytest.mark.parametrize("experiment, message", [
    ({"tune": {"lorra": {"lr": [1.0e-3]}}},
     "experiments[0].tune.lorra: neither a method of this experiment nor a training hyperparameter — did you mean 'lora'?"),
    ({"tune": {"lora": {"rank": [4, 8]}}}, "experiments[0].tune.lora.rank: LoraConfig has no field 'rank'"),
    ({"tune": {"full": {"r": [4]}}}, "experiments[0].tune.full.r:"),
    ({"tune": {"none": {"lr": [1.0e-3]}}}, "experiments[0].tune.none: none does not train: it has nothing to tune"),
    ({"tune": {"lora": {"r": "auto"}}}, "experiments[0].tune.lora.r: auto is a grid for lr only"),
    ({"tune": {"lr": [1.0e-3, 1.0e-3]}}, "experiments[0].tune.lr: a value is listed twice"),
    ({"tune": {"lr": ["1e-3"]}}, "experiments[0].tune.lr: '1e-3' is a string, not a number"),
    ({"tune": {"lora": {"r": [4, 8]}}, "sweep": {"lora": {"r": [2]}}},
     "experiments[0].tune.lora.r: r is both swept and tuned for lora"),
    ({"tune": {"lr": "auto"}, "select": {"seed": 2}},
     "experiments[0].select.seed: 2 is also one of the reported seeds; choices are made at a seed that is never reported"),
    ({"tune": {"lr": "auto"}, "select": {"on": "test"}},
     "experiments[0].select.on: 'test' is a reported eval set of task 'emotion'; selecting on it would report a selected score"),
    ({"tune": {"lr": "auto"}, "select": {"on": "dev"}}, "experiments[0].select.on: 'dev' is not task 'emotion''s selection set"),
    ({"tune": {"lr": "auto"}, "select": {"metric": "f1_macro"}},
     "experiments[0].select.metric: 'f1_macro' is not a metric of task 'cola'"),
    ({"tune": {"lr": "auto"}, "select": {"metric": "acuracy"}}, "— did you mean 'accuracy'?"),
    ({"tune": {"lr": "auto"}, "select": {"on": "validation", "by": "accuracy"}}, "experiments[0].select.by: unknown key"),
])
def test_bad_tune_or_select_is_one_line_naming_the_key(experiment, message):
    config = study(**experiment)
    if "select" in experiment and experiment["select"].get("metric") == "f1_macro":
        config["tasks"]["emotion"]["metrics"] = ["accuracy", "f1_macro"]
    with pytest.raises(ConfigError) as err:
        validate_config(config)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_selecting_on_a_reported_validation_set_is_refused_with_the_way_out():
    config = study(tune={"lr": "auto"}, select={"on": "validation", "metric": "accuracy"})
    config["tasks"]["emotion"]["eval"] = {"validation": {"split": "validation"}, "test": {"split": "test"}}
    del config["tasks"]["emotion"]["validation"]  # defaults to the reported eval set `validation`
    with pytest.raises(ConfigError) as err:
        validate_config(config)
    msg = str(err.value)
    assert msg.startswith("tasks.emotion.validation: task 'emotion' selects on 'validation', a reported eval set, "
                          "and tune picks a grid point of full, lora on it")
    assert "carve an unreported selection split: tasks.emotion.validation: {split: <split>}" in msg


def test_a_selection_split_that_a_reported_eval_set_also_reads_is_refused():
    config = study(tune={"lr": "auto"})
    config["tasks"]["emotion"]["eval"]["dev"] = {"split": "validation"}  # reported, and the selection split
    with pytest.raises(ConfigError, match=r"^tasks\.emotion\.validation: task 'emotion''s selection split "
                                          r"'validation' is also read by its reported eval set 'dev'"):
        validate_config(config)


def test_yaml_on_key_survives_pyyaml():
    """PyYAML (and Snakemake) read the key `on` as true; the config check gives it its name back."""
    raw = yaml.safe_load("tune: {lr: auto}\nselect: {on: validation, metric: loss}\n")
    config, _, groups = plan(study(**raw))
    assert config["experiments"][0]["select"] == {"on": "validation", "metric": "loss", "seed": SELECTION_SEED}
    assert {(g.metric, g.higher_is_better) for g in groups} == {("loss", False)}


# ------------------------------------------------------------------------------ selection

def test_choose_best_ties_and_failures():
    pts = [{"status": "ok", "score": 0.5}, {"status": "ok", "score": 0.7}, {"status": "ok", "score": 0.7},
           {"status": "failed", "score": None}]
    assert choose_best(pts, True) == (1, 3)  # a tie keeps the earlier grid point (the smaller lr)
    assert choose_best(pts, False) == (0, 3)  # loss: lower is better
    assert choose_best([{"status": "failed", "score": None}] * 3, True, default=1) == (1, 0)
    assert choose_best([{"status": "ok", "score": float("nan")}, {"status": "ok", "score": 0.1}], True) == (1, 1)
    # equal scores go to the lower validation loss (unknown or NaN: after every known one), then grid order
    assert choose_best(pts, True, losses=[0.1, 0.9, 0.8, 0.0]) == (2, 3)
    assert choose_best(pts, True, losses=[0.1, None, 0.8, 0.0]) == (2, 3)
    assert choose_best(pts, True, losses=[0.1, 0.8, float("nan"), 0.0]) == (1, 3)
    assert choose_best(pts, True, losses=[0.1, 0.8, 0.8, 0.0]) == (1, 3)
    assert choose_best(pts, True, losses=[0.0, 0.9, 0.8, 0.0]) == (2, 3)  # a loss never beats a better score
    # an all-tied grid's note says what broke the tie, in choose_best's order
    tied = [{"status": "ok", "score": 0.0}] * 3
    assert [tie_note(tied, losses).split("(the tie went to ")[1] for losses in (
        None, [None, 0.5, None], [0.5, 0.5, 0.7], [0.5, 0.5, 0.5])] == [
        "grid order)", "the lowest validation loss)", "the lowest validation loss, then grid order)", "grid order)"]


def test_a_grid_and_a_sweep_choice_break_equal_scores_on_the_validation_loss(tmp_path):
    """One rule for grids and halving's rungs (tests/test_halving.py: equal scores at a rung go to
    the lower validation loss): three of a grid's points tie at the majority class's accuracy, the
    largest learning rate with the lowest loss. Defect caught: a grid (or a sweep's choice) ignoring
    the runs' losses and handing the tie to the smaller learning rate, where halving would not."""
    from peftgrid.jobs.select import choose
    from peftgrid.plan.runs import build_choices
    from peftgrid.records import write_json

    config = validate_config(study(tasks=["emotion"], methods=["lora"], tune={"lora": {"lr": [1.0e-3, 1.0e-2, 1.0e-1]}}))
    g = build_tune_groups(config)[0]
    files = [_metrics(tmp_path / v / "select" / "metrics.tsv", accuracy=0.303) for v in g.candidates]
    runs = g.run_files(lambda v, seed: str(tmp_path / v), g.candidates)
    for r, loss in zip(runs, (1.79, 1.75, 1.70)):
        write_json(r, {"status": "ok", "stats": {"final_val_loss": loss}})
    out = tmp_path / "selection.tsv"
    assert select(g.to_params(), files, out, runs)["variant"] == "lr=0.1"
    assert [r["rank"] for r in read_tsv(out)] == ["3", "2", "1"]
    from peftgrid.report.tuning import load_selections, tuning_table

    table = tuning_table(load_selections([out]))  # the report shows what decided the tie
    assert list(table["validation loss"]) == [1.79, 1.75, 1.70] and list(table["selected"]) == ["", "", "✓"]
    assert "equal scores go to the lower validation loss" in table["note"].iloc[0]
    assert select(g.to_params(), files, out)["variant"] == "lr=0.001"  # no runs (losses unknown): grid order
    # an untuned sweep's choice among its variants, by the same rule
    config = validate_config(study(tasks=["emotion"], methods=["lora"], sweep={"lora": {"r": [4, 8, 16]}}))
    c = next(c for c in build_choices(config) if c.method == "lora")
    files = [_metrics(tmp_path / v / "select" / "metrics.tsv", accuracy=0.5) for v in c.variants]
    runs = c.run_files(lambda v, seed: str(tmp_path / v))
    for r, loss in zip(runs, (1.2, 0.9, 1.0)):
        write_json(r, {"status": "ok", "stats": {"final_val_loss": loss}})
    assert choose(c.to_params(), files, tmp_path / "choice.tsv", runs)["variant"] == c.variants[1]


def _metrics(path, status="ok", **scores):
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = ["status", "error", *scores]
    path.write_text("\t".join(cols) + "\n" + "\t".join([status, ""] + [str(v) for v in scores.values()]) + "\n")
    return path


def test_selection_picks_on_the_selection_set_never_the_reported_one(tmp_path):
    """Grid point lr=0.01 is best on the reported test set, lr=0.001 on the selection set: the
    selection job reads only the selection scores, so lr=0.001 wins."""
    _, cells, groups = plan(study(tasks=["emotion"], methods=["lora"], tune={"lora": {"lr": [1.0e-3, 1.0e-2]}}))
    g = groups[0]
    select_files, test_files = [], []
    for variant, sel, test in zip(g.candidates, (0.80, 0.60), (0.50, 0.90)):
        run = tmp_path / variant
        select_files.append(_metrics(run / "select" / "metrics.tsv", accuracy=sel))
        test_files.append(_metrics(run / "eval" / "test" / "metrics.tsv", accuracy=test))
    out = tmp_path / "selection.tsv"
    row = select(g.to_params(), select_files, out)
    assert row["variant"] == "lr=0.001" and read_selection(out) == ("lr=0.001", 2)
    lines = out.read_text().splitlines()
    assert len(lines) == 3 and all("\tselection\tvalidation\taccuracy\t" in line for line in lines[1:])
    # the same files in the other role would have picked the other point
    select(g.to_params(), test_files, out)
    assert read_selection(out) == ("lr=0.01", 2)


def test_selection_on_loss_reads_the_final_validation_loss(tmp_path):
    _, _, groups = plan(study(tasks=["emotion"], methods=["lora"], tune={"lora": {"lr": [1.0e-3, 1.0e-2, 1.0e-1]}},
                              select={"metric": "loss"}))
    stats = [_metrics(tmp_path / f"{i}.tsv", final_val_loss=v) for i, v in enumerate((0.9, 0.4, 0.7))]
    stats.append(_metrics(tmp_path / "failed.tsv", status="failed"))
    g = groups[0].to_params()
    row = select(g, stats[:3], tmp_path / "selection.tsv")
    assert row["variant"] == "lr=0.01" and row["edge"] == ""
    # every point failed: the method's own setting stands in, flagged as not finished
    g["default"] = "lr=0.001"
    select(g, [stats[3]] * 3, tmp_path / "selection.tsv")
    assert read_selection(tmp_path / "selection.tsv") == ("lr=0.001", 0)


def test_a_winner_at_the_grid_edge_is_flagged(tmp_path):
    _, _, groups = plan(study(tasks=["emotion"], methods=["lora"], tune={"lora": {"lr": "auto"}}))
    files = [_metrics(tmp_path / f"{i}.tsv", accuracy=0.1 * i) for i in range(5)]
    row = select(groups[0].to_params(), files, tmp_path / "selection.tsv")
    assert row["variant"] == groups[0].candidates[-1] and row["edge"] == "lr (highest)"


# ------------------------------------------------------------------------------ the workflow

def tiny_tuned_study(tiny_bert, lrs) -> dict:
    data = {s: str(shared("emotion", f)) for s, f in (("train", "train.txt"), ("validation", "val.txt"),
                                                       ("test", "test.txt"))}
    return {
        "models": {"tiny": {"source": str(tiny_bert)}},
        "datasets": {"emotion": {**EMOTION, "splits": data}},
        "tasks": {"emotion": {"type": "sequence_classification", "model": "tiny", "dataset": "emotion",
                              "columns": {"text": "text", "label": "label"},
                              "labels": ["sadness", "joy", "love", "anger", "fear", "surprise"],
                              "eval": {"test": {"split": "test"}}, "validation": {"split": "validation"},
                              "max_examples": {"train": 64, "validation": 32, "test": 32}}},
        "training": {"epochs": 1, "batch_size": 32, "eval_every_steps": 2, "log_every_steps": 1},
        "experiments": [{"tasks": ["emotion"], "methods": ["lora"], "tune": {"lora": {"lr": lrs}},
                         "select": {"on": "validation", "metric": "accuracy"}, "seeds": [1, 2]}],
    }


def cells_on_disk(workdir) -> set[str]:
    runs = workdir / "results" / "runs" / "emotion" / "lora"
    return {str(p.relative_to(runs)) for p in runs.glob("*/seed*")}


@pytest.mark.slow
def test_grid_at_the_selection_seed_then_the_winner_and_an_edit_reruns_one_point(tiny_bert, tmp_path):
    write_config(tmp_path / "config.yaml", tiny_tuned_study(tiny_bert, [1.0e-3, 1.0e-2]))
    first = planned_jobs(tmp_path)  # before any selection: the grid at the selection seed and its scoring only
    assert (first["train"], first["evaluate"], first["select"], first["choose"]) == (2, 2, 1, 1)  # on the selection set
    assert "evaluate_per_label" not in first and first["weight_distances"] == 1  # the task's one, waiting on the selection
    run_snakemake(tmp_path)

    selection = tmp_path / "results" / "tune" / "emotion" / "lora" / "default" / "selection.tsv"
    winner, finished = read_selection(selection)
    measured = read_tsv(tmp_path / "results" / "distances" / "emotion.tsv")
    assert {(r["variant"], r["seed"]) for r in measured} == {(winner, "1"), (winner, "2")}  # never the grid at 1000
    loser = ({"lr=0.001", "lr=0.01"} - {winner}).pop()
    assert finished == 2
    assert cells_on_disk(tmp_path) == {f"{winner}/seed1000", f"{loser}/seed1000", f"{winner}/seed1", f"{winner}/seed2"}
    runs = tmp_path / "results" / "runs" / "emotion" / "lora"
    assert (runs / loser / "seed1000" / "select" / "metrics.tsv").is_file()
    for variant in (winner, loser):  # the grid is never scored on a reported set
        assert not (runs / variant / "seed1000" / "eval").exists()
    assert not (runs / winner / "seed1" / "select").exists()
    from peftgrid.report.tuning import read_choices

    choice = read_choices([tmp_path / "results" / "choices" / "emotion" / "lora.tsv"])
    assert choice == {"lora": {"variant": winner, "decoding": "", "on": "emotion/validation", "seed": 1000}}
    summary = (tmp_path / "results" / "summary.tsv").read_text().splitlines()
    header = summary[0].split("\t")
    rows = [dict(zip(header, line.split("\t"))) for line in summary[1:]]
    assert {(r["variant"], r["seed"], r["eval"]) for r in rows} == {(winner, "1", "test"), (winner, "2", "test")}  # not 1000
    report = tmp_path / "results" / "report"
    assert "Tuning" in (report / "report.md").read_text() and (report / "figures" / "emotion" / "tuning.png").is_file()
    tuning = (report / "tables" / "emotion_tuning.tsv").read_text()
    lines = tuning.splitlines()
    assert len(lines) == 3 and sum("✓" in line for line in lines) == 1 and f"\t{winner}\t" in tuning
    assert planned_jobs(tmp_path) == {}

    # edit the losing grid value: only the new point trains and is scored, then selection again
    new = 3.0e-2
    keep = 1.0e-3 if winner == "lr=0.001" else 1.0e-2
    stamps = {p: p.stat().st_mtime_ns for p in runs.glob("*/seed*/train_stats.tsv")}
    write_config(tmp_path / "config.yaml", tiny_tuned_study(tiny_bert, [keep, new]))
    edited = planned_jobs(tmp_path)
    assert (edited["train"], edited["evaluate"], edited["select"], edited["choose"]) == (1, 1, 1, 1)
    # the task's one distance job waits on the new selection again (a cell it already measured comes from its cache)
    assert "evaluate_per_label" not in edited and edited["weight_distances"] == 1
    run_snakemake(tmp_path)
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())  # nothing that existed retrained
    now, _ = read_selection(selection)
    expected = {f"{winner}/seed1000", f"{loser}/seed1000", "lr=0.03/seed1000", f"{winner}/seed1", f"{winner}/seed2"}
    if now == "lr=0.03":  # a new winner runs the reported seeds
        expected |= {"lr=0.03/seed1", "lr=0.03/seed2"}
    assert cells_on_disk(tmp_path) == expected
    rows = (tmp_path / "results" / "summary.tsv").read_text()
    assert f"\t{now}\t" in rows and (now == winner or f"\t{winner}\t" not in rows)
    measured = read_tsv(tmp_path / "results" / "distances" / "emotion.tsv")
    assert {(r["variant"], r["seed"]) for r in measured} == {(now, "1"), (now, "2")}  # the current winner's, never stale
    assert planned_jobs(tmp_path) == {}


def test_significance_compares_a_tuned_method_at_its_selected_configuration(tmp_path):
    """lora lr=0.01 scores best on the reported `validation` set, but lr=0.001 was selected on the
    selection set: the paired comparison uses lr=0.001 (and says where it was chosen)."""
    import pandas as pd

    from peftgrid.report.analysis import chosen_cells
    from peftgrid.report.tables import significance

    def preds(name, correct):
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps({"label": "a", "prediction": "a" if c else "b", "correct": c}) + "\n"
                                for c in correct))
        return path

    n = 40
    files = {("lora", "lr=0.001", 1, "validation", ""): preds("low", [i % 2 == 0 for i in range(n)]),
             ("lora", "lr=0.01", 1, "validation", ""): preds("high", [i % 5 != 0 for i in range(n)]),
             ("full", "default", 1, "validation", ""): preds("full", [i % 3 != 0 for i in range(n)])}
    agg = pd.DataFrame([{"task": "t", "method": m, "variant": v, "eval": e, "decoding": d, "status": "ok",
                         "accuracy": sum(json.loads(l)["correct"] for l in p.read_text().splitlines()) / n}
                        for (m, v, _, e, d), p in files.items()])
    choices = {"lora": {"variant": "lr=0.001", "decoding": "", "on": "selection", "seed": 1000}}
    chosen, _ = chosen_cells(agg, choices, [])
    tuned = significance(agg, files, ["validation"], chosen, "accuracy", n=200, choices=choices)
    row = tuned.set_index("method").loc["lora"]
    assert row["variant"] == "lr=0.001" and row["chosen_on"] == "selection (seed 1000)" and row["score"] == 0.5
    assert tuned.set_index("method").loc["full", "chosen_on"] == "one variant"


def test_tuning_report_lists_the_grid_and_the_selected_points(tmp_path):
    """Two sweep variants of lora, each tuned: the table has every grid point, the figure is
    written, and the method's selected configuration is the better of the two winners."""
    from peftgrid.report.tuning import build_tuning_report

    _, _, groups = plan(study(tasks=["emotion"], methods=["lora"], tune={"lora": {"lr": [1.0e-3, 1.0e-2, 1.0e-1]}},
                              sweep={"lora": {"r": [4, 8]}}))
    paths = []
    for g, scores in zip(groups, ((0.5, 0.6, 0.2), (0.7, 0.7, 0.1))):
        files = [_metrics(tmp_path / g.group / f"{i}.tsv", accuracy=s) for i, s in enumerate(scores)]
        paths.append(tmp_path / g.group / "selection.tsv")
        select(g.to_params(), files, paths[-1])
    assert [read_selection(p)[0] for p in paths] == ["lr=0.01_r=4", "lr=0.001_r=8"]  # r=8: a tie, the smaller lr
    out = {"table": tmp_path / "t.tsv", "table_md": tmp_path / "t.md", "figure": tmp_path / "f.png"}
    build_tuning_report("emotion", paths, out)
    md = out["table_md"].read_text()
    assert "grid lr ∈ {0.001, 0.01, 0.1} on seed 1000; selected `lr=0.01_r=4`" in md
    assert md.count("✓") == 2 and "tied with the selected point" in md
    assert len(out["table"].read_text().splitlines()) == 7 and out["figure"].stat().st_size > 5000



def test_the_methods_choice_is_always_its_groups_winner_decodings_included(tmp_path):
    """A tuned, swept generation method: each group's checkpoint picks its grid point by the best
    decoding, and the method's choice (over every group's points and decodings) is always one of
    those winners, with the decoding that scored it — on random scores with many ties."""
    import random

    from peftgrid.jobs.select import choose
    from peftgrid.plan.runs import build_choices
    from peftgrid.report.tuning import read_choices

    config = study(tasks=["gen"], methods=["lora"], tune={"lora": {"lr": [1.0e-3, 1.0e-2]}},
                   sweep={"lora": {"r": [4, 8]}})
    config["datasets"]["gen"] = {"format": "jsonl", "splits": {"train": "t.jsonl", "validation": "v.jsonl",
                                                               "test": "e.jsonl"}}
    config["tasks"] = {"gen": {"type": "seq2seq", "model": "tiny", "dataset": "gen", "prompt": "{source}",
                               "columns": {"source": "s", "target": "t"}, "eval": {"test": {"split": "test"}},
                               "decoding": {"greedy": {}, "beam2": {"num_beams": 2}}, "metrics": ["chrf"]}}
    config, _, groups = plan(config)
    (choice,) = build_choices(config)
    assert [g.decodings for g in groups] == [("greedy", "beam2")] * 2 and len(choice.pairs()) == 8
    rng = random.Random(0)
    for trial in range(30):
        score = {(v, d): rng.choice([0.1, 0.2, 0.3]) for v, d in choice.pairs()}
        files = {k: _metrics(tmp_path / str(trial) / f"{k[0]}_{k[1]}.tsv", chrf=s) for k, s in score.items()}
        winners = {}
        for g in groups:
            out = tmp_path / str(trial) / f"{g.group}.tsv"
            row = select(g.to_params(), [files[(v, d)] for v in g.candidates for d in g.decodings], out)
            winners[row["variant"]] = row["decoding"]
            assert row["score"] == max(score[(v, d)] for v in g.candidates for d in g.decodings)
        out = tmp_path / str(trial) / "choice.tsv"
        choose(choice.to_params(), [files[p] for p in choice.pairs()], out)
        chosen = read_choices([out])["lora"]
        assert winners.get(chosen["variant"]) == chosen["decoding"]
        assert score[(chosen["variant"], chosen["decoding"])] == max(score.values())
