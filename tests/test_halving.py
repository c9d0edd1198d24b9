"""Successive halving and the extension of an lr: auto grid (peftgrid/plan/tune.py, rules/halving.smk):
the rung layout and its cost from the plan, the refusals, each stage's choice on fake score files
(who goes on, ties, NaN, an edge winner's extension point and its limit), the selection and choice
written from the stages; one tiny workflow run (slow) checks that a rung is the full run's prefix,
that a killed rung resumes, that a second run has nothing to do and that an edited grid value
re-runs only its own rungs and the stages after them."""
import json
import math

import pytest

from conftest import run_snakemake, write_config
from peftgrid.errors import ConfigError
from peftgrid.jobs.select import choose, select_staged, stage
from peftgrid.plan import build_run_table, build_tune_groups, validate_config
from peftgrid.plan.runs import build_choices
from peftgrid.plan.tune import (ETA, EXTEND_LIMIT, MIN_STEPS, auto_lr_grid, edge_and_notes, read_selection, rung_shares,
                                rung_stop_step, stage_competitors, tuning_steps)
from peftgrid.records import read_tsv, write_tsv
from test_tune import planned_jobs, study


def plan(**tune):
    config = validate_config(study(tune=tune, select={"on": "validation", "metric": "accuracy"}))
    return config, build_run_table(config), build_tune_groups(config)


def group_of(groups, task="emotion", method="lora"):
    return next(g for g in groups if g.key == (task, method, "default"))


# ------------------------------------------------------------------------------ the plan

def test_rungs_take_the_grid_down_to_one_point_at_shares_of_the_full_run():
    assert (ETA, MIN_STEPS, EXTEND_LIMIT) == (3, 10, 3)
    assert rung_shares(5, 3) == [1 / 9, 1 / 3]      # the auto grid: 5 -> 2 -> 1
    assert rung_shares(3, 3) == rung_shares(2, 3) == [1 / 3]
    assert rung_shares(4, 2) == [1 / 4, 1 / 2]
    assert rung_shares(10, 3) == [1 / 27, 1 / 9, 1 / 3]
    assert rung_stop_step(64, 1 / 9, 10) == 10       # 7.1 steps: lengthened to min_steps
    assert rung_stop_step(64, 1 / 3, 10) == 22       # ceil(21.3)
    assert rung_stop_step(90, 1 / 9, 1) == 10        # exact: no float dust pushes 10.0 to 11
    assert rung_stop_step(6, 1 / 3, 10) == 6         # never past the run's end


def test_halving_costs_under_40_percent_of_the_grid_from_the_plan():
    # 5 points x 10 steps, then 2 survivors continue 12 steps (10 -> 22): 74 of the grid's 5 x 64
    assert tuning_steps(5, 64, "halving") == 5 * 10 + 2 * 12 == 74
    assert tuning_steps(5, 64, "grid") == 320
    assert tuning_steps(5, 64, "halving", extensions=3) == 74 + 3 * 22  # each trains to the last rung
    assert tuning_steps(5, 64, "grid", extensions=3) == 8 * 64
    assert tuning_steps(5, 64, "halving") / tuning_steps(5, 64, "grid") <= 0.4


def test_halving_plans_the_same_grid_cells_and_strategy_grid_changes_nothing():
    _, grid_cells, _ = plan(lr=[1.0e-4, 1.0e-3, 1.0e-2])
    _, named_cells, named = plan(lr=[1.0e-4, 1.0e-3, 1.0e-2], strategy="grid")
    assert [(c.key, c.hparams) for c in named_cells] == [(c.key, c.hparams) for c in grid_cells]
    assert not any(g.staged for g in named)  # an explicit grid is not extended: its select job is as before
    _, auto_cells, auto = plan(lr="auto")
    _, halving_cells, halving = plan(lr="auto", strategy="halving", eta=2, min_steps=4)
    assert [(c.key, c.hparams) for c in halving_cells] == [(c.key, c.hparams) for c in auto_cells]
    g = group_of(halving)
    assert (g.strategy, g.eta, g.min_steps, g.extend, g.staged) == ("halving", 2, 4, 3, True)
    assert g.shares == [1 / 8, 1 / 4, 1 / 2]
    lr = auto_lr_grid(validate_config(study())["methods"]["lora"]["lr"])
    # past the grid: 3 halvings below it and 3 doublings above it, planned like grid points
    assert [t["lr"] for t in g.extension_tuned] == [float(f"{lr[0] / 2:.3g}"), float(f"{lr[0] / 4:.3g}"),
                                                     float(f"{lr[0] / 8:.3g}"), lr[-1] * 2, lr[-1] * 4, lr[-1] * 8]
    assert {c.variant for c in auto_cells if c.key[:2] == ("emotion", "lora") and c.seed == 1000} == \
        set(g.candidates) | set(g.extensions)
    _, _, off = plan(lr="auto", extend=0)
    assert not group_of(off).staged and group_of(off).extensions == ()
    # extend: 0 is the release before halving exactly: the select job's params have the old keys only
    assert set(group_of(off).to_params()) == {"candidates", "decodings", "default", "group", "higher_is_better",
                                              "metric", "method", "on", "seed", "seeds", "split", "task", "tuned"}


@pytest.mark.parametrize("tune, message", [
    ({"strategy": "halving"}, "experiments[0].tune.strategy: halving needs a grid"),
    ({"lr": [1.0e-3], "strategy": "halving"}, "experiments[0].tune.strategy: halving needs 2 or more grid points"),
    ({"lr": "auto", "strategy": "halving", "eta": 1}, "experiments[0].tune.eta: 1 is less than the minimum of 2"),
    ({"lr": "auto", "strategy": "halving", "min_steps": 0}, "experiments[0].tune.min_steps: 0 is less than"),
    ({"lr": "auto", "eta": 2}, "experiments[0].tune.eta: a setting of strategy: halving"),
    ({"lr": [1.0e-3, 1.0e-2], "extend": 2}, "experiments[0].tune.extend: widens an lr: auto grid"),
    ({"lr": "auto", "strategy": "successive"}, "experiments[0].tune.strategy: 'successive' is not one of"),
])
def test_what_cannot_work_is_refused_naming_the_key(tune, message):
    with pytest.raises(ConfigError) as err:
        plan(**tune)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_halving_with_checkpoint_best_is_refused():
    raw = study(tune={"lr": "auto", "strategy": "halving"}, select={"on": "validation"})
    raw["training"] = {"checkpoint": "best"}
    with pytest.raises(ConfigError, match=r"experiments\[0\]\.tune\.strategy: halving scores each rung at its last "
                                          r"step, and full uses checkpoint: best"):
        validate_config(raw)


