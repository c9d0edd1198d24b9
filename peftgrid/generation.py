"""Generation tasks (seq2seq, causal_lm): prompts, labels, the tokenizer coverage check,
decoding strategies and scoring.

Seq2seq: the encoder reads the prompt (a task prefix such as "translate English to Russian:
{source}"), the labels are the target's tokens (padding ignored). Causal LM: one sequence
prompt + target + EOS, the loss only on the target tokens; batched generation pads on the left
and the prompt is cut from the output.
"""
from __future__ import annotations

import json
import unicodedata
from collections import Counter
from pathlib import Path

import torch

from .measure import PhaseMeter, autocast, pick_device
from .records import atomic_write_text, device_description, read_json, write_tsv
from .tasks import IGNORE, load_task_rows
from .textmetrics import generation_metrics

GENERATION_TYPES = ("seq2seq", "causal_lm")


class CoverageError(RuntimeError):
    """The tokenizer cannot write the target language (a recorded cell failure)."""


def source_text(value) -> str:
    """A list-valued source (e.g. the sentences of an abstract) is joined with spaces."""
    return " ".join(map(str, value)) if isinstance(value, list) else str(value)


def references(value) -> list[str]:
    """A list-valued target holds several references for one source."""
    refs = [str(v) for v in value] if isinstance(value, list) else [str(value)]
    return refs or [""]


def prepare_tokenizer(tokenizer):
    """Decoder-only tokenizers often have no pad token: pad with EOS (masked anyway)."""
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def coverage(tokenizer, texts: list[str]) -> tuple[float, list[str]]:
    """Share of the target characters (whitespace excluded) the tokenizer cannot represent —
    mapped to the unknown token or lost in a round trip — and the commonest such characters."""
    counts = Counter(c for t in texts for c in t if not c.isspace())
    total = sum(counts.values())
    if not total:
        return 0.0, []
    unk = tokenizer.unk_token_id
    lost = {}
    for char, n in counts.items():
        ids = tokenizer.encode(char, add_special_tokens=False)
        decoded = tokenizer.decode(ids, skip_special_tokens=True).strip()
        if not ids or (unk is not None and unk in ids) or unicodedata.normalize("NFKC", decoded) != unicodedata.normalize("NFKC", char):
            lost[char] = n
    worst = [c for c, _ in Counter(lost).most_common(8)]
    return sum(lost.values()) / total, worst


def check_coverage(tokenizer, rows: list[dict], task: dict, model_name: str) -> float:
    share, worst = coverage(tokenizer, [t for r in rows for t in references(r[task["columns"]["target"]])])
    if share > task.get("coverage_threshold", 0.02):
        raise CoverageError(f"the tokenizer of model {model_name!r} cannot write {share:.0%} of the target characters "
                            f"(e.g. {' '.join(worst)}); use a model whose vocabulary covers the target language")
    return share


def encode_generation(task: dict, rows: list[dict], tokenizer, max_length: int) -> list[dict]:
    src_col, tgt_col = task["columns"]["source"], task["columns"]["target"]
    prompts = [task["prompt"].format(source=source_text(r[src_col])) for r in rows]
    targets = [references(r[tgt_col])[0] for r in rows]  # training uses the first reference
    out = []
    if task["type"] == "seq2seq":
        enc = tokenizer(prompts, truncation=True, max_length=max_length)
        lab = tokenizer(text_target=targets, truncation=True, max_length=max_length)
        for i in range(len(rows)):
            out.append({"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i],
                        "labels": lab["input_ids"][i], "row": i})
        return out
    p_ids = causal_prompt_ids(tokenizer, prompts, max_length)
    t_ids = tokenizer(targets, add_special_tokens=False)["input_ids"]
    for i, (p, t) in enumerate(zip(p_ids, t_ids)):
        t = (t + [tokenizer.eos_token_id])[: max_length - len(p)]
        out.append({"input_ids": p + t, "attention_mask": [1] * (len(p) + len(t)),
                    "labels": [IGNORE] * len(p) + t, "row": i})
    return out


