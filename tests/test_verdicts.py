"""What the report concludes: recommendations, the Pareto front and the words, from hand-made
comparison tables (the statistics are tested in test_significance.py and test_null_simulation.py)."""
import math

import pandas as pd
import pytest

from peftgrid.report.analysis import (FRONT, chosen_cells, gap_words, pareto_front, primary_decoding, recommend,
                                      significant_front)

COSTS = {  # method: (trainable_params, trainable_pct, train_time_s, peak_train_mem_mb)
    "full": (1e8, 100.0, 300.0, 1000.0), "lora": (3e5, 0.3, 100.0, 400.0), "ia3": (5e4, 0.05, 80.0, 380.0),
    "bitfit": (1e4, 0.01, 90.0, 500.0), "none": (0.0, 0.0, 0.0, 0.0)}


def comparison(scores: dict, p_best: dict, p_none: dict, higher=True, seeds=3, examples=500, unit="methods"):
    """(rows, comp) as build_task_report hands them to `recommend`: `scores` in metric units (0-1),
    `p_best` / `p_none`: method -> adjusted p against the best / against `none`."""
    trained = {m: s for m, s in scores.items() if m != "none"}
    best = (max if higher else min)(trained, key=trained.get)
    comp, rows = [], []
    for m, s in scores.items():
        d_best, d_none = s - scores[best], s - scores.get("none", math.nan)
        better = (d_none > 0) == higher
        comp.append({"method": m, "seeds": seeds, "examples": examples, "score": s, "ci_low": s - 0.02,
                     "ci_high": s + 0.02, "best": m == best, "diff_vs_best": d_best, "diff_ci_low": d_best - 0.01,
                     "diff_ci_high": d_best + 0.01, "p_vs_best": 1.0 if m == best else p_best.get(m, math.nan),
                     "worse_than_best": m != best and p_best.get(m, 1.0) < 0.05,
                     "diff_vs_none": math.nan if m == "none" else d_none, "none_ci_low": d_none - 0.01,
                     "none_ci_high": d_none + 0.01, "p_vs_none": p_none.get(m, math.nan),
                     "better_than_none": m != "none" and "none" in scores and p_none[m] < 0.05 and better,
                     "unit": unit, "test": "hand-made"})
        params, pct, secs, mem = COSTS[m]
        rows.append({"method": m, "variant": "default", "decoding": "", "accuracy": s, "n": seeds,
                     "trainable_params": params, "trainable_pct": pct, "train_time_s": secs, "peak_train_mem_mb": mem})
    return pd.DataFrame(rows), pd.DataFrame(comp)


def verdict(rows, comp, higher=True, within=1.0, budget=1.0):
    return recommend("emotion", rows, comp, "accuracy", "test", higher_is_better=higher, scale=100.0,
                     within_points=within, budget_pct=budget, baseline="none")


def test_nothing_is_recommended_when_the_untrained_baseline_is_significantly_better():
    """The audit's case: `none` 40.8, every trained method about 30, Holm p = 0.004: the old
    recommendations named `lora` in all four bullets under words saying nothing is recommended."""
    rows, comp = comparison({"none": 0.408, "lora": 0.302, "full": 0.30, "ia3": 0.29, "bitfit": 0.28},
                            p_best={"full": 0.9, "ia3": 0.6, "bitfit": 0.5},
                            p_none={"lora": 0.004, "full": 0.004, "ia3": 0.004, "bitfit": 0.004})
    bullets, words = verdict(rows, comp)
    assert bullets == []
    assert words[0].startswith("No trained method is significantly better than the untrained baseline `none` on "
                               "emotion") and "nothing is recommended" in words[0]
    lora = next(w for w in words if w.startswith("`lora`"))
    assert "10.6 points below `none`, significantly" in lora


def test_nothing_is_recommended_when_no_method_beats_a_baseline_by_chance_above_it():
    # CoLA as it happened: full and LoRA predict the majority class (MCC 0); `none` a little above, not significantly
    rows, comp = comparison({"none": 0.02, "full": 0.0, "lora": 0.0}, p_best={"lora": 1.0},
                            p_none={"full": 0.5, "lora": 0.5})
    bullets, words = verdict(rows, comp)
    assert bullets == [] and "nothing is recommended" in words[0]


