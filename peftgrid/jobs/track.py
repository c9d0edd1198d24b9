"""Export a finished study to MLflow: one run per cell, after the summary, in its own rule.

Each cell becomes one MLflow run named task/method/variant/seed and tagged with its identity and
status (a failed cell carries its error): its hyperparameters as params (flattened, values as
text), every numeric column of its summary rows as metrics (`<eval>.<metric>`, for generation
`<eval>.<decoding>.<metric>`; the cell's training costs unprefixed), its loss curve as metric
history (train_loss, val_loss, reg_loss, lr with step=) and its run.json as an artifact.

Re-running never duplicates runs: each run is tagged `peftgrid_cell` (the cell's run directory)
and `peftgrid_fingerprint` (a hash of what was exported). A run whose fingerprint matches is kept
as it is; a stale one is deleted and exported again.

MLflow is an optional extra (`pip install -e ".[tracking]"`) and is imported only inside these
functions. The default store, `sqlite:///mlflow.db`, is MLflow's embedded SQLite database in the
working directory (the study directory), read back with the same URI and no setting; a plain folder
is MLflow's file store, which MLflow 3 keeps in maintenance mode and opens only when asked to
(MLFLOW_ALLOW_FILE_STORE=true, which this export sets for itself).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
from pathlib import Path

from ..columns import CELL, OK, ROW, ROW_STATUS, TRAIN_COSTS
from ..errors import UserError, first_line
from ..plan.runs import RUN_DIR
from ..records import read_json, read_tsv, write_json

INSTALL_HINT = 'pip install -e ".[tracking]"'
CURVES = ("train_loss", "val_loss", "reg_loss", "lr")  # train_log.tsv columns logged as metric history
# a summary row's identity and text columns: never metrics
ROW_IDENTITY = {*ROW, *ROW_STATUS}
MAX_PARAM_CHARS = 6000
MAX_TAG_CHARS = 5000
BATCH = 100  # params/tags per log_batch call (MLflow's limit); metrics go up to 1000


class TrackingError(UserError):
    """MLflow is missing or the tracking store refused the export."""


def _mlflow():
    try:
        import mlflow  # noqa: F401
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise TrackingError(f"tracking: is set but MLflow is not installed; install it with {INSTALL_HINT}") from None
    return MlflowClient


def resolve_uri(uri: str) -> str:
    """Where the export goes, as an absolute URI (tracking.json records it): an SQLite database on a
    relative path (the default `sqlite:///mlflow.db`) relative to the working directory; a plain
    path, MLflow's file store in that folder; any other URI as given."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())
    if uri == "databricks" or (re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", uri) and not re.match(r"^[A-Za-z]:[\\/]", uri)):
        return uri  # file:, sqlite:, http(s):, databricks ... as given
    return Path(uri).resolve().as_uri()


def _quiet_local_store(uri: str) -> None:
    if uri.startswith("file:"):
        # a folder the user chose: MLflow 3 keeps the file store in maintenance mode and refuses it
        # unless asked for (the README tells the user the same setting to read it back)
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # cluster jobs may have no network


def flatten(d: dict, prefix: str = "") -> dict[str, str]:
    """Nested settings as flat `a.b` keys with text values (lists and None as JSON)."""
    out = {}
    for k, v in sorted(d.items()):
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{key}."))
        elif isinstance(v, str):
            out[key] = v
        else:
            out[key] = json.dumps(v, sort_keys=True)
    return out


def _key(name: str) -> str:
    """MLflow keys allow letters, digits, _ - . space / : only."""
    return re.sub(r"[^A-Za-z0-9_\-. /:]", "_", name)


def _number(value) -> float | None:
    if value is None or isinstance(value, bool) or value == "":
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def cell_metrics(run: dict, rows: list[dict]) -> dict[str, float]:
    """Final metrics of one cell: its training costs unprefixed, each summary row's numeric
    columns as `<eval>.<metric>` or `<eval>.<decoding>.<metric>`."""
    stats = run.get("stats") or {}
    train_keys = set(stats) | set(TRAIN_COSTS)  # logged once, unprefixed
    out: dict[str, float] = {}
    for k, v in stats.items():
        x = _number(v)
        if x is not None and k not in ROW_IDENTITY:
            out[_key(k)] = x
    for row in rows:
        prefix = row["eval"] + (f".{row['decoding']}" if row.get("decoding") else "")
        for k, v in row.items():
            if k in ROW_IDENTITY or k is None:
                continue
            x = _number(v)
            if x is None:
                continue
            if k in train_keys:
                out.setdefault(_key(k), x)
            else:
                out[_key(f"{prefix}.{k}")] = x
    return out


def loss_curve(log_rows: list[dict]) -> list[tuple[str, float, int]]:
    """(metric, value, step) for every logged point of the loss curve (and the learning rate)."""
    points = []
    for r in log_rows:
        step = _number(r.get("step"))
        if step is None:
            continue
        for name in CURVES:
            x = _number(r.get(name))
            if x is not None:
                points.append((name, x, int(step)))
    return points


def _fingerprint(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _cell_rows(summary: list[dict], ident: dict) -> list[dict]:
    key = (ident["task"], ident["method"], ident["variant"], str(ident["seed"]))
    return [r for r in summary if (r["task"], r["method"], r["variant"], str(r["seed"])) == key]


def artifact_root(uri: str) -> str | None:
    """Where a new experiment keeps its artifacts: beside an SQLite database, in `mlruns/` (MLflow's
    own default is ./mlruns under whatever the working directory is); elsewhere the store's default."""
    if uri.startswith("sqlite:////"):
        return (Path(uri[len("sqlite:///"):]).parent / "mlruns").as_uri()
    return None


def _experiment_id(client, name: str, artifacts: str | None = None) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is None:
        return client.create_experiment(name, artifact_location=artifacts)
    if exp.lifecycle_stage == "deleted":
        client.restore_experiment(exp.experiment_id)
    return exp.experiment_id


def _log(client, run_id: str, params: dict, metrics: list, tags: dict) -> None:
    from mlflow.entities import Metric, Param, RunTag

    params = [Param(k, v[:MAX_PARAM_CHARS]) for k, v in params.items()]
    tags = [RunTag(k, v) for k, v in tags.items()]
    for i in range(0, len(params), BATCH):
        client.log_batch(run_id, params=params[i:i + BATCH])
    for i in range(0, len(tags), BATCH):
        client.log_batch(run_id, tags=tags[i:i + BATCH])
    now = int(time.time() * 1000)
    metrics = [Metric(k, v, now, step) for k, v, step in metrics]
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i:i + 1000])


