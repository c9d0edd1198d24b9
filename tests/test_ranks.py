"""Across-task ranks (peftgrid/report/ranks.py): average ranks worked by hand, Demšar's critical
difference, the metric's direction, exclusions, the one-task note, and each method at the variant
chosen on the selection set (the choice files), never one picked on the reported set."""
import math

import pandas as pd
import pytest

from peftgrid.report import ranks

# 3 tasks x 4 methods, scores on `test` (mcc: higher is better). `lora` has two variants: r=4 is
# best on `validation` (chosen) but worst on `test`; r=16 is best on `test`.
TEST = {
    "t1": {"full": 0.80, "lora": {"r=4": 0.60, "r=16": 0.95}, "ia3": 0.70, "none": 0.10},
    "t2": {"full": 0.70, "lora": {"r=4": 0.70, "r=16": 0.90}, "ia3": 0.50, "none": 0.20},  # full = lora r=4: tie
    "t3": {"full": 0.60, "lora": {"r=4": 0.40, "r=16": 0.99}, "ia3": 0.65, "none": 0.05},
}
# every task: r=4 won on the selection set at the selection seed (what its choice file says)
CHOSEN = {t: {"lora": {"variant": "r=4", "decoding": "", "on": "emotion/validation", "seed": 1000}} for t in
          [*TEST, *(f"{t}b" for t in TEST)]}
# Hand ranks (1 = best) at lora r=4:
#   t1: full .80 -> 1, ia3 .70 -> 2, lora .60 -> 3, none -> 4
#   t2: full .70 = lora .70 -> 1.5 each, ia3 .50 -> 3, none -> 4
#   t3: ia3 .65 -> 1, full .60 -> 2, lora .40 -> 3, none -> 4
HAND = {"full": (1 + 1.5 + 2) / 3, "ia3": (2 + 3 + 1) / 3, "lora": (3 + 1.5 + 3) / 3, "none": 4.0}
# Had lora been chosen on `test` (r=16), it would rank 1 on every task:
ON_TEST = {"lora": 1.0}


def rows(tests=TEST, metric="mcc", skip=(), failed=()):
    out = []

    def add(task, method, variant, ev, value, seed):
        status = "failed" if (task, method) in failed else "ok"
        out.append({"task": task, "method": method, "variant": variant, "seed": seed, "eval": ev, "decoding": "",
                    "status": status, "error": "oom" if status != "ok" else "", metric: value if status == "ok" else None,
                    "trainable_params": 1.0, "trainable_pct": 1.0, "train_time_s": 1.0, "time_per_epoch_s": 1.0,
                    "peak_train_mem_mb": 1.0, "peak_infer_mem_mb": 1.0, "infer_throughput": 1.0})

    for task, methods in tests.items():
        for method, value in methods.items():
            if (task, method) in skip:
                continue
            variants = value if isinstance(value, dict) else {"default": value}
            for variant, v in variants.items():
                for seed, jitter in ((1, -0.01), (2, 0.01)):  # two seeds: the mean is the value
                    add(task, method, variant, "test", v + jitter, seed)
    return out


def write(tmp_path, **kw):
    pd.DataFrame(rows(**kw)).to_csv(tmp_path / "summary.tsv", sep="\t", index=False)
    return tmp_path / "summary.tsv"


def spec(tasks=TEST, metric="mcc"):
    return {t: {"metric": metric, "eval": "test", "decodings": [], "baseline": "none"} for t in tasks}


def choice_files(tmp_path, tasks=TEST, chosen=CHOSEN):
    """What rule choose writes (plan/tune.py CHOICE_COLUMNS), one file per task and method."""
    from peftgrid.plan.tune import CHOICE_COLUMNS
    from peftgrid.records import write_tsv

    out = {}
    for t in tasks:
        for method, c in chosen.get(t, {}).items():
            path = tmp_path / "choices" / t / f"{method}.tsv"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_tsv(path, [{"task": t, "method": method, "variant": c["variant"], "decoding": c["decoding"],
                              "seed": c["seed"], "on": c["on"], "chosen": True, "status": "ok"}], CHOICE_COLUMNS)
            out.setdefault(t, []).append(path)
    return out


def outputs(tmp_path):
    return {"table": tmp_path / "ranks.tsv", "table_md": tmp_path / "ranks.md", "figure": tmp_path / "ranks.png"}


