"""Retention (issue 20): what fine-tuning cost the pretrained model, on text it should still model.

Two jobs. `measure_base` scores the pretrained model once per (model, retention set) — the
reference of every cell of every task that uses both, whether or not the study has a `none` cell
— into results/retention/base/<model>/<set>/. `measure_cell` scores one reported cell on one set:
its trained model loaded exactly as evaluation loads it (jobs/evaluate.py load_eval_model: the
saved adapters, prompt and prefix tokens active), merged where the method merges for inference,
into <run_dir>/retention/<set>/.

What each model family measures (peftgrid/metrics/retention.py does the arithmetic):
- causal LM (`lm_loss`): the loss per token of each document (BOS, where the model uses one, then
  the text; no prompt), every token after the first scored;
- seq2seq (`lm_loss`): the document as the decoder target of an empty source (the tokenizer's own
  special tokens only): what the decoder still knows of the language without the task's input;
- encoders of label tasks (`mlm_loss`): when the checkpoint ships a masked-LM head, the masked-LM
  loss through the fine-tuned encoder with that pretrained head (the same masks for base and
  cell); without one (`cka_only`, e.g. sentence-transformers' MiniLM) no loss is measured;
- every model: linear CKA between the base's and the cell's hidden states on the unmasked text,
  per layer (per_layer.tsv) and overall (the mean over the blocks, metrics.tsv `cka`).

THE FILES (column names: peftgrid/columns.py; paths: peftgrid/plan/retention.py):
<run_dir>/retention/<set>/metrics.tsv, one row (columns.RETENTION):
  task, method, variant, seed, retention_set, measure (lm_loss | mlm_loss | cka_only),
  retention_loss (mean nats per scored token over all documents, fine-tuned), base_loss (the
  pretrained model's on the same tokens), retention_loss_delta (retention_loss - base_loss;
  positive = forgot), retention_loss_rel (delta / base_loss), cka (1 = unchanged), n_documents,
  n_tokens (scored tokens; cka_only: tokens read), retention_time_s (loading the cell's model and
  scoring it: never training time), status (ok | failed), error. The loss columns are blank for
  cka_only; a failed cell (training failed, or the measurement itself) has status failed, its
  reason, and blank values — it never stops the study.
<run_dir>/retention/<set>/per_document.tsv (columns.RETENTION_DOCUMENT): document (index in the
  set), n_tokens, loss, base_loss, delta — nats per token of that document, for paired tests.
  Header only for cka_only and failed cells.
<run_dir>/retention/<set>/per_layer.tsv (columns.RETENTION_LAYER): layer (0 = the embedding
  output, 1..L = the blocks), cka.
The base reference has metrics.tsv (model, retention_set, measure, base_loss, n_documents,
n_tokens, retention_time_s), per_document.tsv (document, n_tokens, loss) and hidden.safetensors
(its hidden states at the CKA token sample, one tensor per layer).
"""
from __future__ import annotations

import time
import traceback
from pathlib import Path

from ..columns import CELL, FAILED, OK, RETENTION, RETENTION_BASE, RETENTION_BASE_DOCUMENT, RETENTION_DOCUMENT, RETENTION_LAYER
from ..engine.device import pick_device
from ..errors import DataError, Preempted, first_line
from ..metrics import retention as measure
from ..plan.retention import BASE_FILES, CKA_ONLY, LM_LOSS, MLM_LOSS
from ..plan.specs import RetentionBaseSpec, RetentionSpec
from ..records import read_json, read_tsv, write_tsv
from ..staging.datasets import retention_documents
from ..staging.models import NO_REMOTE_CODE, verify_staged
from ..tasks import task_type

BATCH_SIZE = 8  # documents per forward pass; the base and every cell use the same batches (bit-equal sums)


# --------------------------------------------------------------------------- scoring one model

def load_mlm_head(model_dir: Path, allow_pickle: bool, device):
    """The checkpoint's pretrained masked-LM head as `head(last_hidden, input_ids, attention_mask) ->
    logits`, or None when the checkpoint ships none (its MLM head weights would be freshly
    initialised) or the architecture has no masked-LM class."""
    return load_mlm_encoder_and_head(model_dir, allow_pickle, device)[1]


