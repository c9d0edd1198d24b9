"""The training loop's fast paths on CPU: torch's fused AdamW (the same losses as the per-tensor
loop, every float dtype), its fallback, the LoRA+ groups, what run.json records about how the steps
ran, the CUDA-only paths leaving CPU behaviour alone, and opt-in torch.compile."""
import json

import pytest
import torch

from conftest import stage_emotion
from peftgrid.engine.batching import to_device
from peftgrid.engine.loop import optimizer_name
from peftgrid.jobs.train import train_cell
from peftgrid.methods import base
from peftgrid.plan import build_run_table, validate_config
from peftgrid.plan.specs import train_spec
from peftgrid.records import read_tsv
from peftgrid.staging.models import stage_model

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def staged(tmp_path_factory, tiny_bert):
    root = tmp_path_factory.mktemp("staged_opt")
    stage_emotion(root / "emo", "train", "validation")
    stage_model("tiny", {"source": str(tiny_bert)}, root / "tiny")
    return root


def train(tiny_bert, staged, out, method, training=None, **settings):
    config = validate_config({
        "models": {"tiny": {"source": str(tiny_bert)}},
        "datasets": {"emo": {"format": "csv", "splits": {"train": "x"}}},
        "tasks": {"emotion": {"type": "sequence_classification", "model": "tiny", "dataset": "emo",
                              "columns": {"text": "text", "label": "label"}, "metrics": ["accuracy"],
                              "eval": {"validation": {"split": "validation"}},
                              "max_examples": {"train": 128, "validation": 32}}},
        "training": {"epochs": 1, "batch_size": 16, "eval_every_steps": 4, "log_every_steps": 1,
                     "checkpoint_every_steps": None, **(training or {})},
        "methods": {method: settings},
        "experiments": [{"tasks": ["emotion"], "methods": [method]}],
    })
    (cell,) = build_run_table(config)
    record = train_cell(train_spec(config, cell), staged / "tiny", {"emo": staged / "emo"}, out)
    assert record["status"] == "ok", record["error"]
    return record, read_tsv(out / "train_log.tsv")


def per_tensor_adamw(groups, lr, paged=False):
    return torch.optim.AdamW(groups, lr=lr, foreach=False, fused=False)  # torch's default path on CPU


@pytest.mark.parametrize("method,settings", [("full", {"lr": 1.0e-3}),
                                             ("lora_plus", {"lr": 2.0e-3, "dropout": 0.0})])
def test_fused_adamw_trains_as_the_per_tensor_loop(tiny_bert, staged, tmp_path, monkeypatch, method, settings):
    fused, fused_log = train(tiny_bert, staged, tmp_path / "fused", method, **settings)
    monkeypatch.setattr(base, "make_adamw", per_tensor_adamw)
    if method == "lora_plus":
        from peftgrid.methods import peft_family
        monkeypatch.setattr(peft_family, "make_adamw", per_tensor_adamw)
    plain, plain_log = train(tiny_bert, staged, tmp_path / "plain", method, **settings)
    assert fused["runtime"]["optimizer"] == "AdamW (fused)"
    assert plain["runtime"]["optimizer"] == "AdamW (for-loop)"
    losses = [(float(a["train_loss"]), float(b["train_loss"])) for a, b in zip(fused_log, plain_log) if a["train_loss"]]
    assert len(losses) == 8 and len(fused_log) == len(plain_log)
    assert losses[0][0] != pytest.approx(losses[-1][0], abs=1e-3)  # it did train: the comparison means something
    for a, b in losses:
        assert a == pytest.approx(b, rel=1e-4, abs=1e-5)
    vals = [(float(a["val_loss"]), float(b["val_loss"])) for a, b in zip(fused_log, plain_log) if a["val_loss"]]
    assert vals and all(a == pytest.approx(b, rel=1e-4, abs=1e-5) for a, b in vals)