def test_average_ranks_with_a_tie_worked_by_hand(tmp_path):
    r = ranks.rank_methods(pd.read_csv(write(tmp_path), sep="\t").fillna({"decoding": ""}), spec(), CHOSEN)
    got = dict(zip(r.table["method"], r.table["average rank"]))
    assert got == pytest.approx(HAND)
    assert r.table["method"].tolist() == ["full", "ia3", "lora", "none"]  # 1.5, 2, 2.5, 4
    assert not r.excluded
    # the variant came from the choice made on the selection set, not from the reported set
    assert set(r.choices.loc[r.choices["method"] == "lora", "variant"]) == {"r=4"}
    assert set(r.choices.loc[r.choices["method"] == "lora", "chosen_on"]) == {"chosen on `emotion/validation` at seed 1000"}
    assert got["lora"] != pytest.approx(ON_TEST["lora"])
    assert r.table.set_index("method").loc["none", "role"].startswith("reference")


def test_critical_difference_k4_n3_by_hand():
    # Demšar (2006): CD = q_0.05 * sqrt(k (k+1) / (6 N)), q_0.05(k=4) = 2.569
    assert ranks.critical_difference(4, 3) == pytest.approx(2.569 * math.sqrt(4 * 5 / 18), abs=1e-3)
    assert ranks.critical_difference(4, 3) == pytest.approx(2.708, abs=1e-3)
    assert ranks.critical_difference(2, 10) == pytest.approx(1.960 * math.sqrt(2 * 3 / 60), abs=1e-3)
    with pytest.raises(ValueError, match="two or more"):
        ranks.critical_difference(1, 3)


def test_q_alpha_is_demsars_table_and_has_no_cap():
    """q_alpha from scipy's studentized range reproduces Demšar's Table 5(a) (k = 2..10) and goes
    on past the 20 methods a hand-typed table stopped at."""
    table = {2: 1.960, 3: 2.343, 4: 2.569, 5: 2.728, 6: 2.850, 7: 2.949, 8: 3.031, 9: 3.102, 10: 3.164}
    for k, q in table.items():
        assert ranks.q_alpha(k) == pytest.approx(q, abs=2e-3)
    assert ranks.q_alpha(20) == pytest.approx(3.544, abs=2e-3)  # Orange's compute_CD table
    assert ranks.q_alpha(30) > ranks.q_alpha(20) and ranks.critical_difference(25, 5) > 0


def brute_force_friedman(r: pd.DataFrame) -> float:
    """Friedman's statistic (Demšar eq. 3) on every way of shuffling each task's ranks among the
    methods: the share at least the observed one."""
    import itertools

    import numpy as np

    def stat(x):
        n, k = x.shape
        return 12 * n / (k * (k + 1)) * ((x.mean(axis=0) ** 2).sum() - k * (k + 1) ** 2 / 4)

    x = r.to_numpy(dtype=float)
    observed = stat(x)
    shuffles = [stat(np.array(rows)) for rows in itertools.product(*(list(itertools.permutations(row)) for row in x))]
    return float(np.mean(np.array(shuffles) >= observed - 1e-9))


def test_friedman_first_worked_by_hand():
    """The Friedman p is exact (every within-task shuffle of the ranks), not scipy's chi² p (0.074
    here; the chi² and Iman-Davenport approximations reject 6.9% of nulls at 3 methods x 4 tasks);
    two methods: no omnibus step."""
    r = pd.DataFrame({"a": [1, 1, 2, 1, 1], "b": [2, 3, 1, 2, 3], "c": [3, 2, 3, 3, 2]}, dtype=float)
    assert ranks.friedman_p(r) == pytest.approx(brute_force_friedman(r)) == pytest.approx(605 / 6480)
    assert ranks.friedman_p(r[["a", "b"]]) is None
    assert ranks.friedman_p(pd.DataFrame({"a": [2.0, 2.0], "b": [2.0, 2.0], "c": [2.0, 2.0]})) == 1.0
    # too many shuffles to enumerate: Monte Carlo, close to the chi² p at 30 tasks
    import numpy as np
    from scipy.stats import friedmanchisquare

    big = pd.DataFrame(np.random.default_rng(0).random((30, 6))).rank(axis=1)
    assert ranks.friedman_p(big) == pytest.approx(friedmanchisquare(*big.to_numpy().T).pvalue, abs=0.03)


