"""One cell on one eval set: predictions, quality metrics, a per-label table and inference cost."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from . import methods
from .measure import PhaseMeter, autocast, pick_device
from .metrics import classification_metrics, per_label_table
from .records import atomic_write_text, device_description, read_json, write_tsv
from .tasks import check_labels, collate, encode, is_token_task, load_task_rows
from .training import batch_order, to_device

PER_LABEL_COLUMNS = ["label", "precision", "recall", "f1", "support"]


def metrics_row(params: dict, **values) -> dict:
    cell = params["cell"]
    return {"task": cell["task"], "method": cell["method"], "variant": cell["variant"], "seed": cell["seed"],
            "eval": params["eval"]["name"], "decoding": params.get("decoding", {}).get("name", ""), **values}


def write_failed(params: dict, run: dict, metrics_path: Path, predictions_path: Path,
                 per_label_path: Path | None = None) -> dict:
    """A cell whose training failed: its eval outputs carry the failure and its reason."""
    row = metrics_row(params, status="failed", error=run["error"], device=run["device"])
    atomic_write_text(predictions_path, "")
    write_tsv(metrics_path, [row])
    if per_label_path:
        write_tsv(per_label_path, [], PER_LABEL_COLUMNS)
    return row


@torch.no_grad()
def predict(model, examples: list[dict], batch_size: int, pad_id: int, device, precision: str):
    """Per example: the argmax label id (sequence tasks) or the ids at each word's first
    subword (token tasks), and the confidence of each prediction. Returns (preds, conf, meter)."""
    preds, confs = [None] * len(examples), [None] * len(examples)
    order = batch_order([len(e["input_ids"]) for e in examples], batch_size, None, True)
    meter = PhaseMeter(device)
    outputs = []
    with meter:
        for idx in order:
            batch = to_device(collate([examples[i] for i in idx], pad_id), device)
            batch.pop("labels")
            with autocast(device, precision):
                logits = model(**batch).logits
            outputs.append((idx, logits.float().softmax(-1).max(-1)))  # stays on the device until the end
    for idx, (p, i_max) in outputs:
        p, i_max = p.cpu(), i_max.cpu()
        for j, i in enumerate(idx):
            if "word_positions" in examples[i]:
                pos = examples[i]["word_positions"]
                preds[i], confs[i] = i_max[j, pos].tolist(), p[j, pos].tolist()
            else:
                preds[i], confs[i] = int(i_max[j]), float(p[j])
    return preds, confs, meter


def evaluate_cell(params: dict, model_dir: Path, trained_dir: Path, data_dir: Path, run_json: Path,
                  metrics_path: Path, predictions_path: Path, per_label_path: Path | None = None) -> dict:
    run = read_json(run_json)
    if run["status"] != "ok":
        return write_failed(params, run, metrics_path, predictions_path, per_label_path)
    task, hp, ev = params["task"], params["hparams"], params["eval"]
    labels = run["labels"]
    rows = load_task_rows(task, data_dir, ev["split"], ev["name"], ev["dataset"])
    check_labels(task, rows, labels, f"eval set {ev['name']!r}")

    from transformers import AutoTokenizer

    device = pick_device()
    methods.check_device(hp["kind"], device)
    tokenizer = AutoTokenizer.from_pretrained(Path(trained_dir) / "tokenizer")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    examples = encode(task, rows, tokenizer, labels, hp["max_length"])
    model = methods.load_trained(model_dir, trained_dir, task["type"], labels, hp, device,
                                 params["model"].get("allow_pickle", False))
    if hp["kind"] != "qlora":
        model.to(device)
    model.eval()
    preds, confs, meter = predict(model, examples, hp["eval_batch_size"], pad_id, device, hp["precision"])

    label2id = {name: i for i, name in enumerate(labels)}
    gold_ids, pred_ids, lines = [], [], []
    if is_token_task(task):
        tok_col, tag_col = task["columns"]["tokens"], task["columns"]["tags"]
        words = [[None] * len(r[tok_col]) for r in rows]
        for ex, p, c in zip(examples, preds, confs):
            for k, (pid, conf) in enumerate(zip(p, c)):
                words[ex["row"]][ex["first_word"] + k] = (labels[pid], conf)
        for r, predicted in zip(rows, words):
            tags = [str(t) for t in r[tag_col]]
            for gold, (pred, _) in zip(tags, predicted):
                if gold in label2id:  # unseen tags (unseen_labels: ignore) stay out of the metrics
                    gold_ids.append(label2id[gold])
                    pred_ids.append(label2id[pred])
            lines.append({"id": r.get("sent_id"), "tokens": r[tok_col], "tags": tags,
                          "predictions": [p for p, _ in predicted]})
        n_units = sum(len(r[tok_col]) for r in rows)
    else:
        text_col, label_col = task["columns"]["text"], task["columns"]["label"]
        for r, pid, conf in zip(rows, preds, confs):
            gold = str(r[label_col])
            if gold in label2id:
                gold_ids.append(label2id[gold])
                pred_ids.append(pid)
            lines.append({"text": r[text_col], "label": gold, "prediction": labels[pid], "confidence": round(conf, 4)})
        n_units = len(rows)
    scores = classification_metrics(gold_ids, pred_ids, len(labels), task["metrics"])
    atomic_write_text(predictions_path, "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines))
    if per_label_path:
        write_tsv(per_label_path, per_label_table(gold_ids, pred_ids, labels), PER_LABEL_COLUMNS)
    row = metrics_row(params, status="ok", error=None, n_examples=len(rows), n_scored=len(gold_ids), **scores,
                      infer_throughput=round(len(rows) / meter.seconds, 2),
                      infer_time_s=round(meter.seconds, 3), peak_infer_mem_mb=round(meter.peak_mem_mb, 1),
                      device=device_description(device))
    if is_token_task(task):
        row["infer_words_per_s"] = round(n_units / meter.seconds, 2)
    write_tsv(metrics_path, [row])
    return row