# ------------------------------------------------------------------------------ the stages

def scores(tmp_path, name, values) -> list:
    """One selection metrics.tsv per value (None: a failed run)."""
    files = []
    for i, v in enumerate(values):
        path = tmp_path / name / str(i) / "metrics.tsv"
        path.parent.mkdir(parents=True)
        row = {"status": "failed", "error": "loss became nan"} if v is None else {"status": "ok", "accuracy": v}
        write_tsv(path, [row], ["status", "error", "accuracy"])
        files.append(str(path))
    return files


def test_a_rung_keeps_the_best_third_ties_to_the_smaller_lr_and_never_a_failed_point(tmp_path):
    _, _, groups = plan(lr="auto", strategy="halving")
    g = group_of(groups)
    five = list(g.candidates)
    # the 2nd and 4th tie for second place: the smaller lr goes on; the failed 5th never does
    rows = stage(g.to_params(), 0, five, scores(tmp_path, "s0", [0.5, 0.6, 0.7, 0.6, None]), tmp_path / "stage0.tsv")
    assert [r["advance"] for r in rows] == [False, True, True, False, False]
    going = stage_competitors(g, 1, read_tsv(tmp_path / "stage0.tsv"))
    assert going == [five[1], five[2]] and g.stage_rung(1) == 1
    # rung 1: the middle point wins, interior: no extension, the search ends
    rows = stage(g.to_params(), 1, going, scores(tmp_path, "s1", [0.65, 0.8]), tmp_path / "stage1.tsv")
    assert [(r["variant"], r["advance"]) for r in rows] == [(five[1], False), (five[2], True)]
    assert stage_competitors(g, 2, read_tsv(tmp_path / "stage1.tsv")) == []
    winner = select_staged(g.to_params(), [tmp_path / "stage0.tsv", tmp_path / "stage1.tsv"], tmp_path / "sel.tsv")
    assert winner["variant"] == five[2] and winner["edge"] == ""
    table = {r["variant"]: r for r in read_tsv(tmp_path / "sel.tsv")}
    assert list(table) == five  # grid order, the old columns and the rung each point stopped at
    assert [table[v]["rung"] for v in five] == ["0", "1", "1", "0", "0"]
    assert json.loads(table[five[2]]["rung_scores"]) == {"0": 0.7, "1": 0.8}
    assert [table[v]["rank"] for v in five] == ["4", "2", "1", "3", ""]  # later rungs first; the failure unranked
    assert table[five[4]]["status"] == "failed" and read_selection(tmp_path / "sel.tsv") == (five[2], 4)


def test_equal_scores_at_a_rung_go_to_the_lower_validation_loss_at_that_rung(tmp_path):
    """The agreement run (MiniLM emotion, lr: auto, full fine-tuning, 2026-12-06): after 10 of 64 steps
    three points tied at the majority class's accuracy, and grid order sent the two smaller learning
    rates on, dropping the grid's winner (8e-5: 0.563 on the selection set against 0.350 for halving's
    pick). Defect caught: a tie at a rung decided by grid order while the rung's validation loss (run.json's
    stats, measured at the stop step) tells the points apart."""
    from peftgrid.records import write_json

    _, _, groups = plan(lr="auto", strategy="halving")
    g = group_of(groups)
    five = list(g.candidates)
    losses = [1.7925, 1.7870, 1.7758, 1.7522, 1.6964]  # the measured rung-0 losses, 5e-6 .. 8e-5
    runs = [tmp_path / f"run{i}.json" for i in range(5)]
    for r, loss in zip(runs, losses):
        write_json(r, {"total_steps": 64, "stats": {"final_val_loss": loss}})
    accuracy = [0.1567, 0.2733, 0.3033, 0.3033, 0.3033]
    rows = stage(g.to_params(), 0, five, scores(tmp_path, "s0", accuracy), tmp_path / "stage0.tsv", [str(r) for r in runs])
    assert [r["variant"] for r in rows if r["advance"]] == five[3:]  # 4e-5 and 8e-5, not 2e-5 and 4e-5
    # without run files (losses unknown) equal scores go to grid order
    rows = stage(g.to_params(), 0, five, scores(tmp_path, "t0", accuracy), tmp_path / "t0.tsv")
    assert [r["variant"] for r in rows if r["advance"]] == five[2:4]


def test_a_stage_frees_the_kept_checkpoints_no_rung_continues_from(tmp_path):
    """Helper's new-user study (2026-12-07): MiniLM full fine-tuning kept 261 MB of weights and
    optimizer state in every rung folder, dropped points and the last rung included (3.2 GB for a
    600-example study). Defect caught: a kept checkpoint left behind once no rung can continue from
    it (dropped, the last rung, a search that ended early), or one freed that a surviving point's
    next rung needs."""
    from peftgrid.records import write_json

    def rung(root, rung_number, variants):  # each point's rung folder: run.json and a kept checkpoint
        runs = []
        for v in variants:
            folder = root / v / f"rung{rung_number}"
            (folder / "kept_checkpoint").mkdir(parents=True)
            (folder / "kept_checkpoint" / "state.pt").write_bytes(b"x" * 1000)
            write_json(folder / "run.json", {"total_steps": 64, "stats": {"final_val_loss": 1.0}})
            runs.append(str(folder / "run.json"))
        return runs

    def kept(root, rung_number, variants):
        return {v for v in variants if (root / v / f"rung{rung_number}" / "kept_checkpoint").is_dir()}

    # 10 points, 3 rungs: the survivors of rungs 0 and 1 keep theirs until their next rung has trained
    _, _, groups = plan(lr=[1.0e-5 * 2 ** i for i in range(10)], strategy="halving")
    g, root = group_of(groups), tmp_path / "ten"
    ten = list(g.candidates)
    assert len(g.shares) == 3
    rows = stage(g.to_params(), 0, ten, scores(tmp_path, "a0", [i / 10 for i in range(10)]), root / "stage0.tsv",
                 rung(root, 0, ten))
    four = [r["variant"] for r in rows if r["advance"]]
    assert four == ten[6:] and kept(root, 0, ten) == set(four)
    rows = stage(g.to_params(), 1, four, scores(tmp_path, "a1", [0.1, 0.2, 0.3, 0.4]), root / "stage1.tsv",
                 rung(root, 1, four))
    two = [r["variant"] for r in rows if r["advance"]]
    assert two == four[2:] and kept(root, 0, ten) == set() and kept(root, 1, four) == set(two)
    stage(g.to_params(), 2, two, scores(tmp_path, "a2", [0.5, 0.6]), root / "stage2.tsv", rung(root, 2, two))
    assert kept(root, 1, four) == kept(root, 2, two) == set()  # the last rung: nothing continues
    assert all((root / v / "rung2" / "run.json").is_file() for v in two)  # results stay

    # 5 points, 2 rungs: one point finishes rung 0, the search ends there and frees it too (with
    # extend on, that edge point would go on to rung 1 beside its extension point, and keep it)
    _, _, groups = plan(lr="auto", strategy="halving", extend=0)
    g, root = group_of(groups), tmp_path / "five"
    five = list(g.candidates)
    rows = stage(g.to_params(), 0, five, scores(tmp_path, "b0", [0.5, None, None, None, None]), root / "stage0.tsv",
                 rung(root, 0, five))
    assert [r["variant"] for r in rows if r["advance"]] == five[:1] and kept(root, 0, five) == set()