def test_recommendations_need_no_significant_loss_and_name_only_qualifying_methods():
    # ia3 is 0.7 points below the best on the mean but significantly worse: the old mean-only margin made it
    # "the fewest trainable parameters within 1 point"; bitfit is far below; none is never recommended
    rows, comp = comparison({"none": 0.30, "full": 0.90, "lora": 0.895, "ia3": 0.893, "bitfit": 0.80},
                            p_best={"lora": 0.41, "ia3": 0.01, "bitfit": 0.001},
                            p_none={"full": 0.001, "lora": 0.001, "ia3": 0.001, "bitfit": 0.001})
    by = {b["recommendation"]: b["cell"] for b in verdict(rows, comp)[0]}
    margin = "within 1 point(s) of the best and not significantly worse"
    assert by == {"best quality": "full", f"fewest trainable parameters {margin}": "lora",
                  "best quality with at most 1% trainable parameters": "lora",
                  f"fastest to train {margin}": "lora"}
    # a tight budget: the best mean under it among the methods better than none
    by = {b["recommendation"]: b["cell"] for b in verdict(rows, comp, budget=0.02)[0]}
    assert by["best quality with at most 0.02% trainable parameters"] == "bitfit"
    # a method not better than none never qualifies, even under the budget
    _, comp2 = comparison({"none": 0.30, "full": 0.90, "lora": 0.895, "ia3": 0.893, "bitfit": 0.31},
                          p_best={"lora": 0.41, "ia3": 0.01, "bitfit": 0.001},
                          p_none={"full": 0.001, "lora": 0.001, "ia3": 0.001, "bitfit": 0.6})
    by = {b["recommendation"]: b["cell"] for b in verdict(rows, comp2, budget=0.02)[0]}
    assert "best quality with at most 0.02% trainable parameters" not in by


def test_words_read_as_a_reviewer_writes_them_with_effect_sizes_and_evidence():
    rows, comp = comparison({"none": 0.30, "full": 0.90, "lora": 0.895, "ia3": 0.857},
                            p_best={"lora": 0.41, "ia3": 0.002}, p_none={"full": 0.001, "lora": 0.001, "ia3": 0.001})
    bullets, words = verdict(rows, comp)
    assert words[0] == "Best trained method on `test`: `full` with accuracy 90.0 points (95% CI 88.0 to 92.0; 3 seed(s) × 500 examples)."
    ia3 = next(w for w in words if w.startswith("`ia3`"))
    assert ia3.startswith("`ia3` is 4.3 points below `full`, significantly (95% CI -5.3 to -3.3, adjusted p = 0.002); "
                          "55.7 points above `none`, significantly (95% CI +54.7 to +56.7")
    assert "3 seed(s) × 500 examples" in ia3 and "0.05% of its trainable parameters" in ia3
    lora = next(w for w in words if w.startswith("`lora`"))
    assert "0.5 points below `full`, not significantly" in lora and "38%" not in lora and "40% of its training" in lora
    assert not any("runs, not the methods" in w for w in words)
    # costlier than the best: a multiple (rows: the cost table; comp: the comparison)
    rows.loc[rows["method"] == "lora", "trainable_params"] = 1.28e10
    assert "128× its trainable parameters and 40% of its training memory" in next(
        w for w in verdict(rows, comp)[1] if w.startswith("`lora`"))
    # one seed: the p-values are about these runs
    rows, comp = comparison({"full": 0.90, "lora": 0.895}, p_best={"lora": 0.41}, p_none={}, seeds=1, unit="runs")
    assert "With one seed per method, these p-values compare these runs, not the methods" in verdict(rows, comp)[1][0]


def test_one_single_seed_method_among_seeded_ones_is_named_and_no_p_value_is_said_to_compare_runs():
    """Mixed seeds: the seed-level test covers every pair (the 1-seed method borrows the pooled
    spread), so the words name that method's assumption and never say the p-values compare runs
    (the old words said its p-values compared runs while the old test made EVERY p-value a runs test)."""
    rows, comp = comparison({"full": 0.90, "lora": 0.895, "ia3": 0.89}, p_best={"lora": 0.41, "ia3": 0.3}, p_none={})
    comp.loc[comp["method"] == "ia3", ["seeds", "unit"]] = [1, "methods, pooled spread"]
    words = verdict(rows, comp)[1]
    assert words[0] == ("`ia3` ran one seed: the p-values involving it assume its seed-to-seed spread is the other "
                        "methods' (pooled); every p-value compares methods.")
    assert not any("compare these runs" in w or "compare runs" in w for w in words)


