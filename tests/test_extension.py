"""Extending peftgrid from outside: tests/plugins/pair_regression.py registers a task type
(sentence-pair regression, Pearson / Spearman) and a lower-is-better metric with per-example
scores through the `plugins:` config key, and a tiny study runs end to end through Snakemake —
check, train, evaluate, summary, report — with no edit under peftgrid/. Snakemake and every job run
in their own processes, so each imports the plugin itself (PYTHONPATH names tests/plugins)."""
import csv
import json
import os
import random
import subprocess
import sys

import pytest

from conftest import REPO, build_tiny_bert, run_snakemake, write_config

PLUGIN_DIR = REPO / "tests" / "plugins"
WORDS = ("cat dog bird fish tree rock sun moon star rain snow wind fire lake hill road city farm ship cloud "
         "river stone leaf seed bread milk salt gold iron glass").split()


def pairs(n: int, rng: random.Random) -> list[dict]:
    """Sentence pairs scored by the share of words they have in common (a score the model can read)."""
    rows = []
    for _ in range(n):
        a = rng.sample(WORDS, 6)
        keep = rng.randint(0, 6)
        b = a[:keep] + rng.sample([w for w in WORDS if w not in a], 6 - keep)
        rng.shuffle(b)
        rows.append({"text": " ".join(a), "text_pair": " ".join(b), "label": round(keep / 6, 4)})
    return rows


def write_csv(path, rows):
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


def study(model_dir, data_dir) -> dict:
    rng = random.Random(0)
    splits = {name: write_csv(data_dir / f"{name}.csv", pairs(n, rng))
              for name, n in (("train", 160), ("validation", 40), ("test", 60))}
    return {
        "plugins": ["pair_regression"],
        "models": {"tiny": {"source": str(model_dir)}},
        "datasets": {"pairs": {"format": "csv", "splits": splits}},
        "tasks": {"sts": {"type": "sentence_pair_regression", "model": "tiny", "dataset": "pairs",
                          "columns": {"text": "text", "text_pair": "text_pair", "label": "label"},
                          "metrics": ["abs_error", "pearson", "spearman", "teacher_gap"], "eval": {"test": {"split": "test"}}}},
        "training": {"epochs": 2, "batch_size": 16, "log_every_steps": 5},
        "methods": {"full": {"lr": 2.0e-3}, "lora": {"lr": 1.0e-2, "r": 4, "alpha": 8}},
        "experiments": [{"tasks": ["sts"], "methods": ["none", "full", "lora"], "seeds": [1]}],
    }


@pytest.fixture(scope="module")
def plugin_env(monkeypatch_module):
    monkeypatch_module.setenv("PYTHONPATH", f"{PLUGIN_DIR}:{REPO}")


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory, plugin_env):
    workdir = tmp_path_factory.mktemp("extension")
    rows = pairs(300, random.Random(1))
    model = build_tiny_bert(tmp_path_factory.mktemp("tiny_bert"), [r["text"] for r in rows] + [r["text_pair"] for r in rows])
    write_config(workdir / "config.yaml", study(model, workdir))
    run_snakemake(workdir)
    return workdir


def read_tsv(path) -> list[dict]:
    with open(path) as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def in_plugin_process(code: str, stdin: str = "") -> subprocess.CompletedProcess:
    """Run `code` where the plugin imports (its registrations stay out of this test process)."""
    return subprocess.run([sys.executable, "-c", code], input=stdin, capture_output=True, text=True, cwd=REPO,
                          timeout=300, env={**os.environ, "PYTHONPATH": f"{PLUGIN_DIR}:{REPO}"}, check=True)


def markdown_table(text: str, heading: str) -> list[dict]:
    """The rows of the first markdown table after the line starting with `heading`."""
    lines = text[text.index(heading):].splitlines()[1:]
    table = [line for line in lines[next(i for i, line in enumerate(lines) if line.startswith("|")):]]
    table = table[:next((i for i, line in enumerate(table) if not line.startswith("|")), len(table))]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in table[2:]]


