"""COMET for real, on a tiny checkpoint built here: a RegressionMetric over a 2-layer BERT with a
WordPiece vocabulary trained on the spot (random weights, no hub), saved in the layout
`comet.load_from_checkpoint` reads (hparams.yaml + checkpoints/model.ckpt). The task's COMET job
scores every cell with one model load; a failed or missing cell gets a status, not a crash; and
(slow) the workflow scores a tiny translation study with it into summary.tsv."""
from __future__ import annotations

import csv
import importlib.util
import json
import math

import pytest

from conftest import en_ru_pairs, require, run_snakemake, shared, write_config


def build_tiny_comet(out, corpus: list[str]):
    """A real COMET regression model, tiny and random: the folder comet.source may point at."""
    import pytorch_lightning as ptl
    import torch
    import yaml
    from comet.models import RegressionMetric

    from conftest import build_tiny_bert

    encoder = build_tiny_bert(out / "encoder", corpus)  # tokenizer + config + random weights, local files only
    torch.manual_seed(0)
    model = RegressionMetric(encoder_model="BERT", pretrained_model=str(encoder), hidden_sizes=[16], dropout=0.0,
                             layer="mix", pool="avg", load_pretrained_weights=True, local_files_only=True)
    hparams = dict(model.hparams)
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": hparams,
                "pytorch-lightning_version": ptl.__version__}, out / "checkpoints" / "model.ckpt")
    (out / "hparams.yaml").write_text(yaml.safe_dump({**hparams, "class_identifier": "regression_metric"}))
    return out


@pytest.fixture(scope="module")
def tiny_comet(tmp_path_factory):
    require(importlib.util.find_spec("comet") is not None, 'unbabel-comet is not installed (pip install -e ".[test]")')
    pairs = en_ru_pairs(300)
    return build_tiny_comet(tmp_path_factory.mktemp("tiny_comet"), [p["en"] for p in pairs] + [p["ru"] for p in pairs])


def write_predictions(path, pairs, hypothesis):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"source": p["en"], "references": [p["ru"]], "hypothesis": hypothesis(p)},
                                       ensure_ascii=False) + "\n" for p in pairs), encoding="utf-8")
    return path


def cell(method):
    return {"task": "mt", "method": method, "variant": "default", "seed": 1}


def test_one_model_load_scores_every_cell_and_failed_cells_do_not_stop_it(tiny_comet, tmp_path, monkeypatch):
    import comet

    from peftgrid.jobs.comet import score_task
    from peftgrid.metrics.comet import stage_comet
    from peftgrid.plan.specs import CometSpec
    from peftgrid.records import read_tsv

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("PEFTGRID_DEVICE", "cpu")
    staged = stage_comet({"source": str(tiny_comet)}, tmp_path / "staged")
    assert staged["checkpoint"] == str(tiny_comet / "checkpoints" / "model.ckpt") and staged["reason"] is None
    from peftgrid.metrics import comet as peftgrid_comet

    loads = []
    real_load = peftgrid_comet.load_comet_checkpoint
    monkeypatch.setattr(peftgrid_comet, "load_comet_checkpoint", lambda *a, **k: loads.append(a) or real_load(*a, **k))

    pairs = en_ru_pairs(20)[10:16]
    spec = CometSpec(task="mt", batch_size=4, cells=[cell("exact"), cell("failed"), cell("garbage"), cell("missing")],
                     evals=["test"], decodings=["greedy", "sample"])
    files = {"exact": lambda p: p["ru"], "garbage": lambda p: "qqq zzz xxx"}
    monkeypatch.chdir(tmp_path)  # the job reads each file where the spec's cell puts it
    for c, ev, dec, rel in spec.files():
        path = tmp_path / rel
        if c["method"] in files:
            write_predictions(path, pairs, files[c["method"]])
        elif c["method"] == "failed":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("")  # what evaluation writes for a cell whose training failed

    def run(out, cache=None):
        record = score_task(spec, tmp_path / "staged" / "staged.json", out / "scores.tsv",
                            out / "examples.tsv", cache)
        return record, read_tsv(out / "scores.tsv"), read_tsv(out / "examples.tsv")

    record, rows, examples = run(tmp_path / "a")
    assert len(loads) == 1 and record["model_loads"] == 1 and record["files"] == 8 and record["ok"] == 4
    by = {(r["method"], r["decoding"]): r for r in rows}
    assert len(by) == 8
    for dec in ("greedy", "sample"):
        assert by[("failed", dec)]["comet"] == "" and by[("failed", dec)]["comet_status"] == "no predictions (the cell failed)"
        assert by[("missing", dec)]["comet"] == "" and "no predictions file" in by[("missing", dec)]["comet_status"]
    exact, garbage = float(by[("exact", "greedy")]["comet"]), float(by[("garbage", "greedy")]["comet"])
    assert math.isfinite(exact) and math.isfinite(garbage)
    assert abs(exact - garbage) > 1e-4  # a random model: the sign is arbitrary, but the input matters
    assert by[("exact", "greedy")]["comet"] == by[("exact", "sample")]["comet"]  # same hypotheses, same score
    # per-example scores, line-aligned with predictions.jsonl; their mean is the system score
    mine = [float(e["comet"]) for e in examples if (e["method"], e["decoding"]) == ("exact", "greedy")]
    assert [int(e["example"]) for e in examples if (e["method"], e["decoding"]) == ("exact", "greedy")] == list(range(6))
    assert len(examples) == 4 * 6 and sum(mine) / len(mine) == pytest.approx(exact)
    assert len(set(mine)) > 1  # segment scores depend on the segment

    # re-scoring is deterministic; with the cache an unchanged file is never scored again
    again = run(tmp_path / "b", cache=tmp_path / "cache")
    assert again[1] == rows and again[2] == examples and again[0]["model_loads"] == 1
    cached = run(tmp_path / "c", cache=tmp_path / "cache")
    assert cached[0]["model_loads"] == 0 and cached[0]["scored"] == 0 and cached[1] == rows
    assert len(loads) == 2