def load_mlm_encoder_and_head(model_dir: Path, allow_pickle: bool, device):
    """(the pretrained encoder, its masked-LM head as load_mlm_head gives it) from one load of the
    checkpoint as a masked-LM model; either is None where the checkpoint lacks its weights (or the
    architecture has no masked-LM class). The head is the model's own forward after its encoder,
    with the encoder replaced by the hidden states given."""
    import torch
    from transformers import AutoModelForMaskedLM
    from transformers.modeling_outputs import BaseModelOutput

    try:
        mlm, info = AutoModelForMaskedLM.from_pretrained(model_dir, output_loading_info=True,
                                                         use_safetensors=None if allow_pickle else True, **NO_REMOTE_CODE)
    except ValueError:  # "Unrecognized configuration class ... for AutoModelForMaskedLM"
        return None, None
    prefix = mlm.base_model_prefix
    encoder = None if any(k.startswith(f"{prefix}.") for k in info["missing_keys"]) else getattr(mlm, prefix)
    if any(not k.startswith(f"{prefix}.") for k in info["missing_keys"]):
        return encoder, None

    class Given(torch.nn.Module):
        hidden = None

        def forward(self, *args, **kwargs):
            return BaseModelOutput(last_hidden_state=self.hidden)

    given = Given()
    setattr(mlm, prefix, given)
    mlm.to(device).eval()

    def head(hidden, input_ids, attention_mask):
        given.hidden = hidden
        return mlm(input_ids=input_ids, attention_mask=attention_mask).logits
    return encoder, head


def _lm_forward(model, family: str):
    def forward(input_ids, attention_mask, labels):
        extra = {"labels": labels} if family == "seq2seq" else {}  # the decoder reads its shifted targets
        out = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True, **extra)
        return out.logits, out.decoder_hidden_states if family == "seq2seq" else out.hidden_states
    return forward


def _encoder_forward(encoder, head=None):
    def forward(input_ids, attention_mask, labels):
        hidden = encoder(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True).hidden_states
        if head is None:
            return None, hidden
        return head(hidden[-1][:, -input_ids.shape[1]:], input_ids, attention_mask), None
    return forward


def score_model(family: str, model, head, tokenizer, docs: list[str], max_length: int, device) -> dict:
    """One model on the documents: `measure`, per document `counts` (scored tokens) and `losses`
    (mean nats per token; None without a loss), `lengths` (tokens read) and `hidden` (the CKA sample).
    `model`: the whole model (causal, seq2seq) or the encoder (label tasks); `head`: load_mlm_head's."""
    from ..tasks.generation import CausalLM, special_wrap

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    if family in ("causal", "seq2seq"):
        if family == "causal":
            bos = CausalLM.bos(tokenizer)
            ids = [(bos + x)[:max_length] for x in tokenizer(docs, add_special_tokens=False)["input_ids"]]
            examples = [measure.causal_example(x) for x in ids]
        else:
            before, after = special_wrap(tokenizer)
            source = before + after or [tokenizer.eos_token_id if tokenizer.eos_token_id is not None else pad]
            targets = tokenizer(text_target=docs, truncation=True, max_length=max_length)["input_ids"]
            examples = [measure.seq2seq_example(source, t) for t in targets]
        lengths = [len(e["labels"]) for e in examples]
        out = measure.score(_lm_forward(model, family), examples, BATCH_SIZE, pad, device,
                            positions=measure.cka_positions(lengths))
        kind = LM_LOSS
    else:
        enc = tokenizer(docs, truncation=True, max_length=max_length, return_special_tokens_mask=True)
        lengths = [len(x) for x in enc["input_ids"]]
        out = measure.score(_encoder_forward(model), [measure.plain_example(x) for x in enc["input_ids"]], BATCH_SIZE,
                            pad, device, losses=False, positions=measure.cka_positions(lengths))
        kind = CKA_ONLY
        if head is not None:
            masked = [measure.mlm_example(x, s, tokenizer.mask_token_id, seed=d)
                      for d, (x, s) in enumerate(zip(enc["input_ids"], enc["special_tokens_mask"]))]
            out.update({k: v for k, v in measure.score(_encoder_forward(model, head), masked, BATCH_SIZE, pad,
                                                       device).items() if k in ("sums", "counts")})
            kind = MLM_LOSS
    losses = None if kind == CKA_ONLY else [s / c if c else None for s, c in zip(out["sums"], out["counts"])]
    counts = lengths if kind == CKA_ONLY else out["counts"]
    return {"measure": kind, "losses": losses, "counts": counts, "hidden": out["hidden"]}


