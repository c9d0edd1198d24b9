"""One cell on one eval set: predictions, quality metrics and inference cost."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from . import methods
from .measure import PhaseMeter, autocast, pick_device
from .metrics import classification_metrics
from .records import atomic_write_text, device_description, read_json, write_tsv
from .tasks import check_labels, collate, encode_classification, load_task_rows
from .training import batch_order, to_device


def metrics_row(params: dict, **values) -> dict:
    cell = params["cell"]
    return {"task": cell["task"], "method": cell["method"], "variant": cell["variant"], "seed": cell["seed"],
            "eval": params["eval"]["name"], "decoding": "", **values}


def evaluate_cell(params: dict, model_dir: Path, trained_dir: Path, data_dir: Path, run_json: Path,
                  metrics_path: Path, predictions_path: Path) -> dict:
    run = read_json(run_json)
    if run["status"] != "ok":
        row = metrics_row(params, status="failed", error=run["error"], device=run["device"])
        atomic_write_text(predictions_path, "")
        write_tsv(metrics_path, [row])
        return row
    task, hp, ev = params["task"], params["hparams"], params["eval"]
    labels = run["labels"]
    rows = load_task_rows(task, data_dir, ev["split"], ev["name"], ev["dataset"])
    check_labels(rows, task["columns"]["label"], labels, f"eval set {ev['name']!r}")

    from transformers import AutoTokenizer

    device = pick_device()
    methods.check_device(hp["kind"], device)
    tokenizer = AutoTokenizer.from_pretrained(Path(trained_dir) / "tokenizer")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    examples = encode_classification(rows, tokenizer, task["columns"], labels, hp["max_length"])
    model = methods.load_trained(model_dir, trained_dir, task["type"], labels, hp, device,
                                 params["model"].get("allow_pickle", False))
    if hp["kind"] != "qlora":
        model.to(device)
    model.eval()
    preds = [0] * len(examples)
    probs = [None] * len(examples)
    order = batch_order([len(e["input_ids"]) for e in examples], hp["eval_batch_size"], None, True)
    meter = PhaseMeter(device)
    with meter, torch.no_grad():
        outputs = []
        for idx in order:
            batch = to_device(collate([examples[i] for i in idx], pad_id), device)
            batch.pop("labels")
            with autocast(device, hp["precision"]):
                logits = model(**batch).logits
            outputs.append((idx, logits.float().softmax(-1)))  # kept on the device until the end
        for idx, p in outputs:
            p = p.cpu()
            for j, i in enumerate(idx):
                probs[i] = p[j]
                preds[i] = int(p[j].argmax())
    gold = [e["labels"] for e in examples]
    scores = classification_metrics(gold, preds, len(labels), task["metrics"])
    text_col, label_col = task["columns"]["text"], task["columns"]["label"]
    atomic_write_text(predictions_path, "".join(
        json.dumps({"text": r[text_col], "label": str(r[label_col]), "prediction": labels[p],
                    "confidence": round(float(probs[i][p]), 4)}, ensure_ascii=False) + "\n"
        for i, (r, p) in enumerate(zip(rows, preds))))
    row = metrics_row(params, status="ok", error=None, n_examples=len(examples), **scores,
                      infer_throughput=round(len(examples) / meter.seconds, 2),
                      infer_time_s=round(meter.seconds, 3), peak_infer_mem_mb=round(meter.peak_mem_mb, 1),
                      device=device_description(device))
    write_tsv(metrics_path, [row])
    return row