def test_the_tuning_report_shows_where_each_point_stopped_and_a_line_per_rung(tmp_path):
    from peftgrid.report.tuning import build_tuning_report, load_selections, rung_rows

    _, _, groups = plan(lr="auto", strategy="halving")
    g = group_of(groups)
    five = list(g.candidates)
    stage(g.to_params(), 0, five, scores(tmp_path, "s0", [0.5, 0.6, 0.7, 0.4, 0.3]), tmp_path / "stage0.tsv")
    stage(g.to_params(), 1, five[1:3], scores(tmp_path, "s1", [0.65, 0.8]), tmp_path / "stage1.tsv")
    select_staged(g.to_params(), [tmp_path / "stage0.tsv", tmp_path / "stage1.tsv"], tmp_path / "sel.tsv")
    lines = rung_rows(load_selections([tmp_path / "sel.tsv"]))
    assert sorted(zip(lines["group"], lines["variant"], lines["score"])) == sorted(
        [("rung 0", v, x) for v, x in zip(five, [0.5, 0.6, 0.7, 0.4, 0.3])] + [("rung 1", five[1], 0.65),
                                                                             ("rung 1", five[2], 0.8)])
    assert list(lines[lines["selected"]]["group"]) == ["rung 1"]  # circled at the winner's last rung
    out = {"table": tmp_path / "t.tsv", "table_md": tmp_path / "t.md", "figure": tmp_path / "tuning.png"}
    build_tuning_report("emotion", [tmp_path / "sel.tsv"], out)
    table = read_tsv(out["table"])
    assert [r["stopped at rung"] for r in table] == ["0", "1", "1", "0", "0"] and out["figure"].is_file()
    assert [r["score at each rung"] for r in table][:3] == ["rung 0: 0.5", "rung 0: 0.6; rung 1: 0.65",
                                                            "rung 0: 0.7; rung 1: 0.8"]
    assert "successive halving: 5 points, 2 reached rung 1" in out["table_md"].read_text()


def test_the_tuning_report_calls_a_grid_extended_past_its_edge_a_grid(tmp_path):
    """`lr: auto` with strategy grid is staged for its extension points, and its selection.tsv puts
    every full run at 'rung 0': the report said "successive halving: 7 points, 7 reached rung 0, the
    winner's run at the selection seed stopped there" of a grid whose runs all finished, and listed
    the extension points among the grid's."""
    from peftgrid.report.tuning import build_tuning_report

    g = group_of(plan(lr="auto")[2])
    five, up = list(g.candidates), [v for v, t in zip(g.extensions, g.extension_tuned) if t["lr"] > g.tuned[-1]["lr"]]
    stage(g.to_params(), 0, five, scores(tmp_path, "s0", [0.1, 0.2, 0.3, 0.4, 0.5]), tmp_path / "stage0.tsv")
    stage(g.to_params(), 1, [five[4], up[0]], scores(tmp_path, "s1", [0.5, 0.45]), tmp_path / "stage1.tsv")
    assert select_staged(g.to_params(), [tmp_path / "stage0.tsv", tmp_path / "stage1.tsv"],
                         tmp_path / "sel.tsv")["variant"] == five[4]
    out = {"table": tmp_path / "t.tsv", "table_md": tmp_path / "t.md", "figure": tmp_path / "tuning.png"}
    build_tuning_report("emotion", [tmp_path / "sel.tsv"], out, [g.to_params()])
    md = out["table_md"].read_text()
    assert f"selected `{five[4]}`" in md and "6/6 points finished" in md
    assert "halving" not in md and "rung" not in md and "score at each rung" not in read_tsv(out["table"])[0]
    # the point added past the edge is named as such, not passed off as one of the grid's own
    grid = ", ".join(format(t["lr"], "g") for t in g.tuned)
    assert f"grid lr ∈ {{{grid}}}, extended past its edge by lr ∈ {{{g.tuned_of(up[0])['lr']:g}}} on seed" in md