def mean_loss(losses: list, counts: list[int]) -> float:
    """Mean nats per token over all documents, computed from the per-document means (the base's
    stored form), so the base and a cell go through the same arithmetic."""
    scored = [(x, n) for x, n in zip(losses, counts) if n]
    return sum(x * n for x, n in scored) / sum(n for _, n in scored)


# --------------------------------------------------------------------------- the base reference

def base_paths(out_dir: Path) -> dict[str, Path]:
    return {k: Path(out_dir) / v for k, v in BASE_FILES.items()}


def measure_base(spec: RetentionBaseSpec, model_dir: Path, data_dir: Path, out_dir: Path) -> dict:
    """Never raises for the measurement's own failure: the reference says failed and why (every
    cell measured against it then says so too), and the rest of the study goes on."""
    try:
        return _measure_base(spec, model_dir, data_dir, out_dir)
    except (Preempted, KeyboardInterrupt):
        raise
    except Exception as e:
        from safetensors.torch import save_file

        traceback.print_exc()
        paths = base_paths(out_dir)
        paths["hidden"].parent.mkdir(parents=True, exist_ok=True)
        save_file({}, str(paths["hidden"]))
        write_tsv(paths["per_document"], [], list(RETENTION_BASE_DOCUMENT))
        row = {"model": spec.model["name"], "retention_set": spec.retention["name"], "status": FAILED,
               "error": first_line(e, limit=300)}
        write_tsv(paths["metrics"], [row], list(RETENTION_BASE))
        return row


def _measure_base(spec: RetentionBaseSpec, model_dir: Path, data_dir: Path, out_dir: Path) -> dict:
    from safetensors.torch import save_file
    from transformers import AutoModel, AutoTokenizer

    verify_staged(model_dir)
    device = pick_device()
    rset, allow_pickle = spec.retention, spec.model.get("allow_pickle", False)
    ttype = task_type(spec.task["type"])
    docs = retention_documents(data_dir, rset)
    started = time.perf_counter()
    tokenizer = ttype.prepare_tokenizer(AutoTokenizer.from_pretrained(model_dir, **NO_REMOTE_CODE))
    head = None
    if spec.family == "encoder":  # the encoder of the masked-LM model, whose head is read too: one load
        model, head = load_mlm_encoder_and_head(model_dir, allow_pickle, device)
        if model is None:
            model = AutoModel.from_pretrained(model_dir, use_safetensors=None if allow_pickle else True, **NO_REMOTE_CODE)
    else:
        model, _ = ttype.load_pretrained(model_dir, [], allow_pickle)
    model.to(device).eval()
    result = score_model(spec.family, model, head, tokenizer, docs, rset["max_length"], device)
    seconds = time.perf_counter() - started
    paths = base_paths(out_dir)
    paths["hidden"].parent.mkdir(parents=True, exist_ok=True)
    save_file({f"layer{i}": h.contiguous() for i, h in enumerate(result["hidden"])}, str(paths["hidden"]))
    rows = [{"document": d, "n_tokens": n, "loss": x} for d, (x, n) in
            enumerate(zip(result["losses"] or [None] * len(docs), result["counts"]))]
    write_tsv(paths["per_document"], rows, list(RETENTION_BASE_DOCUMENT))
    row = {"model": spec.model["name"], "retention_set": rset["name"], "measure": result["measure"],
           "base_loss": None if result["losses"] is None else mean_loss(result["losses"], result["counts"]),
           "n_documents": len(docs), "n_tokens": sum(result["counts"]), "retention_time_s": round(seconds, 3),
           "status": OK, "error": None}
    write_tsv(paths["metrics"], [row], list(RETENTION_BASE))
    return row


# --------------------------------------------------------------------------- one cell

