"""One cell on one eval set, or on its task's selection set (generation: with one decoding
strategy): predictions, quality metrics, a per-label table (label tasks on a reported eval set,
rules/evaluate.smk) and inference cost.

Inference cost, one protocol for every method (`measure_cost`): a warm-up pass over the whole eval
set — for the saved model that is the quality pass itself, for a merged model its own first pass —
then TIMED_REPEATS timed passes over an evenly spaced subset of the eval set (at most TIMED_BATCHES
eval batches' worth of examples, so its length mix is the eval set's); throughput is the median
over the repeats. Peak memory is the highest of those passes (the warm-up covers the eval set's
longest batch), on the basis peftgrid.engine.device defines. Methods that merge their weights
(adapters) are costed as deployed, merged; the unmerged model's figures sit in *_unmerged columns.
An evaluation on the selection set (plan/layout.py scores_a_choice: a grid point, a halving rung)
scores a choice and nothing reports its cost: it runs the quality pass only (`infer_time_s`), and
its throughput and memory columns stay empty — the protocol would be three quarters of its time.
"""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from ..columns import FAILED, OK
from ..engine.device import mark_memory_baseline, pick_device
from ..engine.gpus import GpuClaim
from ..methods import method_of
from ..metrics import compute
from ..plan.layout import TOKENIZER_DIR, scores_a_choice
from ..plan.specs import EvalSpec
from ..staging.models import NO_REMOTE_CODE, verify_staged
from ..records import atomic_write_text, device_description, read_json, write_tsv
from ..tasks import task_type
from ..tasks.generation import references, source_text

PER_LABEL_COLUMNS = ["label", "precision", "recall", "f1", "support"]
TIMED_BATCHES = 4  # the timing subset: at most this many eval batches' worth of examples
TIMED_REPEATS = 3  # timed passes over it, after the warm-up; the median is reported


def metrics_row(spec: EvalSpec, **values) -> dict:
    cell = spec.cell
    return {"task": cell["task"], "method": cell["method"], "variant": cell["variant"], "seed": cell["seed"],
            "eval": spec.eval["name"], "decoding": (spec.decoding or {}).get("name", ""), **values}


def write_failed(spec: EvalSpec, run: dict, metrics_path: Path, predictions_path: Path,
                 per_label_path: Path | None = None) -> dict:
    """A cell whose training failed: its eval outputs carry the failure and its reason."""
    row = metrics_row(spec, status=FAILED, error=run["error"], device=run["device"])
    atomic_write_text(predictions_path, "")
    write_tsv(metrics_path, [row])
    if per_label_path:
        write_tsv(per_label_path, [], PER_LABEL_COLUMNS)
    return row


def load_eval_model(spec: EvalSpec, model_dir: Path, trained_dir: Path, labels: list[str], device):
    from transformers import AutoTokenizer

    hp, ttype, method = spec.hparams, task_type(spec.task["type"]), method_of(spec.hparams["kind"])
    method.check_device(hp, device)
    tokenizer = ttype.prepare_tokenizer(AutoTokenizer.from_pretrained(Path(trained_dir) / TOKENIZER_DIR, **NO_REMOTE_CODE))
    model = method.load(model_dir, trained_dir, ttype, labels, hp, device, spec.model.get("allow_pickle", False))
    model = method.place(model, device)
    model.eval()
    return model, tokenizer