def export_cell(client, experiment_id: str, ident: dict, run_file, log_file, rows: list[dict]) -> dict:
    """Export one cell (or keep its run when nothing changed); returns its entry in tracking.json."""
    run = read_json(run_file)
    log_rows = read_tsv(log_file) if log_file and Path(log_file).exists() else []
    cell_dir = RUN_DIR.format(**ident)
    status = run.get("status") or "unknown"
    params = flatten(run.get("hparams") or {})
    finals = cell_metrics(run, rows)
    curve = loss_curve(log_rows)
    fingerprint = _fingerprint(run, log_rows, rows)
    name = "/".join(str(ident[k]) for k in CELL)
    entry = {"cell": ident, "dir": cell_dir, "run_name": name, "status": status}

    existing = client.search_runs([experiment_id], f"tags.peftgrid_cell = '{cell_dir}'", max_results=1000)
    keep = [r for r in existing if r.data.tags.get("peftgrid_fingerprint") == fingerprint]
    for r in existing:
        if not keep or r.info.run_id != keep[0].info.run_id:
            client.delete_run(r.info.run_id)  # stale or duplicate: replaced, never repeated
    if keep:
        return {**entry, "run_id": keep[0].info.run_id, "action": "unchanged"}

    tags = {"task": ident["task"], "method": ident["method"], "variant": ident["variant"], "seed": str(ident["seed"]),
            "status": status, "peftgrid_cell": cell_dir, "peftgrid_fingerprint": fingerprint}
    if run.get("error"):
        tags["error"] = str(run["error"])[:MAX_TAG_CHARS]
    for k in ("device", "git_commit", "started", "finished"):
        if run.get(k):
            tags[f"peftgrid.{k}"] = str(run[k])[:MAX_TAG_CHARS]
    model = run.get("model") or {}
    if model.get("name"):
        tags["model"] = str(model["name"])
    created = client.create_run(experiment_id, run_name=name, tags={"peftgrid_cell": cell_dir})
    run_id = created.info.run_id
    try:
        _log(client, run_id, params, [(k, v, 0) for k, v in finals.items()] + curve, tags)
        client.log_artifact(run_id, str(run_file))
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        client.delete_run(run_id)  # half-exported: the next run of the rule exports it again
        raise
    client.set_terminated(run_id, "FINISHED" if status == OK else "FAILED")
    return {**entry, "run_id": run_id, "action": "exported"}


def export_study(spec, summary_path, run_files: list, log_files: list, out_path=None) -> dict:
    """Export every cell of `spec.cells` (paired by position with `run_files` and `log_files`)
    to the store `spec.tracking["uri"]`, experiment `spec.tracking["experiment"]`; write the run
    ids to `out_path` (results/tracking.json) and return that record."""
    if len(run_files) != len(spec.cells) or len(log_files) != len(spec.cells):
        raise ValueError(f"{len(spec.cells)} cells but {len(run_files)} run.json and {len(log_files)} train_log.tsv files")
    MlflowClient = _mlflow()
    uri = resolve_uri(spec.tracking["uri"])
    _quiet_local_store(uri)
    from mlflow.exceptions import MlflowException

    summary = read_tsv(summary_path)
    try:
        client = MlflowClient(tracking_uri=uri)
        experiment_id = _experiment_id(client, spec.tracking["experiment"], artifact_root(uri))
        runs = [export_cell(client, experiment_id, ident, run_file, log_file, _cell_rows(summary, ident))
                for ident, run_file, log_file in zip(spec.cells, run_files, log_files)]
    except MlflowException as e:
        raise TrackingError(f"tracking.uri {spec.tracking['uri']!r}: MLflow refused the export: "
                            f"{first_line(e, typed=False)}") from None
    record = {"tracking_uri": uri, "experiment": spec.tracking["experiment"], "experiment_id": experiment_id,
              "runs": runs}
    if out_path is not None:
        write_json(out_path, record)
    return record
