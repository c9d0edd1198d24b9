"""Weight distances, Pareto fronts and seed aggregates on hand-made inputs (recommendations:
test_verdicts.py)."""
import math

import pandas as pd
import pytest
import torch

from peftgrid.methods import method_of
from peftgrid.report.analysis import aggregate_seeds, pareto_front
from peftgrid.report.distances import component, tensor_distances, weight_distance


def test_weight_distance_on_known_tensors():
    base = {"bert.embeddings.word_embeddings.weight": torch.zeros(2, 2),
            "bert.encoder.layer.0.attention.self.query.weight": torch.zeros(3),
            "bert.encoder.layer.1.output.dense.weight": torch.ones(4),
            "classifier.weight": torch.zeros(2)}
    tuned = {"bert.embeddings.word_embeddings.weight": torch.tensor([[3.0, 0.0], [0.0, 4.0]]),   # 5
             "bert.encoder.layer.0.attention.self.query.weight": torch.tensor([1.0, 2.0, 2.0]),  # 3
             "bert.encoder.layer.1.output.dense.weight": torch.ones(4),                          # 0
             "classifier.weight": torch.tensor([6.0, 8.0])}                                      # 10
    assert weight_distance(base, tuned) == pytest.approx((5 + 3 + 0 + 10) / 4)
    named = weight_distance(base, tuned, ["embeddings", "layer_first", "layer_last", "head",
                                          "classifier.weight"])
    assert named == pytest.approx({"embeddings": 5, "layer_first": 3, "layer_last": 0, "head": 10,
                                   "classifier.weight": 10})
    with pytest.raises(KeyError):
        weight_distance(base, tuned, ["decoder"])


def test_components_of_a_twelve_layer_encoder():
    assert component("bert.encoder.layer.0.attention.self.query.weight", 12) == "layer_first"
    assert component("bert.encoder.layer.6.output.dense.bias", 12) == "layer_middle"
    assert component("bert.encoder.layer.11.output.dense.bias", 12) == "layer_last"
    assert component("bert.encoder.layer.3.output.dense.bias", 12) == "layer_3"
    assert component("bert.pooler.dense.weight", 12) == "pooler"
    assert component("classifier.weight", 12) == "head"
    assert component("bert.embeddings.LayerNorm.weight", 12) == "embeddings"


def test_merged_lora_distance_is_the_norm_of_its_update(tiny_bert):
    import peft
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=3)
    reference = {k: v.clone() for k, v in base.state_dict().items()}
    model = peft.get_peft_model(base, peft.LoraConfig(task_type=peft.TaskType.SEQ_CLS, r=4, lora_alpha=8))
    layer = model.base_model.model.bert.encoder.layer[1].attention.self.query
    with torch.no_grad():
        layer.lora_B["default"].weight.normal_()  # B starts at zero: give the adapter an update
        update = (layer.lora_B["default"].weight @ layer.lora_A["default"].weight) * layer.scaling["default"]
    rows = {r["name"]: r["distance"] for r in tensor_distances(reference, method_of("lora").merged_state(model))}
    assert rows["bert.encoder.layer.1.attention.self.query.weight"] == pytest.approx(float(update.norm()), rel=1e-5)
    assert rows["bert.encoder.layer.0.attention.self.query.weight"] == 0.0
    assert rows["bert.encoder.layer.1.attention.self.key.weight"] == 0.0


def test_pareto_front_on_a_known_table():
    df = pd.DataFrame({"name": list("abcdef"),
                       "quality": [0.90, 0.85, 0.80, 0.70, 0.86, 0.60],
                       "cost": [100, 10, 1, 1, 50, 0.5]})
    front = pareto_front(df, "quality", "cost")
    assert set(df.loc[front, "name"]) == {"a", "b", "c", "e", "f"}
    df.loc[1, "quality"] = 0.95  # b now dominates a and e
    assert set(df.loc[pareto_front(df, "quality", "cost"), "name"]) == {"b", "c", "f"}
    # lower is better (a loss): the front runs the other way
    df["quality"] = -df["quality"]
    assert set(df.loc[pareto_front(df, "quality", "cost", higher_is_better=False), "name"]) == {"b", "c", "f"}


def summary_rows():
    rows = []
    for method, variant, accs, params, pct, secs in [
            ("full", "default", [0.92, 0.93, 0.94], 1e8, 100.0, 300.0),
            ("lora", "r=8", [0.925, 0.93, 0.935], 3e5, 0.3, 100.0),
            ("lora", "r=2", [0.90, 0.90, 0.91], 8e4, 0.08, 90.0),
            ("none", "default", [0.3, 0.3, 0.3], 0.0, 0.0, 0.0)]:
        for seed, acc in zip((1, 2, 3), accs):
            rows.append({"task": "emotion", "method": method, "variant": variant, "seed": seed, "eval": "test",
                         "decoding": "", "status": "ok", "error": "", "accuracy": acc, "trainable_params": params,
                         "trainable_pct": pct, "train_time_s": secs, "time_per_epoch_s": secs / 3,
                         "peak_train_mem_mb": 1000.0, "peak_infer_mem_mb": 500.0, "infer_throughput": 100.0})
    rows.append({**rows[0], "method": "qlora", "variant": "default", "status": "failed",
                 "error": "CellFailure: qlora needs a CUDA GPU", "accuracy": None})
    return pd.DataFrame(rows)


def test_seed_aggregates():
    agg = aggregate_seeds(summary_rows(), ["accuracy"])
    full = agg[agg["method"] == "full"].iloc[0]
    assert full["n"] == 3 and full["accuracy"] == pytest.approx(0.93)
    assert full["accuracy_std"] == pytest.approx(0.01)
    assert full["accuracy_ci95"] == pytest.approx(4.302653 * 0.01 / math.sqrt(3), rel=1e-5)
    qlora = agg[agg["method"] == "qlora"].iloc[0]
    assert qlora["status"] == "failed" and "CUDA" in qlora["error"]