def test_friedman_holds_its_level_at_three_methods_over_four_tasks():
    """Every ranking of 3 methods over 4 tasks is equally likely under the null: the exact test
    rejects at most 5% of them (the chi² p: 6.9%)."""
    import itertools

    import numpy as np

    perms = list(itertools.permutations([1.0, 2.0, 3.0]))
    cache, rejected, total = {}, 0, 0
    for rows in itertools.product(perms, repeat=4):
        key = tuple(sorted(rows))  # the p depends on the multiset of task rows only
        if key not in cache:
            cache[key] = ranks.friedman_p(pd.DataFrame(np.array(rows), columns=list("abc")))
        rejected += cache[key] < 0.05
        total += 1
    assert total == 6 ** 4 and rejected / total <= 0.05


def test_two_methods_get_the_exact_sign_test_not_the_cd():
    """Two methods over N tasks, every task's winner a fair coin under the null (ties: half a win
    each): enumerated, the sign test rejects at most 5% (Nemenyi's CD at k = 2 rejected 12.5% over
    4 tasks, 7.0% over 8)."""
    import itertools

    import numpy as np

    for n in (4, 5, 6, 8, 10):
        rejected = 0
        for wins in itertools.product([True, False], repeat=n):
            r = pd.DataFrame({"a": [1.0 if w else 2.0 for w in wins], "b": [2.0 if w else 1.0 for w in wins]})
            rejected += ranks.sign_test_p(r) < 0.05
        assert rejected / 2 ** n <= 0.05, n
    # worked: 6 of 6 tasks won: p = 2 / 64; 5 wins and a tie: 5.5 of 6, n = 6 after the tie's halves
    six = pd.DataFrame({"a": [1.0] * 6, "b": [2.0] * 6})
    assert ranks.sign_test_p(six) == pytest.approx(2 / 64)
    assert ranks.sign_test_p(pd.DataFrame({"a": [1.0] * 4, "b": [2.0] * 4})) == pytest.approx(2 / 16)
    tie = pd.DataFrame({"a": [1.0] * 5 + [1.5], "b": [2.0] * 5 + [1.5]})  # one tie: odd, dropped -> 5 of 5
    assert ranks.sign_test_p(tie) == pytest.approx(2 / 32)
    assert ranks.sign_test_p(pd.DataFrame({"a": [1.5] * 3, "b": [1.5] * 3})) == 1.0
    assert np.isclose(ranks.sign_test_p(pd.DataFrame({"a": [1.0, 2.0], "b": [2.0, 1.0]})), 1.0)


def test_two_methods_over_four_tasks_are_never_called_different(tmp_path):
    """End to end: lora beats ia3 on all 4 tasks. The old CD at k = 2, N = 4 (0.98 ranks) called
    that 1-rank gap significant, though 4 of 4 happens 12.5% of the time under the null; the sign
    test's p is 0.125, and 6 of 6 (p = 2/64) is significant."""
    four = {f"t{i}": {"lora": 0.9, "ia3": 0.5} for i in range(4)}
    out = outputs(tmp_path)
    tasks = {t: {"metric": "mcc", "eval": "test", "decodings": [], "baseline": None} for t in four}
    r = ranks.build_ranks(write(tmp_path, tests=four), tasks, {}, out)
    assert r.cd is None and r.sign_p == pytest.approx(0.125) and r.table["within CD of the best"].all()
    assert "exact two-sided sign test over the 4 tasks" in out["table_md"].read_text()
    six = {f"t{i}": {"lora": 0.9, "ia3": 0.5} for i in range(6)}
    r = ranks.build_ranks(write(tmp_path, tests=six), {t: tasks["t0"] for t in six}, {}, out)
    assert r.sign_p == pytest.approx(2 / 64)
    assert dict(zip(r.table["method"], r.table["within CD of the best"])) == {"lora": True, "ia3": False}


def test_lower_is_better_flips_the_ranks():
    scores = pd.DataFrame({"a": [0.1, 0.2], "b": [0.3, 0.4], "c": [0.2, 0.1]}, index=["x", "y"])
    up = ranks.rank_table(scores, {"x": True, "y": True}).mean()
    down = ranks.rank_table(scores, {"x": False, "y": False}).mean()
    assert up.to_dict() == {"a": 2.5, "b": 1.0, "c": 2.5}
    assert down.to_dict() == {"a": 1.5, "b": 3.0, "c": 1.5}
    assert ranks.higher_is_better("mcc") and ranks.higher_is_better("rougeL") and not ranks.higher_is_better("loss")
    assert not ranks.higher_is_better("final_val_loss")