def test_an_edge_winner_extends_the_grid_until_it_is_interior(tmp_path):
    _, _, groups = plan(lr="auto")  # strategy grid: every stage compares full runs
    g = group_of(groups)
    five, up = list(g.candidates), [v for v, t in zip(g.extensions, g.extension_tuned) if t["lr"] > g.tuned[-1]["lr"]]
    rows = stage(g.to_params(), 0, five, scores(tmp_path, "s0", [0.1, 0.2, 0.3, 0.4, 0.5]), tmp_path / "stage0.tsv")
    assert [r["variant"] for r in rows if r["advance"]] == [five[4], up[0]]  # highest lr won: 2x past it enters
    assert rows[-1]["status"] == "extension"
    assert g.tuned_of(up[0])["lr"] == g.tuned[-1]["lr"] * 2
    nxt = stage_competitors(g, 1, read_tsv(tmp_path / "stage0.tsv"))
    assert nxt == [five[4], up[0]] and g.stage_rung(1) == 0  # grid: at the full run
    # the extension point wins: at the edge again, one more; then the old winner beats the next: interior
    stage(g.to_params(), 1, nxt, scores(tmp_path, "s1", [0.5, 0.6]), tmp_path / "stage1.tsv")
    nxt = stage_competitors(g, 2, read_tsv(tmp_path / "stage1.tsv"))
    assert nxt == [up[0], up[1]]
    stage(g.to_params(), 2, nxt, scores(tmp_path, "s2", [0.6, 0.55]), tmp_path / "stage2.tsv")
    assert stage_competitors(g, 3, read_tsv(tmp_path / "stage2.tsv")) == []
    files = [tmp_path / f"stage{i}.tsv" for i in range(3)]
    winner = select_staged(g.to_params(), files, tmp_path / "sel.tsv")
    assert winner["variant"] == up[0] and winner["edge"] == ""  # bracketed: 2x and 4x the grid's top
    assert [r["variant"] for r in read_tsv(tmp_path / "sel.tsv")] == five + up[:2]


def test_an_interior_winner_adds_nothing_and_the_limit_is_reported(tmp_path):
    _, _, groups = plan(lr="auto", strategy="halving", extend=1)
    g = group_of(groups)
    five = list(g.candidates)
    rows = stage(g.to_params(), 1, five[1:3], scores(tmp_path, "a", [0.4, 0.3]), tmp_path / "interior.tsv")
    assert [r["variant"] for r in rows] == five[1:3] and stage_competitors(g, 2, read_tsv(tmp_path / "interior.tsv")) == []
    # the lowest lr wins its last rung: one point 2x below enters at that rung, from step 0
    stage(g.to_params(), 0, five, scores(tmp_path, "r0", [0.9, 0.8, 0.1, 0.1, 0.1]), tmp_path / "stage0.tsv")
    stage(g.to_params(), 1, five[:2], scores(tmp_path, "r1", [0.9, 0.8]), tmp_path / "stage1.tsv")
    low = stage_competitors(g, 2, read_tsv(tmp_path / "stage1.tsv"))
    assert low[1] == five[0] and g.tuned_of(low[0])["lr"] == float(f"{g.tuned[0]['lr'] / 2:.3g}")
    assert g.continues_from(low[0], 1) is None and g.continues_from(five[0], 1) == 0 and g.stage_rung(2) == 1
    # it wins too, and extend: 1 is spent: the selection says so
    stage(g.to_params(), 2, low, scores(tmp_path, "r2", [0.95, 0.9]), tmp_path / "stage2.tsv")
    assert stage_competitors(g, 3, read_tsv(tmp_path / "stage2.tsv")) == []
    winner = select_staged(g.to_params(), [tmp_path / f"stage{i}.tsv" for i in range(3)], tmp_path / "sel.tsv")
    assert winner["variant"] == low[0] and winner["rung"] == "1"
    assert winner["edge"] == "lr (lowest); still at the edge after 1 extension (extend: 1, the limit)"


def test_no_point_finishing_the_first_rung_ends_the_search_with_the_default_standing_in(tmp_path):
    _, _, groups = plan(lr="auto", strategy="halving")
    g = group_of(groups)
    stage(g.to_params(), 0, list(g.candidates), scores(tmp_path, "s", [None] * 5), tmp_path / "stage0.tsv")
    assert stage_competitors(g, 1, read_tsv(tmp_path / "stage0.tsv")) == []
    winner = select_staged(g.to_params(), [tmp_path / "stage0.tsv"], tmp_path / "sel.tsv")
    assert (winner["variant"], winner["finished"]) == (g.default, 0)


def test_a_last_rung_where_every_survivor_fails_falls_back_to_the_best_point_that_finished(tmp_path):
    """Both survivors of rung 0 go NaN in rung 1: the winner is the best point whose last rung
    finished (rank 1), not the default (lr x1, one of the failed survivors), and the edge column says so."""
    _, _, groups = plan(lr="auto", strategy="halving")
    g = group_of(groups)
    five = list(g.candidates)
    assert g.default == five[2]
    stage(g.to_params(), 0, five, scores(tmp_path, "s0", [0.5, 0.6, 0.7, 0.4, 0.3]), tmp_path / "stage0.tsv")
    going = stage_competitors(g, 1, read_tsv(tmp_path / "stage0.tsv"))
    assert going == five[1:3]
    stage(g.to_params(), 1, going, scores(tmp_path, "s1", [None, None]), tmp_path / "stage1.tsv")
    assert stage_competitors(g, 2, read_tsv(tmp_path / "stage1.tsv")) == []
    winner = select_staged(g.to_params(), [tmp_path / "stage0.tsv", tmp_path / "stage1.tsv"], tmp_path / "sel.tsv")
    assert (winner["variant"], winner["status"], winner["rank"], winner["rung"]) == (five[0], "ok", 1, "0")
    assert winner["edge"] == ("lr (lowest); every point of stage 1 (rung 1) failed: the best of stage 0 (rung 0) "
                              "stands in")
    assert edge_and_notes(winner["edge"]) == ("lr (lowest)", winner["edge"].split("; ", 1)[1])
    assert edge_and_notes("lr (highest), r (lowest)") == ("lr (highest), r (lowest)", "")
    assert edge_and_notes("min_steps 10 is not below") == ("", "min_steps 10 is not below")
    assert read_selection(tmp_path / "sel.tsv") == (five[0], 3)
    table = {r["variant"]: r for r in read_tsv(tmp_path / "sel.tsv")}
    assert [table[v]["status"] for v in five] == ["ok", "failed", "failed", "ok", "ok"]