def test_run_json_records_how_the_steps_ran(tiny_bert, staged, tmp_path):
    record, _ = train(tiny_bert, staged, tmp_path, "lora", lr=2.0e-3)
    on_disk = json.loads((tmp_path / "run.json").read_text())
    assert on_disk["runtime"] == record["runtime"] == {
        "precision": "fp32",          # auto on a CPU: no autocast
        "attention": "sdpa",          # transformers' fused attention for BERT
        "compiled": False,            # training.compile is off unless set
        "pinned_batches": False,      # CUDA only
        "optimizer": "AdamW (fused)",
    }
    assert "compile" not in on_disk["hparams"]  # absent unless set: existing cells keep their settings
    assert on_disk["gpu"] is None  # train_cell called directly: no claim


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_fused_adamw_on_cpu_for_every_float_dtype(dtype):
    torch.manual_seed(0)
    start = torch.randn(8, 16, dtype=torch.float64)
    results = {}
    for impl in ("fused", "foreach", "reference"):
        w = torch.nn.Parameter(start.to(dtype).clone())
        b = torch.nn.Parameter(torch.zeros(16, dtype=dtype))
        if impl == "reference":  # the same steps in float64
            w, b = (torch.nn.Parameter(t.detach().double()) for t in (w, b))
        make = base.make_adamw if impl == "fused" else lambda g, lr: torch.optim.AdamW(g, lr=lr, foreach=True)
        opt = make([{"params": [w], "weight_decay": 0.01}, {"params": [b], "weight_decay": 0.0}], 1e-2)
        for step in range(5):
            gen = torch.Generator().manual_seed(step)
            w.grad = torch.randn(8, 16, generator=gen, dtype=torch.float64).to(dtype).to(w.dtype)
            b.grad = torch.randn(16, generator=gen, dtype=torch.float64).to(dtype).to(b.dtype)
            opt.step()
        results[impl] = (optimizer_name(opt), w.detach().double(), b.detach().double())
    assert results["fused"][0] == "AdamW (fused)" and results["foreach"][0] == "AdamW (foreach)"
    # equal within a few units of the dtype's precision (fused computes each step in float32 and
    # rounds once; foreach rounds after every op in low precision), and no further from float64
    eps = torch.finfo(dtype).eps
    for i in (1, 2):
        assert torch.allclose(results["fused"][i], results["foreach"][i], rtol=8 * eps, atol=8 * eps)
        err = {k: (results[k][i] - results["reference"][i]).abs().mean() for k in ("fused", "foreach")}
        assert err["fused"] <= err["foreach"] * 1.5 + eps
    assert not torch.equal(results["fused"][1], start.to(dtype).double())  # the weights moved


def test_fused_falls_back_to_foreach_where_it_has_no_kernel():
    p = torch.nn.Parameter(torch.empty(4, 4, device="meta"))  # a device without the fused kernel
    opt = base.make_adamw([{"params": [p], "weight_decay": 0.0}], 1e-3)
    assert optimizer_name(opt) == "AdamW (foreach)"


def test_paged_adamw_only_for_cuda_parameters():
    """QLoRA's paged AdamW (bitsandbytes) is for CUDA weights; on the CPU it is the fused torch one."""
    from peftgrid.methods import method_of

    assert method_of("qlora").paged_optimizer({"kind": "qlora"}) is True
    assert method_of("lora").paged_optimizer({"kind": "lora"}) is False
    p = torch.nn.Parameter(torch.randn(3, 3))
    assert optimizer_name(base.make_adamw([{"params": [p], "weight_decay": 0.0}], 1e-3, paged=True)) == "AdamW (fused)"


def test_batches_stay_as_they_are_on_cpu():
    batch = {"input_ids": torch.tensor([[1, 2, 3]]), "labels": torch.tensor([1])}
    moved = to_device(batch, CPU)
    assert all(moved[k] is batch[k] for k in batch)  # no copy, no pinning on the CPU


@pytest.mark.slow
def test_compile_trains_to_the_same_losses(tiny_bert, staged, tmp_path, monkeypatch):
    """training.compile: true (torch.compile through inductor; a C++ compiler on CPU): recorded,
    the model saved under its usual names, and the losses those of the eager run — once inductor
    draws dropout masks from torch's generator as eager does (by default it has its own, so a
    compiled run's losses differ from an eager one's by dropout noise)."""
    import torch._inductor.config

    monkeypatch.setattr(torch._inductor.config, "fallback_random", True)
    eager, eager_log = train(tiny_bert, staged, tmp_path / "eager", "full", lr=1.0e-3)
    compiled, compiled_log = train(tiny_bert, staged, tmp_path / "compiled", "full", training={"compile": True},
                                   lr=1.0e-3)
    assert compiled["runtime"]["compiled"] is True and eager["runtime"]["compiled"] is False
    assert compiled["hparams"]["compile"] is True
    for a, b in zip(compiled_log, eager_log):
        if a["train_loss"]:
            assert float(a["train_loss"]) == pytest.approx(float(b["train_loss"]), rel=1e-3, abs=1e-4)
    from safetensors.torch import load_file

    names = set(load_file(next((tmp_path / "compiled" / "model").glob("*.safetensors"))))
    assert names == set(load_file(next((tmp_path / "eager" / "model").glob("*.safetensors"))))
    assert not any("_orig_mod" in n for n in names)