def test_lower_is_better_metric_end_to_end(tmp_path, monkeypatch):
    from peftgrid import metrics

    monkeypatch.setitem(metrics.METRICS, "err", metrics.Metric("err", "label", higher_is_better=False))
    # lora: r=16 had the lower (better) selection-set error, so its choice file names r=16
    path = write(tmp_path, metric="err")
    chosen = {t: {"lora": {**CHOSEN[t]["lora"], "variant": "r=16"}} for t in TEST}
    r = ranks.rank_methods(pd.read_csv(path, sep="\t").fillna({"decoding": ""}), spec(metric="err"), chosen)
    got = dict(zip(r.table["method"], r.table["average rank"]))
    assert set(r.choices.loc[r.choices["method"] == "lora", "variant"]) == {"r=16"}
    # lower is better: none (lowest scores) ranks 1 on every task, lora r=16 (highest) ranks 4
    assert got["none"] == 1.0 and got["lora"] == 4.0


def test_a_method_missing_on_one_task_is_left_out_and_said(tmp_path):
    path = write(tmp_path, skip={("t2", "ia3")}, failed={("t3", "full")})
    out = outputs(tmp_path)
    r = ranks.build_ranks(path, spec(), choice_files(tmp_path), out)
    assert set(r.table["method"]) == {"lora", "none"}
    assert "t2: not run" in r.excluded["ia3"] and "t3: no finished" in r.excluded["full"]
    md = out["table_md"].read_text()
    assert "Left out" in md and "`ia3`" in md and "`full`" in md
    # ranks among the two left: lora 1 on every task
    assert dict(zip(r.table["method"], r.table["average rank"])) == {"lora": 1.0, "none": 2.0}


def test_several_variants_without_a_choice_are_not_chosen_on_the_reported_set(tmp_path):
    """No choice file: lora (two variants) is left out, although r=16 would rank first on `test`."""
    r = ranks.rank_methods(pd.read_csv(write(tmp_path), sep="\t").fillna({"decoding": ""}), spec(), {})
    assert "lora" not in set(r.table["method"]) and "no choice on a selection set" in r.excluded["lora"]


def test_a_method_enters_at_its_chosen_variant_and_decoding(tmp_path):
    """Generation: each method at the decoding its choice names; without a choice, the primary
    (first configured) decoding, whatever scores best on the reported set."""
    out = []
    for task in ("t1", "t2"):
        for method, by_decoding in {"lora": {"greedy": 0.2, "beam4": 0.9}, "full": {"greedy": 0.5, "beam4": 0.95},
                                    "ia3": {"greedy": 0.6, "beam4": 0.1}}.items():
            for dec, v in by_decoding.items():
                out.append({"task": task, "method": method, "variant": "default", "seed": 1, "eval": "test",
                            "decoding": dec, "status": "ok", "error": "", "chrf": v, "trainable_params": 1.0,
                            "trainable_pct": 1.0, "train_time_s": 1.0, "time_per_epoch_s": 1.0,
                            "peak_train_mem_mb": 1.0, "peak_infer_mem_mb": 1.0, "infer_throughput": 1.0})
    tasks = {t: {"metric": "chrf", "eval": "test", "decodings": ["greedy", "beam4"]} for t in ("t1", "t2")}
    chosen = {t: {"lora": {"variant": "default", "decoding": "beam4", "on": "x/validation", "seed": 1000}}
              for t in tasks}
    r = ranks.rank_methods(pd.DataFrame(out), tasks, chosen)
    got = dict(zip(r.table["method"], r.table["average rank"]))
    # lora at beam4 (0.9) beats ia3 and full at greedy (0.6, 0.5); full's beam4 0.95 is never looked at
    assert got == {"lora": 1.0, "ia3": 2.0, "full": 3.0}
    assert set(r.choices.loc[r.choices["method"] == "full", "decoding"]) == {"greedy"}


def test_one_task_no_figure_and_a_note(tmp_path):
    one = {"t1": TEST["t1"]}
    out = outputs(tmp_path)
    r = ranks.build_ranks(write(tmp_path, tests=one), spec(one), choice_files(tmp_path, one), out)
    assert not out["figure"].exists() and not out["figure"].with_suffix(".svg").exists()
    assert out["table_md"].read_text().strip() == r.note and "two or more tasks" in r.note
    assert pd.read_csv(out["table"], sep="\t").empty