def test_the_edge_column_and_the_extension_use_one_rule_on_a_two_key_grid(tmp_path):
    """r x lr (auto): the winner's axis is the points with its r; it is at the lr edge for both the
    extension and the edge column, and r (2 values) has no edge."""
    from peftgrid.plan.tune import axis_edge, edge_label

    tuned = [{"lr": lr, "r": r} for r in (4, 8) for lr in (1.0, 2.0, 4.0)] + [{"lr": 8.0, "r": 4}]
    assert axis_edge(tuned, {"lr": 4.0, "r": 8}, "lr") == 1 and edge_label(tuned, {"lr": 4.0, "r": 8}) == "lr (highest)"
    assert axis_edge(tuned, {"lr": 4.0, "r": 4}, "lr") == 0 and edge_label(tuned, {"lr": 4.0, "r": 4}) == ""
    assert edge_label(tuned, {"lr": 1.0, "r": 4}) == "lr (lowest)" and axis_edge(tuned, {"lr": 1.0, "r": 4}, "r") == 0
    three = [{"lr": 1.0, "r": r} for r in (4, 8, 16)]
    assert edge_label(three, three[2]) == "r (highest)"
    assert edge_label([{"lr": x} for x in ("a", "b", "c")], {"lr": "a"}) == ""  # not numbers: no edge
    # the grid's select and a stage agree on a two-key group
    config = validate_config(study(tune={"lora": {"lr": "auto", "r": [4, 8]}}, select={"on": "validation"}))
    g = group_of(build_tune_groups(config))
    top = max(t["lr"] for t in g.tuned)
    values = [0.9 if t == {"lr": top, "r": 8} else 0.1 for t in g.tuned]
    rows = stage(g.to_params(), 0, list(g.candidates), scores(tmp_path, "s0", values), tmp_path / "stage0.tsv")
    assert rows[-1]["status"] == "extension" and g.tuned_of(rows[-1]["variant"])["r"] == 8
    nxt = stage_competitors(g, 1, read_tsv(tmp_path / "stage0.tsv"))
    assert [g.tuned_of(v) for v in nxt] == [{"lr": top, "r": 8}, {"lr": top * 2, "r": 8}]
    stage(g.to_params(), 1, nxt, scores(tmp_path, "s1", [0.9, 0.8]), tmp_path / "stage1.tsv")  # the old winner stays
    winner = select_staged(g.to_params(), [tmp_path / "stage0.tsv", tmp_path / "stage1.tsv"], tmp_path / "sel.tsv")
    assert g.tuned_of(winner["variant"]) == {"lr": top, "r": 8} and winner["edge"] == ""  # bracketed now


def test_a_min_steps_that_covers_the_run_is_noted_in_the_stage_and_the_selection(tmp_path):
    """min_steps 10 and runs of 8 steps: every rung is the whole run (halving saves nothing); the
    stage file's rows and the winner's edge column say so, and a run longer than min_steps adds nothing."""
    from peftgrid.records import write_json

    _, _, groups = plan(lr="auto", strategy="halving")
    g = group_of(groups)
    five = list(g.candidates)
    assert g.min_steps == MIN_STEPS == 10
    runs = [tmp_path / f"run{i}.json" for i in range(5)]
    for r in runs:
        write_json(r, {"total_steps": 8})
    assert [f.split("/")[-2:] for f in g.stage_run_files(lambda v, s: f"runs/{v}/seed{s}", 1, five[:2])] == \
        [["rung1", "run.json"]] * 2
    rows = stage(g.to_params(), 0, five, scores(tmp_path, "s0", [0.5, 0.6, 0.7, 0.4, 0.3]), tmp_path / "stage0.tsv",
                 [str(r) for r in runs])
    note = ("min_steps 10 is not below the run's 8 steps: rung 0 trained the whole run (halving saved nothing); "
            "lower min_steps or use strategy: grid")
    assert {r["note"] for r in rows} == {note}
    stage(g.to_params(), 1, five[1:3], scores(tmp_path, "s1", [0.65, 0.8]), tmp_path / "stage1.tsv",
          [str(r) for r in runs[:2]])
    winner = select_staged(g.to_params(), [tmp_path / "stage0.tsv", tmp_path / "stage1.tsv"], tmp_path / "sel.tsv")
    assert winner["variant"] == five[2] and winner["edge"] == note.replace("rung 0", "rung 1")
    # the report says the note as a note: the interior winner is not called an edge winner
    from peftgrid.report.tuning import build_tuning_report

    out = {"table": tmp_path / "t.tsv", "table_md": tmp_path / "t.md", "figure": tmp_path / "tuning.png"}
    build_tuning_report("emotion", [tmp_path / "sel.tsv"], out)
    text = out["table_md"].read_text()
    assert "lower min_steps" in text and "edge" not in text
    for r in runs:
        write_json(r, {"total_steps": 100})  # rung 0 stops at 12 (1/9 of 100, at least 10): no note
    rows = stage(g.to_params(), 0, five, scores(tmp_path, "t0", [0.5, 0.6, 0.7, 0.4, 0.3]), tmp_path / "t0.tsv",
                 [str(r) for r in runs])
    assert {r["note"] for r in rows} == {""}
    assert g.stage_run_files(lambda v, s: v, 1, five[1:3]) == [f"{v}/rung1/run.json" for v in five[1:3]]
    # a grid's stages compare full runs: their run.json breaks ties, and min_steps notes nothing
    assert group_of(plan(lr="auto")[2]).stage_run_files(lambda v, s: v, 0, five) == [f"{v}/run.json" for v in five]


def test_a_staged_methods_choice_is_its_groups_winner(tmp_path):
    config = validate_config(study(tune={"lr": "auto", "strategy": "halving"}, sweep={"lora": {"r": [4, 8]}},
                                   select={"on": "validation"}))
    groups = [g for g in build_tune_groups(config) if g.key[:2] == ("emotion", "lora")]
    choice = next(c for c in build_choices(config) if c.key == ("emotion", "lora"))
    assert choice.score_files(None) == [g.selection_file for g in groups]
    files = []
    for g, best in zip(groups, (0.7, 0.75)):
        stages = [tmp_path / f"{g.group}{i}.tsv" for i in (0, 1)]
        stage(g.to_params(), 0, list(g.candidates), scores(tmp_path, g.group, [0.5, 0.6, 0.65, 0.2, 0.1]), stages[0])
        stage(g.to_params(), 1, list(g.candidates[1:3]), scores(tmp_path, g.group + "r1", [0.6, best]), stages[1])
        files.append(tmp_path / f"{g.group}.tsv")
        select_staged(g.to_params(), stages, files[-1])
    row = choose(choice.to_params(), files, tmp_path / "choice.tsv")
    assert row["variant"] == groups[1].candidates[2] and row["score"] == 0.75
    assert math.isclose(float(read_tsv(tmp_path / "choice.tsv")[0]["score"]), 0.7)


