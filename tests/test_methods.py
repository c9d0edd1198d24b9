"""Every method on a tiny in-process BERT: what trains, how much, that it learns, and that the
saved result loads back to the same model."""
import copy

import pytest
import torch

from peftgrid import methods
from peftgrid.config import METHOD_KINDS, training_defaults
from peftgrid.tasks import collate, encode_classification
from peftgrid.training import make_optimizer

LABELS = ["anger", "joy", "sadness"]
TEXTS = ["i feel angry and furious", "i am so happy today", "i feel sad and lonely", "what a joyful day",
         "this makes me mad", "i cried all night"]
GOLD = ["anger", "joy", "sadness", "joy", "anger", "sadness"]
CPU = torch.device("cpu")


def hparams(kind, **extra):
    hp = {**training_defaults(), **copy.deepcopy(METHOD_KINDS[kind]), "kind": kind, **extra}
    if kind in ("lora", "adalora", "qlora"):
        hp.update(r=4, alpha=8, dropout=0.0) if kind != "adalora" else hp.update(init_r=6, target_r=4, dropout=0.0)
    if kind in ("prompt_tuning", "prefix_tuning"):
        hp["num_virtual_tokens"] = 4
    if kind == "linear_probe":
        # a random tiny encoder gives nearly the same [CLS] vector for every input; the token mean differs
        hp["head"] = {**hp["head"], "hidden": [16], "dropout": 0.0, "pooling": "mean"}
    return hp


def build(tiny_bert, kind, total_steps=10):
    torch.manual_seed(0)
    hp = hparams(kind)
    model, new = methods.load_base(tiny_bert, "sequence_classification", LABELS, hp, CPU)
    return methods.prepare(model, hp, "sequence_classification", total_steps), hp, new


def batch(tiny_bert):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_bert)
    rows = [{"text": t, "label": g} for t, g in zip(TEXTS, GOLD)]
    return collate(encode_classification(rows, tok, {"text": "text", "label": "label"}, LABELS, 64), tok.pad_token_id)


def expected_trainable(kind, hidden=32, layers=2, num_labels=3):
    head = hidden * num_labels + num_labels  # peft's SEQ_CLS keeps a trainable copy of the classifier
    return {
        "none": 0,
        "lora": layers * 2 * 4 * (hidden + hidden) + head,                    # query + value, r=4
        "adalora": layers * 2 * (6 * hidden + hidden * 6 + 6) + head,         # A, B and E (init_r=6)
        "ia3": layers * (3 * hidden + 64) + head,  # key, value, attention.output.dense; output.dense scales its 64 inputs
        "prompt_tuning": 4 * hidden + head,
        "prefix_tuning": 4 * layers * 2 * hidden + head,                      # key and value per layer
        "linear_probe": hidden * 16 + 16 + 16 * num_labels + num_labels,
    }[kind]


@pytest.mark.parametrize("kind", ["none", "full", "linear_probe", "prompt_tuning", "prefix_tuning", "lora", "ia3", "adalora"])
def test_trainable_parameters_match_peft_and_the_formula(tiny_bert, kind):
    model, hp, _ = build(tiny_bert, kind)
    trainable, total = methods.count_parameters(model)
    by_grad = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if kind in methods.PEFT_KINDS:
        assert (trainable, total) == model.get_nb_trainable_parameters()
    if kind == "adalora":
        # peft counts AdaLoRA's rank-budget buffer too; the trainable tensors are A, B, E and the head
        assert by_grad == expected_trainable(kind)
    else:
        assert trainable == by_grad
    if kind == "full":
        assert trainable == total
    else:
        assert by_grad == expected_trainable(kind)