def test_a_lower_is_better_metric_recommends_the_lowest():
    rows, comp = comparison({"none": 0.50, "full": 0.10, "lora": 0.105, "bitfit": 0.20}, higher=False,
                            p_best={"lora": 0.5, "bitfit": 0.001}, p_none={"full": 0.001, "lora": 0.001, "bitfit": 0.001})
    bullets, words = verdict(rows, comp, higher=False)
    by = {b["recommendation"]: b["cell"] for b in bullets}
    assert by["best quality"] == "full"
    assert by["fewest trainable parameters within 1 point(s) of the best and not significantly worse"] == "lora"
    assert "10.0 points above (worse than) `full`, significantly" in next(w for w in words if w.startswith("`bitfit`"))
    assert gap_words(-0.05, "none", False, 100.0, "points") == "5.0 points below (better than) `none`"


def test_no_comparison_no_recommendation():
    rows, _ = comparison({"full": 0.9, "lora": 0.8}, p_best={"lora": 0.01}, p_none={})
    bullets, words = verdict(rows, pd.DataFrame())
    assert bullets == [] and "nothing is recommended" in words[0]


# ------------------------------------------------------------------------------------ the front


def audit_points(higher=True):
    """The audit's 500-example case by trainable parameters: BOFT 4.4 points below LoRA with 17x its
    parameters, full fine-tuning 2.6 below with 367x, neither significantly worse after adjustment."""
    sign = 1 if higher else -1
    pts = pd.DataFrame({"method": ["bitfit", "lora", "boft", "full", "big", "huge"],
                        "score": [sign * s for s in (0.700, 0.800, 0.756, 0.774, 0.810, 0.860)],
                        "trainable_params": [1e5, 1.2e5, 17 * 1.2e5, 367 * 1.2e5, 1e8, 2e8]})
    pairs = {("lora", "bitfit"): 0.001, ("lora", "boft"): 0.2, ("lora", "full"): 0.4, ("big", "lora"): 0.3,
             ("huge", "lora"): 0.001, ("huge", "big"): 0.01}
    return pts, pairs


@pytest.mark.parametrize("higher", [True, False])
def test_front_drops_costlier_methods_below_a_cheaper_one_even_when_not_significantly(higher):
    pts, pairs = audit_points(higher)
    status = dict(zip(pts["method"], significant_front(pts, "trainable_params", pairs, higher)))
    assert status == {"bitfit": FRONT, "lora": FRONT, "boft": "dominated by `lora` (not significantly)",
                      "full": "dominated by `lora` (not significantly)", "big": "no significant gain over `lora`",
                      "huge": FRONT}
    # the plain front of the means keeps `big` (higher mean, not significantly): drawn beside it
    plain = dict(zip(pts["method"], pareto_front(pts, "score", "trainable_params", higher)))
    assert plain == {"bitfit": True, "lora": True, "boft": False, "full": False, "big": True, "huge": True}


def test_front_marks_a_significant_domination():
    pts = pd.DataFrame({"method": ["lora", "fat"], "score": [0.85, 0.70], "trainable_params": [1e3, 1e4]})
    status = significant_front(pts, "trainable_params", {("lora", "fat"): 0.001})
    assert list(status) == [FRONT, "dominated by `lora` (significantly)"]


# ---------------------------------------------------------------------- where methods enter


def test_chosen_cells_follow_the_selection_contract():
    agg = pd.DataFrame({"method": ["lora"] * 3 + ["full", "ia3", "ia3"],
                        "variant": ["r=2", "r=4", "r=8", "default", "lr=0.01", "lr=0.1"]})
    choices = {"ia3": {"variant": "lr=0.01", "decoding": "greedy", "on": "validation", "seed": 1000}}
    chosen, left_out = chosen_cells(agg, choices, ["beam4", "greedy"])
    # full: its only variant at the primary decoding (first in config order, not the first sorted)
    assert chosen == {"full": ("default", "beam4"), "ia3": ("lr=0.01", "greedy")}
    assert "`lora` has 3 variants and no choice made on a selection set" in left_out["lora"]
    assert primary_decoding(["beam4", "greedy"]) == "beam4" and primary_decoding([]) == ""


