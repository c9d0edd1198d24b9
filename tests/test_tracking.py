"""MLflow export (`tracking:`): a hand-written finished study is exported into a local store under
tmp_path and read back with MLflow's own client — runs, params, final metrics, the loss curve as
metric history, run.json as an artifact, the failed cell's status; a second export adds no run.
The default store (an SQLite database in the study directory) reads back as a user reads it: a
plain `mlflow.search_runs` in a fresh process, with no setting.
The plan: `rule all` asks for results/tracking.json only when `tracking:` is set, and editing it
changes the track rule's params only."""
import json
import os
import subprocess
import sys

import pytest

from conftest import run_snakemake, shared, write_config
from peftgrid.errors import ConfigError, UserError
from peftgrid.jobs.track import TrackingError, cell_metrics, export_study, loss_curve, resolve_uri
from peftgrid.plan import build_run_table, validate_config
from peftgrid.plan import specs
from peftgrid.records import write_json, write_tsv

mlflow = pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402

LORA = {"task": "emotion", "method": "lora", "variant": "r=8", "seed": 42}
FULL = {"task": "emotion", "method": "full", "variant": "default", "seed": 42}
LOG = [  # step 0: validation only; then training steps; step 20 both
    {"step": 0, "epoch": 0.0, "train_loss": "", "val_loss": 1.9, "lr": 0.0},
    {"step": 10, "epoch": 0.5, "train_loss": 1.75, "val_loss": "", "lr": 1e-4},
    {"step": 20, "epoch": 1.0, "train_loss": 1.25, "val_loss": 1.4, "lr": 5e-5},
]


def fake_study(root, uri=None):
    """Two finished cells as training/evaluation/summary leave them: lora ok, full failed (OOM).
    `uri`: the store (default: an SQLite database in `root`)."""
    cells = []
    for ident, status, error in [(LORA, "ok", None), (FULL, "failed", "out of memory (OutOfMemoryError: CUDA); try a smaller batch_size")]:
        d = root / "results/runs" / ident["task"] / ident["method"] / ident["variant"] / f"seed{ident['seed']}"
        hp = {"kind": ident["method"], "lr": 1e-4 if ident["method"] == "lora" else 2e-5, "seed": 42, "batch_size": 16,
              "target_modules": ["query", "value"], "max_steps": None}
        stats = {"status": status, "error": error, "device": "cpu:2threads", "trainable_params": 1000 if status == "ok" else None,
                 "total_params": 50000, "trainable_pct": 2.0, "train_time_s": 12.5, "steps": 20,
                 "final_train_loss": 1.25 if status == "ok" else None}
        write_json(d / "run.json", {"cell": ident, "hparams": hp, "status": status, "error": error, "stats": stats,
                                    "model": {"name": "tiny", "allow_pickle": False}, "device": "cpu:2threads"})
        write_tsv(d / "train_log.tsv", LOG if status == "ok" else [], ["step", "epoch", "train_loss", "val_loss", "reg_loss", "lr", "elapsed_s"])
        cells.append((ident, d))
    rows = []
    for ident, d in cells:
        ok = ident is LORA
        for ev, acc in (("dev", 0.61), ("test", 0.5825)):
            rows.append({**ident, "eval": ev, "decoding": "", "status": "ok" if ok else "failed",
                         "error": "" if ok else "out of memory", "accuracy": acc if ok else "",
                         "f1_macro": 0.4 if ok else "", "trainable_params": 1000 if ok else "", "train_time_s": 12.5,
                         "infer_throughput": 300.0 if ev == "test" else 280.0, "device": "cpu:2threads",
                         "inference_merged": "True", "run_dir": str(d), "hparams": "{}"})
    write_tsv(root / "results/summary.tsv", rows)
    uri = uri or f"sqlite:///{root / 'mlflow.db'}"
    spec = specs.TrackSpec(tracking={"uri": uri, "experiment": "study"}, cells=[LORA, FULL])
    return spec, [d / "run.json" for _, d in cells], [d / "train_log.tsv" for _, d in cells]