def runs_with_losses(tmp_path, name, losses):
    """run.json files whose validation loss (run.json stats) is each of `losses`."""
    from peftgrid.records import write_json

    paths = [tmp_path / name / f"{i}.json" for i in range(len(losses))]
    for path, loss in zip(paths, losses):
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, {"total_steps": 64, "stats": {"final_val_loss": loss}})
    return [str(p) for p in paths]


def test_a_staged_methods_choice_breaks_equal_winners_on_their_loss_as_every_choice_does(tmp_path):
    """Two sweep variants' halving winners tie at the last rung: the lower validation loss there
    wins (choose_best, as within a grid), recorded in the stage, selection and choice files. A
    winner that stands in from an earlier rung is not compared on loss: group order. Defect caught:
    the choice among staged groups deciding a tie by group name order (r=16 before r=4) alone."""
    config = validate_config(study(tune={"lr": "auto", "strategy": "halving"}, sweep={"lora": {"r": [4, 16]}},
                                   select={"on": "validation"}))
    groups = sorted((g for g in build_tune_groups(config) if g.key[:2] == ("emotion", "lora")), key=lambda g: g.group)
    choice = next(c for c in build_choices(config) if c.key == ("emotion", "lora"))
    assert [g.group for g in groups] == ["r=16", "r=4"] and choice.run_files(None) == []

    def select_group(g, last_rung_losses, last_rung_scores=(0.6, 0.8), tag="a"):
        name = f"{g.group}{tag}"
        stages = [tmp_path / f"{name}{i}.tsv" for i in (0, 1)]
        stage(g.to_params(), 0, list(g.candidates), scores(tmp_path, name, [0.5, 0.6, 0.65, 0.2, 0.1]), stages[0],
              runs_with_losses(tmp_path, name + "l0", [1.0] * 5))
        stage(g.to_params(), 1, list(g.candidates[1:3]), scores(tmp_path, name + "r1", list(last_rung_scores)),
              stages[1], runs_with_losses(tmp_path, name + "l1", last_rung_losses))
        select_staged(g.to_params(), stages, tmp_path / f"{name}.tsv")
        return tmp_path / f"{name}.tsv"

    files = [select_group(groups[0], [1.2, 0.9]), select_group(groups[1], [1.2, 0.7])]
    assert [float(r["val_loss"]) for r in read_tsv(files[1])[1:3]] == [1.2, 0.7]
    row = choose(choice.to_params(), files, tmp_path / "choice.tsv")
    assert (row["variant"], row["val_loss"]) == (groups[1].candidates[2], 0.7)  # r=4: the lower loss
    # r=4's last rung fails: its stand-in comes from rung 0 (0.5, loss 1.0); r=16's winner scored 0.5 at
    # rung 1 (loss 1.2): losses at different rungs are not compared, the tie goes to group order
    files[1] = select_group(groups[1], [1.2, 0.7], last_rung_scores=(None, None), tag="b")
    files[0] = select_group(groups[0], [1.2, 0.9], last_rung_scores=(0.5, 0.4), tag="b")
    assert read_selection(files[1])[0] == groups[1].candidates[0] and read_selection(files[0])[0] == groups[0].candidates[1]
    assert choose(choice.to_params(), files, tmp_path / "choice.tsv")["variant"] == groups[0].candidates[1]


def test_a_sweep_group_where_nothing_finished_does_not_turn_off_the_loss_tie_break(tmp_path):
    """r=16 and r=4 tie at rung 1 (losses 0.9 and 0.7); r=8 finished no point (its default stands in
    at rung 0, not competing): r=4 still wins on its loss. Defect caught (review): the same-rung check
    counting a group that does not compete, sending the tie to group order (r=16)."""
    config = validate_config(study(tune={"lr": "auto", "strategy": "halving"}, sweep={"lora": {"r": [4, 8, 16]}},
                                   select={"on": "validation"}))
    groups = {g.group: g for g in build_tune_groups(config) if g.key[:2] == ("emotion", "lora")}
    choice = next(c for c in build_choices(config) if c.key == ("emotion", "lora"))
    files = []
    for name in sorted(groups):  # choice order: groups by name
        g, out = groups[name], tmp_path / f"{name}.tsv"
        first = [0.5, 0.6, 0.65, 0.2, 0.1] if name != "r=8" else [None] * 5
        stage(g.to_params(), 0, list(g.candidates), scores(tmp_path, name, first), tmp_path / f"{name}0.tsv",
              runs_with_losses(tmp_path, name + "l0", [1.0] * 5))
        stages = [tmp_path / f"{name}0.tsv"]
        if name != "r=8":
            stage(g.to_params(), 1, list(g.candidates[1:3]), scores(tmp_path, name + "r1", [0.6, 0.8]),
                  tmp_path / f"{name}1.tsv", runs_with_losses(tmp_path, name + "l1", [1.2, 0.7 if name == "r=4" else 0.9]))
            stages.append(tmp_path / f"{name}1.tsv")
        select_staged(g.to_params(), stages, out)
        files.append(out)
    assert read_selection(files[2]) == (groups["r=8"].default, 0)
    assert choose(choice.to_params(), files, tmp_path / "choice.tsv")["variant"] == groups["r=4"].candidates[2]


def test_a_fallback_among_equal_scores_takes_the_lower_loss_at_their_rung(tmp_path):
    """Every survivor fails rung 1; of the rung-0 points that stopped, two tie for the best score:
    the stand-in is the one with the lower rung-0 loss, as choose_best would pick (not grid order)."""
    _, _, groups = plan(lr="auto", strategy="halving")
    g = group_of(groups)
    five = list(g.candidates)
    stage(g.to_params(), 0, five, scores(tmp_path, "s0", [0.5, 0.6, 0.7, 0.5, 0.3]), tmp_path / "stage0.tsv",
          runs_with_losses(tmp_path, "l0", [1.5, 1.0, 1.0, 1.1, 1.6]))
    stage(g.to_params(), 1, five[1:3], scores(tmp_path, "s1", [None, None]), tmp_path / "stage1.tsv",
          runs_with_losses(tmp_path, "l1", [1.0, 1.0]))
    winner = select_staged(g.to_params(), [tmp_path / "stage0.tsv", tmp_path / "stage1.tsv"], tmp_path / "sel.tsv")
    assert (winner["variant"], winner["val_loss"]) == (five[3], 1.1)  # 0.5 each; 1.1 < 1.5