def test_generation_outputs_side_by_side_use_the_primary_decoding(tmp_path):
    """The first decoding in config order, as everywhere in the report (the old code picked greedy
    whenever it was there, whatever the config said)."""
    import json

    from peftgrid.report.tables import build_generation_report

    predictions = {}
    for decoding in ("greedy", "beam4"):
        path = tmp_path / f"{decoding}.jsonl"
        path.write_text(json.dumps({"source": "s", "references": ["r"], "hypothesis": f"out {decoding}",
                                    "sentence_bleu": 1.0, "sentence_chrf": 2.0}) + "\n")
        predictions[("lora 1", "test", decoding)] = path
    out = {"qualitative": tmp_path / "q.md", "sentence_bleu": tmp_path / "b.png", "sentence_chrf": tmp_path / "c.png"}
    build_generation_report("mt", predictions, "test", out, ["beam4", "greedy"])
    text = out["qualitative"].read_text()
    assert "decoding `beam4`" in text and "out beam4" in text and "out greedy" not in text


def _simulated_verdict(rep: int, lift: float, n_examples=500, k=4, accuracy=0.7):
    """Bullets for one simulated study: `none` and k trained methods, one run each on the same
    examples, each right with probability `accuracy` (+ `lift` for the trained ones)."""
    import numpy as np

    from peftgrid.report.analysis import compare_methods

    rng = np.random.default_rng(rep)
    gold = rng.integers(0, 2, n_examples)

    def run(acc):
        right = rng.random(n_examples) < acc
        return [[{"label": str(g), "prediction": str(g if r else 1 - g), "correct": int(r)} for g, r in zip(gold, right)]]

    systems = {"none": run(accuracy), **{f"m{i}": run(accuracy + lift) for i in range(k)}}
    comp = compare_methods(systems, "accuracy", n=200, seed=rep, baseline="none")
    rows = pd.DataFrame([{"method": m, "variant": "default", "decoding": "", "accuracy": s, "n": 1,
                          "trainable_params": 1e3 * (i + 1), "trainable_pct": 0.1, "train_time_s": 1.0,
                          "peak_train_mem_mb": 1.0} for i, (m, s) in enumerate(zip(comp["method"], comp["score"]))])
    return recommend("sim", rows, comp, "accuracy", "test", higher_is_better=True, scale=100.0, within_points=1.0,
                     budget_pct=1.0, baseline="none")[0]


def test_a_null_study_gets_a_recommendation_at_most_at_the_nominal_rate():
    """Null simulation with the selection the report really makes (the best of 4 methods, each
    against `none`, 500 examples): when no trained method is better than the untrained baseline,
    some method is recommended in at most 5% of studies (+2 binomial SE for 200 replicates). The old
    mean-only recommendations named a method in every one. Power control: 10 points of real gain
    is recommended nearly always."""
    reps = 200
    rate = sum(bool(_simulated_verdict(rep, lift=0.0)) for rep in range(reps)) / reps
    assert rate <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / reps), rate
    assert sum(bool(_simulated_verdict(rep, lift=0.10)) for rep in range(20)) >= 18


def test_the_untrained_baseline_is_whichever_method_trains_nothing_whatever_its_name():
    """The report asks the method registry which methods train nothing (through its spec), instead of
    comparing names with "none": a baseline configured as `zero_shot` is the reference, never the
    best nor recommended, even when it scores highest (the old name test made it the best method)."""
    from pathlib import Path

    import numpy as np

    from peftgrid.methods import baseline_names
    from peftgrid.plan import validate_config
    from peftgrid.report.analysis import compare_methods
    from peftgrid.plan.specs import _baseline

    assert baseline_names({"zero_shot": {"kind": "none"}, "lora": {"kind": "lora"}}) == ["zero_shot"]
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 2, 300)

    def run(acc):
        right = rng.random(300) < acc
        return [[{"label": str(g), "prediction": str(g if r else 1 - g), "correct": int(r)} for g, r in zip(gold, right)]]

    comp = compare_methods({"zero_shot": run(0.9), "lora": run(0.6), "full": run(0.55)}, "accuracy", n=200,
                           baseline="zero_shot").set_index("method")
    assert comp.loc["lora", "best"] and not comp.loc["zero_shot", "best"]
    assert not comp.loc["lora", "better_than_none"]  # lora is significantly worse than the baseline
    import yaml

    raw = yaml.safe_load((Path(__file__).parent.parent / "configs" / "cpu_small.yaml").read_text())
    raw["methods"] = {**raw.get("methods", {}), "zero_shot": {"kind": "none"}}
    for exp in raw["experiments"]:
        exp["methods"] = ["zero_shot" if m == "none" else m for m in exp["methods"]]
    config = validate_config(raw)
    assert {_baseline(config, t) for t in config["tasks"]} <= {"zero_shot", None}
    assert "zero_shot" in {_baseline(config, t) for t in config["tasks"]}