def write_cell(spec: RetentionSpec, out: dict[str, Path], row: dict, documents_rows=(), layer_rows=()) -> dict:
    row = {**{k: spec.cell[k] for k in CELL}, "retention_set": spec.retention["name"], **row}
    write_tsv(out["per_document"], list(documents_rows), list(RETENTION_DOCUMENT))
    write_tsv(out["per_layer"], list(layer_rows), list(RETENTION_LAYER))
    write_tsv(out["metrics"], [row], list(RETENTION))
    return row


def measure_cell(spec: RetentionSpec, model_dir: Path, trained_dir: Path, data_dir: Path, run_json: Path,
                 base_dir: Path, out: dict[str, Path]) -> dict:
    """`out`: metrics, per_document, per_layer paths. Never raises for a cell's own failure (training
    failed, the model does not load or run): the row says failed and why, and the study goes on."""
    run = read_json(run_json)
    if run["status"] != OK:
        return write_cell(spec, out, {"status": FAILED, "error": run["error"]})
    try:
        return _measure_cell(spec, model_dir, trained_dir, data_dir, run, base_dir, out)
    except (Preempted, KeyboardInterrupt):
        raise
    except Exception as e:  # one cell's failure is its row's, never the study's
        traceback.print_exc()
        return write_cell(spec, out, {"status": FAILED, "error": first_line(e, limit=300)})


def _measure_cell(spec, model_dir, trained_dir, data_dir, run, base_dir, out) -> dict:
    from safetensors.torch import load_file

    from ..methods import method_of
    from ..methods.heads import LinearProbe
    from .evaluate import load_eval_model

    rset, hp = spec.retention, spec.hparams
    base = base_paths(base_dir)
    base_row = read_tsv(base["metrics"])[0]
    if base_row.get("status") == FAILED:
        raise DataError(f"the pretrained model's reference on retention set {rset['name']!r} failed: {base_row['error']}")
    base_docs = read_tsv(base["per_document"])
    docs = retention_documents(data_dir, rset)
    verify_staged(model_dir)
    device = pick_device()
    method = method_of(hp["kind"])
    method.import_libraries()
    started = time.perf_counter()
    model, tokenizer = load_eval_model(spec, model_dir, trained_dir, run.get("labels", []), device)
    model = (method.merged_for_inference(model) or model).eval()  # as deployed: adapters merged where they merge
    head = None
    if spec.family == "encoder":
        model = model.encoder if isinstance(model, LinearProbe) else model
        if base_row["measure"] == MLM_LOSS:
            head = load_mlm_head(model_dir, spec.model.get("allow_pickle", False), device)
    result = score_model(spec.family, model, head, tokenizer, docs, rset["max_length"], device)
    seconds = time.perf_counter() - started
    if [int(r["n_tokens"]) for r in base_docs] != result["counts"] or result["measure"] != base_row["measure"]:
        raise DataError(f"retention set {rset['name']!r}: this cell's documents or tokens differ from the base "
                        f"reference's ({base['metrics'].parent}); re-run rule retention_base")
    base_hidden = load_file(str(base["hidden"]))
    per_layer = measure.layer_ckas([base_hidden[f"layer{i}"] for i in range(len(base_hidden))], result["hidden"])
    row = {"measure": result["measure"], "cka": _round(measure.overall_cka(per_layer)), "n_documents": len(docs),
           "n_tokens": sum(result["counts"]), "retention_time_s": round(seconds, 3), "status": OK, "error": None}
    doc_rows = []
    if result["losses"] is not None:
        base_losses = [float(r["loss"]) if r["loss"] != "" else None for r in base_docs]
        loss, base_loss = mean_loss(result["losses"], result["counts"]), mean_loss(base_losses, result["counts"])
        row.update(retention_loss=_round(loss), base_loss=_round(base_loss), retention_loss_delta=_round(loss - base_loss),
                   retention_loss_rel=_round((loss - base_loss) / base_loss))
        doc_rows = [{"document": d, "n_tokens": n, "loss": x, "base_loss": b, "delta": x - b}
                    for d, (x, b, n) in enumerate(zip(result["losses"], base_losses, result["counts"])) if n]
    layer_rows = [{"layer": i, "cka": _round(c)} for i, c in enumerate(per_layer)]
    return write_cell(spec, out, row, doc_rows, layer_rows)


def _round(x):
    return None if x is None else round(x, 6)