class _Payload:
    """Unpickling it writes a file: what a checkpoint carrying code could do when loaded."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_comet_checkpoint_is_read_as_weights_only(tiny_comet, tmp_path, monkeypatch):
    """A COMET checkpoint carrying a pickled object is refused, not run — explicitly, so even where
    torch's default is turned off (TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1, as comet's own loader leaves
    it to the default). The clean tiny checkpoint loads and scores as before."""
    import shutil

    import torch

    from peftgrid.metrics.comet import CometScorer, load_comet_checkpoint

    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    assert load_comet_checkpoint(tiny_comet / "checkpoints" / "model.ckpt") is not None
    bad = tmp_path / "bad"
    shutil.copytree(tiny_comet, bad)
    ckpt = bad / "checkpoints" / "model.ckpt"
    state = torch.load(ckpt, weights_only=True)
    state["hyper_parameters"]["extra"] = _Payload(tmp_path / "ran")
    torch.save(state, ckpt)
    scorer = CometScorer({"source": str(bad), "checkpoint": str(ckpt), "reason": None}, batch_size=4)
    row, scores = scorer.score([{"source": "Hi", "references": ["Привет"], "hypothesis": "Привет"}])
    assert not (tmp_path / "ran").exists(), "the checkpoint's pickled code ran"
    assert row["comet"] is None and scores == [] and row["comet_status"].startswith("COMET model could not be loaded")
    assert "weights_only" in row["comet_status"] or "Unpickl" in row["comet_status"], row["comet_status"]


def test_a_broken_checkpoint_is_every_files_status_not_a_crash(tmp_path, monkeypatch):
    from peftgrid.jobs.comet import score_task
    from peftgrid.plan.specs import CometSpec
    from peftgrid.records import read_tsv, write_json

    (tmp_path / "ckpt" / "checkpoints").mkdir(parents=True)
    (tmp_path / "ckpt" / "checkpoints" / "model.ckpt").write_text("not a checkpoint")
    write_json(tmp_path / "staged.json", {"source": "x", "checkpoint": str(tmp_path / "ckpt" / "checkpoints" / "model.ckpt"),
                                          "reason": None})
    spec = CometSpec(task="mt", batch_size=4, cells=[cell("a"), cell("b")], evals=["test"], decodings=["greedy"])
    monkeypatch.chdir(tmp_path)
    for *_, path in spec.files():
        write_predictions(tmp_path / path, [{"en": "Hi", "ru": "Привет"}], lambda p: "Привет")
    record = score_task(spec, tmp_path / "staged.json", tmp_path / "s.tsv", tmp_path / "e.tsv")
    rows = read_tsv(tmp_path / "s.tsv")
    assert record["model_loads"] == 0 and len(rows) == 2 and read_tsv(tmp_path / "e.tsv") == []
    assert all(r["comet"] == "" and r["comet_status"].startswith("COMET model could not be loaded") for r in rows)


def test_an_encoder_the_offline_job_could_not_load_is_reported_at_staging(tiny_comet, tmp_path, monkeypatch):
    """COMET builds its encoder from hparams.yaml's pretrained_model: staging fetches a hub
    encoder's tokenizer and config (the scoring jobs are offline), and says so when it cannot."""
    import shutil

    import yaml

    from peftgrid.metrics.comet import stage_comet

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    staged = stage_comet({"source": str(tiny_comet)}, tmp_path / "ok")
    assert staged["encoder"] == str(tiny_comet / "encoder")  # a local folder: used as it is
    other = tmp_path / "hub_encoder"
    shutil.copytree(tiny_comet / "checkpoints", other / "checkpoints")
    hparams = yaml.safe_load((tiny_comet / "hparams.yaml").read_text())
    (other / "hparams.yaml").write_text(yaml.safe_dump({**hparams, "pretrained_model": "no-such-org/no-such-encoder"}))
    staged = stage_comet({"source": str(other)}, tmp_path / "hub")
    assert staged["checkpoint"] is None
    assert "encoder 'no-such-org/no-such-encoder' (tokenizer and config) cannot be had" in staged["reason"]