def test_figure_and_table_hold_the_hand_ranks(tmp_path):
    out = outputs(tmp_path)
    r = ranks.build_ranks(write(tmp_path), spec(), choice_files(tmp_path), out)
    assert out["figure"].stat().st_size > 5000 and out["figure"].with_suffix(".svg").is_file()
    table = pd.read_csv(out["table"], sep="\t")
    assert dict(zip(table["method"], table["average rank"])) == pytest.approx(HAND)
    assert (table["tasks"] == 3).all()
    # three tasks: Friedman does not reject (exact p 0.066 with t2's tie), so no Nemenyi post-hoc test
    hand = pd.DataFrame({"full": [1, 1.5, 2], "ia3": [2, 3, 1], "lora": [3, 1.5, 3], "none": [4, 4, 4]})
    assert r.friedman_p == pytest.approx(brute_force_friedman(hand)) and r.friedman_p > 0.05
    assert r.cd is None and table["within CD of the best"].all()
    assert (table["lo"] <= table["average rank"]).all() and (table["average rank"] <= table["hi"]).all()
    md = out["table_md"].read_text()
    assert "Friedman test over the 3 tasks (exact permutation p): p = 0.066" in md and "no post-hoc test" in md and "| full | 1.50 |" in md
    section = ranks.across_tasks_section(tmp_path.parent / "nothing")
    assert section == ""


def test_nemenyi_after_friedman_rejects(tmp_path):
    """Six tasks (the three twice): Friedman rejects, then the Nemenyi CD decides each method."""
    six = {**TEST, **{f"{t}b": v for t, v in TEST.items()}}
    out = outputs(tmp_path)
    r = ranks.build_ranks(write(tmp_path, tests=six), spec(six), choice_files(tmp_path, six), out)
    assert r.friedman_p < 0.05
    cd = ranks.critical_difference(4, 6)
    assert r.cd == pytest.approx(cd) and cd == pytest.approx(2.569 * math.sqrt(20 / 36), abs=1e-3)
    within = dict(zip(r.table["method"], r.table["within CD of the best"]))
    assert within == {m: HAND[m] - min(HAND.values()) < cd for m in HAND}
    assert within["none"] is False or within["none"] == False  # noqa: E712 — 4 - 1.5 = 2.5 > 1.915
    assert f"CD = {cd:.3f}" in out["table_md"].read_text()


def test_report_md_gets_the_across_tasks_section(tmp_path):
    (tmp_path / "tables").mkdir()
    (tmp_path / "figures").mkdir()
    ranks.build_ranks(write(tmp_path), spec(), choice_files(tmp_path), {"table": tmp_path / "tables" / "ranks.tsv",
                                                     "table_md": tmp_path / "tables" / "ranks.md",
                                                     "figure": tmp_path / "figures" / "ranks.png"})
    section = ranks.across_tasks_section(tmp_path)
    assert section.startswith("\n## Across tasks") and "figures/ranks.png" in section and "| lora |" in section


def test_bootstrap_is_seeded_and_brackets_a_constant_rank():
    r = pd.DataFrame({"a": [1.0, 1.0, 1.0], "b": [2.0, 2.0, 2.0]})
    ci = ranks.bootstrap_intervals(r, 500, 0)
    assert ci.loc["a"].tolist() == [1.0, 1.0] and ci.loc["b"].tolist() == [2.0, 2.0]
    r2 = pd.DataFrame({"a": [1.0, 2.0, 1.0, 2.0], "b": [2.0, 1.0, 2.0, 1.0]})
    assert ranks.bootstrap_intervals(r2, 500, 3).equals(ranks.bootstrap_intervals(r2, 500, 3))


def test_the_spec_reads_each_tasks_primary_metric_eval_decodings_and_choices():
    from test_specs import raw_study

    from peftgrid.plan import build_run_table, specs, validate_config
    from peftgrid.plan.runs import build_choices

    config = validate_config(raw_study())
    tasks = sorted({c.task for c in build_run_table(config)})
    choices = build_choices(config)
    spec = specs.ranks_spec(config, tasks, choices)
    t = spec.tasks
    assert t["translate"]["metric"] == "chrf" and t["translate"]["eval"] == "test"
    assert t["translate"]["decodings"] == list(config["tasks"]["translate"]["decoding"])  # config order
    assert t["emotion"]["metric"] == "f1_macro" and t["emotion"]["decodings"] == []
    assert sorted(f for s in t.values() for f in s["choices"]) == sorted(c.file for c in choices)
    assert t["pos_en_de"]["eval"] == "de_test"
    assert specs.RanksSpec.from_params(spec.to_params()) == spec