def export(root, spec, runs, logs):
    return export_study(spec, root / "results/summary.tsv", runs, logs, root / "results/tracking.json")


def read_back(uri, experiment):
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    return client, {r.data.tags["method"]: r for r in runs}, runs


def test_export_reads_back_with_mlflows_client(tmp_path):
    spec, runs, logs = fake_study(tmp_path)
    record = export(tmp_path, spec, runs, logs)
    assert json.loads((tmp_path / "results/tracking.json").read_text()) == record
    client, by_method, all_runs = read_back(record["tracking_uri"], "study")
    assert len(all_runs) == 2 and set(by_method) == {"lora", "full"}
    assert {r["run_id"] for r in record["runs"]} == {r.info.run_id for r in all_runs}

    lora, full = by_method["lora"], by_method["full"]
    assert lora.info.run_name == "emotion/lora/r=8/42"
    assert lora.data.tags["variant"] == "r=8" and lora.data.tags["seed"] == "42" and lora.data.tags["status"] == "ok"
    assert lora.data.params["lr"] == "0.0001" and full.data.params["lr"] == "2e-05"
    assert json.loads(lora.data.params["target_modules"]) == ["query", "value"]
    assert lora.data.params["max_steps"] == "null"
    # final metrics: per eval set, prefixed; training costs once, unprefixed
    assert lora.data.metrics["test.accuracy"] == pytest.approx(0.5825)
    assert lora.data.metrics["dev.accuracy"] == pytest.approx(0.61)
    assert lora.data.metrics["test.infer_throughput"] == 300.0 and lora.data.metrics["dev.infer_throughput"] == 280.0
    assert lora.data.metrics["trainable_params"] == 1000 and lora.data.metrics["train_time_s"] == 12.5
    assert "test.trainable_params" not in lora.data.metrics and "test.inference_merged" not in lora.data.metrics
    # the loss curve as metric history
    history = client.get_metric_history(lora.info.run_id, "train_loss")
    assert sorted((m.step, m.value) for m in history) == [(10, 1.75), (20, 1.25)]
    val = client.get_metric_history(lora.info.run_id, "val_loss")
    assert sorted((m.step, m.value) for m in val) == [(0, 1.9), (20, 1.4)]
    # run.json as an artifact, byte for byte
    assert [a.path for a in client.list_artifacts(lora.info.run_id)] == ["run.json"]
    # beside the database, wherever the export ran (never ./mlruns under the caller's directory)
    assert len(list((tmp_path / "mlruns").glob("*/artifacts/run.json"))) == 2
    local = client.download_artifacts(lora.info.run_id, "run.json", str(tmp_path / "dl"))
    assert json.loads(open(local).read())["hparams"]["lr"] == 1e-4
    # the failed cell: exported with its status and reason, no quality metric
    assert full.data.tags["status"] == "failed" and full.info.status == "FAILED" and lora.info.status == "FINISHED"
    assert full.data.tags["error"].startswith("out of memory")
    assert "test.accuracy" not in full.data.metrics and full.data.metrics["test.infer_throughput"] == 300.0
    assert client.get_metric_history(full.info.run_id, "train_loss") == []


def test_second_export_adds_no_run_and_a_changed_cell_is_replaced(tmp_path):
    spec, runs, logs = fake_study(tmp_path)
    first = export(tmp_path, spec, runs, logs)
    second = export(tmp_path, spec, runs, logs)
    assert [r["action"] for r in second["runs"]] == ["unchanged", "unchanged"]
    assert [r["run_id"] for r in second["runs"]] == [r["run_id"] for r in first["runs"]]
    _, _, all_runs = read_back(first["tracking_uri"], "study")
    assert len(all_runs) == 2
    # the lora cell re-trained: its run is replaced, the failed cell's kept
    run = json.loads(runs[0].read_text())
    run["hparams"]["lr"] = 3e-4
    write_json(runs[0], run)
    third = export(tmp_path, spec, runs, logs)
    assert [r["action"] for r in third["runs"]] == ["exported", "unchanged"]
    _, by_method, all_runs = read_back(first["tracking_uri"], "study")
    assert len(all_runs) == 2 and by_method["lora"].data.params["lr"] == "0.0003"
    assert by_method["lora"].info.run_id == third["runs"][0]["run_id"] != first["runs"][0]["run_id"]


