"""The columns of the result files, listed once: what identifies a row and what a cell's costs
are. The jobs write them (train_stats.tsv, metrics.tsv, summary.tsv, the COMET tables); the
report and the tracking export read them. Metric columns come from the metric registry."""
from __future__ import annotations

CELL = ("task", "method", "variant", "seed")         # one training run
ROW = CELL + ("eval", "decoding")                    # one scored output: a cell on an eval set at a decoding
ROW_STATUS = ("status", "error")                     # why a row has no scores
OK = "ok"                                            # the status column's values (a failed row's error: why)
FAILED = "failed"
TRAIN_COSTS = ("trainable_params", "total_params", "trainable_pct", "train_time_s", "time_per_epoch_s",
               "peak_train_mem_mb")                  # train_stats.tsv: the same for each eval row of a cell
INFER_COSTS = ("peak_infer_mem_mb", "infer_throughput")  # metrics.tsv: one per eval set and decoding
COSTS = TRAIN_COSTS + INFER_COSTS

# Retention (issue 20; peftgrid/jobs/retention.py): a cell on one retention set, its documents, its layers
RETENTION_VALUES = ("measure", "retention_loss", "base_loss", "retention_loss_delta", "retention_loss_rel", "cka",
                    "n_documents", "n_tokens", "retention_time_s")
RETENTION = CELL + ("retention_set",) + RETENTION_VALUES + ROW_STATUS   # <run>/retention/<set>/metrics.tsv
RETENTION_DOCUMENT = ("document", "n_tokens", "loss", "base_loss", "delta")  # per_document.tsv (nats/token)
RETENTION_LAYER = ("layer", "cka")                                           # per_layer.tsv (0 = embeddings)
# the pretrained reference, results/retention/base/<model>/<set>/: metrics.tsv and per_document.tsv
RETENTION_BASE = ("model", "retention_set", "measure", "base_loss", "n_documents", "n_tokens", "retention_time_s") + ROW_STATUS
RETENTION_BASE_DOCUMENT = ("document", "n_tokens", "loss")
# summary.tsv: a cell's first retention set under these names (its own status and error beside the row's)
RETENTION_SUMMARY = {c: c if c.startswith("retention_") else f"retention_{c}"
                     for c in ("retention_set",) + RETENTION_VALUES + ROW_STATUS}
INTRUDERS = "intruders"  # results/distances/<task>.tsv per matrix; summary.tsv: the cell's total
