"""The columns of the result files, listed once: what identifies a row and what a cell's costs
are. The jobs write them (train_stats.tsv, metrics.tsv, summary.tsv, the COMET tables); the
report and the tracking export read them. Metric columns come from the metric registry."""
from __future__ import annotations

CELL = ("task", "method", "variant", "seed")         # one training run
ROW = CELL + ("eval", "decoding")                    # one scored output: a cell on an eval set at a decoding
ROW_STATUS = ("status", "error")                     # why a row has no scores
TRAIN_COSTS = ("trainable_params", "total_params", "trainable_pct", "train_time_s", "time_per_epoch_s",
               "peak_train_mem_mb")                  # train_stats.tsv: the same for each eval row of a cell
INFER_COSTS = ("peak_infer_mem_mb", "infer_throughput")  # metrics.tsv: one per eval set and decoding
COSTS = TRAIN_COSTS + INFER_COSTS