def causal_prompt_ids(tokenizer, prompts: list[str], max_length: int) -> list[list[int]]:
    """A causal LM's prompt tokens, the same in training and generation: BOS where the tokenizer
    adds one, and a long prompt keeps its end (next to the target) within half of max_length."""
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None and getattr(tokenizer, "add_bos_token", False) else []
    return [bos + p[-(max_length // 2):] for p in tokenizer(prompts, add_special_tokens=False)["input_ids"]]


def pad_prompts(prompts: list[list[int]], pad_id: int, left: bool) -> dict[str, torch.Tensor]:
    """Pad to the longest prompt; decoder-only models generate after the last token, so they pad left."""
    width = max(len(p) for p in prompts)
    pads = [width - len(p) for p in prompts]
    if left:
        return {"input_ids": torch.tensor([[pad_id] * n + p for p, n in zip(prompts, pads)]),
                "attention_mask": torch.tensor([[0] * n + [1] * len(p) for p, n in zip(prompts, pads)])}
    return {"input_ids": torch.tensor([p + [pad_id] * n for p, n in zip(prompts, pads)]),
            "attention_mask": torch.tensor([[1] * len(p) + [0] * n for p, n in zip(prompts, pads)])}


@torch.no_grad()
def generate_all(model, tokenizer, task: dict, rows: list[dict], decoding: dict, max_new_tokens: int,
                 batch_size: int, max_length: int, device, precision: str):
    """Hypotheses for every row, generated tokens, and the phase meter."""
    src_col = task["columns"]["source"]
    prompts = [task["prompt"].format(source=source_text(r[src_col])) for r in rows]
    causal = task["type"] == "causal_lm"
    if causal:
        ids = causal_prompt_ids(tokenizer, prompts, max_length)
    else:
        ids = tokenizer(prompts, truncation=True, max_length=max_length)["input_ids"]
    settings = {k: v for k, v in decoding.items() if k != "seed"}
    if decoding.get("seed") is not None or settings.get("do_sample"):
        torch.manual_seed(decoding.get("seed", 0))
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    hyps, new_tokens = [None] * len(ids), 0
    meter = PhaseMeter(device)
    with meter:
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            batch = pad_prompts([ids[i] for i in idx], tokenizer.pad_token_id, left=causal)
            batch = {k: v.to(device) for k, v in batch.items()}
            with autocast(device, precision):
                out = model.generate(**batch, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                                     eos_token_id=tokenizer.eos_token_id, **settings)
            if causal:
                out = out[:, batch["input_ids"].shape[1]:]  # the prompt is not part of the answer
            texts = tokenizer.batch_decode(out, skip_special_tokens=True)
            for i, text, seq in zip(idx, texts, out):
                hyps[i] = text.strip()
                new_tokens += int((seq != tokenizer.pad_token_id).sum())
    return hyps, new_tokens, meter


def evaluate_generation(params: dict, model_dir: Path, trained_dir: Path, data_dir: Path, run_json: Path,
                        metrics_path: Path, predictions_path: Path) -> dict:
    """One cell, one eval set, one decoding strategy."""
    from . import methods
    from .evaluation import metrics_row, write_failed

    run = read_json(run_json)
    if run["status"] != "ok":
        return write_failed(params, run, metrics_path, predictions_path)
    task, hp, ev = params["task"], params["hparams"], params["eval"]
    rows = load_task_rows(task, data_dir, ev["split"], ev["name"], ev["dataset"])
    from transformers import AutoTokenizer

    device = pick_device()
    methods.check_device(hp["kind"], device)
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(Path(trained_dir) / "tokenizer"))
    model = methods.load_trained(model_dir, trained_dir, task["type"], [], hp, device,
                                 params["model"].get("allow_pickle", False))
    if hp["kind"] != "qlora":
        model.to(device)
    model.eval()
    hyps, new_tokens, meter = generate_all(model, tokenizer, task, rows, params["decoding"]["settings"],
                                           params["max_new_tokens"], hp["eval_batch_size"], hp["max_length"],
                                           device, hp["precision"])
    refs = [references(r[task["columns"]["target"]]) for r in rows]
    scores, per_sentence = generation_metrics(hyps, refs, task["metrics"])
    src_col = task["columns"]["source"]
    atomic_write_text(predictions_path, "".join(
        json.dumps({"source": source_text(r[src_col]), "references": ref, "hypothesis": h,
                    **{k: round(v, 3) for k, v in s.items()}}, ensure_ascii=False) + "\n"
        for r, ref, h, s in zip(rows, refs, hyps, per_sentence)))
    row = metrics_row(params, status="ok", error=None, n_examples=len(rows), **scores,
                      infer_throughput=round(new_tokens / meter.seconds, 2),
                      infer_examples_per_s=round(len(rows) / meter.seconds, 3),
                      generated_tokens=new_tokens, infer_time_s=round(meter.seconds, 3),
                      peak_infer_mem_mb=round(meter.peak_mem_mb, 1), device=device_description(device))
    write_tsv(metrics_path, [row])
    return row
