"""4-bit (QLoRA) bookkeeping on the CPU, where bitsandbytes loads and dequantizes 4-bit weights but
cannot run the 4-bit forward: parameter counts and weight distances."""
import pytest
import torch

from peftgrid.methods import method_of, preset_defaults
from peftgrid.plan import training_defaults
from peftgrid.tasks import task_type

pytest.importorskip("bitsandbytes")
CPU = torch.device("cpu")
LABELS = ["a", "b", "c"]
SEQ = task_type("sequence_classification")


def hparams(kind):
    return {**training_defaults(), **preset_defaults(kind), "kind": kind, "r": 4, "alpha": 8, "dropout": 0.0,
            "target_modules": ["query", "value"]}


def test_4bit_counts_are_real_parameters_not_packed_storage(tiny_bert):
    qlora, lora = method_of("qlora"), method_of("lora")
    torch.manual_seed(0)
    q_model, q_new = qlora.load_base(tiny_bert, SEQ, LABELS, hparams("qlora"), CPU, False)
    packed = sum(p.numel() for p in q_model.parameters())
    q_model = qlora.prepare(q_model, hparams("qlora"), SEQ, 10, q_new)
    torch.manual_seed(0)
    f_model, f_new = lora.load_base(tiny_bert, SEQ, LABELS, hparams("lora"), CPU, False)
    f_model = lora.prepare(f_model, hparams("lora"), SEQ, 10, f_new)
    independent = (sum(p.numel() for p in f_model.parameters() if p.requires_grad),
                   sum(p.numel() for p in f_model.parameters()))  # the same model, full precision
    assert qlora.count_parameters(q_model) == independent
    assert sum(p.numel() for p in q_model.parameters()) < independent[1]  # what a naive count would say
    assert packed < independent[1] - independent[0]


def test_qlora_distances_include_the_4bit_change(tiny_bert, tmp_path):
    qlora, lora = method_of("qlora"), method_of("lora")
    hp = hparams("qlora")
    # an adapter as training would leave it: LoRA over the full-precision base, B moved
    torch.manual_seed(0)
    model, new = lora.load_base(tiny_bert, SEQ, LABELS, hparams("lora"), CPU, False)
    model = lora.prepare(model, hparams("lora"), SEQ, 10, new)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    lora.save(model, hp, tmp_path / "adapter", new)
    delta = {n.replace("base_model.model.", "").replace(".base_layer", ""): t
             for n, t in lora.merged_state(model).items()}

    torch.manual_seed(0)
    reference, tuned = qlora.distance_models(tiny_bert, tmp_path / "adapter", SEQ, LABELS, hp, False)
    tuned_state = qlora.merged_state(tuned)
    name = "bert.encoder.layer.0.attention.self.query.weight"
    ref_w = dict(reference.named_parameters())[name]
    # LoRA alone moved the weight by ||BA s||; over the dequantized base it moved by that plus the 4-bit error
    lora_only = float((delta[name] - ref_w).norm())
    with_4bit = float((tuned_state[name] - ref_w).norm())
    assert lora_only > 0 and with_4bit > lora_only
    # and exactly: dequantized base + the same update
    dequant = qlora.dequantized_base(tiny_bert, SEQ, LABELS, hp, False)
    expected = dict(dequant.named_parameters())[name] + (delta[name] - ref_w)
    assert torch.allclose(tuned_state[name], expected, atol=1e-5)
    # a weight 4-bit does not touch (the task head) is compared as it is
    assert torch.allclose(tuned_state["classifier.weight"], delta["classifier.weight"], atol=1e-6)