@pytest.mark.parametrize("kind", ["full", "linear_probe", "prompt_tuning", "prefix_tuning", "lora", "ia3", "adalora"])
def test_each_method_learns_and_round_trips(tiny_bert, tmp_path, kind):
    model, hp, new = build(tiny_bert, kind, total_steps=30)
    data = batch(tiny_bert)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    start = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    optimizer = make_optimizer(model, 5e-2 if kind == "linear_probe" else 1e-2, 0.0)
    model.eval()  # no dropout: the loss curve is deterministic, so "it went down" means learning
    losses = []
    for step in range(30):
        loss = model(**data).loss
        loss.backward()
        optimizer.step()
        if kind == "adalora":
            model.base_model.update_and_allocate(step + 1)
        optimizer.zero_grad()
        losses.append(loss.item())
    # a random tiny encoder gives prompt/prefix tuning little to work with (its [CLS] barely depends
    # on the input), so they only have to move; the others must fit these six examples
    if kind in ("prompt_tuning", "prefix_tuning"):
        assert losses[-1] < losses[0], losses
    else:
        assert losses[-1] < losses[0] * 0.7, losses
    for n, p in model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), f"{n} is frozen but changed"
        elif "ranknum" not in n:
            assert not torch.equal(p, start[n]), f"{n} is trainable but did not change"
    model.eval()
    inputs = {k: v for k, v in data.items() if k != "labels"}
    with torch.no_grad():
        expected = model(**inputs).logits
    methods.save_trained(model, hp, tmp_path / "model", new)
    assert list((tmp_path / "model").glob("*.safetensors"))
    if kind == "full":
        import shutil
        for f in tiny_bert.iterdir():
            if f.name.startswith(("tokenizer", "vocab", "special")):
                shutil.copy(f, tmp_path / "model" / f.name)
    loaded = methods.load_trained(tiny_bert, tmp_path / "model", "sequence_classification", LABELS, hp, CPU)
    loaded.eval()
    with torch.no_grad():
        assert torch.allclose(loaded(**inputs).logits, expected, atol=1e-5)


def test_untrained_baseline_keeps_its_random_head(tiny_bert, tmp_path):
    model, hp, new = build(tiny_bert, "none")
    assert set(new) == {"classifier.weight", "classifier.bias"}  # the tiny BERT ships its pooler
    inputs = {k: v for k, v in batch(tiny_bert).items() if k != "labels"}
    model.eval()
    with torch.no_grad():
        expected = model(**inputs).logits
    methods.save_trained(model, hp, tmp_path / "m", new)
    torch.manual_seed(123)  # a different init must not leak into the reloaded baseline
    loaded = methods.load_trained(tiny_bert, tmp_path / "m", "sequence_classification", LABELS, hp, CPU).eval()
    with torch.no_grad():
        assert torch.allclose(loaded(**inputs).logits, expected)


def test_linear_probe_pooling(tiny_bert):
    from transformers import AutoModel

    encoder = AutoModel.from_pretrained(tiny_bert)
    data = batch(tiny_bert)
    probe = methods.LinearProbe(encoder, 3, hidden=(), dropout=0.0, pooling="mean").eval()
    pooled = probe.pool(data["input_ids"], data["attention_mask"])
    hidden = encoder(input_ids=data["input_ids"], attention_mask=data["attention_mask"]).last_hidden_state
    n = int(data["attention_mask"][0].sum())
    assert torch.allclose(pooled[0], hidden[0, :n].mean(0), atol=1e-6)
    probe.train()
    assert not probe.encoder.training and probe.head.training


def test_qlora_refuses_cpu_with_one_line():
    with pytest.raises(methods.MethodError) as err:
        methods.check_device("qlora", CPU)
    assert "CUDA" in str(err.value) and "\n" not in str(err.value)
    methods.check_device("lora", CPU)


def test_peft_refusal_is_one_line(tiny_bert):
    hp = {**hparams("lora"), "target_modules": ["no_such_module"]}
    model, _ = methods.load_base(tiny_bert, "sequence_classification", LABELS, hp, CPU)
    with pytest.raises(methods.MethodError, match="peft cannot apply lora to BertForSequenceClassification") as err:
        methods.prepare(model, hp, "sequence_classification", 10)
    assert "\n" not in str(err.value)
