"""One weight-distance job per task (rules/analysis.smk) keeps the per-cell rerun precision through
its content cache (peftgrid/jobs/distances.py): a retrained or edited cell is measured again, every
other cell is read back from the cache, and readers find a cell's rows by its identity."""
import pytest

from peftgrid.jobs import distances as job
from peftgrid.jobs.summary import intruder_totals
from peftgrid.plan.specs import DistancesSpec
from peftgrid.records import read_tsv, write_json
from peftgrid.report.distances import cell_frames

CELLS = [("lora", "r=2"), ("lora", "r=4"), ("full", "default"), ("ia3", "default")]
FAILED = ("ia3", "default")  # its training failed: no rows, nothing measured


def cell_params(method: str, variant: str, lr: float = 1e-3) -> dict:
    cell = {"task": "emotion", "method": method, "variant": variant, "seed": 42}
    return {"cell": cell, "hparams": {"kind": method, "seed": 42, "lr": lr}, "model": {"name": "tiny", "allow_pickle": False},
            "task": {"type": "sequence_classification"}}


def train(params: dict, loss: float, finished: str) -> None:
    """What the train job leaves: run.json, written last, with its finish time."""
    c = params["cell"]
    status = "failed" if (c["method"], c["variant"]) == FAILED else "ok"
    write_json(f"results/runs/{c['task']}/{c['method']}/{c['variant']}/seed{c['seed']}/run.json",
               {"cell": c, "status": status, "finished": finished, "stats": {"final_train_loss": loss}})


@pytest.fixture
def measured(monkeypatch, tmp_path):
    """Replaces the model loading with a measurement that reads the cell's run.json (so a stale
    cache shows the old run's value) and records which cells were measured."""
    monkeypatch.chdir(tmp_path)
    calls = []

    def fake(spec, model_dir, trained_dir, run):
        calls.append((spec.cell["method"], spec.cell["variant"]))
        loss = run["stats"]["final_train_loss"]
        return [{"name": "encoder.layer.0.attention.self.query.weight", "component": "layer_first", "layer": 0,
                 "numel": 16, "distance": loss, "base_norm": 2.0, "relative": loss / 2.0, "intruders": int(loss * 10),
                 "intruder_k": 10, "intruder_threshold": 0.5}], 0.01

    monkeypatch.setattr(job, "cell_distances", fake)
    return calls


def run_job(cells: list[dict]) -> tuple[dict, list[dict], str]:
    out = "results/distances/emotion.tsv"
    record = job.task_distances(DistancesSpec(task="emotion", cells=cells), "resources/models/tiny", "results/distances/cache", out)
    return record, read_tsv(out), open(out).read()


def by_cell(rows: list[dict]) -> dict[tuple, list[str]]:
    out = {}
    for r in rows:
        out.setdefault((r["method"], r["variant"]), []).append(r["distance"])
    return out


def test_a_retrained_cell_is_measured_again_and_no_other(measured):
    cells = [cell_params(m, v) for m, v in CELLS]
    for i, p in enumerate(cells):
        train(p, loss=0.1 * (i + 1), finished="2026-12-06T10:00:00+00:00")
    record, rows, first = run_job(cells)
    assert sorted(measured) == sorted(c for c in CELLS if c != FAILED) and record["failed"] == 1
    assert by_cell(rows) == {("lora", "r=2"): ["0.1"], ("lora", "r=4"): ["0.2"], ("full", "default"): ["0.30000000000000004"]}
    assert all(r["task"] == "emotion" and r["seed"] == "42" for r in rows)  # the identity columns

    measured.clear()  # unchanged: every row from the cache, the table byte for byte the same
    record, _, again = run_job(cells)
    assert measured == [] and (record["measured"], record["reused"]) == (0, 3) and again == first

    measured.clear()  # lora r=4 trains again (a new run.json): its new distance, the others reused
    train(cells[1], loss=0.7, finished="2026-12-06T11:00:00+00:00")
    record, rows, _ = run_job(cells)
    assert measured == [("lora", "r=4")] and (record["measured"], record["reused"]) == (1, 2)
    assert by_cell(rows)[("lora", "r=4")] == ["0.7"] and by_cell(rows)[("lora", "r=2")] == ["0.1"]

    measured.clear()  # the same run.json under an edited spec is measured again too
    cells[0] = cell_params("lora", "r=2", lr=5e-3)
    record, _, _ = run_job(cells)
    assert measured == [("lora", "r=2")]


def test_readers_find_a_cell_by_identity_not_by_position(measured, tmp_path):
    cells = [cell_params(m, v) for m, v in CELLS]
    for i, p in enumerate(cells):
        train(p, loss=0.1 * (i + 1), finished="2026-12-06T10:00:00+00:00")
    run_job(cells)
    other = tmp_path / "other.tsv"  # a second task's table, in the other order
    rows = read_tsv("results/distances/emotion.tsv")
    other.write_text("\t".join(rows[0]) + "\n" + "".join(
        "\t".join({**r, "task": "cola"}.values()) + "\n" for r in reversed(rows)))
    totals = intruder_totals(["results/distances/emotion.tsv", str(other)])
    assert totals[("emotion", "lora", "r=4", "42")] == 2 and totals[("cola", "lora", "r=4", "42")] == 2
    assert totals[("emotion", "full", "default", "42")] == 3
    assert ("emotion", "ia3", "default", "42") not in totals  # failed: no counted rows, the summary says nothing
    asked = [cells[2]["cell"], cells[3]["cell"], cells[1]["cell"]]  # the report's cell order, not the table's
    frames = cell_frames(other, [{**c, "task": "cola"} for c in asked])
    assert [list(f["distance"]) for f in frames] == [[pytest.approx(0.3)], [], [pytest.approx(0.2)]]