# ------------------------------------------------------------------------------ a rung's loss score

def test_a_rung_stopping_between_validations_scores_its_own_steps_validation_loss(tiny_bert, tmp_path):
    """Validation every 8 steps, the rung stops at 5: its final_val_loss (select.metric: loss) is the
    validation loss at step 5, not step 0's logged one; its loss log stays the full run's prefix and
    its continuation ends bit for bit as the uninterrupted run."""
    import torch

    from peftgrid.jobs.train import train_cell
    from peftgrid.plan.specs import TrainSpec
    from test_loop_state import adapter, log_without_time, with_rung
    from test_training import cell_spec, stage_emotion, stage_model

    staged = tmp_path / "staged"
    stage_emotion(staged / "emo", "train", "validation", "test")
    stage_model("tiny", {"source": str(tiny_bert)}, staged / "tiny")

    def train(spec, out, stop=None, source=None, eval_every=8):
        params = spec.to_params()
        params["hparams"] = {**params["hparams"], "eval_every_steps": eval_every}
        spec = with_rung(TrainSpec.from_params(params), stop, source) if stop or source else TrainSpec.from_params(params)
        record = train_cell(spec, staged / "tiny", {"emo": staged / "emo"}, tmp_path / out)
        assert record["status"] == "ok", record["error"]
        return record["stats"], log_without_time(tmp_path / out)

    spec = cell_spec(tiny_bert, "lora", lr=5.0e-3, epochs=2)  # 16 steps, logs every 2
    rung, rung_log = train(spec, "rung", stop=5)
    # the full run's validation loss at step 5, computed directly: the same run validating every 5 steps
    every5, every5_log = train(spec, "every5", eval_every=5)
    at5 = float(next(r for r in every5_log if r["step"] == "5")["val_loss"])
    stale = float(rung_log[0]["val_loss"])  # step 0: the last logged validation before the rung stopped
    assert rung["final_val_loss"] == pytest.approx(at5, abs=1e-6) and abs(at5 - stale) > 1e-4
    full, full_log = train(spec, "full")
    assert rung_log == full_log[:len(rung_log)] and [r["step"] for r in rung_log] == ["0", "2", "4"]
    assert all(r["val_loss"] == "" for r in rung_log[1:])  # no row for the rung's own validation
    continued, continued_log = train(spec, "continued", source=tmp_path / "rung" / "kept_checkpoint")
    a, b = adapter(tmp_path / "continued"), adapter(tmp_path / "full")
    assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)
    assert continued_log == full_log and continued["final_val_loss"] == full["final_val_loss"]
    # validation draws no random numbers: validating every 5 steps leaves the run's weights as they were
    c = adapter(tmp_path / "every5")
    assert all(torch.equal(c[n], b[n]) for n in b)


# ------------------------------------------------------------------------------ the workflow

def halving_study(tiny_bert, lrs) -> dict:
    """4 points, 16 steps a run, rungs after 2 and 6 steps (1/9 and 1/3, min_steps 2), validation
    every step and selection on it: a rung's score is the loss the full run logs at that step."""
    from test_tune import tiny_tuned_study

    config = tiny_tuned_study(tiny_bert, lrs)
    config["training"] = {"epochs": 2, "batch_size": 8, "eval_every_steps": 1, "log_every_steps": 1,
                          "checkpoint_every_steps": 2}
    config["experiments"][0].update(tune={"lora": {"lr": lrs}, "strategy": "halving", "min_steps": 2},
                                    select={"on": "validation", "metric": "loss"}, seeds=[1])
    return config


def log_rows(path) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in read_tsv(path)]


@pytest.mark.slow
def test_rungs_are_the_full_runs_prefix_resume_when_killed_and_rerun_only_what_an_edit_changes(tiny_bert, tmp_path):
    import os

    lrs = [1.0e-4, 1.0e-3, 1.0e-2, 3.0e-2]
    write_config(tmp_path / "config.yaml", halving_study(tiny_bert, lrs))
    first = planned_jobs(tmp_path)  # up to the first checkpoint: rung 0 of every point, its stage
    assert (first["train_rung"], first["tune_stage"], first["select"], first["choose"]) == (4, 1, 1, 1)
    assert "train" not in first  # no full run at the selection seed

    # rung jobs killed after step 5 (rung 1 goes from step 2 to 6): the run fails, their checkpoints stay
    # (both rung-1 jobs when they run side by side, the first when they run in turn)
    os.environ["PEFTGRID_FAULT"] = "kill:5"
    try:
        assert run_snakemake(tmp_path, check=False).returncode != 0
    finally:
        del os.environ["PEFTGRID_FAULT"]
    runs = tmp_path / "results" / "runs" / "emotion" / "lora"
    killed = [p.parent.parent for p in runs.glob("*/seed1000/rung1/checkpoint/state.pt")]
    assert killed and not any((k / "run.json").exists() for k in killed)
    run_snakemake(tmp_path)
    assert all(json.loads((k / "run.json").read_text())["resumed"] is True for k in killed)
    assert planned_jobs(tmp_path) == {}  # a second run has nothing to do
    assert not list(runs.glob("*/seed1000/rung*/kept_checkpoint"))  # each freed once its stage decided

    tune = tmp_path / "results" / "tune" / "emotion" / "lora" / "default"
    winner, finished = read_selection(tune / "selection.tsv")
    stages = [read_tsv(tune / f"stage{i}.tsv") for i in (0, 1)]
    assert [len(s) for s in stages] == [4, 2] and finished == 4 and not (tune / "stage2.tsv").exists()
    assert {r["variant"] for r in stages[1]} == {r["variant"] for r in stages[0] if r["advance"] == "True"}
    assert not (runs / winner / "seed1000" / "train_log.tsv").exists()  # the winner's full run never ran
    # the full run of the point whose rung 1 was killed and resumed: every rung is exactly its prefix,
    # every rung's score its validation loss at that step
    point = killed[0].parent.parent.name
    run_snakemake(tmp_path, "--keep-going", f"results/runs/emotion/lora/{point}/seed1000/train_log.tsv")  # a flag first: --resources would take the target
    full = log_rows(runs / point / "seed1000" / "train_log.tsv")
    for rung, stop, rows in ((0, 2, stages[0]), (1, 6, stages[1])):
        assert log_rows(runs / point / "seed1000" / f"rung{rung}" / "train_log.tsv") == full[:stop + 1]
        score = next(float(r["score"]) for r in rows if r["variant"] == point)
        assert score == pytest.approx(float(full[stop]["val_loss"]), abs=1e-6) and full[stop]["step"] == str(stop)

    # edit the grid value rung 0 dropped: only the new point's rung 0 trains, then the stages after it
    dropped = next(r["variant"] for r in stages[0] if r["advance"] == "False")
    new_lrs = [lr for lr in lrs if f"lr={lr:g}" != dropped] + [5.0e-3]
    stamps = {p: p.stat().st_mtime_ns for p in runs.glob("*/seed*/**/train_stats.tsv")}
    write_config(tmp_path / "config.yaml", halving_study(tiny_bert, new_lrs))
    edited = planned_jobs(tmp_path)
    assert (edited["train_rung"], edited["tune_stage"], edited["select"], edited["choose"]) == (1, 1, 1, 1)
    assert "train" not in edited
    run_snakemake(tmp_path)
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())  # nothing that existed retrained
    assert (runs / "lr=0.005" / "seed1000" / "rung0" / "run.json").is_file()
    assert planned_jobs(tmp_path) == {}
    assert not list(runs.glob("*/seed1000/rung*/kept_checkpoint"))