@pytest.mark.slow
def test_the_workflow_scores_a_translation_study_with_one_load_per_task(tiny_comet, tiny_gpt2, tmp_path):
    news = {"en": str(shared("en_ru_parallel", "wmt_newstest", "newstest2014.en-ru.en")),
            "ru": str(shared("en_ru_parallel", "wmt_newstest", "newstest2014.en-ru.ru"))}
    config = {
        "models": {"gpt2": {"source": str(tiny_gpt2)}},
        "datasets": {"en_ru": {"format": "parallel", "splits": {"train": news}, "split_ratio": {"train": 0.8, "test": 0.2}}},
        "tasks": {"translate": {"type": "causal_lm", "model": "gpt2", "dataset": "en_ru",
                                "columns": {"source": "en", "target": "ru"}, "prompt": "English: {source}\nRussian: ",
                                "max_new_tokens": 6, "decoding": {"greedy": {}, "sample": {"do_sample": True, "seed": 1}},
                                "eval": {"test": {"split": "test"}}, "metrics": ["chrf", "comet"],
                                "max_examples": {"train": 16, "test": 6}}},
        "training": {"epochs": 1, "batch_size": 8, "max_length": 64},
        "comet": {"source": str(tiny_comet), "batch_size": 4},
        "experiments": [{"tasks": ["translate"], "methods": ["none", "qlora"]}],  # qlora fails on CPU
    }
    write_config(tmp_path / "config.yaml", config)
    run_snakemake(tmp_path, "--keep-going", "results/summary.tsv")  # the summary: no report jobs
    log = (tmp_path / "logs" / "comet" / "translate.log").read_text()
    assert log.count("COMET model loaded from") == 1, log[-3000:]
    scores = list(csv.DictReader(open(tmp_path / "results" / "comet" / "translate" / "scores.tsv"), delimiter="\t"))
    assert len(scores) == 2 * 2  # every cell x decoding, from one job
    rows = list(csv.DictReader(open(tmp_path / "results" / "summary.tsv"), delimiter="\t"))
    assert len(rows) == 4
    ok = [r for r in rows if r["status"] == "ok"]
    failed = [r for r in rows if r["status"] != "ok"]
    assert {r["method"] for r in ok} == {"none"} and {r["method"] for r in failed} == {"qlora"}
    assert all(math.isfinite(float(r["comet"])) and r["comet_status"] == "ok" for r in ok)
    assert all(r["comet"] == "" and r["comet_status"] == "no predictions (the cell failed)" for r in failed)
    table = {(r["method"], r["decoding"]): r["comet"] for r in scores}
    assert all(table[(r["method"], r["decoding"])] == r["comet"] for r in rows)  # the summary reads the job's table
    assert len({r["comet"] for r in ok}) == 2  # greedy and sampled translations score differently
    examples = list(csv.DictReader(open(tmp_path / "results" / "comet" / "translate" / "examples.tsv"), delimiter="\t"))
    assert len(examples) == 2 * 6 and {e["method"] for e in examples} == {"none"}


def test_when_the_one_pass_fails_each_file_is_scored_alone(tmp_path):
    """Out of memory on the whole task, or one file the model chokes on: the others still get scores."""
    from peftgrid.metrics.comet import CometScorer

    ckpt = tmp_path / "model.ckpt"
    ckpt.write_text("x")

    class Model:
        calls = []

        def predict(self, data, **_):
            self.calls.append(len(data))
            if any(x["mt"] == "BOOM" for x in data):
                raise RuntimeError("CUDA out of memory")
            return type("P", (), {"scores": [len(x["mt"]) / 10 for x in data]})()

    scorer = CometScorer({"checkpoint": str(ckpt), "reason": None}, batch_size=2)
    scorer.model = Model()
    line = lambda mt: {"source": "s", "references": ["r"], "hypothesis": mt}
    out = scorer.score_many([[line("ab"), line("abcd")], [line("BOOM")], None, ValueError("bad json"), [line("ab"), line("abcd")]])
    assert Model.calls == [3, 2, 1]  # one pass over the two distinct files, then each alone
    assert out[0] == ({"comet": 30.0, "comet_status": "ok", "n_scored": 2}, [20.0, 40.0]) and out[4] == out[0]
    assert out[1][0]["comet"] is None and "CUDA out of memory" in out[1][0]["comet_status"]
    assert "generation job did not finish" in out[2][0]["comet_status"]
    assert "unreadable predictions: ValueError: bad json" in out[3][0]["comet_status"]