def test_generation_rows_are_named_eval_decoding_metric():
    rows = [{"task": "mt", "method": "lora", "variant": "default", "seed": "1", "eval": "test", "decoding": "greedy",
             "status": "ok", "error": "", "bleu": "21.5", "chrf": "48.0", "train_time_s": "3.0", "device": "cpu"},
            {"task": "mt", "method": "lora", "variant": "default", "seed": "1", "eval": "test", "decoding": "beam4",
             "status": "ok", "error": "", "bleu": "23.0", "chrf": "nan", "train_time_s": "3.0", "device": "cpu"}]
    m = cell_metrics({"stats": {"train_time_s": 3.0, "status": "ok", "steps": 7}}, rows)
    assert m == {"train_time_s": 3.0, "steps": 7.0, "test.greedy.bleu": 21.5, "test.greedy.chrf": 48.0,
                 "test.beam4.bleu": 23.0}
    assert loss_curve([{"step": "5", "train_loss": "0.5", "val_loss": "", "lr": "0.1"}]) == [("train_loss", 0.5, 5), ("lr", 0.1, 5)]


def test_plain_path_is_a_local_store_and_uris_pass_through(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_uri("mlruns") == (tmp_path / "mlruns").resolve().as_uri()
    assert resolve_uri("stores/a") == (tmp_path / "stores/a").as_uri()
    # a relative SQLite path is the working directory's (the default, sqlite:///mlflow.db), recorded absolute
    assert resolve_uri("sqlite:///mlflow.db") == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    for uri in ("sqlite:////data/mlflow.db", "http://127.0.0.1:5000", "file:///data/mlruns", "databricks"):
        assert resolve_uri(uri) == uri


READ_BACK = """
import json, mlflow
mlflow.set_tracking_uri("sqlite:///mlflow.db")
runs = mlflow.search_runs(experiment_names=["peftgrid"], output_format="list")
print(json.dumps({r.info.run_name: {"status": r.data.tags["status"], "metrics": r.data.metrics} for r in runs}))
"""


def test_the_default_store_reads_back_with_a_plain_search_runs(tmp_path, monkeypatch):
    """`tracking: {}` as the config gives it: the export writes mlflow.db in the study directory, and
    a fresh Python there reads every cell and its metrics back with mlflow.search_runs — no
    MLFLOW_ALLOW_FILE_STORE, which MLflow 3 asks for before it opens its file store."""
    monkeypatch.chdir(tmp_path)  # the study directory: Snakemake runs the job there
    tracking = validate_config(minimal(tracking={}))["tracking"]
    spec, runs, logs = fake_study(tmp_path, uri=tracking["uri"])
    spec = specs.TrackSpec(tracking=tracking, cells=spec.cells)
    record = export(tmp_path, spec, runs, logs)
    assert record["tracking_uri"] == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}" and (tmp_path / "mlflow.db").is_file()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    proc = subprocess.run([sys.executable, "-c", READ_BACK], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(found) == {"emotion/lora/r=8/42", "emotion/full/default/42"}
    lora, full = found["emotion/lora/r=8/42"], found["emotion/full/default/42"]
    assert lora["status"] == "ok" and full["status"] == "failed"
    assert lora["metrics"]["test.accuracy"] == pytest.approx(0.5825) and lora["metrics"]["dev.accuracy"] == pytest.approx(0.61)
    assert lora["metrics"]["train_time_s"] == 12.5 and full["metrics"]["test.infer_throughput"] == 300.0