@pytest.mark.slow
def test_an_edge_winner_extends_the_grid_from_step_zero_to_the_last_rung(tiny_bert, tmp_path):
    """Learning rates far too small (the auto grid 2.5e-6 ... 4e-5 around 1e-5): in a few steps the
    loss falls further the larger the step, so the highest point wins its last rung; the point 2x
    above it trains from step 0 to that rung, wins again, and extend: 1 is spent: the selection says
    the limit was reached. (Too large a rate made the lowest point win only on most draws of the
    tiny model: past divergence the losses are chaotic. An all-tied grid is not extended:
    test_a_grid_whose_points_all_tie_...)"""
    config = halving_study(tiny_bert, [])
    config["methods"] = {"lora": {"lr": 1.0e-5}}
    config["experiments"][0]["tune"] = {"lr": "auto", "strategy": "halving", "min_steps": 2, "extend": 1}
    write_config(tmp_path / "config.yaml", config)
    run_snakemake(tmp_path)
    tune = tmp_path / "results" / "tune" / "emotion" / "lora" / "default"
    stages = [read_tsv(tune / f"stage{i}.tsv") for i in range(3)]
    assert not (tune / "stage3.tsv").exists()
    lr = [json.loads(r["tuned"])["lr"] for r in stages[0]]
    assert lr == [2.5e-06, 5e-06, 1e-05, 2e-05, 4e-05]  # the auto grid
    top = stages[1][-1]  # the grid's highest point won rung 1: the point 2x above it joins
    assert (top["status"], top["advance"], json.loads(top["tuned"])["lr"]) == ("extension", "True", 8e-05)
    assert [json.loads(r["tuned"])["lr"] for r in stages[2]] == [4e-05, 8e-05] and stages[2][0]["rung"] == "1"
    rung = tmp_path / "results" / "runs" / "emotion" / "lora" / top["variant"] / "seed1000"
    assert json.loads((rung / "rung1" / "run.json").read_text())["rung"]["from_checkpoint"] is None
    assert not (rung / "rung0").exists()  # it entered at the last rung, trained from step 0
    winner = next(r for r in read_tsv(tune / "selection.tsv") if r["selected"] == "True")
    assert winner["variant"] == top["variant"] and "the limit" in winner["edge"]
    assert planned_jobs(tmp_path) == {}


def test_a_grid_whose_points_all_tie_is_not_extended_and_says_why(tmp_path):
    """CoLA at 64 steps: every learning rate predicts the majority class (MCC 0). The winner is a
    tie-break — the lower validation loss, else grid order — at an edge (measured: the highest
    learning rate had the lowest loss); extending past it would train up to 3 more runs that tie again."""
    _, _, groups = plan(lr="auto")  # strategy grid, extend: 3
    g = group_of(groups)
    five = list(g.candidates)
    rows = stage(g.to_params(), 0, five, scores(tmp_path, "s0", [0.0] * 5), tmp_path / "stage0.tsv")
    assert [r["variant"] for r in rows] == five and not any(r["status"] == "extension" for r in rows)
    assert stage_competitors(g, 1, read_tsv(tmp_path / "stage0.tsv")) == []
    winner = select_staged(g.to_params(), [tmp_path / "stage0.tsv"], tmp_path / "sel.tsv")
    assert winner["edge"] == ("lr (lowest); every point scored 0: the selection metric does not separate them "
                              "(the tie went to grid order), so the grid is not extended")
    losses = runs_with_losses(tmp_path, "l", [0.6658, 0.6402, 0.607, 0.6022, 0.6021])
    rows = stage(g.to_params(), 0, five, scores(tmp_path, "s2", [0.0] * 5), tmp_path / "stage2.tsv", losses)
    assert [r["variant"] for r in rows if r["advance"]] == five[-1:] and len(rows) == 5  # no extension point
    assert rows[-1]["note"] == ("every point scored 0: the selection metric does not separate them (the tie went "
                                "to the lowest validation loss), so the grid is not extended")
    # one point apart is a direction: the edge winner extends as before
    rows = stage(g.to_params(), 0, five, scores(tmp_path, "s1", [0.01, 0.0, 0.0, 0.0, 0.0]), tmp_path / "stage1.tsv")
    assert rows[-1]["status"] == "extension"
    # an untuned-extension grid (explicit values) says the same in its edge column
    from peftgrid.jobs.select import select

    _, _, groups = plan(lr=[1.0e-3, 2.0e-3])
    g = group_of(groups)
    won = select(g.to_params(), scores(tmp_path, "e", [0.5, 0.5]), tmp_path / "grid.tsv")
    assert won["edge"] == ("every point scored 0.5: the selection metric does not separate them (the tie went to "
                           "grid order)")  # 2 points: no edge