def evaluate_cell(spec: EvalSpec, model_dir: Path, trained_dir: Path, data_dir: Path, run_json: Path,
                  metrics_path: Path, predictions_path: Path, per_label_path: Path | None = None,
                  gpu: GpuClaim | None = None) -> dict:
    """`gpu`: the slot scripts/evaluate.py claimed (peftgrid.engine.gpus); the `device` column names it."""
    run = read_json(run_json)
    if run["status"] != OK:
        return write_failed(spec, run, metrics_path, predictions_path, per_label_path)
    task, hp, ev = spec.task, spec.hparams, spec.eval
    ttype = task_type(task["type"])
    labels = run.get("labels", [])
    rows = ttype.load_rows(task, data_dir, ev["split"], ev.get("max_examples"), ev["dataset"])
    ttype.check_labels(task, rows, labels, f"eval set {ev['name']!r}")
    verify_staged(model_dir)
    device = pick_device()
    method_of(hp["kind"]).import_libraries()
    mark_memory_baseline()  # peak memory counts the model's weights (engine.device)
    t_load = time.perf_counter()
    model, tokenizer = load_eval_model(spec, model_dir, trained_dir, labels, device)
    load_seconds = time.perf_counter() - t_load
    if ttype.generates:
        def run(m, some_rows):
            return ttype.evaluate(task, m, tokenizer, some_rows, [], hp, device, spec.decoding["settings"],
                                  task.get("max_new_tokens", 64))
    else:
        def run(m, some_rows):
            return ttype.evaluate(task, m, tokenizer, some_rows, labels, hp, device)
    out = run(model, rows)  # quality: the trained model exactly as saved
    costed = not _scores_a_choice(run_json, metrics_path)
    if not costed:
        merged, cost = None, quality_pass_only(out)
    else:
        subset = timing_subset(rows, hp["eval_batch_size"])
        saved_cost = measure_cost(run, model, rows, subset, ttype, warm=out)  # the quality pass is its warm-up
        merged = method_of(hp["kind"]).merged_for_inference(model)
        cost = measure_cost(run, merged.eval(), rows, subset, ttype) if merged is not None else saved_cost
    if ttype.generates:
        row, lines = _generation(spec, rows, out, cost)
    else:
        row, lines = _labels(spec, ttype, rows, labels, out, cost, per_label_path)
    row.update(inference_merged=(merged is not None) if costed else None,
               peak_infer_mem_reserved_mb=_mb(cost["peak_reserved_mb"]), eval_load_time_s=round(load_seconds, 3))
    if merged is not None:
        row.update(infer_throughput_unmerged=saved_cost["throughput"],
                   # the saved model's timed repeats; its warm-up, the quality pass, is in infer_time_s
                   infer_time_unmerged_s=round(saved_cost["seconds"] - out["meter"].seconds, 3),
                   peak_infer_mem_unmerged_mb=_mb(saved_cost["peak_mem_mb"]))
        row["infer_time_s"] = round(out["meter"].seconds + cost["seconds"], 3)
    atomic_write_text(predictions_path, "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines))
    row["device"] = device_description(device) + (gpu.describe() if gpu else "")
    write_tsv(metrics_path, [row])
    return row


def _mb(value):
    return None if value is None else round(value, 1)


def _scores_a_choice(run_json: Path, metrics_path: Path) -> bool:
    """Whether this evaluation's directory (relative to its run's) is on the selection set."""
    try:
        evaluation = Path(metrics_path).parent.relative_to(Path(run_json).parent)
    except ValueError:  # not laid out as a run (a caller's own paths): cost it
        return False
    return scores_a_choice(evaluation.as_posix())


def quality_pass_only(out: dict) -> dict:
    """measure_cost's fields for an evaluation that measures no cost: only the quality pass's time."""
    return {"throughput": None, "examples_per_s": None, "words_per_s": None, "peak_mem_mb": None,
            "peak_reserved_mb": None, "seconds": out["meter"].seconds, "measure": ""}


def timing_subset(rows: list[dict], batch_size: int) -> list[dict]:
    """At most TIMED_BATCHES batches' worth of rows, evenly spaced over the eval set (its length mix)."""
    n = min(len(rows), TIMED_BATCHES * batch_size)
    return [rows[i * len(rows) // n] for i in range(n)]


def measure_cost(run, model, rows, subset, ttype, warm=None) -> dict:
    """`model`'s inference cost by the module's protocol: `warm` is its pass over all of `rows`
    already run (else run here), then TIMED_REPEATS timed passes over `subset`. Returns throughput
    (examples/s, or generated tokens/s for generation; the median over the repeats), examples_per_s
    and words_per_s (token tasks) likewise, peak memory over every pass, and `seconds`: every pass."""
    warm = warm if warm is not None else run(model, rows)
    timed = [run(model, subset) for _ in range(TIMED_REPEATS)]
    passes = [warm, *timed]

    def median_rate(units) -> float:
        return round(statistics.median(units(t) / t["meter"].seconds for t in timed), 2)

    reserved = [p["meter"].peak_reserved_mb for p in passes if p["meter"].peak_reserved_mb is not None]
    return {"throughput": median_rate(lambda t: t["generated_tokens"] if ttype.generates else len(subset)),
            "examples_per_s": median_rate(lambda t: len(subset)),
            "words_per_s": median_rate(lambda t: t["units"]) if ttype.per_token else None,
            "peak_mem_mb": max(p["meter"].peak_mem_mb for p in passes),
            "peak_reserved_mb": max(reserved) if reserved else None,
            "seconds": sum(p["meter"].seconds for p in passes), "measure": warm["meter"].measure}


def _labels(spec, ttype, rows, labels, out, cost, per_label_path):
    scores, per_example = compute(spec.task["metrics"], ttype.metric_kind, gold=out["gold"], pred=out["pred"],
                                  num_labels=len(labels), predictions=out["predictions"],
                                  metric_settings=spec.task.get("metric_settings"))
    if per_label_path:
        write_tsv(per_label_path, ttype.per_label_rows(out, labels), PER_LABEL_COLUMNS)
    row = metrics_row(spec, status=OK, error=None, n_examples=len(rows), n_scored=len(out["gold"]), **scores,
                      infer_throughput=cost["throughput"], infer_time_s=round(cost["seconds"], 3),
                      peak_infer_mem_mb=_mb(cost["peak_mem_mb"]), mem_measure=cost["measure"],
                      **out.get("extra", {}))
    if ttype.per_token:
        row["infer_words_per_s"] = cost["words_per_s"]
    if per_example:  # a registered metric's per-example scores (peftgrid.metrics.register)
        return row, [{**line, **{k: round(v, 4) for k, v in s.items()}} for line, s in zip(out["predictions"], per_example)]
    return row, out["predictions"]


def _generation(spec, rows, out, cost):
    task = spec.task
    hyps = out["hypotheses"]
    refs = [references(r[task["columns"]["target"]]) for r in rows]
    scores, per_sentence = compute(task["metrics"], "text", hypotheses=hyps, references=refs, rouge=task.get("rouge"),
                                   metric_settings=task.get("metric_settings"))
    src_col = task["columns"]["source"]
    lines = [{"source": source_text(r[src_col]), "references": ref, "hypothesis": h,
              **{k: round(v, 3) for k, v in s.items()}} for r, ref, h, s in zip(rows, refs, hyps, per_sentence)]
    row = metrics_row(spec, status=OK, error=None, n_examples=len(rows), **scores,
                      infer_throughput=cost["throughput"], infer_examples_per_s=cost["examples_per_s"],
                      generated_tokens=out["generated_tokens"], infer_time_s=round(cost["seconds"], 3),
                      peak_infer_mem_mb=_mb(cost["peak_mem_mb"]), mem_measure=cost["measure"],
                      gen_len_mean=round(out["gen_len_mean"], 2), gen_len_max=out["gen_len_max"],
                      hit_max_new_tokens=round(out["hit_max_new_tokens"], 4),
                      decoding_settings=json.dumps(out["settings"], sort_keys=True))
    return row, lines