@pytest.mark.slow
def test_a_plugin_task_type_and_metric_run_end_to_end(finished_study):
    summary = {r["method"]: r for r in read_tsv(finished_study / "results" / "summary.tsv")}
    assert sorted(summary) == ["full", "lora", "none"]
    assert all(r["status"] == "ok" for r in summary.values()), [r.get("error") for r in summary.values()]
    for r in summary.values():  # every registered column scored, in its range
        assert -1.0 <= float(r["pearson"]) <= 1.0 and -1.0 <= float(r["spearman"]) <= 1.0
        assert float(r["abs_error"]) >= 0.0
    # the per-example scores the significance tests read are the registered metric's, line by line
    predictions = next(p for p in finished_study.rglob("predictions.jsonl") if "/full/" in str(p))
    lines = [json.loads(x) for x in predictions.read_text().splitlines()]
    assert len(lines) == 60
    assert all(abs(x["abs_error"] - abs(x["prediction"] - x["label"])) < 1e-3 for x in lines)
    assert float(summary["full"]["abs_error"]) == pytest.approx(sum(x["abs_error"] for x in lines) / 60, abs=1e-3)
    # the model-based metric: scored in the job by the plugin's encoder, from the lines' inputs
    teacher = json.loads(in_plugin_process(
        "import json, sys; from pair_regression import teacher_similarity\n"
        "print(json.dumps(teacher_similarity([tuple(p) for p in json.load(sys.stdin)])))",
        json.dumps([(x["text"], x["text_pair"]) for x in lines])).stdout)
    assert [x["teacher_gap"] for x in lines] == pytest.approx([abs(x["prediction"] - t) for x, t in zip(lines, teacher)],
                                                              abs=1e-3)
    assert float(summary["full"]["teacher_gap"]) == pytest.approx(sum(x["teacher_gap"] for x in lines) / 60, abs=1e-3)
    # training fits the float labels (a regression loss): the untrained head is far off them
    for method in ("full", "lora"):
        assert float(summary[method]["abs_error"]) < float(summary["none"]["abs_error"]) - 0.1, summary


@pytest.mark.slow
def test_the_significance_tests_use_the_plugin_metrics_direction(finished_study):
    """abs_error is lower-is-better: the comparison's best method has the lowest error, and the
    trained methods (about half the untrained head's error) are significantly better than `none`
    by the within-example permutation test on the plugin's per-example errors (one seed). With the direction
    ignored the best would be the highest error and nothing would beat `none`."""
    table = (finished_study / "results" / "report" / "tables" / "sts.md").read_text()
    comp = {r["cell"]: r for r in markdown_table(table, "#### Paired comparisons")}
    assert sorted(comp) == ["full", "lora", "none"]
    assert {r["unit"] for r in comp.values()} == {"runs"}  # one seed: the test compares these runs
    best = [m for m, r in comp.items() if r["diff_vs_best"] == "0"]
    assert best == [min(("full", "lora"), key=lambda m: float(comp[m]["score"]))]
    for method in ("full", "lora"):
        assert float(comp[method]["diff_vs_none"]) < 0
        assert comp[method]["better_than_none"] == "True"


def test_a_missing_plugin_is_one_config_error_naming_it(tmp_path, plugin_env):
    config = study(tmp_path, tmp_path)
    config["plugins"].append("no_such_plugin_module")
    write_config(tmp_path / "config.yaml", config)
    proc = run_snakemake(tmp_path, "-n", check=False)
    assert proc.returncode != 0
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if "config error" in line]
    assert errors == ["config error: plugins[1]: cannot import 'no_such_plugin_module' (No module named "
                      "'no_such_plugin_module'); put its folder on PYTHONPATH or install it"], proc.stderr[-2000:]