def test_a_folder_is_mlflows_file_store(tmp_path, monkeypatch):
    """`uri: <folder>` still works: MLflow's file store, which the export opens for itself."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    spec, runs, logs = fake_study(tmp_path, uri=str(tmp_path / "store"))
    record = export(tmp_path, spec, runs, logs)
    assert record["tracking_uri"].startswith("file:") and (tmp_path / "store").is_dir()
    assert len(read_back(record["tracking_uri"], "study")[2]) == 2


def test_without_mlflow_one_line_names_the_extra(tmp_path, monkeypatch):
    spec, runs, logs = fake_study(tmp_path)
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow -> ImportError
    with pytest.raises(TrackingError) as err:
        export(tmp_path, spec, runs, logs)
    assert isinstance(err.value, UserError) and "\n" not in str(err.value)
    assert 'pip install -e ".[tracking]"' in str(err.value)
    assert not (tmp_path / "results/tracking.json").exists()


# ----------------------------------------------------------------------------- the plan

def minimal(**extra):
    return {"models": {"m": {"source": "org/model"}}, "datasets": {"d": {"source": "org/data"}},
            "tasks": {"t": {"type": "sequence_classification", "model": "m", "dataset": "d",
                            "columns": {"text": "text", "label": "label"}}},
            "experiments": [{"tasks": ["t"], "methods": ["none", "lora"], "seeds": [1, 2]}], **extra}


def test_tracking_section_defaults_and_targets():
    off = validate_config(minimal())
    assert off["tracking"] is None and specs.tracking_targets(off) == []
    on = validate_config(minimal(tracking={}))
    assert on["tracking"] == {"uri": "sqlite:///mlflow.db", "experiment": "peftgrid"}
    assert specs.tracking_targets(on) == ["results/tracking.json"] == [specs.TRACKING_RECORD]
    cells = build_run_table(on)
    spec = specs.track_spec(on, cells)
    assert spec.cells == [c.ident for c in cells] and len(spec.cells) == 4
    assert specs.TrackSpec.from_params(spec.to_params()) == spec
    with pytest.raises(ConfigError, match="tracking.*token.*unknown key"):
        validate_config(minimal(tracking={"token": "x"}))


def test_editing_tracking_changes_the_track_params_only():
    a = validate_config(minimal(tracking={}))
    b = validate_config(minimal(tracking={"uri": "http://mlflow:5000", "experiment": "x"}))
    cells_a, cells_b = build_run_table(a), build_run_table(b)
    assert specs.track_spec(a, cells_a).to_params() != specs.track_spec(b, cells_b).to_params()
    for ca, cb in zip(cells_a, cells_b):
        assert specs.train_spec(a, ca).to_params() == specs.train_spec(b, cb).to_params()
        assert specs.eval_spec(a, ca, "validation").to_params() == specs.eval_spec(b, cb, "validation").to_params()
    assert specs.summary_spec(a, ["t"]).to_params() == specs.summary_spec(b, ["t"]).to_params()
    assert specs.report_spec(a, ["t"]).to_params() == specs.report_spec(b, ["t"]).to_params()
    assert specs.task_report_spec(a, "t", cells_a).to_params() == specs.task_report_spec(b, "t", cells_b).to_params()


@pytest.mark.slow
def test_snakemake_plans_track_only_when_tracking_is_set(tiny_bert, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("train.txt", "val.txt"):
        (data / name).write_text("\n".join(shared("emotion", name).read_text().splitlines()[:40]) + "\n")
    config = {
        "models": {"tiny": {"source": str(tiny_bert)}},
        "datasets": {"emotion": {"format": "csv", "sep": ";", "header": False, "column_names": ["text", "label"],
                                 "splits": {"train": "data/train.txt", "validation": "data/val.txt"}}},
        "tasks": {"emotion": {"type": "sequence_classification", "model": "tiny", "dataset": "emotion",
                              "columns": {"text": "text", "label": "label"}}},
        "experiments": [{"tasks": ["emotion"], "methods": ["none", "lora"]}],
    }

    def planned_jobs():
        write_config(tmp_path / "config.yaml", config)
        proc = run_snakemake(tmp_path, "-n", "--quiet", "rules")
        return proc.stdout + proc.stderr

    without = planned_jobs()
    config["tracking"] = {"uri": "mlruns", "experiment": "newcomer"}
    with_tracking = planned_jobs()
    assert "summary" in without and "summary" in with_tracking
    assert "track" not in without.split()
    assert "track" in with_tracking.split()
    assert not (tmp_path / "results").exists()
