"""Label tasks: sequence classification here, token classification in tokens.py. Both predict
a label per unit (example or word) and share the label order, the unseen-label check and
evaluation (predictions, confidence, per-label table)."""
from __future__ import annotations

from ..errors import DataError
from .base import TaskType

IGNORE = -100  # label id the loss and the metrics skip


class LabelTask(TaskType):
    metric_kind = "label"

    def label_values(self, task: dict, rows: list[dict]) -> set[str]:
        raise NotImplementedError

    def label_list(self, task, train_rows, meta):
        """The label order: the config's `labels`, else the dataset's class names, else sorted."""
        seen = self.label_values(task, train_rows)
        if "labels" in task:
            labels = [str(x) for x in task["labels"]]
            extra = sorted(seen - set(labels))
            if extra:
                raise DataError(f"training data has labels not in tasks.labels: {', '.join(extra)}")
            return labels
        names = meta.get("class_names", {}).get(self.label_column(task))
        if names:
            return [str(x) for x in names]
        return sorted(seen)

    def label_column(self, task: dict) -> str:
        raise NotImplementedError

    def check_labels(self, task, rows, labels, where):
        unseen = sorted(self.label_values(task, rows) - set(labels))
        if unseen and task.get("unseen_labels", "error") == "error":
            import difflib

            shown = ", ".join(map(repr, unseen[:10])) + (" ..." if len(unseen) > 10 else "")
            typo = next((close[0] for u in unseen if "labels" in task
                         for close in [difflib.get_close_matches(u, labels, n=1, cutoff=0.8)] if close), None)
            fix = (f"tasks.labels lists {typo!r}: if that is a typo, write the label as the data does" if typo else
                   "set unseen_labels: ignore in the task to leave them out of the metrics")
            raise DataError(f"{where}: labels {shown} never occur in training (known: {', '.join(labels)}); {fix}")

    def per_label_rows(self, evaluated, labels):
        from ..metrics.classification import per_label_table

        return per_label_table(evaluated["gold"], evaluated["pred"], labels)

    def head_kwargs(self, labels):
        id2label = dict(enumerate(labels))
        return {"num_labels": len(labels), "id2label": id2label, "label2id": {v: k for k, v in id2label.items()}}

    def predict(self, model, examples: list[dict], batch_size: int, pad_id: int, device, precision: str):
        """Per example: the argmax label id(s) and confidence(s). Returns (preds, confs, meter)."""
        import torch

        from ..engine.batching import batch_order, collate, to_device
        from ..engine.device import PhaseMeter, autocast

        preds, confs = [None] * len(examples), [None] * len(examples)
        order = batch_order([len(e["input_ids"]) for e in examples], batch_size, None, True)
        meter = PhaseMeter(device)
        outputs = []
        done = 0
        with meter, torch.no_grad():
            for idx in order:
                batch = to_device(collate([examples[i] for i in idx], pad_id), device)
                batch.pop("labels")
                with autocast(device, precision):
                    logits = model(**batch).logits
                outputs.append((idx, logits.float().softmax(-1).max(-1)))  # stays on the device until the end
                done += len(idx)
                if len(outputs) % 20 == 0 or done == len(examples):
                    print(f"predicted {done}/{len(examples)} examples", flush=True)
        for idx, (p, i_max) in outputs:
            p, i_max = p.cpu(), i_max.cpu()
            for j, i in enumerate(idx):
                preds[i], confs[i] = self.unpack(examples[i], p[j], i_max[j])
        return preds, confs, meter

    def unpack(self, example, probs, argmax):
        return int(argmax), float(probs)

    def evaluate(self, task: dict, model, tokenizer, rows: list[dict], labels: list[str], hp: dict, device) -> dict:
        """Predictions, gold/predicted ids over the scored units, and the inference meter."""
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        examples = self.encode(task, rows, tokenizer, labels, hp["max_length"])
        preds, confs, meter = self.predict(model, examples, hp["eval_batch_size"], pad_id, device, hp["precision"])
        return {"meter": meter, **self.score_units(task, rows, examples, preds, confs, labels)}


class SequenceClassification(LabelTask):
    name = "sequence_classification"
    required_columns = frozenset({"text", "label"})
    optional_columns = frozenset({"text_pair"})
    default_metrics = ("accuracy", "f1_macro", "precision_macro", "recall_macro")
    auto_class = "AutoModelForSequenceClassification"
    peft_task_type = "SEQ_CLS"
    short_name = "seq-cls"
    own_keys = frozenset({"labels", "unseen_labels"})

    def label_column(self, task):
        return task["columns"]["label"]

    def label_values(self, task, rows):
        return {str(r[task["columns"]["label"]]) for r in rows}

    def check_rows(self, task, rows, where):
        column = task["columns"]["label"]
        blank = next((i for i, r in enumerate(rows) if not str(r[column]).strip()), None)
        if blank is not None:  # it would become a class named ''
            raise DataError(f"{where} row {blank + 1}: column {column!r} (columns.label) is blank; a blank label is not "
                            f"a class: fill it in or remove the row")

    def encode(self, task, rows, tokenizer, labels, max_length):
        """Tokenise once, unpadded: batches are padded to their own longest example."""
        columns = task["columns"]
        label2id = {name: i for i, name in enumerate(labels)}
        texts = [str(r[columns["text"]]) for r in rows]
        pairs = [str(r[columns["text_pair"]]) for r in rows] if "text_pair" in columns else None
        enc = tokenizer(texts, pairs, truncation=True, max_length=max_length)
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
        out = []
        for i, r in enumerate(rows):
            ex = {k: enc[k][i] for k in keys}
            ex["labels"] = label2id.get(str(r[columns["label"]]), IGNORE)
            ex["row"] = i
            out.append(ex)
        return out

    def score_units(self, task, rows, examples, preds, confs, labels):
        label2id = {name: i for i, name in enumerate(labels)}
        text_col, label_col = task["columns"]["text"], task["columns"]["label"]
        gold_ids, pred_ids, lines = [], [], []
        for r, pid, conf in zip(rows, preds, confs):
            gold = str(r[label_col])
            if gold in label2id:  # unseen labels (unseen_labels: ignore) stay out of the metrics
                gold_ids.append(label2id[gold])
                pred_ids.append(pid)
            lines.append({"text": r[text_col], "label": gold, "prediction": labels[pid], "confidence": round(conf, 4),
                          "correct": int(gold == labels[pid])})
        return {"gold": gold_ids, "pred": pred_ids, "predictions": lines, "units": len(rows)}
